"""An independent plain-PyTorch reference for circuit scores (sufficiency, necessity, faithfulness).

Nothing here uses nnsight or the interp_tests engine: each run is one unpadded prompt through the Hugging Face
module, with ``register_forward_pre_hook`` / ``register_forward_hook`` on the modules that test_engine's
``_module`` names. The reference parses labels, resolves named spans (from the tokenizer's character offsets),
records the unpatched clean and corrupted activations, computes mean-ablation values and scores on its own.

Sites (as interp_tests.components defines them):
  head  ``L.H``     the input of the attention output projection, features [H*d_head, (H+1)*d_head)
  attn  ``attn.L``  the attention module's output[0]
  mlp   ``mlp.L``   the MLP module's output
  resid ``resid.L`` the decoder layer's input hidden states
A label may end in ``@P``: P a token index, ``last``, or a span name of the pairs (the span's last token, per
prompt). An index past a prompt's end covers nothing in that prompt.

Semantics (per prompt i; m = logit_diff | prob | -KL(p_clean || p_run), at the prompt's last token):
  ablated value at absolute position p: resample = pair i's unpatched corrupted run; mean = mean over the
  reference prompts (default the pairs' corrupted prompts) that have a token at p; zero = 0.
  sufficiency/resample: patched = corrupted run with the circuit's activations set to their clean values;
      empty = corrupted run.
  sufficiency/mean|zero and faithfulness (any ablation): patched = clean run with every universe activation
      outside the circuit ablated; empty = clean run with the whole universe ablated.
  necessity: patched = clean run with the circuit ablated; empty = corrupted run (resample) or the clean run
      with the whole universe ablated (mean|zero).
  full = clean run. Scores: suff./faith. (P - E) / (F - E); necessity (F - P) / (F - E), on means (score) and
  per prompt (per_prompt); faithfulness_ratio = mean P / mean F.
Patches of one run are applied together in forward order (hooks fire as the forward pass reaches them), so
later layers see every earlier patch and several patches of one layer compose resid -> head -> attn -> mlp.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from test_engine import _module

SITES = ("resid", "head", "attn", "mlp")  # forward order within a layer
_LABEL = re.compile(r"^(?:(?P<layer_h>\d+)\.(?P<head>\d+)|(?P<kind>attn|mlp|resid)\.(?P<layer>\d+))(?:@(?P<pos>\w+))?$")


@dataclass(frozen=True)
class Node:
    site: str
    layer: int
    head: int | None
    position: int | str | None  # None: every position


def parse(label: str) -> Node:
    match = _LABEL.match(label)
    if not match:
        raise ValueError(f"reference: cannot parse {label!r}")
    pos = match["pos"]
    position = None if pos is None else (int(pos) if pos.isdigit() else pos)
    if match["kind"]:
        return Node(match["kind"], int(match["layer"]), None, position)
    return Node("head", int(match["layer_h"]), int(match["head"]), position)


def universe_labels(labels: list[str], n_layers: int, n_heads: int) -> list[str]:
    """Every node of the kinds present in ``labels``, at all positions."""
    sites = {parse(label).site for label in labels}
    out = []
    if "head" in sites:
        out += [f"{layer}.{head}" for layer in range(n_layers) for head in range(n_heads)]
    for site in ("attn", "mlp", "resid"):
        if site in sites:
            out += [f"{site}.{layer}" for layer in range(n_layers)]
    return out


def span_last_token(tokenizer, prompt: str, span: tuple[int, int]) -> int:
    offsets = tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]
    start, end = span
    tokens = [t for t, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
    assert tokens, f"reference: span {span} covers no token of {prompt!r}"
    return tokens[-1]


Key = tuple[str, int, int | None]  # (site, layer, head)


def cover(model, pairs, labels: list[str], i: int, seq: int) -> dict[Key, torch.Tensor]:
    """Which positions of prompt i (length ``seq``) each activation covered by ``labels`` spans: key -> bool [seq]."""
    masks: dict[Key, torch.Tensor] = {}
    for label in labels:
        node = parse(label)
        if not 0 <= node.layer < model.n_layers or (node.head is not None and not 0 <= node.head < model.n_heads):
            raise ValueError(f"reference: {label!r} is not in the model")
        key = (node.site, node.layer, node.head)
        mask = masks.setdefault(key, torch.zeros(seq, dtype=torch.bool))
        if node.position is None:
            mask[:] = True
        elif isinstance(node.position, int):
            if node.position < seq:
                mask[node.position] = True
        elif node.position == "last":
            mask[seq - 1] = True
        else:
            mask[span_last_token(model.tokenizer, pairs.clean[i], pairs.spans[node.position][i])] = True
    return masks


def _features(model, head):
    d = model.shape.d_head
    return slice(None) if head is None else slice(head * d, (head + 1) * d)


def forward(model, ids: torch.Tensor, writes=None, record=False):
    """Last-token logits (float32) of one unpadded prompt ``ids`` [seq], with ``writes`` {key: (mask [seq],
    values [seq, width])} written at the masked positions; with ``record``, also every site's activation
    {(site, layer): [seq, width]} (of an unpatched run: recording sees the written values)."""
    grouped: dict[tuple[str, int], list] = {}
    for (site, layer, head), (mask, values) in (writes or {}).items():
        if mask.any():
            grouped.setdefault((site, layer), []).append((_features(model, head), mask, values))
    stored = {}
    handles = []

    def make_apply(key, edits):
        def apply(t):
            if edits:
                t = t.clone()
                for feat, mask, values in edits:
                    t[0, mask, feat] = values[mask].to(t.dtype)
            if record:
                stored[key] = t[0].detach().clone()
            return t
        return apply

    for layer in range(model.n_layers):
        for site in SITES:
            edits = grouped.get((site, layer), [])
            if not edits and not record:
                continue
            apply = make_apply((site, layer), edits)
            module = _module(model, site, layer)
            if site in ("resid", "head"):
                def pre(m, args, kwargs, apply=apply):
                    if args:
                        return (apply(args[0]), *args[1:]), kwargs
                    return args, {**kwargs, "hidden_states": apply(kwargs["hidden_states"])}
                handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            else:
                def post(m, args, out, apply=apply):
                    if isinstance(out, tuple):
                        return (apply(out[0]), *out[1:])
                    return apply(out)
                handles.append(module.register_forward_hook(post))
    try:
        with torch.no_grad():
            logits = model.hf(ids[None]).logits[0, -1].float()
    finally:
        for handle in handles:
            handle.remove()
    return logits, stored


def _ids(model, prompt: str) -> torch.Tensor:
    return torch.tensor(model.tokenizer(prompt)["input_ids"])


def _metric(metric, logits, clean_logits, answer, wrong):
    logprobs = torch.log_softmax(logits, -1)
    if metric == "logit_diff":
        return (logits[answer] - logits[wrong]).item()
    if metric == "prob":
        return logprobs[answer].exp().item()
    clean = torch.log_softmax(clean_logits, -1)
    return -(clean.exp() * (clean - logprobs)).sum().item()


def _values(acts, key: Key, model) -> torch.Tensor:
    site, layer, head = key
    return acts[(site, layer)][:, _features(model, head)]


def reference_circuit(model, pairs, circuit: list[str], *, test: str, ablation: str, metric: str = "logit_diff",
                      universe: list[str] | None = None, reference: list[str] | None = None) -> dict:
    """The circuit score, per-prompt scores and raw per-prompt metrics, computed as the module docstring says."""
    tok = model.tokenizer
    universe = universe_labels(circuit, model.n_layers, model.n_heads) if universe is None else list(universe)
    ref_prompts = list(pairs.corrupted if reference is None else reference)
    ref_acts = [forward(model, _ids(model, p), record=True)[1] for p in ref_prompts] if ablation == "mean" else []
    m = {"clean": [], "corrupted": [], "patched": [], "empty": []}
    for i in range(len(pairs)):
        clean_ids, corr_ids = _ids(model, pairs.clean[i]), _ids(model, pairs.corrupted[i])
        seq = len(clean_ids)
        assert len(corr_ids) == seq
        clean_logits, clean_acts = forward(model, clean_ids, record=True)
        corr_logits, corr_acts = forward(model, corr_ids, record=True)
        c_cover = cover(model, pairs, circuit, i, seq)
        u_cover = cover(model, pairs, universe, i, seq)

        def ablated(key: Key) -> torch.Tensor:
            if ablation == "resample":
                return _values(corr_acts, key, model)
            if ablation == "zero":
                return torch.zeros_like(_values(clean_acts, key, model))
            out = torch.zeros_like(_values(clean_acts, key, model))
            for p in range(seq):
                rows = [_values(acts, key, model)[p] for acts in ref_acts if _values(acts, key, model).shape[0] > p]
                assert rows, f"reference: no reference prompt reaches position {p}"
                out[p] = torch.stack(rows).mean(0)
            return out

        def ablate(masks):
            return {key: (mask, ablated(key)) for key, mask in masks.items()}

        outside = {}
        for key, mask in u_cover.items():
            outside[key] = mask & ~c_cover[key] if key in c_cover else mask
        if test == "sufficiency" and ablation == "resample":
            writes = {key: (mask, _values(clean_acts, key, model)) for key, mask in c_cover.items()}
            patched, _ = forward(model, corr_ids, writes)
        elif test == "necessity":
            patched, _ = forward(model, clean_ids, ablate(c_cover))
        else:  # faithfulness, or sufficiency under mean / zero ablation
            patched, _ = forward(model, clean_ids, ablate(outside))
        if ablation == "resample" and test != "faithfulness":
            empty = corr_logits
        else:
            empty, _ = forward(model, clean_ids, ablate(u_cover))
        answer, wrong = tok.convert_tokens_to_ids(pairs.answer[i]), tok.convert_tokens_to_ids(pairs.wrong[i])
        for name, logits in (("clean", clean_logits), ("corrupted", corr_logits), ("patched", patched), ("empty", empty)):
            m[name].append(_metric(metric, logits, clean_logits, answer, wrong))
    m = {k: np.array(v) for k, v in m.items()}
    full, patched, empty = m["clean"], m["patched"], m["empty"]
    if test == "necessity":
        score = (full.mean() - patched.mean()) / (full.mean() - empty.mean())
        per_prompt = (full - patched) / (full - empty)
    else:
        score = (patched.mean() - empty.mean()) / (full.mean() - empty.mean())
        per_prompt = (patched - empty) / (full - empty)
    out = {"score": float(score), "per_prompt": per_prompt, "metrics": m}
    if test == "faithfulness":
        with np.errstate(divide="ignore", invalid="ignore"):  # m(full) = 0 under kl
            out["faithfulness_ratio"] = float(np.float64(patched.mean()) / full.mean())
    return out
