"""House rules for labkit's floor plan: module size, names by concept, documented entry points, honest errors.

The import layers and the absence of cycles are checked by `lint-imports` (pyproject.toml), which `make test` runs;
`test_import_contracts_hold` runs it here too, so a plain `pytest` sees a broken contract.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LABKIT = ROOT / "labkit"
MODULES = sorted(LABKIT.rglob("*.py"))
MAX_LINES = 300
LAB_NUMBER = re.compile(r"\blabs?\s*\d{2}\b|\blab_?\d|_\d{2}_", re.IGNORECASE)


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def test_no_module_over_300_lines():
    long = {_rel(p): n for p in MODULES if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by idea): {long}"


def test_module_names_and_docstrings_name_concepts_not_labs():
    named = [_rel(p) for p in MODULES if LAB_NUMBER.search(p.stem)]
    assert not named, f"modules named after labs: {named}"
    cited = [_rel(p) for p in MODULES if LAB_NUMBER.search(ast.get_docstring(ast.parse(p.read_text())) or "")]
    assert not cited, f"module docstrings that cite a lab number (a lab names its module, not the reverse): {cited}"


def test_every_module_says_what_it_is():
    missing = [_rel(p) for p in MODULES if p.stat().st_size and not ast.get_docstring(ast.parse(p.read_text()))
               and p.name not in ("__init__.py", "__main__.py")]
    assert not missing, f"modules without a docstring: {missing}"


def _broad(handler: ast.ExceptHandler) -> list[str]:
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return ["bare"] if handler.type is None else [ast.unparse(t) for t in types]


def test_broad_excepts_are_justified_and_experiments_catch_only_unavailable():
    """A crash must never become a "not supported here" row: experiments catch only hardware.Unavailable; any
    other `except Exception` in the library is a boundary (a server, a report, a UI) and says why on its line."""
    problems = []
    for p in MODULES:
        lines = p.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.ExceptHandler):
                continue
            caught, line = _broad(node), lines[node.lineno - 1]
            if any(c in ("bare", "Exception", "BaseException") for c in caught) and "noqa: BLE001 -" not in line:
                problems.append(f"{_rel(p)}:{node.lineno} catches {caught} without a '# noqa: BLE001 - why'")
            if "experiments" in p.parts and any(c in ("Exception", "RuntimeError", "ImportError", "bare")
                                                for c in caught):
                problems.append(f"{_rel(p)}:{node.lineno} catches {caught}; experiments catch only Unavailable")
    assert not problems, "\n".join(problems)


def _notebook_calls() -> dict[str, set[str]]:
    """labkit module -> attribute names the labs' percent sources use as `alias.name(`."""
    calls: dict[str, set[str]] = {}
    for src in sorted((ROOT / "labs").glob("[0-9][0-9]_*.py")):
        text = src.read_text()
        aliases = {}
        for m in re.finditer(r"^from (labkit[\w.]*) import ([\w, ]+)$", text, re.M):
            for name in m.group(2).split(","):
                name, _, alias = name.strip().partition(" as ")
                aliases[alias or name] = f"{m.group(1)}.{name}"
        for alias, target in aliases.items():
            for attr in re.findall(rf"(?<![\w.]){re.escape(alias)}\.([A-Za-z]\w*)\(", text):
                calls.setdefault(target, set()).add(attr)
            if re.search(rf"(?<![\w.]){re.escape(alias)}\(", text):  # a function imported by name
                mod, _, name = target.rpartition(".")
                calls.setdefault(mod, set()).add(name)
    return calls


def _entry_points():
    for target, names in sorted(_notebook_calls().items()):
        try:
            module = importlib.import_module(target)
        except ImportError:
            continue  # `from labkit.x import function`: recorded under its module
        for name in sorted(names):
            obj = getattr(module, name, None)
            if inspect.isfunction(obj) and obj.__module__.startswith("labkit"):
                yield f"{obj.__module__}.{name}", obj


def test_functions_the_labs_call_are_documented():
    """Google style (recommenders): what goes in (Args), what comes out (Returns), what it raises."""
    problems = []
    for where, fn in _entry_points():
        doc = inspect.getdoc(fn) or ""
        params = [p for p in inspect.signature(fn).parameters.values() if p.name not in ("self", "cls")
                  and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        returns = inspect.signature(fn).return_annotation not in (None, "None", inspect.Signature.empty)
        if not doc:
            problems.append(f"{where}: no docstring")
            continue
        if params and "Args:" not in doc:
            problems.append(f"{where}: no 'Args:' section")
        if returns and "Returns:" not in doc and "Yields:" not in doc:
            problems.append(f"{where}: no 'Returns:' section")
    assert not problems, "\n".join(problems)


def test_import_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.skip("import-linter is not installed (install labkit[test])")
    run = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:]
