"""Run labs headless and write one HTML index of them: status, time, key recorded numbers, hardware, date.

    reports = run_labs(find_labs(None), Path("reports"), smoke=True)
    write_index(reports, Path("reports"), mode="smoke")        # -> reports/index.html

Each lab's own page is the executed notebook exported by `run.export_html` (plots drawn offline). A lab
that fails is still listed, marked failed with its error, and linked to the page of what did run.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from labkit.notebook.run import export_html, run_lab

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # colour codes in kernel tracebacks
SHOWN = 6  # recorded results shown in the index row (numbers first); the rest fold away


@dataclass
class LabReport:
    lab: str  # file stem, e.g. "06_decoding_strategies"
    title: str
    ok: bool
    seconds: float
    results: dict = field(default_factory=dict)
    html: Path | None = None
    notebook: Path | None = None
    error: str | None = None


def lab_title(path: Path) -> str:
    """The first markdown heading of a notebook ("Lab 06 — Decoding strategies"), else its file stem."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError):
        return path.stem
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", "")).splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return path.stem


def describe_error(err: BaseException) -> str:
    """One readable line (and the failing cell) for an exception from papermill, without colour codes."""
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    if ename:  # papermill.PapermillExecutionError: the kernel's exception
        cell = getattr(err, "exec_count", None)
        text = f"{ename}: {evalue}" + (f" (in cell [{cell}])" if cell is not None else "")
    else:
        text = f"{type(err).__name__}: {err}"
    return ANSI.sub("", text).strip()[:2000]


def run_labs(labs: list[Path], out_dir: Path, smoke: bool = True, html_export: bool = True,
             progress: bool = True) -> list[LabReport]:  # fmt: skip
    """Execute each lab (papermill) into `out_dir` with a progress bar; a failure is recorded, not raised."""
    from tqdm.auto import tqdm

    reports = []
    for lab in (bar := tqdm(labs, desc="labs", unit="lab", disable=not progress)):
        bar.set_postfix_str(lab.stem)
        start = time.perf_counter()
        try:
            run = run_lab(lab, out_dir, smoke=smoke, html=html_export)
        except Exception as err:  # noqa: BLE001 - report every lab, then fail
            executed = out_dir / lab.name  # papermill saves what ran, error included
            page = _export_partial(executed) if html_export else None
            reports.append(LabReport(lab.stem, lab_title(lab), False, time.perf_counter() - start, html=page,
                                     notebook=executed if executed.exists() else None, error=describe_error(err)))
            tqdm.write(f"FAILED {lab.stem}: {reports[-1].error[:500]}")
            continue
        reports.append(LabReport(lab.stem, lab_title(lab), True, run.seconds, run.results, run.html, run.notebook))
        tqdm.write(f"{run.lab}: {run.seconds:.1f} s -> {run.html or run.notebook}")
    return reports


def _export_partial(executed: Path) -> Path | None:
    try:
        return export_html(executed) if executed.exists() else None
    except Exception:  # noqa: BLE001 - a notebook too broken to export still gets its row
        return None


def format_value(value, width: int = 160) -> str:
    """A recorded value as short text: 4 significant digits, dicts and lists shortened."""
    if isinstance(value, bool) or value is None:
        text = str(value)
    elif isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k}: {format_value(v, width)}" for k, v in value.items()) + "}"
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(format_value(v, width) for v in value) + "]"
    else:
        text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _results_html(results: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(format_value(v))}</td></tr>"
                   for k, v in results.items())  # fmt: skip
    numeric = lambda v: isinstance(v, int | float) and not isinstance(v, bool)  # noqa: E731
    numbers_first = sorted(results.items(), key=lambda kv: not numeric(kv[1]))
    head = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(format_value(v, 80))}</li>"
                   for k, v in numbers_first[:SHOWN])  # fmt: skip
    more = f"<details><summary>all {len(results)} recorded results</summary><table>{rows}</table></details>"
    return f"<ul>{head}</ul>{more if len(results) > SHOWN else ''}"


def _row(r: LabReport, out_dir: Path) -> str:
    target = r.html or r.notebook
    name = html.escape(r.title)
    link = f'<a href="{html.escape(_relative(target, out_dir))}">{name}</a>' if target else name
    status = '<span class="ok">ok</span>' if r.ok else '<span class="failed">failed</span>'
    body = _results_html(r.results) if r.ok else f'<pre class="error">{html.escape(r.error or "")}</pre>'
    return (f'<tr class="{"lab-ok" if r.ok else "lab-failed"}" id="{html.escape(r.lab)}"><td>{r.lab[:2]}</td>'
            f'<td>{link}</td><td>{status}</td><td class="time">{r.seconds:.1f} s</td><td>{body}</td></tr>')  # fmt: skip


def _relative(path: Path, out_dir: Path) -> str:
    try:
        return path.resolve().relative_to(out_dir.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_uri()


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:.4em;text-align:left;vertical-align:top}ul{margin:0;padding-left:1.2em}
.ok{color:#17803d;font-weight:bold}.failed{color:#b00020;font-weight:bold}pre.error{white-space:pre-wrap;color:#b00020}
details table{font-size:90%}.hw th{width:16em}td.time{white-space:nowrap}"""


def write_index(reports: list[LabReport], out_dir: Path, mode: str = "smoke",
                hardware_rows: list[tuple[str, str]] | None = None, when: dt.datetime | None = None) -> Path:
    """`out_dir/index.html`: one row per lab (link, status, time, recorded numbers or error), the hardware it
    ran on and the run date. Plain HTML and CSS, no script: it reads the same offline."""
    if hardware_rows is None:
        from labkit.hardware import detect

        hardware_rows = detect().rows()
    when = when or dt.datetime.now().astimezone()
    failed = [r.lab for r in reports if not r.ok]
    summary = (f"{len(reports) - len(failed)} of {len(reports)} labs ran ({mode} parameters) in "
               f"{sum(r.seconds for r in reports):.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    stamp = f'<time datetime="{when.isoformat(timespec="seconds")}">{when:%Y-%m-%d %H:%M %Z}</time>'
    hw = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in hardware_rows)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Inference Lab — report</title><style>{STYLE}</style></head>
<body><h1>Inference Lab — every lab, executed</h1>
<p>Run on {stamp}. {html.escape(summary)}.</p>
<table class="labs"><thead><tr><th>#</th><th>lab</th><th>status</th><th>time</th><th>key recorded results</th></tr>
</thead><tbody>{"".join(_row(r, out_dir) for r in reports)}</tbody></table>
<h2>Hardware</h2><table class="hw">{hw}</table></body></html>
"""  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
