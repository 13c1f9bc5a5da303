"""Serving benchmark: every labkit scheduler and vLLM (the peer) under one load, real HTTP on 127.0.0.1.

    python benchmarks/serving.py                       # SmolLM2, chat, 64 new tokens: reports/serving.json + .html
    python benchmarks/serving.py --no-peer --schedulers continuous --clients 1 4 --max-tokens 16

One OpenAI-standard load generator for every server (`labkit.serving.loadgen`: streaming with
`stream_options.include_usage`, tokens counted from `usage`): chat requests of short prompts, temperature 0, closed
loop at each client count, then open loop (Poisson arrivals) at each rate. The schedulers are read from
`labkit.serving.repository.SCHEDULERS` at run time; vLLM runs when `make peers` built `.venv-vllm` (else the
benchmark says why it is skipped). Each labkit server runs as its own `labkit serve` process, as vLLM does
(`--in-process` runs them inside the benchmark, where the load generator shares their interpreter lock).
Targets: labkit's best scheduler >= 1.0x vLLM's tokens/s at 1, 16 and 32 clients with a TTFT p50 no worse than
vLLM's; at 1 client, labkit's fastest server (paged, ONNX Runtime runner) >= 90 % of the tokens/s of the fastest
exact (fp32, token-identical) single-stream engine labkit has, on the same requests, measured side by side in
alternating rounds (`experiments.serving_overhead.one_client`: the engine alone and ONNX Runtime GenAI;
`benchmarks/decode.py` has every decoder on held-out prompts); continuous >= 5x sync's tokens/s at the most
clients, with a lower TTFT p50. Not a timed test: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

PROMPTS = ("Write a haiku about the sea.", "What is the capital of France?", "Tell me a joke about cats.",
           "Explain what a GPU does in one sentence.")
PEER_CLIENTS = (1, 16, 32)  # where labkit's best scheduler must reach vLLM
# Server variants beyond the schedulers: the paged engine with its ONNX Runtime runner
VARIANTS = {"paged+onnxruntime": ("paged", {"runner": "onnxruntime"})}


def _peer_rows(args, measure: dict) -> tuple[list[dict], dict]:
    """vLLM under the same load, or no rows and the reason it was skipped."""
    from labkit.experiments.scheduler_comparison import measure_server
    from labkit.hardware import Unavailable
    from labkit.serving.peers import vllm_server

    if args.no_peer:
        return [], {"skipped": "--no-peer"}
    print("== vLLM: starting its server (the first start compiles the model: minutes)", flush=True)
    try:
        with vllm_server(args.model, kv_cache_gb=args.kv_cache_gb, timeout_s=args.peer_timeout_s) as peer:
            print(f"== {peer.engine} answered after {peer.startup_s:.0f} s (log {peer.log})", flush=True)
            rows = measure_server(peer.url, peer.model, peer.engine, **measure)
            info = {"engine": peer.engine, "version": peer.version, "startup_s": peer.startup_s, "log": str(peer.log),
                    "kv_cache_gb": args.kv_cache_gb}
    except Unavailable as err:
        print(f"== vLLM skipped: {err}", flush=True)
        return [], {"skipped": str(err)}
    return [{**r, "engine": peer.engine, "scheduler": None} for r in rows], info


def _targets(df, peer: str | None, top: int, one_client: dict | None = None) -> dict:
    closed = df[df["mode"] == "closed"].set_index(["server", "clients"])
    out = {}
    if one_client:  # measured side by side on the same requests: the server, its engine alone, ONNX Runtime GenAI
        o = one_client
        out["one_client_vs_fastest_exact_decode"] = {
            **o, "goal": 0.9, "met": bool(o["vs_fastest"] >= 0.9),
            "serving_cost_met": bool(o["serving_cost"] >= 0.9),  # the server against its own engine alone
            "decode_met": bool(o["decode_vs_fastest"] >= 0.9)}  # decode rates only (no prefill on either side)
    if {("continuous", top), ("sync", top)} <= set(closed.index):
        c, s = closed.loc[("continuous", top)], closed.loc[("sync", top)]
        ratio = c.tokens_per_s / s.tokens_per_s
        out["continuous_over_sync"] = {"clients": top, "tokens_per_s_ratio": ratio, "goal": 5.0,
                                       "met": bool(ratio >= 5.0 and c.ttft_p50_s < s.ttft_p50_s),
                                       "ttft_p50_continuous_s": c.ttft_p50_s, "ttft_p50_sync_s": s.ttft_p50_s}
    if peer:
        levels = {}
        for n in PEER_CLIENTS:
            labkit = df[(df["mode"] == "closed") & (df.clients == n) & (df.engine == "labkit")]
            if (peer, n) not in closed.index or labkit.empty:
                continue
            best, ref = labkit.loc[labkit.tokens_per_s.idxmax()], closed.loc[(peer, n)]
            levels[n] = {"best_scheduler": best.server, "tokens_per_s_ratio": best.tokens_per_s / ref.tokens_per_s,
                         "ttft_p50_s": best.ttft_p50_s, "peer_ttft_p50_s": ref.ttft_p50_s,
                         "met": bool(best.tokens_per_s >= ref.tokens_per_s and best.ttft_p50_s <= ref.ttft_p50_s)}
        out["labkit_over_peer"] = {"goal": 1.0, "levels": levels, "met": all(v["met"] for v in levels.values())}
    return out


def _load(row) -> str:
    return f"{row.clients:.0f} clients" if row["mode"] == "closed" else f"open {row.rate:g}/s"


def _table(df, peer: str | None):
    """One line per (server, load): completion tokens (from `usage`), tokens/s, TTFT p50 and labkit / vLLM tokens/s
    at the same load."""
    cols = ["server", "load", "sent", "succeeded", "tokens", "tokens_per_s", "ttft_p50_s", "tpot_p50_s", "e2e_p99_s",
            "mean_decode_batch"]
    t = df.assign(load=df.apply(_load, axis=1), tokens=(df.tokens_per_s * df.wall_s).round().astype(int))
    t = t[[c for c in cols if c in t]].copy()
    if peer:
        ref = t[t.server == peer].set_index("load").tokens_per_s
        t[f"x {peer}"] = [v / ref.get(k, float("nan")) if s != peer else float("nan")
                          for v, k, s in zip(t.tokens_per_s, t.load, t.server, strict=True)]
    return t


def _figure(df, path: Path, title: str) -> None:
    from labkit.experiments.scheduler_comparison import by_scheduler

    closed = df[df["mode"] == "closed"].assign(scheduler=lambda d: d.server)
    figs = [by_scheduler(closed, "clients", "tokens_per_s", f"Throughput vs concurrency — {title}", "tokens/s"),
            by_scheduler(closed, "clients", "ttft_p50_s", f"Time to first token vs concurrency — {title}",
                         "TTFT p50 (s)")]
    opened = df[df["mode"] == "open"].assign(scheduler=lambda d: d.server)
    if len(opened):
        figs.append(by_scheduler(opened, "rate", "e2e_p99_s", f"Open loop: p99 latency vs arrival rate — {title}",
                                 "end-to-end p99 (s)", xlabel="arrivals per second"))
    html = "".join(f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figs))
    path.write_text(f"<html><head><meta charset='utf-8'><title>{title}</title></head><body>{html}</body></html>")


def _save(out: Path, rows: list[dict], meta: dict):
    """Write the JSON report and the plot next to it; returns the table and the report."""
    import torch

    from labkit.measure import results_frame

    df = results_frame(rows, model=meta["model"], max_tokens=meta["max_tokens"])
    report = {**meta, "hardware": df.attrs.get("hardware"), "torch_threads": torch.get_num_threads(),
              "targets": _targets(df, meta["peer"].get("engine"), int(df.clients.max()), meta.get("one_client")),
              "rows": df.drop(columns=["rejected_by_status"], errors="ignore").to_dict(orient="records")}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float))
    _figure(df, out.with_suffix(".html"), meta["model"])
    return df, report


def _measure_process(model: str, label: str, scheduler: str, limits: dict, max_batch: int, max_queue: int,
                     measure: dict) -> list[dict]:
    """One labkit server as its own process (`labkit serve`, as vLLM runs): the load generator here shares no
    interpreter lock with it. Mean decode batch per level from its /metrics, before and after."""
    from labkit.devices import device_label
    from labkit.experiments.scheduler_comparison import measure_server
    from labkit.serving.server_process import decode_counts, labkit_server

    with labkit_server(model, scheduler, max_batch=max_batch, max_queue=max_queue, **limits) as server:
        print(f"   started in {server.startup_s:.0f} s (log {server.log})", flush=True)
        last = decode_counts(server.url)

        def after_level() -> dict:
            nonlocal last
            now = decode_counts(server.url)
            steps, seqs = now[0] - last[0], now[1] - last[1]
            last = now
            return {"mean_decode_batch": seqs / steps if steps else float("nan"), "device": device_label("cpu")}

        rows = measure_server(server.url, model, label, after_level=after_level, **measure)
    return [{**r, "scheduler": scheduler} for r in rows]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--schedulers", nargs="+", default=None,
                   help="default: every labkit scheduler (SCHEDULERS) and the variants in VARIANTS")
    p.add_argument("--clients", nargs="+", type=int, default=[1, 4, 16, 32])
    p.add_argument("--requests-per-client", type=int, default=2)
    p.add_argument("--rates", nargs="*", type=float, default=[1.0], help="open-loop arrivals per second")
    p.add_argument("--open-requests", type=int, default=16, help="requests per open-loop rate")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--max-batch", type=int, default=32, help="labkit engines' batch slots")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: PyTorch's)")
    p.add_argument("--no-peer", action="store_true", help="measure labkit only (no vLLM)")
    p.add_argument("--in-process", action="store_true",
                   help="run labkit's servers inside this process (the load generator then shares their "
                        "interpreter lock); default: each as its own `labkit serve` process, as vLLM runs")
    p.add_argument("--one-client-rounds", type=int, default=3,
                   help="rounds of the 1-client comparison (server vs its engine alone vs the fastest exact decoder, "
                        "alternated); 0 skips it")
    p.add_argument("--kv-cache-gb", type=float, default=4.0, help="vLLM's VLLM_CPU_KVCACHE_SPACE (GB)")
    p.add_argument("--peer-timeout-s", type=float, default=900.0, help="how long vLLM may take to start")
    p.add_argument("--out", default="reports/serving.json", help="the JSON; the plot goes next to it (.html)")
    args = p.parse_args(argv)

    import torch

    from labkit.experiments.scheduler_comparison import measure_scheduler
    from labkit.models import load_model
    from labkit.serving.repository import SCHEDULERS

    schedulers = args.schedulers or [*SCHEDULERS, *VARIANTS]
    unknown = [s for s in schedulers if s not in SCHEDULERS and s not in VARIANTS]
    if unknown:
        p.error(f"unknown scheduler(s) {unknown}; choose from {[*SCHEDULERS, *VARIANTS]}")
    if args.threads:
        torch.set_num_threads(args.threads)
    measure = {"clients": tuple(args.clients), "requests_per_client": args.requests_per_client,
               "rates": tuple(args.rates), "open_requests": args.open_requests, "prompts": PROMPTS,
               "max_tokens": args.max_tokens, "temperature": 0.0, "chat": True}
    start = time.perf_counter()
    rows, peer = _peer_rows(args, measure)
    meta = {"model": args.model, "max_tokens": args.max_tokens, "prompts": list(PROMPTS), "chat": True,
            "torch": torch.__version__, "schedulers": schedulers, "peer": peer}
    if rows:
        _save(Path(args.out), rows, {**meta, "seconds": time.perf_counter() - start, "complete": False})
    loaded = load_model(args.model, device="cpu") if args.in_process else None
    queue = max(max(args.clients) * args.requests_per_client, args.open_requests)
    meta["labkit_servers"] = "in the benchmark's process" if args.in_process else "each in its own process"
    for i, name in enumerate(schedulers):
        print(f"== labkit {name}", flush=True)
        scheduler, limits = VARIANTS.get(name, (name, {}))
        if args.in_process:
            got = measure_scheduler(args.model, scheduler, loaded, max_batch=args.max_batch, max_queue=queue,
                                    limits=limits, label=name, **measure)  # fmt: skip
        else:
            got = _measure_process(args.model, name, scheduler, limits, args.max_batch, queue, measure)
        rows += [{**r, "engine": "labkit"} for r in got]
        df, report = _save(Path(args.out), rows, {**meta, "seconds": time.perf_counter() - start,
                                                  "complete": i == len(schedulers) - 1})  # partial results survive
    if args.one_client_rounds:
        from labkit.experiments.serving_overhead import one_client

        print("== one client, side by side: the server, its engine alone, the fastest exact decoder", flush=True)
        got = one_client(args.model, list(PROMPTS), args.max_tokens, rounds=args.one_client_rounds)
        meta["one_client"] = got.table.attrs["summary"]
        meta["one_client_rows"] = got.table.to_dict(orient="records")
        df, report = _save(Path(args.out), rows, {**meta, "seconds": time.perf_counter() - start, "complete": True})
    label = peer.get("engine")
    print(f"{args.model}, chat, max_tokens {args.max_tokens}, temperature 0 — {report['hardware']}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads); peer: {label or peer['skipped']}")
    print(_table(df, label).round(3).to_string(index=False))
    print(json.dumps(report["targets"], indent=2, default=float))
    print(f"-> {args.out}, {Path(args.out).with_suffix('.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
