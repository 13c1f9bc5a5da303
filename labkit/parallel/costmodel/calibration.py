"""Calibration: the engines' free constants, fitted to the fit cells of `specs.BLOOM_ROWS` and to nothing else.

    fit(rows)       a pure function of the rows' fit cells (`fit_cells`): held-out cells are never read
    calibrate()     fit(specs.BLOOM_ROWS), cached

Per engine, on its 16-bit row: a matmul efficiency and a per-layer overhead by least squares on relative error
(ms/token is linear in 1/efficiency and in the overhead), and a workspace factor between the last batch that ran and
the first that ran out of memory (its geometric middle). On an int8 fit cell: LLM.int8's cost per weight GB (linear
too). The HBM and link efficiencies stay fixed: a batch-1 step cannot tell weight streaming from per-layer overhead.
ZeRO-Inference (ds-zero) runs Hugging Face's modeling code: it takes Accelerate's constants and has no fit of its own.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from labkit.models import specs
from labkit.models.specs import A100_80GB, PublishedRow
from labkit.parallel.costmodel.generation import ms_per_token
from labkit.parallel.costmodel.memory import fits
from labkit.parallel.costmodel.model import STRATEGY, Engine, Shape, shape

PROMPT = 10  # "a few tokens": the scripts' 8 prompts padded to the longest
TOKENS = PROMPT + specs.BLOOM_BENCHMARK_NEW_TOKENS


def row_shape(row: PublishedRow) -> Shape:
    """BLOOM-176B with the row's weight precision; the KV cache stays 16-bit (fp16 with fp16 weights, else bf16)."""
    return shape("bloom-176b", row.precision, "fp16" if row.precision == "fp16" else "bf16")


def fit_cells(rows: Mapping[str, PublishedRow]) -> dict[str, dict[int, float | None]]:
    """The only published numbers the fit reads: {row key: {batch: ms (None = OOM)}} for each row's `fit` batches.

    Args:
        rows: published rows, e.g. `specs.BLOOM_ROWS`.
    Returns:
        the fit cells of the rows that have any.
    """
    return {key: {b: row.ms_per_token[b] for b in row.fit} for key, row in rows.items() if row.fit}


def _timed(cells: dict) -> list[tuple[int, float]]:
    return [(b, ms) for b, ms in cells.items() if ms is not None]


def _fit_time(name: str, jobs: list[tuple[PublishedRow, dict]]) -> tuple[float, float]:
    """Least squares on relative error: ms/token is linear in (1/flop_efficiency, layer overhead)."""
    unit = Engine(name, STRATEGY[name], 1.0, 0.0, 0.0)
    A, y = [], []
    for row, cells in jobs:
        m = row_shape(row)
        for b, ms in _timed(cells):
            base = ms_per_token(unit, m, A100_80GB, row.gpus, b, PROMPT)
            per_overhead = ms_per_token(replace(unit, layer_overhead_ms=1.0), m, A100_80GB, row.gpus, b, PROMPT)
            if math.isnan(base["ms_per_token"]):
                raise RuntimeError(f"{name}: batch {b} does not fit even without a workspace")
            A.append([base["matmuls"] / ms, per_overhead["overhead"] / ms])
            y.append((ms - (base["ms_per_token"] - base["matmuls"])) / ms)
    (inv_eff, overhead), *_ = np.linalg.lstsq(np.array(A), np.array(y), rcond=None)
    return 1 / inv_eff, max(0.0, overhead)


