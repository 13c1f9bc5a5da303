"""Counts that describe labkit's floor plan: modules, the largest one, function-local imports, import cycles.

    python scripts/house_stats.py [--json]

An import counts wherever it is written (inside a function too), so cycles hidden in function bodies are found.
A cycle is a strongly connected group of modules in that graph (Tarjan); a package's __init__ is its own node.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "labkit"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, here: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = here.split(".") if is_pkg else here.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(imported labkit module, is it inside a function) for every import statement in the file."""
    here, is_pkg = module_name(path), path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    local_nodes = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(node, here, is_pkg)
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `labkit.models.load_model` -> `labkit.models`
                t = t.rpartition(".")[0]
            if t and t.startswith("labkit") and t != here:
                found.append((t, id(node) in local_nodes))
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def stats() -> dict:
    files = sorted(ROOT.rglob("*.py"))
    known = {module_name(p) for p in files}
    graph: dict[str, set[str]] = {}
    total = local = 0
    for p in files:
        # A package's __init__ re-exporting its children is not an edge back up from them.
        edges = imports(p, known)
        total += len(edges)
        local += sum(is_local for _, is_local in edges)
        graph[module_name(p)] = {t for t, _ in edges if not (p.name == "__init__.py" and
                                                               t.startswith(module_name(p) + "."))}
    lines = {str(p.relative_to(ROOT.parent)): len(p.read_text().splitlines()) for p in files}
    largest = max(lines, key=lines.get)
    found = cycles(graph)
    return {"modules": len(files), "lines": sum(lines.values()), "largest_module": largest,
            "largest_module_lines": lines[largest],
            "modules_over_300_lines": sorted(k for k, v in lines.items() if v > 300),
            "intra_package_imports": total, "function_local_imports": local,
            "cycles": len(found), "cycle_members": found}


if __name__ == "__main__":
    s = stats()
    if "--json" in sys.argv:
        print(json.dumps(s, indent=2))
    else:
        for k, v in s.items():
            print(f"{k:>24}: {v}")
