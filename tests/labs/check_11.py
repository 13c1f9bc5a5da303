"""Lab 11 (DeepSpeed-Inference and ZeRO-Inference): what its smoke run recorded, against the installed DeepSpeed,
the extension cache on disk, one process's outputs and ZeRO-3's 1/N sharding."""

import math
import os
from importlib.metadata import version
from pathlib import Path

from labkit.cache import cache_dir
from labkit.models import get_config, specs
from labkit.parallel import zero
from tests.labs.ranks import check_ranks_device


def check(r: dict) -> None:
    check_ranks_device(r, nccl_ok=False)  # DeepSpeed's gloo ranks (sections 1-3): on this CPU, recorded as such
    assert r["published_source"] == specs.BLOOM_SOURCE
    eager = r["eager_launches"]  # HF eager on the lab's device: kernels on a GPU, aten operators on the CPU
    unit = "CUDA kernel launch API calls" if r["device_type"] == "cuda" else "ATen operator calls (CPU)"
    assert eager["device"] == r["device"] and eager["unit"] == unit
    # Each BLOOM block has 4 linear layers (fused QKV, attention output, MLP up and down): a decode step launches at
    # least one kernel (dispatches at least one operator) for each.
    assert eager["per_token"] >= 4 * get_config("tiny-bloom").num_hidden_layers
    # the GPU section runs exactly on a GPU, unless the installed transformers cannot run the injected kernels
    # (its reason recorded; tests/unit/test_deepspeed_inference.py checks the reason against DeepSpeed's code)
    assert r["kernel_inject_ran"] == (r["device_type"] == "cuda" and r["kernel_inject_skipped"] is None)
    assert r["kernel_inject_ran"] or r["kernel_inject_skipped"]
    if r["kernel_inject_ran"]:
        k = r["kernel_inject"]
        assert k["device"] == r["device"] == k["eager_launches"]["device"] == k["injected_launches"]["device"]
        assert k["injected_launches"]["per_token"] < k["eager_launches"]["per_token"]  # fused blocks: fewer kernels
        assert Path(k["build"]["extensions_dir"]) == Path(os.environ.get("TORCH_EXTENSIONS_DIR",
                                                                         cache_dir("torch_extensions")))
        assert any(Path(k["build"]["build_dir"]).rglob("*.so")) and k["build"]["seconds"] > 0  # built and cached
        assert k["max_abs_diff"] < 5e-2 and k["injected_tpot_ms"] > 0 and k["eager_tpot_ms"] > 0
    assert r["deepspeed_version"] == version("deepspeed")
    extensions = Path(os.environ.get("TORCH_EXTENSIONS_DIR", cache_dir("torch_extensions")))
    assert Path(r["op_extensions_dir"]) == extensions  # DeepSpeed compiles into labkit's cache
    build = Path(r["op_build_dir"])
    assert build.parent == extensions
    built = any(build.rglob("*.so"))
    if r["op_compile_s"] is None:  # nothing loaded or built: the cache is still as the lab found it
        assert r["op_was_cached"] == built
    else:  # loaded or compiled: the op is on disk now
        assert built and r["op_compile_s"] > 0
    diffs = r["tp_max_abs_diff"]
    assert set(diffs) == set(r["tp_ms"]) == {"single process", "labkit TP (from scratch)", "DTensor parallelize_module",
                                             "DeepSpeed AutoTP"}
    assert diffs["single process"] == 0 and all(v < 1e-4 for v in diffs.values()), diffs  # TP is exact
    assert all(math.isfinite(v) and v > 0 for v in r["tp_ms"].values())
    assert "expanded size of the tensor" in r["bloom_error_without_fix"] and r["bloom_fixed_same_tokens"]
    assert r["zi_same_as_single_process"] and len(set(r["zi_prompts"])) == 2  # different prompt per rank
    assert min(r["zi_repeats"]) >= 3  # every timed setup is a median of repeats (lab 00's rule), baseline included
    full, held = r["zi_weights_held_MB"]
    assert abs(held / full - 0.5) < 0.01  # ZeRO-3: each of 2 ranks stores half the weights
    largest_MB = zero.model_size(r["zi_model"]).largest_layer_params * 4 / 1e6  # fp32, DeepSpeed's rule
    assert largest_MB * 0.999 <= r["zi_gathered_peak_MB"] <= full  # a rank holds at least its largest layer whole
    assert all(math.isfinite(v) and v > 0 for v in r["zi_aggregate_tok_s"])
