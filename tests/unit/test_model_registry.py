"""The model registry (content hashes, lineage, persistence), its promotion gate, and the lab's demo helpers."""

import hashlib
import re
import shutil
import subprocess

import pytest

from labkit.experiments.model_registry import flip_byte, model_versions
from labkit.serving.promotion import PromotionRule, gate, promote_if_passes
from labkit.serving.registry import FORMATS, ModelRegistry, content_sha256, file_sha256


@pytest.fixture
def artifacts(tmp_path):
    """A checkpoint folder (two files) and two ONNX-named files with different bytes."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(bytes(range(256)) * 40)
    (ckpt / "config.json").write_text('{"hidden_size": 8}')
    (tmp_path / "a.onnx").write_bytes(b"onnx-a" * 1000)
    (tmp_path / "b.onnx").write_bytes(b"onnx-b" * 3000)
    return tmp_path


def test_file_hash_is_sha256sum(artifacts):
    path = artifacts / "a.onnx"
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    if shutil.which("sha256sum"):
        out = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout
        assert file_sha256(path) == out.split()[0]


def test_folder_hash_is_the_hash_of_its_manifest(artifacts):
    ckpt = artifacts / "ckpt"
    lines = "".join(f"{hashlib.sha256((ckpt / n).read_bytes()).hexdigest()}  {n}\n"
                    for n in sorted(["model.safetensors", "config.json"]))
    sha, size = content_sha256(ckpt)
    assert sha == hashlib.sha256(lines.encode()).hexdigest()
    assert size == sum(f.stat().st_size for f in ckpt.iterdir())
    (ckpt / "config.json").rename(ckpt / "config2.json")  # a rename alone changes the folder's hash
    assert content_sha256(ckpt)[0] != sha


def test_one_changed_byte_changes_about_half_the_bits(artifacts):
    path = artifacts / "b.onnx"
    before = file_sha256(path)
    offset, old, new = flip_byte(path, 7)
    assert (offset, new) == (7, old ^ 0xFF) and path.read_bytes()[7] == new
    bits = bin(int(before, 16) ^ int(file_sha256(path), 16)).count("1")
    assert 128 - 48 <= bits <= 128 + 48  # binomial(256, 1/2): mean 128, sd 8
    with pytest.raises(ValueError, match="offset"):
        flip_byte(path, path.stat().st_size)


def test_register_lineage_and_persistence(artifacts):
    reg = ModelRegistry(artifacts / "reg")
    v1 = reg.register("m", "v1", "safetensors", artifacts / "ckpt", transformation="trained")
    v2 = reg.register("m", "v2", "onnx", artifacts / "a.onnx", parent=v1.sha256, transformation="exported",
                      measurements={"perplexity": 10})
    v3 = reg.register("m", "v3", "onnx", artifacts / "b.onnx", parent=v2.sha256, transformation="quantized")
    assert v2.sha256 == hashlib.sha256((artifacts / "a.onnx").read_bytes()).hexdigest()
    assert [e.version for e in reg.lineage("m", "v3")] == ["v3", "v2", "v1"]
    assert reg.register("m", "v3", "onnx", artifacts / "b.onnx") == v3  # the same bytes again: the same entry
    again = ModelRegistry(artifacts / "reg")  # read back from registry.json
    assert again.get("m", "v2") == v2 and again.versions("m") == ["v1", "v2", "v3"]
    assert list(reg.table("m").columns[:4]) == ["name", "version", "format", "stage"]
    reg.clear()
    assert ModelRegistry(artifacts / "reg").versions("m") == [] and (artifacts / "a.onnx").exists()


def test_register_refuses_bad_input(artifacts):
    reg = ModelRegistry(artifacts / "reg")
    with pytest.raises(ValueError, match=re.escape(str(list(FORMATS)))):
        reg.register("m", "v1", "pickle", artifacts / "a.onnx")
    with pytest.raises(ValueError, match="not a gguf"):
        reg.register("m", "v1", "gguf", artifacts / "a.onnx")
    with pytest.raises(ValueError, match="does not exist"):
        reg.register("m", "v1", "onnx", artifacts / "missing.onnx")
    with pytest.raises(ValueError, match="parent"):
        reg.register("m", "v1", "onnx", artifacts / "a.onnx", parent="0" * 64)
    reg.register("m", "v1", "onnx", artifacts / "a.onnx")
    with pytest.raises(ValueError, match="immutable"):
        reg.register("m", "v1", "onnx", artifacts / "b.onnx")
    with pytest.raises(ValueError, match=r"\['v1'\]"):
        reg.get("m", "v9")


def test_verify_catches_changed_and_missing_files(artifacts):
    reg = ModelRegistry(artifacts / "reg")
    a = reg.register("m", "v1", "onnx", artifacts / "a.onnx")
    ckpt = reg.register("m", "v2", "safetensors", artifacts / "ckpt")
    assert reg.verify(a) == [] and reg.verify(ckpt) == []
    flip_byte(artifacts / "a.onnx")
    (artifacts / "ckpt" / "config.json").unlink()
    assert "changed since registration" in reg.verify(a)[0]
    assert "changed since registration" in reg.verify(ckpt)[0]
    (artifacts / "a.onnx").unlink()
    assert "does not exist" in reg.verify(a)[0]


def _three(artifacts, m1: dict, m2: dict):
    reg = ModelRegistry(artifacts / "reg")
    v1 = reg.register("m", "v1", "safetensors", artifacts / "ckpt", measurements=m1)
    reg.register("m", "v2", "onnx", artifacts / "a.onnx", parent=v1.sha256, measurements=m2)
    return reg


def test_gate_first_version_then_tolerances(artifacts):
    rule = PromotionRule(max_quality_increase=0.02, max_p99_increase=0.10)
    reg = _three(artifacts, {"perplexity": 100.0, "p99_ms": 10.0}, {"perplexity": 102.0, "p99_ms": 11.0})
    first = promote_if_passes(reg, "m", "v1", rule)
    assert first.promote and first.production is None and reg.production("m").version == "v1"
    ok = gate(reg, "m", "v2", rule)  # exactly at both limits (100 × 1.02, 10 × 1.10): passes
    assert ok.promote and ok.reasons == () and ok.production == "v1"
    assert ok.table().set_index("check").limit["quality: perplexity"] == pytest.approx(102.0)
    promote_if_passes(reg, "m", "v2", rule)
    assert reg.get("m", "v1").stage == "archived" and reg.get("m", "v2").stage == "production"
    assert "already the production version" in gate(reg, "m", "v2", rule).reasons[0]


def test_gate_lists_every_reason(artifacts):
    rule = PromotionRule(max_quality_increase=0.02, max_p99_increase=0.10)
    reg = _three(artifacts, {"perplexity": 100.0, "p99_ms": 10.0}, {"perplexity": 103.0, "p99_ms": 12.0})
    promote_if_passes(reg, "m", "v1", rule)
    flip_byte(artifacts / "a.onnx")
    result = promote_if_passes(reg, "m", "v2", rule)
    assert not result.promote and result.action == "refuse"
    assert [r.split(":")[0] for r in result.reasons] == ["integrity", "quality", "latency"]
    assert "103 > 102" in result.reasons[1] and "12 > 11" in result.reasons[2]
    assert reg.production("m").version == "v1" and reg.get("m", "v2").stage == "candidate"
    assert result.table().passed.tolist() == [False, False, False]


def test_gate_refuses_missing_measurements(artifacts):
    rule = PromotionRule()
    reg = _three(artifacts, {"perplexity": 100.0}, {"perplexity": 100.0, "p99_ms": 5.0})
    first = gate(reg, "m", "v1", rule)
    assert not first.promote and "no 'p99_ms' measurement" in first.reasons[0]
    reg.set_production("m", "v1")
    assert "v1 has no 'p99_ms'" in gate(reg, "m", "v2", rule).reasons[0]


def test_bad_rules_and_parameters_are_refused():
    with pytest.raises(ValueError, match="max_quality_increase"):
        PromotionRule(max_quality_increase=-0.1)
    with pytest.raises(ValueError, match="max_p99_increase"):
        PromotionRule(max_p99_increase=float("nan"))
    with pytest.raises(ValueError, match="quality"):
        PromotionRule(quality="")
    with pytest.raises(ValueError, match="latency_seq"):  # before any model is loaded or file written
        model_versions(PromotionRule(), window=64, latency_seq=65)
    with pytest.raises(ValueError, match="eval_budget"):
        model_versions(PromotionRule(), eval_budget=10, window=64)
