"""The interp-tests command line on a tiny random GPT-2 saved to disk and a pairs file (no organism needed)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_reports import planted_result

from interp_tests.cli import CLAIM_MARKER, ProgressBar, claim_yaml, main, sweep_claim, task_spec
from interp_tests.testing import ioi_pairs, orient_answers, save_model, tiny_gpt2

N_PROMPTS = 8
N_LAYERS, N_HEADS = 3, 4
SWEEP_KEYS = {"component", "corruption", "metric", "positions", "window", "direction", "noise_scale", "seed", "method", "grad_drop"}
EXPECT_KEYS = {"detected", "not_detected", "negative", "sign", "sd", "top_k", "peak"}


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A saved tiny GPT-2 and IOI pairs oriented so its clean-minus-corrupted logit differences are positive."""
    model, tokenizer = tiny_gpt2(N_LAYERS, N_HEADS)
    directory = tmp_path_factory.mktemp("tiny")
    pairs = directory / "pairs.jsonl"
    orient_answers(model, tokenizer, ioi_pairs(N_PROMPTS)).save(pairs)
    return save_model(model, tokenizer, directory / "model"), pairs


@pytest.fixture(scope="module")
def model_dir(tiny_files: tuple[Path, Path]) -> Path:
    return tiny_files[0]


@pytest.fixture(scope="module")
def pairs_file(tiny_files: tuple[Path, Path]) -> Path:
    return tiny_files[1]


