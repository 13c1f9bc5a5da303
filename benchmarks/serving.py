"""Serving benchmark: every scheduler at 1, 4, 16, 32 concurrent clients, real HTTP on 127.0.0.1.

    python benchmarks/serving.py                       # SmolLM2, 64 new tokens, writes reports/serving.json
    python benchmarks/serving.py --model tiny-llama --clients 1 4 --max-tokens 16

Target: at 32 clients, continuous batching gives >= 5x the tokens/s of the synchronous (BLOOM-server)
scheduler, with a lower median time to first token. Not a timed test: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

PROMPTS = ("Write a haiku about the sea.", "What is the capital of France?", "Tell me a joke about cats.",
           "Explain what a GPU does in one sentence.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--schedulers", nargs="+", default=["sync", "dynamic", "continuous", "hf-continuous"])
    p.add_argument("--clients", nargs="+", type=int, default=[1, 4, 16, 32])
    p.add_argument("--requests-per-client", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: PyTorch's)")
    p.add_argument("--out", default="reports/serving.json")
    args = p.parse_args(argv)

    import torch

    from labkit.experiments.scheduler_comparison import compare_schedulers

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    sweep = compare_schedulers(args.model, tuple(args.schedulers), clients=tuple(args.clients),
                               requests_per_client=args.requests_per_client, max_tokens=args.max_tokens,
                               prompts=PROMPTS)
    df = sweep.table
    t = df.set_index(["scheduler", "clients"])
    top = max(args.clients)
    ratio = t.loc[("continuous", top), "tokens_per_s"] / t.loc[("sync", top), "tokens_per_s"]
    target = {"clients": top, "continuous_over_sync_tokens_per_s": ratio, "goal": 5.0, "met": bool(ratio >= 5.0),
              "ttft_p50_continuous_s": t.loc[("continuous", top), "ttft_p50_s"],
              "ttft_p50_sync_s": t.loc[("sync", top), "ttft_p50_s"]}
    target["lower_ttft"] = bool(target["ttft_p50_continuous_s"] < target["ttft_p50_sync_s"])
    cols = ["scheduler", "clients", "sent", "succeeded", "rejected", "failed", "tokens_per_s", "requests_per_s",
            "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "e2e_p50_s", "e2e_p99_s", "mean_decode_batch"]
    report = {"model": args.model, "max_tokens": args.max_tokens, "hardware": df.attrs.get("hardware"),
              "torch_threads": torch.get_num_threads(), "seconds": time.perf_counter() - start,
              "target": target, "rows": df[cols].to_dict(orient="records")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float))
    print(df[cols].round(3).to_string(index=False))
    print(json.dumps(target, indent=2, default=float))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
