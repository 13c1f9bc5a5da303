import pytest
import torch

from labkit import training
from labkit.hardware import CapabilityMissing


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        training.TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="lr must be positive"):
        training.TrainConfig(lr=0)


def test_get_batch_shapes_and_determinism(tiny_bloom):
    _, tok = tiny_bloom
    tokens = training.token_stream("validation", tok)
    a = training.get_batch(tokens, 4, 32, torch.Generator().manual_seed(1))
    b = training.get_batch(tokens, 4, 32, torch.Generator().manual_seed(1))
    assert a.shape == (4, 32) and a.dtype == torch.long
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        training.get_batch(tokens[:10], 1, 32, torch.Generator())


def test_short_training_lowers_validation_loss():
    from labkit.models import load_model

    model, tok = load_model("tiny-bloom", device="cpu")
    seen = []
    cfg = training.TrainConfig(steps=40, batch_size=4, seq_len=32, eval_every=20, max_chars=200_000)
    result = training.train(model, tok, cfg, on_eval=seen.append, progress=False)
    h = result.history
    assert list(h.columns) == ["step", "train_loss", "val_loss", "seconds"]
    assert len(h) == 41 and h.val_loss.notna().sum() == 3
    assert len(seen) == 2  # after steps 20 and 40
    assert result.final_val_loss < result.first_val_loss - 1.0  # 8.3 -> below 7.3
    assert result.tokens_per_second > 0
    assert not model.training


def test_step_costs_training_is_slower_and_bigger_and_leaves_weights_alone(tiny_bloom):
    model, tok = tiny_bloom
    before = {k: v.clone() for k, v in model.state_dict().items()}
    costs = training.step_costs(model, tok, batch_size=4, seq_len=32, repeat=3).set_index("phase")
    train, infer = costs.loc["training step"], costs.loc["inference step"]
    assert train.median_ms > infer.median_ms
    assert train.peak_step_MiB > infer.peak_step_MiB > 0
    assert train.optimizer_state_MiB == pytest.approx(2 * train.weights_MiB, rel=0.01)  # AdamW: m and v
    assert infer.optimizer_state_MiB == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert costs.attrs["batch_size"] == 4


def test_device_is_threaded_through_training_and_both_steps(tiny_bloom):
    model, tok = tiny_bloom
    cfg = training.TrainConfig(steps=2, batch_size=2, seq_len=16, eval_every=2, eval_batches=1, max_chars=50_000)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        result = training.train(model, tok, cfg, progress=False, device="cpu")
    finally:
        model.load_state_dict(before)
    assert result.device == "cpu" and result.history.attrs["device"] == "cpu"
    costs = training.step_costs(model, tok, batch_size=2, seq_len=16, repeat=1, device="cpu")
    assert costs.device.tolist() == ["cpu", "cpu"] and costs.attrs["device"] == "cpu"
    assert costs.attrs["peak_memory"] == "tensor storages created by the step"  # on CUDA: the CUDA allocator's peak
    sweep = training.batch_sweep(model, [1], seq_len=8, repeat=1, progress=False, device=torch.device("cpu"))
    assert sweep.attrs["device"] == "cpu"
    assert training.place(model) == torch.device("cpu")  # None: where the model is


def test_a_bad_device_is_refused_before_training(tiny_bloom):
    model, tok = tiny_bloom
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"unknown device 'tpu'; choose from \['auto', 'cpu'"):
        training.train(model, tok, training.TrainConfig(steps=1), progress=False, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(CapabilityMissing, match="no CUDA GPU"):
            training.step_costs(model, tok, batch_size=2, seq_len=8, repeat=1, device="cuda")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).device.type == "cpu"


def test_batch_sweep(tiny_bloom):
    model, _ = tiny_bloom
    sweep = training.batch_sweep(model, [1, 4], seq_len=16, repeat=3, progress=False)
    assert sweep.batch_size.tolist() == [1, 4]
    assert (sweep.latency_ms > 0).all()
    assert sweep.tokens_per_s.tolist() == pytest.approx((sweep.sequences_per_s * 16).tolist())
    with pytest.raises(ValueError, match="batch sizes"):
        training.batch_sweep(model, [0, 2])


def test_save_checkpoint_round_trip(tiny_bloom, tmp_path):
    from labkit.models import load_model

    model, tok = tiny_bloom
    training.save_checkpoint(model, tok, tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    again, _ = load_model(str(tmp_path), device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))


@pytest.mark.gpu
def test_device_cuda_moves_the_model_and_counts_with_the_cuda_allocator():
    from labkit.models import load_model

    model, tok = load_model("tiny-bloom", device="cpu")
    costs = training.step_costs(model, tok, batch_size=4, seq_len=32, repeat=2, device="cuda").set_index("phase")
    assert next(model.parameters()).device.type == "cuda"
    assert set(costs.device) == {f"cuda:{torch.cuda.current_device()}"}
    assert costs.attrs["peak_memory"] == "torch.cuda.max_memory_allocated"
    assert costs.loc["training step", "peak_step_MiB"] > costs.loc["inference step", "peak_step_MiB"] > 0
