"""House rules for every notebook in labs/: stripped, parametrised, with a header and recorded results."""

import json
import runpy
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LABS = sorted((ROOT / "labs").glob("*.ipynb"))
# the one setting for the repository's address (scripts/set_repository.py writes it everywhere)
SLUG = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"].removeprefix(
    "https://github.com/")


def test_there_are_labs():
    assert [p.name[:2] for p in LABS][:2] == ["00", "01"]


@pytest.fixture(params=LABS, ids=lambda p: p.stem)
def notebook(request):
    return request.param, json.loads(request.param.read_text())


def test_outputs_are_stripped(notebook):
    path, nb = notebook
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{path.name}: outputs committed"
            assert cell.get("execution_count") is None, f"{path.name}: execution count committed"


def test_has_one_parameters_cell_with_smoke(notebook):
    path, nb = notebook
    params = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{path.name}: needs exactly one 'parameters' cell"
    assert "SMOKE = False" in "".join(params[0]["source"])


def test_header_has_badges_and_a_guarded_install(notebook):
    path, nb = notebook
    first_md = "".join(nb["cells"][0]["source"])
    assert first_md.startswith(f"# Lab {path.name[:2]}")
    assert f"colab.research.google.com/github/{SLUG}/blob/main/labs/{path.name}" in first_md
    assert f"mybinder.org/v2/gh/{SLUG}/main?urlpath=lab/tree/labs/{path.name}" in first_md
    setup = "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])
    assert 'if "google.colab" in sys.modules' in setup and "%pip install" in setup
    assert f"git clone -q --depth 1 https://github.com/{SLUG} /content/{SLUG.split('/')[1]}" in setup
    assert "sys.version_info >= (3, 11)" in setup


def test_ends_by_recording_results(notebook):
    path, nb = notebook
    last_code = "".join([c for c in nb["cells"] if c["cell_type"] == "code"][-1]["source"])
    assert "run.record(" in last_code, f"{path.name}: last code cell must record the lab's results"


def test_paired_with_its_percent_source(notebook):
    """labs/NN_*.py (jupytext percent format) is the reviewable source; the .ipynb must say the same."""
    jupytext = pytest.importorskip("jupytext", reason="jupytext is not installed (install labkit[lab])")
    path, nb = notebook
    source = path.with_suffix(".py")
    assert source.exists(), f"{path.name}: no {source.name}; run `jupytext --set-formats ipynb,py:percent {path}`"
    paired = jupytext.read(source)

    def cells(cs):
        return [(c["cell_type"], "".join(c["source"]).strip(), sorted(c.get("metadata", {}).get("tags", [])))
                for c in cs]

    assert cells(paired.cells) == cells(nb["cells"]), (
        f"{path.name} and {source.name} differ: edit the .py and run `jupytext --sync {source}`")


def test_every_file_uses_the_one_repository_setting(capsys):
    """README and labs agree with pyproject's [project.urls] Repository (else: run scripts/set_repository.py)."""
    main = runpy.run_path(str(ROOT / "scripts" / "set_repository.py"))["main"]
    assert main(["--check"]) == 0, capsys.readouterr().out
