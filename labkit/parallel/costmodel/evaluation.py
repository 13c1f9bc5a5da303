"""The fitted model against every published cell, in-sample and held-out kept apart.

    evaluation()    one row per published cell: published, predicted, |error| %, in-sample or held-out, OOM
    summary(table)  median |error| and OOM cells right, per set

A cell is in-sample when its row lists its batch in `fit` (`specs.BLOOM_ROWS`), held-out otherwise. An OOM cell
is right when the model predicts out-of-memory there; a timed cell the model predicts OOM counts as a wrong
memory verdict and has no error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from labkit.models import specs
from labkit.models.specs import A100_80GB, PublishedRow
from labkit.parallel.costmodel.calibration import PROMPT, calibrate, fit, row_shape
from labkit.parallel.costmodel.generation import ms_per_token
from labkit.parallel.costmodel.model import Engine

SETS = ("in-sample", "held-out")


def predict_row(row: PublishedRow, engines: Mapping[str, Engine]) -> dict[int, float]:
    """The model's ms/token for each batch of a published row (NaN: will not fit).

    Args:
        row: a published row. engines: fitted engines (`calibrate()` or `fit(rows)`).
    Returns:
        {batch: ms per token in the benchmark's accounting (ds-zero: all streams counted)}.
    """
    m = row_shape(row)
    return {b: ms_per_token(engines[row.engine], m, A100_80GB, row.gpus, b, PROMPT)["ms_per_token"]
            for b in row.ms_per_token}  # fmt: skip


def evaluation(rows: Mapping[str, PublishedRow] | None = None) -> pd.DataFrame:
    """Every published cell next to the model fitted on the rows' fit cells.

    Args:
        rows: published rows (default `specs.BLOOM_ROWS`); the model is fitted on their fit cells only.
    Returns:
        DataFrame, one row per (row, batch): row, engine, precision, gpus, batch, set (in-sample | held-out),
        published_ms and predicted_ms (NaN = out of memory), published_oom, predicted_oom, oom_right (the memory
        verdict agrees), error_pct = 100 × (predicted / published − 1) and abs_error_pct (NaN where either is OOM).
    """
    engines = calibrate() if rows is None else fit(rows)
    rows = specs.BLOOM_ROWS if rows is None else rows
    out = []
    for key, row in rows.items():
        for b, pred in predict_row(row, engines).items():
            pub = row.ms_per_token[b]
            err = math.nan if pub is None or math.isnan(pred) else 100 * (pred / pub - 1)
            out.append({"row": key, "engine": row.engine, "precision": row.precision, "gpus": row.gpus, "batch": b,
                        "set": SETS[0] if b in row.fit else SETS[1], "published_ms": math.nan if pub is None else pub,
                        "predicted_ms": pred, "published_oom": pub is None, "predicted_oom": math.isnan(pred),
                        "oom_right": (pub is None) == math.isnan(pred), "error_pct": err, "abs_error_pct": abs(err)})
    return pd.DataFrame(out)


def summary(table: pd.DataFrame) -> dict:
    """Median |error| and memory verdicts, per set.

    Args:
        table: `evaluation()` (or any table with its set, error_pct, published_oom and predicted_oom columns).
    Returns:
        {set: {"timed_cells", "median_abs_error_pct", "max_abs_error_pct", "oom_cells", "oom_right",
        "timed_predicted_oom"}} for "in-sample" and "held-out" (NaN medians for a set without timed cells).
    """
    out = {}
    for name in SETS:
        part = table[table.set == name]
        errors = part.error_pct.abs().dropna()
        oom = part[part.published_oom]
        out[name] = {"timed_cells": int((~part.published_oom).sum()),
                     "median_abs_error_pct": float(np.median(errors)) if len(errors) else math.nan,
                     "max_abs_error_pct": float(errors.max()) if len(errors) else math.nan,
                     "oom_cells": len(oom), "oom_right": int(oom.predicted_oom.sum()),
                     "timed_predicted_oom": int((~part.published_oom & part.predicted_oom).sum())}  # fmt: skip
    return out


def side_by_side(table: pd.DataFrame) -> pd.DataFrame:
    """One line per published cell, the in-sample and the held-out errors in separate columns.

    Args:
        table: `evaluation()`.
    Returns:
        DataFrame (row, batch, published_ms, predicted_ms, "in-sample error %", "held-out error %", memory) where
        memory is "OOM ✓" / "OOM ✗" for a published OOM cell the model gets right / wrong, "false OOM" for a timed
        cell the model says will not fit, "" otherwise.
    """

    def memory(r) -> str:
        if r.published_oom:
            return "OOM ✓" if r.predicted_oom else "OOM ✗"
        return "false OOM" if r.predicted_oom else ""

    out = table[["row", "batch", "published_ms", "predicted_ms"]].copy()
    for name in SETS:
        out[f"{name} error %"] = table.error_pct.where(table.set == name)
    out["memory"] = [memory(r) for r in table.itertuples()]
    return out
