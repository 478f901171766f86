"""Time three more sweeps: interp-tests' ``patch`` against TransformerLens 4.x, same weights and prompts.

The companion of ``bench_head_sweep.py`` (the 144-head sweep), whose GPT-2-small model, IOI prompts, timer
and memory probe it imports. The sweeps (``--sweeps``, default all three), each with symmetric token
replacement (STR), denoising, and the normalised logit difference of batch means at the last position:

* ``mlp``: every MLP layer, all positions, on ``bench_head_sweep``'s GPT-2-small-architecture random model
  (12 layers x 12 heads, d_model 768, vocabulary 50257, n_positions 1024, weights std ``--init-range`` 0.08,
  seed ``--seed``) with ``--prompts`` (16) 16-token IOI pairs, STR at S2: ``patch(model, pairs, "mlp")``
  against TransformerLens' ``generic_activation_patch`` on ``hook_mlp_out`` over every position of one layer
  (12 hooked forward passes);
* ``resid``: the residual stream before every layer at every position, same model and pairs:
  ``patch(model, pairs, "resid", positions="each")`` against ``get_act_patch_resid_pre`` (12 x 16 = 192
  hooked passes);
* ``organism``: the all-heads sweep (48 heads), all positions, on the organism (``load_model("organism")``, a trained
  4-layer x 4-head GPT-2, d_model 128, vocabulary 1074; TransformerLens boots it from
  ``interp_tests/organism/model/``) and its IOI task: ``patch(model, pairs, "attn_head")`` against
  ``get_act_patch_attn_head_out_all_pos``. TransformerLens reads the logits at the last position, so every
  prompt must have the same token length: the script draws ``4 x --organism-prompts`` pairs from
  ``interp_tests.tasks.ioi(seed=--seed, tokenizer=model.tokenizer)`` (S2 corruption, test-split templates)
  and keeps the first ``--organism-prompts`` (64) whose prompts have the pool's most common length (15
  tokens for seed 0: the "Today, ...", "Yesterday, ..." and "The {PLACE} ..." templates; "After ..." has 14).

The TransformerLens side is ``interp_tests.testing.transformer_lens_effects`` on a
``TransformerBridge.boot_transformers`` of the same saved weights (no LayerNorm folding); like ``patch`` it
also runs the clean and corrupted caching passes. Per sweep, under ``torch.no_grad()``: one untimed warm-up
sweep of each, then ``--repeats`` interleaved repeats (interp-tests, TL, interp-tests, TL, ...). Every
repeat's two maps are compared: the exit status is 1 when they differ by more than 1e-4 (max abs) in any
repeat, or when a sweep's |mean LD_clean - mean LD_corrupted| <= 0.1. The table gives median seconds, the
speedup (median over repeats of TL s / interp-tests s) and the max abs difference over repeats. Then the
memory table (``--no-memory`` skips it, ``--memory-only`` skips the timing): each (sweep, method) runs once
in a fresh process that builds the same model and prompts, as in ``bench_head_sweep.sweep_memory``: peak RSS
(VmHWM) during the sweep above the RSS after setup, and with ``--device cuda`` ``torch.cuda.max_memory_allocated``
above the allocation after setup. The last line is
``min_speedup_vs_transformer_lens=<the smallest per-sweep median speedup>``.

    HF_HUB_OFFLINE=1 python benchmarks/bench_sweeps.py [--sweeps mlp resid organism] [--repeats 3] [--threads 1]
        [--device cpu|cuda] [--prompts 16] [--organism-prompts 64] [--seed 0] [--no-memory | --memory-only]
"""

from __future__ import annotations

import collections
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from interp_tests import PatchableModel, load_model, patch, tasks
from interp_tests.models import organism_dir
from interp_tests.pairs import PromptPairs, TokenizedPairs
from interp_tests.testing import boot_transformer_lens, transformer_lens_effects

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_head_sweep import (
    agrees,
    bench_parser,
    bridge_logits_error,
    build_gpt2_small,
    parse_bench_args,
    print_memory_table,
    sweep_memory,
    timed,
)

SWEEPS = ("mlp", "resid", "organism")


