"""The paper's three patching metrics (Zhang & Nanda 2024, section 2.1), read at each prompt's last token.

A run is summarised per prompt by three numbers: the probability of the answer (set), the logit
difference ``logit(answer) - logit(wrong)`` (summed over sets), and ``KL(clean || run)``. Every metric
of every patched run comes from these, so one sweep serves all three metrics.

Precision: the model runs in its own dtype, but every metric is computed from float32 logits, so a
float16 or bfloat16 model only adds the rounding of its forward pass. Measured on 3-layer random GPT-2s
(6 seeds; STR and GN; heads, attention, MLPs, residual stream), a raw logit-difference effect moved from
its float32 value by at most 0.0015 (float16) and 0.0087 (bfloat16) times the standard deviation of the
clean logits. ``HALF_PRECISION_TOLERANCE`` (0.005 and 0.02) holds these with a 2-3x margin, and the tests
hold half-precision sweeps to it. A normalised effect moves by about that much divided by
``|LD_clean - LD_corrupted|`` in the same units: with STR on the test models (denominators of 0.2-0.6
standard deviations) by at most 0.0044 (float16) and 0.030 (bfloat16), far more when the denominator is
~0. Probabilities moved by at most 6e-5 / 4e-4 and KL by 4e-4 / 4e-3 nats. Deeper models accumulate
more rounding: when a claim sits near its threshold, run it in float32.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .errors import InterpWarning, MetricError, SettingsError, did_you_mean
from .pairs import TokenizedPairs, token_pieces

METRICS = ("logit_diff", "prob", "kl")
# Below this gap (in logits) between clean and corrupted logit differences, normalising divides by ~0.
MIN_LOGIT_DIFF_GAP = 1e-3
# Largest |half-precision - float32| raw logit-difference effect, in standard deviations of the clean logits.
HALF_PRECISION_TOLERANCE = {torch.float16: 0.005, torch.bfloat16: 0.02}
# A model is "at chance" when its clean accuracy closes at most this share of the gap from chance to 1.
CHANCE_MARGIN = 0.2
# A model "never predicts" the answers when no prompt has an answer token among its TOP_K most likely next
# tokens and the mean clean P(answer) is below NEVER_PREDICTED_PROB. Either alone is not enough: a task with
# many plausible answers can keep the answer out of the top 10 yet give it real mass, and a small probability
# is normal for one member of an answer set; together they say the model puts the answers nowhere near the top.
TOP_K = 10
NEVER_PREDICTED_PROB = 0.01
# How many of the model's most frequent clean top-1 tokens a warning shows.
SHOWN_PREDICTIONS = 5


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise SettingsError(
            f"Unknown metric {metric!r}.{did_you_mean(str(metric), METRICS)} Use 'logit_diff' (normalised logit "
            "difference, recommended), 'prob' (probability of the answer) or 'kl' (KL divergence to the clean run)."
        )
    return metric


@dataclass(frozen=True)
class RunStats:
    """Per-row summaries of a run's final-position distribution."""

    prob: torch.Tensor
    logit_diff: torch.Tensor
    kl: torch.Tensor


class AnswerReader:
    """Turns final-position logits into RunStats for the rows of a (possibly repeated) batch."""

    def __init__(self, tokens: TokenizedPairs, vocab_size: int) -> None:
        n = tokens.n
        self.good = torch.zeros(n, vocab_size)
        self.bad = torch.zeros(n, vocab_size)
        for i, (answer, wrong) in enumerate(zip(tokens.answer_ids, tokens.wrong_ids)):
            self.good[i, answer] = 1.0
            self.bad[i, wrong] = 1.0
        self.clean_logprobs: torch.Tensor | None = None

    def set_clean(self, clean_logits: torch.Tensor) -> None:
        self.clean_logprobs = torch.log_softmax(clean_logits.float().cpu(), dim=-1)

    def stats(self, logits: torch.Tensor, prompts: torch.Tensor) -> RunStats:
        """``logits`` [rows, vocab] at each row's last token; ``prompts`` [rows] says which prompt a row ran."""
        logits = logits.float().cpu()
        if not torch.isfinite(logits).all():
            raise MetricError(
                "The model produced NaN or inf logits, so no patching effect can be trusted. Check the weights "
                "(e.g. an overflow in half precision: load the model in float32) and the inputs."
            )
        logprobs = torch.log_softmax(logits, dim=-1)
        good, bad = self.good[prompts], self.bad[prompts]
        prob = (logprobs.exp() * good).sum(-1)
        logit_diff = (logits * good).sum(-1) - (logits * bad).sum(-1)
        assert self.clean_logprobs is not None, "set_clean() must run before any other run is read"
        clean = self.clean_logprobs[prompts]
        kl = (clean.exp() * (clean - logprobs)).sum(-1)
        return RunStats(prob=prob, logit_diff=logit_diff, kl=kl)

    def accuracy(self, clean_logits: torch.Tensor) -> tuple[float, float]:
        """Clean accuracy and its chance level, over each prompt's candidates: its answer and wrong tokens.

        A prompt counts as correct when the highest clean logit among its answer and wrong tokens is an
        answer token. Chance is the mean share of answer tokens among the candidates (0.5 for one answer
        and one wrong token): what a model without any preference scores.
        """
        logits = clean_logits.float().cpu()
        candidates = (self.good + self.bad) > 0
        top = logits.masked_fill(~candidates, float("-inf")).argmax(dim=-1)
        correct = self.good[torch.arange(len(top)), top] > 0
        chance = self.good.sum(-1) / candidates.sum(-1)
        return float(correct.float().mean()), float(chance.mean())


