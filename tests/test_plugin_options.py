"""Plugin registration: a torch-free import, options from the command line over ini, markers, and the
fixtures that Python claims use."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from interp_tests.plugin.fixtures import session_of

HEAVY = ("torch", "transformers", "nnsight")


def test_loading_the_plugin_imports_no_torch(pytester):
    modules = ", ".join(f"interp_tests.{m}" for m in ("plugin", "plugin.fixtures", "plugin.yaml_claims", "plugin.baselines", "plugin.cache", "claims"))
    code = f"import sys, {modules}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
    pytester.makepyfile(
        test_light=f"import sys\n\ndef test_light(request):\n    assert request.config.pluginmanager.has_plugin('interp_tests.fixtures')\n"
        f"    assert not [m for m in {HEAVY!r} if m in sys.modules]\n"
    )
    # Checking the names in a claim (task, its options, metric, component kind, labels) at collection loads no torch.
    pytester.makefile(".yaml", test_claims="model: m\ntask: {name: ioi, n: 4, corupt: S2}\nclaims:\n  - {name: c, "
                      "sweep: {metric: logit_dif, component: mlps}, expect: {detectd: ['0.1'], detected: ['mlp.x']}}\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2)  # the file's task, and the claim
    result.stdout.fnmatch_lines_random(["*Task 'ioi' has no option 'corupt'*", "*'logit_dif' is not a metric*",
                                        "*'mlps' is not a component kind*", "*'mlp.x' is not a component label*"])


def test_help_lists_the_options_and_the_markers_are_registered(pytester):
    pytester.runpytest("--help").stdout.fnmatch_lines(
        [
            "interp-tests (activation-patching claims):",
            "  --interp-model=MODEL*",
            "  --interp-device={cpu,cuda,auto}*",
            "  --interp-n-prompts=N*",
            "  --interp-seed=SEED*",
            "  --interp-report-dir=DIR*",
            "  --interp-cache*",
            "  --interp-no-cache*",
            "  --interp-cache-dir=DIR*",
            "  --interp-update-baselines*",
            "  --interp-remote*NDIF*",
            "*interp_yaml_patterns (linelist):*",
        ]
    )
    pytester.runpytest("--markers").stdout.fnmatch_lines(["@pytest.mark.interp_model(name): *", "@pytest.mark.interp_task(name, *"])


def test_the_command_line_wins_over_ini(pytester):
    pytester.makeini(
        "[pytest]\ninterp_n_prompts = 5\ninterp_seed = 7\ninterp_device = cpu\ninterp_cache = false\n"
        "interp_cache_dir = cache\ninterp_model = organism\n"
    )
    ini = session_of(pytester.parseconfigure()).options
    assert (ini.n_prompts, ini.seed, ini.device, ini.cache, ini.model) == (5, 7, "cpu", False, "organism")
    assert ini.cache_dir == pytester.path / "cache" and ini.report_dir is None and not ini.update_baselines
    cli = session_of(pytester.parseconfigure("--interp-n-prompts=3", "--interp-cache", "--interp-model=other")).options
    assert (cli.n_prompts, cli.seed, cli.cache, cli.model) == (3, 7, True, "other")
    (pytester.path / "sub" / "model").mkdir(parents=True)
    local = session_of(pytester.parseconfigure("--interp-model=sub/model")).options
    assert local.model == str(pytester.path / "sub" / "model")
    default = session_of(pytester.parseconfigure("-c", "/dev/null", "--rootdir", str(pytester.path))).options
    assert (default.cache, default.device, default.cache_dir) == (True, "auto", pytester.path / ".interp_cache")


@pytest.mark.parametrize(
    ("ini", "message"),
    [("interp_device = tpu", "interp_device = 'tpu': use one of cpu, cuda, auto."), ("interp_n_prompts = 0", "interp_n_prompts = 0 must be at least 1.")],
)
def test_a_bad_ini_value_is_a_usage_error(pytester, ini, message):
    pytester.makeini(f"[pytest]\n{ini}\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}"])


PYTHON_CLAIMS = """
import pytest

pytestmark = [pytest.mark.interp_model("model"), pytest.mark.interp_task(file="pairs.jsonl")]


def test_true_claim(interp_sweep):
    interp_sweep().assert_detected({top!r}, sd={sd})


def test_false_claim(interp_sweep):
    result = interp_sweep(metric="logit_diff")
    result.assert_detected({bottom!r})


