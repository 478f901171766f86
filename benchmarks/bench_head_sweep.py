"""Time a full GPT-2-small head sweep: interp-tests' ``patch`` against TransformerLens 4.x, same weights.

Builds a GPT-2-small-architecture model offline (12 layers x 12 heads, d_model 768, vocabulary 50257,
n_positions 1024, random init with a fixed seed; a word-level tokenizer whose vocabulary is the IOI words
padded with filler words to 50257 entries, so every word is one token; weights drawn with std
``--init-range`` 0.08: GPT-2's 0.02 leaves a random model's clean-corrupted gap below 0.1, and 0.2 makes the
logits so large (~30) that TransformerLens' re-implemented attention drifts ~1e-3 in normalised units from
the HF model's fp32 rounding), saves it, loads it with
``interp_tests.load_model`` and with TransformerLens' ``TransformerBridge.boot_transformers`` (no LayerNorm
folding, so both compute the HF model's logits), and times the 144-head all-positions sweep under symmetric
token replacement at S2 with the normalised logit difference of batch means at the last position:

* interp-tests: ``patch(model, pairs, "attn_head", "str", "logit_diff")``;
* TransformerLens: ``transformer_lens.patching.get_act_patch_attn_head_out_all_pos`` (via
  ``interp_tests.testing.transformer_lens_effects``, which also runs the clean and corrupted caches, as
  ``patch`` does), one full forward pass per head.

Both run under ``torch.no_grad()``. One warm-up (a full interp-tests sweep; for TransformerLens a
``run_with_cache`` and one hooked forward pass, since a full warm-up sweep costs as much as a timed repeat and
every one of its 144 passes after the first is warm anyway), then ``--repeats`` interleaved repeats
(interp-tests, TL, interp-tests, TL, ...). Every repeat's two maps are compared: the exit status is 1 when
they differ by more than 1e-4 (max abs) or when |mean LD_clean - mean LD_corrupted| <= 0.1.

Memory (after the timing loop; ``--no-memory`` skips it, ``--memory-only`` skips the timing): each method's
sweep runs once more in a fresh process of its own (``multiprocessing``, spawn start method, ``--threads``
torch threads) that builds the same model and prompts, runs nothing else, and runs the sweep once under
``torch.no_grad()``: "peak RSS +MB" is the kernel's resident-set high-water mark (VmHWM) during the sweep
minus the RSS just before it (after setup, ``gc.collect()`` and ``malloc_trim``; VmHWM is reset through
/proc/self/clear_refs; the models' weights, which the loader memory-maps lazily, are read once before; glibc's
mmap threshold is fixed at 128 KiB, see ``_fix_mmap_threshold``), and with ``--device cuda`` "CUDA peak +MB"
is ``torch.cuda.max_memory_allocated`` minus the allocation before it. The last line is
``speedup_vs_transformer_lens=<median over repeats of TL s / interp-tests s>``.

    HF_HUB_OFFLINE=1 python benchmarks/bench_head_sweep.py [--repeats 3] [--threads 1] [--device cpu|cuda]
        [--no-memory | --memory-only]
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from interp_tests import PatchableModel, PatchResult, load_model, patch
from interp_tests.pairs import PromptPairs, TokenizedPairs
from interp_tests.tasks.words import NAMES, OBJECTS, PLACES
from interp_tests.testing import (
    boot_transformer_lens,
    orient_answers,
    save_model,
    tiny_gpt2,
    transformer_lens_effects,
)

TOLERANCE = 1e-4
MIN_GAP = 0.1
# 16 tokens under the word-level tokenizer; S2 is token 11 (0-based). (testing.IOI_TEMPLATE has 14.)
TEMPLATE = "When {IO} and {S} went to the {PLACE} and {PLACE2} , {S2} gave a {OBJECT} to"


def ioi_pairs16(n: int, seed: int = 0) -> PromptPairs:
    """``n`` IOI pairs of 16 tokens, corrupted at S2 (S2 becomes IO); answer IO, wrong S."""
    rng = random.Random(seed)
    clean, corrupted, answer, wrong = [], [], [], []
    for _ in range(n):
        io, s = rng.sample(NAMES, 2)
        place, place2 = rng.sample(PLACES, 2)
        fill = {"IO": io, "S": s, "PLACE": place, "PLACE2": place2, "OBJECT": rng.choice(OBJECTS)}
        clean.append(TEMPLATE.format(S2=s, **fill))
        corrupted.append(TEMPLATE.format(S2=io, **fill))
        answer.append(f" {io}")
        wrong.append(f" {s}")
    return PromptPairs(clean, corrupted, answer, wrong)


# --------------------------------------------------------------------------- timing


def timed(fn: Callable[[], Any], cuda: bool) -> tuple[Any, float]:
    """``fn()`` and its wall time in seconds (CUDA-synchronised when ``cuda``)."""
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = fn()
    if cuda:
        torch.cuda.synchronize()
    return value, time.perf_counter() - start


# --------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class MemoryPeak:
    """One sweep's peak memory in a fresh process, above the level after setup, in MB.

    ``rss_mb`` is None where /proc/self (VmRSS, VmHWM, clear_refs) is unavailable; ``cuda_mb`` is None on CPU.
    """

    rss_mb: float | None
    cuda_mb: float | None


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _make_resident(modules: list[torch.nn.Module]) -> None:
    """Read every parameter and buffer once: weights loaded from safetensors are memory-mapped and only become
    resident when first touched, which would otherwise count the weights themselves as the sweep's peak."""
    with torch.no_grad():
        for module in modules:
            for tensor in (*module.parameters(), *module.buffers()):
                tensor.sum()


