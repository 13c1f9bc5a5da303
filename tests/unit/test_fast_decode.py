"""Decode backends: exact paths reproduce HF's greedy tokens; 4-bit agrees; the benchmark runs in smoke mode."""

import importlib.util
import json
import runpy
import sys

import pytest

from labkit import generation, hardware, measure, quant
from labkit.experiments import fast_decode

needs_genai = pytest.mark.skipif(importlib.util.find_spec("onnxruntime_genai") is None,
                                 reason="onnxruntime-genai is not installed")  # fmt: skip


def test_agreement_counts_the_prefix_before_the_first_difference():
    assert measure.prefix_agreement([[1, 2, 3, 4]], [[1, 2, 3, 4]]) == 1.0
    assert measure.prefix_agreement([[1, 2, 9, 4]], [[1, 2, 3, 4]]) == 0.5  # the 4 after the miss does not count
    assert measure.prefix_agreement([[1, 2], [7, 8]], [[1, 2], [1, 2]]) == 0.5
    with pytest.raises(ValueError, match="different lengths"):  # an early stop must not pass for agreement
        measure.prefix_agreement([[1, 2]], [[1, 2, 3]])


@needs_genai
@pytest.mark.parametrize("name", ["hf-eager-fp32", "ort-genai-fp32"])
def test_exact_paths_reproduce_hf_greedy_tokens(name):
    prompts = fast_decode.held_out_prompts("tiny-llama", 2, 16)
    reference = generation.reference_tokens("tiny-llama", prompts, 8)
    backend = generation.get_backend(name, "tiny-llama")
    backend.load("tiny-llama", threads=2)
    run = backend.generate(prompts, 8, warmup=1, repeat=2)
    assert run.tokens == reference  # batch of 2, token for token
    assert run.batch == 2 and len(run.step_s) == 2 * 7  # decoding.timing: every step of both repeats
    assert run.prefill_s > 0 and run.decode_tok_s > 0 and backend.weight_bytes > 0


@needs_genai
def test_int4_smollm2_agrees_with_fp32_on_held_out_text():
    prompts = fast_decode.held_out_prompts("smollm2-135m", 2, 32)
    reference = generation.reference_tokens("smollm2-135m", prompts, 12)
    gen = generation.get_backend("ort-genai-int4", "smollm2-135m")
    gen.load("smollm2-135m", threads=2)
    assert measure.prefix_agreement(gen.generate(prompts, 12).tokens, reference) > 0  # the first token(s) agree
    hf = generation.get_backend("hf-eager-fp32", "smollm2-135m")
    hf.load("smollm2-135m", threads=2)
    # teacher-forced: the same next token as fp32 at most positions of the held-out text
    assert fast_decode.top1_agreement(gen.logits(prompts), hf.logits(prompts)) >= 0.5
    assert gen.weight_bytes < 0.2 * 538e6  # 4-bit blocks: under a fifth of fp32's bytes


def test_unknown_and_unavailable_backends():
    with pytest.raises(ValueError, match="unknown decode backend 'vllm'; choose from"):
        generation.get_backend("vllm", "tiny-llama")
    with pytest.raises(generation.BackendUnavailable, match="cannot run here"):
        generation.get_backend("llama.cpp", "tiny-llama")  # no GGUF for the tiny model (or no llama-cpp-python)
    assert issubclass(generation.BackendUnavailable, hardware.Unavailable)


@needs_genai
def test_genai_backend_refuses_bloom_before_any_work():
    ok, reason = generation.registry()["ort-genai-int4"].available("tiny-bloom")
    assert not ok and "does not support bloom" in reason
    with pytest.raises(hardware.Unavailable, match="does not support bloom"):
        generation.get_backend("ort-genai-int4", "tiny-bloom")


def test_a_quantized_model_decodes_through_its_backend():
    q = quant.quantize("int8-dynamic", "tiny-llama")
    prompts = fast_decode.held_out_prompts("tiny-llama", 1, 8)
    run = generation.backend_for(q).generate(prompts, 4, warmup=0, repeat=1)
    assert len(run.tokens[0]) == 4 and run.decode_tok_s > 0
    with pytest.raises(generation.BackendUnavailable, match="forward-only ONNX graph"):
        generation.backend_for(quant.QuantizedModel(None, object(), 1, 1, name="ort-int8"))


@needs_genai
def test_benchmark_script_smoke(tmp_path, monkeypatch):
    out = tmp_path / "decode.json"
    monkeypatch.setattr(sys, "argv", ["decode.py", "--smoke", "--out", str(out),
                                      "--generators", "hf-eager-fp32", "ort-genai-int4", "llama.cpp"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path("benchmarks/decode.py", run_name="__main__")
    assert done.value.code == 0
    report = json.loads(out.read_text())
    assert {r["generator"] for r in report["results"]} == {"hf-eager-fp32", "ort-genai-int4"}
    assert "llama.cpp" in report["unavailable"]  # missing peer (or no GGUF for tiny-llama) is reported, not an error
    assert all(r["decode_tok_s"] > 0 for r in report["results"])


def test_llama_cpp_exposes_its_logits_and_they_are_close_to_the_dequantized_models():
    """llama.cpp's logits (when it is installed and runs here) put the same token first as the fp32 model it was
    quantized from on most positions, not all: it multiplies the Q4_1 blocks by 8-bit-quantized activations."""
    ok, reason = generation.registry()["llama.cpp"].available("smollm2-135m")
    if not ok:
        pytest.skip(reason)
    prompts = fast_decode.held_out_prompts("smollm2-135m", 1, 32)
    peer = generation.get_backend("llama.cpp", "smollm2-135m")
    peer.load("smollm2-135m", 2)
    reference = generation.registry()["hf-eager-fp32"]
    reference.load("smollm2-135m", 2)
    logits, ref = peer.logits(prompts), reference.logits(prompts)
    assert logits.shape == ref.shape
    assert 0.8 <= fast_decode.top1_agreement(logits, ref) <= 1.0
