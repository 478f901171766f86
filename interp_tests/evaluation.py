"""How well a model does a task, before any patching: a claim about a model that fails the task is void."""

from __future__ import annotations

import torch

from .corruptions import DEFAULT_NOISE_SCALE, Corruption, RunInput, corrupted_input
from .metrics import AnswerReader
from .models import PatchableModel
from .readings import Evaluation
from .engine import Pairs, eval_mode, run, tokenize


def evaluate(
    model: PatchableModel, pairs: Pairs, *, corruption: Corruption | None = "str", seed: int = 0,
    noise_scale: float = DEFAULT_NOISE_SCALE,
) -> Evaluation:
    """Top-1 accuracy (the argmax is in the answer set), mean logit difference and answer probability.

    ``corruption=None`` skips the corrupted run. STR is skipped when the pairs have no corrupted prompts or
    some pairs' clean and corrupted prompts tokenize to different lengths; ``corrupted_skipped`` then says
    why (and the printout shows it), since STR drops all the pairs' corrupted rows, not just the mismatched ones.
    """
    tokens = tokenize(model, pairs)
    reader = AnswerReader(tokens, model.shape.vocab_size)
    prompts = list(range(tokens.n))
    index = torch.arange(tokens.n)
    with torch.no_grad(), eval_mode(model):
        clean_logits, _ = run(model, tokens, RunInput(tokens.clean_ids, None), prompts)
        reader.set_clean(clean_logits)
        clean = reader.stats(clean_logits, index)
        corrupted = None
        skipped = None
        if corruption == "str" and tokens.corrupted_ids is None:
            skipped = tokens.length_mismatch or "the pairs have no corrupted prompts (use corruption='gn')."
        if corruption is not None and skipped is None:
            corrupt_input = corrupted_input(model, tokens, corruption, seed=seed, noise_scale=noise_scale)
            corrupted = reader.stats(run(model, tokens, corrupt_input, prompts)[0], index)
    top1 = clean_logits.argmax(dim=-1)
    correct = reader.good[index, top1] > 0
    return Evaluation(
        n_prompts=tokens.n,
        accuracy=float(correct.float().mean()),
        clean_logit_diff=float(clean.logit_diff.mean()),
        clean_prob=float(clean.prob.mean()),
        corrupted_logit_diff=None if corrupted is None else float(corrupted.logit_diff.mean()),
        corrupted_prob=None if corrupted is None else float(corrupted.prob.mean()),
        corrupted_skipped=skipped,
    )
