"""What each method costs a remote model in NDIF requests, and the bytes each way, measured through the in-process
NDIF stand-in (tests/ndif_standin.py) on a 3-layer GPT-2 (4 heads, d_model 64) and 6 IOI prompts.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/remote_requests.py

Prints one line per call: requests, payload bytes sent (the shipped code and inputs, zstd-compressed when nnsight's
CONFIG.API.COMPRESS is on) and result bytes returned (torch.save of the metrics), then the same call's largest
difference from the local run.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

REPO = "local/tiny-gpt2"


def main() -> None:
    import huggingface_hub.constants
    from nnsight.modeling import huggingface
    from nnsight.modeling.transformers import TransformersModel

    import interp_tests as it
    from interp_tests.attribution import verify_top
    from interp_tests.testing import ioi_pairs, orient_answers, tiny_gpt2
    from ndif_standin import NdifStandIn
    from test_remote import save_in_hub_cache

    warnings.simplefilter("ignore")
    cache = Path(tempfile.mkdtemp())
    hf_model, tokenizer = tiny_gpt2(3, 4, 64)
    snapshot = save_in_hub_cache(hf_model, tokenizer, REPO, cache)
    huggingface_hub.constants.HF_HUB_CACHE = str(cache)
    huggingface._ID_CACHE[REPO] = REPO
    served = TransformersModel(REPO, task="text-generation", dispatch=True)
    server = NdifStandIn(served, served.to_model_key())
    remote, local = it.load_model(REPO, remote=server), it.load_model(snapshot)
    pairs = orient_answers(hf_model, tokenizer, ioi_pairs(6))
    estimate = it.patch(local, pairs, "attn_head", method="attribution")
    calls = {
        "patch attn_head (exact, 72 patched runs)": lambda m: it.patch(m, pairs, "attn_head").effects["logit_diff"],
        "patch resid, positions='each'": lambda m: it.patch(m, pairs, "resid", positions="each").effects["logit_diff"],
        "patch attn_head, method='attribution'": lambda m: it.patch(m, pairs, "attn_head", method="attribution").effects["logit_diff"],
        "verify_top(k=3)": lambda m: verify_top(m, pairs, estimate, k=3).exact,
        "path_patch(receivers=['2.1.q'])": lambda m: it.path_patch(m, pairs, ["2.1.q"]).effects["logit_diff"],
        "circuit_patch (3 nodes, sufficiency)": lambda m: np.array([it.circuit_patch(m, pairs, ["0.1", "1.2", "2.3"]).score]),
    }
    print(f"{'call':<44} {'requests':>8} {'sent B':>9} {'returned B':>10} {'max |remote - local|':>21}")
    for name, call in calls.items():
        before = len(server.requests)
        remote_value = call(remote)
        made = server.requests[before:]
        difference = float(np.nanmax(np.abs(np.asarray(remote_value) - np.asarray(call(local)))))
        sent = sum(r.payload_bytes for r in made)
        returned = sum(r.result_bytes or 0 for r in made)
        print(f"{name:<44} {len(made):>8} {sent:>9} {returned:>10} {difference:>21.3g}")


if __name__ == "__main__":
    main()
