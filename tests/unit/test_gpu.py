"""GPU paths, run by `make test-gpu` on a CUDA machine (skipped with the reason elsewhere)."""

import pytest
import torch

from labkit import hardware, measure, models, training

pytestmark = pytest.mark.gpu


def test_detect_sees_the_gpu():
    hw = hardware.detect()
    assert hw.cuda_available and hw.gpus
    gpu = hw.gpus[0]
    assert gpu.memory_gib > 1 and gpu.capability.count(".") == 1
    assert gpu.name == torch.cuda.get_device_name(0)
    assert hw.nccl_available
    hardware.require("cuda")
    assert "CUDA" in dict(hw.rows()) and dict(hw.rows())["GPU 0"].startswith(gpu.name)


@pytest.mark.parametrize("dtype, atol", [("float32", 2e-3), ("bfloat16", 0.25)])
def test_tiny_models_on_gpu_match_cpu(dtype, atol):
    ids = torch.randint(0, 4096, (2, 32), generator=torch.Generator().manual_seed(0))
    cpu, _ = models.load_model("tiny-llama", device="cpu")
    gpu, _ = models.load_model("tiny-llama", dtype=dtype, device="auto")  # auto picks the GPU
    assert next(gpu.parameters()).device.type == "cuda"
    with torch.no_grad():
        ref = cpu(ids).logits
        out = gpu(ids.cuda()).logits.float().cpu()
    assert (out - ref).abs().max().item() < atol


def test_benchmark_waits_for_the_gpu():
    a = torch.randn(8192, 8192, device="cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(3):
        a @ a
    start.record()
    a @ a
    end.record()
    torch.cuda.synchronize()
    event_s = start.elapsed_time(end) / 1e3
    stats = measure.benchmark(lambda: a @ a, warmup=2, repeat=10)
    # Without synchronising, the clock would stop after the ~10 µs launch.
    assert stats.median > 0.5 * event_s


def test_peak_memory_reports_cuda_allocations():
    def alloc():
        x = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda")
        return x.sum()

    peak = measure.peak_memory(alloc)
    assert peak.cuda_bytes is not None and peak.cuda_bytes >= 64 * 2**20
    assert peak.tensor_bytes >= 64 * 2**20


def test_gpu_memory_bandwidth_is_hbm_class():
    assert measure.memory_bandwidth(size_mib=1024, repeat=5, device="cuda") > 200  # GB/s


def test_training_vs_inference_on_gpu():
    model, tok = models.load_model("tiny-bloom", device="cuda")
    costs = training.step_costs(model, tok, batch_size=8, seq_len=64, repeat=5).set_index("phase")
    train, infer = costs.loc["training step"], costs.loc["inference step"]
    assert train.median_ms > infer.median_ms
    assert train.peak_step_MiB > infer.peak_step_MiB
    cfg = training.TrainConfig(steps=30, batch_size=8, seq_len=64, eval_every=15, max_chars=200_000)
    result = training.train(model, tok, cfg, progress=False)
    assert result.final_val_loss < result.first_val_loss - 1.0


def test_bloom_176b_is_refused_before_touching_the_gpu():
    before = torch.cuda.memory_allocated()
    est = models.estimate_memory("bloom-176b", "bf16")  # the published config (models.specs), never allocated
    with pytest.raises(models.ModelNotAvailable, match="on cuda"):
        models.check_fits(est, torch.device("cuda"))
    assert torch.cuda.memory_allocated() == before
