"""run_exercises: each lab's exercise cells run after its parameters with the given values, grades are attributed
to their lab, and a lab cannot use another lab's variables (the namespace is reset between labs)."""

import nbformat
import pytest

pytest.importorskip("papermill")

from labkit.notebook.exercise import exercise_notebook, run_exercises  # noqa: E402

REPORT = """
from labkit.exercises import Grade
from labkit.notebook import exercise
exercise.report({name!r}, Grade({ok}, 3, "case 1 (x): y"), SOLUTIONS)
"""


def _lab(tmp_path, stem, exercise_source):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('setup: never run by run_exercises')"),
                nbformat.v4.new_code_cell("SOLUTIONS = False\nSHARED = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("raise RuntimeError('not an exercise cell')"),
                nbformat.v4.new_code_cell(exercise_source, metadata={"tags": ["exercise"]})]  # fmt: skip
    path = tmp_path / f"{stem}.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_grades_are_attributed_and_parameters_injected(tmp_path):
    a = _lab(tmp_path, "00_a", "ok = SOLUTIONS\n" + REPORT.format(name="f", ok="ok"))
    b = _lab(tmp_path, "01_b", REPORT.format(name="g", ok="not SOLUTIONS"))
    found, seconds = run_exercises([a, b], tmp_path / "out", {"SOLUTIONS": True})
    assert set(found) == {"00_a", "01_b"} and seconds > 0
    assert found["00_a"]["f"]["ok"] and found["00_a"]["f"]["solutions_injected"] and "g" not in found["00_a"]
    assert not found["01_b"]["g"]["ok"]


def test_a_lab_cannot_lean_on_an_earlier_labs_variables(tmp_path):
    a = _lab(tmp_path, "00_a", "leak = 1\n" + REPORT.format(name="f", ok="True"))
    b = _lab(tmp_path, "01_b", "print(leak)\n" + REPORT.format(name="g", ok="True"))
    with pytest.raises(Exception, match="NameError"):
        run_exercises([a, b], tmp_path / "out")


def test_a_lab_without_exercise_cells_is_refused(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("SOLUTIONS = False", metadata={"tags": ["parameters"]})]
    path = tmp_path / "02_c.ipynb"
    nbformat.write(nb, str(path))
    with pytest.raises(ValueError, match="at least one tagged 'exercise'"):
        exercise_notebook([path])
