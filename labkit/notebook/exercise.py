"""Implementation exercises in the labs: report a grade from a check cell, and run a lab's exercises alone.

A lab's exercise cell is tagged `exercise` and stands on its own (it imports what it uses and reads only the
parameters cell): it defines the learner's stub, swaps in `labkit.exercises.solutions` when the `SOLUTIONS`
parameter is True, grades the function and calls `report(name, grade, SOLUTIONS)`. The lab's own run (the stub) must
be graded wrong without crashing; `run_exercises` executes only the parameters cell and the exercise cells with the
reference answers injected, and every one must be graded right: so each check is proven able to fail and to pass,
for a few seconds instead of a second full run of the lab.
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


def exercise_notebook(path: Path):
    """The lab reduced to its parameters cell and its cells tagged `exercise` (an nbformat notebook).

    Raises:
        ValueError: the lab has no parameters cell or no exercise cell.
    """
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    tags = [set(cell.get("metadata", {}).get("tags", [])) for cell in nb.cells]
    keep = [cell for cell, t in zip(nb.cells, tags, strict=True) if t & {"parameters", TAG}]
    if not any("parameters" in t for t in tags) or not any(TAG in t for t in tags):
        raise ValueError(f"{path.name}: needs a cell tagged 'parameters' and at least one tagged {TAG!r}")
    nb.cells = keep
    return nb


def run_exercises(path: Path, out_dir: Path, parameters: dict | None = None,
                  timeout_s: int = 300) -> tuple[dict[str, dict], float]:  # fmt: skip
    """Execute only a lab's parameters and exercise cells (papermill), e.g. with {"SOLUTIONS": True}.

    Args:
        path: the lab notebook. out_dir: where the reduced and executed notebooks go.
        parameters: papermill parameters. timeout_s: the longest one cell may run.
    Returns:
        (the exercises it reported as `read_exercises` gives them, seconds the run took).
    Raises:
        ValueError: no exercise cells (`exercise_notebook`). papermill.PapermillExecutionError: a cell failed.
    """
    import nbformat
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    reduced = out_dir / f"{path.stem}.exercises.ipynb"
    nbformat.write(exercise_notebook(path), str(reduced))
    start = time.perf_counter()
    nb = pm.execute_notebook(str(reduced), str(out_dir / f"{path.stem}.exercises.out.ipynb"),
                             parameters=parameters or {}, cwd=str(path.parent), kernel_name="python3",
                             progress_bar=False, execution_timeout=timeout_s)  # fmt: skip
    return read_exercises(json.loads(nbformat.writes(nb))), time.perf_counter() - start
