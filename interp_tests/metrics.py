"""Patching metrics, read at each prompt's last token: the paper's three (Zhang & Nanda 2024, section 2.1), the
answer's log-probability, and metrics a user registers.

A run is summarised per prompt by one number per metric: the probability of the answer (set), the logit
difference ``logit(answer) - logit(wrong)`` (summed over sets), ``KL(clean || run)``, the log-probability of
the answer (set) ``log sum_a P(a)``, and any user metric the sweep asks for. Every metric of every patched
run comes from the same forward passes, so one sweep serves all of them.

A user metric is a function ``fn(logits, answer, wrong) -> values`` of a batch of last-token logits
(``[rows, vocab]``, float32) and each row's answer and wrong tokens as boolean masks (``[rows, vocab]``, so
answer sets work), returning one number per row; ``register_metric(name, fn)`` makes it usable by name
(``metric="name"``, in YAML too). Its effect is ``m_patched - m_corrupted``, normalised by the per-prompt gap
``m_clean - m_corrupted`` (batch means, as for the logit difference) unless registered with
``normalise=False``. The sweep cache keys a user metric by its name only: after changing a registered
function's code, rename it or clear the cache (``--interp-no-cache`` or delete ``.interp_cache/``).

``logprob`` is normalised the same way, ``(m_pt - m_corr) / (m_clean - m_corr)``: log P(answer) is the answer's
logit minus the log-sum-exp of all logits, a logit difference against the vocabulary's soft maximum, so it
behaves like the logit difference (roughly additive over components, no saturation at P = 1 as probability
has), and its raw scale in nats varies by task, which the gap removes: 1 = fully restored, 0 = nothing.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .choices import BUILTIN_METRICS
from .errors import InterpWarning, MetricError, SettingsError, did_you_mean
from .pairs import TokenizedPairs, token_pieces

if TYPE_CHECKING:
    import torch

# Built-in metrics whose effect is normalised by the clean-corrupted gap of the same metric.
NORMALISED = ("logit_diff", "logprob")
MetricFn = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]
# Below this gap (in logits) between clean and corrupted logit differences, normalising divides by ~0.
MIN_LOGIT_DIFF_GAP = 1e-3
# Largest |half-precision - float32| raw logit-difference effect, in standard deviations of the clean logits.
# Keyed by dtype name (str(dtype) without "torch."), so that reading a cached result needs no torch.
HALF_PRECISION_TOLERANCE = {"float16": 0.005, "bfloat16": 0.02}
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


@dataclass(frozen=True)
class UserMetric:
    """A metric computed by ``fn(logits, answer_mask, wrong_mask) -> [rows]`` (see the module docstring)."""

    name: str
    fn: MetricFn
    normalise: bool = True


_registered: dict[str, UserMetric] = {}


def register_metric(name: str, fn: MetricFn, *, normalise: bool = True) -> UserMetric:
    """Make ``fn`` usable as ``metric=name`` in ``patch``, grids, circuits and YAML claims (e.g. from a conftest.py).

    ``normalise=True`` divides effects by the clean-corrupted gap of the metric, as for the logit difference;
    ``False`` keeps ``m_patched - m_corrupted``, as for probability. Registering a name again replaces it.
    Cached sweeps are keyed by the name, not the code: rename the metric when you change what it computes.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise SettingsError(f"Metric name {name!r} must be an identifier-like string (e.g. 'answer_rank').")
    if name in BUILTIN_METRICS:
        raise SettingsError(f"{name!r} is a built-in metric ({', '.join(BUILTIN_METRICS)}): register under another name.")
    if not callable(fn):
        raise SettingsError(f"register_metric({name!r}, ...) needs a function fn(logits, answer, wrong), not {fn!r}.")
    metric = UserMetric(name, fn, bool(normalise))
    _registered[name] = metric
    return metric


def registered_metrics() -> list[str]:
    return sorted(_registered)


Metric = str | MetricFn


