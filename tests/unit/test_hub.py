"""Whether a Hub file can be had is answered before any download: a dial, not five retries."""

from __future__ import annotations

import socket
import time

import pytest

from labkit.models import hub


@pytest.fixture(autouse=True)
def fresh_dial():
    hub._dial.cache_clear()
    yield
    hub._dial.cache_clear()


@pytest.fixture
def online(monkeypatch):
    for name in ("HF_HUB_OFFLINE", *hub.PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)


def test_a_listening_endpoint_is_reachable_and_a_closed_one_is_not(online):
    with socket.socket() as server:  # a real endpoint on loopback: it accepts connections
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert hub.reachable(f"http://127.0.0.1:{port}")
    start = time.perf_counter()
    assert not hub.reachable(f"http://127.0.0.1:{port}/closed-now")  # same port, nobody listening: refused at once
    assert not hub.reachable("https://name-that-does-not-resolve.invalid", timeout_s=2)  # RFC 2606: never resolves
    assert not hub.reachable(f"127.0.0.1:{port}")  # no scheme: no URL huggingface_hub could use either
    assert time.perf_counter() - start < 5


def test_offline_or_a_proxy_decides_without_dialling(online, monkeypatch):
    monkeypatch.setattr(hub, "_dial", lambda *a: pytest.fail("dialled"))
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert hub.reachable()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub.reachable()


def test_unavailable_names_the_reason(online, monkeypatch):
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo, filename: None)  # nothing cached
    monkeypatch.setattr(hub, "_dial", lambda *a: False)
    assert "cannot be reached (no network?)" in hub.unavailable("org/model", "config.json")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "the Hub is offline (HF_HUB_OFFLINE=1)" in hub.unavailable("org/model", "config.json")
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo, filename: f"/hf/{repo}/{filename}")
    assert hub.unavailable("org/model", "config.json") is None  # cached: nothing else asked
