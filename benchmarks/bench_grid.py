"""Cost of a robustness grid: all three metrics of a corruption setting come from one sweep.

Times one head sweep (`patch`) against a one-setting, three-metric `grid` on the organism, interleaved
and repeated, and prints the median ratio as its last line (`grid_cost_ratio=`; the target is <= 1.15).

    HF_HUB_OFFLINE=1 python benchmarks/bench_grid.py [--repeats 7] [--n 64] [--task ioi]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import interp_tests as it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--task", default="ioi")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = it.load_model("organism")
    pairs = it.tasks.TASKS[args.task](n=args.n, seed=0, tokenizer=model.tokenizer)
    it.patch(model, pairs, "attn_head")  # warm-up

    def one_sweep() -> None:
        it.patch(model, pairs, "attn_head", corruption="str", metric="logit_diff")

    def three_metric_grid() -> None:
        it.grid(model, pairs, "attn_head", corruptions=("str",), metrics=("logit_diff", "prob", "kl"))

    times: dict[str, list[float]] = {"one sweep": [], "3-metric grid": []}
    for _ in range(args.repeats):
        for name, fn in (("one sweep", one_sweep), ("3-metric grid", three_metric_grid)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ratios = [g / s for s, g in zip(times["one sweep"], times["3-metric grid"])]
    print(f"organism, task {args.task}, n={args.n}, heads, STR, {args.repeats} interleaved repeats, {args.threads} thread(s)")
    print(f"{'run':<16}{'median s':>10}{'min s':>10}")
    for name, values in times.items():
        print(f"{name:<16}{statistics.median(values):>10.3f}{min(values):>10.3f}")
    print(f"grid_cost_ratio={statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
