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
