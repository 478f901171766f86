"""attention_to: every head's attention weight between named positions, against softmax(q k^T / sqrt(d))
computed by hand from the query and key projections of a plain forward pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import interp_tests as it
from interp_tests.attention import attention_to
from interp_tests.errors import SettingsError
from interp_tests.testing import tiny_gpt2


def _pairs() -> it.PromptPairs:
    """Prompts of different lengths (so the batch is padded) with spans A and B, B after A."""
    clean = [
        "When Mary and John went to the store, John gave a drink to",
        "Then Tom and Mary went to the park, Tom gave a book to",
        "When John and Tom went to the school and the park, John gave a ring to",
    ]
    spans = {"A": [], "B": []}
    for prompt in clean:
        a = prompt.index(" and ") + 5
        spans["A"].append((a, prompt.index(" ", a)))
        b = prompt.rindex(", ") + 2
        spans["B"].append((b, prompt.index(" ", b)))
    return it.PromptPairs(clean, None, [" Mary", " Mary", " Tom"], [" John", " Tom", " John"], spans=spans)


def _reference(hf: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    """[layers, heads, query, key] attention probabilities from c_attn's q and k, masked causally."""
    captured: list[torch.Tensor] = []
    hooks = [block.attn.c_attn.register_forward_hook(lambda _m, _i, out: captured.append(out)) for block in hf.transformer.h]
    try:
        with torch.no_grad():
            hf(input_ids=torch.tensor([ids]))
    finally:
        for hook in hooks:
            hook.remove()
    n_heads, d_model = hf.config.n_head, hf.config.n_embd
    d_head, length = d_model // n_heads, len(ids)
    patterns = []
    for qkv in captured:
        q, k, _ = qkv[0].split(d_model, dim=-1)
        q = q.view(length, n_heads, d_head).transpose(0, 1)
        k = k.view(length, n_heads, d_head).transpose(0, 1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d_head)
        scores = scores.masked_fill(torch.ones(length, length).triu(1).bool(), float("-inf"))
        patterns.append(scores.softmax(-1))
    return torch.stack(patterns)


@pytest.mark.parametrize(("query", "key"), [("last", "A"), ("B", "A"), ("last", "previous"), ("B", "B"), ("B", "A+1"), ("last-1", "B-2")])
def test_weights_equal_softmax_of_queries_and_keys(query: str, key: str) -> None:
    hf, tokenizer = tiny_gpt2()
    model = it.load_model(hf, tokenizer=tokenizer)
    pairs = _pairs()
    tokens = pairs.tokenize(tokenizer)
    scores = attention_to(model, pairs, query, key, batch_size=2)
    assert scores.per_prompt.shape == (3, model.n_layers, model.n_heads)
    for i in range(3):
        length = int(tokens.lengths[i])
        reference = _reference(hf, tokens.clean_ids[i, :length].tolist())
        def at(name: str) -> int:
            base, _, shift = name.replace("-", "+-").partition("+")
            return int(tokens.position(base)[i]) + int(shift or 0)

        q = at(query)
        k = q - 1 if key == "previous" else at(key)
        np.testing.assert_allclose(scores.per_prompt[i], reference[:, :, q, k].numpy(), atol=1e-6)
    np.testing.assert_allclose(scores.mean, scores.per_prompt.mean(axis=0))
    assert scores[scores.top(1)[0][0]] == pytest.approx(scores.mean.max())


def test_the_model_keeps_its_attention_implementation() -> None:
    hf, tokenizer = tiny_gpt2()
    model = it.load_model(hf, tokenizer=tokenizer)
    before = hf.config._attn_implementation
    attention_to(model, _pairs(), "last", "A")
    assert hf.config._attn_implementation == before


def test_a_key_after_its_query_and_a_bad_label_are_refused() -> None:
    hf, tokenizer = tiny_gpt2()
    model = it.load_model(hf, tokenizer=tokenizer)
    with pytest.raises(SettingsError, match=r"key 'B' .* is not at or before the query 'A'.*Swap query and key"):
        attention_to(model, _pairs(), "A", "B")
    with pytest.raises(SettingsError, match=r"position 'last\+1' is outside prompt 0"):
        attention_to(model, _pairs(), "last+1", "A")
    scores = attention_to(model, _pairs(), "last", "A")
    with pytest.raises(SettingsError, match="outside this model's 3 layers x 4 heads"):
        scores["3.0"]
    with pytest.raises(SettingsError, match="not a head label"):
        scores["mlp.1"]
