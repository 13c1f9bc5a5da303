"""Lab 06 in a real browser: JupyterLab on loopback, driven by headless Chromium the way a reader uses it —
open the notebook, Run All Cells, move a widget, see the plot redraw. Screenshot in the test's tmp dir."""

import json
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "labs" / "06_decoding_strategies.ipynb"
SETTINGS = {  # render every cell (no windowing), no news pop-up
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
}


def chromium_path() -> str:
    """Debian's Chromium and the Playwright driver, or skip saying which is missing (no browser downloads)."""
    pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install labkit[test])")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Chromium is not installed: `sudo apt-get install chromium` (Debian/Ubuntu; `make test` does it "
                    "when run as root), or put a chromium on PATH; this test downloads no browser")
    return path


@contextmanager
def chromium_page(**context):
    """A headless Chromium page (Debian's binary driven by Playwright)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=["--no-sandbox"])
        try:
            yield browser.new_page(**context)
        finally:
            browser.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smoke_copy(dest: Path) -> Path:
    """Lab 06 with SMOKE = True in its parameters cell (tiny model, a few tokens): the browser runs it fast."""
    nb = json.loads(LAB.read_text())
    (cell,) = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    source = "".join(cell["source"])
    assert "SMOKE = False" in source
    cell["source"] = source.replace("SMOKE = False", "SMOKE = True")
    path = dest / LAB.name
    path.write_text(json.dumps(nb))
    return path


@contextmanager
def jupyterlab(root: Path, settings: Path):
    port, token = _free_port(), secrets.token_hex(16)
    for name, value in SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(value))
    cmd = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--ip", "127.0.0.1", f"--port={port}",
           f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={settings}",
           f"--LabApp.workspaces_dir={settings / 'workspaces'}", "--allow-root"]  # fmt: skip
    log = open(settings / "jupyter.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            assert proc.poll() is None, (settings / "jupyter.log").read_text()[-2000:]
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(0.25)
        yield base, token
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.mark.timeout(150)
def test_lab06_runs_in_jupyterlab_and_its_widget_redraws_the_plot(tmp_path):
    chromium_path()
    from playwright.sync_api import expect

    (tmp_path / "labs").mkdir()
    nb = smoke_copy(tmp_path / "labs")
    start = time.perf_counter()
    viewport = {"width": 1400, "height": 1000}
    with jupyterlab(tmp_path / "labs", tmp_path) as (base, token), chromium_page(viewport=viewport) as page:
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base}/lab/tree/{nb.name}?token={token}")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=30_000)
        expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=30_000)  # kernel started

        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()  # the menu, as a user would
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        done = page.get_by_text(re.compile(r"^beam_best:", re.M))  # printed by the last cell's runner.record
        failed = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]')  # a traceback
        expect(done.or_(failed).first).to_be_visible(timeout=90_000)
        assert failed.count() == 0, failed.first.inner_text()[:2000]
        figures = page.locator(".jp-OutputArea .js-plotly-plot")  # plotly's JupyterLab renderer
        assert figures.count() >= 5  # every plot cell drew its figure
        assert page.locator(".js-plotly-plot .main-svg").count() >= 5

        # The temperature panel (section 3) reruns on every change: it starts empty, then draws, then redraws.
        panel = page.locator(".widget-vbox", has=page.locator(".widget-label", has_text="min_p")).first
        panel.scroll_into_view_if_needed()
        assert panel.locator(".js-plotly-plot").count() == 0
        title = panel.locator(".js-plotly-plot .gtitle")
        readout = panel.locator(".widget-slider", has_text="temperature").locator(".widget-readout")
        for value in ("2.0", "0.5"):
            readout.click()
            page.keyboard.press("Control+A")
            page.keyboard.type(value)
            page.keyboard.press("Enter")
            expect(title).to_contain_text(f"T={value}", timeout=30_000)
        assert "entropy" in title.text_content()
        page.screenshot(path=str(tmp_path / "lab06.png"))
    assert (tmp_path / "lab06.png").stat().st_size > 10_000
    assert not [e for e in errors if "plotly" in e.lower() or "widget" in e.lower()], errors
    print(f"browser test: {time.perf_counter() - start:.1f} s")
