"""Clean/corrupted prompt pairs, and their checked tokenization for one model's tokenizer.

A pair is only useful for patching when its tokens line up: symmetric token replacement (STR) compares
position by position, and the metrics read single answer tokens. Every check that could otherwise
produce a silently wrong number happens here, once, with a message that names the pair at fault.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import PromptError, did_you_mean
from .files import atomic_write

if TYPE_CHECKING:
    import torch

AnswerToken = str | int
Answer = AnswerToken | Sequence[AnswerToken]
Span = tuple[int, int]

_RECORD_KEYS = ("clean", "corrupted", "answer", "wrong", "corrupt_positions", "spans")


def _as_list(name: str, values: Any, n: int | None) -> list:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise PromptError(
            f"`{name}` must be a list with one entry per prompt, got {type(values).__name__} {values!r:.60}. "
            f"Wrap a single prompt in a list: {name}=[...]."
        )
    values = list(values)
    if n is not None and len(values) != n:
        raise PromptError(f"`{name}` has {len(values)} entries but `clean` has {n}: give one entry per prompt.")
    return values


def _check_answer(what: str, value: Any) -> Answer:
    """``value`` as an answer; ``what`` names it in the error (``answer[3]``, ``pairs.jsonl:7: `answer```)."""

    def ok(token: Any) -> bool:
        return isinstance(token, str) or (isinstance(token, int) and not isinstance(token, bool))

    if ok(value):
        return value
    if isinstance(value, Sequence) and not isinstance(value, bytes) and value and all(ok(t) for t in value):
        return list(value)
    raise PromptError(
        f"{what} = {value!r:.60} is not an answer. An answer is a single-token string (' Mary'), "
        "a token id (int), or a non-empty list of them for an answer set (e.g. all years above YY)."
    )


@dataclass(frozen=True)
class _Rows:
    """How error messages name prompt ``i``: by its index (``clean[3]``, ``Pair 3``) for pairs built in Python,
    or by where it was read (``pairs.jsonl:7: `clean```, the 1-based line of the file) for records."""

    source: str | None = None  # a file or "records"; None: pairs built in Python
    lines: Sequence[int] | None = None  # each record's line in ``source``

    def at(self, i: int) -> str:
        """The location prefix of prompt ``i``'s messages ('' for pairs built in Python)."""
        if self.source is None:
            return ""
        return f"{self.source}:{self.lines[i]}: " if self.lines is not None else f"{self.source}: record {i}: "

    def field(self, i: int, name: str) -> str:
        return f"{name}[{i}]" if self.source is None else f"`{name}`"

    def pair(self, i: int) -> str:
        return self.at(i) or f"Pair {i}: "


