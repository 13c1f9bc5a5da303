"""`labkit doctor | prepare | models | run-labs | serve | loadgen` — the lab's command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def format_table(rows: list[tuple[str, str]], headers: tuple[str, str] = ("item", "value")) -> str:
    width = max(len(headers[0]), *(len(k) for k, _ in rows))
    lines = [f"{headers[0]:<{width}}  {headers[1]}", f"{'-' * width}  {'-' * max(5, len(headers[1]))}"]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace) -> int:
    from .hardware import detect

    hw = detect()
    if args.json:
        print(json.dumps(hw.to_dict(), indent=2, default=str))
    else:
        from . import smollm2

        rows = hw.rows() + [("SmolLM2 prepared", "yes" if smollm2.is_prepared() else "no (run `labkit prepare`)")]
        print(format_table(rows))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models import REGISTRY, estimate_memory

    rows = [(name, f"{estimate_memory(name).params / 1e6:.1f}M params — {spec.description}")
            for name, spec in REGISTRY.items()]
    print(format_table(rows, ("model", "what it is")))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Fetch and convert the default models once, so labs start fast and offline."""
    from tqdm.auto import tqdm

    from . import smollm2
    from .data import shakespeare_tokenizer
    from .models import shakespeare_checkpoint_dir
    from .training import train_default_checkpoint

    steps = {
        "shakespeare tokenizer": shakespeare_tokenizer,
        "smollm2-135m (GGUF -> safetensors)": smollm2.prepare,
        "tiny-bloom-shakespeare (train < 1 min)": lambda: (shakespeare_checkpoint_dir() / "model.safetensors").exists()
        or train_default_checkpoint(progress=False),
    }
    if args.skip_llm:
        steps.pop("smollm2-135m (GGUF -> safetensors)")
    for name, step in (bar := tqdm(steps.items(), desc="prepare", unit="step")):
        bar.set_postfix_str(name)
        start = time.perf_counter()
        step()
        tqdm.write(f"  {name}: ready ({time.perf_counter() - start:.1f} s)")
    return 0


def cmd_run_labs(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .runner import find_labs, run_lab

    labs = find_labs(args.labs)
    out_dir = Path(args.out)
    failed = []
    for lab in (bar := tqdm(labs, desc="labs", unit="lab")):
        bar.set_postfix_str(lab.stem)
        try:
            run = run_lab(lab, out_dir, smoke=args.smoke, html=not args.no_html)
        except Exception as err:  # noqa: BLE001 - report every lab, then fail
            failed.append(lab.stem)
            tqdm.write(f"FAILED {lab.stem}: {type(err).__name__}: {str(err)[:500]}")
            continue
        tqdm.write(f"{run.lab}: {run.seconds:.1f} s -> {run.html or run.notebook}; results {run.results}")
    if failed:
        print(f"{len(failed)} lab(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description="Inference Lab tools")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("doctor", help="what this machine has (CPU, GPUs, back-ends)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_doctor)
    p = sub.add_parser("models", help="the models that load offline")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("prepare", help="fetch/convert the default models into the cache")
    p.add_argument("--skip-llm", action="store_true", help="skip SmolLM2 (93 MB download)")
    p.set_defaults(func=cmd_prepare)
    p = sub.add_parser("run-labs", help="execute labs with papermill; write notebooks + HTML")
    p.add_argument("labs", nargs="*", help="lab numbers or name parts (default: all)")
    p.add_argument("--smoke", action="store_true", help="small parameters (each lab < 90 s)")
    p.add_argument("--out", default="reports", help="output folder (default: reports/)")
    p.add_argument("--no-html", action="store_true", help="skip the HTML export")
    p.set_defaults(func=cmd_run_labs)
    from .serving.cli import add_commands as add_serving_commands

    add_serving_commands(sub)  # `labkit serve ...`, `labkit loadgen ...`
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError) as err:
        print(f"labkit {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
