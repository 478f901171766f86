"""Time `pytest hypotheses/` cold (an empty result cache) and warm (every result cached), in fresh processes.

A warm run of unchanged claims should cost almost nothing: the plugin finds each cached result by the hash of
the model's files and the pairs' text, so it neither imports torch, transformers or nnsight nor loads a model.
Each run is ``python -m pytest hypotheses/ -q -p no:cacheprovider --interp-cache-dir <fresh dir>`` from the
repository root with one torch thread and HF_HUB_OFFLINE=1; the cold run starts from a new, empty cache
directory, then ``--repeats`` warm runs reuse it. The script checks that every warm run has the cold run's
outcomes (pytest's counts line and every row of the interp claims table: outcome, figure, claim) and that no
warm run imported torch, transformers or nnsight (each run reports ``sys.modules`` through a tiny plugin), and
exits 1 otherwise. Wall-clock seconds include interpreter start-up and collection; on a shared machine the
child's CPU seconds (user + system) are printed too, as they depend far less on what else runs.

    python benchmarks/bench_warm.py [--repeats 5] [--paths hypotheses/]

The last line is ``warm_hypotheses_s=<median warm wall-clock seconds>``.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "nnsight")
# A plugin given with -p: after the session, print which heavy modules this process imported.
REPORTER = '''
import sys


def pytest_unconfigure(config):
    loaded = [name for name in {heavy!r} if name in sys.modules]
    sys.stdout.write("bench_warm_imported=" + ",".join(loaded) + "\\n")
'''
ROW = re.compile(r"^(passed|failed|skipped|xfailed|xpassed|error)\s+\S+\s+(.*)$")


def child_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_pytest(paths: list[str], cache_dir: Path, plugin_dir: Path) -> tuple[float, float, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugin_dir), str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "pytest", *paths, "-q", "-p", "no:cacheprovider", "-p", "bench_warm_reporter",
               "--interp-cache-dir", str(cache_dir)]
    start, cpu = time.perf_counter(), child_cpu_s()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, child_cpu_s() - cpu, done.stdout + done.stderr


def outcomes(output: str) -> tuple[str, list[str]]:
    """pytest's counts (without the duration) and the claims table's rows without the sweep column (cold runs
    compute what warm runs read from the cache)."""
    counts = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", line)]
    last = re.sub(r" in [\d.]+s.*$", "", counts[-1].strip("= ")) if counts else "no counts line"
    rows = [" ".join(m.groups()) for line in output.splitlines() if (m := ROW.match(line))]
    return last, rows


def imported(output: str) -> list[str]:
    found = re.findall(r"^bench_warm_imported=(.*)$", output, re.MULTILINE)
    return found[-1].split(",") if found and found[-1] else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="warm runs (default 5)")
    parser.add_argument("--paths", nargs="+", default=["hypotheses/"], help="what pytest runs (default hypotheses/)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_warm_") as scratch:
        plugin_dir = Path(scratch) / "plugin"
        plugin_dir.mkdir()
        (plugin_dir / "bench_warm_reporter.py").write_text(REPORTER.format(heavy=HEAVY))
        cache_dir = Path(scratch) / "cache"
        cold_s, cold_cpu, cold_output = run_pytest(args.paths, cache_dir, plugin_dir)
        cold = outcomes(cold_output)
        print(f"cold: {cold_s:.2f} s ({cold_cpu:.2f} CPU s), {cold[0]}, imported "
              f"{', '.join(imported(cold_output)) or 'none'}")
        warm_times, warm_cpu, ok = [], [], bool(cold[1])
        if not cold[1]:
            print("the cold run printed no interp claims table:\n" + cold_output[-3000:])
        for repeat in range(args.repeats):
            seconds, cpu, output = run_pytest(args.paths, cache_dir, plugin_dir)
            warm_times.append(seconds)
            warm_cpu.append(cpu)
            heavy = [name for name in imported(output) if name in HEAVY]
            same = outcomes(output) == cold
            print(f"warm {repeat + 1}: {seconds:.2f} s ({cpu:.2f} CPU s), outcomes {'identical' if same else 'DIFFER'}, "
                  f"imported {', '.join(heavy) or 'none of ' + '/'.join(HEAVY)}")
            if not same:
                print(output[-3000:])
            ok = ok and same and not heavy
    print(f"| run | wall s | CPU s |\n|---|---|---|\n| cold | {cold_s:.2f} | {cold_cpu:.2f} |")
    print(f"| warm (median of {len(warm_times)}) | {statistics.median(warm_times):.2f} | {statistics.median(warm_cpu):.2f} |")
    print(f"| warm (min, max) | {min(warm_times):.2f}, {max(warm_times):.2f} | {min(warm_cpu):.2f}, {max(warm_cpu):.2f} |")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    print(f"warm_hypotheses_s={statistics.median(warm_times):.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
