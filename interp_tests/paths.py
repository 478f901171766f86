"""Path patching (Wang et al. 2023, the IOI paper; Goldowsky-Dill et al. 2023): how much of a behaviour each
attention head passes to chosen *receivers* along direct paths, rather than through everything downstream.

For a sender head ``h`` (denoising: the target run is the corrupted one, the source run the clean one):

* stage 1: the target run with ``h``'s output (its slice of the attention output projection's input, where
  ``patch`` patches heads) set to its source-run value and every other head, at every layer, frozen at its
  target-run value; MLPs and norms are recomputed. Each receiver's input is recorded: a head's query, key or
  value (its slice of the q/k/v projection's output) or, for ``"logits"``, the final residual stream (the
  input of the final norm, i.e. the last layer's output);
* stage 2: the target run with only the receivers' inputs replaced by their stage-1 values; the metrics are
  read from it, and the effect is the usual normalised effect (the same raw effects as ``patch``).

Rows are batched as in the exact sweep: stage 1 for many (sender, prompt) rows runs in one forward pass
that resumes at the senders' layer from the target run's cached layer outputs (everything below it is the
target run) and stops after the last receiver's layer; stage 2 runs the same rows in one pass that resumes at
the first receiver's layer. Both use the sweep's shared prefix (its keys and values are the same in every run).
A sender at or above every receiver head's layer has no path to them: its effect is exactly 0, without a run.

With ``"logits"`` among the receivers the final residual stream of stage 2 *is* stage 1's, so stage 2's logits
are stage 1's and any head receivers beside it change nothing (each label is patched literally, as
specified); path patching to heads and to the logits are usually separate calls.
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .corruptions import DEFAULT_NOISE_SCALE, Corruption, RunInput
from .errors import ComponentError, InterpWarning, SettingsError, did_you_mean
from .metrics import AnswerReader, Metric, RunStats, UserMetric, check_clean_run, resolve_metric
from .models import PatchableModel
from .pairs import TokenizedPairs
from .engine import (
    Pairs,
    Progress,
    SharedPrefix,
    eval_mode,
    final_logits,
    in_passes,
    on_model,
    pass_inputs,
    prepare_sweep,
    progress_reporter,
    rows_per_pass,
    take_rows,
    run,
    shared_prefix,
    sweep_inputs,
    sweep_result,
)
from .results import PatchResult

SENDERS = ("attn_head",)
INPUTS = ("q", "k", "v")
LOGITS = "logits"
_LABEL = re.compile(r"^(\d+)\.(\d+)(?:\.([qkv]))?$")
_INPUT_NAME = {"q": "query", "k": "key", "v": "value"}


@dataclass(frozen=True)
class Receiver:
    """One receiver input: head ``head``'s ``input`` ("q", "k", "v") at ``layer``, or the logits (layer None)."""

    layer: int | None
    head: int | None
    input: str

    @property
    def label(self) -> str:
        return LOGITS if self.input == LOGITS else f"{self.layer}.{self.head}.{self.input}"


def _valid_labels(model: PatchableModel) -> list[str]:
    heads = [f"{layer}.{head}" for layer in range(model.n_layers) for head in range(model.n_heads)]
    return [LOGITS, *heads, *(f"{h}.{i}" for h in heads for i in INPUTS)]


def parse_receivers(model: PatchableModel, receivers: str | Sequence[str]) -> list[Receiver]:
    """Receiver labels -> receivers, in order and without repeats: ``"L.H.q"``/``".k"``/``".v"``, ``"L.H"`` (all three
    inputs) and ``"logits"``. Unknown labels raise ComponentError; a key or value receiver that several query heads
    share (grouped-query attention) raises SettingsError."""
    labels = [receivers] if isinstance(receivers, str) else list(receivers)
    if not labels:
        raise SettingsError("receivers is empty: name at least one, e.g. ['9.9.q'] or ['logits'].")
    L, H = model.n_layers - 1, model.n_heads - 1
    parsed: dict[Receiver, None] = {}
    for label in labels:
        if label == LOGITS:
            parsed[Receiver(None, None, LOGITS)] = None
            continue
        match = _LABEL.match(str(label))
        if not match or int(match[1]) > L or int(match[2]) > H:
            raise ComponentError(
                f"{label!r} is not a receiver of this model.{did_you_mean(str(label), _valid_labels(model))} "
                f"Receivers are 'L.H.q', 'L.H.k', 'L.H.v' (a head's query, key or value input), 'L.H' (all three) "
                f"with L in 0..{L} and H in 0..{H}, and 'logits' (the final residual stream)."
            )
        layer, head = int(match[1]), int(match[2])
        for which in [match[3]] if match[3] else INPUTS:
            _check_not_shared(model, label, layer, head, which, whole=match[3] is None)
            parsed[Receiver(layer, head, which)] = None
    return list(parsed)


