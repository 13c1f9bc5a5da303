"""Each quantizer on the trained tiny BLOOM (fast), GGUF on SmolLM2; what cannot run here is Unavailable, before
any work; a crash inside a quantizer is not."""

import math

import pytest
import torch

from labkit import data, devices, generation, hardware, models, precision, quant
from labkit.experiments import quantization

SOURCE = "tiny-bloom-shakespeare"
# name -> largest allowed stored size relative to fp32 (the embedding often stays in float)
SIZE_BOUND = {"fp32": 1.0, "fp16": 0.51, "bf16": 0.51, "int8-dynamic": 0.55, "int8-weight": 0.55,
              "quanto-int8": 0.55, "bnb-int8": 0.55, "int4-weight": 0.45, "bnb-nf4": 0.45, "ort-int8": 0.55,
              "ort-int4": 0.45}  # fmt: skip


@pytest.fixture(scope="module")
def base():
    return models.load_model(SOURCE, device="cpu")


@pytest.fixture(scope="module")
def tokens(base):
    return data.eval_tokens(base[1], budget=512, window=256)


@pytest.fixture(scope="module")
def reference(base):
    return quant.quantize("fp32", SOURCE, model=base[0])


def build(name: str, model):
    try:
        return quant.quantize(name, SOURCE, model=model)
    except hardware.Unavailable as err:  # e.g. a GPU box without the quant extra; `make test` installs it
        pytest.skip(f"{name} cannot run here: {err}")


@pytest.mark.parametrize("name", list(SIZE_BOUND))
def test_quantizer_shrinks_and_keeps_quality(name, base, tokens, reference):
    q = build(name, base[0])
    ids = tokens[:1, :16]
    assert q.logits(ids).shape == (1, 16, 4096)
    ratio = q.stored_bytes / reference.stored_bytes
    assert ratio <= SIZE_BOUND[name], f"{name}: {ratio:.3f} of fp32"
    if name not in ("fp32", "fp16", "bf16"):
        assert ratio < 0.56  # a quantizer that saves nothing is broken
    assert q.resident_bytes > 0
    row = quantization.quality({name: q}, reference, tokens).iloc[0]
    assert math.isfinite(row.perplexity)
    ref_ppl = quantization.quality({"fp32": reference}, reference, tokens).perplexity.iloc[0]
    assert row.perplexity <= 1.05 * ref_ppl  # within 5 % of fp32 on 510 predicted tokens
    assert row.top1_agreement > 0.9


def test_fp32_agrees_with_itself(reference, tokens):
    row = quantization.quality({"fp32": reference}, reference, tokens).iloc[0]
    assert row.top1_agreement == 1.0 and abs(row.kl_vs_fp32) < 1e-6


def test_resident_bytes_counts_tied_weights_once(base):
    model = base[0]
    params = sum(p.numel() for p in model.parameters())
    assert quant.resident_bytes(model) == 4 * params
    assert abs(quant.stored_bytes(model) - 4 * params) / (4 * params) < 0.35  # + the tied copy and metadata


def test_dynamic_int8_replaces_linear_layers(base):
    q = build("int8-dynamic", base[0])
    layer = quantization.describe_linear(q)
    assert "Linear" in layer["layer"] and "qint8" in layer["weight"]


def test_gguf_reports_the_bytes_of_what_runs():
    from labkit.models import smollm2

    if smollm2.find_gguf() is None:
        try:
            smollm2.download_gguf()
        except hardware.Unavailable as err:
            pytest.skip(f"the SmolLM2 GGUF is not here and cannot be downloaded: {err}")
    q = quant.quantize("gguf-q4_1", "smollm2-135m")
    # what runs is the dequantized model: 4 bytes per parameter (tied embedding counted once) + its buffers (RoPE's
    # inverse frequencies), not the file's 4 bits
    buffers = sum(b.numel() * b.element_size() for b in q.model.buffers())
    assert q.resident_bytes == 4 * models.estimate_memory("smollm2-135m").params + buffers
    assert all(p.dtype == torch.float32 for p in q.model.parameters())
    assert smollm2.gguf_tensor_bytes() == 96_576_768  # the 4-bit file, as a file
    assert smollm2.gguf_tensor_types() == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    assert "dequantized to fp32" in q.notes
    quant.QUANTIZERS["gguf-q4_1"].check(smollm2.HUB_ID)  # also next to the Hub's published weights


