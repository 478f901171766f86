"""The task generators: seeded, corruptions as documented, spans on the right text, and tokenizer checks."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import yaml
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from interp_tests.errors import PromptError
from interp_tests.organism import MODEL_DIR
from interp_tests.organism.vocab import build_tokenizer, pre_tokenizer
from interp_tests.pairs import PromptPairs
from interp_tests.tasks import TASKS, arithmetic, docstring, factual, from_file, greater_than, induction, ioi, load_facts
from interp_tests.tasks.arithmetic import OPERANDS
from interp_tests.tasks.arithmetic import TEMPLATES as ARITHMETIC_TEMPLATES
from interp_tests.tasks.checks import check_alignment
from interp_tests.tasks.ioi import TEMPLATES
from interp_tests.tasks.words import NAMES, WORDS, partition

GENERATORS = {
    "ioi_S2": lambda seed, **kw: ioi(24, seed=seed, corrupt="S2", **kw),
    "ioi_S1_IO": lambda seed, **kw: ioi(24, seed=seed, corrupt="S1_IO", **kw),
    "ioi_ABC": lambda seed, **kw: ioi(24, seed=seed, corrupt="ABC", **kw),
    "greater_than": lambda seed, **kw: greater_than(24, seed=seed, **kw),
    "factual": lambda seed, **kw: factual(24, seed=seed, **kw),
    "docstring": lambda seed, **kw: docstring(24, seed=seed, **kw),
    "induction": lambda seed, **kw: induction(24, seed=seed, **kw),
    "arithmetic": lambda seed, **kw: arithmetic(24, seed=seed, **kw),
    "arithmetic_A": lambda seed, **kw: arithmetic(24, seed=seed, corrupt="A", **kw),
}


def text(pairs: PromptPairs, span: str, i: int) -> str:
    start, end = pairs.spans[span][i]
    return pairs.clean[i][start:end]


def differing_words(a: str, b: str) -> list[int]:
    wa, wb = a.split(" "), b.split(" ")
    assert len(wa) == len(wb)
    return [k for k, (x, y) in enumerate(zip(wa, wb)) if x != y]


def word_at(prompt: str, char: int) -> int:
    return prompt[:char].count(" ")


def all_task_texts() -> list[str]:
    """Every prompt and answer the generators can produce, for training test tokenizers."""
    texts = []
    for corrupt in ("S2", "S1_IO", "ABC"):
        texts += ioi(300, corrupt=corrupt, split="all").clean
    tasks = (greater_than(300, split="all"), factual(), docstring(300, split="all"), induction(300), arithmetic(300, split="all"))
    for pairs in tasks:
        texts += pairs.clean + (pairs.corrupted or [])
    texts += [" " + w for w in NAMES + WORDS] + [f"{v:02d}" for v in range(100)] + [f" {v}" for v in range(10, 100)]
    texts += [f.answer for f in load_facts()]
    return texts


def byte_level_bpe(vocab_size: int) -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE trained here on the tasks' own text (digits split in pairs, as GPT-2 years)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizer()
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    tokenizer.train_from_iterator(all_task_texts() * 3, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="module")
def organism_tokenizer() -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def bpe_tokenizer() -> PreTrainedTokenizerFast:
    return byte_level_bpe(4000)


# --- determinism ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GENERATORS)
def test_same_seed_same_pairs_and_different_seed_different_pairs(name: str) -> None:
    make = GENERATORS[name]
    assert make(3).to_records() == make(3).to_records()
    assert make(3).to_records() != make(4).to_records()


# --- IOI -------------------------------------------------------------------------------------------------


def test_ioi_s2_corruption_replaces_exactly_s2_by_io() -> None:
    pairs = ioi(64, corrupt="S2")
    for i in range(len(pairs)):
        io, s1, s2 = text(pairs, "IO", i), text(pairs, "S1", i), text(pairs, "S2", i)
        assert s1 == s2 != io
        assert pairs.answer[i] == " " + io and pairs.wrong[i] == " " + s1
        start, end = pairs.spans["S2"][i]
        assert pairs.corrupted[i] == pairs.clean[i][:start] + io + pairs.clean[i][end:]
        assert pairs.spans["corrupt"][i] == pairs.spans["S2"][i]
        assert text(pairs, "end", i) == "to" and pairs.clean[i].endswith(" to")


def test_ioi_s1_io_corruption_renames_s1_and_io_and_keeps_s2() -> None:
    pairs = ioi(64, corrupt="S1_IO")
    assert "corrupt" not in pairs.spans  # two separate names: noise positions come from the differing tokens
    for i in range(len(pairs)):
        clean, corrupted = pairs.clean[i], pairs.corrupted[i]
        io_word = word_at(clean, pairs.spans["IO"][i][0])
        s1_word = word_at(clean, pairs.spans["S1"][i][0])
        assert sorted(differing_words(clean, corrupted)) == sorted([io_word, s1_word])
        new_io = corrupted.split(" ")[io_word]
        new_s1 = corrupted.split(" ")[s1_word]
        assert len({new_io, new_s1, text(pairs, "IO", i), text(pairs, "S1", i)}) == 4
        assert pairs.wrong[i] == " " + new_io and pairs.answer[i] == " " + text(pairs, "IO", i)


def test_ioi_abc_corruption_renames_all_three() -> None:
    pairs = ioi(64, corrupt="ABC")
    for i in range(len(pairs)):
        clean, corrupted = pairs.clean[i], pairs.corrupted[i]
        positions = [word_at(clean, pairs.spans[name][i][0]) for name in ("IO", "S1", "S2")]
        assert sorted(differing_words(clean, corrupted)) == sorted(positions)
        new_names = {corrupted.split(" ")[p].rstrip(",.") for p in positions}
        assert len(new_names) == 3 and not new_names & {text(pairs, "IO", i), text(pairs, "S1", i)}
        assert pairs.answer[i] == " " + text(pairs, "IO", i) and pairs.wrong[i] == " " + text(pairs, "S1", i)


def test_ioi_unknown_corruption_lists_the_valid_ones() -> None:
    with pytest.raises(PromptError, match=r"unknown corruption 'S3'.*'S2'.*'S1_IO'.*'ABC'"):
        ioi(4, corrupt="S3")


def test_ioi_splits_hold_out_names_and_templates() -> None:
    test_names, train_names = set(partition(NAMES, "test")), set(partition(NAMES, "train"))
    assert test_names and train_names and not test_names & train_names
    assert not set(partition(TEMPLATES, "test", test_every=4)) & set(partition(TEMPLATES, "train", test_every=4))
    for split, names in (("test", test_names), ("train", train_names)):
        pairs = ioi(64, split=split)
        used = {text(pairs, span, i) for span in ("IO", "S1") for i in range(len(pairs))}
        assert used <= names
    with pytest.raises(PromptError, match="Unknown split"):
        ioi(4, split="validation")


# --- greater-than --------------------------------------------------------------------------------------


def test_greater_than_corrupts_yy_to_01_with_disjoint_answer_sets() -> None:
    pairs = greater_than(64)
    for i in range(len(pairs)):
        yy = text(pairs, "YY", i)
        start, end = pairs.spans["YY"][i]
        assert pairs.corrupted[i] == pairs.clean[i][:start] + "01" + pairs.clean[i][end:]
        assert pairs.spans["corrupt"][i] == pairs.spans["YY"][i]
        assert 2 <= int(yy) <= 98
        assert pairs.answer[i] == [f"{v:02d}" for v in range(int(yy) + 1, 100)]
        assert pairs.wrong[i] == [f"{v:02d}" for v in range(int(yy))]
        assert re.fullmatch(r"The \w+ lasted from the year \d{4} to the year \d\d", pairs.clean[i])
        assert pairs.clean[i].endswith(" " + text(pairs, "end", i))


# --- factual -------------------------------------------------------------------------------------------


def test_factual_pairs_share_a_template_and_are_used_both_ways() -> None:
    pairs = factual()
    facts = {f.prompt: f for f in load_facts()}
    assert sorted(pairs.clean) == sorted(pairs.corrupted)  # each prompt clean once and corrupted once
    assert len(set(pairs.clean)) == len(pairs)
    directed = set(zip(pairs.clean, pairs.corrupted))
    for i, (clean, corrupted) in enumerate(zip(pairs.clean, pairs.corrupted)):
        a, b = facts[clean], facts[corrupted]
        assert (corrupted, clean) in directed
        assert a.template == b.template and len(a.subject.split()) == len(b.subject.split())
        assert pairs.answer[i] == a.answer != pairs.wrong[i] == b.answer
        assert text(pairs, "subject", i) == a.subject and pairs.spans["corrupt"][i] == pairs.spans["subject"][i]


def test_factual_n_and_user_fact_files(tmp_path: Path) -> None:
    assert len(factual(10)) == 10
    with pytest.raises(PromptError, match="form only"):
        factual(10_000)
    records = [
        {"prompt": "The Eiffel Tower is in", "subject": "Eiffel Tower", "answer": " Paris"},
        {"prompt": "The Colosseum Arena is in", "subject": "Colosseum Arena", "answer": " Rome"},
    ]
    (tmp_path / "facts.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    (tmp_path / "facts.yaml").write_text(yaml.safe_dump({"facts": records}))
    for name in ("facts.jsonl", "facts.yaml"):
        pairs = factual(path=tmp_path / name)
        assert len(pairs) == 2 and set(pairs.answer) == {" Paris", " Rome"}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump([{"prompt": "A is in", "subject": "B", "answer": " C"}]))
    with pytest.raises(PromptError, match="must occur once"):
        factual(path=tmp_path / "bad.yaml")


# --- docstring and induction -----------------------------------------------------------------------------


def test_docstring_corruption_replaces_c_def_in_the_def_line() -> None:
    pairs = docstring(64)
    for i in range(len(pairs)):
        c_def = text(pairs, "C_def", i)
        start, end = pairs.spans["C_def"][i]
        replacement = pairs.wrong[i].strip()
        assert pairs.answer[i] == " " + c_def and replacement != c_def and replacement in WORDS
        assert pairs.corrupted[i] == pairs.clean[i][:start] + replacement + pairs.clean[i][end:]
        def_line, *doc_lines = pairs.clean[i].split("\n")
        assert c_def in def_line and not any(c_def in line for line in doc_lines)
        params = re.search(r"\(self, (.*)\):", def_line).group(1).split(", ")
        assert re.findall(r":param (\w+):", pairs.clean[i]) == params[:2] and params[2] == c_def
        assert text(pairs, "end", i) == ":param" and pairs.clean[i].endswith("    :param")


def test_induction_corrupts_the_answers_first_occurrence() -> None:
    pairs = induction(64, length=8)
    for i in range(len(pairs)):
        words = pairs.clean[i].split()
        assert pairs.clean[i].startswith(" ") and len(set(words[:8])) == 8
        assert words[8:] == words[: len(words) - 8]
        assert pairs.answer[i] == " " + words[len(words) - 8] == " " + text(pairs, "corrupt", i)
        start, end = pairs.spans["corrupt"][i]
        assert pairs.corrupted[i] == pairs.clean[i][:start] + pairs.wrong[i].strip() + pairs.clean[i][end:]
        assert text(pairs, "end", i) == words[-1]


# --- arithmetic ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("corrupt", ["A", "B"])
def test_arithmetic_answers_are_sums_and_str_replaces_one_operand(corrupt: str) -> None:
    pairs = arithmetic(64, corrupt=corrupt)
    for i in range(len(pairs)):
        a, b = int(text(pairs, "A", i)), int(text(pairs, "B", i))
        assert a in OPERANDS and b in OPERANDS and pairs.answer[i] == f" {a + b}"
        assert pairs.spans["corrupt"][i] == pairs.spans[corrupt][i]
        start, end = pairs.spans[corrupt][i]
        replaced = pairs.corrupted[i][start:end]
        assert pairs.corrupted[i] == pairs.clean[i][:start] + replaced + pairs.clean[i][end:]
        kept = b if corrupt == "A" else a
        assert int(replaced) != int(text(pairs, corrupt, i)) and pairs.wrong[i] == f" {kept + int(replaced)}"
        assert pairs.wrong[i] != pairs.answer[i]


def test_arithmetic_splits_hold_out_templates_and_refuse_unknown_operands() -> None:
    def templates(split: str) -> set[str]:
        prompts = arithmetic(200, split=split).clean
        return {t for t in ARITHMETIC_TEMPLATES if any(re.fullmatch(re.escape(t).replace(r"\{A\}", r"\d+").replace(r"\{B\}", r"\d+"), p) for p in prompts)}

    held_out = {ARITHMETIC_TEMPLATES[4], ARITHMETIC_TEMPLATES[9]}
    assert templates("test") == held_out and templates("train") == set(ARITHMETIC_TEMPLATES) - held_out
    with pytest.raises(PromptError, match=r"unknown corruption 'C'.*\['A', 'B'\]"):
        arithmetic(4, corrupt="C")


# --- tokenizers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["organism_tokenizer", "bpe_tokenizer"])
@pytest.mark.parametrize("name", GENERATORS)
def test_pairs_align_and_answers_are_single_tokens(name: str, which: str, request: pytest.FixtureRequest) -> None:
    tokenizer = request.getfixturevalue(which)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the trained BPE may drop a rare item; this test is about what remains
        pairs = GENERATORS[name](0, tokenizer=tokenizer)
    tokenized = pairs.tokenize(tokenizer)
    assert tokenized.corrupted_ids is not None and tokenized.corrupt_positions
    assert all(len(ids) == 1 for ids in tokenized.answer_ids if not isinstance(pairs.answer[0], list))
    for span, positions in tokenized.named_positions.items():
        for i, position in enumerate(positions.tolist()):
            token = tokenizer.decode([tokenized.clean_ids[i, position].item()])
            assert token.strip() and token.strip() in text(pairs, span, i)


def test_organism_tokenizer_on_the_key_tokens(organism_tokenizer: PreTrainedTokenizerFast) -> None:
    pairs = ioi(16, corrupt="S2", tokenizer=organism_tokenizer)
    tokenized = pairs.tokenize(organism_tokenizer)
    for i in range(16):
        io = tokenized.named_positions["IO"][i].item()
        s2 = tokenized.named_positions["S2"][i].item()
        assert tokenized.clean_ids[i, io].item() == tokenized.answer_ids[i][0]
        assert tokenized.corrupted_ids[i, s2].item() == tokenized.answer_ids[i][0]
        assert tokenized.corrupt_positions[i] == [s2]
    years = organism_tokenizer.tokenize(" 1745 to the year 17")
    assert years[:2] == ["Ġ17", "45"] and years[-1] == "Ġ17"


def test_abc_noise_positions_are_the_three_renamed_names(organism_tokenizer: PreTrainedTokenizerFast) -> None:
    tokenized = ioi(16, corrupt="ABC", tokenizer=organism_tokenizer).tokenize(organism_tokenizer)
    for i in range(16):
        expected = sorted(tokenized.named_positions[s][i].item() for s in ("IO", "S1", "S2"))
        assert tokenized.corrupt_positions[i] == expected


def test_missing_names_are_dropped_with_a_warning_naming_them() -> None:
    missing = partition(NAMES, "test")[:3]
    texts = [t for t in all_task_texts() if not any(name in t for name in missing)] + [" " + n for n in NAMES]
    vocab_texts = [t for t in texts if t.strip() not in missing]
    tokenizer = build_tokenizer(vocab_texts, 128)
    with pytest.warns(UserWarning, match="dropped 3 names") as record:
        pairs = ioi(32, tokenizer=tokenizer)
    assert all(name in str(record[0].message) for name in missing)
    assert not any(name in prompt for name in missing for prompt in pairs.clean)


def test_multi_token_vocabulary_raises_naming_the_items() -> None:
    tiny = byte_level_bpe(300)
    with pytest.raises(PromptError, match=r"names are single tokens.*Not single tokens: \[.*'Mary'"):
        ioi(8, split="all", tokenizer=tiny)
    with pytest.raises(PromptError, match=r"words are single tokens.*Not single tokens"):
        docstring(8, tokenizer=tiny)


def test_unequal_token_lengths_are_refused(bpe_tokenizer: PreTrainedTokenizerFast) -> None:
    pairs = PromptPairs(["When Mary and John went"], ["When Mary and Johnathan went"], [" Mary"], [" John"])
    with pytest.raises(PromptError, match="different lengths"):
        check_alignment("ioi", pairs, bpe_tokenizer)


# --- user files and the registry ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".yaml"])
def test_from_file_reads_jsonl_and_yaml(tmp_path: Path, suffix: str) -> None:
    records = [
        {"clean": "When Mary and John went, John gave it to", "corrupted": "When Mary and John went, Mary gave it to",
         "answer": " Mary", "wrong": " John", "spans": {"S2": [25, 29]}},
        {"clean": "The war lasted from 1745 to 17", "corrupted": "The war lasted from 1701 to 17",
         "answer": ["46", "47"], "wrong": ["44", "43"]},
    ]  # fmt: skip
    path = tmp_path / f"pairs{suffix}"
    if suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in records))
    else:
        path.write_text(yaml.safe_dump({"pairs": records}))
    with pytest.raises(PromptError, match=r"pairs\.(jsonl|yaml):\d+: no span 'S2', which other records give: span 'S2' must be given for every record"):
        from_file(path)
    records[1]["spans"] = {"S2": [4, 7]}
    path.write_text("\n".join(json.dumps(r) for r in records) if suffix == ".jsonl" else yaml.safe_dump(records))
    pairs = from_file(path)
    assert pairs.clean[0] == records[0]["clean"] and pairs.answer[1] == ["46", "47"]
    assert TASKS["file"](path).to_records() == pairs.to_records()


def test_registry_builds_tasks_from_claim_settings() -> None:
    assert set(TASKS) == {"ioi", "greater_than", "factual", "docstring", "induction", "arithmetic", "file"}
    settings = {"name": "ioi", "n": 8, "seed": 0, "corrupt": "ABC"}
    pairs = TASKS[settings.pop("name")](**settings)
    assert pairs.to_records() == ioi(8, seed=0, corrupt="ABC").to_records()
    with pytest.raises(PromptError, match="positive integer"):
        TASKS["induction"](0)
