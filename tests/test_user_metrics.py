"""The log-probability metric and user metrics: by hand, through sweeps, attribution, path patching, grids and
circuits, computed in the same runs as the built-in metrics, and from a YAML claim by registered name."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
import torch

import interp_tests as it
from interp_tests import metrics
from interp_tests.errors import MetricError, SettingsError
from interp_tests.metrics import AnswerReader
from test_engine import PAIRS, _capture, _patched_logits, build, word_tokenizer


def logit_diff_again(logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor) -> torch.Tensor:
    """The built-in logit difference, rewritten as a user metric: its effects must equal the built-in's."""
    return (logits * answer).sum(-1) - (logits * wrong).sum(-1)


def margin(logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor) -> torch.Tensor:
    """The answer's logit over the best other token: nonlinear in the logits, unlike the logit difference."""
    return (logits * answer).sum(-1) - logits.masked_fill(answer, float("-inf")).max(-1).values


@pytest.fixture
def registered(monkeypatch):
    """A clean registry with ``ld_again`` (normalised) and ``margin`` (not normalised) in it."""
    monkeypatch.setattr(metrics, "_registered", {})
    it.register_metric("ld_again", logit_diff_again)
    it.register_metric("margin", margin, normalise=False)


def test_logprob_and_a_user_metric_by_hand():
    tok = word_tokenizer()
    tokens = it.PromptPairs(["When John went to"], None, [["Mary", "Tom"]], ["John"]).tokenize(tok)
    vocab = len(tok)
    mary, tom, john = (tok.convert_tokens_to_ids(w) for w in ("Mary", "Tom", "John"))
    run = torch.zeros(1, vocab)
    run[0, john], run[0, tom], run[0, mary] = 2.0, 1.0, -30.0
    reader = AnswerReader(tokens, vocab, [metrics.UserMetric("margin", margin)])
    reader.set_clean(run)
    stats = reader.stats(run, torch.tensor([0]))
    z = math.exp(2) + math.exp(1) + math.exp(-30) + (vocab - 3)
    assert stats.logprob.item() == pytest.approx(math.log((math.exp(1) + math.exp(-30)) / z), rel=1e-6)
    assert stats["margin"].item() == pytest.approx((1.0 - 30.0) - 2.0)  # Mary + Tom (the answer set) - John


def _reference(model, pairs, layer, fn):
    """Per prompt: fn of the clean, corrupted and MLP-``layer``-restored runs' last-token logits (hooks, one
    prompt at a time). ``fn(logits [vocab], answer id, wrong id) -> float``."""
    tok = model.tokenizer
    values = {"clean": [], "corrupted": [], "patched": []}
    for i in range(len(pairs)):
        clean = (torch.tensor([tok(pairs.clean[i])["input_ids"]]), None)
        corrupted = (torch.tensor([tok(pairs.corrupted[i])["input_ids"]]), None)
        a, w = tok.convert_tokens_to_ids(pairs.answer[i]), tok.convert_tokens_to_ids(pairs.wrong[i])
        clean_logits, cache = _capture(model, clean, "mlp", range(model.n_layers))
        corrupt_logits, _ = _capture(model, corrupted, "mlp", [])
        patched = _patched_logits(model, corrupted, "mlp", [layer], cache, None, None)
        for run, logits in (("clean", clean_logits), ("corrupted", corrupt_logits), ("patched", patched)):
            values[run].append(fn(logits.float(), a, w))
    return {k: np.array(v) for k, v in values.items()}


def _logprob(logits, a, w):
    return torch.log_softmax(logits, -1)[a].item()


def _margin(logits, a, w):
    others = logits.clone()
    others[a] = float("-inf")
    return (logits[a] - others.max()).item()


@pytest.mark.parametrize("layer", [0, 2])
def test_logprob_sweep_is_normalised_by_its_gap_and_matches_hooks(layer):
    model = build("gpt2")
    result = it.patch(model, PAIRS, "mlp", metric="logprob")
    ref = _reference(model, PAIRS, layer, _logprob)
    raw, gap = ref["patched"] - ref["corrupted"], ref["clean"] - ref["corrupted"]
    assert np.abs(gap).min() > 0.05 and np.abs(raw).max() > 0.01  # a nontrivial check
    np.testing.assert_allclose(result.effects["logprob"][:, layer], raw, atol=1e-5)
    np.testing.assert_allclose(result.gap, gap, atol=1e-5)
    assert result[f"mlp.{layer}"] == pytest.approx(raw.mean() / gap.mean(), abs=1e-4)
    np.testing.assert_allclose(result.per_prompt[:, layer], raw / gap, atol=1e-4)
    assert result.with_metric("prob").gap is None  # probability stays un-normalised


