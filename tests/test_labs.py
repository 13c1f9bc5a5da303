"""Every lab runs headless with smoke parameters; the results it recorded are checked by tests/labs/check_NN.py."""

import importlib
from pathlib import Path

import pytest

from labkit.notebook.run import list_labs, run_lab

pytest.importorskip("papermill", reason="papermill is not installed here: notebooks cannot run (install labkit[lab])")

from .conftest import NOTEBOOK_DURATIONS

SMOKE_BUDGET_S = 90
CHECKS = {path.stem[-2:]: importlib.import_module(f"{__package__}.labs.{path.stem}").check
          for path in sorted((Path(__file__).parent / "labs").glob("check_[0-9][0-9].py"))}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("lab", list_labs(), ids=lambda p: p.stem)
def test_lab_runs_and_records_results(lab: Path, tmp_path):
    number = lab.name[:2]
    assert number in CHECKS, f"{lab.name} has no checks: write tests/labs/check_{number}.py"
    run = run_lab(lab, tmp_path, smoke=True, html=True)
    NOTEBOOK_DURATIONS[lab.stem] = run.seconds
    assert run.results, f"{lab.name} recorded no results"
    CHECKS[number](run.results)
    html = run.html.read_text()
    assert "plotly-graph-div" in html and "Plotly.newPlot" in html  # figures are in the HTML
    assert run.seconds < SMOKE_BUDGET_S, f"{lab.name} took {run.seconds:.0f} s in smoke mode"