def same_length_ioi(tokenizer: Any, n: int, seed: int) -> PromptPairs:
    """The first ``n`` of ``4 n`` IOI pairs whose prompts have the most common token length among them."""
    pool = tasks.ioi(n=4 * n, seed=seed, tokenizer=tokenizer)
    lengths = pool.tokenize(tokenizer).lengths.tolist()
    modal = collections.Counter(lengths).most_common(1)[0][0]
    keep = [i for i, length in enumerate(lengths) if length == modal][:n]
    if len(keep) < n:
        raise SystemExit(f"only {len(keep)} of {4 * n} IOI pairs have {modal} tokens; {n} were asked for")
    return pool[keep]


@dataclass
class Sweep:
    """One sweep: the same model loaded by interp-tests and by TransformerLens, its pairs and component kind."""

    name: str
    model: PatchableModel
    bridge: Any
    pairs: PromptPairs
    component: str
    positions: str
    tokens: TokenizedPairs = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.pairs.tokenize(self.model.tokenizer)
        if not bool(self.tokens.attention_mask.bool().all()):
            raise SystemExit(f"{self.name}: the prompts must all have the same token length")

    def ours(self) -> tuple[np.ndarray, float]:
        """interp-tests' map and mean LD_clean - mean LD_corrupted."""
        with torch.no_grad():
            result = patch(self.model, self.pairs, self.component, positions=self.positions)
        return result.mean, float(result.ld_clean.mean() - result.ld_corrupted.mean())

    def theirs(self) -> np.ndarray:
        """TransformerLens' map."""
        with torch.no_grad():
            return transformer_lens_effects(self.bridge, self.tokens, self.component, self.positions, "logit_diff")


@dataclass
class Measurement:
    """Interleaved timings and map differences of one sweep."""

    sweep: str
    grid: tuple[int, ...]
    gap: float
    ours_s: list[float] = field(default_factory=list)
    tl_s: list[float] = field(default_factory=list)
    diffs: list[float] = field(default_factory=list)

    @property
    def speedup(self) -> float:
        return statistics.median(t / o for o, t in zip(self.ours_s, self.tl_s))


def measure(sweep: Sweep, repeats: int, cuda: bool) -> Measurement:
    """One warm-up sweep of each, then ``repeats`` interleaved timed repeats."""
    (ours_map, gap), warm_ours = timed(sweep.ours, cuda)
    _, warm_tl = timed(sweep.theirs, cuda)
    print(f"{sweep.name}: warm-up interp-tests {warm_ours:.2f} s, TransformerLens {warm_tl:.2f} s; mean LD_clean - mean LD_corrupted = {gap:.4f}")
    measurement = Measurement(sweep.name, ours_map.shape, gap)
    for r in range(repeats):
        (ours_map, _), ours_s = timed(sweep.ours, cuda)
        tl_map, tl_s = timed(sweep.theirs, cuda)
        diff = float(np.abs(ours_map - tl_map).max()) if ours_map.shape == tl_map.shape else float("inf")
        measurement.ours_s.append(ours_s)
        measurement.tl_s.append(tl_s)
        measurement.diffs.append(diff)
        print(
            f"{sweep.name} repeat {r + 1}/{repeats}: interp-tests {ours_s:.2f} s, TransformerLens {tl_s:.2f} s, "
            f"ratio {tl_s / ours_s:.2f}, max |diff| {diff:.3g}",
            flush=True,
        )
    return measurement


def logits_error(sweep: Sweep) -> float:
    """max |HF logits - TransformerLens logits| / max |HF logit| on the sweep's clean and corrupted prompts."""
    ids = torch.cat([sweep.tokens.clean_ids, sweep.tokens.require_corrupted()])
    return bridge_logits_error(sweep.model, sweep.bridge, ids.to(sweep.model.device))


def print_table(measurements: list[Measurement]) -> None:
    header = f"{'sweep':<10}{'grid':>8}{'interp-tests s':>16}{'TL s':>9}{'speedup':>9}{'max |diff|':>12}"
    print(header)
    print("-" * len(header))
    for m in measurements:
        print(
            f"{m.sweep:<10}{'x'.join(map(str, m.grid)):>8}{statistics.median(m.ours_s):>16.2f}"
            f"{statistics.median(m.tl_s):>9.2f}{m.speedup:>9.2f}{max(m.diffs):>12.3g}"
        )


