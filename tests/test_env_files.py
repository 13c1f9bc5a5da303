"""The set-up files agree: pyproject.toml, the lock, environment.yml, binder/, Makefile, .ci/run, README."""

import hashlib
import os
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
MAKEFILE = (ROOT / "Makefile").read_text()


def _makefile_var(name: str) -> str:
    return re.search(rf"^{name}\s*[:?]?=\s*(\S+)", MAKEFILE, re.M).group(1)


def _pyproject_requirements(extras: list[str]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = project["optional-dependencies"]
    return [Requirement(r) for r in project["dependencies"] + [r for extra in extras for r in groups[extra]]]


def _parse_lock(text: str) -> tuple[dict[str, tuple[str, list[str]]], list[str]]:
    """Returns ({name: (pinned version, sha256 hashes)}, problems) of a requirements file made by `make lock`."""
    entries, problems = {}, []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        first, *rest = re.split(r"\s+(?=--)", line)  # the requirement, then its options
        req = Requirement(first)
        hashes = [t.removeprefix("--hash=sha256:") for t in rest if re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", t)]
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version or req.marker or req.url:
            problems.append(f"{first}: not pinned with ==")
        if not hashes or len(hashes) != len(rest):
            problems.append(f"{first}: needs sha256 hashes and nothing else")
        name = canonicalize_name(req.name)
        if name in entries:
            problems.append(f"{first}: locked twice")
        entries[name] = (specs[0].version if specs else "", hashes)
    return entries, problems


def _lock_problems(text: str, requirements: list[Requirement], torch_version: str) -> list[str]:
    entries, problems = _parse_lock(text)
    for req in requirements:
        name = canonicalize_name(req.name)
        if name not in entries:
            problems.append(f"{req}: not in the lock")
        elif not req.specifier.contains(entries[name][0], prereleases=True):
            problems.append(f"{req}: the lock pins {entries[name][0]}")
    if entries.get("torch", ("",))[0] != f"{torch_version}+cpu":
        problems.append(f"torch: the lock must pin the CPU build {torch_version}+cpu (the Makefile's TORCH_VERSION)")
    return problems


def _installed_extras() -> list[str]:
    return _makefile_var("EXTRAS").split(",")


def test_the_lock_pins_every_requirement_of_the_installed_extras_with_hashes():
    requirements = _pyproject_requirements(_installed_extras())
    assert _lock_problems(LOCK.read_text(), requirements, _makefile_var("TORCH_VERSION")) == []
    entries, _ = _parse_lock(LOCK.read_text())
    assert len(entries) > len(requirements)  # their dependencies too


def test_make_install_installs_every_extra_but_the_compiled_peer():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert sorted(_installed_extras()) == sorted(set(extras) - {"peer"})  # a new extra: decide whether it is locked


_REQ = [Requirement("transformers>=5.24,<6"), Requirement("numpy>=1.26"), Requirement("torch>=2.4")]
_GOOD = """# made by make lock
numpy==2.4.6 \\
    --hash=sha256:{h}
torch==2.13.0+cpu \\
    --hash=sha256:{h}
transformers==5.24.0 \\
    --hash=sha256:{h} \\
    --hash=sha256:{h}
""".replace("{h}", "0" * 64)


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("", "", None),
        ("transformers==5.24.0", "transformers==4.57.0", "the lock pins 4.57.0"),
        ("numpy==2.4.6", "numpy>=2.4.6", "not pinned with =="),
        ("numpy==2.4.6 \\\n    --hash=sha256:" + "0" * 64, "numpy==2.4.6", "needs sha256 hashes"),
        ("numpy==2.4.6", "numpy-other==2.4.6", "numpy>=1.26: not in the lock"),
        ("torch==2.13.0+cpu", "torch==2.13.0", "CPU build"),
        ("torch==2.13.0+cpu", "torch==2.13.0+cpu ; sys_platform == 'darwin'", "not pinned"),
    ],
)
def test_the_lock_check_finds_each_kind_of_fault(old, new, problem):
    problems = _lock_problems(_GOOD.replace(old, new, 1), _REQ, "2.13.0")
    assert problems == [] if problem is None else any(problem in p for p in problems), problems