def test_user_metrics_by_name_and_as_a_function_match_hooks(registered):
    model = build("gpt2")
    ref = _reference(model, PAIRS, 1, _margin)
    raw = ref["patched"] - ref["corrupted"]
    for metric in ("margin", margin):  # registered with normalise=False either way
        result = it.patch(model, PAIRS, "mlp", metric=metric)
        assert result.metric == "margin" and result.gap is None
        np.testing.assert_allclose(result.effects["margin"][:, 1], raw, atol=1e-5)
        assert result["mlp.1"] == pytest.approx(raw.mean(), abs=1e-5)
    unregistered = it.patch(model, PAIRS, "mlp", metric=lambda logits, answer, wrong: margin(logits, answer, wrong))
    gap = ref["clean"] - ref["corrupted"]
    assert unregistered["mlp.1"] == pytest.approx(raw.mean() / gap.mean(), abs=1e-4)  # a plain function: normalised


def test_a_user_metric_is_computed_in_the_sweeps_own_runs():
    rows = []

    def counting(logits, answer, wrong):
        rows.append(len(logits))
        return logit_diff_again(logits, answer, wrong)

    model = build("gpt2")
    result = it.patch(model, PAIRS, "mlp", metric=counting)
    # The clean and corrupted runs, then one patched run per (layer, prompt): no run of its own.
    assert sum(rows) == len(PAIRS) * (2 + model.n_layers)
    np.testing.assert_allclose(result.mean, result.with_metric("logit_diff").mean, atol=1e-6)
    assert sorted(result.effects) == ["counting", "kl", "logit_diff", "logprob", "prob"]


