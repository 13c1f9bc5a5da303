import pandas as pd
import plotly.io as pio
import pytest

from labkit import measure, plots


def test_setup_picks_a_renderer_that_works_in_lab_and_html():
    assert plots.setup() == "plotly_mimetype+notebook"
    assert pio.renderers.default == "plotly_mimetype+notebook"


def test_line_skips_missing_points_per_series():
    df = measure.results_frame([
        {"step": 0, "train": None, "val": 8.0},
        {"step": 1, "train": 7.0, "val": None},
        {"step": 2, "train": 6.0, "val": 6.5},
    ])  # fmt: skip
    fig = plots.line(df, "step", ["train", "val"], "Loss")
    assert [t.name for t in fig.data] == ["train", "val"]
    assert list(fig.data[0].x) == [1, 2] and list(fig.data[1].x) == [0, 2]
    assert df.attrs["hardware"] in fig.layout.title.text  # every chart says where it was measured


def test_bars_group_by_color():
    df = pd.DataFrame({"metric": ["ms", "ms"], "value": [3.0, 1.0], "phase": ["train", "infer"]})
    fig = plots.bars(df, "metric", "value", "Costs", color="phase")
    assert [t.name for t in fig.data] == ["train", "infer"]
    assert fig.layout.barmode == "group"


def test_dual_axis_uses_two_y_axes():
    df = pd.DataFrame({"b": [1, 2], "lat": [1.0, 2.0], "thr": [10.0, 15.0]})
    fig = plots.dual_axis(df, "b", "lat", "thr", "Batch")
    assert fig.data[1].yaxis == "y2" and fig.layout.yaxis2.overlaying == "y"


def test_live_figure_updates_in_place(monkeypatch):
    pytest.importorskip("IPython", reason="IPython is not installed here (install labkit[lab])")
    import IPython.display

    calls = []

    class Handle:
        def update(self, obj, raw=False):
            calls.append(("update", obj, raw))

    def fake_display(obj, raw=False, display_id=False):
        calls.append(("display", obj, raw, display_id))
        return Handle()

    monkeypatch.setattr(IPython.display, "display", fake_display, raising=True)
    df = pd.DataFrame({"step": [0, 1], "loss": [2.0, 1.0]})
    live = plots.LiveFigure(plots.line(df, "step", ["loss"], "Loss"))
    live.update(plots.line(df, "step", ["loss"], "Loss 2"))
    assert [c[0] for c in calls] == ["display", "update"]  # one output, redrawn
    bundle = calls[1][1]
    assert bundle["application/vnd.plotly.v1+json"]["layout"]["title"]["text"].startswith("Loss 2")
    assert "Plotly.newPlot" in bundle["text/html"] and "<html" not in bundle["text/html"]