def test_fixtures_honour_the_markers_and_overrides(interp_model, interp_pairs):
    model = interp_model()
    assert model is interp_model("model")
    assert len(interp_pairs()) == {n}


@pytest.mark.interp_task("ioi", n=8, corrupt="S2")
def test_a_registered_task_uses_the_model_tokenizer(interp_pairs, interp_sweep):
    pairs = interp_pairs(seed=3)
    assert "S2" in pairs.spans
    assert interp_sweep(pairs=pairs).n_prompts == {n_ioi}


def test_an_unavailable_model_skips(interp_model):
    interp_model("openai-community/gpt2")
"""


def python_claims(pytester: pytest.Pytester, tiny_files: Path, tiny_sweep, n: int = 16, n_ioi: int = 8) -> None:
    (pytester.path / "model").symlink_to(tiny_files / "model")
    (pytester.path / "pairs.jsonl").symlink_to(tiny_files / "pairs.jsonl")
    top, bottom = tiny_sweep.top(1)[0][0], tiny_sweep.top(1, sign="negative")[0][0]
    sd = round(tiny_sweep.zscore(top) - 0.01, 4)
    pytester.makepyfile(test_claims=PYTHON_CLAIMS.format(top=top, bottom=bottom, sd=sd, n=n, n_ioi=n_ioi))


def test_python_claims_through_the_fixtures(pytester, tiny_files, tiny_sweep):
    python_claims(pytester, tiny_files, tiny_sweep)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=3, failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "    def test_false_claim(interp_sweep):",
            "        result = interp_sweep(metric=\"logit_diff\")",
            ">       result.assert_detected(*)",
            "E       interp_tests.claims.ClaimError: Claim failed: * is not detected (needs z >= 2.00, sign=positive).",
            "E         *: effect *, z *, rank 12 of 12",
            "test_claims.py:*: ClaimError",
            "*= interp claims =*",
            "passed   computed * test_claims.py::test_true_claim",
            "failed   reused * test_claims.py::test_false_claim",
            "passed   -  * test_claims.py::test_fixtures_honour_the_markers_and_overrides",
            "passed   computed * test_claims.py::test_a_registered_task_uses_the_model_tokenizer",
            "skipped  -  * The weights of 'openai-community/gpt2' are * test_claims.py::test_an_unavailable_model_skips",
        ]
    )


def test_overrides_from_the_command_line(pytester, tiny_files, tiny_sweep):
    python_claims(pytester, tiny_files, tiny_sweep, n=4, n_ioi=4)
    (pytester.path / "model").rename(pytester.path / "elsewhere")
    result = pytester.runpytest("--interp-model", "elsewhere", "--interp-n-prompts=4", "-k", "markers or registered")
    result.assert_outcomes(passed=2)


def test_remote_execution_of_a_local_model_directory_is_refused_with_the_reason(pytester, tiny_files):
    pytester.makefile(
        ".yaml", test_claims=f"model: {tiny_files / 'model'}\ntask: {{file: {tiny_files / 'pairs.jsonl'}}}\nclaims:\n"
        "  - {name: remote, expect: {detected: ['0.1']}}\n"
    )
    result = pytester.runpytest("--interp-remote")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["test_claims.yaml:1: remote=True runs a model that an NDIF server holds, named by its Hugging Face repo id *is "
         "not one. Load local models and directories without remote=True."]
    )


def test_reports_are_written_for_each_sweep(pytester, tiny_files):
    pytester.makefile(
        ".yaml", test_claims=f"model: {tiny_files / 'model'}\ntask: {{file: {tiny_files / 'pairs.jsonl'}}}\nclaims:\n"
        "  - {name: mlps, sweep: {component: mlp}, expect: {not_detected: ['mlp.0'], sd: 50}}\n"
    )
    result = pytester.runpytest("--interp-report-dir", "reports")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["reports: * files in */reports"])
    assert (pytester.path / "reports" / "test_claims.mlps.json").is_file()


def test_an_interp_task_marker_without_a_task_says_how_to_write_it(pytester):
    pytester.makepyfile(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.interp_task(n=3)
            def test_it(interp_pairs):
                interp_pairs()
            """
        )
    )
    pytester.runpytest().stdout.fnmatch_lines(["E   *the interp_task marker takes a task name or file=, e.g.*"])
