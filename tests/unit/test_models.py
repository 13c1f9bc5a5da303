import json

import pytest
import torch
from transformers import AutoConfig

from labkit import models, precision
from labkit.hardware import CapabilityMissing, Unavailable
from labkit.models import smollm2, specs


@pytest.fixture(scope="module")
def smollm():
    if not smollm2.is_prepared() and smollm2.find_gguf() is None:
        try:
            smollm2.download_gguf()
        except Unavailable as err:  # e.g. a GPU box without network; `make test` prepares it first
            pytest.skip(f"SmolLM2 is not prepared and cannot be downloaded here: {err}")
    return models.load_model("smollm2-135m", device="cpu")


def test_registry_lists_offline_models():
    assert models.list_models() == ["smollm2-135m", "tiny-bloom", "tiny-llama", "tiny-bloom-shakespeare"]


def test_smollm2_answers_the_france_prompt(smollm):
    model, tok = smollm
    answer = models.complete(model, tok, "What is the capital of France?", max_new_tokens=12)
    assert "Paris" in answer


def test_smollm2_is_the_real_pretrained_model(smollm):
    model, _ = smollm
    assert smollm2.is_prepared()
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert next(model.parameters()).dtype == torch.float32 and not model.training


@pytest.mark.parametrize("name", ["tiny-bloom", "tiny-llama"])
def test_memory_estimate_matches_real_parameter_count(name):
    model, _ = models.load_model(name, device="cpu")
    real = sum(p.numel() for p in model.parameters())
    est = models.estimate_memory(name, "float32")
    assert est.params == real
    assert est.bytes == 4 * real
    assert models.estimate_memory(name, "bfloat16").bytes == 2 * real


def test_memory_estimate_of_smollm2_matches_loaded_model(smollm):
    model, _ = smollm
    assert models.estimate_memory("smollm2-135m").params == sum(p.numel() for p in model.parameters()) == 134_515_008


def _bloom_176b_config():
    fields = dict(specs.MODEL_CONFIGS["bloom-176b"])
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


def test_estimate_for_bloom_176b_allocates_nothing():
    est = models.estimate_memory(_bloom_176b_config(), "bfloat16")
    assert 176e9 < est.params < 177e9  # the name says 176B
    assert est.bytes / 1e9 == pytest.approx(specs.BLOOM_176B_BF16_GB, rel=0.01)  # counted on meta vs published
    by_name = models.estimate_memory("bloom-176b", "bf16")  # the published architecture resolves by name too
    assert (by_name.params, by_name.bytes, by_name.dtype) == (est.params, est.bytes, "bf16")
    with pytest.raises(models.ModelNotAvailable, match="no weights here"):
        models.load_model("bloom-176b", device="cpu")  # refused before anything is allocated


def test_resolve_once_carries_config_params_and_bytes():
    spec = models.resolve("tiny-llama")
    assert models.resolve("tiny-llama") is spec  # resolved once per process
    model, _ = models.load_model("tiny-llama", device="cpu")
    assert spec.params == sum(p.numel() for p in model.parameters())
    assert spec.weight_bytes("fp32") == 4 * spec.params and spec.weight_bytes("bfloat16") == 2 * spec.params
    assert (spec.config.model_type, spec.config.num_hidden_layers) == ("llama", model.config.num_hidden_layers)
    copy = models.get_config("tiny-llama")
    copy.num_hidden_layers = 99  # a caller changing its config does not change the registry's
    assert models.resolve("tiny-llama").config.num_hidden_layers == 4


def test_precision_aliases_load_the_same_dtype_and_show_canonical_names():
    for alias in ("bf16", "bfloat16", torch.bfloat16):
        model, _ = models.load_model("tiny-bloom", dtype=alias, device="cpu")
        assert next(model.parameters()).dtype == torch.bfloat16
    assert models.estimate_memory("tiny-bloom").dtype == "fp32"  # the default, shown canonically
    assert models.estimate_memory("tiny-bloom", "float16").dtype == "fp16"
    int4 = models.estimate_memory("tiny-bloom", "int4")
    assert int4.bytes == int(int4.params * precision.bytes_per_value("int4"))