def user_metric(metric: Metric) -> UserMetric | None:
    """The user metric ``metric`` names (or is: a plain function, normalised), None for a built-in one.

    An unknown name raises ``SettingsError`` with a did-you-mean over built-in and registered names.
    """
    if callable(metric):
        known = [m for m in _registered.values() if m.fn is metric]
        return known[0] if known else UserMetric(getattr(metric, "__name__", "custom"), metric)
    if metric in BUILTIN_METRICS:
        return None
    if isinstance(metric, str) and metric in _registered:
        return _registered[metric]
    names = [*BUILTIN_METRICS, *registered_metrics()]
    registered = ", ".join(repr(n) for n in registered_metrics()) or "none"
    raise SettingsError(
        f"Unknown metric {metric!r}.{did_you_mean(str(metric), names)} Use 'logit_diff' (normalised logit "
        "difference, recommended), 'prob' (probability of the answer), 'kl' (KL divergence to the clean run), "
        f"'logprob' (log-probability of the answer), or a registered metric (registered: {registered}; add one "
        "with interp_tests.register_metric(name, fn))."
    )


def check_metric(metric: Metric) -> str:
    """The metric's name, after checking that it exists."""
    custom = user_metric(metric)
    return metric if custom is None else custom.name


def resolve_metric(metric: Metric) -> tuple[str, tuple[UserMetric, ...]]:
    """A sweep's metric as its name and the user metrics its runs must compute (none, or that one)."""
    custom = user_metric(metric)
    return (metric, ()) if custom is None else (custom.name, (custom,))


def normalised_metrics(custom: Sequence[UserMetric]) -> set[str]:
    """The metrics whose effects are normalised by their clean-corrupted gap, among the built-ins and ``custom``."""
    return {*NORMALISED, *(m.name for m in custom if m.normalise)}


@dataclass(frozen=True)
class RunStats:
    """Per-row values of a run's final-position distribution, one tensor per metric name."""

    values: Mapping[str, torch.Tensor]

    def __getitem__(self, metric: str) -> torch.Tensor:
        return self.values[metric]

    @property
    def prob(self) -> torch.Tensor:
        return self.values["prob"]

    @property
    def logit_diff(self) -> torch.Tensor:
        return self.values["logit_diff"]

    @property
    def kl(self) -> torch.Tensor:
        return self.values["kl"]

    @property
    def logprob(self) -> torch.Tensor:
        return self.values["logprob"]


class AnswerReader:
    """Turns final-position logits into RunStats for the rows of a (possibly repeated) batch."""

    def __init__(self, tokens: TokenizedPairs, vocab_size: int, custom: Sequence[UserMetric] = ()) -> None:
        import torch

        n = tokens.n
        self.custom = tuple(custom)
        self.good = torch.zeros(n, vocab_size)
        self.bad = torch.zeros(n, vocab_size)
        for i, (answer, wrong) in enumerate(zip(tokens.answer_ids, tokens.wrong_ids)):
            self.good[i, answer] = 1.0
            self.bad[i, wrong] = 1.0
        self.clean_logprobs: torch.Tensor | None = None

    def set_clean(self, clean_logits: torch.Tensor) -> None:
        import torch

        self.clean_logprobs = torch.log_softmax(clean_logits.float().cpu(), dim=-1)

    def stats(self, logits: torch.Tensor, prompts: torch.Tensor) -> RunStats:
        """``logits`` [rows, vocab] at each row's last token; ``prompts`` [rows] says which prompt a row ran."""
        import torch

        logits = logits.float().cpu()
        if not torch.isfinite(logits).all():
            raise MetricError(
                "The model produced NaN or inf logits, so no patching effect can be trusted. Check the weights "
                "and the dtype: an overflow in half precision, or a float64 model whose attention takes its softmax "
                "in float32 (Gemma 2 does: the padding mask becomes -inf and NaN spreads), runs correctly in "
                "float32; and check the inputs."
            )
        logprobs = torch.log_softmax(logits, dim=-1)
        good, bad = self.good[prompts], self.bad[prompts]
        prob = (logprobs.exp() * good).sum(-1)
        logit_diff = (logits * good).sum(-1) - (logits * bad).sum(-1)
        # log of the summed answer probability, without the underflow of log(prob) for unlikely answers
        logprob = torch.logsumexp(logprobs.masked_fill(good == 0, float("-inf")), dim=-1)
        assert self.clean_logprobs is not None, "set_clean() must run before any other run is read"
        clean = self.clean_logprobs[prompts]
        kl = (clean.exp() * (clean - logprobs)).sum(-1)
        values = {"prob": prob, "logit_diff": logit_diff, "kl": kl, "logprob": logprob}
        for metric in self.custom:
            values[metric.name] = _user_values(metric, logits, good > 0, bad > 0)
        return RunStats(values)

    def accuracy(self, clean_logits: torch.Tensor) -> tuple[float, float]:
        """Clean accuracy and its chance level, over each prompt's candidates: its answer and wrong tokens.

        A prompt counts as correct when the highest clean logit among its answer and wrong tokens is an
        answer token. Chance is the mean share of answer tokens among the candidates (0.5 for one answer
        and one wrong token): what a model without any preference scores.
        """
        import torch

        logits = clean_logits.float().cpu()
        candidates = (self.good + self.bad) > 0
        top = logits.masked_fill(~candidates, float("-inf")).argmax(dim=-1)
        correct = self.good[torch.arange(len(top)), top] > 0
        chance = self.good.sum(-1) / candidates.sum(-1)
        return float(correct.float().mean()), float(chance.mean())

    def clean_summary(self, clean_logits: torch.Tensor) -> dict[str, Any]:
        """What ``CleanRun`` needs from the clean logits, a few numbers per prompt: accuracy and chance, the prompts
        with an answer among the TOP_K most likely tokens, the mean P(answer) and each prompt's top-1 token."""
        import torch

        logits = clean_logits.float().cpu()
        accuracy, chance = self.accuracy(logits)
        top = logits.topk(min(TOP_K, logits.shape[-1]), dim=-1).indices
        in_top_k = self.good.gather(1, top).amax(dim=-1) > 0
        prob = (torch.softmax(logits, dim=-1) * self.good).sum(-1)
        return {"accuracy": accuracy, "chance": chance, "answer_in_top_k": int(in_top_k.sum()),
                "answer_prob": float(prob.mean()), "top1": logits.argmax(dim=-1).tolist()}


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
    def measure(cls, summary: Mapping[str, Any], tokenizer: Any) -> CleanRun:
        """From ``AnswerReader.clean_summary`` (computed where the model runs) and the tokenizer (here)."""
        top1 = [int(t) for t in summary["top1"]]
        counts = Counter(top1).most_common(SHOWN_PREDICTIONS)
        pieces = token_pieces(tokenizer, [token for token, _ in counts])
        predictions = [[piece, tokenizer.decode([token]), n] for piece, (token, n) in zip(pieces, counts)]
        return cls(len(top1), float(summary["accuracy"]), float(summary["chance"]), int(summary["answer_in_top_k"]),
                   float(summary["answer_prob"]), predictions)

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


