"""SmolLM2 at batch 1 on this machine: % of the bandwidth-bound decode limit, and the cost of disk offload.

    python benchmarks/anatomy.py [--out reports/anatomy.json] [--model smollm2-135m] [--new-tokens 32] [--device auto]

Reports, per precision (fp32, int8-dynamic): measured decode tokens/s ÷ (bandwidth ÷ bytes read per step),
and the measured slowdown of all-on-disk Accelerate offload against all-in-memory. Both decode numbers come from
`labkit.decoding.timing` (batch / median decode step after a warm-up). Run it on an idle machine: other processes
skew both numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from labkit import devices, hardware
from labkit.experiments import big_models, roofline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="reports/anatomy.json")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one) | cpu | cuda | cuda:N")
    args = parser.parse_args()
    dev = devices.choose(args.device)  # a bad device fails here, naming the choices, before anything is measured
    print(dev.summary())
    limits = roofline.machine_limits(device=dev.device, half=dev.half)
    points = roofline.precision_points(args.model, precisions=("fp32", "int8-dynamic"), batch_sizes=(1,),
                                       new_tokens=args.new_tokens, limits=limits, device=dev.device)  # fmt: skip
    off = big_models.offload_latency(args.model, new_tokens=max(4, args.new_tokens // 4),
                                     device=dev.device).table.set_index("scenario")
    report = {
        "machine": hardware.detect().summary, **dev.to_dict(), "model": args.model, **limits,
        "roofline_b1": {r.precision: {"decode_tok_s": r.decode_tok_s, "bandwidth_bound_tok_s": r.bandwidth_bound_tok_s,
                                      "pct_of_roofline": r.pct_of_roofline, "read_per_step_MB": r.read_per_step_MB}
                        for r in points.itertuples()},
        "offload": {s: {"ms_per_token": r.ms_per_token, "disk_MB": r.disk_MB, "slowdown": r.slowdown,
                        "MB_moved_per_token": r.MB_moved_per_token, "matches_reference": bool(r.matches_reference)}
                    for s, r in off.iterrows()},
    }  # fmt: skip
    print(f"machine: {report['machine']}; {limits['bandwidth_GBps']:.1f} GB/s, {limits['flops'] / 1e9:.0f} GFLOP/s")
    for precision, r in report["roofline_b1"].items():
        print(f"{args.model} {precision:13s} {r['decode_tok_s']:7.1f} tok/s of {r['bandwidth_bound_tok_s']:7.1f} "
              f"bandwidth-bound = {r['pct_of_roofline']:5.1f} % of roofline")
    for scenario, r in report["offload"].items():
        print(f"offload {scenario:14s} {r['ms_per_token']:8.1f} ms/token  {r['slowdown']:5.2f}× in-memory  "
              f"{r['disk_MB']:6.0f} MB on disk  {r['MB_moved_per_token']:6.0f} MB moved/token  "
              f"matches reference={r['matches_reference']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
