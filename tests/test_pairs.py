"""PromptPairs: every input that would give a silently wrong number is refused with a pointed message."""

from __future__ import annotations

import re

import pytest
import torch

import interp_tests as it
from interp_tests.errors import PromptError
from test_engine import word_tokenizer
from test_llama2c import STORIES, needs_stories

CLEAN = ["When John and Mary went to the store , John gave a drink to"]
CORRUPTED = ["When John and Mary went to the store , Mary gave a drink to"]


def test_str_length_mismatch_names_the_pair_and_shows_both_token_lists():
    pairs = it.PromptPairs(CLEAN * 2, [CORRUPTED[0], "When John and Mary went to the store , Mary gave to"], ["Mary"] * 2, ["John"] * 2)
    tokens = pairs.tokenize(word_tokenizer())
    with pytest.raises(PromptError) as error:
        tokens.require_corrupted()
    message = str(error.value)
    assert "pair 1" in message and "14 tokens" in message and "12 tokens" in message
    assert "'drink'" in message  # the token lists are shown


def test_multi_token_answer_is_refused_unless_given_as_a_token_id():
    tok = word_tokenizer()
    with pytest.raises(PromptError, match=r"answer\[0\] = 'Mary John' is 2 tokens"):
        it.PromptPairs(CLEAN, CORRUPTED, ["Mary John"], ["John"]).tokenize(tok)
    tokens = it.PromptPairs(CLEAN, CORRUPTED, [tok.convert_tokens_to_ids("Mary")], ["John"]).tokenize(tok)
    assert tokens.answer_ids == [[tok.convert_tokens_to_ids("Mary")]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(clean=[], corrupted=[], answer=[], wrong=[]), "at least one prompt"),
        (dict(clean="a prompt", corrupted=None, answer=["Mary"], wrong=["John"]), "must be a list"),
        (dict(clean=CLEAN, corrupted=CORRUPTED, answer=["Mary", "Tom"], wrong=["John"]), "has 2 entries"),
        (dict(clean=CLEAN, corrupted=CORRUPTED, answer=["Mary"], wrong=["Mary"]), "both 'Mary'"),
        (dict(clean=CLEAN, corrupted=CORRUPTED, answer=[None], wrong=["John"]), "is not an answer"),
        (dict(clean=CLEAN, corrupted=CORRUPTED, answer=["Mary"], wrong=["John"], corrupt_positions=[[]]), "non-empty list"),
    ],
)
def test_malformed_pairs_are_refused(kwargs, message):
    with pytest.raises(PromptError, match=message):
        it.PromptPairs(**kwargs)


def test_corrupt_positions_out_of_range():
    with pytest.raises(PromptError, match=r"\[40\] outside prompt 0, which has 14 tokens"):
        it.PromptPairs(CLEAN, CORRUPTED, ["Mary"], ["John"], corrupt_positions=[[40]]).tokenize(word_tokenizer())


def test_corrupt_positions_default_to_the_tokens_str_replaced():
    tokens = it.PromptPairs(CLEAN, CORRUPTED, ["Mary"], ["John"]).tokenize(word_tokenizer())
    assert tokens.corrupt_positions == [[9]]


def test_answer_sets_must_be_disjoint():
    with pytest.raises(PromptError, match="share tokens"):
        it.PromptPairs(CLEAN, CORRUPTED, [["Mary", "Tom"]], [["Tom", "John"]]).tokenize(word_tokenizer())


def test_right_padding_and_attention_mask():
    pairs = it.PromptPairs([CLEAN[0], "When John went to"], None, ["Mary", "the"], ["John", "to"])
    tokens = pairs.tokenize(word_tokenizer())
    assert tokens.lengths.tolist() == [14, 4]
    assert tokens.attention_mask[1].tolist() == [1] * 4 + [0] * 10
    assert tokens.clean_ids[1, 4:].eq(0).all()


def test_subsets_save_and_load(tmp_path):
    pairs = it.PromptPairs(CLEAN * 3, CORRUPTED * 3, ["Mary", ["Mary", "Tom"], 3], ["John"] * 3, spans={"S2": [(41, 45)] * 3})
    assert len(pairs[1:]) == 2 and pairs[[2, 0]].answer == [3, "Mary"]
    for suffix in (".jsonl", ".yaml"):
        path = tmp_path / f"pairs{suffix}"
        if suffix == ".jsonl":
            pairs.save(path)
        else:
            import yaml

            path.write_text(yaml.safe_dump({"pairs": pairs.to_records()}))
        loaded = it.PromptPairs.load(path)
        assert loaded.to_records() == pairs.to_records()