def test_the_lock_holds_the_hash_of_the_local_torch_wheel_pip_finds():
    wheel = f"torch-{_makefile_var('TORCH_VERSION')}+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    files = [Path(d) / wheel for d in os.environ.get("PIP_FIND_LINKS", "").split() if (Path(d) / wheel).is_file()]
    if not files:
        pytest.skip(f"no {wheel} in PIP_FIND_LINKS: pip takes torch from PyTorch's CPU index")
    digest = hashlib.sha256(files[0].read_bytes()).hexdigest()
    assert digest in _parse_lock(LOCK.read_text())[0]["torch"][1]


def _install_recipe() -> str:
    return re.search(r"^\$\(STAMP\):.*?\n\n", MAKEFILE, re.M | re.S).group(0)


def test_make_install_installs_the_lock_hash_checked_and_reinstalls_when_it_changes():
    assert _makefile_var("LOCK") == "requirements/lock.txt"
    recipe = _install_recipe()
    assert "$(LOCK)" in recipe.splitlines()[0]  # the stamp depends on the lock
    cpu = re.split(r"^(?:else|endif)$", recipe, flags=re.M)[1]  # the CPU branch of `ifeq ($(GPU),1)`
    assert re.search(r"^sh scripts/install_lock.sh \$\(BIN\) \$\(LOCK\)", cpu.strip())
    # the script installs uv (pinned, with hashes, in the lock), then the lock by uv, else by pip: hash-checked
    script = (ROOT / "scripts" / "install_lock.sh").read_text().replace("\\\n", " ")
    installs = [ln for ln in script.splitlines() if "pip install" in ln and not ln.lstrip().startswith("#")]
    assert len(installs) == 3 and all("--require-hashes --no-deps" in ln for ln in installs), installs
    assert "uv" in _parse_lock(LOCK.read_text())[0]
    pips = re.findall(r"pip install (.*)", recipe)
    allowed = ("-q --require-hashes --no-deps", "-q --no-deps -e .", '-q "torch==$(TORCH_VERSION)"')
    assert all(p.startswith(allowed) for p in pips), pips  # nothing else resolves versions of its own
    assert re.search(r"^upgrade:\n\t\$\(MAKE\) lock LOCK_ARGS=\"--upgrade.*\n\t\$\(MAKE\) test$", MAKEFILE, re.M)


def _points_at_the_lock(lines, base: Path, name: str) -> None:
    lines = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    includes = [ln for ln in lines if ln.startswith("-r ")]
    assert [(base / ln[3:]).resolve() for ln in includes] == [LOCK], f"{name} must install the lock"
    assert all(ln.startswith(("-r ", "--extra-index-url ")) for ln in lines), f"{name} names packages of its own"


def test_binder_installs_the_lock():
    _points_at_the_lock((ROOT / "binder" / "requirements.txt").read_text().splitlines(), ROOT / "binder", "binder")


def test_environment_yml_installs_the_lock_then_labkit():
    text = (ROOT / "environment.yml").read_text()
    pip_block = text.split("- pip:", 1)[1]
    # conda writes the pip section to a file next to environment.yml: -r paths are relative to it
    _points_at_the_lock([ln.strip()[2:] for ln in pip_block.splitlines() if ln.strip().startswith("- ")], ROOT,
                        "environment.yml")
    assert "python=3.11" in text
    assert "pip install --no-deps -e ." in text.splitlines()[0]  # an editable install cannot be hash-checked


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


def test_colab_constraints_pin_every_locked_package_but_torch_at_the_locks_version():
    entries, _ = _parse_lock(LOCK.read_text())
    lines = (ROOT / "requirements" / "constraints.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    pins = {canonicalize_name(k): v for k, v in pins.items()}
    assert pins == {k: v for k, (v, _) in entries.items() if k not in ("torch", "torchao")}
    assert "torch" not in pins and len(pins) == len(entries) - 2  # Colab keeps its CUDA torch (and torchao with it)


def test_every_labs_colab_install_uses_the_constraints():
    name = re.search(r'^Repository = "https://github\.com/[\w.-]+/([\w.-]+)"', (ROOT / "pyproject.toml").read_text(),
                     re.M).group(1)  # fmt: skip
    for lab in sorted((ROOT / "labs").glob("[0-9][0-9]_*.py")):
        installs = [line for line in lab.read_text().splitlines() if "%pip install" in line and "/content/" in line]
        assert installs, f"{lab.name}: no Colab install line"
        for line in installs:
            assert f"-c /content/{name}/requirements/constraints.txt -e " in line, f"{lab.name}: {line.strip()}"