def _edge(engine: Engine, row: PublishedRow, batch: int) -> float:
    """The largest workspace factor at which `batch` still fits (0 if it does not fit without one)."""
    m, lo, hi = row_shape(row), 0.0, 1e6

    def ok(w: float) -> bool:
        return fits(replace(engine, workspace=w), m, A100_80GB, row.gpus, batch, TOKENS)

    if not ok(lo):
        return 0.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def _workspace_interval(engine: Engine, jobs: list[tuple[PublishedRow, dict]]) -> tuple[float, float]:
    """Workspace factors at which every fit batch that ran fits and every fit OOM batch does not."""
    lo, hi = 0.0, math.inf
    for row, cells in jobs:
        ran = [b for b, ms in cells.items() if ms is not None]
        oom = [b for b, ms in cells.items() if ms is None]
        if ran:
            hi = min(hi, _edge(engine, row, max(ran)))
        if oom:
            lo = max(lo, _edge(engine, row, min(oom)))
    return lo, hi


def _fit_int8(engine: Engine, jobs: list[tuple[PublishedRow, dict]]) -> float:
    """LLM.int8's ms per int8 weight GB: least squares on relative error over the int8 fit cells."""
    num = den = 0.0
    for row, cells in jobs:
        m = row_shape(row)
        for b, ms in _timed(cells):
            base = ms_per_token(engine, m, A100_80GB, row.gpus, b, PROMPT)["ms_per_token"]
            unit = ms_per_token(replace(engine, int8_ms_per_GB=1.0), m, A100_80GB, row.gpus, b, PROMPT)
            slope = unit["ms_per_token"] - base
            num, den = num + slope * (ms - base) / ms**2, den + slope**2 / ms**2
    return max(0.0, num / den) if den else 0.0


def fit(rows: Mapping[str, PublishedRow]) -> dict[str, Engine]:
    """Fit every engine's constants to the rows' fit cells (`fit_cells`); held-out cells are never read.

    Args:
        rows: published rows with their `fit` batches, e.g. `specs.BLOOM_ROWS`.
    Returns:
        {engine name: Engine}: accelerate and ds-inference fitted, ds-zero with Accelerate's constants.
    Raises:
        RuntimeError: if no workspace factor makes every fit batch that ran fit and every fit OOM batch not fit.
    """
    cells = fit_cells(rows)
    by_engine: dict[str, dict[str, list]] = {}
    for key, c in cells.items():
        kind = "int8" if rows[key].precision == "int8" else "16-bit"
        by_engine.setdefault(rows[key].engine, {"16-bit": [], "int8": []})[kind].append((rows[key], c))
    engines = {}
    for name, jobs in by_engine.items():
        if not jobs["16-bit"]:
            continue
        eff, overhead = _fit_time(name, jobs["16-bit"])
        engine = Engine(name, STRATEGY[name], float(eff), float(overhead), 0.0)
        lo, hi = _workspace_interval(engine, jobs["16-bit"])
        if lo > hi:
            raise RuntimeError(f"no workspace factor makes {name} fit and OOM where published ({lo:.1f} > {hi:.1f})")
        engine = replace(engine, workspace=math.sqrt(max(lo, 1e-9) * hi))
        engines[name] = replace(engine, int8_ms_per_GB=_fit_int8(engine, jobs["int8"]))
    if "accelerate" in engines:  # the same modeling code (Hugging Face's BLOOM) under ZeRO-3
        engines["ds-zero"] = replace(engines["accelerate"], name="ds-zero", strategy=STRATEGY["ds-zero"])
    return engines


@functools.lru_cache(maxsize=1)
def calibrate() -> dict[str, Engine]:
    """The engines fitted to `specs.BLOOM_ROWS` (cached).

    Returns:
        {engine name: Engine}, see `fit`.
    """
    return fit(specs.BLOOM_ROWS)


def workspace_interval(name: str) -> tuple[float, float]:
    """Workspace factors consistent with an engine's fitted fit/OOM cells.

    Args:
        name: an engine fitted by `calibrate()` on a 16-bit row (accelerate or ds-inference).
    Returns:
        (lowest, highest) factor: the last fitted batch that ran fits and the fitted OOM batch does not.
    """
    rows = specs.BLOOM_ROWS
    jobs = [(rows[k], c) for k, c in fit_cells(rows).items() if rows[k].engine == name and rows[k].precision != "int8"]
    return _workspace_interval(calibrate()[name], jobs)