def test_tiny_models_are_deterministic_and_load_in_dtype():
    a, _ = models.load_model("tiny-llama", device="cpu")
    b, _ = models.load_model("tiny-llama", dtype="bfloat16", device="cpu")
    assert next(b.parameters()).dtype == torch.bfloat16
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa.to(torch.bfloat16), pb), name


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match=r"unknown model 'gpt-9'; choose from \['smollm2-135m'"):
        models.load_model("gpt-9")
    with pytest.raises(ValueError, match=r"choose from \['fp32', 'bf16', 'fp16'\]"):
        models.load_model("tiny-bloom", dtype="int3")
    with pytest.raises(ValueError, match=r"choose from \['fp32', 'bf16', 'fp16'\]"):
        models.load_model("tiny-bloom", dtype="int8")  # a storage precision, not one a model loads in
    with pytest.raises(ValueError, match=r"choose from \['auto', 'cpu'"):
        models.load_model("tiny-bloom", device="tpu")
    with pytest.raises(ValueError, match="unknown model"):
        models.estimate_memory("gpt-9")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error; this machine has a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(CapabilityMissing, match="no CUDA GPU"):
        models.load_model("tiny-bloom", device="cuda")


def test_load_cached_keeps_one_copy_per_device():
    model, tok = models.load_cached("tiny-bloom")
    assert models.load_cached("tiny-bloom", device="cpu") == (model, tok)  # the default is the CPU: one entry
    assert models.load_cached("tiny-bloom", device=torch.device("cpu"))[0] is model
    assert next(model.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match=r"unknown device 'tpu'; choose from \['auto', 'cpu'"):
        models.load_cached("tiny-bloom", device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(CapabilityMissing, match="no CUDA GPU"):
            models.load_cached("tiny-bloom", device="cuda")


def test_hub_id_offline_fails_listing_offline_models():
    with pytest.raises(models.ModelNotAvailable, match=r"HF_HUB_OFFLINE=1.*\['smollm2-135m'"):
        models.load_model("bigscience/bloom-560m")


def test_local_folder_goes_through_from_pretrained(tmp_path):
    model, tok = models.load_model("tiny-llama", device="cpu")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, tok2 = models.load_model(str(tmp_path), device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))
    assert tok2("ROMEO:")["input_ids"] == tok("ROMEO:")["input_ids"]


def test_too_big_model_is_refused_before_allocating(tmp_path):
    _bloom_176b_config().save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["n_layer"] == specs.MODEL_CONFIGS["bloom-176b"]["n_layer"]
    with pytest.raises(models.ModelNotAvailable, match=r"needs about \d+\.\d GiB on cpu .* GiB is free"):
        models.load_model(str(tmp_path), dtype="bfloat16", device="cpu")


def test_complete_uses_plain_prompt_for_non_chat_models(tiny_bloom):
    model, tok = tiny_bloom
    enc = models.encode_prompt(tok, "ROMEO:")
    assert enc["input_ids"].shape == (1, len(tok("ROMEO:")["input_ids"]))
    # only the new text comes back: the prompt followed by it is what generate() produced, token for token
    new = models.complete(model, tok, "ROMEO:", max_new_tokens=4)
    out = model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert new == tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert out.shape[1] == enc["input_ids"].shape[1] + 4


def test_chat_template_is_applied_for_chat_models(smollm):
    _, tok = smollm
    plain = models.encode_prompt(tok, "Hi", chat=False)["input_ids"]
    chat = models.encode_prompt(tok, "Hi")["input_ids"]
    assert chat.shape[1] > plain.shape[1]
    assert "<|im_start|>" in tok.decode(chat[0])
