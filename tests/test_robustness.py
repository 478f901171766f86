"""interp_tests.robustness on a tiny random GPT-2: the grid, its reports, and the paper's cautions."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import interp_tests as it
from interp_tests import patching, robustness, stats, tasks
from interp_tests.corruptions import gaussian_noise
from interp_tests.errors import ComponentError, SettingsError
from interp_tests.testing import ioi_pairs, orient_answers, tiny_gpt2

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model() -> it.PatchableModel:
    hf, tokenizer = tiny_gpt2()
    return it.load_model(hf, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def pairs(model) -> it.PromptPairs:
    return orient_answers(model.hf, model.tokenizer, ioi_pairs(6, seed=1))


def counting_sweeps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the corruption of every ``patch`` call (each call is one sweep)."""
    calls = []
    original = patching.patch

    def counting(*args, **kwargs):
        calls.append(args[3])
        return original(*args, **kwargs)

    monkeypatch.setattr(patching, "patch", counting)
    return calls


@pytest.fixture(scope="module")
def head_grid_and_sweeps(model, pairs) -> tuple[robustness.Grid, list[str]]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        sweeps = counting_sweeps(monkeypatch)
        return robustness.grid(model, pairs, "attn_head", corruptions=("str", "gn"), metrics=("logit_diff", "prob", "kl"), sd=1.5), sweeps


@pytest.fixture(scope="module")
def head_grid(head_grid_and_sweeps) -> robustness.Grid:
    return head_grid_and_sweeps[0]


@pytest.fixture(scope="module")
def invalid_grid(model, pairs) -> robustness.Grid:
    """Clean == corrupted: under STR the logit-difference denominator is 0; GN still corrupts token 9 (S2)."""
    same = it.PromptPairs(pairs.clean, pairs.clean, pairs.answer, pairs.wrong, corrupt_positions=[[9]] * len(pairs))
    return robustness.grid(model, same, "mlp")


def test_grid_reads_every_metric_from_one_sweep_per_corruption(model, pairs, head_grid_and_sweeps):
    result, sweeps = head_grid_and_sweeps
    assert sweeps == ["str", "gn"]
    assert list(result.settings) == [(c, None, m) for c in ("str", "gn") for m in ("logit_diff", "prob", "kl")]
    assert not result.invalid and len(result.results) == 6
    direct = patching.patch(model, pairs, "attn_head", "gn", "kl")
    for metric in ("logit_diff", "prob", "kl"):
        np.testing.assert_allclose(result.results[("gn", None, metric)].mean, direct.with_metric(metric).mean, atol=1e-6)
        assert result.results[("gn", None, metric)].metric == metric


def test_grid_regenerates_task_pairs_per_corrupted_token_choice(model, monkeypatch):
    sweeps = counting_sweeps(monkeypatch)
    spec = {"name": "ioi", "n": 4, "seed": 3}
    by_spec = robustness.grid(model, spec, "mlp", corruptions=("str",), metrics=("prob", "kl"), corrupt_tokens=["S2", "ABC"])
    assert sweeps == ["str", "str"]
    assert list(by_spec.settings) == [("str", c, m) for c in ("S2", "ABC") for m in ("prob", "kl")]
    expected = {
        choice: tasks.ioi(4, seed=3, corrupt=choice, tokenizer=model.tokenizer).tokenize(model.tokenizer).fingerprint()
        for choice in ("S2", "ABC")
    }
    for choice, fingerprint in expected.items():
        assert by_spec.results[("str", choice, "prob")].settings["dataset"] == fingerprint

    swept = []  # a callable source: check which pairs reach patch(), without sweeping again

    def record(model, tokens, *args, **kwargs):
        swept.append(tokens.fingerprint())
        return by_spec.results[("str", "S2", "prob")]

    monkeypatch.setattr(patching, "patch", record)
    robustness.grid(
        model, lambda corrupt: tasks.ioi(4, seed=3, corrupt=corrupt, tokenizer=model.tokenizer), "mlp",
        corruptions=("str",), metrics=("prob", "kl"), corrupt_tokens=["S2", "ABC"],
    )
    assert swept == [expected["S2"], expected["ABC"]]