GOOD = '{"clean": "a", "answer": "b", "wrong": "c"}'


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json}", "invalid JSON"),
        ('{"clean": "a", "answer": "b", "wrong": "c", "answr": 1}', "unknown key `answr`. Did you mean 'answer'?"),
        ('{"clean": "a", "answer": "b"}', r"the record lacks required keys \['wrong'\]"),
        ('["a", "b"]', "the record is a list, expected a mapping"),
        ('{"clean": "", "answer": "b", "wrong": "c"}', "`clean` = '' must be a non-empty string"),
        ('{"clean": "a", "answer": 1.5, "wrong": "c"}', "`answer` = 1.5 is not an answer"),
        ('{"clean": "a", "answer": "b", "wrong": "b"}', "answer and wrong answer are both 'b'"),
        ('{"clean": "a", "answer": "b", "wrong": "c", "corrupted": "d"}',
         "this record gives `corrupted`, unlike the first record"),
    ],
)
def test_load_names_the_file_line_of_the_record_at_fault(tmp_path, bad, message):
    """Lines are the file's, 1-based, blank lines counted: the bad record is on line 4 (the third record)."""
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{GOOD}\n\n{GOOD}\n{bad}\n{GOOD}\n")
    with pytest.raises(PromptError, match=f"^{re.escape(str(path))}:4: {message}"):
        it.PromptPairs.load(path)


def test_a_bad_span_names_its_line(tmp_path):
    path, good = tmp_path / "spans.jsonl", '{"clean": "a", "answer": "b", "wrong": "c", "spans": {"S": [0, 1]}}'
    path.write_text(f'{good}\n{good.replace("[0, 1]", "[0, 5]")}\n')
    with pytest.raises(PromptError, match=rf"^{re.escape(str(path))}:2: `spans\['S'\]` = \[0, 5\] is not a \(start, end\) "
                       r"character span inside `clean` \(length 1\)"):
        it.PromptPairs.load(path)


def test_yaml_pairs_errors_name_the_line_of_the_record(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("# pairs\npairs:\n  - {clean: a, answer: b, wrong: c}\n\n  - clean: a\n    answer: [b, 2.5]\n    wrong: c\n")
    with pytest.raises(PromptError, match=f"^{re.escape(str(path))}:5: `answer` = \\['b', 2.5\\] is not an answer"):
        it.PromptPairs.load(path)
    path.write_text("- {clean: a, answer: b, wrong: c}\n- {clean: a, answer: b, wrong: c, extra: 1}\n")
    with pytest.raises(PromptError, match=f"^{re.escape(str(path))}:2: unknown key `extra`"):
        it.PromptPairs.load(path)


def test_pairs_built_in_python_are_named_by_index():
    with pytest.raises(PromptError, match=r"^answer\[1\] = 1.5 is not an answer"):
        it.PromptPairs(["a", "b"], None, ["x", 1.5], ["y", "z"])
    with pytest.raises(PromptError, match=r"^Pair 1: answer and wrong answer are both 'x'"):
        it.PromptPairs(["a", "b"], None, ["x", "x"], ["y", "x"])
    with pytest.raises(PromptError, match=r"^records: record 1: the record lacks required keys"):
        it.PromptPairs.from_records([{"clean": "a", "answer": "b", "wrong": "c"}, {"clean": "a"}])


def test_a_json_string_may_hold_a_unicode_line_separator(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"clean": "a\u2028b", "answer": "b", "wrong": "c"}\n', encoding="utf-8")
    assert it.PromptPairs.load(path).clean == ["a\u2028b"]


def test_dataset_fingerprint_tracks_content():
    tok = word_tokenizer()
    a = it.PromptPairs(CLEAN, CORRUPTED, ["Mary"], ["John"]).tokenize(tok).fingerprint()
    b = it.PromptPairs(CLEAN, CORRUPTED, ["Mary"], ["John"]).tokenize(tok).fingerprint()
    c = it.PromptPairs(CLEAN, CORRUPTED, ["Mary"], ["Tom"]).tokenize(tok).fingerprint()
    assert a == b != c


def test_prompt_longer_than_context_is_refused():
    from test_engine import build

    model = build("gpt2")  # n_positions = 32
    long = " ".join(["the"] * 40)
    with pytest.raises(PromptError, match="more than the model's context of 32"):
        it.patch(model, it.PromptPairs([long], [long], ["Mary"], ["John"]), "mlp", metric="prob")
    assert torch.is_tensor(model.hf.transformer.wte.weight)


def test_a_multi_token_answer_shows_the_pieces_and_gpt2_style_space_advice():
    tok = it.load_model("organism").tokenizer  # byte-level pieces: ' Mary' is 'ĠMary'
    with pytest.raises(PromptError, match=r"answer\[0\] = ' Mary Mary' is 2 tokens \['ĠMary', 'ĠMary'\] .*GPT-2-style "
                       r"tokenizer stores a word's leading space in the word's token \('Ġ'\)"):
        it.PromptPairs(["When Mary and John went to the store, John gave a drink to"], None, [" Mary Mary"],
                       [" John"]).tokenize(tok)


@needs_stories
def test_a_sentencepiece_answer_with_a_leading_space_is_told_to_drop_it():
    from interp_tests.llama2c import convert_llama2c

    _, tok = convert_llama2c(STORIES)
    pairs = it.PromptPairs(["Once upon a time, there was a little girl named Lily. One day,"], None, [" Lily"], ["Tim"])
    with pytest.raises(PromptError, match=r"' Lily' is 2 tokens \['▁', '▁Lily'\] .*SentencePiece-style .*without one "
                       r"\(here 'Lily'\)"):
        pairs.tokenize(tok)
    assert it.PromptPairs(pairs.clean, None, ["Lily"], ["Tim"]).tokenize(tok).answer_ids == [[tok.convert_tokens_to_ids("▁Lily")]]