def _glibc() -> Any:
    """glibc through ctypes, or None (another C library)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _fix_mmap_threshold() -> None:
    """Serve every block of 128 KiB or more with its own mmap, unmapped when freed (glibc).

    By default glibc raises its mmap threshold (up to 32 MiB) as large blocks are freed, and blocks below it
    come from the heap, which keeps freed memory; how much it keeps at the sweep's peak varied from run to run
    by up to ~200 MB on the same sweep. With the threshold fixed the peak is the sweep's allocations, to ~1 MB.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD; setting it also disables the dynamic adjustment


def _release_freed_memory() -> None:
    """Collect garbage and hand freed heap memory back to the OS, so that setup's garbage is not reused."""
    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def quiet() -> None:
    """Silence the random models' at-chance warnings and the hub's progress bars."""
    # A random model is at chance on IOI by construction; patch() would warn on every sweep.
    warnings.filterwarnings("ignore", message="The model's clean accuracy")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


Setup = Callable[..., tuple[Callable[[], Any], list[torch.nn.Module]]]


def _sweep_peak(setup: Setup, args: tuple[Any, ...], threads: int, device: str) -> MemoryPeak:
    """In the child process: ``setup(*args)`` builds everything, then its ``run()`` is the one measured sweep."""
    _fix_mmap_threshold()
    torch.set_num_threads(threads)
    quiet()
    run, modules = setup(*args)
    cuda = device == "cuda"
    _make_resident(modules)
    del modules
    _release_freed_memory()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated()
    exact = _reset_hwm()
    rss_before = _status_kb("VmRSS")
    with torch.no_grad():
        run()
    cuda_mb = None
    if cuda:
        torch.cuda.synchronize()
        cuda_mb = (torch.cuda.max_memory_allocated() - cuda_before) / 2**20
    hwm = _status_kb("VmHWM")
    rss_mb = (hwm - rss_before) / 1024 if exact and hwm is not None and rss_before is not None else None
    return MemoryPeak(rss_mb, cuda_mb)


def sweep_memory(setup: Setup, args: tuple[Any, ...], threads: int, device: str) -> MemoryPeak:
    """The peak memory of one sweep, measured in a fresh (spawned) process with ``threads`` torch threads.

    ``setup`` must be a module-level function: the child calls ``setup(*args)``, which builds the model and
    prompts and returns ``(run, modules)``: the sweep as a callable of no arguments, and the models whose weights
    the child makes resident (reads once) before it records the RSS; it then runs ``run()`` once under
    ``torch.no_grad()``.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_sweep_peak, setup, args, threads, device).result()


def print_memory_table(rows: list[tuple[str, MemoryPeak]], cuda: bool, label: str = "method") -> None:
    """The memory table: one row per (label, peak)."""
    width = max(18, *(len(name) + 2 for name, _ in rows))
    header = f"{label:<{width}}{'peak RSS +MB':>14}" + (f"{'CUDA peak +MB':>15}" if cuda else "")
    print(
        "\npeak memory of one sweep in a fresh process: VmHWM during the sweep - VmRSS after setup"
        + ("; CUDA: max_memory_allocated - allocated after setup" if cuda else "")
    )
    print(header)
    print("-" * len(header))
    for name, peak in rows:
        line = f"{name:<{width}}" + (f"{peak.rss_mb:>14.0f}" if peak.rss_mb is not None else f"{'n/a':>14}")
        if cuda and peak.cuda_mb is not None:
            line += f"{peak.cuda_mb:>15.0f}"
        print(line, flush=True)


def bench_parser(description: str, repeats: int) -> argparse.ArgumentParser:
    """The options every timing benchmark takes: ``--repeats``, ``--threads``, ``--device`` and the mutually
    exclusive ``--no-memory`` / ``--memory-only``; scripts add their own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=repeats, help=f"interleaved timed repeats (default {repeats})")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--no-memory", action="store_true", help="skip the peak-memory table (fresh process per method)")
    group.add_argument("--memory-only", action="store_true", help="print only the peak-memory table, no timing")
    return parser


