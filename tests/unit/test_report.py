"""`labkit run-labs`: labs executed, exported to HTML that draws its plots offline, and an index.html that
lists every lab with its recorded numbers — a failing lab marked failed with its error, and a non-zero exit."""

import contextlib
import datetime as dt
import io
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from labkit import cli
from labkit.hardware import detect
from labkit.notebook import report, run

pytest.importorskip("papermill", reason="papermill is not installed here: notebooks cannot run (install labkit[lab])")

ROOT = Path(__file__).resolve().parents[2]
REAL_LAB = ROOT / "labs" / "00_start_here.ipynb"  # the quickest real lab (~10 s in smoke mode): a plot, a widget


def broken_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nb.cells = [nbformat.v4.new_markdown_cell("# Lab 98 — Broken on purpose"),
                nbformat.v4.new_code_cell("SMOKE = False", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("raise ZeroDivisionError('this lab is broken on purpose')")]  # fmt: skip
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """`labkit run-labs --smoke --html` over a labs folder holding a real lab and a broken notebook."""
    root = tmp_path_factory.mktemp("run_labs")
    labs, out = root / "labs", root / "reports"
    labs.mkdir()
    shutil.copy(REAL_LAB, labs / REAL_LAB.name)
    broken_notebook(labs / "98_broken.ipynb")
    with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()) as log:
        code = cli.main(["run-labs", "--smoke", "--html", "--labs-dir", str(labs), "--out", str(out)])
    return code, out, err.getvalue(), log.getvalue()


@pytest.mark.timeout(240)
def test_a_failing_lab_makes_the_command_fail_but_every_lab_is_reported(ran):
    code, out, err, log = ran
    assert code == 1
    assert "labs: 100%" in err and "2/2" in err  # the progress bar over labs
    assert "1 lab(s) failed: 98_broken" in err and f"index: {out / 'index.html'}" in log
    names = {p.name for p in out.iterdir()}
    assert {"index.html", f"{REAL_LAB.stem}.html", f"{REAL_LAB.stem}.ipynb", "98_broken.html"} <= names


def test_index_links_each_lab_with_its_numbers_hardware_and_date(ran):
    out = ran[1]
    page = (out / "index.html").read_text()
    rows = re.findall(r'<tr class="lab-(ok|failed)" id="([^"]+)">(.*?)</tr>\n?(?=<tr class="lab-|</tbody>)', page, re.S)
    assert [(status, lab) for status, lab, _ in rows] == [("ok", REAL_LAB.stem), ("failed", "98_broken")]
    ok_row, failed_row = rows[0][2], rows[1][2]
    assert f'href="{REAL_LAB.stem}.html"' in ok_row and f">{report.lab_title(REAL_LAB)}</a>" in ok_row
    results = run.read_results(nbformat.read(out / REAL_LAB.name, as_version=4))
    name, value = next((k, v) for k, v in results.items() if isinstance(v, float))
    assert f"{name}</b>: {value:.4g}" in ok_row  # a recorded number, as recorded
    assert f"all {len(results)} recorded results" in ok_row
    assert 'href="98_broken.html"' in failed_row  # what ran before the error is still readable
    assert "ZeroDivisionError: this lab is broken on purpose (in cell [" in failed_row
    assert "1 of 2 labs ran (smoke parameters)" in page and "failed: 98_broken" in page
    assert detect().cpu_model in page and dt.date.today().isoformat() in page


