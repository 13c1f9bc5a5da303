"""`make lab`'s server part: the exact command from the Makefile, bound to loopback, token-protected."""

import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab_command(port: int) -> list[str]:
    cmd = ["make", "-n", "-s", "lab", f"PORT={port}"]
    dry = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    (line,) = [ln for ln in dry.stdout.splitlines() if "jupyter lab" in ln]
    cmd = shlex.split(line)
    cmd[0] = str(Path(sys.executable).parent / "jupyter")  # the venv running the tests
    return cmd


def _status(url: str) -> int:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        return urllib.request.build_opener(NoRedirect).open(url, timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("make") is None, reason="`make` is not installed here")
def test_make_lab_serves_jupyterlab_on_loopback_with_a_token(tmp_path):
    import psutil

    pytest.importorskip("jupyterlab", reason="JupyterLab is not installed here (install labkit[lab])")

    port = _free_port()
    cmd = _lab_command(port)
    assert "--ip" in cmd and cmd[cmd.index("--ip") + 1] == "127.0.0.1"
    log = tmp_path / "jupyter.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = None
        for _ in range(120):
            match = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=(\w+)", log.read_text())
            if match:
                url = match.group(0)
                break
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.5)
        assert url, "JupyterLab did not print its URL with a token:\n" + log.read_text()[-2000:]
        token = url.split("token=")[1]
        base = f"http://127.0.0.1:{port}"
        assert _status(url) == 200
        assert _status(f"{base}/api/contents?token={token}") == 200
        assert _status(f"{base}/api/contents") == 403  # no token: refused
        assert _status(f"{base}/lab") == 302  # no token: sent to the login page, never the app
        listening = {c.laddr.ip for c in psutil.Process(proc.pid).net_connections() if c.status == "LISTEN"}
        assert listening == {"127.0.0.1"}, listening
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not _port_open(port), "the server still listens after it was stopped"
