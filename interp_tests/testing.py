"""Test support: a tiny random GPT-2 built offline, and TransformerLens reference patching effects.

``tiny_gpt2`` builds a randomly initialised ``GPT2LMHeadModel`` and a word-level tokenizer (every word
one token), so tests need neither the hub nor downloaded weights. ``transformer_lens_effects`` computes
the same sweeps as ``interp_tests.patch`` with TransformerLens 4.x (``TransformerBridge`` plus
``transformer_lens.patching``), an implementation independent of this package's engine, so the two can
be compared number for number. TransformerLens is imported inside the functions that need it only.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .pairs import PromptPairs, TokenizedPairs
from .tasks.words import NAMES, OBJECTS, PLACES

SPECIAL = ("<|endoftext|>", "<unk>")
FUNCTION_WORDS = ("When", "and", "went", "to", "the", ",", ".", "gave", "a")
# Every prompt of ``ioi_pairs`` has the same number of tokens under the ``tiny_gpt2`` tokenizer.
IOI_TEMPLATE = "When {IO} and {S} went to the {PLACE}, {S2} gave a {OBJECT} to"


def word_tokenizer(words: list[str]) -> Any:
    """A ``PreTrainedTokenizerFast`` with one token per word (split on whitespace and punctuation).

    Id 0 is ``<|endoftext|>`` (BOS, EOS and pad), id 1 ``<unk>``. Nothing is prepended to the prompts.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(dict.fromkeys([*SPECIAL, *words]))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece()  # joins the words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
    )