def test_lab_page_is_self_contained(ran):
    out = ran[1]
    page = (out / f"{REAL_LAB.stem}.html").read_text()
    nb = nbformat.read(out / REAL_LAB.name, as_version=4)
    figures = sum("application/vnd.plotly.v1+json" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert figures >= 1 and page.count("Plotly.newPlot") == figures
    assert re.search(r"plotly\.js v\d+\.\d+", page)  # the library itself is inlined
    sources = re.findall(r'<script[^>]+src="([^"]+)"', page)
    assert not [s for s in sources if "plotly" in s or "require" in s or "widgets" in s], sources
    assert run.WIDGET_NOTE in page and "application/vnd.jupyter.widget-view+json" not in page


@pytest.mark.timeout(60)
def test_lab_page_draws_every_plot_with_the_network_blocked(ran):
    from ..test_browser import chromium_page

    out = ran[1]
    page_path = out / f"{REAL_LAB.stem}.html"
    figures = page_path.read_text().count("Plotly.newPlot")
    with chromium_page() as page:
        fetched = []
        page.route(re.compile(r"^https?://"), lambda route: (fetched.append(route.request.url), route.abort()))
        page.goto(page_path.as_uri(), wait_until="load")
        drawn = page.locator(".js-plotly-plot .main-svg")
        drawn.nth(figures - 1).wait_for(state="attached", timeout=15_000)
        assert page.locator(".js-plotly-plot").count() == figures
        assert page.locator(".js-plotly-plot .trace").count() >= figures  # data drawn, not empty axes
    assert not [u for u in fetched if "plotly" in u], fetched  # nothing plot-related came from the network


def test_format_value_title_and_error_text():
    assert report.format_value(0.123456) == "0.1235" and report.format_value(True) == "True"
    assert report.format_value({"a": 1.0, "b": [1, 2]}) == "{a: 1, b: [1, 2]}"
    assert len(report.format_value(list(range(1000)), width=50)) == 50
    assert report.lab_title(ROOT / "labs" / "13_capstone_serving_bloom_176b.ipynb") == (
        "Lab 13 — Capstone: serving BLOOM-176B on a budget")

    class KernelError(Exception):  # what papermill raises: the kernel's exception name and value
        ename, evalue, exec_count = "ValueError", "\x1b[31mbad\x1b[0m value", 3

    assert report.describe_error(KernelError()) == "ValueError: bad value (in cell [3])"
    assert report.describe_error(TimeoutError("cell timed out")) == "TimeoutError: cell timed out"


def test_widget_views_become_a_note(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    cell = nbformat.v4.new_code_cell("panel")
    widget = {run.WIDGET_MIME: {"model_id": "x"}, "text/plain": "VBox()"}
    cell.outputs = [nbformat.v4.new_output("display_data", data) for data in (widget, {"text/plain": "42"})]
    nb.cells = [cell]
    assert run.static_widgets(nb) == 1
    assert "widgets" not in nb.metadata and cell.outputs[0]["data"]["text/html"] == run.WIDGET_NOTE
    assert cell.outputs[1]["data"] == {"text/plain": "42"}


def test_index_of_nothing_but_failures_and_json_safe_results(tmp_path):
    reports = [report.LabReport("01_x", "Lab 01 — <x>", False, 1.0, error="boom <b>"),
               report.LabReport("02_y", "Lab 02", True, 2.0, {"n": 3, "s": "<i>"}, html=tmp_path / "02_y.html")]
    index = report.write_index(reports, tmp_path, mode="full", hardware_rows=[("CPU", "test <cpu>")],
                               when=dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC))  # fmt: skip
    page = index.read_text()
    assert "&lt;x&gt;" in page and "boom &lt;b&gt;" in page and "&lt;i&gt;" in page and "<b>boom" not in page
    assert "2026-01-02 03:04 UTC" in page and "1 of 2 labs ran (full parameters)" in page
    assert 'href="02_y.html"' in page  # a relative link inside the report folder


def test_every_lab_parameters_sit_under_the_explicit_ones_and_a_bad_device_never_starts(monkeypatch, tmp_path):
    import papermill

    seen = []

    def execute(path, out, parameters, **kwargs):  # papermill's place: what each lab would be given
        seen.append(dict(parameters))
        return nbformat.v4.new_notebook()

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    with run.every_lab(DEVICE="cpu"):
        run.run_lab(REAL_LAB, tmp_path, html=False)
        run.run_lab(REAL_LAB, tmp_path, html=False, parameters={"DEVICE": "auto"})
    run.run_lab(REAL_LAB, tmp_path, smoke=False, html=False)
    assert seen == [{"SMOKE": True, "DEVICE": "cpu"}, {"SMOKE": True, "DEVICE": "auto"}, {}]
    with pytest.raises(ValueError, match=r"choose from \['auto', 'cpu', 'cuda', 'cuda:N'\]"):
        run.run_lab(REAL_LAB, tmp_path, parameters={"DEVICE": "gpu0"})
    assert len(seen) == 3  # the bad DEVICE was refused before papermill started


@pytest.mark.timeout(120)
def test_run_labs_device_reaches_every_lab(tmp_path):
    """`labkit run-labs --device cpu`: the lab's DEVICE parameter is "cpu" when it runs (it records what it got)."""
    labs, out = tmp_path / "labs", tmp_path / "reports"
    labs.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    record = "from labkit.notebook import run\nrun.record({'DEVICE': DEVICE})"
    nb.cells = [nbformat.v4.new_markdown_cell("# Lab 97 — Records its device"),
                nbformat.v4.new_code_cell('SMOKE = False\nDEVICE = "auto"', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(record)]  # fmt: skip
    nbformat.write(nb, labs / "97_device.ipynb")
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["run-labs", "--smoke", "--no-html", "--device", "cpu", "--labs-dir", str(labs),
                         "--out", str(out)])  # fmt: skip
    assert code == 0
    assert run.read_results(nbformat.read(out / "97_device.ipynb", as_version=4)) == {"DEVICE": "cpu"}
