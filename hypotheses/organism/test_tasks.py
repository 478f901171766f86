"""The organism solves its tasks on held-out prompts (as in the model card's table, seed 1, but n = 128 rather than
256; top-1 = the argmax is in the answer set). Arithmetic is learned on its training templates only, written as a strict xfail with the
measured number so that a retrained organism that generalises shows up."""

import pytest

import interp_tests as it
from interp_tests.organism.corpus import PEOPLE_FACTS

pytestmark = pytest.mark.interp_model("organism")

HELD_OUT = {
    "ioi, S2": lambda: it.tasks.ioi(128, seed=1, corrupt="S2"),  # 1.000
    "greater_than": lambda: it.tasks.greater_than(128, seed=1),  # 1.000
    "docstring": lambda: it.tasks.docstring(128, seed=1),  # 0.977
    "induction": lambda: it.tasks.induction(128, seed=1),  # 1.000
    "factual": lambda: it.tasks.factual(seed=1),  # 1.000
    "factual, people": lambda: it.tasks.factual(seed=1, path=PEOPLE_FACTS),  # 1.000
}


@pytest.mark.parametrize("task", HELD_OUT)
def test_the_organism_solves_the_task_on_held_out_prompts(interp_evaluate, task):
    """The paper's settings (section 2.2: factual recall, IOI; appendices D and E: docstring, greater-than), and induction."""
    evaluation = interp_evaluate(pairs=HELD_OUT[task](), corruption=None)
    assert evaluation.accuracy >= 0.95, evaluation


@pytest.mark.xfail(strict=True, reason="measured top-1 0.125 on the 2 held-out templates (0.836 on the training templates)")
def test_the_organism_adds_on_held_out_templates(interp_evaluate):
    """Basic arithmetic, the paper's fifth setting (appendix C; Stolfo et al. 2023)."""
    evaluation = interp_evaluate(pairs=it.tasks.arithmetic(128, seed=1), corruption=None)
    assert evaluation.accuracy >= 0.95, evaluation