@pytest.fixture(scope="module")
def sweep_run(model_dir: Path, pairs_file: Path) -> dict:
    """One `interp-tests sweep` with heatmap, JSON and progress bar; the tests below read its output."""
    out, err = io.StringIO(), io.StringIO()
    png, report = model_dir.parent / "out" / "map.png", model_dir.parent / "out" / "sweep.json"
    argv = ["sweep", "--model", str(model_dir), "--task", str(pairs_file), "--component", "attn_head",
            "--corruption", "str", "--metric", "logit_diff", "--heatmap", str(png), "--json", str(report), "--progress"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return {"status": status, "out": out.getvalue(), "err": err.getvalue(), "png": png, "json": report}


def claim_document(stdout: str) -> dict:
    assert CLAIM_MARKER in stdout
    return yaml.safe_load(stdout.split(CLAIM_MARKER, 1)[1].split("\nwrote ", 1)[0])


def check_schema(document: dict) -> None:
    assert set(document) == {"model", "task", "claims"}
    assert document["claims"], "a claims file needs at least one claim"
    for claim in document["claims"]:
        assert set(claim) == {"name", "sweep", "expect"} and isinstance(claim["name"], str)
        assert {"component", "corruption", "metric"} <= set(claim["sweep"]) <= SWEEP_KEYS
        assert set(claim["expect"]) <= EXPECT_KEYS and "sd" in claim["expect"]


def test_sweep_prints_evaluation_table_and_detections(sweep_run: dict) -> None:
    assert sweep_run["status"] == 0, sweep_run["err"]
    out = sweep_run["out"]
    assert "top-1 accuracy" in out and "clean logit diff" in out
    assert "rank  component" in out and len([line for line in out.splitlines() if "@" not in line]) > 10
    report = json.loads(sweep_run["json"].read_text())
    positive = report["detected"]["positive"]
    assert positive, "the seeded tiny model has a head at |z| >= 2"
    assert f"  positive: {', '.join(positive)}" in out


def test_sweep_claim_is_valid_yaml_with_the_detected_labels(sweep_run: dict, model_dir: Path, pairs_file: Path) -> None:
    document = claim_document(sweep_run["out"])
    check_schema(document)
    assert document["model"] == str(model_dir)
    assert document["task"] == {"file": pairs_file.as_posix()}
    report = json.loads(sweep_run["json"].read_text())
    first = document["claims"][0]
    assert first["sweep"] == {"component": "attn_head", "corruption": "str", "metric": "logit_diff"}
    assert first["expect"] == {"detected": report["detected"]["positive"], "sd": 2}


def test_sweep_writes_heatmap_json_and_progress(sweep_run: dict) -> None:
    assert sweep_run["png"].read_bytes()[:4] == b"\x89PNG"
    assert json.loads(sweep_run["json"].read_text())["shape"] == [N_LAYERS, N_HEADS]
    total = N_LAYERS * N_HEADS * N_PROMPTS
    assert f"] {total}/{total} patched runs\n" in sweep_run["err"]


def test_sweep_claim_passes_the_claims_file_checker(sweep_run: dict, tmp_path: Path) -> None:
    from interp_tests.plugin.yaml_claims import parse_claims

    text = sweep_run["out"].split(CLAIM_MARKER, 1)[1].split("\nwrote ", 1)[0]
    claims, problems = parse_claims(text, tmp_path / "test_found.yaml")
    assert problems == []
    report = json.loads(sweep_run["json"].read_text())
    assert claims[0].expect.detected == report["detected"]["positive"]


def test_claim_lists_negative_components_in_a_second_claim() -> None:
    result = planted_result("attn_head", "each")
    spec = task_spec("ioi", 64, 0, ["corrupt=S2"])
    text = claim_yaml(sweep_claim("organism", spec, result, sd=2.0))
    assert "&id" not in text
    document = yaml.safe_load(text)
    check_schema(document)
    assert document["task"] == {"name": "ioi", "n": 64, "seed": 0, "corrupt": "S2"}
    positive, negative = document["claims"]
    assert positive["expect"] == {"detected": result.detected(2, "positive"), "sd": 2}
    assert negative["expect"] == {"negative": result.detected(2, "negative"), "sd": 2}
    assert positive["sweep"] == negative["sweep"] == {
        "component": "attn_head", "corruption": "str", "metric": "prob", "positions": "each"}


def test_claim_without_detections_says_nothing_stands_out() -> None:
    result = planted_result(strength=0.0)
    result.effects["prob"][...] = np.arange(result.effects["prob"][0].size).reshape(result.effects["prob"][0].shape)
    document = yaml.safe_load(claim_yaml(sweep_claim("organism", task_spec("ioi", 8, 1, []), result, sd=2.0)))
    check_schema(document)
    (claim,) = document["claims"]
    assert claim["expect"] == {"not_detected": [label for label, _ in result.top(3, sign="both")], "sign": "both", "sd": 2}


def test_claim_below_an_unreachable_threshold_ranks_instead_of_a_not_detected_that_cannot_fail() -> None:
    from interp_tests.plugin.yaml_claims import parse_claims

    result = planted_result("mlp", strength=0.0)  # 12 layers: the largest possible z is sqrt(11) = 3.32 < 4
    text = claim_yaml(sweep_claim("organism", task_spec("ioi", 8, 1, []), result, sd=4.0))
    assert parse_claims(text, Path("test_found.yaml"))[1] == []
    (claim,) = yaml.safe_load(text)["claims"]
    first = result.top(1)[0][0]
    assert claim["name"].startswith(f"{first} has the largest effect") and claim["expect"] == {"top_k": {"labels": [first], "k": 1}}


def test_evaluate_on_a_generated_task(model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    status = main(["evaluate", "--model", str(model_dir), "--task", "ioi", "--n", "4", "--seed", "1",
                   "--variant", "corrupt=S2"])
    out = capsys.readouterr().out
    assert status == 0
    assert "task ioi (n=4, seed=1, corrupt=S2)" in out
    assert "prompts              4" in out and "top-1 accuracy" in out


def test_evaluate_takes_the_first_n_pairs_of_a_file(model_dir: Path, pairs_file: Path, capsys) -> None:
    assert main(["evaluate", "--model", str(model_dir), "--task", str(pairs_file), "--n", "3"]) == 0
    assert "(first 3)" in capsys.readouterr().out
    assert main(["evaluate", "--model", str(model_dir), "--task", str(pairs_file), "--n", "99"]) == 2
    assert f"holds {N_PROMPTS} prompt pairs, fewer than n=99" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--task", "ioj"], "Unknown task 'ioj'. Did you mean 'ioi'?"),
    (["--task", "ioi", "--metric", "probb"], "invalid choice: 'probb'"),
    (["--task", "ioi", "--variant", "corupt=S2"], "Task 'ioi' has no option 'corupt'. Did you mean 'corrupt'?"),
    (["--task", "ioi", "--n", "0"], "argument --n: 0 must be positive"),
    (["--task", "ioi", "--sd", "two"], "argument --sd: 'two' is not a number"),
    (["--task", "ioi", "--variant", "S2"], "write KEY=VALUE"),
    (["--task", "pairs.jsonl", "--seed", "3"], "the pairs file pairs.jsonl is read as it is"),
    (["--task", "missing.jsonl"], "No prompt-pair file at missing.jsonl"),
])
def test_bad_input_exits_2_with_a_clear_message(model_dir: Path, capsys, argv: list[str], message: str) -> None:
    status = main(["sweep", "--model", str(model_dir), *argv])
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and "Traceback" not in err


def test_unwritable_report_path_exits_1_without_traceback(model_dir: Path, pairs_file: Path, capsys) -> None:
    blocked = pairs_file  # a file, so nothing can be written beneath it
    status = main(["sweep", "--model", str(model_dir), "--task", str(pairs_file), "--json", str(blocked / "r.json")])
    err = capsys.readouterr().err
    assert status == 1
    assert "interp-tests: error:" in err and "Traceback" not in err