def build_sweeps(
    names: list[str], n_prompts: int, organism_prompts: int, seed: int, init_range: float, device: str
) -> list[Sweep]:
    """The sweeps ``names`` (in ``SWEEPS`` order); the GPT-2-small ones share one model."""
    selected: list[Sweep] = []
    if "mlp" in names or "resid" in names:
        model, bridge, pairs = build_gpt2_small(n_prompts, seed, init_range, device)
        for name, component, positions in (("mlp", "mlp", "all"), ("resid", "resid", "each")):
            if name in names:
                selected.append(Sweep(name, model, bridge, pairs, component, positions))
    if "organism" in names:
        model = load_model("organism", device=device)
        bridge = boot_transformer_lens(organism_dir(), device=device)
        pairs = same_length_ioi(model.tokenizer, organism_prompts, seed)
        selected.append(Sweep("organism", model, bridge, pairs, "attn_head", "all"))
    return selected


def memory_setup(
    name: str, method: str, n_prompts: int, organism_prompts: int, seed: int, init_range: float, device: str
) -> tuple[Callable[[], Any], list[torch.nn.Module]]:
    """For ``sweep_memory``'s child: build sweep ``name`` as ``main`` does; return ``method``'s sweep."""
    (sweep,) = build_sweeps([name], n_prompts, organism_prompts, seed, init_range, device)
    if method == "interp-tests":
        return sweep.ours, [sweep.model.hf]
    return sweep.theirs, [sweep.bridge]


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__.splitlines()[0], repeats=3)
    parser.add_argument("--sweeps", nargs="+", choices=SWEEPS, default=list(SWEEPS), help="default: all three")
    parser.add_argument("--prompts", type=int, default=16, help="IOI pairs for the GPT-2-small sweeps (default 16)")
    parser.add_argument("--organism-prompts", type=int, default=64, help="IOI pairs for the organism (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-range", type=float, default=0.08, help="std of the random weights (default 0.08)")
    args = parse_bench_args(parser, argv)
    run_start = time.perf_counter()
    cuda = args.device == "cuda"
    sweeps = [name for name in SWEEPS if name in args.sweeps]
    print(f"device {args.device}; torch {torch.__version__}, threads {torch.get_num_threads()}")
    build_args = (args.prompts, args.organism_prompts, args.seed, args.init_range, args.device)

    def memory_table() -> None:
        rows = [
            (f"{name}: {method}", sweep_memory(memory_setup, (name, method, *build_args), args.threads, args.device))
            for name in sweeps
            for method in ("interp-tests", "TransformerLens")
        ]
        print_memory_table(rows, cuda, label="sweep: method")

    if args.memory_only:
        memory_table()
        return 0

    selected = build_sweeps(sweeps, *build_args)
    for sweep in selected:
        if sweep.name == "organism":
            print(
                f"organism: {sweep.model.n_layers} layers x {sweep.model.n_heads} heads, d_model {sweep.model.shape.d_model}, "
                f"vocab {len(sweep.model.tokenizer)}; {len(sweep.pairs)} "
                f"IOI pairs of {sweep.tokens.seq_len} tokens, STR at S2; bridge vs HF logits max |diff| / max |logit| = "
                f"{logits_error(sweep):.3g}"
            )
        elif sweep is selected[0]:
            print(
                f"GPT-2 small architecture, random init (std {args.init_range}, seed {args.seed}), 12 layers x 12 heads, "
                f"d_model 768, vocab {len(sweep.model.tokenizer)}; {len(sweep.pairs)} IOI pairs of {sweep.tokens.seq_len} "
                f"tokens, STR at S2; bridge vs HF logits max |diff| / max |logit| = {logits_error(sweep):.3g}"
            )

    measurements = [measure(sweep, args.repeats, cuda) for sweep in selected]
    print(f"\nmedians over {args.repeats} interleaved repeats; speedup = median of TL s / interp-tests s")
    print_table(measurements)
    if not args.no_memory:
        memory_table()
    print(f"total runtime {time.perf_counter() - run_start:.0f} s")
    checks = [agrees(m.gap, max(m.diffs), "TransformerLens", m.sweep) for m in measurements]
    print(f"min_speedup_vs_transformer_lens={min(m.speedup for m in measurements):.2f}")
    return 0 if all(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