def _check_not_shared(model: PatchableModel, label: str, layer: int, head: int, which: str, *, whole: bool) -> None:
    n_kv = model.shape.n_kv_heads
    if which == "q" or n_kv == model.n_heads:
        return
    group = model.n_heads // n_kv
    kv = head // group
    sharing = [f"{layer}.{kv * group + j}" for j in range(group)]
    inputs = "key and value inputs" if whole else f"{_INPUT_NAME[which]} input"
    raise SettingsError(
        f"Receiver {label!r}: {model.name} uses grouped-query attention ({model.n_heads} query heads share "
        f"{n_kv} key/value heads), so head {layer}.{head}'s {inputs} belong to KV head {kv}, which query heads "
        f"{', '.join(sharing)} all share: patching it would patch all of them, not one receiver head. Use the "
        f"query receiver '{layer}.{head}.q' instead."
    )


def _accesses(model: PatchableModel, receivers: Sequence[Receiver]) -> dict[int, list[tuple[str, list[tuple[Receiver, slice]]]]]:
    """Head receivers by layer, then by module in forward order (q, k, v projection), with each one's slice."""
    adapter, shape = model.adapter, model.shape
    by_layer: dict[int, dict[str, list[tuple[Receiver, slice]]]] = defaultdict(dict)
    for receiver in sorted((r for r in receivers if r.input != LOGITS), key=lambda r: (r.layer, INPUTS.index(r.input), r.head)):
        path, features = adapter.qkv_slice(receiver.input, receiver.head, shape.n_heads, shape.n_kv_heads, shape.d_head)
        by_layer[receiver.layer].setdefault(path, []).append((receiver, features))
    return {layer: list(modules.items()) for layer, modules in sorted(by_layer.items())}


def path_patch(
    model: PatchableModel,
    pairs: Pairs,
    receivers: str | Sequence[str],
    senders: str = "attn_head",
    corruption: Corruption = "str",
    metric: Metric = "logit_diff",
    *,
    seed: int = 0,
    noise_scale: float = DEFAULT_NOISE_SCALE,
    batch_size: int | None = None,
    progress: Progress = None,
) -> PatchResult:
    """Path-patch every attention head (sender) into ``receivers`` and measure how much behaviour each restores.

    ``receivers`` are labels: ``"L.H.q"``, ``"L.H.k"``, ``"L.H.v"`` (a head's query, key or value input),
    ``"L.H"`` (all three) and ``"logits"`` (the direct path: the final residual stream). The result is a
    ``PatchResult`` over heads (``[n_layers, n_heads]``, labels ``"L.H"``) like ``patch(model, pairs,
    "attn_head")``'s, with ``settings["method"] == "path"`` and ``settings["receivers"]``; all three metrics
    come from the same runs (``.with_metric``). Senders at or above every receiver head's layer have no path
    to them and get effect exactly 0. Denoising only (clean values into the corrupted run), as in the IOI paper.
    See the module docstring for the two stages. ``batch_size`` and ``progress`` are ``patch``'s (rows are
    (sender, prompt) pairs; each batch costs a stage-1 and a stage-2 forward pass; ``progress=True`` shows a bar).

    Grouped-query models: a key or value receiver is shared by several query heads and is refused
    (SettingsError); query receivers work.
    """
    if senders not in SENDERS:
        raise SettingsError(
            f"senders={senders!r}: path patching sends from every attention head; use senders='attn_head'."
            f"{did_you_mean(str(senders), SENDERS)}"
        )
    parsed = parse_receivers(model, receivers)
    has_logits = any(r.input == LOGITS for r in parsed)
    if has_logits and len(parsed) > 1:
        warnings.warn(
            InterpWarning(
                "receivers include 'logits' and heads: stage 2 then takes its whole final residual stream from "
                "stage 1, so the head receivers change nothing. Path-patch into the heads and into the logits "
                "in separate calls."
            ),
            stacklevel=2,
        )
    accesses = _accesses(model, parsed)
    tokens, grid = prepare_sweep(
        model, pairs, "attn_head", corruption, metric, positions="all", window=1, direction="denoise",
        noise_scale=noise_scale,
    )
    name, custom = resolve_metric(metric)
    with progress_reporter(progress, "path patching") as report:
        outcome = on_model(
            model, path_work, tokens, corruption, accesses, has_logits, seed=seed, noise_scale=noise_scale,
            custom=custom, batch_size=batch_size, progress=report, user_code=[m.fn for m in custom],
        )
    clean_run = check_clean_run(outcome["clean_run"], model.tokenizer)
    result = sweep_result(
        model, tokens, grid, RunStats(outcome["patched"]), RunStats(outcome["clean"]), RunStats(outcome["corrupted"]),
        metric=name, method="path", rows_per_pass=outcome["rows_per_pass"], component="attn_head", positions="all",
        corruption=corruption, direction="denoise", window=1, seed=seed, noise_scale=noise_scale, custom=custom,
        clean_run=clean_run,
    )
    result.settings["receivers"] = [r.label for r in parsed]
    result.settings["senders"] = senders
    return result


