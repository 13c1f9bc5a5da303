"""The peer comparison's fallbacks: without vLLM it reads what benchmarks/serving.py recorded, naming the file and
the hardware, and with neither it returns an empty table that says why."""

import json

import pytest

pytest.importorskip("fastapi", reason="the serving extra is not installed (pip install labkit[serve])")

from labkit.experiments import serving_engines


def test_without_vllm_the_recorded_closed_loop_rows_are_shown_with_their_source(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_VLLM_PYTHON", str(tmp_path / "no-python"))
    rows = [{"server": "vLLM 0.32.0", "mode": "closed", "clients": 1, "tokens_per_s": 17.0},
            {"server": "paged+onnxruntime", "mode": "closed", "clients": 1, "tokens_per_s": 22.0},
            {"server": "vLLM 0.32.0", "mode": "open", "rate": 1.0, "tokens_per_s": 30.0}]
    report = tmp_path / "serving.json"
    report.write_text(json.dumps({"hardware": "a 2-core test machine", "rows": rows}))
    got = serving_engines.peer_comparison("smollm2-135m", live=True, report=report)
    assert got.table.server.tolist() == ["vLLM 0.32.0", "paged+onnxruntime"]  # the open-loop row is not a level
    assert str(report) in got.table.attrs["source"] and "a 2-core test machine" in got.table.attrs["source"]
    assert "make peers" in got.table.attrs["reason"]  # why nothing was measured now, with the fix
    empty = serving_engines.peer_comparison("smollm2-135m", live=False, report=tmp_path / "missing.json")
    assert empty.table.empty and empty.table.attrs["source"] == "" and empty.table.attrs["reason"] == "live=False"
