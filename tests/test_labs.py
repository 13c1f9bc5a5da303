"""Every lab runs headless with smoke parameters; the results it recorded are checked by tests/labs/check_NN.py."""

import importlib
import importlib.util
import math
import os
import re
from pathlib import Path

import pytest

from labkit.notebook.exercise import run_exercises
from labkit.notebook.run import list_labs, run_lab

pytest.importorskip("papermill", reason="papermill is not installed here: notebooks cannot run (install labkit[lab])")

from labkit.notebook.memory import BINDER_MB

from .conftest import NOTEBOOK_CPU_SECONDS, NOTEBOOK_DURATIONS, NOTEBOOK_MEMORY_MB
from .labs.ranks import cpu_name

# Each lab's smoke run fits in a minute of this machine's cores: its CPU time (the kernel and every process it started,
# `LabRun.cpu_seconds`) is under SMOKE_BUDGET_S per core, or else its wall-clock time is under SMOKE_WALL_S. Wall
# clock is the learner's wait; CPU time is the work, which other processes on a shared runner do not inflate (there
# the same labs took 1.3-2.9x their wall-clock time on a quiet machine of the same kind). A lab fails only when it is
# over both: too much work, not a busy neighbour. Quiet here, every lab takes 10-46 s of wall clock.
SMOKE_BUDGET_S = 60
SMOKE_WALL_S = 90
# Labs whose smoke run may not fit Binder's memory, and what they may use instead (MB); each says so at its top and
# the README says so: lab 10 runs two DeepSpeed ranks beside the kernel (measured 1975 MB, near the limit)
OVER_BINDER_MB = {"10": 2600}
CHECKS = {path.stem[-2:]: importlib.import_module(f"{__package__}.labs.{path.stem}").check
          for path in sorted((Path(__file__).parent / "labs").glob("check_[0-9][0-9].py"))}


def expected_device(asked: str) -> tuple[str, str]:
    """(device type, hardware name) a lab run with DEVICE=`asked` must record, read without labkit: the GPU's name
    from the driver, the CPU's from /proc/cpuinfo (`labs.ranks.cpu_name`)."""
    import torch

    if asked.startswith("cuda") or (asked == "auto" and torch.cuda.is_available()):
        index = int(asked.split(":")[1]) if ":" in asked else 0
        return "cuda", torch.cuda.get_device_name(index)
    return "cpu", cpu_name()


def check_device(results: dict, asked: str) -> None:
    """Every lab records the device its numbers came from, and it is the one DEVICE asked for."""
    kind, name = expected_device(asked)
    assert results.get("device_type") == kind, f"recorded device_type {results.get('device_type')!r}, expected {kind}"
    assert name in str(results.get("device")), f"recorded device {results.get('device')!r} does not name {name!r}"
    assert results.get("half_precision") in ("bf16", "fp16"), results.get("half_precision")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("lab", list_labs(), ids=lambda p: p.stem)
def test_lab_runs_and_records_results(lab: Path, tmp_path, lab_device):
    number = lab.name[:2]
    assert number in CHECKS, f"{lab.name} has no checks: write tests/labs/check_{number}.py"
    html = importlib.util.find_spec("nbconvert") is not None  # the bare GPU box carries no nbconvert
    run = run_lab(lab, tmp_path, smoke=True, html=html, parameters={"DEVICE": lab_device})
    NOTEBOOK_DURATIONS[lab.stem] = run.seconds
    NOTEBOOK_CPU_SECONDS[lab.stem] = run.cpu_seconds
    NOTEBOOK_MEMORY_MB[lab.stem] = run.peak_memory_mb
    assert run.results, f"{lab.name} recorded no results"
    check_device(run.results, lab_device)
    CHECKS[number](run.results)
    check_stub_grades(lab, run.exercises)
    check_predictions(lab, run.predictions)
    if html:
        page = run.html.read_text()
        assert "plotly-graph-div" in page and "Plotly.newPlot" in page  # figures are in the HTML
    if expected_device(lab_device)[0] == "cpu":  # CI's budget; on a GPU, `make test-gpu` bounds the whole run
        cores = len(os.sched_getaffinity(0))
        assert run.cpu_seconds > 0, "no CPU time measured: the kernel was not waited for"
        assert run.cpu_seconds < SMOKE_BUDGET_S * cores or run.seconds < SMOKE_WALL_S, (
            f"{lab.name} used {run.cpu_seconds:.0f} CPU-s in smoke mode, more than {SMOKE_BUDGET_S} s on each of "
            f"{cores} cores, and took {run.seconds:.0f} s of wall clock (over {SMOKE_WALL_S} s)")
        limit = OVER_BINDER_MB.get(number, BINDER_MB)  # Binder is CPU-only: its memory limit binds CPU runs
        assert 0 < run.peak_memory_mb <= limit, (
            f"{lab.name} peaked at {run.peak_memory_mb:.0f} MB (limit {limit}) at {run.peak_memory_at}")
        if number in OVER_BINDER_MB:
            assert "On Binder" in lab.with_suffix(".py").read_text(), f"{lab.name} must say at its top it may not fit"


