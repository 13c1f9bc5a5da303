"""Lab 11 (DeepSpeed-Inference and ZeRO-Inference): what its smoke run recorded, against the installed DeepSpeed,
the extension cache on disk, one process's outputs and ZeRO-3's 1/N sharding."""

import math
import os
from importlib.metadata import version
from pathlib import Path

from labkit.cache import cache_dir
from labkit.parallel import zero


def check(r: dict) -> None:
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
    full, held = r["zi_weights_held_MB"]
    assert abs(held / full - 0.5) < 0.01  # ZeRO-3: each of 2 ranks stores half the weights
    largest_MB = zero.model_size(r["zi_model"]).largest_layer_params * 4 / 1e6  # fp32, DeepSpeed's rule
    assert largest_MB * 0.999 <= r["zi_gathered_peak_MB"] <= full  # a rank holds at least its largest layer whole
    assert all(math.isfinite(v) and v > 0 for v in r["zi_aggregate_tok_s"])
