"""What the local NDIF server of ``tests/ndif_server.py`` costs: cold start (per step), resident memory of the
whole stack, remote-trace latency, and stop time.

The stack serves ``tiny_models`` (``local/tiny-gpt2`` and ``local/tiny-llama``, the ndif tests' models). After the
start, the resident memory of every process of the stack together (``LocalNDIF.pids``, shared pages counted once
per process), then ``--traces`` remote traces of ``local/tiny-gpt2`` (one prompt, saving the first block's output
and the logits): their median and maximum wall time, then the time ``stop()`` takes to end every process. Last
line ``ndif_cold_start_s=<seconds from start to a served model>``.

    INTERP_NDIF_VENV=.venv-ndif HF_HUB_OFFLINE=1 python benchmarks/bench_ndif_server.py [--traces 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ndif_server import LocalNDIF, alive, rss_bytes, tiny_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        models = tiny_models(Path(folder))
        began = time.monotonic()
        server = LocalNDIF(models)
        with server:
            cold_start = time.monotonic() - began
            pids = server.pids()
            print(f"stack: {len(pids)} processes, {rss_bytes(pids) / 1e9:.2f} GB resident")
            for step, seconds in server.timings.items():
                print(f"  start step {step:<10} {seconds:6.1f} s")
            with server.client():
                model = server.model("local/tiny-gpt2")
                times = []
                for _ in range(args.traces):
                    began_trace = time.monotonic()
                    with model.trace("When Mary and John went to the store", remote=True):
                        model.transformer.h[0].output.save()
                        model.output.logits.save()
                    times.append(time.monotonic() - began_trace)
            print(f"remote trace: median {statistics.median(times):.2f} s, max {max(times):.2f} s ({args.traces} traces)")
            began_stop = time.monotonic()
        print(f"stop: {time.monotonic() - began_stop:.1f} s, processes left: {sum(alive(pid) for pid in pids)}")
    print(f"ndif_cold_start_s={cold_start:.1f}")


if __name__ == "__main__":
    main()