def path_work(
    model: PatchableModel,
    tokens: TokenizedPairs,
    corruption: Corruption,
    accesses: dict[int, list[tuple[str, list[tuple[Receiver, slice]]]]],
    has_logits: bool,
    *,
    seed: int,
    noise_scale: float,
    custom: Sequence[UserMetric],
    batch_size: int | None,
    progress: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    """Where the model runs (``engine.on_model``): the clean and corrupted runs, both stages of every
    (sender, prompt) row, and their stats."""
    source, target = sweep_inputs(model, tokens, corruption, direction="denoise", seed=seed, noise_scale=noise_scale)
    all_prompts = list(range(tokens.n))
    reader = AnswerReader(tokens, model.shape.vocab_size, custom)
    with torch.no_grad(), eval_mode(model):
        prefix = shared_prefix(model, tokens, source, target)
        clean_logits, clean_cache = run(model, tokens, source, all_prompts, cache_sites=("head",), prefix=prefix)
        corrupt_logits, target_cache = run(model, tokens, target, all_prompts, cache_sites=("head", "out"), prefix=prefix)
        reader.set_clean(clean_logits)
        index = torch.arange(tokens.n)
        clean_stats, corrupt_stats = reader.stats(clean_logits, index), reader.stats(corrupt_logits, index)
        per_pass = rows_per_pass(model, tokens.seq_len - prefix.length, tokens.seq_len, batch_size)
        patched, per_pass = _path_stats(
            model, tokens, target, clean_cache, target_cache, prefix, reader, corrupt_stats, accesses, has_logits,
            per_pass, progress,
        )
    return {
        "patched": dict(patched.values), "clean": dict(clean_stats.values), "corrupted": dict(corrupt_stats.values),
        "clean_run": reader.clean_summary(clean_logits), "rows_per_pass": per_pass,
    }


def _path_stats(
    model: PatchableModel,
    tokens: TokenizedPairs,
    target: RunInput,
    clean_cache: dict[tuple[int, str], Any],
    target_cache: dict[tuple[int, str], Any],
    prefix: SharedPrefix,
    reader: AnswerReader,
    unpatched: RunStats,
    accesses: dict[int, list[tuple[str, list[tuple[Receiver, slice]]]]],
    has_logits: bool,
    per_pass: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[RunStats, int]:
    """Stats of every (sender, prompt) path-patched run, fields shaped [senders, prompts]; senders without a path
    keep the unpatched (target) stats, so their effects are exactly 0."""
    n_layers, n_heads = model.n_layers, model.n_heads
    out = {f: value.repeat(n_layers * n_heads, 1) for f, value in unpatched.values.items()}
    last_head_layer = max(accesses, default=-1)
    # Senders at layer l reach the head receivers above l, and the logits from every layer.
    sender_layers = range(n_layers) if has_logits else range(last_head_layer)
    by_layer = {layer: [(head, p) for head in range(n_heads) for p in range(tokens.n)] for layer in sender_layers}
    total = sum(len(rows) for rows in by_layer.values())
    done = 0
    for layer, rows in by_layer.items():
        reads = {} if has_logits else {l: a for l, a in accesses.items() if l > layer}

        def run_rows(chunk: Sequence[tuple[int, int]], layer: int = layer, reads: Any = reads) -> torch.Tensor:
            return _path_run(model, tokens, target, clean_cache, target_cache, prefix, layer, chunk, reads, has_logits)

        def take(chunk: Sequence[tuple[int, int]], logits: torch.Tensor, layer: int = layer) -> None:
            nonlocal done
            prompts = torch.tensor([p for _, p in chunk])
            cells = torch.tensor([layer * n_heads + head for head, _ in chunk])
            stats = reader.stats(logits, prompts)
            for f, value in out.items():
                value[cells, prompts] = stats[f]
            done += len(chunk)
            if progress is not None:
                progress(done, total)

        per_pass = in_passes(model, tokens, rows, per_pass, run_rows, take)
    return RunStats(out), per_pass


def _path_run(
    model: PatchableModel,
    tokens: TokenizedPairs,
    target: RunInput,
    clean_cache: dict[tuple[int, str], Any],
    target_cache: dict[tuple[int, str], Any],
    prefix: SharedPrefix,
    layer: int,
    chunk: Sequence[tuple[int, int]],
    reads: dict[int, list[tuple[str, list[tuple[Receiver, slice]]]]],
    has_logits: bool,
) -> torch.Tensor:
    """Both stages for rows ``chunk`` ((head, prompt) pairs) of senders at ``layer``: the last-token logits."""
    device, d_head = model.device, model.shape.d_head
    prompts = [p for _, p in chunk]
    index = torch.as_tensor(prompts).to(device)
    # The sender layer's head outputs: the target run's, with each row's sender head from the source run.
    sent = target_cache[(layer, "head")][index].clone()
    heads = torch.tensor([h for h, _ in chunk])
    for head in heads.unique().tolist():
        rows = (heads == head).nonzero().flatten().to(device)
        features = slice(head * d_head, (head + 1) * d_head)
        sent[rows, :, features] = clean_cache[(layer, "head")][index[rows], :, features]
    logits, values = _stage_one(model, tokens, target, target_cache, prefix, prompts, layer, sent, reads, has_logits)
    if has_logits:
        return logits  # stage 2's final residual stream is stage 1's, so are its logits
    return _stage_two(model, tokens, target, target_cache, prefix, prompts, reads, values)


def _resumed(target_cache: dict[tuple[int, str], Any], layer: int, index: torch.Tensor) -> Any:
    return take_rows(target_cache[(layer - 1, "out")], index) if layer > 0 else None


def _stage_one(
    model: PatchableModel,
    tokens: TokenizedPairs,
    target: RunInput,
    target_cache: dict[tuple[int, str], Any],
    prefix: SharedPrefix,
    prompts: Sequence[int],
    layer: int,
    sent: torch.Tensor,
    reads: dict[int, list[tuple[str, list[tuple[Receiver, slice]]]]],
    has_logits: bool,
) -> tuple[torch.Tensor | None, dict[Receiver, Any]]:
    """The target run from ``layer`` with that layer's head outputs set to ``sent`` and every later layer's
    frozen at the target run's; returns the last-token logits (when ``has_logits``) and the receivers' inputs."""
    adapter, device = model.adapter, model.device
    index = torch.as_tensor(list(prompts))
    inputs, delta, row_read = pass_inputs(model, tokens, target, index, prefix)
    index = index.to(device)
    resumed = _resumed(target_cache, layer, index)
    last = model.n_layers - 1 if has_logits else max(reads)
    saved: dict[Receiver, Any] = {}
    final = None
    with model.trace(inputs) as tracer:
        if delta is not None and layer == 0:
            embeddings = model.envoy(adapter.embed).output
            embeddings += delta.to(embeddings.dtype)
        layers = model.envoy(adapter.layers)
        for skipped in range(layer):
            layers[skipped].skip(resumed)
        for current in range(layer, last + 1):
            for path, receivers in reads.get(current, ()):
                projected = model.envoy(path, current).output
                for receiver, features in receivers:
                    saved[receiver] = projected[:, :, features].clone().save()
            if current == last and not has_logits:
                break
            heads = model.envoy(adapter.head_out, current).input
            heads[:] = sent if current == layer else target_cache[(current, "head")][index]
        if has_logits:
            final = final_logits(model, row_read).save()
        else:
            tracer.stop()  # nothing after the last receiver's layer is read
    return (None if final is None else final.float().cpu()), saved


def _stage_two(
    model: PatchableModel,
    tokens: TokenizedPairs,
    target: RunInput,
    target_cache: dict[tuple[int, str], Any],
    prefix: SharedPrefix,
    prompts: Sequence[int],
    writes: dict[int, list[tuple[str, list[tuple[Receiver, slice]]]]],
    values: dict[Receiver, Any],
) -> torch.Tensor:
    """The target run with the receivers' inputs set to ``values``, from the first receiver's layer."""
    adapter, device = model.adapter, model.device
    index = torch.as_tensor(list(prompts))
    inputs, delta, row_read = pass_inputs(model, tokens, target, index, prefix)
    index = index.to(device)
    first = min(writes)
    resumed = _resumed(target_cache, first, index)
    with model.trace(inputs):
        if delta is not None and first == 0:
            embeddings = model.envoy(adapter.embed).output
            embeddings += delta.to(embeddings.dtype)
        layers = model.envoy(adapter.layers)
        for skipped in range(first):
            layers[skipped].skip(resumed)
        for current, modules in writes.items():
            for path, receivers in modules:
                projected = model.envoy(path, current).output
                for receiver, features in receivers:
                    projected[:, :, features] = values[receiver]
        final = final_logits(model, row_read).save()
    return final.float().cpu()


__all__ = ["Receiver", "parse_receivers", "path_patch"]
