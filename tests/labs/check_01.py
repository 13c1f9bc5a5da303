"""Lab 01 (training vs inference): checks on the results its smoke run recorded, against independent formulas."""

import math

import pytest

from labkit import data, models

from tests.hand_counts import add_one_unigram_loss


def check(r: dict) -> None:
    # Before training, a freshly initialised model predicts every token about equally: loss ≈ ln(vocabulary size).
    vocab = models.get_config("tiny-bloom").vocab_size
    assert r["first_val_loss"] == pytest.approx(math.log(vocab), abs=0.5)
    assert r["final_val_loss"] < r["first_val_loss"]
    # ... and training takes it below what token frequencies alone give (add-one unigram counted on the training
    # plays, measured on the validation plays), recounted with collections.Counter: the model learned context
    unigram = add_one_unigram_loss(data.shakespeare_tokenizer(), r["max_chars"])  # tiny-bloom's tokenizer
    assert r["unigram_val_loss"] == pytest.approx(unigram, rel=1e-6)
    assert r["final_val_loss"] < unigram - 0.1, (r["final_val_loss"], unigram)
    assert r["inference_step_ms"] < r["train_step_ms"]  # inference is faster ...
    assert r["inference_peak_MiB"] < r["train_peak_MiB"]  # ... and smaller
    # Between steps, inference keeps the fp32 weights; training adds AdamW's two fp32 moments per weight (gradients
    # are freed after each step): 4 B vs 12 B per parameter, parameters counted on the meta device.
    weights_MiB = models.estimate_memory("tiny-bloom", "fp32").bytes / 2**20
    assert r["inference_persistent_MiB"] == pytest.approx(weights_MiB, rel=1e-3)
    assert r["train_persistent_MiB"] == pytest.approx(3 * weights_MiB, rel=1e-3)
    assert r["checkpoint_roundtrip_identical"] is True
    # every number came from the device the lab recorded: its label starts with the torch device ("cuda:0 (NVIDIA …)")
    recorded = r["device"].split(" ", 1)[0]
    assert r["train_device"] == recorded and r["sweep_device"] == recorded, (r["train_device"], r["sweep_device"])
    assert r["steps_devices"] == [recorded, recorded]  # the training and the inference step, on the same device
    cuda_counter = "torch.cuda.max_memory_allocated"  # GPU memory is counted by the CUDA allocator, not the tracker
    assert (r["peak_memory_counter"] == cuda_counter) == (r["device_type"] == "cuda"), r["peak_memory_counter"]
    thr = r["sweep_sequences_per_s"]
    assert max(thr) > 1.5 * thr[0]  # batching raises throughput
    # ... at the cost of latency (on a GPU the tiny model's step is launch-bound at these batch sizes)
    assert r["sweep_latency_ms"][-1] > r["sweep_latency_ms"][0] or r["device_type"] == "cuda"
