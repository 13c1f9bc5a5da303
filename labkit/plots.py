"""Plotly figures with one look across the labs, rendered in JupyterLab, Colab and exported HTML.

`setup()` picks renderers: JupyterLab reads plotly's JSON mimetype; exported HTML (papermill ->
nbconvert) needs plotly.js inside the page, which the "notebook" renderer adds; Colab has its own.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

TEMPLATE = "plotly_white"
# 12 distinguishable colours (first six for the common case), so stacked bars never repeat a colour.
COLORS = ("#2E6FBA", "#E4572E", "#17A398", "#F3A712", "#6C4AB6", "#8C8C8C",
          "#9BC53D", "#C3423F", "#5BC0EB", "#FDE74C", "#B56576", "#404E4D")


@dataclass
class Measured:
    """What every widget-friendly lab function returns: the numbers and a picture of them."""

    table: pd.DataFrame
    figure: go.Figure


def in_colab() -> bool:
    return "google.colab" in sys.modules


def setup() -> str:
    """Choose the plotly renderer for where we run; returns its name."""
    if in_colab():
        renderer = "colab"
    elif os.environ.get("LABKIT_STATIC_PLOTS") == "1":
        renderer = "png"  # e.g. for a PDF export (needs kaleido)
    else:
        renderer = "plotly_mimetype+notebook"
    pio.renderers.default = renderer
    pio.templates.default = TEMPLATE
    if renderer == "plotly_mimetype+notebook" and _in_kernel():
        from plotly.offline import init_notebook_mode

        # Inline plotly.js now rather than at the first fig.show(): LiveFigure's raw bundles need it.
        init_notebook_mode(connected=False)
    return renderer


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # plain Python without IPython (e.g. a bare GPU box)
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def style(fig: go.Figure, title: str, subtitle: str | None = None) -> go.Figure:
    """Give a figure the lab's look: title (and a smaller subtitle), template, colours, size, legend below.

    Args:
        fig: any plotly figure. title: its title. subtitle: a second, smaller line (e.g. the hardware).
    Returns:
        the same figure, restyled.
    """
    text = title if not subtitle else f"{title}<br><sup>{subtitle}</sup>"
    fig.update_layout(
        title=text, template=TEMPLATE, colorway=list(COLORS), height=420,
        margin=dict(l=60, r=30, t=80, b=50), legend=dict(orientation="h", y=-0.2),
    )  # fmt: skip
    return fig


def _hardware(df: pd.DataFrame) -> str | None:
    return df.attrs.get("hardware")


def line(df: pd.DataFrame, x: str, ys: list[str], title: str, xlabel: str | None = None,
         ylabel: str | None = None, log_x: bool = False, log_y: bool = False) -> go.Figure:
    """One line per column in `ys` (rows with NaN in a column are skipped for that line).

    Args:
        df: the table. x: the column on the x axis. ys: columns drawn as lines. title: the figure's title.
        xlabel, ylabel: axis titles (default: the column names). log_x, log_y: logarithmic axes.
    Returns:
        a plotly Figure in the lab's style.
    """
    fig = go.Figure()
    for y in ys:
        part = df[[x, y]].dropna()
        fig.add_trace(go.Scatter(x=part[x], y=part[y], mode="lines+markers", name=y))
    fig.update_xaxes(title=xlabel or x, type="log" if log_x else None)
    fig.update_yaxes(title=ylabel or (ys[0] if len(ys) == 1 else None), type="log" if log_y else None)
    return style(fig, title, _hardware(df))


def bars(df: pd.DataFrame, x: str, y: str, title: str, color: str | None = None,
         ylabel: str | None = None, text_format: str = ".3g") -> go.Figure:
    """Bars of `y` per `x` (grouped by `color` if given), values printed on the bars.

    Args:
        df: the table. x: the category column. y: the bar heights. title: the figure's title.
        color: a column to group bars by (one colour per value). ylabel: the y axis title.
        text_format: d3 format of the printed values.
    Returns:
        a plotly Figure in the lab's style.
    """
    fig = go.Figure()
    groups = [(None, df)] if color is None else list(df.groupby(color, sort=False))
    for name, part in groups:
        fig.add_trace(go.Bar(x=part[x], y=part[y], name=str(name) if name is not None else y,
                             text=part[y], texttemplate=f"%{{text:{text_format}}}", textposition="outside"))
    fig.update_layout(barmode="group", showlegend=color is not None)
    fig.update_yaxes(title=ylabel or y)
    return style(fig, title, _hardware(df))


def dual_axis(df: pd.DataFrame, x: str, left: str, right: str, title: str, log_x: bool = False) -> go.Figure:
    """Two quantities with different units over one x (e.g. latency and throughput vs batch)."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=df[x], y=df[left], name=left, mode="lines+markers"))
    fig.add_trace(go.Scatter(x=df[x], y=df[right], name=right, mode="lines+markers", yaxis="y2"))
    fig.update_layout(
        xaxis=dict(title=x, type="log" if log_x else None),
        yaxis=dict(title=left, color=COLORS[0]),
        yaxis2=dict(title=right, overlaying="y", side="right", color=COLORS[1]),
    )  # fmt: skip
    return style(fig, title, _hardware(df))


def mime_bundle(fig: go.Figure) -> dict:
    """A figure as a raw display bundle: plotly JSON for JupyterLab, HTML for exports and Colab."""
    import json

    plotlyjs = "cdn" if in_colab() else False  # elsewhere setup()'s renderer already loaded plotly.js
    return {
        "application/vnd.plotly.v1+json": json.loads(fig.to_json()),
        "text/html": pio.to_html(fig, include_plotlyjs=plotlyjs, full_html=False),
    }


class LiveFigure:
    """A figure that redraws in place, e.g. a loss curve during training.

    (`display(fig, display_id=True)` would not do: plotly figures display themselves and drop the
    display id, so every update would add another figure.)
    """

    def __init__(self, fig: go.Figure):
        from IPython.display import display

        self._handle = display(mime_bundle(fig), raw=True, display_id=True)

    def update(self, fig: go.Figure) -> None:
        self._handle.update(mime_bundle(fig), raw=True)

