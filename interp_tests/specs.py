"""What a claim runs on: a model (a spec string) and prompt pairs (a ``TaskSpec``).

YAML claims, the ``interp_task`` marker, the ``interp_pairs`` fixture, robustness grids and the command
line all name prompt pairs as a ``TaskSpec`` and load them with ``TaskSpec.pairs``, so a task option means
the same everywhere. Importing this module loads no torch (the pytest plugin imports it); checking or
loading a task spec does.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import SettingsError, did_you_mean

if TYPE_CHECKING:
    from .pairs import PromptPairs

ORGANISM = "organism"  # the model shipped with interp-tests
# Generator parameters set from the spec's own fields (and the model's tokenizer), not from its options.
COMMON_PARAMETERS = ("n", "seed", "tokenizer")


def looks_like_path(spec: str) -> bool:
    """Whether a model spec can only be a path (``./model``, ``/models/x``, ``~/x``), never a hub id."""
    return spec.startswith((".", "/", "~")) or os.sep + os.sep in spec


def resolve_model_spec(spec: str, base_dir: Path | None) -> str:
    """A model path relative to ``base_dir`` (a claim's folder, the working directory) made absolute when it
    exists there; otherwise the spec as given (the organism, a hub id, an absolute path)."""
    if base_dir is not None and spec != ORGANISM and not Path(spec).is_absolute() and (base_dir / spec).exists():
        return str((base_dir / spec).resolve())
    return spec


@dataclass(frozen=True)
class TaskSpec:
    """A registered task (``name``, with ``n``, ``seed`` and the generator's own options in ``variant``) or a
    pairs ``file`` (``n`` takes its first n pairs)."""

    name: str | None = None
    file: Path | None = None
    n: int | None = None
    seed: int | None = None
    variant: dict[str, Any] = field(default_factory=dict)

    def with_overrides(self, n: int | None, seed: int | None) -> TaskSpec:
        """``n`` and ``seed`` where given (``--interp-n-prompts``, ``--interp-seed``); a pairs file has no seed."""
        return replace(self, n=self.n if n is None else n, seed=self.seed if seed is None or self.file else seed)

    def corrupting(self, choice: str | None) -> TaskSpec:
        """The task with its ``corrupt`` option set to ``choice`` (one corrupted-token choice of a robustness
        grid); None leaves it as it is."""
        return self if choice is None else replace(self, variant={**self.variant, "corrupt": choice})

    def key(self) -> str:
        """A stable text that tells specs apart, for memoising their pairs."""
        return json.dumps([self.name, str(self.file), self.n, self.seed, self.variant], sort_keys=True, default=repr)

    def describe(self) -> str:
        """One line for people, e.g. ``ioi (n=64, seed=0, corrupt=S2)``."""
        if self.file is not None:
            return f"pairs file {self.file}" + (f" (first {self.n})" if self.n is not None else "")
        options = ", ".join(f"{k}={v}" for k, v in {"n": self.n, "seed": self.seed, **self.variant}.items())
        return f"{self.name} ({options})"

    def as_claim(self) -> dict[str, Any]:
        """The claims-file ``task:``, with a file path as it was given (claims read it relative to their file)."""
        if self.file is not None:
            return {"file": self.file.as_posix(), **({} if self.n is None else {"n": self.n})}
        counts = {key: value for key, value in (("n", self.n), ("seed", self.seed)) if value is not None}
        return {"name": self.name, **counts, **self.variant}

    def options(self) -> list[str]:
        """The generator's own options, which ``variant`` may set."""
        return [p for p in self._parameters() if p not in COMMON_PARAMETERS]

    def check(self) -> None:
        """Fail with ``SettingsError`` on an unknown task, an option its generator does not take, or a missing
        ``n`` that it needs, before anything is generated (or any model loaded). A file is checked when read."""
        if self.file is None:
            self._parameters()

    def pairs(self, tokenizer: Any = None) -> PromptPairs:
        """The prompt pairs; a generator keeps only the vocabulary that is single tokens for ``tokenizer``."""
        if self.file is not None:
            from .pairs import PromptPairs

            pairs = PromptPairs.load(self.file)
            if self.n is None:
                return pairs
            if self.n > len(pairs):
                raise SettingsError(f"{self.file} holds {len(pairs)} prompt pairs, fewer than n={self.n}.")
            return pairs[: self.n]
        parameters = self._parameters()
        kwargs: dict[str, Any] = dict(self.variant)
        if self.n is not None:
            kwargs["n"] = self.n
        if self.seed is not None:
            kwargs["seed"] = self.seed
        if "tokenizer" in parameters or _open_ended(parameters):
            kwargs["tokenizer"] = tokenizer
        return self._generator()(**kwargs)

    def _generator(self) -> Callable[..., PromptPairs]:
        from .tasks import TASKS

        if self.name not in TASKS:
            raise SettingsError(
                f"Unknown task {self.name!r}.{did_you_mean(str(self.name), TASKS)} Known tasks: {sorted(TASKS)}; "
                "or give a pairs file with {file: pairs.jsonl}."
            )
        return TASKS[self.name]

    def _parameters(self) -> Mapping[str, inspect.Parameter]:
        """The generator's parameters, once the spec's options and ``n`` are checked against them."""
        parameters = inspect.signature(self._generator()).parameters
        options = [p for p in parameters if p not in COMMON_PARAMETERS]
        for key in self.variant:
            if key not in parameters and not _open_ended(parameters):
                raise SettingsError(
                    f"Task {self.name!r} has no option {key!r}.{did_you_mean(key, options)} "
                    f"Its options: {options or 'none'}."
                )
        if self.n is None and "n" in parameters and parameters["n"].default is inspect.Parameter.empty:
            raise SettingsError(f"Task {self.name!r} needs n, the number of prompt pairs (e.g. n: 64).")
        return parameters


def _open_ended(parameters: Mapping[str, inspect.Parameter]) -> bool:
    """Whether the generator takes ``**options``, so any option may be passed on."""
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
