"""Time path patching on GPT-2 small: interp-tests' batched ``path_patch`` against the naive two-stage loop.

The model is ``bench_head_sweep``'s GPT-2-small-architecture random model (12 layers x 12 heads, d_model 768,
vocabulary 50257, weights drawn with std ``--init-range``) and its 16-token IOI pairs (STR at S2, answers oriented
so every prompt's clean-corrupted gap is positive). All 144 heads are senders; the receivers are the query inputs
of three layer-9/10 heads, where the IOI paper's name movers sit (``--receivers``, default 9.9.q 9.6.q 10.0.q).

* interp-tests: ``path_patch(model, pairs, receivers)``: many (sender, prompt) rows per forward pass, stage 1
  resuming at the sender's layer and stopping after the last receiver's, stage 2 resuming at the first
  receiver's, both after the shared prefix; senders with no path are not run (effect exactly 0);
* naive: ``interp_tests.testing.naive_path_patch`` (the tests' reference): plain forward hooks, one sender and one
  prompt at a time, two full forward passes per (sender, prompt), plus each prompt's clean and corrupted runs.

The full naive loop is 144 x prompts x 2 forward passes, too slow to repeat on a CPU: by default it runs a
measured sample of ``--naive-senders`` senders (one per layer, spread over the heads; 144 runs them all) and its
time is scaled up: full = base + (sample - base) x 144 / k, where base is the same loop with no senders (the
clean and corrupted runs only), timed too. The output says when it is scaled. Numbers: the max |difference| of the
normalised effects (mean over prompts) over the sampled senders is printed; the exit status is 1 when it exceeds
1e-4 or when |mean LD_clean - mean LD_corrupted| <= 0.1.

One warm-up of each, then ``--repeats`` interleaved repeats (interp-tests, naive, ...), all under
``torch.no_grad()`` with ``--threads`` torch threads (default 1). Memory (``--no-memory`` skips it,
``--memory-only`` prints only it): bench_head_sweep's fresh-process peak RSS, of the interp-tests sweep and of
the naive sample. The last line is ``path_patching_speedup=<median over repeats of naive (scaled) s /
interp-tests s>``.

    HF_HUB_OFFLINE=1 python benchmarks/bench_paths.py [--repeats 3] [--naive-senders 12] [--threads 1]
        [--device cpu|cuda] [--no-memory | --memory-only]
"""

from __future__ import annotations

import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from interp_tests import PatchableModel, load_model, path_patch
from interp_tests.pairs import PromptPairs
from interp_tests.testing import naive_path_patch, save_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_head_sweep import (  # noqa: E402
    TOLERANCE,
    agrees,
    bench_parser,
    gpt2_small_hf,
    parse_bench_args,
    print_memory_table,
    sweep_memory,
    timed,
)

RECEIVERS = ("9.9.q", "9.6.q", "10.0.q")
METHODS = ("interp-tests", "naive")


def build(n_prompts: int, seed: int, init_range: float, device: str) -> tuple[PatchableModel, PromptPairs]:
    hf, tokenizer, pairs = gpt2_small_hf(n_prompts, seed, init_range)
    with tempfile.TemporaryDirectory() as directory:
        save_model(hf, tokenizer, directory)
        del hf
        model = load_model(directory, device=device)
    return model, pairs


def sample_senders(n_layers: int, n_heads: int, k: int) -> list[tuple[int, int]]:
    """``k`` senders spread over layers and heads (all of them when k >= n_layers * n_heads)."""
    every = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    if k >= len(every):
        return every
    return [every[round(i * (len(every) - 1) / max(k - 1, 1))] for i in range(k)]


def naive_normalised(model: PatchableModel, pairs: PromptPairs, receivers: list[str], senders: list[tuple[int, int]]) -> np.ndarray:
    effects, ld_clean, ld_corrupted = naive_path_patch(model, pairs, receivers, senders=senders)
    return effects["logit_diff"].mean(0) / (ld_clean.mean() - ld_corrupted.mean())


