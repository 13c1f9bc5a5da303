"""The pattern every lab uses: a plain typed function, wrapped in controls for live exploration.

    def measure_batch(model: str = "tiny-bloom", batch: int = 8, device: str = "cpu") -> Result: ...
    panel(measure_batch, model=["tiny-bloom", "tiny-llama"], batch=(1, 64), device=fixed(dev.device))

Headless (papermill, tests) you call the function directly and errors raise. In the UI an error is
shown in red inside the panel and logged, so a bad setting does not kill the notebook.
"""

from __future__ import annotations

import contextlib
import html
import inspect
import logging
import traceback
from collections.abc import Callable
from typing import Any

import ipywidgets as w
from IPython.display import display

log = logging.getLogger("labkit.widgets")
fixed = w.fixed  # an argument passed as it is, with no control: `panel(fn, device=fixed(dev.device))`


def show_result(result: Any) -> None:
    """Display what a lab function returned: figures, tables, dataclasses with either, or text."""
    items = result if isinstance(result, (tuple, list)) else (result,)
    for item in items:
        if item is None:
            continue
        fig = getattr(item, "figure", None)
        if fig is not None:  # a result dataclass carrying its own figure and table
            display(fig)
            table = getattr(item, "table", None)
            display(table if table is not None else item)
        else:
            display(item)


def error_html(err: BaseException) -> str:
    return (
        '<div style="color:#b00020;border-left:4px solid #b00020;padding:4px 8px">'
        f"<b>{html.escape(type(err).__name__)}</b>: {html.escape(str(err))}</div>"
    )


def run_safely(fn: Callable[..., Any], out: w.Output, **kwargs) -> Any:
    """Call `fn(**kwargs)` and show its result in `out`; on error show it in red and log it."""
    out.clear_output(wait=True)
    with out:
        try:
            result = fn(**kwargs)
        except Exception as err:  # noqa: BLE001 - the UI must survive any bad setting
            log.error("%s failed with %s\n%s", getattr(fn, "__name__", fn), err, traceback.format_exc())
            display(w.HTML(error_html(err)))
            return err
        show_result(result)
        return result


def _control(name: str, spec: Any) -> w.Widget:
    """Build a control from a short spec: list -> dropdown, (lo, hi[, step]) -> slider, bool -> checkbox."""
    if isinstance(spec, w.Widget):
        return spec
    if isinstance(spec, bool):
        return w.Checkbox(value=spec, description=name)
    if isinstance(spec, list):
        return w.Dropdown(options=spec, value=spec[0], description=name)
    if isinstance(spec, tuple) and len(spec) in (2, 3):
        lo, hi, *step = spec
        cls = w.IntSlider if all(isinstance(v, int) for v in spec) else w.FloatSlider
        return cls(min=lo, max=hi, step=step[0] if step else 1 if cls is w.IntSlider else (hi - lo) / 100,
                   value=lo, description=name, continuous_update=False)
    if isinstance(spec, str):
        return w.Text(value=spec, description=name)
    raise TypeError(f"cannot build a control for {name}={spec!r}; use a list, (min, max[, step]), bool, str or widget")


def panel(fn: Callable[..., Any], run_label: str = "Run", auto: bool = False, **controls: Any) -> w.VBox:
    """Controls for `fn`'s arguments plus a Run button and an output area.

    Work that takes seconds waits for the button (auto=False); cheap functions can rerun on every change.

    Args:
        fn: the function to call with the controls' values; what it returns (a figure, a table, a `Measured`)
            is shown in the output area. An exception is shown there too, not raised (test `fn` itself).
        run_label: the button's text. auto: rerun on every change instead of waiting for the button.
        **controls: argument name -> a (min, max[, step]) tuple (slider), a list (dropdown), a bool (checkbox),
            a str (text box), or `fixed(value)`: passed on every run, no control (e.g. the lab's device).
    Returns:
        the ipywidgets VBox (controls, button, output).
    """
    pinned = {name: spec.value for name, spec in controls.items() if isinstance(spec, fixed)}
    widgets = {name: _control(name, spec) for name, spec in controls.items() if name not in pinned}
    defaults = inspect.signature(fn).parameters
    for name, control in widgets.items():  # sliders and dropdowns start at the function's own default
        default = defaults[name].default if name in defaults else inspect.Parameter.empty
        if default is not inspect.Parameter.empty and isinstance(controls[name], (tuple, list)):
            with contextlib.suppress(Exception):  # a default outside the control's range keeps the range's
                control.value = default
    out = w.Output()
    button = w.Button(description=run_label, button_style="primary", icon="play")
    panel_box = w.VBox([w.HBox(list(widgets.values()), layout=w.Layout(flex_flow="row wrap")), button, out])

    def run(*_):
        button.disabled = True
        try:
            panel_box.last_result = run_safely(fn, out, **pinned, **{k: c.value for k, c in widgets.items()})
        finally:
            button.disabled = False

    button.on_click(run)
    if auto:
        for c in widgets.values():
            c.observe(run, names="value")
    panel_box.run = run  # lets tests (and impatient users) trigger it without clicking
    panel_box.controls = widgets
    panel_box.output = out
    return panel_box