def test_a_user_logit_difference_equals_the_built_in_one_in_every_method(registered):
    model = build("gpt2")
    pairs = [("exact", dict(component="attn_head")), ("attribution", dict(component="attn_head", method="attribution"))]
    for name, kwargs in pairs:
        mine, builtin = it.patch(model, PAIRS, metric="ld_again", **kwargs), it.patch(model, PAIRS, **kwargs)
        assert np.abs(builtin.mean).max() > 0.01, name
        np.testing.assert_allclose(mine.mean, builtin.mean, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(mine.per_prompt, builtin.per_prompt, atol=1e-4, err_msg=name)
    mine, builtin = it.path_patch(model, PAIRS, ["2.0"], metric="ld_again"), it.path_patch(model, PAIRS, ["2.0"])
    assert np.abs(builtin.mean).max() > 0.01
    np.testing.assert_allclose(mine.mean, builtin.mean, atol=1e-5)


def test_grid_reads_built_in_and_user_metrics_and_saves_gaps(registered, tmp_path):
    model = build("gpt2")
    g = it.grid(model, PAIRS, "mlp", corruptions=["str"], metrics=["logit_diff", "logprob", "ld_again", "margin"])
    assert not g.invalid
    by_metric = {s.metric: r for s, r in g.results.items()}
    np.testing.assert_allclose(by_metric["ld_again"].mean, by_metric["logit_diff"].mean, atol=1e-5)
    np.testing.assert_allclose(by_metric["margin"].mean, it.patch(model, PAIRS, "mlp", metric="margin").mean)
    path = tmp_path / "r.npz"
    by_metric["logprob"].save(path)
    loaded = it.PatchResult.load(path)
    np.testing.assert_allclose(loaded.mean, by_metric["logprob"].mean)
    np.testing.assert_allclose(loaded.gap, by_metric["logprob"].gap)


def test_circuit_scores_and_searches_read_user_metrics(registered):
    model = build("gpt2")
    ref = _reference(model, PAIRS, 1, _logprob)
    result = it.circuit_patch(model, PAIRS, ["mlp.1"], metric="logprob")  # sufficiency: mlp.1 restored
    np.testing.assert_allclose(result.metrics["clean"], ref["clean"], atol=1e-5)
    np.testing.assert_allclose(result.metrics["patched"], ref["patched"], atol=1e-5)
    expected = (ref["patched"].mean() - ref["corrupted"].mean()) / (ref["clean"].mean() - ref["corrupted"].mean())
    assert result.score == pytest.approx(expected, abs=1e-4)
    mine = it.circuit_patch(model, PAIRS, ["mlp.1", "mlp.2"], metric="ld_again")
    builtin = it.circuit_patch(model, PAIRS, ["mlp.1", "mlp.2"])
    assert mine.score == pytest.approx(builtin.score, abs=1e-5)
    assert mine.contributions == pytest.approx(builtin.contributions, abs=1e-5)
    from interp_tests.circuit_patching import completeness, minimality

    for search in (completeness, minimality):
        a = search(model, PAIRS, ["0.0", "1.1"], metric="ld_again", seed=0)
        b = search(model, PAIRS, ["0.0", "1.1"], seed=0)
        assert [r[1] for r in a.rows] == [r[1] for r in b.rows] and len(a.rows) > 1
        np.testing.assert_allclose([r[2:] for r in a.rows], [r[2:] for r in b.rows], atol=1e-5)


def test_unknown_and_bad_metrics_say_what_to_do(registered):
    model = build("gpt2")
    with pytest.raises(SettingsError, match=r"Unknown metric 'ld_agian'\. Did you mean 'ld_again'\?.*registered: 'ld_again', 'margin'"):
        it.patch(model, PAIRS, "mlp", metric="ld_agian")
    with pytest.raises(SettingsError, match="Did you mean 'logprob'"):
        it.patch(model, PAIRS, "mlp", metric="log_prob")
    with pytest.raises(SettingsError, match="built-in metric"):
        it.register_metric("kl", margin)
    with pytest.raises(MetricError, match=r"'scalar' returned \(\); it must return a tensor of one value per row"):
        it.patch(model, PAIRS, "mlp", metric=it.register_metric("scalar", lambda logits, a, w: logits.sum()).name)
    with pytest.raises(SettingsError, match="holds .* effects only, not 'margin'"):
        it.patch(model, PAIRS, "mlp").with_metric("margin")


def test_a_yaml_claim_uses_a_metric_registered_in_conftest_and_caches_it_by_name(pytester, tiny_files, tiny_sweep):
    top = tiny_sweep.top(1)[0][0]
    pytester.makeconftest(textwrap.dedent("""\
        import interp_tests

        def ld_again(logits, answer, wrong):
            return (logits * answer).sum(-1) - (logits * wrong).sum(-1)

        interp_tests.register_metric("ld_again", ld_again)
        interp_tests.register_metric("ld_twice", lambda logits, a, w: 2 * ld_again(logits, a, w), normalise=False)
    """))
    claims = f"""\
        - name: the top head under a user metric
          sweep: {{component: attn_head, metric: ld_again}}
          expect: {{detected: ["{top}"], sd: {tiny_sweep.zscore(top) - 0.01:.4f}}}
        - name: the same under another name
          sweep: {{component: attn_head, metric: ld_twice}}
          expect: {{top_k: {{labels: ["{top}"], k: 1}}}}
        - name: a typo
          sweep: {{component: attn_head, metric: ld_agian}}
          expect: {{detected: ["{top}"]}}
    """
    text = f"model: {tiny_files / 'model'}\ntask: {{file: {tiny_files / 'pairs.jsonl'}}}\nclaims:\n"
    (pytester.path / "hypotheses").mkdir()
    (pytester.path / "hypotheses" / "claims.yaml").write_text(text + textwrap.dedent(claims))
    first = pytester.runpytest("-v", "-p", "no:cacheprovider")
    first.assert_outcomes(passed=2, failed=1)
    first.stdout.fnmatch_lines(["*: 'ld_agian' is not a metric. Did you mean 'ld_again'? Choose from logit_diff, prob, kl, logprob, ld_again, ld_twice.*"])
    first.stdout.fnmatch_lines(["sweeps: 2 computed, 0 from the cache*"])  # one entry per metric name
    second = pytester.runpytest("-v", "-p", "no:cacheprovider")
    second.assert_outcomes(passed=2, failed=1)
    second.stdout.fnmatch_lines(["sweeps: 0 computed, 2 from the cache*"])
