"""Metrics against hand computation, the detection rule, labels, and lossless save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import interp_tests as it
from interp_tests.components import make_grid, parse_label
from interp_tests.errors import ComponentError, MetricError, ResultFileError, SettingsError
from interp_tests.metrics import AnswerReader, RunStats, raw_effects
from interp_tests.results import PatchResult
from test_engine import PAIRS, build, word_tokenizer


def test_run_stats_match_hand_computation():
    tokens = it.PromptPairs(["When John went to"], None, [["Mary", "Tom"]], ["John"]).tokenize(word_tokenizer())
    vocab = len(word_tokenizer())
    tok = word_tokenizer()
    mary, tom, john = (tok.convert_tokens_to_ids(w) for w in ("Mary", "Tom", "John"))
    clean = torch.zeros(1, vocab)
    clean[0, mary] = 3.0
    run = torch.zeros(1, vocab)
    run[0, john], run[0, tom] = 2.0, 1.0
    reader = AnswerReader(tokens, vocab)
    reader.set_clean(clean)
    stats = reader.stats(run, torch.tensor([0]))
    z = math.exp(2) + math.exp(1) + (vocab - 2)
    assert stats.prob.item() == pytest.approx((math.exp(1) + 1) / z, rel=1e-6)  # P(Mary) + P(Tom)
    assert stats.logit_diff.item() == pytest.approx(0.0 + 1.0 - 2.0)
    p = torch.softmax(clean[0], -1)
    q = torch.softmax(run[0], -1)
    assert stats.kl.item() == pytest.approx(float((p * (p / q).log()).sum()), rel=1e-5)


def test_effects_and_normalisation_by_hand():
    corrupted = RunStats({"prob": torch.tensor([0.1, 0.2]), "logit_diff": torch.tensor([-1.0, -2.0]), "kl": torch.tensor([2.0, 3.0])})
    patched = RunStats({"prob": torch.tensor([[0.5, 0.2]]), "logit_diff": torch.tensor([[1.0, -1.0]]), "kl": torch.tensor([[0.5, 3.0]])})
    effects = {k: v.T.numpy() for k, v in raw_effects(patched, corrupted).items()}
    grid = make_grid("mlp", "all", n_layers=1, n_heads=1, seq_len=4)
    result = PatchResult(metric="logit_diff", effects=effects, ld_clean=np.array([3.0, 2.0]),
                         ld_corrupted=np.array([-1.0, -2.0]), grid=grid, settings={})
    # per prompt: (1 - -1) / (3 - -1) = 0.5 and (-1 - -2) / (2 - -2) = 0.25; batch means: (1.5) / (4) = 0.375
    np.testing.assert_allclose(result.per_prompt[:, 0], [0.5, 0.25])
    assert result["mlp.0"] == pytest.approx(0.375)
    assert result.with_metric("prob")["mlp.0"] == pytest.approx(0.2)  # mean of 0.4 and 0.0
    assert result.with_metric("kl")["mlp.0"] == pytest.approx(0.75)  # mean of 1.5 and 0.0


def test_zero_denominator_is_an_error_and_degenerate_prompts_are_flagged():
    grid = make_grid("mlp", "all", n_layers=2, n_heads=1, seq_len=4)
    effects = {k: np.ones((2, 2)) for k in ("prob", "logit_diff", "kl")}
    with pytest.raises(MetricError, match="does not separate"):
        PatchResult(metric="logit_diff", effects=effects, ld_clean=np.array([1.0, 1.0]),
                    ld_corrupted=np.array([1.0, 1.0]), grid=grid, settings={})
    result = PatchResult(metric="logit_diff", effects=effects, ld_clean=np.array([2.0, 1.0]),
                         ld_corrupted=np.array([0.0, 1.0]), grid=grid, settings={})
    assert result.degenerate_prompts == [1]
    assert np.isnan(result.per_prompt[1]).all() and np.isfinite(result.per_prompt[0]).all()
    assert np.isfinite(result.mean).all()


def _result(values) -> PatchResult:
    values = np.asarray(values, dtype=float)
    grid = make_grid("attn_head", "all", n_layers=values.shape[0], n_heads=values.shape[1], seq_len=4)
    effects = {k: values[None] for k in ("prob", "logit_diff", "kl")}
    return PatchResult(metric="prob", effects=effects, ld_clean=np.ones(1), ld_corrupted=np.zeros(1), grid=grid, settings={})


def test_detection_rule_is_sd_from_the_mean_over_components():
    values = np.zeros((3, 4))
    values[2, 1], values[0, 3] = 1.0, -0.8
    result = _result(values)
    z = (values - values.mean()) / values.std()
    np.testing.assert_allclose(result.zscores, z)
    assert result.detected(sd=2.0) == ["2.1"]
    assert result.detected(sd=2.0, sign="negative") == ["0.3"]
    assert result.detected(sd=2.0, sign="both") == ["2.1", "0.3"]
    assert result.top(2) == [("2.1", 1.0), ("0.0", 0.0)]
    assert result.rank("2.1") == 1 and result["0.3"] == -0.8
    assert result.zscore("2.1") == pytest.approx(z[2, 1])
    with pytest.raises(SettingsError):
        result.detected(sign="up")


def test_constant_effects_detect_nothing():
    assert _result(np.ones((2, 2))).detected(sd=0.5, sign="both") == []


def test_unknown_labels_say_the_valid_range():
    result = _result(np.zeros((3, 4)))
    with pytest.raises(ComponentError, match=r"L in 0..2 and H in 0..3"):
        result["9.9"]
    with pytest.raises(ComponentError, match="not a component label"):
        parse_label("head 9")
    assert parse_label("9.9@3") == ("attn_head", 9, 9, 3)
    assert parse_label("mlp.4") == ("mlp", 4, None, None)


@pytest.mark.parametrize("name, value, message", [
    ("component", "heads", "Unknown component kind 'heads'. Did you mean 'attn_head'?"),
    ("metric", "logit_dif", "Did you mean 'logit_diff'?"),
    ("corruption", "noise", "Unknown corruption 'noise'"),
    ("direction", "forward", "direction='forward'"),
    ("window", 0, "window=0 must be a positive integer"),
    ("positions", "every", "Unknown position 'every'"),
])
def test_bad_settings_are_refused_with_a_hint(name, value, message):
    model = build("gpt2")
    kwargs = {"component": "mlp", name: value}
    with pytest.raises(it.InterpError, match=message.replace("(", r"\(").replace("?", r"\?")):
        it.patch(model, PAIRS, **kwargs)


def test_window_only_for_layers_and_not_larger_than_the_model():
    model = build("gpt2")
    with pytest.raises(SettingsError, match="larger than the model's 3 layers"):
        it.patch(model, PAIRS, "mlp", window=4)
    with pytest.raises(SettingsError, match="defined for 'mlp' and 'attn'"):
        it.patch(model, PAIRS, "attn_head", window=2)


def test_save_load_round_trip_is_lossless(tmp_path):
    result = it.patch(build("gpt2"), PAIRS[:2], "attn_head", positions="each")  # the two 14-token pairs
    path = tmp_path / "result.npz"
    result.save(path)
    loaded = PatchResult.load(path)
    assert loaded.settings == result.settings and loaded.grid == result.grid and loaded.metric == result.metric
    for metric in ("prob", "logit_diff", "kl"):
        np.testing.assert_array_equal(loaded.with_metric(metric).per_prompt, result.with_metric(metric).per_prompt)
    for key in ("model_fingerprint", "dataset", "corruption", "metric", "seed", "version"):
        assert key in loaded.settings
    (tmp_path / "junk.npz").write_bytes(b"not a result")
    with pytest.raises(ResultFileError, match="Recompute it"):
        PatchResult.load(tmp_path / "junk.npz")


def test_gaussian_noise_is_seeded_scaled_and_only_at_corrupt_positions():
    from interp_tests.corruptions import gaussian_noise, token_embeddings

    model = build("gpt2")
    tokens = PAIRS.tokenize(model.tokenizer)
    a = gaussian_noise(model, tokens, seed=1)
    assert torch.equal(a, gaussian_noise(model, tokens, seed=1))
    assert not torch.equal(a, gaussian_noise(model, tokens, seed=2))
    mask = torch.zeros(a.shape[:2], dtype=torch.bool)
    for i, rows in enumerate(tokens.corrupt_positions):
        mask[i, rows] = True
    assert a[~mask].abs().max() == 0
    embeddings = token_embeddings(model, tokens.clean_ids)[tokens.attention_mask.bool()]
    assert torch.equal(gaussian_noise(model, tokens, seed=1, scale=6.0), 2 * a)
    assert a[mask].std().item() == pytest.approx(3 * embeddings.std(unbiased=False).item(), rel=0.35)
    one = it.patch(model, PAIRS, "mlp", corruption="gn", seed=3)
    two = it.patch(model, PAIRS, "mlp", corruption="gn", seed=3)
    np.testing.assert_array_equal(one.effects["logit_diff"], two.effects["logit_diff"])
    assert one.settings["noise_scale"] == 3.0


def test_custom_embedding_corruption():
    model = build("gpt2")

    def zero_first_token(embeddings, tokens):
        embeddings[:, 0] = 0
        return embeddings

    result = it.patch(model, PAIRS, "resid", corruption=zero_first_token, metric="kl")
    assert result.settings["corruption"] == "zero_first_token"
    assert result["resid.0"] == pytest.approx(result.settings["corrupted"]["kl"], abs=1e-5)
    with pytest.raises(SettingsError, match="returns corrupted embeddings of the same shape"):
        it.patch(model, PAIRS, "mlp", corruption=lambda e, t: e[:, :2])


def test_a_threshold_above_sqrt_n_minus_1_is_named_unreachable_in_the_failures():
    from interp_tests.claims import ClaimError
    from interp_tests.robustness import Grid, Setting
    from test_reports import planted_result

    result = planted_result("mlp")  # 12 MLP layers: no z-score can exceed sqrt(11) = 3.32
    unreachable = r"no component can reach \|z\| >= 4 here: with 12 components the largest possible \|z\| is sqrt\(12 - 1\) = 3\.32"
    for claim in (lambda: result.assert_detected("mlp.1", sd=4), lambda: result.assert_negative("mlp.10", sd=4),
                  lambda: result.assert_stable("mlp.1", sd=4, n_resamples=50)):
        with pytest.raises(ClaimError, match=unreachable):
            claim()
    setting = Setting("str", None, "prob")
    grid = Grid(component="mlp", sd=4.0, settings=(setting,), results={setting: result}, invalid={})
    with pytest.raises(ClaimError, match=unreachable):
        grid.assert_robust("mlp.1")
    with pytest.raises(ClaimError) as reachable:
        result.assert_detected("mlp.2", sd=3)
    assert "no component can reach" not in str(reachable.value)
