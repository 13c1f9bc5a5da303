"""Every quantizer on SmolLM2-135M on this machine: bytes, perplexity, speed — written as JSON.

    python benchmarks/quant.py [--out reports/quant.json] [--budget 2048] [--device auto|cpu|cuda]

Targets from the issue: the best int8 path decodes >= 2.5x faster than fp32 (batch 1) with perplexity
within 5 % of fp32; the best 4-bit path's weights are <= 30 % of fp32's bytes. Slower paths are
reported too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from labkit import devices, hardware
from labkit.experiments import quantization

INT8, FOUR_BIT = quantization.INT8, quantization.FOUR_BIT  # gguf-q4_1 runs dequantized to fp32: not 4-bit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="reports/quant.json")
    parser.add_argument("--source", default="smollm2-135m")
    parser.add_argument("--budget", type=int, default=2048)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--quantizers", nargs="*", default=None, help="a subset (default: all; fp32 always runs)")
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one) | cpu | cuda | cuda:N")
    args = parser.parse_args()
    dev = devices.choose(args.device)  # a bad device fails here, naming the choices, before any model loads
    names = None if not args.quantizers else ["fp32"] + [n for n in args.quantizers if n != "fp32"]
    table = quantization.compare_quantizers(args.source, names=names, budget=args.budget,
                                          decode_tokens=args.decode_tokens, batch_sizes=(1, 8), device=dev.device).table
    print(f"{dev.summary()}\nmachine: {hardware.detect().summary}; {table.attrs['eval_tokens']} evaluation tokens")
    cols = ["quantizer", "device", "stored_MiB", "size_vs_fp32", "perplexity_vs_fp32", "top1_agreement", "prefill_ms",
            "decode_tok_s_b1", "decode_speedup_b1", "decode_tok_s_b8"]
    print(table[[c for c in cols if c in table]].round(3).to_string(index=False))
    ok = table[table.perplexity.notna()].set_index("quantizer")
    int8 = ok.loc[[n for n in INT8 if n in ok.index and ok.loc[n, "perplexity_vs_fp32"] <= 1.05]]
    best = int8.decode_speedup_b1.idxmax()
    speedup = int8.loc[best, "decode_speedup_b1"]
    print(f"best int8 path within 5 % perplexity: {best}, {speedup:.2f}x fp32 decode "
          f"({'met' if speedup >= 2.5 else 'NOT met'}: target 2.5x)")
    four = ok.loc[[n for n in FOUR_BIT if n in ok.index]]
    small = four.size_vs_fp32.idxmin()
    print(f"smallest 4-bit path: {small}, {four.loc[small, 'size_vs_fp32']:.1%} of fp32 bytes "
          f"({'met' if four.loc[small, 'size_vs_fp32'] <= 0.30 else 'NOT met'}: target <= 30 %)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": hardware.detect().summary, **dev.to_dict(), "eval_tokens": table.attrs["eval_tokens"],
              "rows": json.loads(table.drop(columns=["notes"], errors="ignore").to_json(orient="records"))}
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
