"""The set-up files agree: pyproject.toml, environment.yml, binder/, Makefile, .ci/run, README."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    reqs = [Requirement(r) for r in project["dependencies"] + extras["lab"] + extras["engines"] + extras["quant"]
            + extras["parallel"] + extras["serve"]]
    return {r.name: str(r.specifier) for r in reqs}


def _lines_to_requirements(lines) -> dict[str, str]:
    reqs = {}
    for raw in lines:
        line = raw.strip().strip('"')
        if not line or line.startswith(("#", "-")):
            continue  # comments, --extra-index-url, -e .
        r = Requirement(line)
        reqs[r.name] = str(r.specifier)
    return reqs


def _environment_yml() -> dict[str, str]:
    text = (ROOT / "environment.yml").read_text()
    pip_block = text.split("- pip:", 1)[1]
    return _lines_to_requirements(ln.strip()[2:] for ln in pip_block.splitlines() if ln.strip().startswith("- "))


def _binder() -> dict[str, str]:
    return _lines_to_requirements((ROOT / "binder" / "requirements.txt").read_text().splitlines())


def _makefile_torch() -> str:
    return re.search(r"^TORCH_VERSION \?= (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)


def test_environment_yml_and_binder_name_the_same_dependencies_as_pyproject():
    expected = _pyproject_requirements()
    torch_pin = f"=={_makefile_torch()}"
    for name, found in (("environment.yml", _environment_yml()), ("binder/requirements.txt", _binder())):
        assert found.pop("torch") == torch_pin, f"{name} pins another torch than the Makefile"
        assert Requirement(f"torch{torch_pin}").specifier.contains(_makefile_torch())
        expected_no_torch = {k: v for k, v in expected.items() if k != "torch"}
        assert found == expected_no_torch, f"{name} differs from pyproject.toml"
    assert Requirement("torch" + expected["torch"]).specifier.contains(_makefile_torch())


def test_environment_yml_uses_python_311_and_installs_the_package():
    text = (ROOT / "environment.yml").read_text()
    assert "python=3.11" in text and "- -e ." in text


def test_binder_postbuild_fails_fast_and_prepares_models():
    lines = [ln for ln in (ROOT / "binder" / "postBuild").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "set -e"
    assert any("labkit prepare" in ln for ln in lines)
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"


def test_ci_runs_the_readme_test_command_and_nothing_else():
    ci = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert ci[-1] == "make test"
    assert all(ln.startswith(("set ", "cd ")) for ln in ci[:-1])
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S).group(1).split("\n")
    commands = [ln for ln in first_block if ln.strip() and not ln.strip().startswith("#")]
    assert commands == ["make lab", "make test"]


def test_badges_in_readme():
    readme = (ROOT / "README.md").read_text()
    assert "colab.research.google.com/assets/colab-badge.svg" in readme
    assert "mybinder.org/badge_logo.svg" in readme
