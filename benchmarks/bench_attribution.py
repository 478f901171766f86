"""Attribution patching (AtP) against exact patching: time, peak memory and agreement.

1. The organism on each of its tasks (``--task-prompts`` pairs, seed 0; heads, all positions, STR, normalised
   logit difference): exact and AtP wall time, and how well the estimates track the exact mean effects:
   Pearson and Spearman of AtP, Spearman of AtP*'s GradDrop magnitudes against |exact|, and whether each
   method's largest component is the exact sweep's.
2. A random GPT-2-small-size model (12 layers x 12 heads, d_model 768, vocabulary 50257; built as in
   ``bench_head_sweep.py``) on ``--prompts`` 16-token IOI pairs corrupted at S2: the 144-head sweep, exact,
   AtP and AtP + GradDrop, all through ``interp_tests.patch``. One warm-up of each, then ``--repeats``
   interleaved repeats (exact, AtP, GradDrop, exact, ...); medians. Then each method's peak memory on this
   sweep, measured as in ``bench_head_sweep.py`` (``sweep_memory``: a fresh process per method that builds the
   same model and prompts and runs the sweep once under ``torch.no_grad()``; peak RSS above the RSS after
   setup, and on CUDA peak allocated above allocated after setup). ``--no-memory`` skips the memory table,
   ``--memory-only`` prints only it.

The last line is ``attribution_speedup=<median over repeats of exact s / AtP s>`` for the GPT-2-small sweep.

    HF_HUB_OFFLINE=1 python benchmarks/bench_attribution.py [--repeats 5] [--threads 1] [--device cpu|cuda]
        [--no-memory | --memory-only]
"""

from __future__ import annotations

import functools
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from scipy import stats

from interp_tests import PatchableModel, PatchResult, load_model, patch, tasks
from interp_tests.attribution import compare_with_exact
from interp_tests.pairs import PromptPairs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_head_sweep import (
    bench_parser,
    gpt2_small_hf,
    parse_bench_args,
    print_memory_table,
    sweep_memory,
    timed,
)

ORGANISM_TASKS = {"ioi": {"corrupt": "S2"}, "greater_than": {}, "induction": {}, "docstring": {}, "factual": {}}
# The GPT-2-small-size 144-head sweep's methods: ``patch`` keyword arguments.
METHODS: dict[str, dict[str, Any]] = {
    "exact": {},
    "AtP": {"method": "attribution"},
    "AtP + GradDrop": {"method": "attribution", "grad_drop": True},
}


def build_model(n_prompts: int, device: str) -> tuple[PatchableModel, PromptPairs]:
    """The random GPT-2-small-size model (std 0.08, seed 0) and ``n_prompts`` oriented 16-token IOI pairs."""
    hf, tokenizer, pairs = gpt2_small_hf(n_prompts, seed=0, init_range=0.08)
    return load_model(hf, tokenizer=tokenizer, device=device), pairs


def memory_setup(method: str, n_prompts: int, device: str) -> tuple[Callable[[], Any], list[torch.nn.Module]]:
    """For ``sweep_memory``'s child: build the model and prompts as ``main`` does; return ``method``'s sweep."""
    model, pairs = build_model(n_prompts, device)
    return functools.partial(patch, model, pairs, "attn_head", **METHODS[method]), [model.hf]


def top_label(result: PatchResult) -> str:
    return result.labels[int(np.argmax(np.abs(result.mean.reshape(-1))))]


def organism_table(n: int, device: str) -> None:
    model = load_model("organism", device=device)
    cuda = device == "cuda"
    print(f"organism ({model.n_layers} layers x {model.n_heads} heads), {n} pairs per task, heads, STR, logit difference")
    print(f"{'task':<13} {'exact s':>8} {'AtP s':>7} {'speedup':>8} {'Pearson':>8} {'Spearman':>9} {'GD Spearman':>12} "
          f"{'top: exact / AtP / GD':>24}")
    for name, options in ORGANISM_TASKS.items():
        pairs = getattr(tasks, name)(n=n, seed=0, tokenizer=model.tokenizer, **options)
        patch(model, pairs[:2], "attn_head", method="attribution")  # warm-up
        exact, t_exact = timed(lambda pairs=pairs: patch(model, pairs, "attn_head"), cuda)
        estimate, t_atp = timed(lambda pairs=pairs: patch(model, pairs, "attn_head", method="attribution"), cuda)
        graddrop = patch(model, pairs, "attn_head", method="attribution", grad_drop=True)
        c = compare_with_exact(estimate, exact)
        gd_rho = stats.spearmanr(graddrop.mean.reshape(-1), np.abs(exact.mean.reshape(-1)))[0]
        tops = " / ".join(top_label(r) for r in (exact, estimate, graddrop))
        print(f"{name:<13} {t_exact:>8.2f} {t_atp:>7.2f} {t_exact / t_atp:>8.1f} {c.pearson:>8.3f} {c.spearman:>9.3f} "
              f"{gd_rho:>12.3f} {tops:>24}")


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__.splitlines()[0], repeats=5)
    parser.add_argument("--prompts", type=int, default=16, help="IOI pairs for the GPT-2-small sweep")
    parser.add_argument("--task-prompts", type=int, default=64, help="pairs per organism task")
    args = parse_bench_args(parser, argv)
    cuda = args.device == "cuda"
    print(f"device {args.device}; torch {torch.__version__}, threads {torch.get_num_threads()}")

    def memory_table() -> None:
        print(f"\nGPT-2-small-size random model, {args.prompts} IOI pairs of 16 tokens, 144-head sweep")
        rows = [(name, sweep_memory(memory_setup, (name, args.prompts, args.device), args.threads, args.device)) for name in METHODS]
        print_memory_table(rows, cuda)

    if args.memory_only:
        memory_table()
        return 0

    organism_table(args.task_prompts, args.device)

    model, pairs = build_model(args.prompts, args.device)
    methods: dict[str, Callable[[], PatchResult]] = {
        name: lambda kwargs=kwargs: patch(model, pairs, "attn_head", **kwargs) for name, kwargs in METHODS.items()
    }
    for run in methods.values():  # warm-up
        run()
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    results: dict[str, PatchResult] = {}
    for _ in range(args.repeats):
        for name, run in methods.items():
            results[name], t = timed(run, cuda)
            seconds[name].append(t)
    ratios = [e / a for e, a in zip(seconds["exact"], seconds["AtP"])]
    c = compare_with_exact(results["AtP"], results["exact"])
    gd_rho = stats.spearmanr(results["AtP + GradDrop"].mean.reshape(-1), np.abs(results["exact"].mean.reshape(-1)))[0]
    print(f"\nGPT-2-small-size random model, {args.prompts} IOI pairs of 16 tokens, 144-head sweep, "
          f"{args.repeats} interleaved repeats")
    print(f"{'method':<15} {'median s':>9} {'min s':>7} {'exact / method':>15}")
    for name in methods:
        median = statistics.median(seconds[name])
        print(f"{name:<15} {median:>9.3f} {min(seconds[name]):>7.3f} {statistics.median(seconds['exact']) / median:>15.1f}")
    print(f"AtP vs exact: Pearson {c.pearson:.3f}, Spearman {c.spearman:.3f}; GradDrop vs |exact|: Spearman {gd_rho:.3f}")
    print(f"per-repeat exact/AtP ratios: {', '.join(f'{r:.1f}' for r in ratios)}")
    if not args.no_memory:
        memory_table()
    print(f"attribution_speedup={statistics.median(ratios):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
