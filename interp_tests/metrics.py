"""The paper's three patching metrics (Zhang & Nanda 2024, section 2.1), read at each prompt's last token.

A run is summarised per prompt by three numbers: the probability of the answer (set), the logit
difference ``logit(answer) - logit(wrong)`` (summed over sets), and ``KL(clean || run)``. Every metric
of every patched run comes from these, so one sweep serves all three metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import MetricError, SettingsError, did_you_mean
from .pairs import TokenizedPairs

METRICS = ("logit_diff", "prob", "kl")
# Below this gap (in logits) between clean and corrupted logit differences, normalising divides by ~0.
MIN_LOGIT_DIFF_GAP = 1e-3


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise SettingsError(
            f"Unknown metric {metric!r}.{did_you_mean(str(metric), METRICS)} Use 'logit_diff' (normalised logit "
            "difference, recommended), 'prob' (probability of the answer) or 'kl' (KL divergence to the clean run)."
        )
    return metric


@dataclass(frozen=True)
class RunStats:
    """Per-row summaries of a run's final-position distribution."""

    prob: torch.Tensor
    logit_diff: torch.Tensor
    kl: torch.Tensor

    @staticmethod
    def concat(parts: list[RunStats]) -> RunStats:
        return RunStats(*(torch.cat([getattr(p, f) for p in parts]) for f in ("prob", "logit_diff", "kl")))


class AnswerReader:
    """Turns final-position logits into RunStats for the rows of a (possibly repeated) batch."""

    def __init__(self, tokens: TokenizedPairs, vocab_size: int) -> None:
        n = tokens.n
        self.good = torch.zeros(n, vocab_size)
        self.bad = torch.zeros(n, vocab_size)
        for i, (answer, wrong) in enumerate(zip(tokens.answer_ids, tokens.wrong_ids)):
            self.good[i, answer] = 1.0
            self.bad[i, wrong] = 1.0
        self.clean_logprobs: torch.Tensor | None = None

    def set_clean(self, clean_logits: torch.Tensor) -> None:
        self.clean_logprobs = torch.log_softmax(clean_logits.float().cpu(), dim=-1)

    def stats(self, logits: torch.Tensor, prompts: torch.Tensor) -> RunStats:
        """``logits`` [rows, vocab] at each row's last token; ``prompts`` [rows] says which prompt a row ran."""
        logits = logits.float().cpu()
        if not torch.isfinite(logits).all():
            raise MetricError(
                "The model produced NaN or inf logits, so no patching effect can be trusted. Check the weights "
                "(e.g. an overflow in half precision: load the model in float32) and the inputs."
            )
        logprobs = torch.log_softmax(logits, dim=-1)
        good, bad = self.good[prompts], self.bad[prompts]
        prob = (logprobs.exp() * good).sum(-1)
        logit_diff = (logits * good).sum(-1) - (logits * bad).sum(-1)
        assert self.clean_logprobs is not None, "set_clean() must run before any other run is read"
        clean = self.clean_logprobs[prompts]
        kl = (clean.exp() * (clean - logprobs)).sum(-1)
        return RunStats(prob=prob, logit_diff=logit_diff, kl=kl)


def raw_effects(patched: RunStats, corrupted: RunStats) -> dict[str, torch.Tensor]:
    """Un-normalised effects, linear in the patched run so they can be summed over layers and prompts.

    ``patched`` fields are [components, n]; ``corrupted`` fields are [n].
    """
    return {
        "prob": patched.prob - corrupted.prob,
        "logit_diff": patched.logit_diff - corrupted.logit_diff,
        "kl": corrupted.kl - patched.kl,
    }


def check_denominator(gap: float, what: str) -> None:
    if not abs(gap) > MIN_LOGIT_DIFF_GAP:
        raise MetricError(
            f"The normalised logit difference divides by LD_clean - LD_corrupted = {gap:.3g} ({what}), which is "
            f"~0 (|gap| <= {MIN_LOGIT_DIFF_GAP}): the clean and corrupted runs behave the same, so the task "
            "does not separate them and no patching effect is meaningful. Check that `wrong` is the corrupted "
            "prompt's answer and that the corruption changes the key tokens; or use metric='prob' or 'kl'."
        )
