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
    from labkit.hardware import detect

    hw = detect()
    if args.json:
        print(json.dumps(hw.to_dict(), indent=2, default=str))
    else:
        from labkit.models import smollm2

        rows = hw.rows() + [("SmolLM2 prepared", "yes" if smollm2.is_prepared() else "no (run `labkit prepare`)")]
        print(format_table(rows))
        print()
        print(format_table(_lab_rows(hw.cuda_available), ("lab", "what this machine lacks")))
    return 0


def _lab_rows(cuda: bool) -> list[tuple[str, str]]:
    """One row per lab: missing extras' packages, GPU sections that skip here, a peer it could show."""
    from labkit.notebook.needs import installed, lab_needs

    rows = []
    for n in lab_needs():
        lacks = list(n.missing)
        if n.gpu_sections and not cuda:
            lacks.append("no CUDA GPU: skips " + "; ".join(n.gpu_sections))
        if n.peer and not _peer_present(n.peer[0], installed):
            lacks.append(f"optional peer {n.peer[0]}: {n.peer[1]}")
        rows.append((n.lab, " | ".join(lacks) or "nothing"))
    return rows


def _peer_present(name: str, installed) -> bool:
    if name.startswith("vLLM"):
        from labkit.serving.peers import PeerUnavailable, vllm_python

        try:
            vllm_python()
            return True
        except PeerUnavailable:
            return False
    return installed("llama-cpp-python")


def cmd_models(args: argparse.Namespace) -> int:
    from labkit.models import REGISTRY, estimate_memory

    rows = [(name, f"{estimate_memory(name).params / 1e6:.1f}M params — {spec.description}")
            for name, spec in REGISTRY.items()]
    print(format_table(rows, ("model", "what it is")))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Fetch and convert the default models once, so labs start fast and offline."""
    from tqdm.auto import tqdm

    from labkit import quanto_kernels
    from labkit.data import shakespeare_tokenizer
    from labkit.models import shakespeare_checkpoint_dir, smollm2, train_default_checkpoint

    steps = {
        "shakespeare tokenizer": shakespeare_tokenizer,
        "smollm2-135m (GGUF -> safetensors)": smollm2.prepare,
        "tiny-bloom-shakespeare (train < 1 min)": lambda: (shakespeare_checkpoint_dir() / "model.safetensors").exists()
        or train_default_checkpoint(progress=False),
        "optimum-quanto CPU kernels (C++, compiled once, ~1 min)": quanto_kernels.build_cpu_kernels,
    }
    if args.skip_llm:
        steps.pop("smollm2-135m (GGUF -> safetensors)")
    if args.quanto_cuda:
        steps["optimum-quanto CUDA kernels (nvcc, several minutes)"] = quanto_kernels.build_cuda_kernels
    for name, step in (bar := tqdm(steps.items(), desc="prepare", unit="step")):
        bar.set_postfix_str(name)
        start = time.perf_counter()
        said = step()
        tqdm.write(f"  {name}: {said if isinstance(said, str) else 'ready'} ({time.perf_counter() - start:.1f} s)")
    return 0


def cmd_run_labs(args: argparse.Namespace) -> int:
    """Execute labs with papermill, export each to HTML and write OUT/index.html; non-zero if any lab failed."""
    from labkit.notebook.report import run_labs, write_index
    from labkit.notebook.run import LABS_DIR, device_parameter, every_lab, find_labs

    labs = find_labs(args.labs, Path(args.labs_dir) if args.labs_dir else LABS_DIR)
    device = device_parameter(args.device)  # a bad --device fails here, naming the choices, before any lab runs
    out_dir = Path(args.out)
    with every_lab(**device):
        reports = run_labs(labs, out_dir, smoke=args.smoke, html_export=not args.no_html)
    index = write_index(reports, out_dir, mode="smoke" if args.smoke else "full")
    from labkit import hardware
    from labkit.notebook import durations

    ran = {r.lab: r.seconds for r in reports if r.ok}
    if ran and not args.labs_dir:  # the repository's labs: their times are the ones labs/durations.json records
        durations.record(ran, "smoke" if args.smoke else "full", hardware.detect().summary)
    failed = [r.lab for r in reports if not r.ok]
    print(f"index: {index}")
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
    p.add_argument("--quanto-cuda", action="store_true",
                   help="also compile optimum-quanto's CUDA kernels (GPU machines; nvcc, several minutes)")
    p.set_defaults(func=cmd_prepare)
    p = sub.add_parser("run-labs", help="execute labs with papermill; write notebooks, HTML and an index.html")
    p.add_argument("labs", nargs="*", help="lab numbers or name parts (default: all)")
    p.add_argument("--smoke", action="store_true", help="small parameters (each lab about a minute or less)")
    p.add_argument("--out", default="reports", help="output folder (default: reports/)")
    p.add_argument("--labs-dir", default=None, help="where the NN_*.ipynb labs are (default: the repo's labs/)")
    p.add_argument("--device", default="auto",
                   help="the DEVICE every lab runs on: auto (the GPU when there is one, else the CPU; the default), "
                        "cpu, cuda or cuda:N")
    html = p.add_mutually_exclusive_group()
    html.add_argument("--html", dest="no_html", action="store_false", default=False,
                      help="export each lab to HTML (the default)")
    html.add_argument("--no-html", dest="no_html", action="store_true", help="skip the HTML export")
    p.set_defaults(func=cmd_run_labs)
    from labkit.serving.cli import add_commands as add_serving_commands

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