def parse_bench_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse and check ``bench_parser``'s options, then set the thread count and silence expected warnings."""
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    torch.set_num_threads(args.threads)
    quiet()
    return args


# --------------------------------------------------------------------------- model


def gpt2_small_hf(n_prompts: int, seed: int, init_range: float) -> tuple[Any, Any, PromptPairs]:
    """The random GPT-2-small-architecture HF model, its tokenizer, and ``n_prompts`` 16-token IOI pairs oriented
    so that every prompt's clean-corrupted gap is positive."""
    # GPT-2 small: 12 layers, 12 heads, d_model 768, vocabulary 50257, context 1024.
    hf, tokenizer = tiny_gpt2(12, 12, 768, vocab_size=50257, n_ctx=1024, initializer_range=init_range, seed=seed)
    return hf, tokenizer, orient_answers(hf, tokenizer, ioi_pairs16(n_prompts, seed=seed))


def build_gpt2_small(
    n_prompts: int, seed: int, init_range: float, device: str
) -> tuple[PatchableModel, Any, PromptPairs]:
    """The random GPT-2-small-architecture model (interp-tests' and TransformerLens' loads of the same saved
    weights) and ``n_prompts`` 16-token IOI pairs oriented so that every prompt's clean-corrupted gap is positive.
    """
    hf, tokenizer, pairs = gpt2_small_hf(n_prompts, seed, init_range)
    with tempfile.TemporaryDirectory() as directory:
        save_model(hf, tokenizer, directory)
        del hf
        model = load_model(directory, device=device)
        bridge = boot_transformer_lens(directory, device=device)
    return model, bridge, pairs


def bridge_logits_error(model: PatchableModel, bridge: Any, ids: torch.Tensor) -> float:
    """max |HF logits - TransformerLens logits| / max |HF logit| on ``ids``."""
    with torch.no_grad():
        hf_logits = model.hf(ids).logits
        return float((hf_logits - bridge(ids)).abs().max()) / float(hf_logits.abs().max())


def ours_sweep(model: PatchableModel, pairs: PromptPairs) -> PatchResult:
    """interp-tests' 144-head sweep."""
    return patch(model, pairs, "attn_head", "str", "logit_diff")


def tl_sweep(bridge: Any, tokens: TokenizedPairs) -> np.ndarray:
    """TransformerLens' 144-head sweep."""
    return transformer_lens_effects(bridge, tokens, "attn_head", "all", "logit_diff", "denoise")


METHODS = ("interp-tests", "TransformerLens")


def memory_setup(
    method: str, n_prompts: int, seed: int, init_range: float, device: str
) -> tuple[Callable[[], Any], list[torch.nn.Module]]:
    """For ``sweep_memory``'s child: build the model and prompts as ``main`` does; return ``method``'s sweep."""
    model, bridge, pairs = build_gpt2_small(n_prompts, seed, init_range, device)
    if method == "interp-tests":
        return functools.partial(ours_sweep, model, pairs), [model.hf]
    return functools.partial(tl_sweep, bridge, pairs.tokenize(model.tokenizer)), [bridge]


# --------------------------------------------------------------------------- main


