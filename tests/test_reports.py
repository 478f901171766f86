"""Sweep reports: heatmap PNGs for every grid kind, JSON that round-trips, atomic writes, matplotlib optional."""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from interp_tests import reports
from interp_tests.choices import METRICS
from interp_tests.components import make_grid
from interp_tests.errors import InterpError
from interp_tests.results import PatchResult

GRID_KINDS = {  # (component, positions) for each grid shape a sweep can have
    "heads": ("attn_head", "all"),
    "heads_by_position": ("attn_head", "each"),
    "layers": ("mlp", "all"),
    "layers_by_position": ("resid", "each"),
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def planted_result(
    component: str = "attn_head", positions: str | int = "all", *, strength: float = 1.0, n_prompts: int = 8
) -> PatchResult:
    """A 12-layer, 4-head, 6-position sweep with one strong positive and one strong negative component.

    All other effects are small noise, so the two planted components are |z| >= 2 and nothing else is.
    """
    grid = make_grid(component, positions, n_layers=12, n_heads=4, seq_len=6)
    per_prompt = np.random.default_rng(0).normal(0, 0.02, (n_prompts, *grid.shape))
    flat = per_prompt.reshape(n_prompts, -1)
    flat[:, 1] += strength
    flat[:, -2] -= strength
    settings = {
        "model": "planted", "component": component, "positions": positions, "corruption": "str",
        "direction": "denoise", "window": 1, "n_prompts": n_prompts, "seed": 0,
    }
    return PatchResult(
        metric="prob", effects={m: per_prompt for m in METRICS}, ld_clean=np.full(n_prompts, 2.0),
        ld_corrupted=np.zeros(n_prompts), grid=grid, settings=settings,
    )


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize("kind", GRID_KINDS)
def test_heatmap_is_a_readable_png_for_every_grid_kind(tmp_path: Path, kind: str) -> None:
    from matplotlib.image import imread

    result = planted_result(*GRID_KINDS[kind])
    path = reports.heatmap(result, tmp_path / "map.png", title=kind)
    assert path == tmp_path / "map.png"
    width, height = png_size(path)
    assert 400 <= width <= 4000 and 250 <= height <= 4000
    pixels = imread(path)
    assert pixels.shape[:2] == (height, width)
    assert pixels.std() > 0.05  # something was drawn
    assert [p.name for p in tmp_path.iterdir()] == ["map.png"]


def test_heatmap_creates_missing_directories(tmp_path: Path) -> None:
    path = reports.heatmap(planted_result(), tmp_path / "a" / "b" / "map.png")
    assert png_size(path)[0] > 0


def test_json_round_trips_the_result(tmp_path: Path) -> None:
    result = planted_result("attn_head", "each")
    data = json.loads(reports.result_json(result, tmp_path / "r.json").read_text())
    assert data["settings"] == result.settings
    assert data["metric"] == "prob"
    assert data["shape"] == list(result.shape) and data["axes"] == ["layer", "pos", "head"]
    assert data["labels"] == result.labels
    np.testing.assert_allclose(np.array(data["mean"]), result.mean)
    np.testing.assert_allclose(np.array(data["zscores"]), result.zscores)
    assert [row["label"] for row in data["top"]] == [label for label, _ in result.top(10)]
    assert data["top"][0]["z"] == pytest.approx(result.zscore(data["top"][0]["label"]))


@pytest.mark.parametrize("sd", [1.0, 2.0, 3.0])
def test_json_detected_matches_result(tmp_path: Path, sd: float) -> None:
    result = planted_result()
    data = json.loads(reports.result_json(result, tmp_path / "r.json", sd=sd).read_text())
    assert data["sd"] == sd
    assert data["detected"] == {"positive": result.detected(sd, "positive"), "negative": result.detected(sd, "negative")}
    if sd == 2.0:
        assert data["detected"] == {"positive": ["0.1"], "negative": ["11.2"]}


def test_json_writes_non_finite_numbers_as_null(tmp_path: Path) -> None:
    result = planted_result()
    result.effects["prob"][0, 0, 0] = np.nan

    def refuse(constant: str) -> None:
        raise AssertionError(f"invalid JSON constant {constant}")

    data = json.loads(reports.result_json(result, tmp_path / "r.json").read_text(), parse_constant=refuse)
    assert data["mean"][0][0] is None


def test_json_writes_numpy_settings_as_numbers(tmp_path: Path) -> None:
    result = planted_result()
    result.settings["noise_scale"] = np.float32(3.0)
    data = json.loads(reports.result_json(result, tmp_path / "r.json").read_text())
    assert data["settings"]["noise_scale"] == 3.0


def test_json_replaces_an_existing_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    target.write_text("stale")
    reports.result_json(planted_result(), target)
    assert json.loads(target.read_text())["labels"][0] == "0.0"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_failed_write_keeps_the_old_file_and_removes_the_temp_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "r.json"
    target.write_text("previous report")

    def disk_full(fd: int) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        reports.result_json(planted_result(), target)
    assert target.read_text() == "previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_sweep_report_writes_png_and_json_named_after_the_claim(tmp_path: Path) -> None:
    name = "tests/test_ioi.py::test_heads[attn_head-str]"
    written = reports.write_sweep_report(planted_result(), tmp_path / "reports", name)
    assert [p.name for p in written] == ["tests-test_ioi.py-test_heads-attn_head-str.json",
                                         "tests-test_ioi.py-test_heads-attn_head-str.png"]
    assert all(p.is_file() for p in written)


def test_slugs_are_safe_short_and_distinct() -> None:
    assert reports.slugify("Name mover 3.1 is detected!") == "name-mover-3.1-is-detected"
    assert reports.slugify("///") == "sweep"
    long_a, long_b = "claim " * 30 + "a", "claim " * 30 + "b"
    assert len(reports.slugify(long_a)) <= reports.MAX_SLUG_LENGTH
    assert reports.slugify(long_a) != reports.slugify(long_b)


def test_without_matplotlib_json_is_written_with_one_warning(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.warns(UserWarning, match="PNG heatmaps skipped") as record:
        written = reports.write_sweep_report(planted_result(), tmp_path, "claim")
    assert len(record) == 1 and "interp-tests[plots]" in str(record[0].message)
    assert [p.name for p in written] == ["claim.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["claim.json"]
    with pytest.raises(InterpError, match="pip install"):
        reports.heatmap(planted_result(), tmp_path / "map.png")
