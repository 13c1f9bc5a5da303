"""Simulated int8 against the quantization formulas and a library twin; LLM.int8()'s outlier census against a model
with an outlier planted in a known dimension."""

import pytest
import torch

from labkit import data, models, quant
from labkit.experiments import activation_outliers as ao
from labkit.experiments import quantization


def test_weight_fake_quant_is_the_int8_grid():
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))
    w[3, 5] = 40.0  # one large weight: it sets the per-tensor scale, and only row 3's per-channel scale
    # PyTorch's symmetric qint8 convention: scale = absmax / ((127 - (-128)) / 2), integers in [-128, 127]
    for granularity, absmax in (("tensor", w.abs().max()), ("channel", w.abs().amax(1, keepdim=True))):
        scale = absmax / 127.5
        q = ao.fake_quant_weight(w, granularity)
        steps = q / scale
        assert torch.allclose(steps, steps.round(), atol=1e-4)
        assert steps.min() >= -128 - 1e-4 and steps.max() <= 127 + 1e-4
        assert ((q - w).abs() <= scale / 2 + 1e-6).all()  # round to nearest: at most half a step away
    assert (ao.fake_quant_weight(w, "tensor")[0] == 0).sum() > (ao.fake_quant_weight(w, "channel")[0] == 0).sum()


def test_activation_fake_quant_is_the_uint8_grid():
    x = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(1))
    x[0, 0, 0] = 300.0  # one huge value in one token
    x[1, 2, 3] = 0.0
    for granularity in ("tensor", "token"):
        step = ao.activation_step(x, granularity)
        q = ao.fake_quant_activation(x, granularity)
        assert ((q - x).abs() <= step / 2 + 1e-5).all()
        assert q[1, 2, 3] == 0  # the zero point keeps zero exact
    tensor_step = (x.max() - x.min().clamp(max=0)) / 255  # (max(x, 0) - min(x, 0)) / 255
    assert ao.activation_step(x, "tensor").item() == pytest.approx(tensor_step.item())
    assert (ao.activation_step(x, "token") <= ao.activation_step(x, "tensor") + 1e-7).all()
    step = ao.activation_step(x, "tensor").item()  # one huge value: every |x| under half its step becomes 0
    assert torch.equal(ao.fake_quant_activation(x, "tensor")[1] == 0, x[1].abs() < step / 2)
    with pytest.raises(ValueError, match=r"unknown activations granularity 'row'; choose from \['tensor', 'token'\]"):
        ao.fake_quant_activation(x, "row")


def test_simulated_int8_changes_nothing_it_should_not():
    model, tok = models.load_model("tiny-llama", device="cpu")
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    before = model(input_ids=ids).logits
    with ao.simulated_int8(model):  # nothing quantized: the same function
        assert torch.equal(model(input_ids=ids).logits, before)
    with ao.simulated_int8(model, "channel", "token"):
        assert not torch.equal(model(input_ids=ids).logits, before)
    assert torch.equal(model(input_ids=ids).logits, before)  # the model's own weights never changed
    with pytest.raises(ValueError, match="unknown weights granularity"):
        with ao.simulated_int8(model, "group"):
            pass


def test_simulated_weight_only_int8_matches_torchao():
    pytest.importorskip("torchao", reason="torchao is not installed here")
    model, tok = models.load_model("tiny-bloom-shakespeare", device="cpu")
    tokens = data.eval_tokens(tok, budget=512, window=256)
    sim = ao.int8_granularity(model, tokens, {"W8 per-channel": ("channel", None)}).perplexity_vs_fp32.iloc[0]
    reference = quant.quantize("fp32", "tiny-bloom-shakespeare", model=model)
    twin = quant.quantize("int8-weight", "tiny-bloom-shakespeare", model=model)  # torchao: per-channel int8 weights
    rows = quantization.quality({"int8-weight": twin, "fp32": reference}, reference, tokens).set_index("quantizer")
    real = rows.perplexity["int8-weight"] / rows.perplexity["fp32"]
    assert sim == pytest.approx(real, abs=2e-3)


def test_census_finds_a_planted_outlier_dimension():
    model, tok = models.load_model("tiny-llama", device="cpu")
    dim = 17
    with torch.no_grad():
        for layer in model.model.layers:  # every MLP input gets dimension 17 scaled up 1000× (the norm's gain)
            layer.post_attention_layernorm.weight[dim] *= 1000
    c = ao.census(model, data.eval_tokens(tok, budget=128, window=128))
    assert c.systematic_dims == (dim,)
    assert c.layers == model.config.num_hidden_layers and c.positions == 128
    mlp_in = c.table[c.table.role == "mlp in"]
    assert (mlp_in.dims_at_threshold >= 1).all() and (mlp_in.max_abs >= ao.LLM_INT8_THRESHOLD).all()
    assert (c.table.zeroed_per_token <= c.table.zeroed_per_tensor + 1e-9).all()  # a token's step <= the tensor's
    assert c.threshold == 6.0  # bitsandbytes' default llm_int8_threshold, LLM.int8()'s 6.0


@pytest.mark.gpu
def test_census_and_simulation_on_the_gpu_match_the_cpu():
    model, tok = models.load_model("tiny-bloom-shakespeare", device="cpu")
    tokens = data.eval_tokens(tok, budget=256, window=128)
    gpu = quant.quantize("fp32", "tiny-bloom-shakespeare", device="cuda", model=model).model
    on_cpu, on_gpu = ao.census(model, tokens[:1]), ao.census(gpu, tokens[:1])  # tokens stay on the CPU: moved there
    assert on_gpu.table.max_abs.tolist() == pytest.approx(on_cpu.table.max_abs.tolist(), rel=1e-3)
    variants = {"W8A8 per-tensor": ("tensor", "tensor")}
    cpu_ppl = ao.int8_granularity(model, tokens, variants).perplexity_vs_fp32.iloc[0]
    assert ao.int8_granularity(gpu, tokens, variants).perplexity_vs_fp32.iloc[0] == pytest.approx(cpu_ppl, rel=1e-3)
