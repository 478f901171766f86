"""Time EAP over every edge of a GPT-2-small-architecture model against exact patching of every edge.

The model is ``bench_head_sweep``'s random GPT-2-small-architecture model (12 layers x 12 heads, d_model 768,
vocabulary 50257; 32,491 edges) with ``--prompts`` 16-token IOI pairs. EAP (``edge_attribution``, two forward
passes and one backward pass) scores every edge; exact patching (``exact_edge_scores``: the clean run with one
edge corrupted, one patched run per edge and prompt, batched) is timed on ``--sample`` edges drawn at random
(seed 0) and scaled up to all edges linearly (every edge costs one patched row per prompt). Reported: both times,
their ratio, and the Pearson and Spearman correlation of EAP and exact scores over the sampled edges. Both run
under ``torch.no_grad()`` where they can (EAP needs autograd for its backward pass). Last line
``eap_speedup=<exact time for all edges / EAP time>``.

    HF_HUB_OFFLINE=1 python benchmarks/bench_edges.py [--prompts 8] [--sample 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import scipy.stats
import torch

from interp_tests import edge_attribution, exact_edge_scores, load_model
from interp_tests.testing import save_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_head_sweep import gpt2_small_hf  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--sample", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--init-range", type=float, default=0.08)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf, tokenizer, pairs = gpt2_small_hf(args.prompts, 0, args.init_range)
    with tempfile.TemporaryDirectory() as directory:
        save_model(hf, tokenizer, directory)
        del hf
        model = load_model(directory)
    start = time.perf_counter()
    eap = edge_attribution(model, pairs, "eap")
    eap_s = time.perf_counter() - start
    sample = random.Random(0).sample(eap.labels, args.sample)
    start = time.perf_counter()
    exact = exact_edge_scores(model, pairs, sample)
    sample_s = time.perf_counter() - start
    exact_all_s = sample_s * len(eap.labels) / len(sample)
    estimate = np.array([eap.score(e) for e in sample])
    pearson = scipy.stats.pearsonr(estimate, exact.scores)[0]
    spearman = scipy.stats.spearmanr(estimate, exact.scores)[0]
    print(f"model: GPT-2-small architecture, {len(eap.labels)} edges, {args.prompts} prompts, {args.threads} threads")
    print(f"EAP, all edges: {eap_s:.2f} s")
    print(f"exact, {len(sample)} sampled edges: {sample_s:.2f} s -> all edges (scaled): {exact_all_s:.1f} s")
    print(f"EAP vs exact on the sample: Pearson r={pearson:.3f}, Spearman rho={spearman:.3f}, "
          f"max |error|={np.abs(estimate - exact.scores).max():.4f}")
    print(f"eap_speedup={exact_all_s / eap_s:.1f}")


if __name__ == "__main__":
    main()
