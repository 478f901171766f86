"""Setup shared by every pytest run from the repository root, of ``tests/`` and of ``hypotheses/``.

Tests and CI never load weights from the Hugging Face hub: models are the bundled organism, tiny random
ones built in the tests, or weights already on the machine, and a claim whose weights are missing skips.
Offline mode makes that hold without a network round trip per model; set HF_HUB_OFFLINE=0 to download.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
