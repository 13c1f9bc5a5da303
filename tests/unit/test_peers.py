"""The vLLM peer, without vLLM: the missing-venv message, the command line, loopback only. Nothing here starts it."""

import socket
import stat
import sys
from types import SimpleNamespace

import pytest

from labkit.hardware import Unavailable
from labkit.serving import peers
from labkit.serving.loadgen import check_loopback


def test_missing_venv_says_how_to_fix_it(monkeypatch, tmp_path):
    monkeypatch.delenv(peers.PYTHON_ENV, raising=False)
    monkeypatch.setattr(peers, "repo_root", lambda: tmp_path)  # a checkout without .venv-vllm
    with pytest.raises(Unavailable, match=r"make peers") as err:
        peers.vllm_python()
    assert str(tmp_path / ".venv-vllm" / "bin" / "python") in str(err.value)
    with pytest.raises(Unavailable, match=r"make peers"):  # the server is never started
        with peers.vllm_server("smollm2-135m"):
            pytest.fail("a server without vLLM must not start")


def test_named_python_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv(peers.PYTHON_ENV, str(tmp_path / "nope" / "python"))
    with pytest.raises(peers.PeerUnavailable, match=rf"{peers.PYTHON_ENV}=.*nope.*make peers"):
        peers.vllm_python()


def test_named_python_is_used(monkeypatch):
    monkeypatch.setenv(peers.PYTHON_ENV, sys.executable)
    assert str(peers.vllm_python()) == sys.executable


def _script(path, body: str):
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_version_comes_from_the_venv_metadata(tmp_path):
    assert peers.vllm_version(_script(tmp_path / "python", "echo 9.9.9")) == "9.9.9"
    with pytest.raises(peers.PeerUnavailable, match="has no vLLM.*make peers"):  # metadata lookup finds nothing
        peers.vllm_version(_script(tmp_path / "bare", "exit 0"))


def test_command_line_is_loopback_fp32_under_labkits_name():
    argv = peers.server_command("/v/bin/python", "/cache/smollm2-135m", "smollm2-135m", 8123)
    assert argv[:3] == ["/v/bin/python", "-m", "vllm.entrypoints.openai.api_server"]  # not the broken console script

    def opt(name: str) -> str:
        return argv[argv.index(name) + 1]

    assert opt("--host") == "127.0.0.1" and opt("--port") == "8123"
    assert opt("--model") == "/cache/smollm2-135m" and opt("--served-model-name") == "smollm2-135m"
    assert opt("--dtype") == "float32" and opt("--max-model-len") == "1024"
    check_loopback(f"http://{opt('--host')}:{opt('--port')}")  # the load generator accepts what the server binds
    assert not any("0.0.0.0" in a for a in argv)


def test_free_port_is_bindable_on_loopback():
    port = peers.free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))
        assert s.getsockname() == ("127.0.0.1", port)


def test_environment_sets_kv_space_and_stays_offline():
    env = peers.server_env(2.5, base={"PATH": "/bin", peers.PYTHON_ENV: "/x/python"})
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2.5" and env["HF_HUB_OFFLINE"] == "1" and env["PATH"] == "/bin"
    assert peers.PYTHON_ENV not in env
    with pytest.raises(ValueError, match="kv_cache_gb"):
        peers.server_env(0)


def test_preload_finds_the_venvs_openmp_and_goes_first(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "lib").mkdir()
    assert all(lib.name.startswith("libtcmalloc") for lib in peers.preload_libraries(tmp_path / "bin" / "python"))
    (tmp_path / "lib" / "libiomp5.so").write_bytes(b"")
    libs = peers.preload_libraries(tmp_path / "bin" / "python")
    assert libs[0] == tmp_path / "lib" / "libiomp5.so"
    env = peers.server_env(1, base={"LD_PRELOAD": "/x/libmine.so"}, preload=libs)
    assert env["LD_PRELOAD"].split(":") == [*map(str, libs), "/x/libmine.so"]
    assert "LD_PRELOAD" not in peers.server_env(1, base={})


def test_a_server_that_dies_is_reported_with_its_log(monkeypatch, tmp_path):
    # knows its version, then "serves" by failing at once
    fake = _script(tmp_path / "python",
                   'case "$*" in *importlib*) echo 0.0.1;; *) echo "boom: bad model" >&2; exit 3;; esac')
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(peers.models, "resolve", lambda name: SimpleNamespace(checkpoint_dir=tmp_path))
    with pytest.raises(peers.PeerUnavailable, match=r"(?s)status 3.*boom: bad model"):
        with peers.vllm_server("some/model", python=fake, timeout_s=30):
            pytest.fail("a dead server must not be yielded")
    assert "boom: bad model" in (tmp_path / "cache" / "peers" / "vllm-some_model.log").read_text()


def test_one_load_generator_measures_any_server_closed_then_open(tiny_bloom):
    pytest.importorskip("fastapi", reason="the serving extra is not installed (pip install labkit[serve])")
    from labkit.experiments.scheduler_comparison import measure_scheduler

    rows = measure_scheduler("m", "continuous", tiny_bloom, max_batch=4, max_queue=8, clients=(1, 2),
                             requests_per_client=1, rates=(20.0,), open_requests=3, max_tokens=3)
    assert [(r["mode"], r["clients"], r["rate"]) for r in rows] == [("closed", 1, None), ("closed", 2, None),
                                                                      ("open", None, 20.0)]
    assert [r["sent"] for r in rows] == [r["succeeded"] for r in rows] == [1, 2, 3]
    assert all(r["server"] == r["scheduler"] == "continuous" for r in rows)
    assert [r["tokens_from"] for r in rows] == [{"usage": 1}, {"usage": 2}, {"usage": 3}]  # counted from `usage`
    assert rows[0]["mean_decode_batch"] == 1.0  # one client decodes alone: the 2-client warm-up is not counted
