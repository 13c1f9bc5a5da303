"""Engine speed-ups over PyTorch eager on this machine, written as JSON (not a timed test).

    python benchmarks/engines.py [--out reports/engines.json] [--repeat 200] [--rounds 10]

Target from the issue: tiny-bloom, batch 1 × 32 tokens, 2 threads — ONNX Runtime (ENABLE_ALL) and
OpenVINO f32 each at least 2.5× faster than eager. The script prints the ratios and the machine.
Engines are timed in alternating rounds (`measure.benchmark_rounds`), so drift of a shared machine
lands on all of them alike; a second table shows what labkit's two preparation choices are worth
(ORT: attention exported as one op; OpenVINO: compiled for static shapes).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from labkit import hardware
from labkit.experiments import engine_comparison

TARGET = 2.5
VARIANTS = {
    "ORT, plain export": ("onnxruntime", {"fused_attention": False}),
    "ORT, fused attention": ("onnxruntime", {}),
    "OpenVINO, dynamic shapes": ("openvino", {"static_shapes": False}),
    "OpenVINO, static shapes": ("openvino", {}),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="reports/engines.json")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup-s", type=float, default=0.5, help="re-warm each engine this long per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workloads", nargs="*", default=["tiny-bloom", "digits-cnn"])
    args = parser.parse_args()
    report = {"machine": hardware.detect().summary, "python": platform.python_version(), "results": {}}
    for workload in args.workloads:
        table = engine_comparison.compare_engines(workload, batch_sizes=(1,), seq_lens=(32,), threads=(args.threads,),
                                         repeat=args.repeat, rounds=args.rounds, warmup_s=args.warmup_s).table
        missing = table[~table.available]
        ran = table[table.available]
        report["results"][workload] = {
            r.engine: {"median_ms": r.median_ms, "p90_ms": r.p90_ms, "speedup_vs_eager": r.speedup_vs_eager,
                       "cold_start_s": r.cold_start_s} for r in ran.itertuples()
        }  # fmt: skip
        report["results"][workload]["unavailable"] = dict(zip(missing.engine, missing.reason, strict=True))
    if "tiny-bloom" in args.workloads:
        options = engine_comparison.compare_variants("tiny-bloom", VARIANTS, threads=args.threads, repeat=args.repeat,
                                            rounds=args.rounds, warmup_s=args.warmup_s).table
        report["options_tiny_bloom"] = {r.variant: {"median_ms": r.median_ms, "speedup_vs_eager": r.speedup_vs_eager}
                                        for r in options.itertuples()}  # fmt: skip
        report["ort_matmul_ceiling_tiny_bloom"] = engine_comparison.matmul_ceiling(
            "tiny-bloom", threads=args.threads, repeat=args.repeat, rounds=args.rounds, warmup_s=args.warmup_s)
    print(f"machine: {report['machine']}")
    for workload, res in report["results"].items():
        for engine, r in res.items():
            if engine != "unavailable":
                speedup = r["speedup_vs_eager"]
                print(f"{workload:12s} {engine:14s} median {r['median_ms']:8.3f} ms  {speedup:5.2f}× eager")
    for variant, r in report.get("options_tiny_bloom", {}).items():
        print(f"tiny-bloom   {variant:26s} median {r['median_ms']:8.3f} ms  {r['speedup_vs_eager']:5.2f}× eager")
    if "ort_matmul_ceiling_tiny_bloom" in report:
        c = report["ort_matmul_ceiling_tiny_bloom"]
        print(f"tiny-bloom   ORT's {c['matmuls']} weight MatMuls alone: {c['matmuls_only_ms']:.3f} ms = "
              f"{100 * c['matmul_share']:.0f} % of ORT's {c['ort_ms']:.3f} ms; ceiling if all else were free: "
              f"{c['ceiling_speedup']:.2f}× eager (ORT now {c['ort_speedup']:.2f}×)")
    bloom = report["results"].get("tiny-bloom", {})
    for engine in ("onnxruntime", "openvino"):
        if engine in bloom:
            ratio = bloom[engine]["speedup_vs_eager"]
            verdict = "met" if ratio >= TARGET else "NOT met"
            print(f"target {engine} >= {TARGET}× on tiny-bloom b1×32: {verdict} ({ratio:.2f}×)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
