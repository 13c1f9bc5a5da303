"""DeepSpeed's set-up, in one place: where it compiles its ops, which CPU op it must skip, how loud it is.

Every module that runs DeepSpeed (ZeRO training, DeepSpeed-Inference, ZeRO-Inference) starts a rank with
`join_deepspeed()`; `op_compile_time()` reports what the first use of a compiled op costs. `deepspeed` itself is
imported inside the functions: it is an optional extra (labkit[parallel]) and takes seconds to import.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass

import torch.distributed as dist

from labkit.cache import cache_dir
from labkit.hardware import CapabilityMissing


def use_extension_cache() -> str:
    """Point TORCH_EXTENSIONS_DIR into labkit's cache (unless it is set): DeepSpeed compiles its ops there once.

    Returns:
        the extensions folder in use.
    """
    return os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_dir("torch_extensions")))


def disable_shm_allreduce() -> None:
    """Make DeepSpeed skip building its CPU shared-memory all-reduce op (it falls back to torch.distributed).

    On these CPUs the op segfaults during `init_inference`. `import deepspeed.comm.torch as m` would bind the
    *function table* that deepspeed.comm re-exports under that name, so the module is patched through sys.modules.
    """
    importlib.import_module("deepspeed.comm.torch")
    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None


def quiet_deepspeed() -> None:
    """DeepSpeed logs its whole config at INFO and calls collectives torch has renamed (FutureWarning)."""
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)


def join_deepspeed() -> None:
    """Quiet DeepSpeed, use labkit's extension cache, skip the shm op, and let deepspeed.comm join this rank's
    process group (the one `run_distributed` or torchrun started)."""
    import deepspeed  # optional and slow to import: only ranks that run DeepSpeed pay for it

    quiet_deepspeed()
    use_extension_cache()
    disable_shm_allreduce()
    deepspeed.init_distributed(dist_backend=dist.get_backend())


@dataclass(frozen=True)
class OpBuild:
    """DeepSpeed's CPU op: version, op name, whether a build was cached, the extensions folder and the op's own
    build folder in it, and the seconds its build or load took (None: not loaded)."""

    deepspeed: str
    op: str
    was_cached: bool
    extensions_dir: str
    build_dir: str
    seconds: float | None


CPU_OPS = ("ShareMemCommBuilder",)  # DeepSpeed's CPU op builders this lab times (deepspeed/ops/op_builder/cpu)


def op_builder(name: str = "ShareMemCommBuilder"):
    """DeepSpeed's builder of one compiled op: a CPU op from DeepSpeed's CPU builders whatever accelerator DeepSpeed
    picked in this process (a notebook on a GPU machine picks CUDA, whose accelerator has no CPU ops), any other from
    the accelerator's own (e.g. "InferenceBuilder", kernel injection's CUDA kernels).

    Args:
        name: the builder's class name (deepspeed/ops/op_builder).
    Returns:
        an OpBuilder instance.
    Raises:
        CapabilityMissing: the accelerator DeepSpeed uses here does not build that op (e.g. CUDA kernels on a CPU).
    """
    from deepspeed.accelerator import get_accelerator  # optional and slow to import (see the module docstring)

    if name in CPU_OPS:
        return getattr(importlib.import_module("deepspeed.ops.op_builder.cpu"), name)()
    builder = get_accelerator().create_op_builder(name)
    if builder is None or type(builder).__name__ == "NotImplementedBuilder":
        raise CapabilityMissing(f"DeepSpeed's {get_accelerator().device_name()} accelerator does not build {name}; "
                                f"it needs the accelerator the op is written for (CPU ops: {list(CPU_OPS)})")
    return builder


def op_compile_time(compile_if_missing: bool = True, load: bool = True,
                    builder: str = "ShareMemCommBuilder") -> OpBuild:
    """Build (or load from TORCH_EXTENSIONS_DIR) one of DeepSpeed's compiled ops, timed.

    The first use compiles C++ (the CPU shared-memory op: ~50 s on 2 cores) or CUDA (kernel injection's
    "InferenceBuilder": minutes); later uses load the cached .so.

    Args:
        compile_if_missing: build an op that is not cached (False: report, do not build).
        load: load the op at all (False: only report whether a build is cached; ninja sometimes decides to
            rebuild a cached op, ~30 s here, which a smoke run should not pay for).
        builder: the op's builder class (`op_builder`).
    Returns:
        OpBuild; `seconds` (wall time of the build or load) is None when nothing was loaded.
    Raises:
        CapabilityMissing: as `op_builder`.
    """
    import deepspeed  # optional and slow to import (see the module docstring)

    root = use_extension_cache()
    op = op_builder(builder)
    build_dir = os.path.join(root, op.NAME)
    cached = any(f.endswith(".so") for _, _, files in os.walk(build_dir) for f in files)
    seconds = None
    if load and (cached or compile_if_missing):
        start = time.perf_counter()
        op.load(verbose=False)
        seconds = time.perf_counter() - start
    return OpBuild(deepspeed.__version__, op.absolute_name(), cached, root, build_dir, seconds)