@pytest.mark.parametrize(
    ("source", "kwargs", "match"),
    [
        ("pairs", {"corrupt_tokens": ["S2"]}, "task spec"),
        ({"name": "ioi", "n": 4, "corrupt": "S2"}, {"corrupt_tokens": ["ABC"]}, "give one of them"),
        ({"name": "iio", "n": 4}, {}, "Did you mean 'ioi'"),
        ({"name": "greater_than", "n": 4}, {"corrupt_tokens": ["S2"]}, "no corrupt= variants"),
        ("pairs", {"metric": "prob"}, "metrics="),
        ("pairs", {"metrics": ("prob", "prob")}, "repeats"),
        ("pairs", {"corruptions": ()}, "empty"),
        (42, {}, "pairs_or_task is a int"),
    ],
)
def test_grid_rejects_contradictory_settings(model, pairs, source, kwargs, match):
    with pytest.raises(SettingsError, match=match):
        robustness.grid(model, pairs if source == "pairs" else source, "mlp", **kwargs)


def test_settings_without_a_logit_difference_gap_are_recorded_as_invalid(invalid_grid, tmp_path):
    result = invalid_grid
    assert set(result.invalid) == {("str", None, "logit_diff")}
    assert "does not separate" in result.invalid[("str", None, "logit_diff")]
    assert {("str", None, "prob"), ("str", None, "kl"), ("gn", None, "logit_diff")} <= set(result.results)
    assert "invalid: The normalised logit difference divides by" in result.table()
    assert "STR / logit_diff  invalid" in result.component_table("mlp.0")
    assert not result.robust("mlp.0", sd=-100.0)  # detected wherever valid, but never where invalid
    assert result.robust("mlp.0", at_least=5, sd=-100.0)
    csv_path, json_path = result.save(tmp_path)
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5 * 3 and all(r["metric"] != "logit_diff" or r["corruption"] == "gn" for r in rows)
    entry = json.loads(json_path.read_text())["settings"][0]
    assert entry["valid"] is False and "does not separate" in entry["reason"]


def test_table_lists_each_settings_negative_and_positive_detections(head_grid):
    table = head_grid.table()
    lines = table.splitlines()
    assert lines[0] == "attn_head detections at 1.5 SD"
    assert lines[1].split() == ["corruption", "corrupt", "metric", "negative", "positive"]
    for line, (setting, result) in zip(lines[2:], head_grid.results.items()):
        expected_negative = ", ".join(result.detected(1.5, "negative")) or "-"
        expected_positive = ", ".join(result.detected(1.5, "positive")) or "-"
        assert line.startswith(f"{setting.corruption.upper():<10}  -        {setting.metric:<10}  {expected_negative}")
        assert line.rstrip().endswith(expected_positive)
    assert str(head_grid) == table
    assert "at 3 SD" in head_grid.table(sd=3.0)


def test_component_table_robust_and_detected_in(head_grid):
    counts = {}
    for result in head_grid.results.values():
        for label in result.detected(1.5):
            counts[label] = counts.get(label, 0) + 1
    label = max(counts, key=counts.get)
    detected_in = head_grid.detected_in(label)
    assert len(detected_in) == counts[label]
    assert head_grid.robust(label, at_least=counts[label]) and not head_grid.robust(label, at_least=counts[label] + 1)
    assert head_grid.robust(label) == (counts[label] == 6)
    assert head_grid.robust_components(at_least=counts[label])[0] in {k for k, v in counts.items() if v == counts[label]}
    text = head_grid.component_table(label)
    for setting, result in head_grid.results.items():
        row = next(line for line in text.splitlines() if line.strip().startswith(str(setting) + " "))
        assert f"{result[label]:.4f}" in row and f"{result.zscore(label):.2f}" in row
        assert ("positive" in row) == (setting in detected_in)
    with pytest.raises(ComponentError, match="not a component"):
        head_grid.component_table("9.9")
    with pytest.raises(SettingsError, match="1..6"):
        head_grid.robust(label, at_least=7)


