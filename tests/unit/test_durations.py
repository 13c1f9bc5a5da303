"""Lab run times come from recorded runs: merged per mode and lab, described in one line, printed by every lab."""

import json
import re

import pytest

from labkit.notebook import durations
from labkit.notebook.run import LABS_DIR, list_labs


def test_record_merges_runs_per_mode_and_lab(tmp_path):
    path = tmp_path / "d.json"
    durations.record({"01_lifecycle": 62.14, "02_arch": 30.0}, "smoke", "cpu A", path, "2026-01-01")
    table = durations.record({"01_lifecycle": 59.96}, "smoke", "cpu B", path, "2026-01-02")
    assert table["smoke"]["01"] == {"seconds": 60.0, "machine": "cpu B", "date": "2026-01-02"}  # the newer run
    assert table["smoke"]["02"]["seconds"] == 30.0 and json.loads(path.read_text()) == table
    durations.record({"01": 1800}, "full", "cpu A", path, "2026-01-03")
    line = durations.describe("01", path)
    assert "about 60 s with smoke parameters (cpu B, 2026-01-02)" in line
    assert "about 30 min with the full parameters below (cpu A, 2026-01-03)" in line
    assert "not recorded yet" in durations.describe("02", path) and "not recorded yet" in durations.describe("09", path)
    with pytest.raises(ValueError, match=r"one of \('smoke', 'full'\)"):
        durations.record({"01": 1.0}, "quick", "cpu", path)


def test_every_lab_prints_its_own_recorded_times_and_the_table_has_each_smoke_run():
    table = json.loads(durations.TABLE.read_text())
    for lab in list_labs():
        number = lab.name[:2]
        source = (LABS_DIR / f"{lab.stem}.py").read_text()
        setup = source.split("# %% tags=[\"parameters\"]")[0]
        assert f'durations.describe("{number}")' in setup, lab.name
        assert table["smoke"][number]["seconds"] > 0, f"{lab.name}: no recorded smoke run in {durations.TABLE.name}"
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", table["smoke"][number]["date"])


def test_objectives_and_prerequisites_open_every_lab():
    for lab in list_labs():
        first = (LABS_DIR / f"{lab.stem}.py").read_text().split("\n# %%\n")[0]
        goals = re.findall(r"^# - (.+)$", first.split("**By the end you can**")[-1], re.M)
        assert "**By the end you can**" in first and len(goals) >= 3, lab.name
        assert "**Before this lab:**" in first, lab.name
        for earlier in re.findall(r"lab (\d{2})", first.split("**Before this lab:**")[1].split("\n")[0]):
            assert earlier < lab.name[:2] and any(p.name.startswith(earlier) for p in list_labs()), lab.name


def test_the_readme_lab_table_lists_each_labs_objectives():
    readme = (LABS_DIR.parent / "README.md").read_text()
    for lab in list_labs():
        first = (LABS_DIR / f"{lab.stem}.py").read_text().split("\n# %%\n")[0]
        goals = [g.rstrip(";.") for g in re.findall(r"^# - (.+)$", first.split("**By the end you can**")[1], re.M)]
        row = next(line for line in readme.splitlines() if line.startswith(f"| {lab.name[:2]} | ["))
        assert "; ".join(goals) in row, lab.name
