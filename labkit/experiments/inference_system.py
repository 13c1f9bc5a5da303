"""An inference system checked from both sides: Little's law under open-loop load against the server's own in-flight
gauge, and a canary release decided by a rule computed from measured data.

    check = littles_law(server.url, "assistant", prompts, rate=5.0, requests=40)   # L̄ (gauge) vs λ·W (clients)
    decision = canary_decision(v1_tokens, v2_tokens, v1_ttft_s, v2_ttft_s, canary_requests=12, min_requests=5)

Little's law (Little, 1961): in any stable system, the mean number of requests inside L equals the arrival rate λ
times the mean time each spends inside W. In a closed loop of N clients it is an identity (each client always has one
request in flight, so throughput × latency = N whatever the server does); under open-loop (Poisson) arrivals it is a
real relation between three things measured apart: λ and W from the clients' records, L from the server's gauge.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import httpx
import pandas as pd
import plotly.graph_objects as go

from labkit import measure, plots
from labkit.serving import metrics
from labkit.serving.loadgen import LoadResult, check_loopback, run_load
from labkit.serving.repository import ModelRepository
from labkit.serving.request import SamplingParams

GAUGES = ("labkit_queue_depth", "labkit_running_batch_size")  # waiting + holding a batch slot = in the engine


class InFlightSampler:
    """Samples a server's in-flight gauge (queue depth + running batch size of one model, from GET /metrics) in a
    background thread while it is entered.

    Args:
        url: the server's base URL (loopback only). model: the served model name whose versions are summed.
        interval_s: pause between scrapes (s).
    Raises:
        ValueError: a non-loopback URL or interval_s <= 0.
    """

    def __init__(self, url: str, model: str, interval_s: float = 0.01):
        check_loopback(url)
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.url, self.model, self.interval_s = url.rstrip("/"), model, interval_s
        self.rows: list[dict] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _scrape(self, client: httpx.Client, t0: float) -> dict:
        sent = time.perf_counter()
        parsed = metrics.parse(client.get("/metrics").text)
        at = (sent + time.perf_counter()) / 2 - t0  # the gauge was read between request and answer
        queue, running = (metrics.total(parsed, g, model=self.model) for g in GAUGES)
        return {"t_s": at, "queue": queue, "running": running, "in_flight": queue + running}

    def _run(self) -> None:
        t0 = time.perf_counter()
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while True:
                self.rows.append(self._scrape(client, t0))
                if self._stop.wait(self.interval_s):
                    self.rows.append(self._scrape(client, t0))  # the closing reading bounds the last interval
                    return

    def __enter__(self) -> InFlightSampler:
        self._thread = threading.Thread(target=self._run, name="in-flight-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def samples(self) -> pd.DataFrame:
        """The readings: t_s (since the sampler started), queue, running, in_flight."""
        return pd.DataFrame(self.rows, columns=["t_s", "queue", "running", "in_flight"])

    def request_seconds(self) -> float:
        """∫ in_flight dt over the sampled time (each reading held until the next): request-seconds spent inside."""
        s = self.samples()
        return float((s.in_flight.iloc[:-1] * s.t_s.diff().iloc[1:].to_numpy()).sum()) if len(s) > 1 else 0.0


@dataclass(frozen=True)
class LittleCheck:
    """Little's law measured under open-loop load: `table` (one row), `figure` (the gauge over time), the load run
    (`load`: the clients' records) and the gauge readings (`samples`)."""

    table: pd.DataFrame
    figure: go.Figure
    load: LoadResult
    samples: pd.DataFrame


def littles_law(url: str, model: str, prompts, rate: float, requests: int = 40, max_tokens: int = 16,
                interval_s: float = 0.01, seed: int = 0) -> LittleCheck:
    """Send Poisson arrivals at `rate` and compare the server's mean in-flight count with λ·W from the clients.

    The sampler runs from before the first arrival until every request has come back, so ∫ gauge dt covers all
    the time requests spent in the engine. Both sides are averaged over the same window T, from the first arrival
    to the last answer (from the clients' records): L̄ = ∫ gauge dt / T, λ = answered requests / T, W = their mean
    end-to-end latency. W also holds the HTTP layer (parsing, tokenizing, streaming) that the engine's gauge does
    not count, so L̄ ≤ λ·W; λ·(W − W_engine) is the mean number of requests in that layer.

    Args:
        url: the server's base URL (loopback). model: the model name to request. prompts: cycled through.
        rate: offered arrivals per second (Poisson). requests: requests to send. max_tokens: new tokens per request
            (greedy). interval_s: pause between gauge readings (s). seed: the arrivals' seed.
    Returns:
        LittleCheck; its table: offered_rate, sent, answered, refused, window_s, arrival_rate (λ, 1/s),
        mean_latency_s (W), lambda_W, gauge_mean (L̄), gauge_over_lambda_W, readings.
    Raises:
        ValueError: a non-loopback URL, rate or requests <= 0, or no request answered.
    """
    if rate <= 0 or requests < 1:
        raise ValueError(f"need rate > 0 and requests >= 1, got {rate} and {requests}")
    with InFlightSampler(url, model, interval_s) as sampler:
        load = run_load(url, model, prompts, mode="open", rate=rate, requests=requests, max_tokens=max_tokens,
                        seed=seed)
    ok = load.records[load.records.status == 200]
    if ok.empty:
        raise ValueError(f"no request was answered: {load.summary['rejected_by_status']}")
    window = float((ok.sent_s + ok.e2e_s).max() - load.records.sent_s.min())
    lam, w = len(ok) / window, float(ok.e2e_s.mean())
    gauge = sampler.request_seconds() / window
    table = measure.results_frame([{
        "offered_rate": rate, "sent": load.summary["sent"], "answered": len(ok), "refused": load.summary["rejected"],
        "window_s": window, "arrival_rate": lam, "mean_latency_s": w, "lambda_W": lam * w, "gauge_mean": gauge,
        "gauge_over_lambda_W": gauge / (lam * w), "readings": len(sampler.rows)}], model=model)  # fmt: skip
    samples = sampler.samples()
    fig = go.Figure(go.Scatter(x=samples.t_s, y=samples.in_flight, mode="lines", line_shape="hv",
                               name="in flight (server gauge)"))  # fmt: skip
    fig.add_hline(y=gauge, line_dash="dash", annotation_text=f"L̄ = {gauge:.2f}", annotation_position="top left")
    fig.add_hline(y=lam * w, line_dash="dot", annotation_text=f"λ·W = {lam * w:.2f}", annotation_position="top right")
    fig.update_xaxes(title="time (s)")
    fig.update_yaxes(title="requests in the engine (queue + batch)")
    title = f"Little's law under Poisson arrivals at {rate:.1f}/s"
    return LittleCheck(table, plots.style(fig, title, table.attrs["hardware"]), load, samples)


def greedy_tokens(repo: ModelRepository, model: str, version: str, prompts, max_tokens: int = 16) -> list[list[int]]:
    """Greedy tokens of one loaded version on the given prompts, through its own engine (no traffic routing).

    Args:
        repo: the repository serving the model. model, version: which deployment. prompts: text prompts (at most the
            engine's queue bound). max_tokens: tokens per prompt; exactly this many (no stop at end-of-text).
    Returns:
        (len(prompts), max_tokens) token ids.
    Raises:
        ValueError: an unknown version (naming the loaded ones) or more prompts than the queue holds.
    """
    if (model, version) not in repo.deployments:
        raise ValueError(f"{model!r} has no version {version!r}; loaded versions: {repo.versions(model)}")
    dep = repo.deployments[(model, version)]
    if len(prompts) > dep.engine.max_queue:
        raise ValueError(f"{len(prompts)} prompts, but {version!r}'s queue holds {dep.engine.max_queue}")
    ids = [dep.tokenizer(p)["input_ids"] for p in prompts]
    return dep.engine.generate(ids, SamplingParams(max_tokens=max_tokens), eos_token_id=None)


@dataclass(frozen=True)
class CanaryDecision:
    """A canary's verdict from measured numbers and thresholds fixed before the measurement.

    agreement: greedy prefix agreement of the canary's tokens with the stable version's (`measure.prefix_agreement`).
    ttft_ratio: the canary's median time to first token ÷ the stable version's, under the same traffic.
    canary_requests: requests the canary answered (its median TTFT rests on them).
    Promote only if all three pass: canary_requests >= min_requests, agreement >= min_agreement and
    ttft_ratio <= max_ttft_ratio; otherwise roll back (too little canary traffic is no evidence: keep the stable one).
    """

    agreement: float
    ttft_ratio: float
    canary_requests: int
    min_agreement: float
    max_ttft_ratio: float
    min_requests: int

    @property
    def promote(self) -> bool:
        return bool(self.table().passed.all())

    @property
    def action(self) -> str:
        return "promote" if self.promote else "roll back"

    def table(self) -> pd.DataFrame:
        """One row per criterion: measured, threshold, passed."""
        return pd.DataFrame([
            {"criterion": "canary requests answered ≥", "measured": self.canary_requests,
             "threshold": self.min_requests, "passed": self.canary_requests >= self.min_requests},
            {"criterion": "greedy agreement with stable ≥", "measured": self.agreement,
             "threshold": self.min_agreement, "passed": self.agreement >= self.min_agreement},
            {"criterion": "TTFT canary / stable ≤", "measured": self.ttft_ratio, "threshold": self.max_ttft_ratio,
             "passed": self.ttft_ratio <= self.max_ttft_ratio}])  # fmt: skip


def canary_decision(stable_tokens, canary_tokens, stable_ttft_s: float, canary_ttft_s: float, canary_requests: int,
                    min_agreement: float = 0.9, max_ttft_ratio: float = 1.5, min_requests: int = 5) -> CanaryDecision:
    """Decide a canary from data: does the new version answer like the stable one, and as fast?

    Args:
        stable_tokens, canary_tokens: (prompts, new_tokens) greedy token ids of each version on the same prompts.
        stable_ttft_s, canary_ttft_s: median time to first token of each version under the same traffic (s; NaN
            when a version answered nothing, which fails the TTFT criterion).
        canary_requests: how many requests the canary answered in that traffic.
        min_agreement: the least greedy prefix agreement in [0, 1] that counts as "the same answers".
        max_ttft_ratio: the largest canary / stable TTFT ratio that counts as "as fast".
        min_requests: the fewest canary requests whose median TTFT counts as evidence.
    Returns:
        CanaryDecision (its `promote`, `action` and `table()`).
    Raises:
        ValueError: thresholds out of range, a TTFT <= 0, or token lists of different shapes.
    """
    if not 0 <= min_agreement <= 1 or max_ttft_ratio <= 0 or min_requests < 1 or canary_requests < 0:
        raise ValueError(f"need 0 <= min_agreement <= 1, max_ttft_ratio > 0, min_requests >= 1 and canary_requests "
                         f">= 0; got {min_agreement}, {max_ttft_ratio}, {min_requests}, {canary_requests}")
    if stable_ttft_s <= 0 or canary_ttft_s <= 0:  # NaN (no request answered) passes: its criterion then fails
        raise ValueError(f"TTFTs must be positive seconds, got {stable_ttft_s} and {canary_ttft_s}")
    return CanaryDecision(measure.prefix_agreement(canary_tokens, stable_tokens), canary_ttft_s / stable_ttft_s,
                          int(canary_requests), min_agreement, max_ttft_ratio, min_requests)
