"""The forward-pass machinery every patching method shares: tokenizing, the shared prefix, batched runs
through nnsight with patches applied in forward order, batch sizing and a sweep's settings and result.

Each patched forward pass carries many rows; a row is one prompt with one component's activation
restored from the source run's cache. Activations are overwritten in forward order (nnsight requires
it), and only each prompt's last-token logits leave the trace.

Every method splits in two: checking its settings and assembling its result happen here, and everything that
runs the model is one function, ``work``, that ``on_model`` runs inside one nnsight session, on this machine or,
for a remote model, on the server as one request. ``work`` gets the model and plain data, computes the metrics
next to the weights and returns only them (tensors of one number per run), so caches, the shared prefix's keys
and values and every activation stay where the weights are.
"""

from __future__ import annotations

import contextlib
import copy
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import nnsight
import numpy as np
import torch

from . import __version__
from .choices import DIRECTIONS
from .components import SITE_ORDER, ComponentGrid, Site, make_grid
from .corruptions import (
    Corruption,
    RunInput,
    check_corruption,
    corrupted_input,
    corruption_name,
)
from .errors import DeviceMemoryError, PromptError, SettingsError, did_you_mean
from .metrics import (
    CleanRun,
    Metric,
    RunStats,
    UserMetric,
    check_metric,
    normalised_metrics,
    raw_effects,
)
from .models import PatchableModel
from .pairs import PromptPairs, TokenizedPairs
from .remote import log_progress, register_metric_module, register_package
from .results import PatchResult

Pairs = PromptPairs | TokenizedPairs
# ``progress=``: True for a tqdm bar, a callable ``(done, total)`` to report elsewhere, None or False for nothing.
Progress = bool | Callable[[int, int], None] | None
# Activation memory one patched forward pass may use when the caller does not size batches: on CPU at most
# CPU_BATCH_BYTES (bigger passes are no faster there) and a quarter of the available memory; on a GPU,
# GPU_BATCH_SHARE of its free memory, to fill the device.
CPU_BATCH_BYTES = 512 * 2**20
GPU_BATCH_SHARE = 0.5
# What a forward pass raises when the device runs out of memory: torch.OutOfMemoryError since torch 2.5, with
# torch.cuda.OutOfMemoryError an alias of it; before, only the latter.
OUT_OF_MEMORY: type[RuntimeError] = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class eval_mode:  # noqa: N801  (used as a context manager, like torch.no_grad)
    """Dropout would make every patching effect random: always run in eval mode, then restore.

    A class rather than a ``contextlib.contextmanager``: nnsight ships functions to a server by their source, which
    drops decorators, and this runs there."""

    def __init__(self, model: PatchableModel) -> None:
        self.module = model.hf

    def __enter__(self) -> None:
        self.was_training = self.module.training
        self.module.eval()

    def __exit__(self, *exc_info: object) -> None:
        self.module.train(self.was_training)