class PromptPairs:
    """Clean prompts, their corrupted twins, and the answers the metrics read.

    ``answer[i]`` is the clean prompt's answer and ``wrong[i]`` the corrupted prompt's answer, so the
    logit difference is ``logit(answer) - logit(wrong)``. Either may be an answer set (a list); the
    logit difference then sums logits over each set and the probability metric sums probabilities.
    ``corrupted`` may be None when only Gaussian-noise or custom embedding corruptions are used.

    ``corrupt_positions[i]`` lists the token indices that Gaussian noise corrupts in prompt ``i``. When
    omitted they come from the ``"corrupt"`` span, else from the tokens where clean and corrupted differ.
    ``spans`` names character spans of each clean prompt (e.g. ``{"S2": [(31, 35), ...]}``) so that tasks
    can mark positions without knowing the tokenizer; a sweep's ``positions="S2"`` patches the last token
    of that span.
    """

    def __init__(
        self,
        clean: Sequence[str],
        corrupted: Sequence[str] | None,
        answer: Sequence[Answer],
        wrong: Sequence[Answer],
        corrupt_positions: Sequence[Sequence[int]] | None = None,
        *,
        spans: Mapping[str, Sequence[Span]] | None = None,
    ) -> None:
        self._check(clean, corrupted, answer, wrong, corrupt_positions, spans, _Rows())

    def _check(
        self,
        clean: Sequence[str],
        corrupted: Sequence[str] | None,
        answer: Sequence[Answer],
        wrong: Sequence[Answer],
        corrupt_positions: Sequence[Sequence[int]] | None,
        spans: Mapping[str, Sequence[Span]] | None,
        rows: _Rows,
    ) -> None:
        """Check every prompt and set the fields; ``rows`` names a prompt in the errors."""
        clean = _as_list("clean", clean, None)
        if not clean:
            raise PromptError("PromptPairs needs at least one prompt; `clean` is empty.")
        n = len(clean)
        for i, prompt in enumerate(clean):
            if not isinstance(prompt, str) or not prompt:
                raise PromptError(f"{rows.at(i)}{rows.field(i, 'clean')} = {prompt!r:.60} must be a non-empty string.")
        if corrupted is not None:
            corrupted = _as_list("corrupted", corrupted, n)
            for i, prompt in enumerate(corrupted):
                if not isinstance(prompt, str) or not prompt:
                    what = rows.field(i, "corrupted")
                    raise PromptError(f"{rows.at(i)}{what} = {prompt!r:.60} must be a non-empty string.")
        self.clean: list[str] = clean
        self.corrupted: list[str] | None = corrupted
        self.answer: list[Answer] = [
            _check_answer(rows.at(i) + rows.field(i, "answer"), a) for i, a in enumerate(_as_list("answer", answer, n))
        ]
        self.wrong: list[Answer] = [
            _check_answer(rows.at(i) + rows.field(i, "wrong"), w) for i, w in enumerate(_as_list("wrong", wrong, n))
        ]
        for i, (a, w) in enumerate(zip(self.answer, self.wrong)):
            if a == w:
                raise PromptError(
                    f"{rows.pair(i)}answer and wrong answer are both {a!r}, so the logit difference is 0 by "
                    "construction. `wrong` must be the corrupted prompt's answer, different from `answer`."
                )
        self.corrupt_positions: list[list[int]] | None = None
        if corrupt_positions is not None:
            self.corrupt_positions = []
            for i, pos in enumerate(_as_list("corrupt_positions", corrupt_positions, n)):
                if (
                    isinstance(pos, (str, bytes, Mapping))
                    or not isinstance(pos, Iterable)
                    or not (pos := list(pos))
                    or not all(isinstance(p, int) and not isinstance(p, bool) for p in pos)
                ):
                    raise PromptError(
                        f"{rows.at(i)}{rows.field(i, 'corrupt_positions')} = {pos!r:.60} must be a non-empty list "
                        "of token indices."
                    )
                self.corrupt_positions.append(pos)
        if spans is not None and not isinstance(spans, Mapping):
            raise PromptError(
                f"`spans` = {spans!r:.60} must map span names to one (start, end) character span per prompt, "
                "e.g. spans={'S2': [(31, 35), ...]}."
            )
        self.spans: dict[str, list[Span]] = {}
        for name, per_prompt in (spans or {}).items():
            per_prompt = _as_list(f"spans[{name!r}]", per_prompt, n)
            checked = []
            for i, span in enumerate(per_prompt):
                if (
                    not isinstance(span, Sequence)
                    or len(span) != 2
                    or not all(isinstance(s, int) for s in span)
                    or not 0 <= span[0] < span[1] <= len(clean[i])
                ):
                    raise PromptError(
                        f"{rows.at(i)}{rows.field(i, f'spans[{name!r}]')} = {span!r:.60} is not a (start, end) "
                        f"character span inside {rows.field(i, 'clean')} (length {len(clean[i])})."
                    )
                checked.append((span[0], span[1]))
            self.spans[str(name)] = checked

    def __len__(self) -> int:
        return len(self.clean)

    def __repr__(self) -> str:
        return f"PromptPairs(n={len(self)}, clean[0]={self.clean[0]!r}, answer[0]={self.answer[0]!r})"

    def __getitem__(self, index: int | slice | Sequence[int]) -> PromptPairs:
        """A subset of the pairs (still a PromptPairs), e.g. for bootstrap resampling."""
        if isinstance(index, int):
            rows = [range(len(self))[index]]
        elif isinstance(index, slice):
            rows = list(range(len(self)))[index]
        else:
            rows = [range(len(self))[int(i)] for i in index]
        return PromptPairs(
            [self.clean[r] for r in rows],
            None if self.corrupted is None else [self.corrupted[r] for r in rows],
            [self.answer[r] for r in rows],
            [self.wrong[r] for r in rows],
            None if self.corrupt_positions is None else [self.corrupt_positions[r] for r in rows],
            spans={k: [v[r] for r in rows] for k, v in self.spans.items()},
        )

    def to_records(self) -> list[dict[str, Any]]:
        records = []
        for i in range(len(self)):
            record: dict[str, Any] = {"clean": self.clean[i], "answer": self.answer[i], "wrong": self.wrong[i]}
            if self.corrupted is not None:
                record["corrupted"] = self.corrupted[i]
            if self.corrupt_positions is not None:
                record["corrupt_positions"] = self.corrupt_positions[i]
            if self.spans:
                record["spans"] = {k: list(v[i]) for k, v in self.spans.items()}
            records.append(record)
        return records

    @classmethod
    def from_records(
        cls, records: Sequence[Mapping[str, Any]], *, source: str = "records", lines: Sequence[int] | None = None
    ) -> PromptPairs:
        """Pairs from dicts with keys clean, corrupted, answer, wrong and optional corrupt_positions, spans.

        Errors name a record as ``source: record i`` (0-based), or ``source:line`` given each record's ``lines``
        in the file it was read from.
        """
        records = list(records)
        if not records:
            raise PromptError(f"{source}: no prompt pairs found.")
        rows = _Rows(source, lines)
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise PromptError(f"{rows.at(i)}the record is a {type(record).__name__}, expected a mapping.")
            unknown = sorted(set(record) - set(_RECORD_KEYS), key=str)
            if unknown:
                hint = did_you_mean(str(unknown[0]), _RECORD_KEYS) if len(unknown) == 1 else ""
                names = ", ".join(f"`{key}`" for key in unknown)
                raise PromptError(f"{rows.at(i)}unknown key{'s' * (len(unknown) > 1)} {names}.{hint} Allowed: {list(_RECORD_KEYS)}.")
            missing = {"clean", "answer", "wrong"} - set(record)
            if missing:
                raise PromptError(f"{rows.at(i)}the record lacks required keys {sorted(missing)}.")
            if not isinstance(record.get("spans", {}), Mapping):
                raise PromptError(f"{rows.at(i)}`spans` is not a mapping of name -> [start, end].")
        for key in ("corrupted", "corrupt_positions"):
            given = [key in r for r in records]
            if any(given) and not all(given):
                i = given.index(not given[0])
                raise PromptError(
                    f"{rows.at(i)}this record {'gives' if given[i] else 'lacks'} `{key}`, unlike the first record: "
                    f"give `{key}` for every record or for none."
                )
        spans = {}
        for name in {name for r in records for name in r.get("spans", {})}:
            lacking = [i for i, r in enumerate(records) if name not in r.get("spans", {})]
            if lacking:
                raise PromptError(f"{rows.at(lacking[0])}no span {name!r}, which other records give: span {name!r} must be given for every record.")
            spans[name] = [r["spans"][name] for r in records]  # checked and made tuples by _check
        pairs = cls.__new__(cls)
        pairs._check(
            [r["clean"] for r in records],
            [r["corrupted"] for r in records] if "corrupted" in records[0] else None,
            [r["answer"] for r in records],
            [r["wrong"] for r in records],
            [r["corrupt_positions"] for r in records] if "corrupt_positions" in records[0] else None,
            spans,
            rows,
        )
        return pairs

    @classmethod
    def load(cls, path: str | Path) -> PromptPairs:
        """Read pairs from a ``.jsonl`` file (one record per line) or a ``.yaml``/``.yml`` file.

        A YAML file holds either a list of records or a mapping with a ``pairs:`` list. Errors name the file and
        the line of the record at fault.
        """
        path = Path(path)
        if not path.is_file():
            raise PromptError(f"No prompt-pair file at {path}. Check the path (relative paths start at the cwd).")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            records, lines = [], []
            # Lines end at "\n" only: JSON strings may hold other line separators (U+2028) that splitlines() splits on.
            for line_no, line in enumerate(text.split("\n"), start=1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as error:
                        raise PromptError(f"{path}:{line_no}: invalid JSON ({error.msg}).") from None
                    lines.append(line_no)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            try:
                data = yaml.safe_load(text)
                root = yaml.compose(text, Loader=yaml.SafeLoader)
            except yaml.YAMLError as error:
                raise PromptError(f"{path}: invalid YAML: {error}") from None
            records = data.get("pairs") if isinstance(data, Mapping) else data
            if not isinstance(records, list):
                raise PromptError(f"{path}: expected a list of pair records (or a mapping with a `pairs:` list).")
            if isinstance(root, yaml.MappingNode):
                root = [value for key, value in root.value if key.value == "pairs"][-1]  # YAML keeps the last
            lines = [item.start_mark.line + 1 for item in root.value]
        else:
            raise PromptError(f"{path}: unknown prompt-pair file type {path.suffix!r}; use .jsonl, .yaml or .yml.")
        return cls.from_records(records, source=str(path), lines=lines)

    def save(self, path: str | Path) -> None:
        """Write the pairs as JSONL (one record per line), the format ``load`` reads, atomically."""
        lines = [json.dumps(record, ensure_ascii=False) for record in self.to_records()]
        atomic_write(path, "\n".join(lines) + "\n")

    def tokenize(self, tokenizer: Any) -> TokenizedPairs:
        """Tokenize and check every pair for ``tokenizer``; raise ``PromptError`` naming the pair at fault."""
        return _tokenize(self, tokenizer)

    def fingerprint(self) -> str:
        """A hash of the pairs' text, answers, positions and spans: what identifies them before any tokenizer
        (and torch) loads, for cache keys of models whose tokenizer is identified by its files."""
        text = json.dumps(self.to_records(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TokenizedPairs:
    """Token ids right-padded to a common length, with everything the metrics and corruptions need.

    Right padding keeps every real token at its own position, and causal attention means padding after
    a prompt's last token cannot change anything that prompt computes.
    """

    pairs: PromptPairs
    clean_ids: torch.Tensor  # [n, seq]
    corrupted_ids: torch.Tensor | None  # [n, seq]; None when no corrupted prompts or lengths differ
    attention_mask: torch.Tensor  # [n, seq], 1 on real tokens
    lengths: torch.Tensor  # [n]
    answer_ids: list[list[int]]
    wrong_ids: list[list[int]]
    corrupt_positions: list[list[int]] | None
    length_mismatch: str | None  # why STR cannot run, when clean/corrupted lengths differ
    named_positions: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [n] token index

    @property
    def n(self) -> int:
        return self.clean_ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.clean_ids.shape[1]

    @property
    def last_positions(self) -> torch.Tensor:
        return self.lengths - 1

    def require_corrupted(self) -> torch.Tensor:
        if self.corrupted_ids is None:
            raise PromptError(
                self.length_mismatch
                or "Symmetric token replacement (corruption='str') needs corrupted prompts, but these pairs "
                "have none. Give `corrupted=` prompts, or use corruption='gn'."
            )
        return self.corrupted_ids

    def require_corrupt_positions(self) -> list[list[int]]:
        if self.corrupt_positions is None:
            raise PromptError(
                "Gaussian-noise corruption needs to know which tokens to corrupt, and these pairs do not say. "
                "Give `corrupt_positions=` (token indices per prompt), a `spans={'corrupt': ...}` character "
                "span, or corrupted prompts whose differing tokens mark the positions."
            )
        return self.corrupt_positions

    def position(self, name: str) -> torch.Tensor:
        """Per-prompt token index of a named position: ``"last"`` or the last token of a named span."""
        if name == "last":
            return self.last_positions
        if name not in self.named_positions:
            valid = ["last", *self.named_positions]
            raise PromptError(f"Unknown position {name!r}; these pairs name {valid}. Add it via `spans=`.")
        return self.named_positions[name]

    def fingerprint(self) -> str:
        """A hash of everything that determines the patching numbers (tokens, answers, positions)."""
        digest = hashlib.sha256()
        for tensor in (self.clean_ids, self.corrupted_ids, self.lengths):
            digest.update(b"-" if tensor is None else tensor.numpy().tobytes())
        digest.update(json.dumps([self.answer_ids, self.wrong_ids, self.corrupt_positions]).encode())
        for name in sorted(self.named_positions):
            digest.update(name.encode() + self.named_positions[name].numpy().tobytes())
        return digest.hexdigest()[:16]


def token_pieces(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """The tokens as the tokenizer stores them (``convert_ids_to_tokens``: GPT-2's ``Ġ`` and SentencePiece's
    ``▁`` space markers kept), which decoding one token at a time can hide."""
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)
    if convert is None:
        return [tokenizer.decode([t]) for t in ids]
    return [str(piece) for piece in convert(list(ids))]


def _answer_token(tokenizer: Any, what: str, i: int, token: AnswerToken) -> int:
    vocab_size = len(tokenizer)
    if isinstance(token, int):
        if not 0 <= token < vocab_size:
            raise PromptError(f"{what}[{i}]: token id {token} is outside the vocabulary (0..{vocab_size - 1}).")
        return token
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise PromptError(
            f"{what}[{i}] = {token!r} is {len(ids)} tokens {token_pieces(tokenizer, ids)} for this tokenizer (as "
            f"it stores them), but the metrics read one token. {_single_token_advice(tokenizer, token)} Or give "
            "the token id (int) you mean."
        )
    return ids[0]


def _single_token_advice(tokenizer: Any, token: str) -> str:
    """How to write a single-token answer for this tokenizer's way of marking a word's leading space."""
    marks_space_itself = token_pieces(tokenizer, tokenizer("a", add_special_tokens=False)["input_ids"])[:1] == ["▁a"]
    if marks_space_itself:
        fix = f" (here {token.lstrip()!r})" if token != token.lstrip() else ""
        return (
            "This is a SentencePiece-style tokenizer that puts the space marker '▁' before a word itself, so a "
            f"leading space in the answer becomes a token of its own: write the answer without one{fix}, e.g. "
            "'Lily' for the piece '▁Lily'."
        )
    if token_pieces(tokenizer, tokenizer(" a", add_special_tokens=False)["input_ids"])[:1] == ["Ġa"]:
        fix = f" (here {' ' + token!r})" if not token.startswith(" ") else ""
        return (
            "This GPT-2-style tokenizer stores a word's leading space in the word's token ('Ġ'): a word that "
            f"follows a space is usually one token with its leading space{fix}, e.g. ' Mary' for 'ĠMary'."
        )
    return "Use an answer that is a single token for this tokenizer."


def _answer_ids(tokenizer: Any, what: str, answers: Sequence[Answer]) -> list[list[int]]:
    out = []
    for i, answer in enumerate(answers):
        tokens = answer if isinstance(answer, list) else [answer]
        ids = [_answer_token(tokenizer, what, i, t) for t in tokens]
        if len(set(ids)) != len(ids):
            raise PromptError(f"{what}[{i}]: the answer set {answer!r} names the same token twice.")
        out.append(ids)
    return out


def _encode(tokenizer: Any, prompts: Sequence[str], with_offsets: bool) -> tuple[list[list[int]], list | None]:
    encoded = tokenizer(list(prompts), return_offsets_mapping=with_offsets)
    return encoded["input_ids"], encoded.get("offset_mapping")


def _span_tokens(offsets: Sequence[tuple[int, int]], span: Span) -> list[int]:
    start, end = span
    return [t for t, (a, b) in enumerate(offsets) if b > a and a < end and b > start]


def _tokenize(pairs: PromptPairs, tokenizer: Any) -> TokenizedPairs:
    import torch  # here, not at import: reading pairs and checking task specs (at pytest collection) needs no torch

    if not getattr(tokenizer, "is_fast", False) and pairs.spans:
        raise PromptError("Named spans need a fast (Rust) tokenizer for character offsets; load one with use_fast=True.")
    clean, offsets = _encode(tokenizer, pairs.clean, with_offsets=bool(pairs.spans))
    n = len(clean)
    lengths = [len(ids) for ids in clean]
    for i, length in enumerate(lengths):
        if length == 0:
            raise PromptError(f"clean[{i}] = {pairs.clean[i]!r} tokenizes to no tokens.")
    seq = max(lengths)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def padded(rows: list[list[int]]) -> torch.Tensor:
        return torch.tensor([row + [pad] * (seq - len(row)) for row in rows], dtype=torch.long)

    corrupted_ids = None
    length_mismatch = None
    corrupted = None
    if pairs.corrupted is not None:
        corrupted, _ = _encode(tokenizer, pairs.corrupted, with_offsets=False)
        bad = [i for i in range(n) if len(corrupted[i]) != lengths[i]]
        if bad:
            i = bad[0]
            length_mismatch = (
                f"{len(bad)} of {n} pairs tokenize to different lengths, so symmetric token replacement "
                f"cannot line them up position by position. First: pair {i}\n"
                f"  clean     ({lengths[i]} tokens): {token_pieces(tokenizer, clean[i])}\n"
                f"  corrupted ({len(corrupted[i])} tokens): {token_pieces(tokenizer, corrupted[i])}\n"
                "Replace tokens by words that are single tokens for this tokenizer, or drop these pairs "
                f"(indices {bad[:20]}{'...' if len(bad) > 20 else ''})."
            )
        else:
            corrupted_ids = padded(corrupted)

    named_positions = {}
    span_tokens: dict[str, list[list[int]]] = {}
    for name, spans in pairs.spans.items():
        per_prompt = []
        for i, span in enumerate(spans):
            tokens = _span_tokens(offsets[i], span)
            if not tokens:
                raise PromptError(f"spans[{name!r}][{i}] = {span} covers no token of clean[{i}] = {pairs.clean[i]!r}.")
            per_prompt.append(tokens)
        span_tokens[name] = per_prompt
        named_positions[name] = torch.tensor([tokens[-1] for tokens in per_prompt], dtype=torch.long)

    if pairs.corrupt_positions is not None:
        corrupt_positions = pairs.corrupt_positions
    elif "corrupt" in span_tokens:
        corrupt_positions = span_tokens["corrupt"]
    elif corrupted is not None and length_mismatch is None:
        corrupt_positions = [[t for t in range(lengths[i]) if clean[i][t] != corrupted[i][t]] for i in range(n)]
        if any(not positions for positions in corrupt_positions):
            corrupt_positions = None
    else:
        corrupt_positions = None
    if corrupt_positions is not None:
        for i, positions in enumerate(corrupt_positions):
            out_of_range = [p for p in positions if not 0 <= p < lengths[i]]
            if out_of_range:
                raise PromptError(
                    f"corrupt_positions[{i}] = {positions} has {out_of_range} outside prompt {i}, which has "
                    f"{lengths[i]} tokens (valid 0..{lengths[i] - 1})."
                )

    answer_ids = _answer_ids(tokenizer, "answer", pairs.answer)
    wrong_ids = _answer_ids(tokenizer, "wrong", pairs.wrong)
    for i, (a, w) in enumerate(zip(answer_ids, wrong_ids)):
        shared = set(a) & set(w)
        if shared:
            raise PromptError(
                f"Pair {i}: answer and wrong answer share tokens {token_pieces(tokenizer, sorted(shared))}, "
                "so they cancel in the logit difference. Make them disjoint."
            )
    lengths_tensor = torch.tensor(lengths, dtype=torch.long)
    attention_mask = (torch.arange(seq)[None, :] < lengths_tensor[:, None]).long()
    return TokenizedPairs(
        pairs=pairs,
        clean_ids=padded(clean),
        corrupted_ids=corrupted_ids,
        attention_mask=attention_mask,
        lengths=lengths_tensor,
        answer_ids=answer_ids,
        wrong_ids=wrong_ids,
        corrupt_positions=corrupt_positions,
        length_mismatch=length_mismatch,
        named_positions=named_positions,
    )

