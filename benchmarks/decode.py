"""LLM decode on this CPU: every decode backend against llama.cpp and the bandwidth-bound limit (JSON).

    python benchmarks/decode.py [--out reports/decode.json] [--model smollm2-135m] [--smoke]

Same held-out prompts (128 tokens), same number of new tokens (64), greedy, 2 threads, timed by
`labkit.decoding.timing` (one warm-up, then medians of repeats; decode tokens/s = batch / median step time).
Prints each path's decode tokens/s at batch 1 and 8, prefill latency, weight bytes, % of the bandwidth-bound
limit for its weight bytes, and its ratio to llama.cpp (when llama-cpp-python is installed:
`pip install 'labkit[peer]'`; otherwise it says so). --smoke: tiny-llama, small sizes.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from labkit import hardware
from labkit.experiments import fast_decode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="reports/decode.json")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--generators", nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny-llama, 16 prompt tokens, 4 new, batch 1 and 2")
    args = parser.parse_args(argv)
    sizes = dict(prompt_tokens=128, new_tokens=64, batch_sizes=(1, 8), repeat=3)
    if args.smoke:
        args.model, sizes = "tiny-llama", dict(prompt_tokens=16, new_tokens=4, batch_sizes=(1, 2), repeat=1)
    table = fast_decode.compare_generators(args.model, args.generators, threads=args.threads, **sizes).table
    ran = table[table.available]
    missing = table[~table.available]
    report = {"machine": hardware.detect().summary, "model": args.model, "threads": args.threads, **sizes,
              "bandwidth_GBps": table.attrs["bandwidth_GBps"],
              "bandwidth_samples_GBps": table.attrs["bandwidth_samples_GBps"],
              "results": [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                          for r in ran.drop(columns=["available"]).to_dict("records")],
              "unavailable": dict(zip(missing.generator, missing.reason, strict=True))}  # fmt: skip
    samples = sorted(report["bandwidth_samples_GBps"])
    spread = (f" (fastest of {len(samples)} repeats; median {samples[len(samples) // 2]:.1f}, "
              f"range {samples[0]:.1f}-{samples[-1]:.1f})" if samples else "")
    print(f"machine: {report['machine']}; {report['bandwidth_GBps']:.1f} GB/s{spread}; {args.model}, "
          f"{args.threads} threads")
    for r in ran.itertuples():
        vs = f"{r.vs_llama_cpp:5.2f}× llama.cpp" if not math.isnan(r.vs_llama_cpp) else "llama.cpp not measured"
        print(f"{r.generator:24s} b{int(r.batch):<2d} {r.decode_tok_s:8.1f} tok/s  prefill {r.prefill_ms:7.1f} ms  "
              f"{r.weight_MB:6.0f} MB (reads {r.step_read_MB:4.0f}/step)  {r.pct_of_bound:5.1f} % of bound  "
              f"top-1 agree {r.top1_agreement:4.2f}  {vs}")
    for name, reason in report["unavailable"].items():
        print(f"{name:24s} not run: {reason}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
