"""Calibration: each engine's free constants fitted to the published BLOOM-176B rows on 8×A100-80GB.

Per engine, a matmul efficiency and a per-layer overhead are fitted by least squares (on relative error) to the
published ms/token (`labkit.models.specs.PUBLISHED_MS_PER_TOKEN`), and a workspace factor is placed between the last
batch that ran and the first that ran out of memory. The HBM and link efficiencies stay fixed: a batch-1 step cannot
tell weight streaming from per-layer overhead (both are constant in batch).
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import numpy as np
import pandas as pd

from labkit.models import specs
from labkit.models.specs import A100_80GB, GPU, PUBLISHED_MS_PER_TOKEN
from labkit.parallel.costmodel.model import STRATEGY, Engine, Shape, memory_gb, ms_per_token, shape


def _fit_time(name: str, m: Shape, gpu: GPU, gpus: int) -> tuple[float, float]:
    """Least squares on relative error: ms/token is linear in (1/flop_efficiency, layer overhead)."""
    rows = [(b, ms) for b, ms in PUBLISHED_MS_PER_TOKEN[name].items() if ms is not None]
    unit_flop = Engine(name, STRATEGY[name], 1.0, 0.0, 0.0)
    A, y = [], []
    for b, ms in rows:
        base = ms_per_token(unit_flop, m, gpu, gpus, b)
        overhead_per_ms = ms_per_token(replace(unit_flop, layer_overhead_ms=1.0), m, gpu, gpus, b)["overhead"]
        fixed = base["ms_per_token"] - base["matmuls"]
        A.append([base["matmuls"] / ms, overhead_per_ms / ms])
        y.append((ms - fixed) / ms)
    (inv_eff, overhead), *_ = np.linalg.lstsq(np.array(A), np.array(y), rcond=None)
    return 1 / inv_eff, max(0.0, overhead)


def _fit_workspace(engine: Engine, m: Shape, gpu: GPU, gpus: int, tokens: int) -> tuple[float, float, float]:
    """The workspace factor's feasible interval (every published batch fits, the OOM one does not) and
    its geometric middle."""
    rows = PUBLISHED_MS_PER_TOKEN[engine.name]
    ok = max(b for b, ms in rows.items() if ms is not None)
    oom = min(b for b, ms in rows.items() if ms is None)

    def spare(b: int) -> float:  # GB left for the workspace at batch b
        mem = memory_gb(replace(engine, workspace=0.0), m, gpu, gpus, b, tokens)
        return gpu.memory_GB - sum(mem.values())

    per_unit = lambda b: memory_gb(replace(engine, workspace=1.0), m, gpu, gpus, b, tokens)["workspace"]  # noqa: E731
    hi = spare(ok) / per_unit(ok)  # largest factor at which the last published batch still fits
    lo = max(0.0, spare(oom) / per_unit(oom))  # smallest at which the OOM batch no longer fits
    return lo, hi, math.sqrt(max(lo, 1e-9) * hi)


@functools.lru_cache(maxsize=4)
def calibrate(gpus: int = specs.BLOOM_BENCHMARK_GPUS, prompt: int = 10,
              new_tokens: int = specs.BLOOM_BENCHMARK_NEW_TOKENS) -> dict[str, Engine]:
    """Fit each engine's constants to its published row (BLOOM-176B, A100-80GB; `specs.PUBLISHED_MS_PER_TOKEN`).

    Args:
        gpus: GPUs in the published set-up. prompt: prompt tokens assumed ("short prompts"). new_tokens: generated.
    Returns:
        {engine name: Engine} with the fitted matmul efficiency, per-layer overhead and workspace factor.
    Raises:
        RuntimeError: if no workspace factor makes every published batch fit and the published OOM batch not fit.
    """
    m = shape("bloom-176b", "bf16")
    engines = {}
    for name in PUBLISHED_MS_PER_TOKEN:
        eff, overhead = _fit_time(name, m, A100_80GB, gpus)
        engine = Engine(name, STRATEGY[name], float(eff), float(overhead), 0.0)
        lo, hi, mid = _fit_workspace(engine, m, A100_80GB, gpus, prompt + new_tokens)
        if lo > hi:
            raise RuntimeError(f"no workspace factor makes {name} fit and OOM where published ({lo:.1f} > {hi:.1f})")
        engines[name] = replace(engine, workspace=float(mid))
    return engines


def workspace_interval(name: str, gpus: int = specs.BLOOM_BENCHMARK_GPUS, tokens: int = 110) -> tuple[float, float]:
    """Workspace factors consistent with the published fit/OOM cells.

    Args:
        name: an engine of `calibrate()`. gpus: GPUs. tokens: prompt + generated tokens per sequence.
    Returns:
        (lowest, highest) factor: the last published batch fits and the published OOM batch does not.
    """
    engine = calibrate()[name]
    lo, hi, _ = _fit_workspace(engine, shape("bloom-176b"), A100_80GB, gpus, tokens)
    return lo, hi


def fit_table() -> pd.DataFrame:
    """Published vs predicted ms/token for every calibration cell (in-sample: the rows the constants were fitted on).

    Returns:
        one row per (engine, batch): published_ms (None = OOM), predicted_ms (NaN = OOM), predicted_oom,
        published_oom and error_pct = 100 × (predicted / published − 1).
    """
    m, rows = shape("bloom-176b"), []
    for name, engine in calibrate().items():
        for b, published in PUBLISHED_MS_PER_TOKEN[name].items():
            pred = ms_per_token(engine, m, A100_80GB, specs.BLOOM_BENCHMARK_GPUS, b)["ms_per_token"]
            rows.append({"engine": name, "batch": b, "published_ms": published, "predicted_ms": pred,
                         "predicted_oom": math.isnan(pred), "published_oom": published is None,
                         "error_pct": None if published is None or math.isnan(pred) else 100 * (pred / published - 1)})
    return pd.DataFrame(rows)


def fit_residual_pct() -> float:
    """The in-sample fit residual: how far the calibrated model lands from the rows it was fitted on.

    Returns:
        the largest |error_pct| of `fit_table()` over the published timed cells, in percent.
    """
    return float(fit_table().error_pct.abs().max())
