"""Reliability: bad input, numerical trouble, damaged files, crashes and concurrent writers never give a
wrong answer or lose a baseline; every refusal is an ``InterpError`` that names the problem and the fix.

Cases tested elsewhere are not repeated here:

- STR length mismatch, multi-token answers, answer == wrong, empty pairs, malformed pairs, positions out of
  range, disjoint answer sets, prompts longer than the context: ``test_pairs.py``.
- Unknown labels and layers/heads out of range, unknown component kind and metric with a "did you mean",
  window < 1 and > n_layers, ~0 normalising denominator: ``test_metrics_results.py``; a sweep whose clean
  and corrupted runs agree: ``test_engine.py::test_clean_equal_to_corrupted_gives_zero_effect_for_prob_and_kl``.
- Train mode: ``test_engine.py::test_train_mode_model_is_patched_in_eval_mode_and_left_as_it_was``; batch size:
  ``test_engine.py::test_batch_size_does_not_change_results``.
- YAML claim files (syntax, unknown keys, wrong types, missing fields: one failed item with file and line):
  ``test_plugin_yaml.py``; cache entries with bad checksums or settings are recomputed: ``test_plugin_cache.py``;
  a missing model directory, or one with a config only: ``test_models.py``.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import random
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import interp_tests as it
from interp_tests import engine, exact
from interp_tests.claims import check_baseline, render, snapshot
from interp_tests.components import make_grid
from interp_tests.errors import (
    ComponentError,
    DeviceMemoryError,
    InterpError,
    InterpWarning,
    MetricError,
    ModelLoadError,
    PromptError,
    SettingsError,
)
from interp_tests.metrics import HALF_PRECISION_TOLERANCE
from interp_tests.pairs import PromptPairs, TokenizedPairs
from interp_tests.plugin.cache import SweepCache, sweep_key
from interp_tests.plugin.yaml_claims import CLAIM_KEYS, EXPECT_KEYS, SWEEP_KEYS, TOP_KEYS, Claim, Problem, parse_claims
from interp_tests.results import PatchResult
from interp_tests.testing import ioi_pairs, orient_answers, tiny_gpt2
from test_engine import ARCHITECTURES, PAIRS, WORDS, build, word_tokenizer

FORK = multiprocessing.get_context("fork")  # children start in milliseconds and inherit the test's objects


# -- bad input -------------------------------------------------------------------------------------------


def test_a_multi_token_wrong_answer_is_refused():
    with pytest.raises(PromptError, match=r"wrong\[0\] = 'John Tom' is 2 tokens .*single token"):
        it.PromptPairs(PAIRS.clean[:1], PAIRS.corrupted[:1], ["Mary"], ["John Tom"]).tokenize(word_tokenizer())


@pytest.mark.parametrize(
    "corrupted", [None, PAIRS.clean], ids=["no corrupted prompts", "corrupted equal to clean"]
)
def test_gaussian_noise_without_positions_to_corrupt_is_refused(corrupted):
    # Nothing says which tokens to corrupt: no corrupt_positions, no "corrupt" span, no differing tokens.
    pairs = it.PromptPairs(PAIRS.clean, corrupted, PAIRS.answer, PAIRS.wrong)
    with pytest.raises(PromptError, match="needs to know which tokens to corrupt.*corrupt_positions="):
        it.patch(build("gpt2"), pairs, "mlp", corruption="gn", metric="prob")


def test_mistyped_names_and_labels_suggest_the_valid_ones():
    model = build("gpt2")
    with pytest.raises(SettingsError, match=r"Unknown corruption 'gns'. Did you mean 'gn'\?"):
        it.patch(model, PAIRS, "mlp", corruption="gns")
    result = it.patch(model, PAIRS, "mlp")
    with pytest.raises(ComponentError, match=r"'mlp.7' is not a component.*L in 0..2"):
        result["mlp.7"]


# -- numbers that cannot be trusted ----------------------------------------------------------------------


def _nan_weights(model):
    model.hf.transformer.h[1].mlp.c_fc.weight.fill_(float("nan"))


def _inf_weights(model):
    model.hf.transformer.ln_f.weight.fill_(float("inf"))


def test_token_positions_that_are_padding_in_some_prompts_are_refused():
    # PADDED has prompts of 11, 14 and 19 tokens: position 12 is a real token in two prompts, padding in one.
    from test_engine import PADDED

    model = build("gpt2")
    with pytest.raises(PromptError, match=r"different lengths: 11 \(1 prompt\), 14 \(1 prompt\), 19 \(1 prompt\) "
                       r"tokens\. Positions 11\.\.18 are a real token in some prompts and padding .*positions='last'"):
        it.patch(model, PADDED, "mlp", positions="each")
    with pytest.raises(PromptError, match="Position 12 is a real token in some prompts and padding in others"):
        it.patch(model, PADDED, "mlp", positions=12)
    with pytest.raises(PromptError, match="different lengths"):
        it.patch(model, PADDED, "mlp", positions="each", method="attribution")
    assert it.patch(model, PADDED, "mlp", positions=10).shape == (3,)  # inside every prompt
    assert it.patch(model, PADDED, "mlp", positions="last").shape == (3,)


@pytest.mark.parametrize("damage", [_nan_weights, _inf_weights], ids=["nan weights", "inf weights"])
def test_nan_or_inf_in_model_outputs_is_an_error(damage):
    model = build("gpt2")
    with torch.no_grad():
        damage(model)
    with pytest.raises(MetricError, match="NaN or inf logits.*Check the weights"):
        it.patch(model, PAIRS, "attn_head")


def test_nan_from_a_corruption_is_an_error():
    with pytest.raises(MetricError, match="NaN or inf logits"):
        it.patch(build("gpt2"), PAIRS, "mlp", corruption=lambda embeddings, tokens: embeddings * float("nan"))


def _clean_oriented(model: it.PatchableModel, pairs: PromptPairs) -> PromptPairs:
    """``pairs`` with answer and wrong swapped wherever the clean run prefers the wrong one: accuracy 1."""
    tokens = pairs.tokenize(model.tokenizer)
    with torch.no_grad():
        logits = model.hf(tokens.clean_ids, attention_mask=tokens.attention_mask).logits
    last = logits[torch.arange(tokens.n), tokens.lengths - 1]
    answer, wrong = list(pairs.answer), list(pairs.wrong)
    for i, (a, w) in enumerate(zip(tokens.answer_ids, tokens.wrong_ids)):
        if last[i, a].max() < last[i, w].max():
            answer[i], wrong[i] = wrong[i], answer[i]
    return PromptPairs(pairs.clean, pairs.corrupted, answer, wrong)


def test_a_model_at_chance_on_the_task_warns_that_claims_are_meaningless():
    model = build("gpt2")  # random weights: its answers are no better than chance
    with pytest.warns(InterpWarning, match=r"clean accuracy on these prompts is 0.00 .* chance \(0.50\).*meaningless"):
        it.patch(model, PAIRS, "mlp")
    with warnings.catch_warnings():
        warnings.simplefilter("error", InterpWarning)
        it.patch(model, _clean_oriented(model, PAIRS), "mlp", metric="prob")  # accuracy 1: no warning


def _unspaced_ioi(n: int) -> PromptPairs:
    """Organism IOI pairs with the answers' leading space dropped: 'Mary' is a token the model never writes here."""
    pairs = it.tasks.ioi(n=n, seed=0, corrupt="S1_IO")
    return PromptPairs(pairs.clean, pairs.corrupted, [a.strip() for a in pairs.answer], [w.strip() for w in pairs.wrong])