def test_gguf_tensor_facts_are_parsed_once_per_file(tmp_path, monkeypatch):
    """The tensor bytes and types come from gguf's reader the first time and from the cache after; a file that
    changed is read again. The file is written here by gguf's own writer, so the answer is known independently."""
    import gguf
    import numpy as np

    from labkit.models import smollm2

    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "two.gguf"

    def write(rows: int) -> None:
        writer = gguf.GGUFWriter(str(path), "llama")
        writer.add_tensor("a", np.zeros((rows, 32), np.float32))
        writer.add_tensor("b", np.zeros((4, 32), np.float16))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    write(8)
    assert smollm2.gguf_tensor_bytes(path) == 8 * 32 * 4 + 4 * 32 * 2
    assert smollm2.gguf_tensor_types(path) == {"F16": 1, "F32": 1}
    (kept,) = (tmp_path / "cache" / "gguf").glob("two.gguf.*.json")
    reads = []
    monkeypatch.setattr(gguf, "GGUFReader", lambda *a: reads.append(a))  # any parse from here on is seen
    assert smollm2.gguf_tensor_bytes(path) == 8 * 32 * 4 + 4 * 32 * 2 and not reads
    monkeypatch.undo()
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    kept.write_text("")  # a summary cut short: parsed again and rewritten
    assert smollm2.gguf_tensor_types(path) == {"F16": 1, "F32": 1} and kept.read_text()
    write(16)  # another size: another key
    assert smollm2.gguf_tensor_bytes(path) == 16 * 32 * 4 + 4 * 32 * 2