def test_help_lists_the_options(capsys: pytest.CaptureFixture) -> None:
    assert main(["sweep", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(option in out for option in ("--component", "--variant KEY=VALUE", "--heatmap PNG", "--progress"))


def test_sweep_claim_names_the_paths_as_given(model_dir: Path, pairs_file: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(model_dir.parent)
    assert main(["sweep", "--model", model_dir.name, "--task", pairs_file.name, "--component", "mlp"]) == 0
    document = claim_document(capsys.readouterr().out)
    assert document["model"] == model_dir.name and document["task"] == {"file": pairs_file.name}


def test_options_are_not_matched_by_prefix(capsys: pytest.CaptureFixture) -> None:
    # '--corrupt S2' (meant as the task's corrupt option) would otherwise be read as --corruption.
    assert main(["sweep", "--model", "organism", "--task", "ioi", "--corrupt", "S2"]) == 2
    assert "unrecognized arguments: --corrupt S2" in capsys.readouterr().err
    assert main(["evaluate", "--model", "organism", "--task", "ioi", "--nois", "1"]) == 2
    assert "unrecognized arguments: --nois" in capsys.readouterr().err


def test_help_shows_examples(capsys: pytest.CaptureFixture) -> None:
    for argv, example in ((["--help"], "python -m interp_tests"), (["sweep", "--help"], "interp-tests sweep --model organism"),
                          (["evaluate", "--help"], "interp-tests evaluate --model organism")):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "examples:" in out and example in out


def test_python_dash_m_interp_tests_runs_the_command_line() -> None:
    done = subprocess.run([sys.executable, "-m", "interp_tests", "evaluate", "--model", "organism", "--task", "ioj"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("interp-tests: error: Unknown task 'ioj'")


def test_missing_model_exits_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", "--model", "./no-such-model", "--task", "ioi"]) == 2
    assert "No model at no-such-model" in capsys.readouterr().err


def test_module_entry_point_reports_errors_without_traceback() -> None:
    done = subprocess.run([sys.executable, "-m", "interp_tests.cli", "sweep", "--model", "organism", "--task", "ioj"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("interp-tests: error: Unknown task 'ioj'") and "Traceback" not in done.stderr


def test_progress_bar_redraws_one_line_and_ends_it() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, width=10)
    for done in (4, 8, 10):
        bar(done, 10)
    assert stream.getvalue() == "\r[####......] 4/10 patched runs\r[########..] 8/10 patched runs\r[##########] 10/10 patched runs\n"


def test_attribution_sweep_prints_an_estimate_and_a_claim_that_asks_for_one(model_dir: Path, pairs_file: Path) -> None:
    from interp_tests.plugin.yaml_claims import parse_claims

    out = io.StringIO()
    argv = ["sweep", "--model", str(model_dir), "--task", str(pairs_file), "--method", "attribution", "--grad-drop"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0
    stdout = out.getvalue()
    assert "method=attribution, grad_drop=True" in stdout
    document = claim_document(stdout)
    check_schema(document)
    assert all(claim["sweep"]["method"] == "attribution" and claim["sweep"]["grad_drop"] for claim in document["claims"])
    claims, problems = parse_claims(stdout.split(CLAIM_MARKER, 1)[1], model_dir.parent / "test_found.yaml")
    assert problems == [] and claims[0].sweep["method"] == "attribution"


def test_discover_prints_the_edges_the_curve_and_a_claim_that_passes(
    model_dir: Path, pairs_file: Path, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    import interp_tests as it

    status = main(["discover", "--model", str(model_dir), "--task", str(pairs_file), "--method", "eap", "--top", "5",
                   "--curve", str(tmp_path / "curve.png")])
    out = capsys.readouterr().out
    assert status == 0
    model, pairs = it.load_model(model_dir), it.PromptPairs.load(pairs_file)
    scores = it.edge_attribution(model, pairs, "eap")
    assert f"eap edge scores (logit_diff, {len(pairs)} prompts, {len(scores.labels)} edges):" in out
    assert f"     1 {scores.top(1)[0]:<22} {scores.score(scores.top(1)[0]):+.4f}" in out
    assert "faithfulness curve: CPR=" in out and (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    document = yaml.safe_load(out.split(CLAIM_MARKER, 1)[1].split("\nwrote ", 1)[0])
    claim = document["claims"][0]
    assert claim["edges"] == {"method": "eap", "metric": "logit_diff", "corruption": "str"}
    assert claim["expect"]["contains"] == {"edges": scores.top(5), "top": 5}
    file = tmp_path / "hypotheses" / "claims.yaml"
    file.parent.mkdir()
    file.write_text(yaml.safe_dump(document))
    from interp_tests.plugin.yaml_claims import parse_claims

    claims, problems = parse_claims(file.read_text(), file)
    assert not problems and claims[0].edges == claim["edges"]