NEVER_PREDICTED = (r"never predicts the answer tokens: in none of the 8 prompts is an answer token among its 10 most "
                   r"likely next tokens, and the mean clean P\(answer\) is 0\.0000 \(< 0\.01\)\. The at-chance "
                   r".*top-1 tokens.*'Ġ\w+' \(decodes to ' \w+'\): \d")


@pytest.mark.parametrize("method", ["exact", "attribution", "path", "circuit"])
def test_answers_the_model_never_predicts_warn_for_every_method(method):
    # The model prefers 'Mary' over 'John' (accuracy 1, no at-chance warning) yet gives both ~0 probability.
    model, pairs = it.load_model("organism"), _unspaced_ioi(8)
    run = {
        "exact": lambda p: it.patch(model, p, "attn_head"),
        "attribution": lambda p: it.patch(model, p, "attn_head", method="attribution"),
        "path": lambda p: it.path_patch(model, p, ["logits"]),
        "circuit": lambda p: it.circuit_patch(model, p, it.Circuit(["0.2"])),
    }[method]
    with pytest.warns(InterpWarning, match=NEVER_PREDICTED):
        result = run(pairs)
    assert result.settings["clean_run"]["answer_in_top_k"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", InterpWarning)
        spaced = run(it.tasks.ioi(n=8, seed=0, corrupt="S1_IO"))
    assert spaced.settings["clean_run"]["answer_in_top_k"] == 8


# -- half precision --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_effects_match_float32_within_the_documented_tolerance(dtype):
    hf, tokenizer = tiny_gpt2()
    pairs = orient_answers(hf, tokenizer, ioi_pairs(16))
    full = it.load_model(hf, tokenizer=tokenizer)
    half = it.load_model(copy.deepcopy(hf).to(dtype), tokenizer=tokenizer)
    tokens = pairs.tokenize(tokenizer)
    with torch.no_grad():
        logit_std = hf(tokens.clean_ids).logits[torch.arange(tokens.n), tokens.lengths - 1].std().item()
    tolerance = HALF_PRECISION_TOLERANCE[str(dtype).removeprefix("torch.")] * logit_std  # in logits, for raw logit-difference effects
    for component in ("attn_head", "mlp"):
        a, b = it.patch(full, pairs, component), it.patch(half, pairs, component)
        assert b.settings["model_fingerprint"] != a.settings["model_fingerprint"]
        raw_a, raw_b = a.effects["logit_diff"].mean(0), b.effects["logit_diff"].mean(0)
        np.testing.assert_allclose(raw_b, raw_a, rtol=0, atol=tolerance)
        denominator = abs(a.ld_clean.mean() - a.ld_corrupted.mean())
        np.testing.assert_allclose(b.mean, a.mean, rtol=0, atol=tolerance / denominator)
        np.testing.assert_allclose(b.with_metric("prob").mean, a.with_metric("prob").mean, rtol=0, atol=1e-3)
        np.testing.assert_allclose(b.with_metric("kl").mean, a.with_metric("kl").mean, rtol=0, atol=1e-2)


# -- model files -----------------------------------------------------------------------------------------


def _truncate(name):
    def damage(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])

    return damage