@dataclass(frozen=True)
class CleanRun:
    """What the clean run says about whether the model does the task at all, kept in a result's settings
    (``settings["clean_run"]``) so that a cached result can repeat its warnings without a forward pass."""

    n_prompts: int
    accuracy: float  # answer outscores wrong, over each prompt's candidates
    chance: float
    answer_in_top_k: int  # prompts with an answer token among the TOP_K most likely next tokens
    answer_prob: float  # mean clean P(answer), summed over an answer set
    predictions: list[list[Any]]  # the most frequent clean top-1 tokens: [piece, decoded text, prompts]

    @classmethod
    def measure(cls, reader: AnswerReader, clean_logits: torch.Tensor, tokenizer: Any) -> CleanRun:
        logits = clean_logits.float().cpu()
        accuracy, chance = reader.accuracy(logits)
        top = logits.topk(min(TOP_K, logits.shape[-1]), dim=-1).indices
        in_top_k = reader.good.gather(1, top).amax(dim=-1) > 0
        prob = (torch.softmax(logits, dim=-1) * reader.good).sum(-1)
        counts = Counter(logits.argmax(dim=-1).tolist()).most_common(SHOWN_PREDICTIONS)
        pieces = token_pieces(tokenizer, [token for token, _ in counts])
        predictions = [[piece, tokenizer.decode([token]), n] for piece, (token, n) in zip(pieces, counts)]
        return cls(len(logits), accuracy, chance, int(in_top_k.sum()), float(prob.mean()), predictions)

    @property
    def never_predicted(self) -> bool:
        return self.answer_in_top_k == 0 and self.answer_prob < NEVER_PREDICTED_PROB

    def as_settings(self) -> dict[str, Any]:
        return asdict(self)

    def warn(self, *, stacklevel: int = 2) -> None:
        """The at-chance and never-predicted warnings (``InterpWarning``) that apply."""
        warn_if_at_chance(self.accuracy, self.chance, stacklevel=stacklevel + 1)
        if not self.never_predicted:
            return
        shown = ", ".join(
            f"{piece!r}" + ("" if piece == text else f" (decodes to {text!r})") + f": {n}"
            for piece, text, n in self.predictions
        )
        warnings.warn(
            InterpWarning(
                f"The model essentially never predicts the answer tokens: in none of the {self.n_prompts} prompts "
                f"is an answer token among its {TOP_K} most likely next tokens, and the mean clean P(answer) is "
                f"{self.answer_prob:.4f} (< {NEVER_PREDICTED_PROB}). The at-chance check compares the answer with "
                "the wrong answer only, so a sweep still ranks components, but by how they move two tokens the "
                "model does not consider. Most often the answers are not the tokens the model writes (a missing "
                "or extra leading space, or a different casing). Its most frequent top-1 tokens on these prompts, "
                f"as the tokenizer stores them, with the number of prompts: {shown}. Give the answers as such tokens "
                "(interp_tests.evaluate shows the top-1 accuracy)."
            ),
            stacklevel=stacklevel + 1,
        )

    @classmethod
    def replay(cls, settings: dict[str, Any], *, stacklevel: int = 2) -> None:
        """Repeat the warnings of the clean run recorded in a result's ``settings`` (a cached result's)."""
        recorded = settings.get("clean_run")
        if isinstance(recorded, dict):
            cls(**recorded).warn(stacklevel=stacklevel + 1)


def check_clean_run(reader: AnswerReader, clean_logits: torch.Tensor, tokenizer: Any) -> CleanRun:
    """Measure the clean run (``CleanRun``) and warn when the model does not do the task; every method calls
    this once it has the clean logits."""
    check = CleanRun.measure(reader, clean_logits, tokenizer)
    check.warn(stacklevel=3)
    return check


def warn_if_at_chance(accuracy: float, chance: float, *, stacklevel: int = 2) -> bool:
    """Warn (``InterpWarning``) when the clean accuracy is at most chance + CHANCE_MARGIN x (1 - chance).

    That is at most 0.6 for one answer against one wrong token: a model that does not prefer the answer
    does not do the task, so no component can be said to do it. Returns whether it warned.
    """
    if accuracy > chance + CHANCE_MARGIN * (1 - chance):
        return False
    warnings.warn(
        InterpWarning(
            f"The model's clean accuracy on these prompts is {accuracy:.2f} (the share of prompts whose answer "
            f"outscores the wrong answer), at or near chance ({chance:.2f}): it does not do this task, so claims "
            "about which components do it are meaningless. Check that `answer` is the clean prompt's answer and "
            "`wrong` the corrupted prompt's, and that the prompts suit the model; or patch a model that does "
            "the task (interp_tests.evaluate shows how well a model does it)."
        ),
        stacklevel=stacklevel + 1,
    )
    return True


def raw_effects(patched: RunStats, corrupted: RunStats) -> dict[str, torch.Tensor]:
    """Un-normalised effects, linear in the patched run so they can be summed over layers and prompts.

    ``patched`` fields are [components, n]; ``corrupted`` fields are [n].
    """
    return {
        "prob": patched.prob - corrupted.prob,
        "logit_diff": patched.logit_diff - corrupted.logit_diff,
        "kl": corrupted.kl - patched.kl,
    }


def check_denominator(gap: float, what: str) -> None:
    if not abs(gap) > MIN_LOGIT_DIFF_GAP:
        raise MetricError(
            f"The normalised logit difference divides by LD_clean - LD_corrupted = {gap:.3g} ({what}), which is "
            f"~0 (|gap| <= {MIN_LOGIT_DIFF_GAP}): the clean and corrupted runs behave the same, so the task "
            "does not separate them and no patching effect is meaningful. Check that `wrong` is the corrupted "
            "prompt's answer and that the corruption changes the key tokens; or use metric='prob' or 'kl'."
        )
