"""`labkit serve` and `labkit loadgen`: hooks for labkit's CLI, and `python -m labkit.serving` on its own."""

from __future__ import annotations

import argparse
import json
import sys

from labkit.serving.limits import RUNNERS, Limits  # dataclasses only: cheap to import


def cmd_serve(args: argparse.Namespace) -> int:
    """Load `--model` and serve it until interrupted; returns the exit status."""
    if args.fields:  # the request fields table: no model, no torch
        from labkit.serving import fields

        for where in (fields.COMPLETIONS, fields.CHAT, fields.MESSAGE, fields.CONTENT_PART, fields.STREAM_OPTIONS):
            print(f"## {where}\n\n{fields.markdown(where)}\n")
        return 0
    # Imported here, not at the top: building the parser (every `labkit` command) must not import torch.
    import uvicorn

    from labkit.serving.app import create_app
    from labkit.serving.repository import ModelRepository

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach it can use the model", file=sys.stderr)
    # The device is checked first (a bad one fails naming the valid choices, before a model is loaded).
    limits = Limits(max_batch=args.max_batch, max_queue=args.max_queue, kv_tokens=args.kv_tokens,
                    prefill_chunk=args.prefill_chunk, prefix_caching=not args.no_prefix_caching, runner=args.runner)
    repo = ModelRepository(args.scheduler, limits=limits, device=args.device)
    dep = repo.load(args.name or args.model, args.version, source=args.model, dtype=args.dtype)
    app = create_app(repo, max_tokens_limit=args.max_tokens, request_timeout_s=args.timeout)
    print(f"serving {args.model} ({args.scheduler}, {dep.dtype} on {dep.device}) on http://{args.host}:{args.port}/v1",
          file=sys.stderr)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=30)
    finally:
        repo.close(drain=True)
    return 0


def cmd_loadgen(args: argparse.Namespace) -> int:
    """Drive a local server and print the summary; exit status 1 if any request failed."""
    from labkit.serving.loadgen import run_load  # pandas and httpx: only when the command runs

    res = run_load(args.url, args.model, mode=args.mode, clients=args.clients, rate=args.rate,
                   requests=args.requests, duration_s=args.duration, max_tokens=args.max_tokens, chat=args.chat)
    print(json.dumps(res.summary, indent=2, default=float))
    return 0 if res.summary["failed"] == 0 else 1


# Spelled out, not imported: building the parser must not import torch (a test checks it matches SCHEDULERS).
SCHEDULER_NAMES = ("sync", "dynamic", "continuous", "paged", "hf-continuous")


def add_commands(sub) -> None:
    """Add `serve` and `loadgen` to an argparse subparsers object."""
    p = sub.add_parser("serve", help="OpenAI-compatible server for a model (127.0.0.1 by default)")
    p.add_argument("--model", default="smollm2-135m", help="labkit model name, Hub id or folder")
    p.add_argument("--name", default=None, help="name clients use in requests (default: --model)")
    p.add_argument("--version", default="v1")
    p.add_argument("--dtype", default="fp32", help="fp32 | bf16 | fp16")
    p.add_argument("--device", default="auto",
                   help="where the model computes: auto (the GPU when there is one) | cpu | cuda | cuda:N")
    p.add_argument("--scheduler", default="continuous", choices=SCHEDULER_NAMES)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-queue", type=int, default=64, help="queued requests before answering 429")
    p.add_argument("--kv-tokens", type=int, default=None,
                   help="paged / hf-continuous: KV cache size in tokens (default 256 per batch slot)")
    p.add_argument("--prefill-chunk", type=int, default=None,
                   help="paged: most tokens per step; longer prompts are prefilled in chunks (default: whole)")
    p.add_argument("--no-prefix-caching", action="store_true", help="paged: do not reuse a shared prompt prefix's KV")
    p.add_argument("--runner", default="torch", choices=RUNNERS,
                   help="paged: torch (the transformers model, any device) | onnxruntime (steps as one ONNX "
                        "Runtime graph; CPU, fp32 Llama models)")
    p.add_argument("--max-tokens", type=int, default=512,
                   help="most new tokens per request (also the cap of a chat request that asks for no length)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--fields", action="store_true",
                   help="print which OpenAI request fields are implemented, accepted as tags or refused, and exit")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("loadgen", help="load a local server: closed loop (N clients) or open loop (Poisson)")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="loopback addresses only")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--mode", default="closed", choices=["closed", "open"])
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--rate", type=float, default=4.0, help="requests per second (open loop)")
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--duration", type=float, default=60.0, help="stop sending after this many seconds")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--chat", action="store_true", help="send chat requests (/v1/chat/completions)")
    p.set_defaults(func=cmd_loadgen)


def run(args: argparse.Namespace) -> int:
    """Run the command `add_commands` attached to the parsed arguments."""
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    """`python -m labkit.serving serve|loadgen ...`; returns the exit status (2 for bad input)."""
    parser = argparse.ArgumentParser(prog="python -m labkit.serving", description="labkit inference server")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, RuntimeError) as err:
        print(f"labkit {args.command}: {err}", file=sys.stderr)
        return 2