def _as_truncated_bin(folder: Path) -> None:
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    _truncate("pytorch_model.bin")(folder)


MODEL_DAMAGE = {
    "truncated model.safetensors": (_truncate("model.safetensors"), "damaged or truncated.*save_pretrained"),
    "empty model.safetensors": (lambda f: (f / "model.safetensors").write_bytes(b""), "damaged or truncated"),
    "truncated pytorch_model.bin": (_as_truncated_bin, "damaged or truncated"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), "needs config.json, the weights"),
    "truncated config.json": (_truncate("config.json"), "not a valid JSON file"),
    "truncated tokenizer.json": (_truncate("tokenizer.json"), "Could not load a model from the directory"),
    "no tokenizer files": (
        lambda f: [(f / name).unlink() for name in ("tokenizer.json", "tokenizer_config.json")],
        "tokenizer files .* are missing.*tokenizer=tokenizer",
    ),
}


@pytest.mark.parametrize("damage, message", MODEL_DAMAGE.values(), ids=MODEL_DAMAGE)
def test_a_model_directory_with_missing_or_damaged_files_is_a_model_load_error(tmp_path, damage, message):
    model = build("gpt2")
    model.hf.save_pretrained(tmp_path)
    model.tokenizer.save_pretrained(tmp_path)
    damage(tmp_path)
    with pytest.raises(ModelLoadError, match=message):
        it.load_model(tmp_path)


