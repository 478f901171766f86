"""The names each patching setting accepts, in one torch-free module: the methods check their arguments against
these, and the pytest plugin checks YAML claims against them when it collects the file, before any model loads."""

from __future__ import annotations

CORRUPTIONS = ("str", "gn")  # symmetric token replacement, Gaussian noise
METRICS = ("logit_diff", "prob", "kl")  # the paper's three: what grids read by default
BUILTIN_METRICS = (*METRICS, "logprob")  # what every sweep computes
DIRECTIONS = ("denoise", "noise")
METHODS = ("exact", "attribution")  # of activation patching
CIRCUIT_TESTS = ("sufficiency", "necessity", "faithfulness")
ABLATIONS = ("resample", "mean", "zero")
EDGE_METHODS = ("eap", "eap_ig")
