"""Independent cross-check: interp-tests' nnsight engine against TransformerLens 4.x activation patching.

A random GPT-2 (3 layers, 4 heads, d_model 64) with a word-level tokenizer is built offline and saved
with ``save_pretrained``; interp-tests loads the folder with ``load_model`` (transformers, sdpa attention,
nnsight interventions) and TransformerLens with ``TransformerBridge.boot_transformers`` (eager attention,
its own hooks and ``transformer_lens.patching`` sweeps). Every sweep's ``PatchResult.mean`` must match
TransformerLens' grid to 1e-4.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip(
    "transformer_lens", reason="the cross-check needs TransformerLens 4.x (pip install 'transformer-lens>=4,<5')"
)

from interp_tests import load_model, patch  # noqa: E402
from interp_tests.pairs import PromptPairs, TokenizedPairs  # noqa: E402
from interp_tests.testing import (  # noqa: E402
    boot_transformer_lens,
    ioi_pairs,
    orient_answers,
    save_model,
    tiny_gpt2,
    transformer_lens_effects,
)

TOLERANCE = 1e-4
N_LAYERS, N_HEADS = 3, 4


@dataclass
class Setup:
    model: Any  # PatchableModel
    bridge: Any  # TransformerBridge
    pairs: PromptPairs
    tokens: TokenizedPairs


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    # One thread: the model is tiny, and on a busy shared CPU extra threads only oversubscribe it.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        hf, tokenizer = tiny_gpt2(N_LAYERS, N_HEADS, 64, seed=0)
        pairs = orient_answers(hf, tokenizer, ioi_pairs(8, seed=0))
        directory = save_model(hf, tokenizer, tmp_path_factory.mktemp("tiny_gpt2"))
        model = load_model(directory, device="cpu")
        yield Setup(model, boot_transformer_lens(directory), pairs, pairs.tokenize(model.tokenizer))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def results(setup: Setup) -> dict[tuple[str, str], Any]:
    """One interp-tests sweep per (component, positions); other metrics come from ``with_metric``."""
    return {}


def sweep(setup: Setup, results: dict, component: str, positions: str) -> Any:
    key = (component, positions)
    if key not in results:
        results[key] = patch(
            setup.model, setup.pairs, component, corruption="str", metric="logit_diff", positions=positions
        )
    return results[key]


def assert_agrees(ours: np.ndarray, reference: np.ndarray, what: str) -> None:
    assert ours.shape == reference.shape, f"{what}: shape {ours.shape} != TransformerLens {reference.shape}"
    diff = float(np.abs(ours - reference).max())
    assert diff < TOLERANCE, f"{what}: max |interp-tests - TransformerLens| = {diff:.3g}\nours\n{ours}\nTL\n{reference}"


def test_prompts_are_aligned_and_unpadded(setup: Setup) -> None:
    tokens = setup.tokens
    assert tokens.n == 8 and tokens.corrupted_ids is not None
    assert bool(tokens.attention_mask.bool().all()), "all prompts must have the same length"
    assert all(len(a) == 1 and len(w) == 1 for a, w in zip(tokens.answer_ids, tokens.wrong_ids))


def test_bridge_keeps_the_hf_computation(setup: Setup) -> None:
    """No LayerNorm folding or weight centring: the bridge's logits are the HF model's."""
    assert not setup.bridge.compatibility_mode
    ids = torch.cat([setup.tokens.clean_ids, setup.tokens.corrupted_ids])
    with torch.no_grad():
        hf_logits = setup.model.hf(ids).logits
        tl_logits = setup.bridge(ids)
    assert hf_logits.shape == tl_logits.shape
    assert float((hf_logits - tl_logits).abs().max()) < TOLERANCE


def test_normalisation_is_well_conditioned(setup: Setup, results: dict) -> None:
    result = sweep(setup, results, "attn_head", "all")
    gap = result.ld_clean.mean() - result.ld_corrupted.mean()
    assert gap > 0.1, f"mean LD_clean - mean LD_corrupted = {gap:.3g} is too small to normalise by"


@pytest.mark.parametrize(
    "component, positions, shape",
    [
        ("attn_head", "all", (N_LAYERS, N_HEADS)),
        ("attn_head", "each", (N_LAYERS, None, N_HEADS)),
        ("mlp", "all", (N_LAYERS,)),
        ("mlp", "each", (N_LAYERS, None)),
        ("attn", "all", (N_LAYERS,)),
        ("attn", "each", (N_LAYERS, None)),
        ("resid", "each", (N_LAYERS, None)),
        ("resid", "all", (N_LAYERS,)),
    ],
)
def test_logit_diff_matches_transformer_lens(
    setup: Setup, results: dict, component: str, positions: str, shape: tuple
) -> None:
    result = sweep(setup, results, component, positions)
    expected_shape = tuple(setup.tokens.seq_len if s is None else s for s in shape)
    assert result.mean.shape == expected_shape
    reference = transformer_lens_effects(setup.bridge, setup.tokens, component, positions, "logit_diff")
    assert np.abs(reference).max() > 0.05, "the sweep must have effects worth comparing"
    assert_agrees(result.mean, reference, f"{component} positions={positions} logit_diff")
    if component == "resid":
        # Restoring the residual stream before layer 0 restores the clean run exactly; per position, only the
        # one position where clean and corrupted differ (S2) matters, so layer 0's cells sum to 1.
        layer0 = reference[0] if positions == "all" else reference[0].sum()
        assert layer0 == pytest.approx(1.0, abs=TOLERANCE)


@pytest.mark.parametrize("metric", ["prob", "kl"])
def test_head_metrics_match_transformer_lens(setup: Setup, results: dict, metric: str) -> None:
    result = sweep(setup, results, "attn_head", "all").with_metric(metric)
    reference = transformer_lens_effects(setup.bridge, setup.tokens, "attn_head", "all", metric)
    scale = float(np.abs(reference).max())
    assert scale > 1e-4, f"{metric} effects are all ~0: nothing to compare"
    assert_agrees(result.mean, reference, f"attn_head {metric}")
    # Probabilities of a random model are small: also hold the difference to 0.1% of the largest effect.
    assert float(np.abs(result.mean - reference).max()) < 1e-3 * scale


@pytest.mark.parametrize("component, positions", [("attn_head", "all"), ("mlp", "each")])
def test_noising_matches_transformer_lens(setup: Setup, component: str, positions: str) -> None:
    result = patch(
        setup.model, setup.pairs, component, corruption="str", metric="logit_diff", positions=positions,
        direction="noise",
    )
    reference = transformer_lens_effects(
        setup.bridge, setup.tokens, component, positions, "logit_diff", direction="noise"
    )
    assert np.abs(reference).max() > 0.05
    assert_agrees(result.mean, reference, f"{component} positions={positions} noising")