def test_a_tokenizer_without_a_pad_token_gives_identical_results():
    pairs = it.PromptPairs(  # different lengths, so the shorter prompt is padded
        [PAIRS.clean[0], "When Tom and Anna went to the shop and then Tom gave a book and then Anna gave a drink to"],
        [PAIRS.corrupted[0], "When Tom and Anna went to the shop and then Anna gave a book and then Anna gave a drink to"],
        ["Mary", "Anna"], ["John", "Tom"],
    )
    reference = it.patch(build("gpt2"), pairs, "attn_head", corruption="gn")
    for special in ({"eos_token": "then"}, {}):  # the pad token becomes the EOS token, else token 0
        tokenizer = word_tokenizer(pad_token=None, **special)
        assert tokenizer.pad_token_id is None
        torch.manual_seed(0)  # the weights of build("gpt2")
        model = it.load_model(ARCHITECTURES["gpt2"]().eval(), tokenizer=tokenizer)
        assert model.tokenizer.pad_token_id == tokenizer.convert_tokens_to_ids(special.get("eos_token", "<pad>"))
        result = it.patch(model, pairs, "attn_head", corruption="gn")
        for metric in ("prob", "logit_diff", "kl"):
            np.testing.assert_array_equal(result.effects[metric], reference.effects[metric])
        np.testing.assert_array_equal(result.ld_clean, reference.ld_clean)


# -- out of memory ---------------------------------------------------------------------------------------


def _memory_limited_run(monkeypatch, max_rows: int, error: type[BaseException]) -> list[int]:
    """Make every patched forward pass of more than ``max_rows`` rows raise ``error``; returns pass sizes."""
    real_run, sizes = engine.run, []

    def run(model, tokens, run_input, prompts, **kwargs):
        if kwargs.get("row_sites") is not None:
            sizes.append(len(prompts))
            if len(prompts) > max_rows:
                raise error("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
        return real_run(model, tokens, run_input, prompts, **kwargs)

    monkeypatch.setattr(engine, "run", run)
    monkeypatch.setattr(exact, "run", run)  # the exact sweep's own binding of engine.run
    return sizes


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError, engine.OUT_OF_MEMORY], ids=["cuda", "torch"])
def test_out_of_memory_halves_the_rows_per_pass_and_gives_the_same_results(monkeypatch, error):
    model = build("gpt2")
    unconstrained = it.patch(model, PAIRS, "attn_head")
    same_batches = it.patch(model, PAIRS, "attn_head", batch_size=3)
    sizes = _memory_limited_run(monkeypatch, 5, error)
    result = it.patch(model, PAIRS, "attn_head")
    assert unconstrained.settings["rows_per_pass"] > 12 and result.settings["rows_per_pass"] == 3
    assert sizes[:3] == [12, 6, 3] and max(sizes[3:]) == 3  # 12 rows per layer: halved twice, then kept
    for metric in ("prob", "logit_diff", "kl"):
        np.testing.assert_array_equal(result.effects[metric], same_batches.effects[metric])
        np.testing.assert_allclose(result.effects[metric], unconstrained.effects[metric], rtol=0, atol=1e-5)


def test_out_of_memory_on_a_single_row_says_the_model_does_not_fit(monkeypatch):
    _memory_limited_run(monkeypatch, 0, torch.cuda.OutOfMemoryError)
    with pytest.raises(DeviceMemoryError, match="single patched run .* do not fit. Use a device with more memory"):
        it.patch(build("gpt2"), PAIRS, "mlp")


# -- determinism -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("corruption", ["str", "gn"])
def test_the_same_seed_gives_bit_identical_results_on_cpu(corruption):
    one = it.patch(build("gpt2"), PAIRS, "attn_head", corruption, seed=7)
    two = it.patch(build("gpt2"), PAIRS, "attn_head", corruption, seed=7)  # a fresh model and fresh runs
    for metric in ("prob", "logit_diff", "kl"):
        assert np.array_equal(one.effects[metric], two.effects[metric])
    assert np.array_equal(one.ld_clean, two.ld_clean) and np.array_equal(one.ld_corrupted, two.ld_corrupted)


