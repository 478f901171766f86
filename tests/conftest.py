"""Shared test setup: offline, test modules importable by name (they share model builders), pytester,
and a tiny saved model for the plugin tests.
"""

import os
import sys
from pathlib import Path

import hypothesis  # noqa: F401  (imported here once: pytester's in-process runs would otherwise re-import it, 2 s each)
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
# Tiny models on a shared CPU: a second torch thread only spin-waits (a tiny sweep took 2.5 s instead of 0.02 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ["pytester"]


def pytest_configure(config: pytest.Config) -> None:
    # Most tests patch random models on purpose, which are at chance on every task: the warning that says so
    # (tested in test_reliability.py) would otherwise bury the warnings that matter.
    config.addinivalue_line("filterwarnings", "ignore:The model's clean accuracy:interp_tests.errors.InterpWarning")


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``model/`` (a tiny random GPT-2, saved) and ``pairs.jsonl`` (16 oriented IOI pairs)."""
    from interp_tests.testing import ioi_pairs, orient_answers, save_model, tiny_gpt2

    folder = tmp_path_factory.mktemp("tiny")
    model, tokenizer = tiny_gpt2()
    save_model(model, tokenizer, folder / "model")
    orient_answers(model, tokenizer, ioi_pairs(16)).save(folder / "pairs.jsonl")
    return folder


@pytest.fixture(scope="session")
def tiny_sweep(tiny_files: Path):
    """The default sweep (attention heads, STR, logit difference) of ``tiny_files``: the truth claims are judged by."""
    from interp_tests import PromptPairs, load_model, patch

    return patch(load_model(tiny_files / "model"), PromptPairs.load(tiny_files / "pairs.jsonl"))