def tiny_gpt2(
    n_layers: int = 3,
    n_heads: int = 4,
    d_model: int = 64,
    *,
    vocab_size: int | None = None,
    n_ctx: int = 64,
    initializer_range: float = 0.2,
    seed: int = 0,
) -> tuple[Any, Any]:
    """A randomly initialised eval-mode ``GPT2LMHeadModel`` and its word-level tokenizer, built offline.

    The vocabulary holds the IOI words of ``ioi_pairs`` and, when ``vocab_size`` is larger, filler words
    ``w0, w1, ...`` up to that size. The default ``initializer_range`` (0.2, GPT-2 uses 0.02) makes a random
    model's logit differences large enough to normalise by.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    words = [*FUNCTION_WORDS, *NAMES, *PLACES, *OBJECTS]
    n_base = len(set([*SPECIAL, *words]))
    if vocab_size is not None:
        if vocab_size < n_base:
            raise ValueError(f"vocab_size={vocab_size} is below the {n_base} words the IOI prompts need.")
        words += [f"w{i}" for i in range(vocab_size - n_base)]
    tokenizer = word_tokenizer(words)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_ctx,
        n_embd=d_model,
        n_layer=n_layers,
        n_head=n_heads,
        initializer_range=initializer_range,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    return model.eval(), tokenizer


def ioi_pairs(n: int, seed: int = 0) -> PromptPairs:
    """``n`` IOI pairs of one template (all the same length) with S2 corruption: S2 becomes IO.

    ``answer`` is IO and ``wrong`` is S (the corrupted prompt's answer).
    """
    rng = random.Random(seed)
    clean, corrupted, answer, wrong = [], [], [], []
    for _ in range(n):
        io, s = rng.sample(NAMES, 2)
        fill = {"IO": io, "S": s, "PLACE": rng.choice(PLACES), "OBJECT": rng.choice(OBJECTS)}
        clean.append(IOI_TEMPLATE.format(S2=s, **fill))
        corrupted.append(IOI_TEMPLATE.format(S2=io, **fill))
        answer.append(f" {io}")
        wrong.append(f" {s}")
    return PromptPairs(clean, corrupted, answer, wrong)


def orient_answers(model: Any, tokenizer: Any, pairs: PromptPairs) -> PromptPairs:
    """``pairs`` with answer and wrong swapped where the clean run prefers the wrong answer more than the corrupted run.

    A random model has no IOI circuit, so its clean-minus-corrupted logit difference has a random sign per
    prompt and the batch means nearly cancel. Orienting every prompt makes LD_clean - LD_corrupted positive
    for each prompt, and the normalisation of batch means well-conditioned (a denominator of mean |gap|).
    """
    tokens = pairs.tokenize(tokenizer)
    last = tokens.lengths - 1
    rows = torch.arange(tokens.n)
    with torch.no_grad():
        clean = model(tokens.clean_ids, attention_mask=tokens.attention_mask).logits[rows, last].float()
        corrupted = model(tokens.require_corrupted(), attention_mask=tokens.attention_mask).logits[rows, last].float()
    answer, wrong = list(pairs.answer), list(pairs.wrong)
    for i, (a, w) in enumerate(zip(tokens.answer_ids, tokens.wrong_ids)):
        gap = (clean[i, a].sum() - clean[i, w].sum()) - (corrupted[i, a].sum() - corrupted[i, w].sum())
        if gap < 0:
            answer[i], wrong[i] = wrong[i], answer[i]
    return PromptPairs(pairs.clean, pairs.corrupted, answer, wrong, pairs.corrupt_positions, spans=pairs.spans)


def save_model(model: Any, tokenizer: Any, directory: str | Path) -> Path:
    """``save_pretrained`` the model and tokenizer into ``directory`` (a Hugging Face model folder)."""
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# --------------------------------------------------------------------------- TransformerLens reference


def boot_transformer_lens(model_dir: str | Path, device: str = "cpu") -> Any:
    """A TransformerLens 4.x ``TransformerBridge`` on a ``save_pretrained`` folder, in eval mode.

    ``boot_transformers`` keeps the raw Hugging Face weights (no LayerNorm folding, no weight centring;
    those only come with ``enable_compatibility_mode()``, which is not called), so its logits are the HF
    model's. The tokenizer is loaded from the folder because the bridge re-loads it by ``name_or_path``
    (an in-memory tokenizer without one makes ``boot_transformers`` fail with ``KeyError: 'name_or_path'``).
    """
    from transformers import AutoTokenizer
    from transformer_lens.model_bridge import TransformerBridge

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    bridge = TransformerBridge.boot_transformers(str(model_dir), tokenizer=tokenizer, device=device)
    return bridge.eval()


def _answer_masks(tokens: TokenizedPairs, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    good = torch.zeros(tokens.n, vocab_size)
    bad = torch.zeros(tokens.n, vocab_size)
    for i, (answer, wrong) in enumerate(zip(tokens.answer_ids, tokens.wrong_ids)):
        good[i, answer] = 1.0
        bad[i, wrong] = 1.0
    return good, bad


def transformer_lens_metric(
    clean_logits: torch.Tensor, corrupted_logits: torch.Tensor, tokens: TokenizedPairs, metric: str = "logit_diff"
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A TransformerLens patching metric (logits ``[batch, pos, vocab]`` -> scalar) equal to ``PatchResult.mean``.

    Read at the last position (prompts must not be padded). ``"logit_diff"``: (mean LD - mean LD_corrupted)
    / (mean LD_clean - mean LD_corrupted), the normalisation of batch means; ``"prob"``: mean P(answer) -
    mean P_corrupted(answer); ``"kl"``: mean KL(clean || corrupted) - mean KL(clean || run).
    ``clean_logits``/``corrupted_logits`` are the reference runs, ``[batch, pos, vocab]``.
    """
    good, bad = _answer_masks(tokens, clean_logits.shape[-1])
    clean_logprobs = torch.log_softmax(clean_logits[:, -1].float().cpu(), dim=-1)

    def per_prompt(logits: torch.Tensor) -> torch.Tensor:
        last = logits[:, -1].float().cpu()
        if metric == "logit_diff":
            return (last * good).sum(-1) - (last * bad).sum(-1)
        logprobs = torch.log_softmax(last, dim=-1)
        if metric == "prob":
            return (logprobs.exp() * good).sum(-1)
        if metric == "kl":
            return -(clean_logprobs.exp() * (clean_logprobs - logprobs)).sum(-1)  # minus KL: higher is better
        raise ValueError(f"Unknown metric {metric!r}; use 'logit_diff', 'prob' or 'kl'.")

    corrupted_mean = per_prompt(corrupted_logits).mean()
    scale = per_prompt(clean_logits).mean() - corrupted_mean if metric == "logit_diff" else torch.tensor(1.0)

    def patching_metric(logits: torch.Tensor) -> torch.Tensor:
        return (per_prompt(logits).mean() - corrupted_mean) / scale

    return patching_metric


def _all_positions_setter(corrupted: torch.Tensor, index: list[int], clean: torch.Tensor) -> torch.Tensor:
    """Patch setter for index = [layer]: every position of a layer's activation."""
    corrupted[...] = clean
    return corrupted


@contextlib.contextmanager
def _quiet_transformer_lens() -> Iterator[None]:
    """Silence ``transformer_lens.patching``'s tqdm progress bar (it offers no switch of its own)."""
    import transformer_lens.patching as tl_patching

    original = tl_patching.tqdm
    tl_patching.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        tl_patching.tqdm = original


# (component, positions) -> (TransformerLens hook name, sweep function name or None for all-position layers)
TL_SWEEPS = {
    ("attn_head", "all"): ("z", "get_act_patch_attn_head_out_all_pos"),
    ("attn_head", "each"): ("z", "get_act_patch_attn_head_out_by_pos"),
    ("attn", "each"): ("attn_out", "get_act_patch_attn_out"),
    ("mlp", "each"): ("mlp_out", "get_act_patch_mlp_out"),
    ("resid", "each"): ("resid_pre", "get_act_patch_resid_pre"),
    ("attn", "all"): ("attn_out", None),
    ("mlp", "all"): ("mlp_out", None),
    ("resid", "all"): ("resid_pre", None),
}


def transformer_lens_effects(
    bridge: Any,
    tokens: TokenizedPairs,
    component: str = "attn_head",
    positions: str = "all",
    metric: str = "logit_diff",
    direction: str = "denoise",
) -> np.ndarray:
    """TransformerLens' version of ``interp_tests.patch(...).mean`` under symmetric token replacement.

    ``tokens`` is ``pairs.tokenize(tokenizer)`` with the tokenizer of the model that interp-tests patches,
    with all prompts the same length. Returns an array shaped like ``PatchResult.mean``: ``[n_layers,
    n_heads]``, ``[n_layers, seq, n_heads]``, ``[n_layers]`` or ``[n_layers, seq]``. Supports the
    ``(component, positions)`` pairs of ``TL_SWEEPS``.
    """
    import transformer_lens.patching as tl_patching

    if (component, positions) not in TL_SWEEPS:
        raise ValueError(f"No TransformerLens sweep for component={component!r}, positions={positions!r}.")
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction={direction!r}: use 'denoise' or 'noise'.")
    if not bool(tokens.attention_mask.bool().all()):
        raise ValueError("TransformerLens reads the last position: every prompt must have the same length.")
    clean_ids, corrupted_ids = tokens.clean_ids, tokens.require_corrupted()
    device = bridge.cfg.device
    with torch.no_grad():
        clean_logits, clean_cache = bridge.run_with_cache(clean_ids.to(device))
        corrupted_logits, corrupted_cache = bridge.run_with_cache(corrupted_ids.to(device))
    patching_metric = transformer_lens_metric(clean_logits, corrupted_logits, tokens, metric)
    # Denoising patches the clean cache into the corrupted run; noising the corrupted cache into the clean run.
    target, source = (corrupted_ids, clean_cache) if direction == "denoise" else (clean_ids, corrupted_cache)
    hook, sweep = TL_SWEEPS[(component, positions)]
    with torch.no_grad(), _quiet_transformer_lens():
        if sweep is None:
            values = tl_patching.generic_activation_patch(
                bridge, target.to(device), source, patching_metric,
                patch_setter=_all_positions_setter, activation_name=hook, index_axis_names=("layer",),
            )
        else:
            values = getattr(tl_patching, sweep)(bridge, target.to(device), source, patching_metric)
    return values.detach().double().cpu().numpy()


# --------------------------------------------------------------------------- naive path patching reference

# Where each architecture's heads read their query, key and value (relative to a layer), and how one head's
# slice is laid out there, written out here independently of interp_tests.adapters. OLMo 2 normalises all heads'
# queries (keys) together, so a head's own query is a slice of q_norm's output, not q_proj's.
_NAIVE_QKV = {
    "gpt2": (("attn.c_attn",) * 3, "stacked"),
    "gpt_neox": (("attention.query_key_value",) * 3, "per_head"),
    "gptj": (("attn.q_proj", "attn.k_proj", "attn.v_proj"), "separate"),
    "phi3": (("self_attn.qkv_proj",) * 3, "stacked"),
    "olmo2": (("self_attn.q_norm", "self_attn.k_norm", "self_attn.v_proj"), "separate"),
    **{t: (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "separate")
       for t in ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "gemma3")},
}


