"""Execute lab notebooks headless (papermill), record their key results, export HTML.

A lab ends with `record({...})`: the dict is stored in the cell output under RESULTS_MIME, where
`run_lab()` (and so the tests and `labkit run-labs`) read it back.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from labkit import hardware
from labkit.notebook.exercise import read_exercises
from labkit.notebook.memory import PeakMemory
from labkit.notebook.predict import read_predictions

RESULTS_MIME = "application/vnd.labkit.results+json"
LABS_DIR = Path(__file__).resolve().parents[2] / "labs"
SMOKE_PARAMETERS = {"SMOKE": True}
_EVERY_LAB: dict = {}  # what `every_lab(...)` adds to each run_lab's parameters


def device_parameter(device: str) -> dict:
    """The DEVICE parameter every lab has, checked before any lab starts.

    Args:
        device: "auto" (the GPU when there is one, else the CPU), "cpu", "cuda" or "cuda:N".
    Returns:
        {"DEVICE": device}, for `run_lab(parameters=...)` or `every_lab(**...)`.
    Raises:
        ValueError: an unknown device, naming the valid choices (`hardware.resolve_device`).
        CapabilityMissing: a CUDA device asked for on a machine without one.
    """
    hardware.resolve_device(device)
    return {"DEVICE": str(device)}


@contextlib.contextmanager
def every_lab(**parameters):
    """Inside the block, every `run_lab` call also passes `parameters` (its own `parameters` win on a clash).

    This is how `labkit run-labs --device cuda` reaches the labs that `report.run_labs` executes.
    """
    saved = dict(_EVERY_LAB)
    _EVERY_LAB.update(parameters)
    try:
        yield
    finally:
        _EVERY_LAB.clear()
        _EVERY_LAB.update(saved)


def record(results: dict) -> None:
    """Show a lab's key results and store them where tests and reports can read them.

    Args:
        results: name -> JSON-serialisable value (numpy scalars become floats); `run_lab` and
            `read_results` read them back from the executed notebook's output under RESULTS_MIME.
    """
    from IPython.display import display

    clean = json.loads(json.dumps(results, default=float))  # numpy scalars -> plain floats
    text = "\n".join(f"{k}: {v}" for k, v in clean.items())
    display({RESULTS_MIME: clean, "text/plain": text}, raw=True)


def read_results(notebook) -> dict:
    """The dict a notebook recorded (the last `record()` wins); {} if none."""
    found: dict = {}
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if RESULTS_MIME in data:
                found = data[RESULTS_MIME]
    return found


def list_labs(labs_dir: Path = LABS_DIR) -> list[Path]:
    """The lab notebooks, in order.

    Args:
        labs_dir: the folder holding NN_*.ipynb (default: the repository's labs/).
    Returns:
        paths of labs/NN_*.ipynb sorted by number.
    """
    return sorted(labs_dir.glob("[0-9][0-9]_*.ipynb"))


def find_labs(selectors: list[str] | None, labs_dir: Path = LABS_DIR) -> list[Path]:
    """Labs matching numbers or name parts ("01", "lifecycle"); all labs when none are given."""
    labs = list_labs(labs_dir)
    if not selectors:
        return labs
    chosen = []
    for sel in selectors:
        match = [p for p in labs if p.name.startswith(sel.zfill(2) + "_") or sel in p.stem]
        if not match:
            raise ValueError(f"no lab matches {sel!r}; labs are {[p.stem for p in labs]}")
        chosen += [p for p in match if p not in chosen]
    return chosen


@dataclass
class LabRun:
    lab: str
    seconds: float
    results: dict
    notebook: Path
    html: Path | None
    peak_memory_mb: float = 0.0  # the kernel and everything it started, summed resident sets (`memory.PeakMemory`)
    peak_memory_at: str = ""  # when the peak came and which processes made it up (`PeakMemory.at_peak`)
    cpu_seconds: float = 0.0  # user + system CPU time of the kernel and every process it started and waited for
    exercises: dict = field(default_factory=dict)  # name -> grade the lab's exercise cells reported (`exercise`)
    predictions: list = field(default_factory=list)  # the comparisons of guesses with measurements (`predict`)


def run_lab(path: Path, out_dir: Path, smoke: bool = True, parameters: dict | None = None,
            html: bool = True, timeout_s: int | None = None) -> LabRun:
    """Execute one notebook with papermill into `out_dir`; optionally export it as HTML.

    Args:
        path: the lab notebook (labs/NN_*.ipynb).
        out_dir: where the executed notebook (and its HTML) go.
        smoke: run with SMOKE_PARAMETERS (each lab about a minute of CPU or less).
        parameters: papermill parameters, over the smoke ones and those of `every_lab` (e.g. {"DEVICE": "cuda"}).
        html: also export the executed notebook to self-contained HTML.
        timeout_s: the longest one cell may run, s (a hung cell fails the run); None: 600 for smoke parameters, 3600
            for the full ones (lab 05's quantizer comparison runs longer than 10 min on 2 CPU cores).
    Returns:
        LabRun with the seconds it took, the results the lab recorded, the grades its exercise cells reported, the
        predictions it compared with measurements, and its peak memory (MB: the kernel and the processes it
        started, summed resident sets, sampled every 0.2 s).
    Raises:
        ValueError: a DEVICE parameter that is no device (checked before the notebook starts).
        papermill.PapermillExecutionError: a cell failed.
    """
    import papermill as pm

    params = {**(SMOKE_PARAMETERS if smoke else {}), **_EVERY_LAB, **(parameters or {})}
    if "DEVICE" in params:
        device_parameter(params["DEVICE"])
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / path.name
    env_before = os.environ.get("PYDEVD_DISABLE_FILE_VALIDATION")
    os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # silences a debugger warning in every kernel
    start, cpu_before = time.perf_counter(), _children_cpu_seconds()
    try:
        with PeakMemory() as peak:
            nb = pm.execute_notebook(
                str(path), str(executed), parameters=params, cwd=str(path.parent),
                kernel_name="python3", progress_bar=False, execution_timeout=timeout_s or (600 if smoke else 3600),
                # not after every cell: each save writes ~5 MB (plotly.js rides in the outputs), ~5 s per lab;
                # papermill still saves at the end, on a failure, and every 30 s inside a long cell
                request_save_on_cell_execute=False,
            )  # fmt: skip
    finally:
        if env_before is None:
            os.environ.pop("PYDEVD_DISABLE_FILE_VALIDATION", None)
    seconds, cpu_seconds = time.perf_counter() - start, _children_cpu_seconds() - cpu_before
    html_path = export_html(executed) if html else None
    return LabRun(path.stem, seconds, read_results(nb), executed, html_path, peak.mb, peak.at_peak, cpu_seconds,
                  read_exercises(nb), read_predictions(nb))


def _children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's ended children (and theirs, each waited for): papermill's kernel
    once it has been shut down. Unlike wall time it does not grow when other processes compete for the cores; it
    does grow with the threads a lab uses (two busy threads for 10 s: 20 s)."""
    import psutil

    times = psutil.Process().cpu_times()  # children_*: 0 where the platform does not report them (Windows)
    return times.children_user + times.children_system


WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = ("<p><em>Interactive controls: open the notebook in JupyterLab, Binder or Colab to use them "
               "(a static page cannot run Python).</em></p>")
NO_SCRIPT = "data:text/javascript,"  # an empty script: the page needs nothing from a CDN


def static_widgets(nb) -> int:
    """Replace widget views with a note and drop the saved widget state: rendering them would load a widget
    manager from a CDN, and a static page has no kernel to drive them anyway. Returns how many were replaced."""
    nb.metadata.pop("widgets", None)
    replaced = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if WIDGET_MIME in output.get("data", {}):
                output["data"] = {"text/html": WIDGET_NOTE, "text/plain": "(interactive controls)"}
                replaced += 1
    return replaced


def export_html(notebook_path: Path) -> Path:
    """Self-contained HTML: plotly.js is inlined by the notebook renderer (`labkit.setup()`), require.js and the
    widget manager are left out, so every plot draws offline. (MathJax still comes from its CDN when online.)"""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook_path, as_version=4)
    static_widgets(nb)
    body, _ = HTMLExporter(require_js_url=NO_SCRIPT).from_notebook_node(nb)
    out = notebook_path.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out