def test_save_writes_csv_and_json_atomically(head_grid, tmp_path):
    csv_path, json_path = head_grid.save(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["grid.csv", "grid.json"]  # no temp files left
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 * 12
    assert list(rows[0]) == ["corruption", "corrupt_tokens", "metric", "label", "effect", "z", "detected_positive", "detected_negative"]
    for row in rows:
        result = head_grid.results[(row["corruption"], None, row["metric"])]
        assert float(row["effect"]) == result[row["label"]]
        assert float(row["z"]) == pytest.approx(result.zscore(row["label"]))
        assert (row["detected_positive"] == "True") == (row["label"] in result.detected(1.5, "positive"))
        assert (row["detected_negative"] == "True") == (row["label"] in result.detected(1.5, "negative"))
    document = json.loads(json_path.read_text())
    assert document["component"] == "attn_head" and document["sd"] == 1.5 and len(document["settings"]) == 6
    entry = document["settings"][3]
    result = head_grid.results[("gn", None, "logit_diff")]
    assert (entry["corruption"], entry["metric"], entry["valid"]) == ("gn", "logit_diff", True)
    assert entry["shape"] == [3, 4] and entry["labels"] == result.labels
    np.testing.assert_allclose(entry["effect"], result.mean.reshape(-1))
    assert entry["detected_positive"] == result.detected(1.5) and entry["patch_settings"]["corruption"] == "gn"


@pytest.mark.parametrize("which", ["heads", "layers with an invalid setting"])
def test_figure_writes_a_png(head_grid, invalid_grid, which, tmp_path):
    grid = head_grid if which == "heads" else invalid_grid
    path = grid.figure(tmp_path / "grid.png")
    assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]


# ----------------------------------------------------------------------------------- the paper's cautions
def test_probability_blind_spot_warning_only_for_absence_claims_under_prob():
    text = stats.probability_blind_spot_warning("prob", "not_negative", corrupted_prob=0.0012)
    assert "cannot see negative components" in text and "(here 0.0012)" in text and "logit_diff" in text
    assert "is not involved" in stats.probability_blind_spot_warning("prob", "not_detected")
    assert stats.probability_blind_spot_warning("logit_diff", "not_negative") is None
    assert stats.probability_blind_spot_warning("prob", "detected") is None
    with pytest.raises(SettingsError, match="not_negative"):
        stats.probability_blind_spot_warning("prob", "not_negativ")
    with pytest.raises(SettingsError):
        stats.probability_blind_spot_warning("probability", "detected")


def residual_norms(model, tokens, embed_delta=None):
    """Norms of the residual stream entering each layer, from Hugging Face's hidden states: [layers, n, seq]."""
    with torch.no_grad():
        embeddings = model.hf.transformer.wte(tokens.clean_ids)
        if embed_delta is not None:
            embeddings = embeddings + embed_delta
        out = model.hf(inputs_embeds=embeddings, attention_mask=tokens.attention_mask, output_hidden_states=True)
    return torch.stack(out.hidden_states[: model.n_layers]).norm(dim=-1).double().numpy()


def test_off_distribution_matches_hidden_states_and_flags_large_noise(model, pairs):
    tokens = pairs.tokenize(model.tokenizer)
    report = robustness.off_distribution(model, pairs, seed=2, noise_scale=3.0, batch_size=4)
    clean = residual_norms(model, tokens)
    corrupted = residual_norms(model, tokens, gaussian_noise(model, tokens, seed=2, scale=3.0))
    real, marked = tokens.attention_mask.bool().numpy(), np.zeros_like(tokens.attention_mask.numpy(), dtype=bool)
    for i, rows in enumerate(tokens.corrupt_positions):
        marked[i, rows] = True
    for layer in range(model.n_layers):
        assert report.clean_mean[layer] == pytest.approx(clean[layer][real].mean(), rel=1e-5)
        assert report.clean_sd[layer] == pytest.approx(clean[layer][real].std(), rel=1e-4)
        assert report.corrupted_mean[layer] == pytest.approx(corrupted[layer][marked].mean(), rel=1e-5)
        assert report.ratio[layer] == pytest.approx(corrupted[layer][marked].mean() / clean[layer][marked].mean(), rel=1e-5)
    np.testing.assert_allclose(report.z, (report.corrupted_mean - report.clean_mean) / report.clean_sd)

    huge = robustness.off_distribution(model, pairs, noise_scale=30.0)
    small = robustness.off_distribution(model, pairs, noise_scale=0.1)
    replaced = robustness.off_distribution(model, pairs, corruption="str")
    assert huge.max_z > 10 * small.max_z
    # Layer 0's input is the noised embedding itself: reported, never flagged; the layers it feeds are.
    assert huge.z[0] > huge.threshold and huge.flagged_layers == [1, 2]
    assert not small.is_off_distribution and not replaced.is_off_distribution
    assert "off distribution at layers [1, 2]" in str(huge) and "noise_scale=30" in str(huge)
    assert replaced.noise_scale is None and "within the clean distribution" in str(replaced)


