"""Results in notebooks: HTML summaries with an inline heatmap (a table without matplotlib), matplotlib Figures
from the same builder the report files use, and pandas DataFrames with the columns a TransformerLens user expects."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

import interp_tests as it
from interp_tests import reports
from interp_tests.circuit_patching import completeness, minimality
from interp_tests.errors import PandasUnavailableError, PlotsUnavailableError
from test_engine import PAIRS, build


@pytest.fixture(scope="module")
def model():
    return build("gpt2")


@pytest.fixture(scope="module")
def heads(model):
    return it.patch(model, PAIRS, "attn_head")


def test_patch_result_dataframe_has_one_row_per_component_with_its_coordinates(model, heads):
    frame = heads.to_dataframe()
    assert list(frame.columns) == ["label", "layer", "head", "effect", "z", "rank"]
    assert len(frame) == model.n_layers * model.n_heads
    row = frame.set_index("label").loc["2.1"]
    assert (row["layer"], row["head"]) == (2, 1)
    assert row["effect"] == pytest.approx(heads["2.1"]) and row["z"] == pytest.approx(heads.zscore("2.1"))
    assert row["rank"] == heads.rank("2.1")
    np.testing.assert_allclose(frame["effect"].to_numpy().reshape(heads.shape), heads.mean)
    each = it.patch(model, PAIRS[[0, 1]], "mlp", positions="each").to_dataframe()  # prompts of one length
    assert list(each.columns) == ["label", "layer", "position", "effect", "z", "rank"]
    assert each.set_index("label").loc["mlp.1@4", ["layer", "position"]].tolist() == [1, 4]


def test_plot_is_the_figure_the_report_file_draws(heads, tmp_path):
    figure = heads.plot(title="t")
    assert isinstance(figure, Figure)
    path = reports.heatmap(heads, tmp_path / "h.png", title="t")
    assert path.read_bytes() == reports.png_bytes(heads.plot(title="t"))


def test_html_shows_settings_top_components_and_an_inline_heatmap(heads, monkeypatch):
    page = heads._repr_html_()
    top = heads.top(1)[0][0]
    assert "component=attn_head" in page and f"<td>{top}</td>" in page and "data:image/png;base64," in page

    def missing():
        raise PlotsUnavailableError("no matplotlib")

    monkeypatch.setattr(reports, "require_matplotlib", missing)
    page = heads._repr_html_()
    assert "data:image/png" not in page and f"<td>{top}</td>" in page


def test_without_pandas_to_dataframe_names_the_extra(heads, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(PandasUnavailableError, match=r"pip install 'interp-tests\[pandas\]'"):
        heads.to_dataframe()


def test_grid_dataframe_plot_and_html(model):
    g = it.grid(model, PAIRS, "mlp", corruptions=["str"], metrics=["logit_diff", "prob"])
    frame = g.to_dataframe()
    assert list(frame.columns) == ["corruption", "corrupt_tokens", "metric", "label", "layer", "effect", "z", "rank",
                                   "detected_positive", "detected_negative"]
    assert len(frame) == 2 * model.n_layers
    for setting, result in g.results.items():
        part = frame[frame.metric == setting.metric]
        np.testing.assert_allclose(part["effect"], result.mean)
        assert part[part.detected_positive].label.tolist() == sorted(result.detected(g.sd))
    assert isinstance(g.plot(), Figure)
    assert "data:image/png;base64," in g._repr_html_() and "STR / logit_diff" in g._repr_html_()


def test_circuit_results_dataframes_plots_and_html(model):
    result = it.circuit_patch(model, PAIRS, ["0.0", "1.1", "mlp.2"])
    frame = result.to_dataframe()
    assert list(frame.columns) == ["node", "kind", "layer", "head", "position", "contribution"]
    assert dict(zip(frame.node, frame.contribution)) == pytest.approx(result.contributions)
    assert frame.set_index("node").loc["mlp.2", "kind"] == "mlp"
    assert isinstance(result.plot(), Figure)
    page = result._repr_html_()
    assert "sufficiency of circuit" in page and "data:image/png;base64," in page
    search = completeness(model, PAIRS, ["0.0", "1.1"], samples=3)
    rows = search.to_dataframe()
    assert len(rows) == len(search.rows) and rows.normalised.max() == pytest.approx(search.incompleteness)
    assert isinstance(search.plot(), Figure) and "completeness" in search._repr_html_()
    nodes = minimality(model, PAIRS, ["0.0", "1.1"], samples=2)
    by_node = nodes.to_dataframe().groupby("for").normalised.max().to_dict()
    assert by_node == pytest.approx({node: value for node, (_, value) in nodes.by_node().items()})
