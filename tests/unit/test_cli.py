import json
import subprocess
import sys

import pytest

from labkit import cli


def test_doctor_prints_a_table(capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["item", "value"]
    assert "CPU" in out and "CUDA" in out and "SmolLM2 prepared" in out
    # then one row per lab: what this machine lacks for it (extras, GPU sections, peers) or "nothing"
    assert "what this machine lacks" in out and "04_runtimes_compared" in out and "13_capstone" in out


def test_doctor_json(capsys):
    assert cli.main(["doctor", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["logical_cores"] >= 1 and "gpus" in data


def test_models_lists_the_registry(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "134.5M params" in out and "tiny-llama" in out


def test_run_labs_rejects_unknown_labs(capsys):
    assert cli.main(["run-labs", "99"]) == 2
    assert "no lab matches '99'; labs are ['00_start_here'" in capsys.readouterr().err


def test_console_script_is_installed():
    cmd = [sys.executable, "-m", "labkit.cli", "--help"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    for command in ("doctor", "prepare", "run-labs", "models"):
        assert command in out


def test_run_labs_rejects_an_unknown_device_before_any_lab_runs(capsys):
    assert cli.main(["run-labs", "--device", "tpu", "00", "--out", "/nonexistent/never-written"]) == 2
    err = capsys.readouterr().err
    assert "labkit run-labs: unknown device 'tpu'; choose from ['auto', 'cpu', 'cuda', 'cuda:N']" in err


def test_run_labs_has_a_device_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run-labs", "--help"])
    assert "--device" in capsys.readouterr().out