def test_smollm2_weights_choice_says_why(monkeypatch):
    from labkit.models import smollm2

    with pytest.raises(ValueError, match=r"unknown SmolLM2 weights 'fp8'; choose from \['auto', 'hub', 'gguf'\]"):
        smollm2.weights("fp8")
    assert smollm2.weights("gguf")[0] == smollm2.NAME

    def unreachable(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(smollm2, "cached_file", unreachable)
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo, filename: None)  # not cached
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name, why = smollm2.weights("auto")
    assert name == smollm2.NAME and "HF_HUB_OFFLINE=1" in why and "Q4_1 GGUF" in why
    with pytest.raises(hardware.Unavailable, match="not in this machine's Hugging Face cache and the Hub is offline"):
        smollm2.weights("hub")
    monkeypatch.delenv("HF_HUB_OFFLINE")  # online, but the download fails: the library's error is named
    monkeypatch.setattr(smollm2.hub, "reachable", lambda: True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    assert "could not be fetched: We couldn't connect" in smollm2.weights("auto")[1]
    monkeypatch.setattr(smollm2, "cached_file", lambda repo, filename: f"/cache/{repo}/{filename}")
    assert smollm2.weights("auto")[0] == smollm2.weights("hub")[0] == smollm2.HUB_ID


def test_int8_groups_match_what_the_libraries_do(base):
    import onnx

    dynamic = build("int8-dynamic", base[0])  # torch.ao: one weight scale per tensor
    layer = next(m for m in dynamic.model.modules() if hasattr(m, "_packed_params"))
    assert layer.weight().qscheme() == torch.per_tensor_affine and layer.weight().q_zero_point() == 0
    ort = build("ort-int8", base[0])  # ONNX Runtime: DynamicQuantizeLinear (one scale per tensor) before MatMulInteger
    ops = {n.op_type for n in onnx.load(ort.session._model_path).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    for name in quantization.WEIGHT_ONLY_INT8:  # torchao / quanto: one weight scale per output channel
        q = build(name, base[0])
        layer = q.model.transformer.h[0].mlp.dense_4h_to_h
        scale = getattr(layer.weight, "scale", None)
        scale = scale if scale is not None else layer.weight._scale
        assert tuple(scale.shape) == (layer.out_features, 1), name
    assert set(quantization.W8A8_PER_TENSOR) | set(quantization.WEIGHT_ONLY_INT8) <= set(quantization.INT8)


def test_bad_combinations_say_why():
    with pytest.raises(ValueError, match=r"unknown quantizer 'int3'; choose from \['fp32'"):
        quant.quantize("int3", SOURCE)
    with pytest.raises(ValueError, match=r"unknown device 'tpu'"):
        quant.quantize("fp32", SOURCE, device="tpu")
    unavailable = r"int8-dynamic \(torch.ao\) runs on \['cpu'\], not 'cuda'; on cuda use"
    with pytest.raises(quant.QuantizerUnavailable, match=unavailable):
        quant.quantize("int8-dynamic", SOURCE, device="cuda")
    with pytest.raises(quant.QuantizerUnavailable, match="other models need llama.cpp"):
        quant.quantize("gguf-q4_1", SOURCE, model=torch.nn.Linear(1, 1))  # refused before touching the model
    assert issubclass(quant.QuantizerUnavailable, hardware.Unavailable)


def test_a_crash_inside_a_quantizer_is_not_unavailable():
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed here")
    with pytest.raises(AttributeError, match="save_pretrained") as err:  # not a transformers model: a real bug
        quant.quantize("bnb-int8", SOURCE, model=torch.nn.Linear(1, 1))
    assert not isinstance(err.value, hardware.Unavailable)


def test_speed_measures_prefill_and_decode(base, reference):
    s = quantization.speed(reference, prefill_tokens=32, decode_tokens=4, batch_sizes=(1, 2), vocab=4096, repeat=2)
    assert s["prefill_ms"] > 0 and s["decode_tok_s_b1"] > 0 and s["decode_tok_s_b2"] > 0
    ort = build("ort-int8", base[0])
    assert math.isnan(quantization.speed(ort, prefill_tokens=32, batch_sizes=(1,), repeat=1)["decode_tok_s_b1"])


def test_genai_int8_keeps_quality_and_decodes():
    pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installed")
    base, tok = models.load_model("tiny-llama", device="cpu")  # Llama: what its model builder supports
    reference = quant.quantize("fp32", "tiny-llama", model=base)
    q = quant.quantize("genai-int8", "tiny-llama", model=base)
    assert q.stored_bytes / reference.stored_bytes < 0.5  # int8 blocks; the input embedding stays fp32
    window = data.eval_tokens(tok, budget=256, window=128)
    rows = quantization.quality({"genai-int8": q, "fp32": reference}, reference, window).set_index("quantizer")
    assert rows.loc["genai-int8", "perplexity"] <= 1.05 * rows.loc["fp32", "perplexity"]
    assert rows.loc["genai-int8", "top1_agreement"] > 0.8
    run = generation.backend_for(q).generate(window[:2, :8].tolist(), 4)  # its C++ loop, timed by decoding.timing
    assert len(run.tokens) == 2 and run.decode_tok_s > 0
    assert quantization.speed(q, decode_tokens=4, batch_sizes=(1, 2), vocab=len(tok))["decode_tok_s_b2"] > 0
    with pytest.raises(hardware.Unavailable, match="does not support bloom"):
        quant.quantize("genai-int4", SOURCE, model=torch.nn.Linear(1, 1))  # refused before touching the model


def test_quantizer_places_its_copy_on_the_device_and_leaves_the_source(base):
    model = base[0]
    for name in ("bf16", "int8-dynamic"):
        q = build(name, model)
        assert q.device == torch.device("cpu")
        assert all(t.device.type == "cpu" for t in (*q.model.parameters(), *q.model.buffers()))
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())  # untouched
    nf4 = build("bnb-nf4", model)  # bitsandbytes >= 0.45 has CPU kernels: it runs here, on the CPU
    assert nf4.device.type == "cpu" and "CPU kernels" in nf4.notes


def test_a_cuda_only_quantizer_on_the_cpu_names_its_devices():
    cuda_only = quant.Quantizer("cuda-only", "somelib", "int8 on CUDA", ("cuda",), lambda model, source, device: None)
    with pytest.raises(quant.QuantizerUnavailable, match=r"cuda-only \(somelib\) runs on \['cuda'\], not 'cpu'; "
                                                         r"on cpu use one of \['fp16', 'bf16', 'int8-dynamic'"):
        cuda_only.ensure_available(SOURCE, "cpu")
    assert cuda_only.runs_on("cpu") == torch.device("cpu")  # not moved: ensure_available says why it cannot run


def test_cpu_only_quantizers_run_on_the_cpu_in_a_gpu_run(monkeypatch):
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(quant, "resolve_device", lambda device: gpu)  # as on a machine with a GPU
    for name, q in quant.QUANTIZERS.items():
        assert q.runs_on("cuda") == (gpu if "cuda" in q.devices else torch.device("cpu")), name
    assert {n for n, q in quant.QUANTIZERS.items() if "cuda" not in q.devices} >= {"int8-dynamic", "ort-int8"}


def test_every_row_names_its_device_and_speedups_divide_by_fp32_there():
    r = quantization.compare_quantizers(SOURCE, names=["fp32", "bf16", "int8-dynamic", "bnb-nf4"], budget=256,
                                        decode_tokens=2, batch_sizes=(1,), progress=False, device="cpu")
    t = r.table.set_index("quantizer")
    label = devices.device_label("cpu")
    assert set(t.device) == {label} and set(t.attrs["fp32_decode_tok_s"]) == {label}
    fp32_speed = t.loc["fp32", "decode_tok_s_b1"]
    assert t.decode_speedup_b1.tolist() == pytest.approx((t.decode_tok_s_b1 / fp32_speed).tolist())
    ladder = quantization.precision_ladder(r.table, "bf16")  # the GPU section's function, on this CPU's rows
    assert list(ladder.index) == ["fp32", "bf16", "bnb-nf4"] and set(ladder.device) == {label}
    assert ladder.loc["bf16", "bytes_vs_half"] == 1.0
    assert ladder.loc["fp32", "bytes_vs_half"] == pytest.approx(t.stored_MiB["fp32"] / t.stored_MiB["bf16"])
    with pytest.raises(ValueError, match="half must be 'fp16' or 'bf16'"):
        quantization.precision_ladder(r.table, "int8")
    with pytest.raises(ValueError, match="has no fp16 row that ran"):
        quantization.precision_ladder(r.table, "fp16")


@pytest.mark.gpu
def test_bitsandbytes_on_the_gpu_uses_its_cuda_kernels_and_the_native_half(base):
    pytest.importorskip("bitsandbytes")
    half = precision.torch_dtype(precision.native_half("cuda"))
    for name, layer_class in (("bnb-int8", "Linear8bitLt"), ("bnb-nf4", "Linear4bit")):
        q = quant.quantize(name, SOURCE, device="cuda", model=base[0])
        assert q.device.type == "cuda" and quantization.describe_linear(q)["layer"] == layer_class
        assert q.model.get_input_embeddings().weight.dtype == half and "CUDA kernels" in q.notes
    r = quantization.compare_quantizers(SOURCE, names=["fp32", "fp16", "bf16", "int8-dynamic", "bnb-int8"],
                                        budget=256, decode_tokens=2, batch_sizes=(1,), progress=False, device="cuda")
    t = r.table.set_index("quantizer")
    cpu, gpu = devices.device_label("cpu"), devices.device_label("cuda")
    assert t.loc["int8-dynamic", "device"] == cpu and set(t.device.drop("int8-dynamic")) == {gpu}
    assert t.loc["int8-dynamic", "decode_speedup_b1"] == pytest.approx(
        t.loc["int8-dynamic", "decode_tok_s_b1"] / t.attrs["fp32_decode_tok_s"][cpu]["decode_tok_s_b1"])
    assert set(quantization.precision_ladder(r.table, precision.native_half("cuda")).device) == {gpu}