def memory_setup(
    method: str, n_prompts: int, seed: int, init_range: float, device: str, receivers: list[str], k: int
) -> tuple[Callable[[], Any], list[torch.nn.Module]]:
    model, pairs = build(n_prompts, seed, init_range, device)
    if method == "interp-tests":
        return functools.partial(path_patch, model, pairs, receivers), [model.hf]
    senders = sample_senders(model.n_layers, model.n_heads, k)
    return functools.partial(naive_path_patch, model, pairs, receivers, senders=senders), [model.hf]


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__.splitlines()[0], repeats=3)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-range", type=float, default=0.08, help="std of the random weights (default 0.08)")
    parser.add_argument("--receivers", nargs="+", default=list(RECEIVERS))
    parser.add_argument("--naive-senders", type=int, default=12, help="senders the naive loop times (144: all, unscaled)")
    args = parse_bench_args(parser, argv)
    run_start = time.perf_counter()
    cuda = args.device == "cuda"
    receivers = list(args.receivers)
    header = (
        f"GPT-2 small architecture, random init (std {args.init_range}, seed {args.seed}); {args.prompts} IOI prompt "
        f"pairs of 16 tokens, STR at S2; 144 senders -> receivers {receivers}; device {args.device}; "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    )

    def memory_table() -> None:
        setup = (args.prompts, args.seed, args.init_range, args.device, receivers, args.naive_senders)
        rows = [(name, sweep_memory(memory_setup, (name, *setup), args.threads, args.device)) for name in METHODS]
        print_memory_table(rows, cuda)

    print(header, flush=True)
    if args.memory_only:
        memory_table()
        return 0
    model, pairs = build(args.prompts, args.seed, args.init_range, args.device)
    total_senders = model.n_layers * model.n_heads
    senders = sample_senders(model.n_layers, model.n_heads, args.naive_senders)
    scaled = len(senders) < total_senders
    rows, cols = np.array([s[0] for s in senders]), np.array([s[1] for s in senders])

    def ours() -> tuple[np.ndarray, float]:
        with torch.no_grad():
            result = path_patch(model, pairs, receivers)
        return result.mean, float(result.ld_clean.mean() - result.ld_corrupted.mean())

    def naive() -> np.ndarray:
        with torch.no_grad():
            return naive_normalised(model, pairs, receivers, senders)

    def naive_base() -> None:
        with torch.no_grad():
            naive_path_patch(model, pairs, receivers, senders=[])

    (_, gap), warm_ours = timed(ours, cuda)
    _, warm_naive = timed(lambda: naive_path_patch(model, pairs, receivers, senders=senders[:1]), cuda)
    print(f"warm-up: interp-tests {warm_ours:.2f} s, naive (1 sender) {warm_naive:.2f} s")
    print(f"mean LD_clean - mean LD_corrupted = {gap:.4f}")
    if scaled:
        print(
            f"naive loop: {len(senders)} of {total_senders} senders timed ({senders}); its full time is scaled up as "
            f"base + (sample - base) x {total_senders}/{len(senders)}, base = the loop's clean and corrupted runs alone"
        )
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    sample_times, diffs = [], []
    for r in range(args.repeats):
        (ours_map, _), ours_s = timed(ours, cuda)
        naive_map, sample_s = timed(naive, cuda)
        if scaled:
            _, base_s = timed(naive_base, cuda)
            naive_s = base_s + (sample_s - base_s) * total_senders / len(senders)
        else:
            naive_s = sample_s
        diff = float(np.abs(ours_map[rows, cols] - naive_map[rows, cols]).max())
        diffs.append(diff)
        times["interp-tests"].append(ours_s)
        times["naive"].append(naive_s)
        sample_times.append(sample_s)
        print(
            f"repeat {r + 1}/{args.repeats}: interp-tests {ours_s:.2f} s, naive {naive_s:.1f} s"
            + (f" (scaled from {sample_s:.1f} s for {len(senders)} senders)" if scaled else "")
            + f", ratio {naive_s / ours_s:.1f}, max |diff| {diff:.3g}",
            flush=True,
        )
    scale = float(np.abs(ours_map).max())
    print(f"\npath patching, 144 senders -> {len(receivers)} receivers, {args.repeats} interleaved repeats")
    head = f"{'method':<22}{'median s':>10}{'min s':>10}"
    print(head)
    print("-" * len(head))
    for name, values in times.items():
        label = name + (" (scaled)" if name == "naive" and scaled else "")
        print(f"{label:<22}{statistics.median(values):>10.2f}{min(values):>10.2f}")
    if scaled:
        print(f"{'naive, sample only':<22}{statistics.median(sample_times):>10.2f}{min(sample_times):>10.2f}")
    max_diff = max(diffs)
    print(
        f"max |interp-tests - naive| normalised effect over the {len(senders)} compared senders and repeats = "
        f"{max_diff:.3g} (max |effect| {scale:.3g}, bound {TOLERANCE})"
    )
    if not args.no_memory:
        memory_table()
    print(f"total runtime {time.perf_counter() - run_start:.0f} s")
    passed = agrees(gap, max_diff, "the naive loop")
    ratios = [n / o for o, n in zip(times["interp-tests"], times["naive"])]
    print(f"path_patching_speedup={statistics.median(ratios):.2f}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
