"""Hypothesis strategies, so a localization claim can be tested as a property of many prompt sets::

    @given(pairs=strategies.prompt_pairs("ioi", n=8, corrupt="S2"))
    def test_name_mover_is_detected(pairs): ...

Pairs come from the seeded task generators (``interp_tests.tasks.TASKS``) with a drawn seed, so every
example is reproducible from the seed that hypothesis reports.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from .errors import SettingsError, did_you_mean
from .pairs import PromptPairs

MAX_SEED = 2**31 - 1


def _generator(task: str) -> Callable[..., PromptPairs]:
    from .tasks import TASKS

    if task not in TASKS:
        raise SettingsError(f"Unknown task {task!r}.{did_you_mean(str(task), TASKS)} Choose from {sorted(TASKS)}.")
    generator = TASKS[task]
    if "seed" not in inspect.signature(generator).parameters:
        raise SettingsError(f"Task {task!r} has no seed to draw (it reads fixed pairs); use its PromptPairs directly.")
    return generator


def prompt_pairs(
    task: str = "ioi", n: int | st.SearchStrategy[int] = st.integers(4, 16), *, tokenizer: Any = None, **variant: Any
) -> st.SearchStrategy[PromptPairs]:
    """PromptPairs from ``task``'s generator with a drawn seed and ``n`` prompts (an int or a strategy).

    ``variant`` goes to the generator (e.g. ``corrupt="ABC"`` for IOI); give ``tokenizer`` to keep only
    vocabulary that is single tokens for the model under test.
    """
    generator = _generator(task)
    try:
        inspect.signature(generator).bind(1, seed=0, tokenizer=tokenizer, **variant)
    except TypeError as error:
        raise SettingsError(f"Task {task!r} does not take these arguments: {error}.") from None
    sizes = st.just(n) if isinstance(n, int) else n
    return st.builds(
        lambda size, seed: generator(size, seed=seed, tokenizer=tokenizer, **variant), sizes, st.integers(0, MAX_SEED)
    )


def names(split: str = "all") -> st.SearchStrategy[str]:
    """First names the IOI task uses (``split`` "train", "test" or "all"), without the leading space."""
    from .tasks.words import NAMES, partition

    return st.sampled_from(partition(NAMES, split))


def years() -> st.SearchStrategy[int]:
    """Start years the greater-than task can use (centuries 11..19, two-digit ends 02..98)."""
    from .tasks.greater_than import CENTURIES, START_YEARS

    return st.builds(lambda century, end: 100 * century + end, st.sampled_from(CENTURIES), st.sampled_from(START_YEARS))