# -- files under faults and concurrency ------------------------------------------------------------------


def _synthetic(value: float, n_layers: int = 8, seq_len: int = 16, n_heads: int = 8, n_prompts: int = 8) -> PatchResult:
    """A PatchResult whose every effect is ``value``, so a mixed or torn file cannot pass for a whole one."""
    grid = make_grid("attn_head", "each", n_layers=n_layers, n_heads=n_heads, seq_len=seq_len)
    effects = {m: np.full((n_prompts, *grid.shape), value) for m in ("prob", "logit_diff", "kl")}
    return PatchResult(metric="prob", effects=effects, ld_clean=np.ones(n_prompts), ld_corrupted=np.zeros(n_prompts),
                       grid=grid, settings={"component": "attn_head", "positions": "each", "writer": value})


def _run_children(targets: list) -> list:
    processes = [FORK.Process(target=target) for target in targets]
    for process in processes:
        process.start()
    return processes


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_concurrent_processes_writing_one_cache_entry_never_corrupt_it(tmp_path):
    cache, settings = SweepCache(tmp_path), {"model_fingerprint": "m", "dataset": "d", "component": "attn_head"}
    key, writers = sweep_key(settings), (1.0, 2.0, 3.0, 4.0)
    results = {value: _synthetic(value) for value in writers}

    def write(value: float) -> None:
        for round_ in range(8):
            if round_ % 2:
                cache.write(key, settings, results[value])  # unlocked: atomic replace alone
            else:
                with cache.locked(key):  # as the plugin does: read under the key's lock, write when missing
                    cache.read(key, settings)
                    cache.write(key, settings, results[value])

    processes = _run_children([lambda v=v: write(v) for v in writers])
    while any(p.is_alive() for p in processes):
        result, problem = cache.read(key, settings)
        assert problem is None
        if result is not None:
            value = result.settings["writer"]
            assert value in writers and all(np.all(e == value) for e in result.effects.values())
    for process in processes:
        process.join()
        assert process.exitcode == 0
    result, problem = cache.read(key, settings)
    assert problem is None and result.settings["writer"] in writers
    assert [p.suffix for p in cache.sweeps.iterdir() if p.name.startswith(".")] == []  # no temporaries left


def test_concurrent_processes_rewriting_one_baseline_leave_a_whole_one(tmp_path):
    path, writers = tmp_path / "__baselines__" / "claims" / "heads.json", (1.0, 2.0, 3.0)
    results = {value: _synthetic(value) for value in writers}
    texts = {render(snapshot(result)) for result in results.values()}

    def write(value: float) -> None:
        for _ in range(6):
            check_baseline(results[value], path, update=True)

    check_baseline(results[1.0], path, update=True)
    processes = _run_children([lambda v=v: write(v) for v in writers])
    while any(p.is_alive() for p in processes):
        assert path.read_text() in texts
    for process in processes:
        process.join()
        assert process.exitcode == 0
    assert path.read_text() in texts and _leftovers(path.parent) == []
    assert json.loads(path.read_text())["settings"]["writer"] in writers


