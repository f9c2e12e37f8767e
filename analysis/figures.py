"""Owns the report's plotly conventions shared by the sections' figures: error bars from a
table's interval columns, titles wrapped to a phone's width, and a figure's HTML fragment."""

from __future__ import annotations

import html
import textwrap
from typing import Any

import pandas as pd

# Characters per title line: 40 at 14 px fit a 390 px phone screen (issue 21: plotly never
# wraps a title, so longer ones were cut at the right edge).
TITLE_CHARACTERS = 40


def error_bars(table: pd.DataFrame, centre: str) -> dict[str, Any]:
    """Plotly's asymmetric error bars from a table's ``ci_low`` / ``ci_high`` around ``centre``.

    >>> bars = error_bars(pd.DataFrame({"m": [0.6], "ci_low": [0.5], "ci_high": [0.8]}), "m")
    >>> bars["array"].round(2).tolist(), bars["arrayminus"].round(2).tolist()
    ([0.2], [0.1])
    """
    return {
        "type": "data",
        "symmetric": False,
        "array": table["ci_high"] - table[centre],
        "arrayminus": table[centre] - table["ci_low"],
    }


def figure_title(text: str) -> dict[str, Any]:
    """A figure title broken into lines that fit a phone's width, with room made for them.

    >>> figure_title("MUSHRA score per condition (95% t CI, after post-screening)")["text"]
    'MUSHRA score per condition (95% t CI,<br>after post-screening)'
    """
    lines = textwrap.wrap(text, TITLE_CHARACTERS, break_on_hyphens=False)
    text = "<br>".join(html.escape(line, quote=False) for line in lines)
    # Hung from the top of the figure and growing down, the margin made as tall as the lines:
    # plotly centres a title on a fixed line otherwise, and its first lines leave the figure.
    # 20 px above it: plotly lifts a title of several lines by about 10 px (measured).
    return {"text": text, "font": {"size": 14}, "automargin": True, "yref": "container",
            "y": 1, "yanchor": "top", "pad": {"t": 20}}


def wrap_title(figure: Any) -> Any:
    """The figure with its title wrapped by :func:`figure_title`."""
    figure.update_layout(title=figure_title(figure.layout.title.text or ""))
    return figure


def figure_html(figure: Any, first: bool) -> str:
    """The figure as a ``<div>``: plotly.js is inlined once, with the first figure, so the file
    works offline; responsive: the figure follows the column's width instead of plotly's 700 px."""
    return figure.to_html(full_html=False, include_plotlyjs=first, config={"responsive": True})
