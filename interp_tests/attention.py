"""Attention patterns: how much each head attends from one named position to another, on clean prompts.

Patching says which heads matter and path patching through which inputs; the pattern says what each head
reads: a name mover attends from the end to IO, a duplicate-token head from S2 to S1, a previous-token head
to the token just before. The weights are the model's own attention probabilities (its eager attention
implementation for one forward pass, so soft-capping and masks are the model's), averaged over prompts.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import numpy as np
import torch

from .engine import Pairs, eval_mode, tokenize
from .errors import SettingsError, UnsupportedArchitectureError
from .models import PatchableModel
from .pairs import TokenizedPairs
from .readings import AttentionScores

PREVIOUS = "previous"  # key position: the token just before the query position
_OFFSET = re.compile(r"^(?P<name>.+?)(?P<offset>[+-]\d+)$")  # "S1+1": the token after S1's last token


def _position(tokens: TokenizedPairs, name: str) -> torch.Tensor:
    shifted = _OFFSET.match(name)
    if shifted is None:
        return tokens.position(name)
    at = tokens.position(shifted["name"]) + int(shifted["offset"])
    outside = (at < 0) | (at >= tokens.lengths)
    if bool(outside.any()):
        first = int(outside.nonzero()[0, 0])
        raise SettingsError(f"attention_to: position {name!r} is outside prompt {first} ({int(tokens.lengths[first])} tokens).")
    return at


@contextlib.contextmanager
def _eager_attention(model: PatchableModel) -> Iterator[None]:
    """Fused attention kernels return no probabilities: switch to eager attention for the pass, then back."""
    before = model.hf.config._attn_implementation
    try:
        model.hf.set_attn_implementation("eager")
    except (ValueError, NotImplementedError) as error:
        raise UnsupportedArchitectureError(
            f"{model.name}: attention patterns need the eager attention implementation, which this model "
            f"refuses ({error})."
        ) from None
    try:
        yield
    finally:
        model.hf.set_attn_implementation(before)


def attention_to(
    model: PatchableModel, pairs: Pairs, query: str = "last", key: str = "IO", *, batch_size: int = 32
) -> AttentionScores:
    """Each head's attention weight from the ``query`` position to the ``key`` position of every clean prompt.

    Positions are ``"last"`` or span names of the pairs (their last token, as sweeps use them), optionally
    shifted by a token offset (``"S1+1"``, the token after S1: where an induction head at S2 looks); ``key``
    may also be ``"previous"``, the token before the query position. Raises ``SettingsError`` when a key does
    not come before its query in some prompt (causal attention cannot look there).
    """
    tokens = tokenize(model, pairs)
    query_at = _position(tokens, query)
    key_at = query_at - 1 if key == PREVIOUS else _position(tokens, key)
    late = (key_at > query_at) | (key_at < 0)
    if bool(late.any()):
        first = int(late.nonzero()[0, 0])
        raise SettingsError(
            f"attention_to: in prompt {first} the key {key!r} (token {int(key_at[first])}) is not at or before the "
            f"query {query!r} (token {int(query_at[first])}); causal attention only looks back. Swap query and key."
        )
    weights = []
    with torch.no_grad(), eval_mode(model), _eager_attention(model):
        for start in range(0, tokens.n, batch_size):
            rows = torch.arange(start, min(tokens.n, start + batch_size))
            output = model.hf(
                input_ids=tokens.clean_ids[rows].to(model.device),
                attention_mask=tokens.attention_mask[rows].to(model.device),
                output_attentions=True,
            )
            # attentions: one [rows, heads, query, key] tensor per layer
            per_layer = [a[torch.arange(len(rows)), :, query_at[rows], key_at[rows]] for a in output.attentions]
            weights.append(torch.stack(per_layer, dim=1).float().cpu())
    per_prompt = torch.cat(weights).numpy()
    return AttentionScores(query=query, key=key, mean=per_prompt.mean(axis=0), per_prompt=per_prompt)