def test_a_process_killed_while_rewriting_a_baseline_leaves_the_old_or_the_new_one(tmp_path):
    path = tmp_path / "__baselines__" / "claims" / "heads.json"
    old, new = _synthetic(1.0, 16, 32, 16), _synthetic(2.0, 16, 32, 16)  # 8192 effects, ~300 kB of JSON
    texts = {render(snapshot(result)) for result in (old, new)}
    check_baseline(old, path, update=True)

    def rewrite_forever() -> None:
        real_fsync = os.fsync

        def slow_fsync(fd: int) -> None:  # a slow disk (in this child only): kills often land mid-write
            time.sleep(0.03)
            real_fsync(fd)

        os.fsync = slow_fsync
        while True:
            for result in (new, old):
                check_baseline(result, path, update=True)

    rng, kills, torn = random.Random(0), 0, 0
    deadline = time.monotonic() + 15
    while kills < 8 or (torn < 2 and time.monotonic() < deadline):
        (child,) = _run_children([rewrite_forever])
        time.sleep(rng.uniform(0.02, 0.3))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        kills += 1
        assert child.exitcode == -signal.SIGKILL
        text = path.read_text()
        assert text in texts, f"kill {kills} left a damaged baseline"
        assert check_baseline(old if json.loads(text)["settings"]["writer"] == 1.0 else new, path) == "matched"
        leftovers = _leftovers(path.parent)
        torn += bool(leftovers)  # killed between creating its temporary file and renaming it
        for name in leftovers:
            (path.parent / name).unlink()
    assert torn >= 1, f"none of {kills} kills landed inside a write; the test did not exercise the window"


# -- fuzzing ---------------------------------------------------------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
YAML_PATH = Path(__file__).parent / "fuzz" / "claims.yaml"  # never written: the loader only looks up paths
KEYS = sorted({*TOP_KEYS, *CLAIM_KEYS, *SWEEP_KEYS, *EXPECT_KEYS, "file", "n", "seed", "k", "layers", "pairs"})
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(), st.text(max_size=12),
    st.sampled_from(["9.9", "0.10", "organism", "mlp.1", "str", "gn", "kl", "all", "each", "a" * 300, "x\x00y"]),
)
TREES = st.recursive(
    SCALARS,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6), st.integers()), kids, max_size=5),
    ),
    max_leaves=25,
)
YAMLISH = st.lists(
    st.one_of(
        st.sampled_from([*":-[]{},&*!|>'\"%@`#?\n \t", "  ", "- ", ": ", "<<", "!!", "&a", "*a", "~", *KEYS]),
        st.text(max_size=3),
    ),
    max_size=60,
).map("".join)


def _assert_claims_or_problems(text: str) -> None:
    try:
        parsed = parse_claims(text, YAML_PATH)
    except InterpError:
        return
    if parsed is None:  # a prompt-pairs file, not a claims file
        return
    claims, problems = parsed
    assert all(isinstance(claim, Claim) for claim in claims)
    assert all(isinstance(p, Problem) and isinstance(p.line, int) and p.line >= 1 and p.message for p in problems)


@FUZZ
@given(text=YAMLISH)
@example(text="[" * 5000)  # nests deeper than the parser's recursion: a problem, not a RecursionError
def test_fuzz_yaml_claims_text_gives_claims_or_problems(text):
    _assert_claims_or_problems(text)


@FUZZ
@given(top=st.dictionaries(st.sampled_from(TOP_KEYS), TREES, max_size=3), claims=st.one_of(TREES, st.lists(
    st.dictionaries(st.sampled_from(KEYS), TREES, max_size=6), max_size=3)))
@example(top={"model": "m", "task": {"file": "a" * 300}}, claims=[{"name": "a", "expect": {"detected": ["0.1"]}}])
def test_fuzz_yaml_claims_structures_give_claims_or_problems(top, claims):
    _assert_claims_or_problems(yaml.safe_dump({**top, "claims": claims}, allow_unicode=True))


WORD = st.sampled_from([*WORDS[1:], "Mary", "Tom", ",", "the"])
PROMPTS = st.one_of(st.text(max_size=30), st.lists(WORD, max_size=12).map(" ".join))
TOKEN = st.one_of(st.text(max_size=6), WORD, st.integers(-5, 40), st.booleans(), st.none())
ANYTHING = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 40), st.floats(), st.text(max_size=5), st.binary(max_size=3)),
    lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=3), kids, max_size=3)),
    max_leaves=8,
)
TOKENIZERS = (word_tokenizer(), tiny_gpt2()[1])


