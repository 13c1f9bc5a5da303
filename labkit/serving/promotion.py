"""A promotion gate: a registered candidate replaces the production version only if the numbers say so.

    rule = PromotionRule(max_quality_increase=0.02, max_p99_increase=0.10)
    result = gate(registry, "shakespeare", "v2", rule)       # GateResult: promote?, and every reason it may not
    promote_if_passes(registry, "shakespeare", "v2", rule)   # the same, then registry.set_production when it passes

The rule is fixed before anything is measured (as the canary rule of `experiments.inference_system`), and a refusal
lists every failed check, not only the first: integrity (the candidate's files still hash to the registered SHA-256),
quality (its quality measurement, lower is better, within a relative tolerance of production's) and latency (its p99
at most a given percentage above production's). The first version of a model has nothing to be compared with: it is
promoted when its files verify and its measurements are present.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from labkit.serving.registry import ModelEntry, ModelRegistry


@dataclass(frozen=True)
class PromotionRule:
    """What a candidate must show to replace production.

    Args:
        max_quality_increase: the candidate's `quality` measurement may be at most this fraction above production's
            (0.02: perplexity at most 2 % higher). max_p99_increase: its `latency` measurement may be at most this
            fraction above production's (0.10: p99 at most 10 % slower).
        quality: the measurement compared for quality (lower is better, e.g. "perplexity" or "val_loss").
        latency: the measurement compared for latency (lower is better, e.g. "p99_ms").
    Raises:
        ValueError: a negative or non-finite tolerance, or an empty measurement name.
    """

    max_quality_increase: float = 0.02
    max_p99_increase: float = 0.10
    quality: str = "perplexity"
    latency: str = "p99_ms"

    def __post_init__(self):
        for k in ("max_quality_increase", "max_p99_increase"):
            v = getattr(self, k)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{k} must be a finite number >= 0, got {v}")
        if not self.quality or not self.latency:
            raise ValueError("name the quality and latency measurements, e.g. quality='perplexity', latency='p99_ms'")


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict on one candidate.

    Attributes:
        candidate: its version. production: the version it was compared with (None: there was none).
        promote: True when every check passed. reasons: one sentence per failed check (empty when promoted).
        checks: (check, candidate value, limit, passed) rows; NaN where there is nothing to compare.
    """

    candidate: str
    production: str | None
    promote: bool
    reasons: tuple[str, ...]
    checks: tuple[tuple[str, float, float, bool], ...]

    @property
    def action(self) -> str:
        return "promote" if self.promote else "refuse"

    def table(self) -> pd.DataFrame:
        """One row per check: check, candidate, limit, passed."""
        return pd.DataFrame(self.checks, columns=["check", "candidate", "limit", "passed"])


def _compare(candidate: ModelEntry, production: ModelEntry, key: str, tolerance: float, what: str):
    """(check row, reason or None) for `candidate[key] <= production[key] × (1 + tolerance)`."""
    have, base = candidate.measurements.get(key), production.measurements.get(key)
    if have is None or base is None:
        who = candidate.version if have is None else production.version
        return (f"{what}: {key}", math.nan, math.nan, False), f"{who} has no {key!r} measurement"
    limit = base * (1 + tolerance)
    if have <= limit:
        return (f"{what}: {key}", have, limit, True), None
    return (f"{what}: {key}", have, limit, False), (
        f"{what}: {key} {have:.4g} > {limit:.4g} ({production.version}'s {base:.4g} + {tolerance:.0%})")


def gate(registry: ModelRegistry, name: str, version: str, rule: PromotionRule) -> GateResult:
    """Decide whether `name` `version` may replace the production version (nothing is changed).

    Args:
        registry: where the entries are. name, version: the candidate. rule: the PromotionRule fixed up front.
    Returns:
        GateResult: promote is True when the files verify and, against the current production version, quality is
        within `rule.max_quality_increase` and latency within `rule.max_p99_increase` (relative, lower is better).
    Raises:
        ValueError: an unknown name or version, naming the registered ones.
    """
    candidate, production = registry.get(name, version), registry.production(name)
    problems = registry.verify(candidate)
    checks = [("integrity: sha256", math.nan, math.nan, not problems)]
    reasons = [f"integrity: {p}" for p in problems]
    if production is None:  # the first version: nothing to compare with, but its numbers must exist
        for key in (rule.quality, rule.latency):
            present = key in candidate.measurements
            checks.append((f"measured: {key}", candidate.measurements.get(key, math.nan), math.nan, present))
            reasons += [] if present else [f"{version} has no {key!r} measurement"]
    elif production.version == version:
        reasons.append(f"{version} is already the production version")
    else:
        for key, tol, what in ((rule.quality, rule.max_quality_increase, "quality"),
                               (rule.latency, rule.max_p99_increase, "latency")):
            row, reason = _compare(candidate, production, key, tol, what)
            checks.append(row)
            reasons += [reason] if reason else []
    return GateResult(version, production.version if production else None, not reasons, tuple(reasons), tuple(checks))


def promote_if_passes(registry: ModelRegistry, name: str, version: str, rule: PromotionRule) -> GateResult:
    """`gate`, then make the candidate production when it passes (the old production version is archived).

    Returns:
        the GateResult. Raises: as `gate`.
    """
    result = gate(registry, name, version, rule)
    if result.promote:
        registry.set_production(name, version)
    return result
