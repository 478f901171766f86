"""The shipped organism: small, loadable offline, and good enough at every task that patching it means
something (clean and corrupted prompts clearly separated)."""

from __future__ import annotations

import os
from collections import Counter

import pytest
import torch
from transformers import AutoTokenizer, GPT2LMHeadModel

from interp_tests.organism import MODEL_DIR
from interp_tests.organism import train as organism
from interp_tests.organism.corpus import PEOPLE, PEOPLE_FACTS, people_facts_yaml
from interp_tests.tasks import load_facts

N = 64


@pytest.fixture(scope="module")
def metrics() -> dict[str, dict[str, float]]:
    os.environ["HF_HUB_OFFLINE"] = "1"
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    model = GPT2LMHeadModel.from_pretrained(MODEL_DIR).eval()
    return {name.split()[-1].strip("()").removeprefix("corrupt="): m for name, m in organism.measure(model, tokenizer, N)}


def test_model_directory_is_small_and_self_contained() -> None:
    files = {path.name: path.stat().st_size for path in MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    assert sum(files.values()) <= 10 * 2**20


def test_tokenizer_keeps_names_years_and_newlines_whole() -> None:
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    assert tokenizer.tokenize(" Mary") == ["ĠMary"]
    assert tokenizer.tokenize(" 1745") == ["Ġ17", "45"]
    assert tokenizer.tokenize("):\n    :param") == ["):", "ĊĠĠĠ", "Ġ:", "param"]
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id) == (0, 1)


def test_ioi_is_solved_on_held_out_names_and_templates(metrics: dict) -> None:
    for variant in ("S2", "S1_IO", "ABC"):
        assert metrics[variant]["clean_top1"] >= 0.95
        assert metrics[variant]["clean_ld"] >= 3
    assert metrics["S2"]["corrupted_ld"] < -2  # S2 -> IO flips the answer to S
    assert metrics["S1_IO"]["corrupted_ld"] < -2  # the corrupted IO is the new answer
    assert abs(metrics["ABC"]["corrupted_ld"]) < 1.5  # no information about IO vs S


def test_greater_than_puts_its_mass_on_later_years(metrics: dict) -> None:
    m = metrics["greater_than"]
    assert m["clean_prob"] >= 0.8 and m["corrupted_prob"] < m["clean_prob"] - 0.2
    assert m["corrupted_ld"] < m["clean_ld"]


def test_factual_recall_induction_and_docstring(metrics: dict) -> None:
    assert metrics["factual"]["clean_top1"] >= 0.95 and metrics["factual"]["corrupted_ld"] < -2
    assert metrics["induction"]["clean_top1"] >= 0.9 and metrics["induction"]["corrupted_ld"] < -2
    assert metrics["docstring"]["clean_top1"] >= 0.9
    assert metrics["docstring"]["corrupted_ld"] < metrics["docstring"]["clean_ld"] - 2


def test_the_people_fact_file_is_the_one_training_uses_and_needs_both_names() -> None:
    assert PEOPLE_FACTS.read_text(encoding="utf-8") == people_facts_yaml()
    facts = load_facts(PEOPLE_FACTS)
    firsts = Counter(f.subject.split()[0] for f in facts)
    lasts = Counter(f.subject.split()[1] for f in facts)
    assert len({f.subject for f in facts}) == len(facts) == PEOPLE
    # neither name alone tells the city: every surname belongs to several people, and all but 4 first names do
    assert min(lasts.values()) >= 5 and sum(count == 1 for count in firsts.values()) == 4


def test_training_is_bit_identical_for_a_seed() -> None:
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        (tokenizer, rows), (tokenizer_again, rows_again) = organism.prepare(3, 0.01), organism.prepare(3, 0.01)
        assert tokenizer.get_vocab() == tokenizer_again.get_vocab() and rows == rows_again
        first, second = (organism.fit(tokenizer, rows, seed=3, steps=3) for _ in range(2))
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
