"""Results in notebooks: HTML summaries with an inline heatmap, and pandas DataFrames.

Both extras are optional: without matplotlib the HTML shows its tables only; without pandas
``to_dataframe`` raises ``PandasUnavailableError`` naming the install command.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .errors import PandasUnavailableError, PlotsUnavailableError
from .reports import png_bytes

INLINE_DPI = 80  # small enough that a notebook cell stays readable


def dataframe(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> Any:
    """A pandas DataFrame of ``rows`` with ``columns`` in that order."""
    try:
        import pandas
    except ImportError:
        raise PandasUnavailableError(
            "to_dataframe() needs pandas, which is not installed. Install the pandas extra: "
            "pip install 'interp-tests[pandas]'."
        ) from None
    return pandas.DataFrame(list(rows), columns=list(columns))


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table; floats are shown to 4 decimals."""

    def cell(value: Any) -> str:
        return html.escape(f"{value:.4f}" if isinstance(value, float) else str(value))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def inline_figure(plot: Callable[[], Any]) -> str:
    """``plot()``'s figure as an inline base64 PNG, or '' when matplotlib is not installed."""
    try:
        figure = plot()
    except PlotsUnavailableError:
        return ""
    data = base64.b64encode(png_bytes(figure, dpi=INLINE_DPI)).decode("ascii")
    return f'<img src="data:image/png;base64,{data}"/>'


def block(title: str, lines: Sequence[str], *parts: str) -> str:
    """A titled HTML summary: text lines (escaped), then tables and figures (already HTML)."""
    text = "".join(f"<div>{html.escape(line)}</div>" for line in lines)
    return f"<div><strong>{html.escape(title)}</strong>{text}{''.join(parts)}</div>"
