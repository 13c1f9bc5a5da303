"""DeepSpeed-Inference AutoTP and ZeRO-Inference on real gloo ranks; kernel injection on a GPU."""

import pytest
import torch
from transformers import DynamicCache

from labkit import models
from labkit.devices import device_label
from labkit.hardware import CapabilityMissing
from labkit.measure import launches
from labkit.parallel import deepspeed_env, kernel_inject, zero_inference
from labkit.parallel import deepspeed_inference as dsi
from labkit.parallel.launch import run_distributed


def test_autotp_llama_matches_single_process():
    ranks = run_distributed(dsi.autotp_ranks, "tiny-llama", seq=16, new_tokens=6, repeat=2, world_size=2)
    for r in ranks:
        assert r.max_abs_diff < 1e-4 and r.same_tokens
        assert r.param_bytes_rank < 0.8 * r.param_bytes_full  # each rank holds a slice
        assert r.single_ms > 0 and r.autotp_ms > 0
    assert ranks[0].tokens == ranks[1].tokens


def test_bloom_autotp_fails_without_the_alibi_fix_and_matches_with_it():
    ranks = run_distributed(dsi.bloom_alibi_demo, "tiny-bloom", world_size=2)
    for r in ranks:
        assert "expanded size of the tensor (4) must match the existing size (8)" in r.error_without_fix
        assert r.fixed and r.same_tokens and r.max_abs_diff < 1e-4


def test_zero_inference_different_prompts_equal_single_process():
    ranks = run_distributed(zero_inference.generate_ranks, "tiny-llama", new_tokens=6, world_size=2)
    assert [r.prompt for r in ranks] == list(zero_inference.PROMPTS[:2])  # one stream per rank
    for r in ranks:
        assert r.same_as_single_process and r.new_tokens == 6 and r.decode.new_tokens == 6
        assert r.weight_bytes_held == pytest.approx(r.weight_bytes_full / 2, rel=0.01)  # ZeRO-3 shard
        steps, totals = r.decode.step_s, r.decode.totals_s  # 3 timed generations (the default), 5 steps each
        assert r.decode.repeats == 3 and len(steps) == 5 * 3 and len(totals) == 3
        assert all(t >= sum(steps[5 * i:5 * i + 5]) for i, t in enumerate(totals))  # each includes its steps
    assert ranks[0].baseline is not None and ranks[1].baseline is None  # rank 0 alone times the whole model
    m = zero_inference.throughput(ranks)
    assert m.table.aggregate_tok_s.iloc[1] == pytest.approx(12 / max(r.decode.total_s for r in ranks))
    assert m.table.aggregate_tok_s.iloc[0] == pytest.approx(6 / ranks[0].baseline.total_s)
    out = zero_inference.outputs_table(ranks)
    assert list(out.decode_tok_s) == [r.decode.decode_tok_s for r in ranks]


def test_bad_model_names_the_choices():
    with pytest.raises(ValueError, match="choose from"):
        dsi.autotp_ranks("gpt-17")
    if not torch.cuda.is_available():
        with pytest.raises(CapabilityMissing, match="GPU per rank"):
            dsi.autotp_ranks("tiny-bloom", kernel_inject=True)


def test_injection_is_refused_exactly_when_bloom_blocks_get_a_cache_object():
    """The premise of `injection_unsupported`, measured: DeepSpeed's injected block unpacks `layer_past` into one
    (key, value) pair; find what transformers really passes a BLOOM block during a cached forward."""
    model, _ = models.load_model("tiny-bloom", device="cpu")
    seen = []
    hook = model.transformer.h[0].register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("layer_past")), with_kwargs=True)
    try:
        with torch.no_grad():
            model(input_ids=dsi.example_ids("tiny-bloom", seq=4), use_cache=True)
    finally:
        hook.remove()
    passed = seen[0]
    unpacks_as_pair = isinstance(passed, tuple) and len(passed) == 2
    assert (dsi.injection_unsupported() is None) == (passed is None or unpacks_as_pair), type(passed)
    if dsi.injection_unsupported():
        with pytest.raises(ValueError, match="too many values to unpack"):
            past_key, past_value = passed  # what ds_attention.py's compute_attention does with it


