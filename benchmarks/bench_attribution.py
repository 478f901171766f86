"""Attribution patching (AtP) against exact patching: time and agreement.

1. The organism on ioi, greater_than and induction (``--task-prompts`` pairs, seed 0, attn_head sweep, all
   positions, STR, normalised logit difference): exact and AtP wall time, Pearson/Spearman of mean effects.
2. A random GPT-2-small-size model (12 layers x 12 heads, d_model 768, vocabulary 50257; built as in
   ``bench_head_sweep.py``) on 16-token IOI pairs: the 144-head sweep's time, exact / AtP.

The last line is ``attribution_speedup=<exact s / attribution s>`` for the GPT-2-small sweep.

    HF_HUB_OFFLINE=1 python benchmarks/bench_attribution.py [--threads 2] [--prompts 16] [--task-prompts 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from interp_tests import load_model, patch, tasks
from interp_tests.attribution import compare_with_exact
from interp_tests.testing import orient_answers, tiny_gpt2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_head_sweep import ioi_pairs16


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=16, help="IOI pairs for the GPT-2-small sweep")
    parser.add_argument("--task-prompts", type=int, default=64, help="pairs per organism task")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="The model's clean accuracy")

    organism = load_model("organism", device=args.device)
    print(f"organism: {organism.n_layers} layers x {organism.n_heads} heads, {args.task_prompts} pairs per task")
    print(f"{'task':<14} {'exact s':>8} {'AtP s':>8} {'speedup':>8} {'pearson':>8} {'spearman':>9}")
    for name in ("ioi", "greater_than", "induction"):
        pairs = getattr(tasks, name)(n=args.task_prompts, seed=0, tokenizer=organism.tokenizer)
        patch(organism, pairs[:2], "attn_head", method="attribution")  # warm-up
        exact, t_exact = timed(lambda pairs=pairs: patch(organism, pairs, "attn_head"))
        estimate, t_atp = timed(lambda pairs=pairs: patch(organism, pairs, "attn_head", method="attribution"))
        c = compare_with_exact(estimate, exact)
        print(f"{name:<14} {t_exact:>8.2f} {t_atp:>8.2f} {t_exact / t_atp:>8.1f} {c.pearson:>8.3f} {c.spearman:>9.3f}")
        if name == "ioi":
            print(c)

    hf, tokenizer = tiny_gpt2(12, 12, 768, vocab_size=50257, n_ctx=1024, initializer_range=0.08, seed=0)
    pairs = orient_answers(hf, tokenizer, ioi_pairs16(args.prompts, seed=0))
    model = load_model(hf, tokenizer=tokenizer, device=args.device)
    patch(model, pairs[:2], "attn_head", method="attribution")  # warm-up
    patch(model, pairs[:2], "attn_head")
    exact, t_exact = timed(lambda: patch(model, pairs, "attn_head"))
    estimate, t_atp = timed(lambda: patch(model, pairs, "attn_head", method="attribution"))
    c = compare_with_exact(estimate, exact)
    print(f"GPT-2-small-size random model, {args.prompts} IOI pairs, 144-head sweep: exact {t_exact:.2f} s, "
          f"AtP {t_atp:.2f} s; Pearson {c.pearson:.3f}, Spearman {c.spearman:.3f}")
    print(f"attribution_speedup={t_exact / t_atp:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
