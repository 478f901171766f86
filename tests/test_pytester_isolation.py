"""Each in-process pytester run imports the interp_tests submodules it needs anew, as a fresh process would: a
submodule an earlier run imported (then dropped from ``sys.modules`` by pytester) is not taken from the package's
stale attribute (conftest's ``pytester``). Otherwise a second run that computes mixes two copies of nnsight."""

from __future__ import annotations

import interp_tests

PROBE_TEST = """
import interp_tests


def test_the_submodule_is_this_runs():
    interp_tests.__path__.append({extra!r})
    try:
        from interp_tests import pytester_probe  # as the plugin does: from .. import patching
    finally:
        interp_tests.__path__.remove({extra!r})
    assert pytester_probe.RUN == {run}
"""


def test_a_submodule_an_earlier_in_process_run_imported_is_imported_anew(pytester):
    extra = pytester.path / "extra"
    extra.mkdir()
    for run in (1, 2):
        (extra / "pytester_probe.py").write_text(f"RUN = {run}\n")
        pytester.makepyfile(test_probe=PROBE_TEST.format(extra=str(extra), run=run))
        pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert not hasattr(interp_tests, "pytester_probe")