@pytest.mark.gpu
def test_bloom_kernel_injection_on_gpu():
    if dsi.injection_unsupported():
        pytest.skip(dsi.injection_unsupported())
    # replace_with_kernel_inject swaps BLOOM's blocks for DeepSpeed's fused CUDA kernels (JIT-compiled here).
    ranks = run_distributed(dsi.autotp_ranks, "tiny-bloom", seq=16, new_tokens=4, kernel_inject=True,
                            world_size=torch.cuda.device_count() if torch.cuda.is_available() else 1,
                            backend="nccl", timeout=600)
    for r in ranks:
        assert r.kernel_inject and r.max_abs_diff < 5e-2  # fp16 fused kernels vs fp16 eager


def test_op_compile_time_can_report_without_loading():
    pytest.importorskip("deepspeed")
    info = deepspeed_env.op_compile_time(compile_if_missing=False, load=False)
    assert info.seconds is None and isinstance(info.was_cached, bool)
    assert info.op.endswith("shm_comm_op") and info.extensions_dir == deepspeed_env.use_extension_cache()


def test_launches_per_token_of_hf_eager_on_the_cpu():
    model, _ = models.load_model("tiny-llama", device="cpu")
    ids = dsi.example_ids("tiny-llama", seq=8)
    count = kernel_inject.launches_per_token(model, ids, new_tokens=4)
    assert count.unit == launches.unit("cpu") and count.device == device_label("cpu") and count.tokens == 4
    # A second measurement: every decode step runs one cached forward of one token (plus the pick of the token), so
    # a step dispatches at least the operators of that forward, counted on its own.
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=ids, cache=cache, use_cache=True)
        step = launches.count_dispatches(lambda: model(input_ids=ids[:, :1], cache=cache,
                                                       use_cache=True), "cpu").aten  # fmt: skip
    assert step <= count.per_token < 2 * step
    with pytest.raises(ValueError, match="new_tokens"):
        kernel_inject.launches_per_token(model, ids, new_tokens=2)


def test_injection_rank_needs_a_gpu():
    if not torch.cuda.is_available():
        with pytest.raises(CapabilityMissing, match="GPU"):
            kernel_inject.injection_rank("tiny-bloom", device="cpu")


def test_op_builder_cpu_op_whatever_the_accelerator_and_cuda_ops_only_on_cuda():
    pytest.importorskip("deepspeed")
    assert deepspeed_env.op_builder("ShareMemCommBuilder").NAME == "deepspeed_shm_comm"
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() == "cpu":
        with pytest.raises(CapabilityMissing, match="InferenceBuilder"):
            deepspeed_env.op_compile_time(builder="InferenceBuilder", load=False)


@pytest.mark.gpu
def test_kernel_injection_fewer_launches_than_eager_on_the_same_gpu():
    if dsi.injection_unsupported():
        pytest.skip(dsi.injection_unsupported())
    runs = run_distributed(kernel_inject.injection_rank, "tiny-bloom", new_tokens=8, repeat=2, world_size=1,
                           backend="nccl", timeout=900)  # fmt: skip
    r = runs[0]
    assert r.eager_launches.device == r.injected_launches.device == r.device and "cuda" in r.device
    assert r.injected_launches.per_token < r.eager_launches.per_token  # fused blocks: fewer kernels per token
    assert r.max_abs_diff < 5e-2 and r.injected_tpot_ms > 0 and r.build.extensions_dir.endswith("torch_extensions")


def test_zero_inference_pins_host_memory_only_for_a_rank_with_a_gpu(monkeypatch, tmp_path):
    """A gloo rank on a GPU machine computes on the CPU: page-locked offload memory would buy it nothing."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
        assert zero_inference.ds_zero_config(64)["zero_optimization"]["offload_param"]["pin_memory"] is False
        assert zero_inference.ds_zero_config(64, offload=False)["zero_optimization"]["offload_param"] is None
    finally:
        dist.destroy_process_group()
