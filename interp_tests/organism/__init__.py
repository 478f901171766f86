"""The organism: a small GPT-2 trained here on the package's own tasks, so that claims, examples and tests
can patch a real model offline in seconds. ``python -m interp_tests.organism.train`` rebuilds it
deterministically; ``MODEL_CARD.md`` says what it can do.
"""

from __future__ import annotations

from pathlib import Path

MODEL_DIR = Path(__file__).parent / "model"
