"""Implementation exercises in the labs: report a grade from a check cell, and run a lab's exercises alone.

A lab's exercise cell is tagged `exercise` and stands on its own (it imports what it uses and reads only the
parameters cell): it defines the learner's stub, swaps in `labkit.exercises.solutions` when the `SOLUTIONS`
parameter is True, grades the function and calls `report(name, grade, SOLUTIONS)`. The lab's own run (the stub) must
be graded wrong without crashing; `run_exercises` executes only the parameters cells and the exercise cells of the
labs, in one kernel, with the reference answers injected, and every one must be graded right: so each check is
proven able to fail and to pass, for a few seconds instead of a second full run of every lab.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

EXERCISE_MIME = "application/vnd.labkit.exercise+json"
TAG = "exercise"


def report(name: str, grade, solutions: bool) -> None:
    """Show a grade in the notebook and store it where `read_exercises` finds it.

    Args:
        name: the exercise (the function the learner writes, e.g. "top_p_filter").
        grade: a `labkit.exercises` Grade (ok, cases, message; its str() is the line shown).
        solutions: whether the reference answer was injected (the SOLUTIONS parameter).
    """
    from IPython.display import display

    payload = {"name": name, "ok": bool(grade.ok), "cases": int(grade.cases), "message": str(grade.message),
               "solutions_injected": bool(solutions)}  # fmt: skip
    display({EXERCISE_MIME: payload, "text/plain": f"{name}: {grade}"}, raw=True)


def read_exercises(notebook) -> dict[str, dict]:
    """name -> {ok, cases, message, solutions_injected} for every exercise an executed notebook reported."""
    found = {}
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            payload = output.get("data", {}).get(EXERCISE_MIME)
            if payload:
                found[payload["name"]] = payload
    return found


def exercise_cells(path: Path) -> list:
    """A lab's parameters cell and its cells tagged `exercise`, in order (nbformat cells).

    Raises:
        ValueError: the lab has no parameters cell or no exercise cell.
    """
    import nbformat

    cells = nbformat.read(str(path), as_version=4).cells
    tags = [set(cell.get("metadata", {}).get("tags", [])) for cell in cells]
    if not any("parameters" in t for t in tags) or not any(TAG in t for t in tags):
        raise ValueError(f"{path.name}: needs a cell tagged 'parameters' and at least one tagged {TAG!r}")
    return [cell for cell, t in zip(cells, tags, strict=True) if t & {"parameters", TAG}]


def exercise_notebook(paths: list[Path], parameters: dict | None = None) -> tuple[object, dict[str, range]]:
    """One notebook holding every given lab's parameters and exercise cells, each lab in a fresh namespace.

    After each lab's parameters cell comes a cell setting `parameters` (as papermill injects them); before each lab
    after the first, `%reset -f` empties the namespace, so no lab's exercise can lean on another's variables (the
    imported modules stay loaded: one kernel start and one import of torch for all the labs).

    Args:
        paths: lab notebooks. parameters: name -> a value whose repr() is Python (bool, int, float, str).
    Returns:
        (the nbformat notebook, lab stem -> the range of its cells in it).
    Raises:
        ValueError: a lab without exercise cells (`exercise_cells`).
    """
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    spans = {}
    injected = "\n".join(f"{k} = {v!r}" for k, v in (parameters or {}).items())
    for n, path in enumerate(paths):
        start = len(nb.cells)
        if n:
            nb.cells.append(nbformat.v4.new_code_cell("%reset -f"))
        for cell in exercise_cells(path):
            nb.cells.append(cell)
            if "parameters" in cell.metadata.get("tags", []) and injected:
                nb.cells.append(nbformat.v4.new_code_cell(injected, metadata={"tags": ["injected-parameters"]}))
        spans[path.stem] = range(start, len(nb.cells))
    for i, cell in enumerate(nb.cells):  # the labs' cells are committed without ids; nbformat 4.5 wants them
        cell["id"] = f"cell-{i}"
    return nb, spans


def run_exercises(paths: list[Path], out_dir: Path, parameters: dict | None = None,
                  timeout_s: int = 300) -> tuple[dict[str, dict[str, dict]], float]:  # fmt: skip
    """Execute only the labs' parameters and exercise cells in one kernel, e.g. with {"SOLUTIONS": True}.

    Args:
        paths: lab notebooks. out_dir: where the combined notebook and its executed copy go.
        parameters: set after each lab's parameters cell (`exercise_notebook`). timeout_s: the longest one cell
            may run.
    Returns:
        (lab stem -> the exercises it reported, as `read_exercises` gives them; seconds the whole run took).
    Raises:
        ValueError: a lab without exercise cells. papermill.PapermillExecutionError: a cell failed.
    """
    import nbformat
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    nb, spans = exercise_notebook(paths, parameters)
    combined = out_dir / "exercises.ipynb"
    nbformat.write(nb, str(combined))
    start = time.perf_counter()
    done = pm.execute_notebook(str(combined), str(out_dir / "exercises.out.ipynb"), cwd=str(paths[0].parent),
                               kernel_name="python3", progress_bar=False, execution_timeout=timeout_s)  # fmt: skip
    cells = json.loads(nbformat.writes(done))["cells"]
    found = {stem: read_exercises({"cells": [cells[i] for i in span]}) for stem, span in spans.items()}
    return found, time.perf_counter() - start
