"""The engine under the scheduler, and the real engine beside labkit's.

    runners = serving_engines.runner_comparison("smollm2-135m", loaded, clients=(1, 4))
    peer = serving_engines.peer_comparison("smollm2-135m", clients=(1, 4), live=True)

The same paged scheduler over two model runners (`serving.limits.RUNNERS`: the transformers model, or decode steps
as one ONNX Runtime graph) shows that single-stream speed is set by the engine under the scheduler, not by the
scheduler. vLLM, the engine PagedAttention comes from, runs in its own venv (`make peers`) under the same
OpenAI-standard load when it is installed; otherwise the rows `benchmarks/serving.py` recorded on this machine are
read back, with the file and the hardware named; otherwise the table is empty and says how to get it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from labkit.experiments.scheduler_comparison import measure_scheduler, measure_server
from labkit.hardware import Unavailable
from labkit.measure import results_frame
from labkit.plots import Measured, style
from labkit.serving.limits import RUNNERS
from labkit.serving.peers import repo_root, vllm_server

REPORT = Path("reports/serving.json")  # what benchmarks/serving.py writes, relative to the repository root
COLUMNS = ["server", "clients", "sent", "succeeded", "tokens_per_s", "ttft_p50_s", "tpot_p50_s"]


def runner_comparison(model: str, loaded: tuple, clients: tuple[int, ...] = (1, 4), max_tokens: int = 32,
                      requests_per_client: int = 2, prompts: tuple[str, ...] | None = None) -> Measured:  # fmt: skip
    """labkit's paged engine over each model runner, closed loop, real HTTP on 127.0.0.1.

    Args:
        model: the name requests use. loaded: a ready (model, tokenizer) every server shares.
        clients: concurrent clients per run. max_tokens: new tokens per request (temperature 0, chat).
        requests_per_client: requests each client sends. prompts: the chat prompts (default: loadgen's).
    Returns:
        Measured: one row per (runner, clients): server ('paged+torch', 'paged+onnxruntime'), loadgen's summary
        (tokens_per_s, ttft_p50_s, tpot_p50_s, s), decode_tok_s = 1 / tpot_p50_s; a runner that cannot run here
        (onnxruntime off the CPU) is one row with available False and the reason. A bar chart of tokens/s.
    """
    load = {"clients": clients, "requests_per_client": requests_per_client, "max_tokens": max_tokens,
            "temperature": 0.0, "chat": True, **({"prompts": prompts} if prompts else {})}  # fmt: skip
    rows = []
    for runner in RUNNERS:
        label = f"paged+{runner}"
        try:
            got = measure_scheduler(model, "paged", loaded, max_batch=max(clients), max_queue=4 * max(clients),
                                    limits={"runner": runner}, label=label, **load)  # fmt: skip
        except ValueError as err:  # e.g. the onnxruntime runner asked for a model on a GPU
            rows.append({"server": label, "available": False, "reason": str(err)})
            continue
        rows += [{**r, "available": True, "reason": "", "decode_tok_s": 1 / r["tpot_p50_s"]} for r in got]
    table = results_frame(rows, model=model, max_tokens=max_tokens)
    return Measured(table, _bars(table[table.available], "Paged scheduler, two engines under it"))


def recorded_rows(path: Path | None = None) -> tuple[pd.DataFrame, str]:
    """The closed-loop rows `benchmarks/serving.py` wrote, and where they came from ('' when there is no report)."""
    path = path or repo_root() / REPORT
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS), ""
    report = json.loads(path.read_text())
    rows = pd.DataFrame([r for r in report["rows"] if r.get("mode") == "closed"])
    return rows, f"recorded by benchmarks/serving.py in {path} on {report.get('hardware', 'this machine')}"


def peer_comparison(model: str, clients: tuple[int, ...] = (1, 4), max_tokens: int = 32, live: bool = True,
                    requests_per_client: int = 2, prompts: tuple[str, ...] | None = None,
                    report: Path | None = None) -> Measured:  # fmt: skip
    """vLLM (the peer) under the same load: measured now when `live` and installed, else the recorded benchmark.

    Args:
        model: a labkit model name with weights. clients, max_tokens, requests_per_client, prompts: the load (as
            `runner_comparison`). live: start vLLM (2-3 minutes on a 2-core CPU) when its venv exists.
        report: the benchmark JSON to fall back on (default: reports/serving.json at the repository root).
    Returns:
        Measured: closed-loop rows (server, clients, tokens_per_s, ttft_p50_s, tpot_p50_s, ...); attrs source
        ('measured now: vLLM x.y', 'recorded by benchmarks/serving.py in <file> on <hardware>', or '') and reason
        (why nothing was measured now). A bar chart of tokens/s per server.
    """
    reason = "live=False"
    if live:
        try:
            with vllm_server(model) as peer:
                got = measure_server(peer.url, peer.model, peer.engine, clients=clients, max_tokens=max_tokens,
                                     requests_per_client=requests_per_client, temperature=0.0, chat=True,
                                     **({"prompts": prompts} if prompts else {}))  # fmt: skip
            table = results_frame(got, model=model, max_tokens=max_tokens, source=f"measured now: {peer.engine}",
                                  reason="")  # fmt: skip
            return Measured(table, _bars(table, f"{peer.engine} under the same load"))
        except Unavailable as err:
            reason = str(err).splitlines()[0]
    rows, source = recorded_rows(report)
    table = results_frame(rows.to_dict("records"), model=model, max_tokens=max_tokens, source=source, reason=reason)
    return Measured(table, _bars(table, "Recorded: benchmarks/serving.py" if source else "No peer measured"))


def _bars(table: pd.DataFrame, title: str) -> go.Figure:
    fig = go.Figure()
    if "tokens_per_s" in table:
        for server, part in table.groupby("server", sort=False):
            fig.add_bar(name=server, x=[f"{c:.0f} clients" for c in part.clients], y=part.tokens_per_s)
    fig.update_layout(xaxis_title="load (closed loop)", yaxis_title="tokens/s", barmode="group")
    return style(fig, title)