@contextlib.contextmanager
def progress_reporter(progress: Progress, what: str) -> Iterator[Callable[[int, int], None] | None]:
    """The ``(done, total)`` callback for ``progress`` while a method runs: a tqdm bar (closed afterwards) for
    True, the caller's callable as it is, None for None or False. ``total`` may grow as a search goes on."""
    if progress is None or progress is False:
        yield None
    elif progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=0, desc=what, unit=" runs")

        def report(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            yield report
        finally:
            bar.close()
    elif callable(progress):
        yield progress
    else:
        raise SettingsError(
            f"progress={progress!r}: use True (a progress bar), a function progress(done, total), or None."
        )


Outcome = TypeVar("Outcome")


def on_model(
    model: PatchableModel,
    work: Callable[..., Outcome],
    *args: Any,
    progress: Callable[[int, int], None] | None = None,
    user_code: Sequence[Callable[..., Any]] = (),
    **kwargs: Any,
) -> Outcome:
    """``work(model, *args, progress=..., **kwargs)`` run where the model's weights are, in one nnsight session:
    here, or for a remote model as one request to its server, of which only ``work``'s return value comes back
    (tensors, numbers and lists or dicts of them: no interp-tests objects, which the server cannot send).
    ``progress(done, total)`` is called as ``work`` reports (for a remote model, from the server's LOG updates);
    ``user_code`` (user metrics) travels with the request, as interp-tests' own code does."""
    backend, report = None, progress
    if model.remote is not None:
        register_package()
        for function in user_code:
            register_metric_module(getattr(function, "__module__", None))
        backend = model.remote(model.nn, progress)
        report = None if progress is None else log_progress
    with model.nn.session(backend=backend):
        outcome = work(model, *args, progress=report, **kwargs)
        nnsight.save(outcome)
    return outcome


def tokenize(model: PatchableModel, pairs: Pairs) -> TokenizedPairs:
    tokens = pairs if isinstance(pairs, TokenizedPairs) else pairs.tokenize(model.tokenizer)
    n_ctx = model.shape.n_ctx
    if n_ctx is not None and tokens.seq_len > n_ctx:
        longest = int(tokens.lengths.argmax())
        raise PromptError(
            f"Prompt {longest} is {tokens.seq_len} tokens long, more than the model's context of {n_ctx}. "
            "Shorten the prompts."
        )
    return tokens


def site_activation(model: PatchableModel, site: str, layer: int) -> Any:
    """The live activation of ``site`` at ``layer`` inside a trace; writes to it patch the run."""
    adapter = model.adapter
    if site == "resid":
        return model.envoy(adapter.layers)[layer].input
    if site == "out":
        return model.envoy(adapter.layers)[layer].output
    if site == "head":
        return model.envoy(adapter.head_out, layer).input
    if site == "attn":
        return model.envoy(adapter.attn, layer).output[0]
    return model.envoy(adapter.mlp, layer).output


def final_logits(model: PatchableModel, row_read: torch.Tensor) -> Any:
    """Inside a trace: each row's last-token logits ``[rows, vocab]``, as the model returns them.

    Read from the model's output rather than the unembedding module, so that whatever the model does
    after it (Gemma 2's ``final_logit_softcapping``) is in every metric and every gradient.
    """
    logits = model.nn.output.logits
    return logits[torch.arange(len(row_read), device=row_read.device), row_read]


def take_rows(value: Any, index: torch.Tensor) -> Any:
    """Rows ``index`` of a tensor, or of every tensor in a tuple (some layers return tuples)."""
    if isinstance(value, tuple):
        return tuple(take_rows(v, index) for v in value)
    return value[index] if isinstance(value, torch.Tensor) else value


def _detached_copy(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_detached_copy(v) for v in value)
    return value.clone() if isinstance(value, torch.Tensor) else value


@dataclass(frozen=True)
class SharedPrefix:
    """Positions ``[0, length)`` are the same in every run of a sweep, so their keys and values are
    computed once: causal attention means nothing later can change them, and patching them is a no-op."""

    length: int
    past: Any  # the model's key/value cache over the prefix, one row per prompt; None when length == 0

    def past_for(self, index: torch.Tensor) -> Any:
        if self.past is None:
            return None
        past = copy.deepcopy(self.past)
        past.batch_select_indices(index.to(self.past.layers[0].keys.device))
        return past


NO_PREFIX = SharedPrefix(0, None)


class PatchOp:
    """Overwrite ``rows`` of an activation with the source cache's ``sources`` rows, at a position and slice."""

    def __init__(self, rows: list[int], sources: list[int], position: torch.Tensor | None, features: slice) -> None:
        self.rows = torch.tensor(rows)
        self.sources = torch.tensor(sources)
        self.position = position
        self.features = features

    def apply(self, activation: torch.Tensor, source: torch.Tensor) -> None:
        if self.position is None:
            activation[self.rows, :, self.features] = source[self.sources, :, self.features]
        else:
            activation[self.rows, self.position, self.features] = source[self.sources, self.position, self.features]


def plan_patches(
    model: PatchableModel,
    tokens: TokenizedPairs,
    row_sites: Sequence[Sequence[Site]],
    row_prompts: Sequence[int],
    prefix: SharedPrefix,
) -> dict[tuple[int, str], list[PatchOp]]:
    """Group the rows' patches by (layer, site) and by identical slice, so each group is one tensor write.

    Positions count from the end of the shared prefix; a patch inside the prefix changes nothing and
    is dropped.
    """
    groups: dict[tuple[int, str, int | None, Any], tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for row, (sites, prompt) in enumerate(zip(row_sites, row_prompts)):
        for s in sites:
            rows, sources = groups[(s.layer, s.site, s.head, s.position)]
            rows.append(row)
            sources.append(prompt)
    d_head = model.shape.d_head
    plan: dict[tuple[int, str], list[PatchOp]] = defaultdict(list)
    for (layer, site, head, position), (rows, sources) in groups.items():
        features = slice(None) if head is None else slice(head * d_head, (head + 1) * d_head)
        if position is None:
            plan[(layer, site)].append(PatchOp(rows, sources, None, features))
            continue
        absolute = torch.full((len(rows),), position) if isinstance(position, int) else tokens.position(position)[sources]
        keep = absolute >= prefix.length
        if keep.any():
            kept_rows = [r for r, k in zip(rows, keep.tolist()) if k]
            kept_sources = [s for s, k in zip(sources, keep.tolist()) if k]
            plan[(layer, site)].append(PatchOp(kept_rows, kept_sources, absolute[keep] - prefix.length, features))
    return plan


def pass_inputs(
    model: PatchableModel, tokens: TokenizedPairs, run_input: RunInput, index: torch.Tensor, prefix: SharedPrefix
) -> tuple[dict[str, Any], torch.Tensor | None, torch.Tensor]:
    """What a forward pass over prompts ``index`` from the end of ``prefix`` needs: the model's keyword
    arguments (the prefix's cached keys and values, logits kept only at the rows' last tokens), the embedding
    noise to add (or None), and each row's index among the kept logits."""
    device = model.device
    start = prefix.length
    last = tokens.lengths[index] - 1 - start
    read_at, row_read = torch.unique(last, return_inverse=True)
    inputs: dict[str, Any] = {
        "input_ids": run_input.ids[index, start:].to(device),
        "attention_mask": tokens.attention_mask[index].to(device),
        "logits_to_keep": read_at.to(device),
    }
    if prefix.past is not None:
        inputs[model.cache_argument] = prefix.past_for(index)
    delta = None if run_input.embed_delta is None else run_input.embed_delta[index, start:].to(device)
    return inputs, delta, row_read.to(device)


def run(
    model: PatchableModel,
    tokens: TokenizedPairs,
    run_input: RunInput,
    prompts: Sequence[int],
    *,
    cache_sites: Sequence[str] = (),
    row_sites: Sequence[Sequence[Site]] | None = None,
    cache: dict[tuple[int, str], Any] | None = None,
    prefix: SharedPrefix = NO_PREFIX,
    resume_at: int = 0,
    writes: Mapping[tuple[int, str], Callable[[torch.Tensor], None]] | None = None,
) -> tuple[torch.Tensor, dict[tuple[int, str], Any]]:
    """One forward pass over ``prompts`` (rows may repeat a prompt) from the end of ``prefix``.

    Returns the last-token logits ``[rows, vocab]`` and, for ``cache_sites``, every layer's activation
    at the positions after the prefix. ``row_sites[r]`` lists the sites row ``r`` takes from ``cache``
    (whose rows are prompts). ``writes[(layer, site)]`` is called with that live activation (after the
    row sites' patches) to overwrite parts of it in place: how a circuit patches many sites per row. With
    ``resume_at=L`` layers below L are not computed: their output is taken from ``cache[(L - 1, "out")]``,
    the unpatched target run's.
    """
    writes = writes or {}
    index = torch.as_tensor(list(prompts))
    device = model.device
    inputs, delta, row_read = pass_inputs(model, tokens, run_input, index, prefix)
    plan = plan_patches(model, tokens, row_sites, prompts, prefix) if row_sites is not None else {}
    resumed = take_rows(cache[(resume_at - 1, "out")], index.to(device)) if resume_at > 0 else None
    saved: dict[tuple[int, str], Any] = {}
    with model.trace(inputs):
        if delta is not None and resume_at == 0:
            embeddings = model.envoy(model.adapter.embed).output
            embeddings += delta.to(embeddings.dtype)
        layers = model.envoy(model.adapter.layers)
        for layer in range(resume_at):
            layers[layer].skip(resumed)
        for layer in range(resume_at, model.n_layers):
            for site in SITE_ORDER:
                ops = plan.get((layer, site), ())
                write = writes.get((layer, site))
                if site not in cache_sites and not ops and write is None:
                    continue
                activation = site_activation(model, site, layer)
                if site in cache_sites:
                    saved[(layer, site)] = _detached_copy(activation).save()
                for op in ops:
                    op.apply(activation, cache[(layer, site)])
                if write is not None:
                    write(activation)
        final = final_logits(model, row_read).save()
    return final.float().cpu(), saved


def shared_prefix(model: PatchableModel, tokens: TokenizedPairs, *runs: RunInput) -> SharedPrefix:
    """The longest prefix on which all ``runs`` agree for every prompt, with its keys and values.

    It always ends before each prompt's last token, which every run must compute.
    """
    differs = torch.zeros_like(tokens.clean_ids, dtype=torch.bool)
    for run_input in runs:
        differs |= run_input.ids != runs[0].ids
        if run_input.embed_delta is not None:
            differs |= run_input.embed_delta.abs().amax(dim=-1) > 0
    differs &= tokens.attention_mask.bool()
    first = torch.where(differs.any(dim=1), differs.float().argmax(dim=1), tokens.lengths)
    length = int(min(first.min(), tokens.lengths.min() - 1))
    if length == 0:
        return NO_PREFIX
    ids = runs[0].ids[:, :length].to(model.device)
    with model.trace({"input_ids": ids, "use_cache": True, "logits_to_keep": 1}):  # its logits are not read
        past = nnsight.save(model.nn.output[model.cache_argument])
    return SharedPrefix(length, past)


def rows_per_pass(model: PatchableModel, positions: int, seq_len: int, batch_size: int | None) -> int:
    if batch_size is not None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise SettingsError(f"batch_size={batch_size!r} must be a positive integer (rows per forward pass).")
        return batch_size
    s = model.shape
    vocab = s.vocab_size
    bytes_per_row = 4 * (positions * (16 * s.d_model + 3 * s.n_heads * seq_len) + 4 * vocab)
    return max(1, int(batch_bytes(model.device) // bytes_per_row))


def batch_bytes(device: torch.device) -> int:
    """The activation memory one forward pass may use on ``device`` (see CPU_BATCH_BYTES)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(GPU_BATCH_SHARE * free)
    available = _available_memory()
    return CPU_BATCH_BYTES if available is None else min(CPU_BATCH_BYTES, available // 4)


def _available_memory() -> int | None:
    """The kernel's estimate of memory available without swapping (Linux), in bytes; None elsewhere."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise SettingsError(f"{name}={value!r}: choose from {list(choices)}.{did_you_mean(value, choices)}")


def prepare_sweep(
    model: PatchableModel,
    pairs: Pairs,
    component: str,
    corruption: Corruption,
    metric: Metric,
    *,
    positions: str | int,
    window: int,
    direction: str,
    noise_scale: float,
) -> tuple[TokenizedPairs, ComponentGrid]:
    """Check a sweep's settings and build its tokens and grid (for any method; ``sweep_inputs`` builds its runs)."""
    check_metric(metric)
    check_choice("direction", direction, DIRECTIONS)
    tokens = tokenize(model, pairs)
    grid = make_grid(
        component, positions, n_layers=model.n_layers, n_heads=model.n_heads, seq_len=tokens.seq_len, window=window
    )
    if isinstance(positions, str) and positions not in ("all", "each"):
        tokens.position(positions)
    check_positions_line_up(tokens, positions)
    check_corruption(model, tokens, corruption, noise_scale)
    return tokens, grid


def sweep_inputs(
    model: PatchableModel, tokens: TokenizedPairs, corruption: Corruption, *, direction: str, seed: int,
    noise_scale: float,
) -> tuple[RunInput, RunInput]:
    """Inside ``work``: a sweep's source and target runs (Gaussian noise is scaled by the embeddings, on the model)."""
    clean_input = RunInput(tokens.clean_ids, None)
    corrupt_input = corrupted_input(model, tokens, corruption, seed=seed, noise_scale=noise_scale)
    return (clean_input, corrupt_input) if direction == "denoise" else (corrupt_input, clean_input)


def check_positions_line_up(tokens: TokenizedPairs, positions: str | int) -> None:
    """Refuse a token index that is padding in some prompts: its mean effect would average real tokens with
    the padding's zero effect (``positions="each"`` on prompts of two lengths, or an index past the shortest
    prompt's end). Named positions (``"last"``, a span) align prompts by role and are always accepted."""
    if positions != "each" and not isinstance(positions, int):
        return
    shortest, longest = int(tokens.lengths.min()), int(tokens.lengths.max())
    if positions == "each" and shortest == longest:
        return
    if isinstance(positions, int) and positions < shortest:
        return
    counts = Counter(tokens.lengths.tolist())
    lengths = ", ".join(f"{length} ({counts[length]} prompt{'s' * (counts[length] > 1)})" for length in sorted(counts))
    where = f"positions {shortest}..{longest - 1} are" if positions == "each" else f"position {positions} is"
    raise PromptError(
        f"positions={positions!r} patches token indices, but these prompts have different lengths: {lengths} "
        f"tokens. {where[0].upper()}{where[1:]} a real token in some prompts and padding in others, so a mean "
        "effect there would average real effects with the padding's 0 (and the same index is a different word "
        "in prompts of different lengths). Use a named position that aligns prompts by role (positions='last' "
        f"or a span of the pairs{': ' + ', '.join(map(repr, tokens.named_positions)) if tokens.named_positions else ''}), "
        "or pairs whose prompts all have one length (pairs[indices] takes a subset)."
    )


def sweep_result(
    model: PatchableModel,
    tokens: TokenizedPairs,
    grid: ComponentGrid,
    patched: RunStats,
    clean_stats: RunStats,
    corrupt_stats: RunStats,
    *,
    metric: str,
    method: str,
    rows_per_pass: int,
    component: str,
    positions: str | int,
    corruption: Corruption,
    direction: str,
    window: int,
    seed: int,
    noise_scale: float,
    clean_run: CleanRun,
    metrics: Sequence[str] | None = None,
    custom: Sequence[UserMetric] = (),
) -> PatchResult:
    """A PatchResult holding ``metrics``' effects (default: every metric the stats hold) from patched stats
    ``[components, prompts]``, the gaps of the normalised ones, and the settings every method records
    (``clean_run`` lets a cached result repeat the clean run's warnings)."""
    effects = {
        name: value.T.reshape(tokens.n, *grid.shape).numpy()
        for name, value in raw_effects(patched, corrupt_stats).items()
        if metrics is None or name in metrics
    }
    gaps = {
        name: (clean_stats[name] - corrupt_stats[name]).numpy()
        for name in normalised_metrics(custom) & set(effects) - {"logit_diff"}
    }
    settings = {
        "model": model.name,
        "model_fingerprint": model.fingerprint(),
        "model_identity": model_identity(model),
        "dataset": tokens.fingerprint(),
        "n_prompts": tokens.n,
        "component": component,
        "positions": positions,
        "corruption": corruption_name(corruption),
        "direction": direction,
        "window": window,
        "seed": seed,
        "method": method,
        "rows_per_pass": rows_per_pass,
        "clean": _summary(clean_stats),
        "corrupted": _summary(corrupt_stats),
        "clean_run": clean_run.as_settings(),
    }
    if corruption == "gn":
        settings["noise_scale"] = noise_scale
    settings["version"] = __version__
    return PatchResult(
        metric=metric,
        effects=effects,
        ld_clean=clean_stats.logit_diff.numpy(),
        ld_corrupted=corrupt_stats.logit_diff.numpy(),
        grid=grid,
        settings=settings,
        gaps=gaps,
    )


def model_identity(model: PatchableModel) -> str:
    """How ``model_fingerprint`` identifies the model, for reports."""
    if model.remote is not None:
        return "remote model: its repo id and revision (the weights are on the server and are not hashed)"
    return "a hash of the architecture and every weight"


def _summary(stats: RunStats) -> dict[str, float]:
    return {name: float(value.mean()) for name, value in stats.values.items()}


Row = TypeVar("Row")


def in_passes(
    model: PatchableModel,
    tokens: TokenizedPairs,
    rows: Sequence[Row],
    per_pass: int,
    run_rows: Callable[[Sequence[Row]], torch.Tensor],
    take: Callable[[Sequence[Row], torch.Tensor], None],
) -> int:
    """Run ``rows`` in forward passes of ``per_pass`` rows (``run_rows(chunk) -> last-token logits``), handing
    each pass's logits to ``take(chunk, logits)``. A pass that runs out of device memory is retried with half its
    rows, down to one; returns the rows per pass that fit."""
    begin = 0
    while begin < len(rows):
        chunk = rows[begin : begin + per_pass]
        try:
            logits = run_rows(chunk)
        except OUT_OF_MEMORY:
            logits = None  # retried below, outside the handler, so the failed pass's tensors are freed
        if logits is None:
            per_pass = halve_after_out_of_memory(model, tokens, len(chunk))
            continue
        take(chunk, logits)
        begin += len(chunk)
    return per_pass


def halve_after_out_of_memory(model: PatchableModel, tokens: TokenizedPairs, rows: int) -> int:
    """Rows per pass after a pass of ``rows`` rows ran out of device memory; an error when it was one row."""
    if model.device.type == "cuda":
        torch.cuda.empty_cache()
    if rows <= 1:
        raise DeviceMemoryError(
            f"The {model.device} device ran out of memory on a single patched run (one row per forward pass): "
            f"the model {model.name!r} and prompts of {tokens.seq_len} tokens do not fit. Use a device with "
            "more memory, shorter prompts, or a half-precision copy of the model (load it with "
            "dtype=torch.bfloat16 and pass it to load_model), or run on device='cpu'."
        )
    return rows // 2


def residual_norms(
    model: PatchableModel, tokens: TokenizedPairs, corruption: Corruption, *, seed: int, noise_scale: float,
    batch_size: int, progress: Callable[[int, int], None] | None,
) -> dict[str, np.ndarray]:
    """Where the model runs (``engine.on_model``): per layer, the mean and sd of the clean run's residual norms over
    real tokens, and the means of the corrupted and clean runs' norms at the corrupted tokens."""
    marked = torch.zeros_like(tokens.attention_mask, dtype=torch.bool)
    for i, rows in enumerate(tokens.require_corrupt_positions()):
        marked[i, rows] = True
    real = tokens.attention_mask.bool()
    clean_input = RunInput(tokens.clean_ids, None)
    corrupt_input = corrupted_input(model, tokens, corruption, seed=seed, noise_scale=noise_scale)
    layers = range(model.n_layers)
    clean_all: list[list[torch.Tensor]] = [[] for _ in layers]
    clean_marked: list[list[torch.Tensor]] = [[] for _ in layers]
    corrupted_marked: list[list[torch.Tensor]] = [[] for _ in layers]
    with torch.no_grad(), eval_mode(model):
        for start in range(0, tokens.n, batch_size):
            prompts = list(range(start, min(tokens.n, start + batch_size)))
            _, clean = run(model, tokens, clean_input, prompts, cache_sites=("resid",))
            _, corrupted = run(model, tokens, corrupt_input, prompts, cache_sites=("resid",))
            for layer in layers:
                clean_norm = clean[(layer, "resid")].float().norm(dim=-1).cpu()
                corrupted_norm = corrupted[(layer, "resid")].float().norm(dim=-1).cpu()
                clean_all[layer].append(clean_norm[real[prompts]])
                clean_marked[layer].append(clean_norm[marked[prompts]])
                corrupted_marked[layer].append(corrupted_norm[marked[prompts]])

    def per_layer(parts: list[list[torch.Tensor]], reduce: Callable[[np.ndarray], float]) -> np.ndarray:
        return np.array([reduce(torch.cat(chunks).double().numpy()) for chunks in parts])

    return {"clean_mean": per_layer(clean_all, np.mean), "clean_sd": per_layer(clean_all, np.std),
            "corrupted_mean": per_layer(corrupted_marked, np.mean), "clean_marked_mean": per_layer(clean_marked, np.mean)}
