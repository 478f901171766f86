"""Circuit claims about a real pretrained model: stories260K (llama2.c, Llama architecture with grouped-query
attention, trained on TinyStories) recalls a character's name ("...a little girl named Lily. One day," ->
"Lily"). Measured with the calls below on 16 pairs (8 templates x Lily/Tim swapped); skipped where the
shared weights are absent (they are never copied into the repository). Every result goes through the
interp-tests fixtures, so an unchanged run reads it from the result cache without loading the model."""

from pathlib import Path

import pytest

import interp_tests as it

STORIES = Path(__file__).resolve().parents[3] / "shared" / "models" / "stories260K" / "stories260K.bin"
pytestmark = pytest.mark.skipif(not STORIES.is_file(), reason=f"stories260K is not at {STORIES} (see shared/models/README.md)")

TEMPLATES = [
    "Once upon a time, there was a little girl named {X}. One day,",
    "Once upon a time, there was a little boy named {X}. One day,",
    "Once upon a time, there was a little dog named {X}. One day,",
    "Once upon a time, there was a kind girl named {X}. She liked to play. One day,",
    "Once upon a time, there was a happy boy named {X}. He had a big ball. One day,",
    "One day, a little girl named {X} went to the park. She saw a bird.",
    "Once upon a time, there was a girl named {X}. She had a red ball. Every day,",
    "There was a little boy named {X}. He loved to run. One day,",
]


@pytest.fixture(scope="module")
def pairs():
    """The two single-token names of its 512-piece vocabulary, swapped (written without a leading space:
    SentencePiece marks the word boundary itself)."""
    rows = [(t.format(X=a), t.format(X=b), a, b) for t in TEMPLATES for a, b in (("Lily", "Tim"), ("Tim", "Lily"))]
    clean, corrupted, answer, wrong = map(list, zip(*rows))
    return it.PromptPairs(clean=clean, corrupted=corrupted, answer=answer, wrong=wrong)


def test_head_2_6_is_the_name_recall_head(interp_sweep, pairs):
    result = interp_sweep(STORIES, pairs, "attn_head")
    result.assert_detected("2.6")  # z 5.83; next 4.0 (1.90), 4.4 (0.60)
    assert result.detected() == ["2.6"]


@pytest.mark.parametrize(("test", "at_least"), [("sufficiency", 0.9), ("necessity", 0.9), ("faithfulness", 0.85)])
def test_three_heads_restore_and_carry_name_recall(interp_circuit, pairs, test, at_least):
    result = interp_circuit(["2.6", "4.0", "4.4"], STORIES, pairs, test=test)
    result.assert_score(at_least=at_least)  # measured 0.967, 0.967 and 0.891


def test_name_recall_edges_run_through_head_2_6s_values(interp_edges, pairs):
    """Edge level (EAP-IG, 1701 edges; key and value receivers are KV heads: 2.3.v is read by query heads 2.6
    and 2.7): the name reaches 2.6's value input from the embeddings and mlp.0, and 2.6 writes to the logits."""
    scores = interp_edges(STORIES, pairs, method="eap_ig", steps=5)
    scores.assert_in_top("embed->2.3.v", "mlp.0->2.3.v", "2.6->logits", k=4)  # ranks 1, 3, 4
    curve = interp_edges.faithfulness(scores, STORIES, pairs)
    curve.assert_faithful(at_fraction=0.02, at_least=0.8)  # 34 edges: 0.875
    curve.assert_cmd(at_most=0.05)  # measured 0.014