def agrees(gap: float, max_diff: float, reference: str, sweep: str = "") -> bool:
    """The closing checks of a benchmark that compares interp-tests with ``reference``: the logit-difference
    normalisation is well conditioned (``|gap| > MIN_GAP``) and the effects agree within ``TOLERANCE``. Prints a
    FAIL line (naming ``sweep``, when given) for each check that does not hold."""
    where = f"{sweep}: " if sweep else ""
    passed = True
    if not abs(gap) > MIN_GAP:
        print(f"FAIL: {where}the logit-difference normalisation is ill-conditioned (|gap| {abs(gap):.3g} <= {MIN_GAP})")
        passed = False
    if not max_diff <= TOLERANCE:
        print(f"FAIL: {where}interp-tests and {reference} disagree by {max_diff:.3g} > {TOLERANCE}")
        passed = False
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__.splitlines()[0], repeats=3)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-range", type=float, default=0.08, help="std of the random weights (default 0.08)")
    args = parse_bench_args(parser, argv)
    run_start = time.perf_counter()
    cuda = args.device == "cuda"

    def memory_table() -> None:
        setup_args = (args.prompts, args.seed, args.init_range, args.device)
        rows = [(name, sweep_memory(memory_setup, (name, *setup_args), args.threads, args.device)) for name in METHODS]
        print_memory_table(rows, cuda)

    if args.memory_only:
        print(
            f"GPT-2 small architecture, random init (std {args.init_range}, seed {args.seed}); {args.prompts} IOI "
            f"prompt pairs of 16 tokens; 144-head sweep; device {args.device}; torch {torch.__version__}, "
            f"threads {torch.get_num_threads()}"
        )
        memory_table()
        return 0

    model, bridge, pairs = build_gpt2_small(args.prompts, args.seed, args.init_range, args.device)
    tokens = pairs.tokenize(model.tokenizer)
    assert bool(tokens.attention_mask.bool().all()), "prompts must all have the same length"
    clean_ids, corrupted_ids = tokens.clean_ids.to(args.device), tokens.require_corrupted().to(args.device)
    logits_rel = bridge_logits_error(model, bridge, torch.cat([clean_ids, corrupted_ids]))
    s2 = int((tokens.clean_ids != tokens.require_corrupted()).float().argmax(dim=1).min())
    print(
        f"model: GPT-2 small architecture, random init (std {args.init_range}, seed {args.seed}), 12 layers x 12 heads, d_model 768, "
        f"vocab {len(model.tokenizer)}, n_positions 1024; {tokens.n} IOI prompt pairs of {tokens.seq_len} tokens, "
        f"STR at S2 (token {s2}); device {args.device}; torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(f"bridge vs HF logits: max |diff| / max |logit| = {logits_rel:.3g}")

    def ours() -> tuple[np.ndarray, float]:
        with torch.no_grad():
            result = ours_sweep(model, pairs)
        return result.mean, float(result.ld_clean.mean() - result.ld_corrupted.mean())

    def theirs() -> np.ndarray:
        with torch.no_grad():
            return tl_sweep(bridge, tokens)

    # Warm-up: a full interp-tests sweep; TransformerLens' caching run and one hooked (patching) pass.
    (_, gap), warm_ours = timed(ours, cuda)

    def tl_warmup() -> None:
        with torch.no_grad():
            _, cache = bridge.run_with_cache(clean_ids)
            name = "blocks.0.attn.hook_z"
            bridge.run_with_hooks(corrupted_ids, fwd_hooks=[(name, lambda z, hook: cache[name])])

    _, warm_tl = timed(tl_warmup, cuda)
    print(f"warm-up: interp-tests sweep {warm_ours:.2f} s, TransformerLens caching + 1 hooked pass {warm_tl:.2f} s")
    print(f"mean LD_clean - mean LD_corrupted = {gap:.4f}")

    times: dict[str, list[float]] = {name: [] for name in METHODS}
    diffs, scale = [], 0.0
    for r in range(args.repeats):
        (ours_map, _), ours_s = timed(ours, cuda)
        tl_map, tl_s = timed(theirs, cuda)
        diff = float(np.abs(ours_map - tl_map).max()) if ours_map.shape == tl_map.shape else float("inf")
        diffs.append(diff)
        scale = max(scale, float(np.abs(tl_map).max()))
        times["interp-tests"].append(ours_s)
        times["TransformerLens"].append(tl_s)
        print(
            f"repeat {r + 1}/{args.repeats}: interp-tests {ours_s:.2f} s, TransformerLens {tl_s:.2f} s, "
            f"ratio {tl_s / ours_s:.2f}, max |diff| {diff:.3g}",
            flush=True,
        )

    print(f"\n144-head all-positions sweep (12x12 map), {args.repeats} interleaved repeats")
    header = f"{'method':<18}{'median s':>10}{'min s':>10}"
    print(header)
    print("-" * len(header))
    for name, values in times.items():
        print(f"{name:<18}{statistics.median(values):>10.2f}{min(values):>10.2f}")
    max_diff = max(diffs)
    print(f"max |interp-tests - TransformerLens| over repeats = {max_diff:.3g} (max |effect| {scale:.3g}, bound {TOLERANCE})")
    if not args.no_memory:
        memory_table()
    print(f"total runtime {time.perf_counter() - run_start:.0f} s")
    passed = agrees(gap, max_diff, "TransformerLens")
    ratios = [t / o for o, t in zip(times["interp-tests"], times["TransformerLens"])]
    print(f"speedup_vs_transformer_lens={statistics.median(ratios):.2f}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
