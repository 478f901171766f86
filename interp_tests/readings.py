"""What the measurements other than patching return, as plain data that saves and loads without torch: attention
patterns (``attention_to``) and task performance (``evaluate``), so the pytest plugin caches them like sweeps and a
warm run needs no model."""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass

import numpy as np

from .errors import ResultFileError, SettingsError

FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class AttentionScores:
    """Mean attention weight of every head from ``query`` to ``key``: ``mean[layer, head]``, as sweeps shape it."""

    query: str
    key: str
    mean: np.ndarray  # [n_layers, n_heads]
    per_prompt: np.ndarray  # [n_prompts, n_layers, n_heads]

    @property
    def labels(self) -> list[str]:
        return [f"{layer}.{head}" for layer in range(self.mean.shape[0]) for head in range(self.mean.shape[1])]

    def __getitem__(self, label: str) -> float:
        layer, head = _parse_head(label, self.mean.shape)
        return float(self.mean[layer, head])

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` heads attending most from ``query`` to ``key``, with their mean weights."""
        order = np.argsort(-self.mean.reshape(-1), kind="stable")[:k]
        return [(self.labels[i], float(self.mean.reshape(-1)[i])) for i in order]

    def __str__(self) -> str:
        rows = ", ".join(f"{label} {weight:.2f}" for label, weight in self.top(5))
        return f"attention {self.query} -> {self.key} over {len(self.per_prompt)} prompts, top heads: {rows}"

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        meta = {"format_version": FORMAT_VERSION, "query": self.query, "key": self.key}
        np.savez(buffer, meta=np.array(json.dumps(meta)), per_prompt=self.per_prompt)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "bytes") -> AttentionScores:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                meta = json.loads(str(archive["meta"]))
                per_prompt = archive["per_prompt"]
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
            raise ResultFileError(f"{source} is not readable attention scores ({error}). Recompute them.") from None
        _check_format(meta, source, "attention scores")
        return cls(query=meta["query"], key=meta["key"], mean=per_prompt.mean(axis=0), per_prompt=per_prompt)


def _parse_head(label: str, shape: tuple[int, ...]) -> tuple[int, int]:
    parts = label.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise SettingsError(f"{label!r} is not a head label; heads are 'L.H', e.g. '1.2'.")
    layer, head = int(parts[0]), int(parts[1])
    if layer >= shape[0] or head >= shape[1]:
        raise SettingsError(f"head {label!r} is outside this model's {shape[0]} layers x {shape[1]} heads.")
    return layer, head


@dataclass(frozen=True)
class Evaluation:
    """Task performance on clean prompts and, when they can be built, corrupted ones."""

    n_prompts: int
    accuracy: float
    clean_logit_diff: float
    clean_prob: float
    corrupted_logit_diff: float | None
    corrupted_prob: float | None
    corrupted_skipped: str | None = None  # why the corrupted run did not run, when it was asked for

    def __str__(self) -> str:
        lines = [
            f"prompts              {self.n_prompts}",
            f"top-1 accuracy       {self.accuracy:.3f}",
            f"clean logit diff     {self.clean_logit_diff:.3f}",
            f"clean P(answer)      {self.clean_prob:.3f}",
        ]
        if self.corrupted_logit_diff is not None:
            lines.append(f"corrupted logit diff {self.corrupted_logit_diff:.3f}")
            lines.append(f"corrupted P(answer)  {self.corrupted_prob:.3f}")
        if self.corrupted_skipped is not None:
            lines.append("corrupted run        skipped: " + self.corrupted_skipped.replace("\n", "\n  "))
        return "\n".join(lines)

    def to_bytes(self) -> bytes:
        return json.dumps({"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}).encode()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "bytes") -> Evaluation:
        try:
            values = json.loads(data)
            _check_format(values, source, "an evaluation")
            return cls(**{field.name: values[field.name] for field in dataclasses.fields(cls)})
        except (ValueError, KeyError, TypeError) as error:
            raise ResultFileError(f"{source} is not a readable evaluation ({error}). Recompute it.") from None




def _check_format(meta: dict, source: str, what: str) -> None:
    if meta.get("format_version") != FORMAT_VERSION:
        raise ResultFileError(
            f"{source} holds {what} of format {meta.get('format_version')}, expected {FORMAT_VERSION}. Recompute it."
        )