@st.composite
def pair_arguments(draw) -> dict:
    """PromptPairs keyword arguments: mostly well-formed lists of the right length, sometimes anything."""
    n = draw(st.integers(0, 3))

    def sized(inner):
        return st.one_of(st.lists(inner, min_size=n, max_size=n), ANYTHING)

    answers = sized(st.one_of(TOKEN, st.lists(TOKEN, max_size=3)))
    spans = st.one_of(st.lists(st.tuples(st.integers(-2, 40), st.integers(-2, 40)), min_size=n, max_size=n), ANYTHING)
    return {
        "clean": draw(sized(PROMPTS)),
        "corrupted": draw(st.one_of(st.none(), sized(PROMPTS))),
        "answer": draw(answers),
        "wrong": draw(answers),
        "corrupt_positions": draw(st.one_of(st.none(), sized(st.lists(st.integers(-2, 20), max_size=3)))),
        "spans": draw(st.one_of(st.none(), st.dictionaries(st.sampled_from(["corrupt", "S2"]), spans), ANYTHING)),
    }


@FUZZ
@given(arguments=pair_arguments())
@example(arguments={"clean": ["a"], "corrupted": None, "answer": ["b"], "wrong": ["c"], "spans": True})  # AttributeError
@example(arguments={"clean": ["a"], "corrupted": None, "answer": [b"b"], "wrong": ["c"]})  # bytes read as token ids
def test_fuzz_prompt_pairs_construction_and_tokenization(arguments):
    try:
        pairs = PromptPairs(**arguments)
    except InterpError:
        return
    assert isinstance(pairs, PromptPairs)
    assert PromptPairs.from_records(pairs.to_records()).to_records() == pairs.to_records()
    for tokenizer in TOKENIZERS:
        try:
            tokens = pairs.tokenize(tokenizer)
        except InterpError:
            continue
        assert isinstance(tokens, TokenizedPairs) and tokens.clean_ids.shape[0] == len(pairs)


@FUZZ
@given(records=st.lists(st.one_of(
    st.dictionaries(st.sampled_from(["clean", "corrupted", "answer", "wrong", "corrupt_positions", "spans", "x"]),
                    st.one_of(PROMPTS, TOKEN, ANYTHING), max_size=6),
    ANYTHING,
), max_size=3))
@example(records=[{"clean": "a", "answer": "b", "wrong": "c", "spans": "0"}])  # once raised TypeError
def test_fuzz_prompt_pairs_from_records(records):
    try:
        pairs = PromptPairs.from_records(records)
    except InterpError:
        return
    assert isinstance(pairs, PromptPairs) and len(pairs) == len(records)


def test_default_batches_follow_the_memory_available(monkeypatch):
    """CPU: 512 MiB at most, less when memory is short; GPU: half the free memory, to fill the device."""
    model = build("gpt2")
    big = it.patch(model, PAIRS, "attn_head").settings["rows_per_pass"]
    monkeypatch.setattr(engine, "_available_memory", lambda: 4 * 2**10)  # 4 KiB free: one row per pass
    tight = it.patch(model, PAIRS, "attn_head")
    assert tight.settings["rows_per_pass"] == 1 < big
    monkeypatch.setattr(engine, "_available_memory", lambda: None)  # not Linux: the CPU default
    assert engine.batch_bytes(torch.device("cpu")) == engine.CPU_BATCH_BYTES
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (40 * 2**30, 80 * 2**30))
    assert engine.batch_bytes(torch.device("cuda")) == 20 * 2**30


def test_evaluate_says_when_it_skips_the_corrupted_run_over_a_length_mismatch():
    pairs = it.PromptPairs(PAIRS.clean, [*PAIRS.corrupted[:2], PAIRS.corrupted[2] + " the"], PAIRS.answer, PAIRS.wrong)
    evaluation = it.evaluate(build("gpt2"), pairs)
    assert evaluation.corrupted_logit_diff is None
    assert evaluation.corrupted_skipped.startswith("1 of 3 pairs tokenize to different lengths")
    assert "corrupted run        skipped: 1 of 3 pairs tokenize to different lengths" in str(evaluation)
    assert it.evaluate(build("gpt2"), PAIRS).corrupted_skipped is None
