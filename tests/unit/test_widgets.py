import logging

import pandas as pd
import pytest

w = pytest.importorskip("ipywidgets", reason="ipywidgets is not installed here (install labkit[lab])")

from labkit import widgets


def double(n: int = 1) -> pd.DataFrame:
    if n < 0:
        raise ValueError("n must be >= 0")
    return pd.DataFrame({"n": [n], "double": [2 * n]})


def test_panel_builds_controls_from_short_specs():
    p = widgets.panel(double, n=(0, 10), flag=True, choice=["a", "b"], text="x")
    c = p.controls
    assert isinstance(c["n"], w.IntSlider) and (c["n"].min, c["n"].max) == (0, 10)
    assert isinstance(c["flag"], w.Checkbox)
    assert isinstance(c["choice"], w.Dropdown) and c["choice"].value == "a"
    assert isinstance(c["text"], w.Text)
    with pytest.raises(TypeError, match="cannot build a control"):
        widgets.panel(double, n=object())


def test_controls_start_at_the_functions_defaults():
    def f(temperature: float = 0.7, method: str = "top-p", steps: int = 12):
        return temperature, method, steps

    p = widgets.panel(f, temperature=(0.1, 2.0, 0.1), method=["greedy", "top-p"], steps=(1, 48))
    assert p.controls["temperature"].value == pytest.approx(0.7)
    assert p.controls["method"].value == "top-p" and p.controls["steps"].value == 12


def test_run_shows_the_result():
    p = widgets.panel(double, n=(0, 10))
    p.controls["n"].value = 4
    p.run()
    assert p.last_result["double"].item() == 8


def test_errors_show_in_red_and_are_logged_not_raised(caplog):
    p = widgets.panel(double, n=w.IntText(value=-1))
    with caplog.at_level(logging.ERROR, logger="labkit.widgets"):
        p.run()
    assert isinstance(p.last_result, ValueError)
    assert "n must be >= 0" in caplog.text
    html = widgets.error_html(p.last_result)
    assert "color:#b00020" in html and "ValueError" in html


def test_headless_call_raises():
    with pytest.raises(ValueError, match="n must be >= 0"):
        double(-1)


def test_fixed_arguments_are_passed_on_every_run_without_a_control():
    def f(n: int = 1, device: str = "cpu") -> pd.DataFrame:
        return pd.DataFrame({"n": [n], "device": [device]})

    p = widgets.panel(f, n=(0, 10), device=widgets.fixed("cuda:1"))
    assert set(p.controls) == {"n"}  # nothing to click for the device
    p.controls["n"].value = 3
    p.run()
    assert p.last_result.device.item() == "cuda:1" and p.last_result.n.item() == 3