@pytest.mark.parametrize("lab", list_labs(), ids=lambda p: p.stem)
def test_lab_has_a_device_parameter(lab: Path):
    """Every lab's parameters cell has DEVICE = "auto", and the lab resolves it with `devices.choose(DEVICE)`."""
    source = lab.with_suffix(".py").read_text()
    cell = source.split('# %% tags=["parameters"]', 1)[1].split("# %%", 1)[0]
    assert re.search(r'^DEVICE = "auto"', cell, re.M), f"{lab.name}: no DEVICE = \"auto\" in its parameters cell"
    assert "devices.choose(DEVICE)" in source, f"{lab.name} never resolves DEVICE with devices.choose"


# Implementation exercises: each lab's cells tagged "exercise" define a stub, grade it and report the grade
# (`labkit.notebook.exercise.report`). The lab's own run above uses the stub, which must be graded wrong, naming the
# failing case, without crashing the notebook; here those cells run alone with the reference answers injected
# (SOLUTIONS = True), and every one must be graded right: so each check is proven able to fail and to pass.
EXERCISE_NAME = re.compile(r'exercise\.report\("(\w+)"')


def exercises_in(lab: Path) -> set[str]:
    return set(EXERCISE_NAME.findall(lab.with_suffix(".py").read_text()))


def check_stub_grades(lab: Path, exercises: dict) -> None:
    """The lab's run (SOLUTIONS = False): every exercise it has was reported, each graded wrong with the case."""
    assert set(exercises) == exercises_in(lab), f"{lab.name} reported {sorted(exercises)}"
    for name, e in exercises.items():
        assert not e["solutions_injected"] and not e["ok"], f"{lab.name}: the stub of {name} was graded right: {e}"
        assert re.match(r"case \d+ \(.+\): ", e["message"]), f"{lab.name}: {name}'s verdict names no case: {e}"


def check_predictions(lab: Path, rows: list[dict]) -> None:
    """Every lab asks for predictions before its key measurements and sets each beside the measurement: the run
    (every guess left unset, as headless runs leave them) showed a finite measurement for each, one at least with
    the theory's value, and one comparison for every prediction cell the lab has."""
    cells = set(re.findall(r"^(prediction_\w+) = None", lab.with_suffix(".py").read_text(), re.M))
    assert rows and cells, f"{lab.name}: no prediction cell (prediction_<what> = None) or no predict.compare"
    assert len(rows) >= len(cells), f"{lab.name}: {len(cells)} prediction cells, {len(rows)} comparisons shown"
    assert all(math.isfinite(r["measured"]) and r["guess"] is None for r in rows), rows
    assert any(r["theory"] is not None for r in rows), f"{lab.name}: no prediction is set beside a theory value"


@pytest.mark.timeout(300)
def test_every_exercise_passes_with_the_reference_solutions(tmp_path, lab_device):
    labs = list_labs()
    names = [name for lab in labs for name in exercises_in(lab)]
    assert len(names) == len(set(names)), f"two labs' exercises share a name: {sorted(names)}"
    found, _ = run_exercises(labs, tmp_path, {"SMOKE": True, "DEVICE": lab_device, "SOLUTIONS": True})
    for lab in labs:
        exercises = found[lab.stem]
        assert set(exercises) == exercises_in(lab), f"{lab.name} reported {sorted(exercises)}"
        for name, e in exercises.items():
            assert e["solutions_injected"] and e["ok"] and e["cases"] >= 3, f"{lab.name}: {name}: {e}"


@pytest.mark.parametrize("lab", list_labs(), ids=lambda p: p.stem)
def test_lab_has_an_implementation_exercise_with_a_solutions_switch(lab: Path):
    source = lab.with_suffix(".py").read_text()
    assert exercises_in(lab), f"{lab.name}: no exercise cell (tags=[\"exercise\"] calling exercise.report)"
    cell = source.split('# %% tags=["parameters"]', 1)[1].split("# %%", 1)[0]
    assert re.search(r"^SOLUTIONS = False", cell, re.M), f"{lab.name}: no SOLUTIONS = False in its parameters cell"
