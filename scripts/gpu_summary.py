"""The summary of a `make test-gpu` run: per lab pass/fail, seconds and what it recorded; the GPU unit tests' counts.

    python scripts/gpu_summary.py --labs-junit L.xml --unit-junit U.xml --notebooks DIR --out gpu_summary.json

Reads pytest's JUnit XML (pass/fail, also for a lab whose notebook never ran) and the executed notebooks under DIR
(pytest's --basetemp: papermill's own duration, the dict `run.record()` stored, the error of a failed cell). The
headline numbers the GPU track asks for are picked from every lab's recorded results by key name (HEADLINES); a key
a lab does not record yet is simply absent. Prints one line per lab and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from labkit.notebook.run import list_labs, read_results  # noqa: E402

LAB_TEST = re.compile(r"test_lab_runs_and_records_results\[(\d\d_[^\]]+)\]")
# Recorded keys (flattened "a.b.c", matched case-insensitively) that carry each number the GPU track reports.
HEADLINES = {
    "HBM / memory bandwidth (GB/s)": r"(hbm|bandwidth).*(gb_?/?s|gbps)|(gb_?/?s|gbps).*(hbm|bandwidth)",
    "tensor-core FLOP/s (TFLOP/s)": r"tflop|flops_half",
    "CUDA-graph speed-up": r"graph.*speed_?up|speed_?up.*graph",
    "decode roofline % of bound": (r"roofline.*(pct|percent|fraction|share|of_bound)|(pct|percent)_?of_?(the_)?"
                                   r"(bandwidth_)?bound|pct_of_roofline"),
    "KV-limited concurrency": r"kv.*(concurren|sequences|max_seq|fit)|concurren.*(kv|limit|max)",
    "continuous vs sync tok/s": r"(continuous|sync|static).*(tok|throughput)|(tok|throughput).*(continuous|sync)",
}
DEVICE_KEYS = ("device", "device_type", "half_precision")


def flatten(value, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are leaves."""
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def headlines(results: dict) -> dict[str, dict[str, object]]:
    """The recorded numbers whose key names match HEADLINES, by headline."""
    flat = {k: v for k, v in flatten(results).items() if isinstance(v, int | float) and not isinstance(v, bool)}
    found = {}
    for title, pattern in HEADLINES.items():
        hits = {k: v for k, v in flat.items() if re.search(pattern, k, re.I)}
        if hits:
            found[title] = dict(list(hits.items())[:16])
    return found


def read_junit(path: Path | None) -> dict[str, dict]:
    """test name -> {"outcome": passed|failed|error|skipped, "seconds", "message"} from a JUnit XML file."""
    if path is None or not path.exists():
        return {}
    cases = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = "failed" if tag == "failure" else tag
                message = (node.get("message") or node.text or "")[:600]
                break
        name = case.get("name", "")
        cases[name] = {"outcome": outcome, "seconds": float(case.get("time") or 0), "message": message}
    return cases


def notebook_error(nb: dict) -> str:
    """The failing cell's exception ("ValueError: ..."), or ""."""
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return f"{output.get('ename')}: {output.get('evalue')}"[:600]
    return ""


def executed_notebooks(folder: Path | None) -> dict[str, dict]:
    """lab stem -> the executed notebook (the newest, when there are several) found under `folder`."""
    found: dict[str, tuple[float, dict]] = {}
    if folder is None or not folder.exists():
        return {}
    for path in folder.rglob("[0-9][0-9]_*.ipynb"):
        try:
            nb = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if path.stem not in found or path.stat().st_mtime > found[path.stem][0]:
            found[path.stem] = (path.stat().st_mtime, nb)
    return {stem: nb for stem, (_, nb) in found.items()}


def summarize(labs_junit: Path | None, unit_junit: Path | None, notebooks: Path | None, device: str) -> dict:
    tests = {m.group(1): t for name, t in read_junit(labs_junit).items()
             if (m := LAB_TEST.fullmatch(name.split("@")[0]))}  # "...[06_decoding_strategies]@group" -> the stem
    executed = executed_notebooks(notebooks)
    labs = {}
    for lab in list_labs():
        test, nb = tests.get(lab.stem), executed.get(lab.stem)
        if test is None and nb is None:
            continue  # not selected in this run
        paper = (nb or {}).get("metadata", {}).get("papermill", {})
        results = read_results(nb) if nb else {}
        outcome = test["outcome"] if test else ("failed" if paper.get("exception") else "not finished")
        labs[lab.stem] = {
            "outcome": outcome,
            "seconds": round(paper.get("duration") or (test or {}).get("seconds") or 0.0, 1),
            "error": (notebook_error(nb or {}) or (test or {}).get("message", "")) if outcome != "passed" else "",
            **{k: results[k] for k in DEVICE_KEYS if k in results},
            "headlines": headlines(results),
            "results": results,
        }
    unit = read_junit(unit_junit)
    counts = {o: sum(t["outcome"] == o for t in unit.values()) for o in ("passed", "failed", "error", "skipped")}
    return {"lab_device": device, "labs": labs, "gpu_unit_tests": {**counts, "failed_tests": {
        name: t["message"] for name, t in unit.items() if t["outcome"] in ("failed", "error")}}}


def report(summary: dict) -> str:
    lines = [f"{'lab':<44} {'outcome':<13} {'seconds':>7}  headline numbers"]
    for stem, lab in summary["labs"].items():
        heads = "; ".join(f"{k}={v:.4g}" for h in lab["headlines"].values() for k, v in list(h.items())[:2])
        lines.append(f"{stem:<44} {lab['outcome']:<13} {lab['seconds']:>7.1f}  {heads[:160]}")
        if lab["error"]:
            lines.append(f"{'':<44} {lab['error'][:200]}")
    total = sum(lab["seconds"] for lab in summary["labs"].values())
    passed = sum(lab["outcome"] == "passed" for lab in summary["labs"].values())
    unit = summary["gpu_unit_tests"]
    lines.append(f"labs: {passed} of {len(summary['labs'])} passed, {total:.0f} s of notebooks "
                 f"(DEVICE={summary['lab_device']}); GPU unit tests: {unit['passed']} passed, {unit['failed']} failed, "
                 f"{unit['error']} errors, {unit['skipped']} skipped")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labs-junit", type=Path)
    parser.add_argument("--unit-junit", type=Path)
    parser.add_argument("--notebooks", type=Path, help="where pytest left the executed notebooks (its --basetemp)")
    parser.add_argument("--device", default="cuda", help="the DEVICE the labs ran with")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    summary = summarize(args.labs_junit, args.unit_junit, args.notebooks, args.device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1, default=str))
    print(report(summary))
    print(f"summary: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