def _naive_receivers(model: Any, labels: list[str]) -> list[tuple[str, int, slice] | None]:
    """Receiver labels -> (module path, layer, feature slice), None for "logits"."""
    config = model.hf.config
    n_heads, d_head = model.shape.n_heads, model.shape.d_head
    paths, layout = _NAIVE_QKV[config.model_type]
    out: list[tuple[str, int, slice] | None] = []
    for label in labels:
        if label == "logits":
            out.append(None)
            continue
        parts = label.split(".")
        layer, head = int(parts[0]), int(parts[1])
        for which in parts[2:] or ["q", "k", "v"]:
            i = "qkv".index(which)
            start = {"stacked": i * n_heads * d_head + head * d_head, "per_head": (3 * head + i) * d_head,
                     "separate": head * d_head}[layout]
            out.append((f"{model.adapter.layers}.{layer}.{paths[i]}", layer, slice(start, start + d_head)))
    return out


def _single_token(tokenizer: Any, word: str) -> int:
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{word!r} is {len(ids)} tokens; naive_path_patch reads single-token answers")
    return ids[0]


def naive_path_patch(
    model: Any,
    pairs: PromptPairs,
    receivers: list[str],
    corruption: str = "str",
    *,
    seed: int = 0,
    noise_scale: float = 3.0,
    senders: list[tuple[int, int]] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Path patching done the slow, obvious way: plain forward hooks on the Hugging Face modules, one prompt
    (unpadded) and one sender at a time, both stages as full forward passes, nothing skipped or batched.

    Stage 1 runs the corrupted prompt with every head's output (the attention output projection's input) at every
    layer set to the corrupted run's, except sender ``(layer, head)``'s slice at its layer, set to the clean
    run's, and records each receiver's input (its slice of the q/k/v projection output; ``"logits"``: the last
    layer's output, the final residual stream). Stage 2 runs the corrupted prompt with the receivers' inputs
    replaced by those. Returns per-prompt raw effects ``{metric: [n, n_layers, n_heads]}`` (NaN for senders not
    in ``senders``, default all) and per-prompt clean and corrupted logit differences. ``corruption`` is "str" or
    "gn" (only the noise tensor comes from the library).
    """
    from .corruptions import corrupted_input

    hf, tok = model.hf, model.tokenizer
    n_layers, n_heads, d_head = model.n_layers, model.n_heads, model.shape.d_head
    layers_path, head_out = model.adapter.layers, model.adapter.head_out
    places = _naive_receivers(model, list(receivers))
    senders = [(l, h) for l in range(n_layers) for h in range(n_heads)] if senders is None else list(senders)
    noise = None
    if corruption == "gn":
        noise = corrupted_input(model, pairs.tokenize(tok), "gn", seed=seed, noise_scale=noise_scale).embed_delta
    elif corruption != "str":
        raise ValueError("naive_path_patch supports corruption='str' or 'gn'")
    final_layer = hf.get_submodule(f"{layers_path}.{n_layers - 1}")
    out = {name: np.full((len(pairs), n_layers, n_heads), np.nan) for name in ("prob", "logit_diff", "kl")}
    ld_clean, ld_corrupted = [], []

    def forward(ids: torch.Tensor, delta: torch.Tensor | None, hooks: list[Any]) -> torch.Tensor:
        if delta is not None:
            embed = hf.get_submodule(model.adapter.embed)
            hooks = [*hooks, embed.register_forward_hook(lambda m, args, o: o + delta.to(o.dtype))]
        try:
            with torch.no_grad():
                return hf(ids).logits[0, -1].float()
        finally:
            for handle in hooks:
                handle.remove()

    def head_inputs(ids: torch.Tensor, delta: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        stored: list[torch.Tensor] = [torch.empty(0)] * n_layers
        hooks = [
            hf.get_submodule(f"{layers_path}.{layer}.{head_out}").register_forward_pre_hook(
                lambda m, args, layer=layer: stored.__setitem__(layer, args[0].clone()))
            for layer in range(n_layers)
        ]
        return forward(ids, delta, hooks), stored

    was_training = hf.training
    hf.eval()
    try:
        for i in range(len(pairs)):
            clean_ids = torch.tensor([tok(pairs.clean[i])["input_ids"]])
            if noise is None:
                corrupt_ids, delta = torch.tensor([tok(pairs.corrupted[i])["input_ids"]]), None
            else:
                corrupt_ids, delta = clean_ids, noise[i : i + 1, : clean_ids.shape[1]]
            answer, wrong = (_single_token(tok, word) for word in (pairs.answer[i], pairs.wrong[i]))
            clean_logits, clean_heads = head_inputs(clean_ids, None)
            corrupt_logits, corrupt_heads = head_inputs(corrupt_ids, delta)
            clean_lp = torch.log_softmax(clean_logits, -1)

            def stats(logits: torch.Tensor) -> tuple[float, float, float]:
                lp = torch.log_softmax(logits, -1)
                return (lp[answer].exp().item(), (logits[answer] - logits[wrong]).item(),
                        (clean_lp.exp() * (clean_lp - lp)).sum().item())

            p_c, ld_c, kl_c = stats(corrupt_logits)
            ld_clean.append(stats(clean_logits)[1])
            ld_corrupted.append(ld_c)
            for sender_layer, sender_head in senders:
                # Stage 1: every head frozen at the corrupted run's output, the sender's set to the clean run's.
                def freeze(m, args, layer):
                    value = corrupt_heads[layer].clone()
                    if layer == sender_layer:
                        s = slice(sender_head * d_head, (sender_head + 1) * d_head)
                        value[..., s] = clean_heads[layer][..., s]
                    return (value, *args[1:])

                recorded: list[torch.Tensor] = [torch.empty(0)] * len(places)
                hooks = [hf.get_submodule(f"{layers_path}.{layer}.{head_out}").register_forward_pre_hook(
                    lambda m, args, layer=layer: freeze(m, args, layer)) for layer in range(n_layers)]
                for r, place in enumerate(places):
                    module = final_layer if place is None else hf.get_submodule(place[0])
                    features = slice(None) if place is None else place[2]

                    def record(m, args, o, r=r, features=features):
                        hidden = o[0] if isinstance(o, tuple) else o
                        recorded[r] = hidden[..., features].clone()

                    hooks.append(module.register_forward_hook(record))
                forward(corrupt_ids, delta, hooks)
                # Stage 2: the corrupted run with only the receivers' inputs replaced.
                hooks = []
                for r, place in enumerate(places):
                    module = final_layer if place is None else hf.get_submodule(place[0])
                    features = slice(None) if place is None else place[2]

                    def replace(m, args, o, r=r, features=features):
                        hidden = (o[0] if isinstance(o, tuple) else o).clone()
                        hidden[..., features] = recorded[r]
                        return (hidden, *o[1:]) if isinstance(o, tuple) else hidden

                    hooks.append(module.register_forward_hook(replace))
                p, ld, kl = stats(forward(corrupt_ids, delta, hooks))
                out["prob"][i, sender_layer, sender_head] = p - p_c
                out["logit_diff"][i, sender_layer, sender_head] = ld - ld_c
                out["kl"][i, sender_layer, sender_head] = kl_c - kl
    finally:
        hf.train(was_training)
    return out, np.array(ld_clean), np.array(ld_corrupted)
