"""progress=True shows a tqdm bar, a callable gets (done, total) after each pass, and long sweeps inside pytest
report progress lines under -v."""

from __future__ import annotations

import textwrap

import pytest

import interp_tests as it
from interp_tests.circuit_patching import completeness, minimality
from interp_tests.errors import SettingsError
from test_engine import PAIRS, build


def _calls() -> tuple[list[tuple[int, int]], object]:
    calls: list[tuple[int, int]] = []
    return calls, lambda done, total: calls.append((done, total))


@pytest.mark.parametrize("name", ["exact", "attribution", "path", "circuit", "completeness", "minimality"])
def test_a_progress_callable_counts_up_to_the_total(name):
    model = build("gpt2")
    calls, report = _calls()
    run = {
        "exact": lambda: it.patch(model, PAIRS, "attn_head", batch_size=4, progress=report),
        "attribution": lambda: it.patch(model, PAIRS, method="attribution", batch_size=2, progress=report),
        "path": lambda: it.path_patch(model, PAIRS, ["2.0"], batch_size=4, progress=report),
        "circuit": lambda: it.circuit_patch(model, PAIRS, ["0.0", "1.1"], batch_size=2, progress=report),
        "completeness": lambda: completeness(model, PAIRS, ["0.0", "1.1"], batch_size=2, progress=report),
        "minimality": lambda: minimality(model, PAIRS, ["0.0", "1.1"], batch_size=2, progress=report),
    }[name]
    run()
    assert len(calls) > 1
    done = [d for d, _ in calls]
    assert done == sorted(done) and all(d <= t for d, t in calls)
    assert calls[-1][0] == calls[-1][1]  # ends complete


def test_progress_true_draws_a_tqdm_bar_and_bad_values_are_refused(capsys):
    model = build("gpt2")
    result = it.patch(model, PAIRS, "mlp", batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "patching mlp" in err and f"{len(PAIRS) * model.n_layers}/{len(PAIRS) * model.n_layers}" in err
    assert result.mean.shape == (model.n_layers,)
    it.circuit_patch(model, PAIRS, ["0.0"], progress=True)
    assert "circuit sufficiency" in capsys.readouterr().err
    with pytest.raises(SettingsError, match="progress='yes': use True"):
        it.patch(model, PAIRS, "mlp", progress="yes")


def test_sweeps_in_pytest_report_progress_under_verbose(pytester, tiny_files):
    pytester.makepyfile(textwrap.dedent(f"""\
        import pytest

        @pytest.mark.interp_model({str(tiny_files / 'model')!r})
        @pytest.mark.interp_task(file={str(tiny_files / 'pairs.jsonl')!r})
        def test_sweep(interp_sweep):
            interp_sweep(component="attn_head")
    """))
    verbose = pytester.runpytest("-v", "--interp-no-cache", "-p", "no:cacheprovider")
    verbose.assert_outcomes(passed=1)
    verbose.stdout.fnmatch_lines(["interp: exact sweep of attn_head (str) on *: */* patched runs"])
    quiet = pytester.runpytest("--interp-no-cache", "-p", "no:cacheprovider")
    quiet.assert_outcomes(passed=1)
    assert "patched runs" not in quiet.stdout.str()
