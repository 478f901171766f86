"""Cross-check interp-tests' patching engine against TransformerLens 4.x on a random GPT-2, and time both.

Builds a GPT-2-architecture model offline (default 4 layers, 8 heads, d_model 256, vocabulary 3000, random
init), saves it with ``save_pretrained``, loads it with ``interp_tests.load_model`` and with TransformerLens'
``TransformerBridge.boot_transformers``, runs every sweep kind with both under symmetric token replacement,
and prints a table of max |difference| and runtimes. The last line is ``max_abs_diff=<value>`` (over all
kinds); the exit status is 1 when it exceeds 1e-4, when the normalising gap mean LD_clean - mean LD_corrupted
is below 0.1, or when the bridge's logits differ from the HF model's by more than 1e-4 relative to their scale
(TransformerLens re-implements attention, so fp32 rounding differs slightly; patching effects are compared
after normalisation). Runtimes are wall-clock on a shared CPU: compare them within one run only.

    HF_HUB_OFFLINE=1 python benchmarks/crosscheck_transformer_lens.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from interp_tests import load_model, patch
from interp_tests.testing import (
    boot_transformer_lens,
    ioi_pairs,
    orient_answers,
    save_model,
    tiny_gpt2,
    transformer_lens_effects,
)

TOLERANCE = 1e-4
# (component, positions, metric, direction)
CASES = (
    ("attn_head", "all", "logit_diff", "denoise"),
    ("attn_head", "each", "logit_diff", "denoise"),
    ("mlp", "all", "logit_diff", "denoise"),
    ("mlp", "each", "logit_diff", "denoise"),
    ("attn", "all", "logit_diff", "denoise"),
    ("attn", "each", "logit_diff", "denoise"),
    ("resid", "each", "logit_diff", "denoise"),
    ("attn_head", "all", "prob", "denoise"),
    ("attn_head", "all", "kl", "denoise"),
    ("attn_head", "all", "logit_diff", "noise"),
    ("resid", "each", "logit_diff", "noise"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=3000)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 keeps timings steadier on a shared machine)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bars on stderr

    hf, tokenizer = tiny_gpt2(args.layers, args.heads, args.d_model, vocab_size=args.vocab, seed=args.seed)
    pairs = orient_answers(hf, tokenizer, ioi_pairs(args.prompts, seed=args.seed))
    with tempfile.TemporaryDirectory() as directory:
        save_model(hf, tokenizer, directory)
        model = load_model(directory, device="cpu")
        bridge = boot_transformer_lens(directory)
    tokens = pairs.tokenize(model.tokenizer)
    with torch.no_grad():
        ids = torch.cat([tokens.clean_ids, tokens.require_corrupted()])
        hf_logits = model.hf(ids).logits
        logits_diff = float((hf_logits - bridge(ids)).abs().max())
        logits_rel = logits_diff / float(hf_logits.abs().max())
    print(
        f"model: GPT-2, {args.layers} layers x {args.heads} heads, d_model {args.d_model}, vocab {len(tokenizer)}; "
        f"{tokens.n} prompts of {tokens.seq_len} tokens; torch threads {torch.get_num_threads()}"
    )
    print(
        f"bridge vs HF logits: max |diff| = {logits_diff:.3g}, {logits_rel:.3g} of max |logit| "
        f"(TransformerLens compatibility mode, i.e. fold_ln/centring: {bridge.compatibility_mode})"
    )

    rows = []
    gap = None
    for component, positions, metric, direction in CASES:
        start = time.perf_counter()
        result = patch(
            model, pairs, component, corruption="str", metric=metric, positions=positions, direction=direction
        )
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        reference = transformer_lens_effects(bridge, tokens, component, positions, metric, direction)
        tl_s = time.perf_counter() - start
        gap = result.ld_clean.mean() - result.ld_corrupted.mean()
        diff = float(np.abs(result.mean - reference).max()) if result.mean.shape == reference.shape else float("inf")
        kind = f"{component}/{positions}/{metric}" + ("/noise" if direction == "noise" else "")
        rows.append((kind, "x".join(map(str, reference.shape)), diff, float(np.abs(reference).max()), ours_s, tl_s))

    print(f"mean LD_clean - mean LD_corrupted = {gap:.4f}")
    header = (
        f"{'component kind':<32}{'grid':>8}{'max_abs_diff':>14}{'max|effect|':>13}{'relative':>10}"
        f"{'interp-tests s':>16}{'TL s':>8}"
    )
    print(header)
    print("-" * len(header))
    for kind, grid, diff, scale, ours_s, tl_s in rows:
        relative = diff / scale if scale > 0 else float("nan")
        print(f"{kind:<32}{grid:>8}{diff:>14.3g}{scale:>13.4g}{relative:>10.2g}{ours_s:>16.2f}{tl_s:>8.2f}")
    total_ours, total_tl = sum(r[4] for r in rows), sum(r[5] for r in rows)
    print(f"{'total':<32}{'':>8}{'':>14}{'':>13}{'':>10}{total_ours:>16.2f}{total_tl:>8.2f}")
    max_diff = max(r[2] for r in rows)
    failed = not max_diff <= TOLERANCE or not gap > 0.1 or not logits_rel <= TOLERANCE or bridge.compatibility_mode
    if not gap > 0.1:
        print(f"FAIL: the logit-difference normalisation is ill-conditioned (gap {gap:.3g} <= 0.1)")
    if not logits_rel <= TOLERANCE or bridge.compatibility_mode:
        print("FAIL: the TransformerLens bridge does not compute the HF model's logits")
    if not max_diff <= TOLERANCE:
        print(f"FAIL: interp-tests and TransformerLens disagree by more than {TOLERANCE}")
    print(f"max_abs_diff={max_diff:.3g}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