def test_window_comparison_compares_joint_with_summed_single_layer_effects(model, pairs):
    single = patching.patch(model, pairs, "mlp", metric="prob")
    windowed = patching.patch(model, pairs, "mlp", metric="prob", window=3)
    comparison = robustness.window_comparison(single.with_metric("kl"), windowed)
    summed = single.window_sum(3)
    assert comparison.metric == "prob" and comparison.window == 3 and comparison.labels == ("mlp.0", "mlp.1", "mlp.2")
    np.testing.assert_allclose(comparison.joint, windowed.mean)
    np.testing.assert_allclose(comparison.summed, summed.mean)
    raw = single.effects["prob"].mean(axis=0)
    np.testing.assert_allclose(comparison.summed, [raw[0:2].sum(), raw[0:3].sum(), raw[1:3].sum()])
    assert comparison.peak_ratio == pytest.approx(windowed.mean.max() / summed.mean.max())
    assert f"ratio {comparison.peak_ratio:.2f}" in str(comparison)

    middle = robustness.window_comparison(single, windowed, layers=[2, 1])
    assert middle.labels == ("mlp.1", "mlp.2")
    np.testing.assert_allclose(middle.joint, windowed.mean[1:])
    np.testing.assert_allclose(middle.summed, summed.mean[1:])
    assert middle.peak_ratio == pytest.approx(windowed.mean[1:].max() / summed.mean[1:].max())
    for layers in ([], [3], [-1]):
        with pytest.raises(SettingsError, match=r"layer indices in 0\.\.2"):
            robustness.window_comparison(single, windowed, layers=layers)

    with pytest.raises(SettingsError, match="window >= 2"):
        robustness.window_comparison(single, single)
    with pytest.raises(SettingsError, match="corruption"):
        robustness.window_comparison(patching.patch(model, pairs, "mlp", "gn"), windowed)


def test_an_attribution_grid_estimates_each_metric_in_its_own_sweep(model, pairs, monkeypatch):
    sweeps = counting_sweeps(monkeypatch)
    estimates = robustness.grid(
        model, pairs, "attn_head", corruptions=["str"], metrics=["logit_diff", "prob"], method="attribution"
    )
    assert sweeps == ["str", "str"]  # an estimate holds one metric: one sweep each
    assert list(estimates.settings) == [("str", None, "logit_diff"), ("str", None, "prob")]
    assert not estimates.invalid and len(estimates.results) == 2
    for metric in ("logit_diff", "prob"):
        result = estimates.results[("str", None, metric)]
        direct = patching.patch(model, pairs, "attn_head", "str", metric, method="attribution")
        assert result.is_estimate and result.metric == metric and list(result.effects) == [metric]
        np.testing.assert_allclose(result.effects[metric], direct.effects[metric], rtol=1e-6, atol=1e-12)
        exact = patching.patch(model, pairs, "attn_head", "str", metric)
        assert np.abs(result.mean - exact.mean).max() > 1e-3 * np.abs(exact.mean).max()  # estimates, not exact effects
    with pytest.raises(SettingsError, match="Rerun it with metric='prob'"):
        estimates.results[("str", None, "logit_diff")].with_metric("prob")