def check_clean_run(summary: Mapping[str, Any], tokenizer: Any) -> CleanRun:
    """Measure the clean run (``CleanRun``, from ``AnswerReader.clean_summary`` of the clean logits) and warn when
    the model does not do the task; every method calls this once it has the clean logits' summary."""
    check = CleanRun.measure(summary, tokenizer)
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


def _user_values(metric: UserMetric, logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor) -> torch.Tensor:
    import torch

    values = metric.fn(logits, answer, wrong)
    if not isinstance(values, torch.Tensor) or values.shape != (logits.shape[0],):
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise MetricError(
            f"Metric {metric.name!r} returned {shape}; it must return a tensor of one value per row, shape "
            f"({logits.shape[0]},), from logits [rows, vocab] and the answer and wrong masks [rows, vocab]."
        )
    if not torch.isfinite(values).all():
        raise MetricError(
            f"Metric {metric.name!r} returned NaN or inf for some rows, so no effect under it can be trusted. "
            "Make it finite (e.g. log-sum-exp instead of the log of a sum that can underflow)."
        )
    return values.float()


def raw_effects(patched: RunStats, corrupted: RunStats) -> dict[str, torch.Tensor]:
    """Un-normalised effects, linear in the patched run so they can be summed over layers and prompts:
    ``m_patched - m_corrupted`` for every metric but KL, ``KL_corrupted - KL_patched`` (lower KL is closer to clean).

    ``patched`` values are [components, n]; ``corrupted`` values are [n].
    """
    return {
        name: corrupted[name] - value if name == "kl" else value - corrupted[name]
        for name, value in patched.values.items()
    }


def check_denominator(gap: float, what: str, metric: str = "logit_diff") -> None:
    if not abs(gap) > MIN_LOGIT_DIFF_GAP:
        name = "logit difference" if metric == "logit_diff" else metric
        raise MetricError(
            f"The normalised {name} divides by its clean - corrupted gap = {gap:.3g} ({what}), which is "
            f"~0 (|gap| <= {MIN_LOGIT_DIFF_GAP}): the clean and corrupted runs behave the same, so the task "
            "does not separate them and no patching effect is meaningful. Check that `wrong` is the corrupted "
            "prompt's answer and that the corruption changes the key tokens; or use metric='prob' or 'kl'."
        )
