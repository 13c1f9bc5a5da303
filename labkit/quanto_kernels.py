"""optimum-quanto's compiled kernels, built before a lab needs them.

optimum-quanto unpacks int4 weights with a C++ kernel on the CPU (`quanto_cpp`) and CUDA kernels on a GPU
(`quanto_cuda`), each compiled by `torch.utils.cpp_extension.load` the first time a forward needs it and kept in the
installed package's folder. On a fresh install that first forward is inside a lab notebook: measured on a 2-core CPU
machine (the quantization lab), the CPU build ran two `cc1plus` processes of ~1.5 GB each for ~30 s, which put the
notebook's kernel and its children at 3.9 GB (Binder gives 2 GB). `labkit prepare` therefore builds it
(`build_cpu_kernels`), as many compilers at a time as the free memory holds; on a GPU the CUDA kernels need the CUDA
toolkit's nvcc and minutes of compiling, so `require_cuda_kernels` refuses until `labkit prepare --quanto-cuda` has
built them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time

from labkit.hardware import CapabilityMissing

COMPILER_GB = 2.0  # what one cc1plus of quanto's C++ sources held (~1.5 GB, measured above), with a margin


def build_cpu_kernels(jobs: int | None = None) -> str:
    """Compile (or find already compiled) optimum-quanto's CPU kernels.

    Args:
        jobs: compilers run at once (ninja's MAX_JOBS). None: as many as the free memory holds at COMPILER_GB each,
            at most one per source file and per core (1 on Binder's 2 GB). An existing MAX_JOBS wins.
    Returns:
        one line saying what happened ("not installed", "no C++ compiler here", "built in 31.0 s", "already
        built").
    Raises:
        whatever `torch.utils.cpp_extension.load` raises when the compiler fails (its log names the error).
    """
    if importlib.util.find_spec("optimum") is None or importlib.util.find_spec("optimum.quanto") is None:
        return "optimum-quanto not installed: nothing to build"
    ext, built = _built("quanto_cpp")
    if built:
        _ = ext.lib  # loads it (and rebuilds it if it was built for another torch)
        return f"{ext.name}: already built ({ext.build_directory})"
    if not any(shutil.which(c) for c in (os.environ.get("CXX", "c++"), "g++", "clang++")):
        return f"{ext.name}: no C++ compiler here (c++, g++, clang++): not built; int4-weight will say so if used"
    if jobs is None:
        import psutil

        fit = int(psutil.virtual_memory().available / 1e9 // COMPILER_GB)
        jobs = max(1, min(fit, len(ext.sources), os.cpu_count() or 1))
    set_here = "MAX_JOBS" not in os.environ  # ninja's parallelism for this build only
    os.environ.setdefault("MAX_JOBS", str(jobs))
    start = time.perf_counter()
    try:
        _ = ext.lib  # compiles, then loads
    finally:
        if set_here:
            os.environ.pop("MAX_JOBS", None)
    return f"{ext.name}: built in {time.perf_counter() - start:.1f} s ({ext.build_directory})"


def _built(name: str):
    """(extension, whether its shared library is already built) for one of optimum-quanto's extensions."""
    from optimum.quanto.library.extensions import get_extension  # optional package

    ext = get_extension(name)
    return ext, os.path.exists(os.path.join(ext.build_directory, f"{ext.name}.so"))


def build_cuda_kernels() -> str:
    """Compile optimum-quanto's CUDA kernels (nvcc; several minutes, all cores): `labkit prepare --quanto-cuda`.

    Returns:
        one line saying what happened.
    Raises:
        CapabilityMissing: no CUDA GPU, or no CUDA toolkit (see `require_cuda_kernels`).
    """
    import torch

    if not torch.cuda.is_available():
        raise CapabilityMissing("optimum-quanto's CUDA kernels need a CUDA GPU; this machine has none")
    _require_toolkit()
    ext, built = _built("quanto_cuda")
    start = time.perf_counter()
    _ = ext.lib  # compiles when needed, then loads
    return f"{ext.name}: {'already built' if built else f'built in {time.perf_counter() - start:.0f} s'}"


def _require_toolkit() -> None:
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None:
        raise CapabilityMissing("optimum-quanto's int4 weights on a GPU need its CUDA kernels, compiled by nvcc, and "
                                "this machine has no CUDA toolkit (CUDA_HOME unset, no nvcc on PATH): install one "
                                "(Colab has it), or quantize on the CPU")  # fmt: skip


def require_cuda_kernels() -> None:
    """Check that optimum-quanto's CUDA kernels are built: quanto would otherwise compile them inside the first
    forward (minutes of nvcc, in the middle of a lab).

    Raises:
        CapabilityMissing: no CUDA toolkit, or the kernels not built yet, naming the command that builds them.
    """
    _require_toolkit()
    if not _built("quanto_cuda")[1]:
        raise CapabilityMissing("optimum-quanto's int4 CUDA kernels are not built yet (nvcc compiles them for "
                                "minutes): run `labkit prepare --quanto-cuda` once, then this row runs")  # fmt: skip
