"""LLM decode on this CPU: every decode backend against llama.cpp and the bandwidth-bound limit (JSON).

    python benchmarks/decode.py [--out reports/decode.json] [--model smollm2-135m] [--smoke]

Same held-out prompts (128 tokens), same number of new tokens (64), greedy, 2 threads, timed by
`labkit.decoding.timing` (one warm-up, then medians of repeats; decode tokens/s = batch / median step time).
Prints each path's decode tokens/s at batch 1 and 8, prefill latency, weight bytes, % of the bandwidth-bound
limit for its weight bytes, and its ratio to llama.cpp (when llama-cpp-python is installed:
`pip install 'labkit[peer]'`; otherwise it says so). OpenVINO GenAI's rows (`openvino-genai-int8`, `-int4`: NNCF
weight compression of the same checkpoint, in `.venv-openvino` from `make peers`) run when that venv exists and
say how to build it otherwise. --smoke: tiny-llama, small sizes.

--vllm adds vLLM (the serving peer, `make peers`) on the same prompts through its OpenAI server: each prompt a
streamed completion of exactly the new tokens (`ignore_eos`, greedy), batch B as B requests sent together; decode
tokens/s = the tokens after the first ones / the time from the last first token to the last token (the prefill and
HTTP set-up left out, as the in-process paths leave them out). Its own timing, not `labkit.decoding.timing`: the
server is another process.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from labkit import hardware
from labkit.experiments import fast_decode


def _vllm_decode(model: str, prompt_tokens: int, new_tokens: int, batch_sizes, repeat: int) -> dict:
    """vLLM's decode tokens/s on the held-out prompts, each batch size the median of `repeat` rounds."""
    import statistics
    from concurrent.futures import ThreadPoolExecutor

    from labkit.serving.peers import PeerUnavailable, vllm_server, vllm_version

    try:
        version = vllm_version()
        with vllm_server(model) as peer:
            rows = []
            for b in batch_sizes:
                prompts = fast_decode.held_out_prompts(model, b, prompt_tokens)
                rounds = []
                for _ in range(repeat + 1):  # the first round warms up
                    with ThreadPoolExecutor(b) as pool:
                        rounds.append(list(pool.map(lambda ids: _stream(peer.url, model, ids, new_tokens), prompts)))
                rates, ttfts = [], []
                for got in rounds[1:]:
                    start = max(first for first, _, _ in got)  # every sequence is decoding from here on
                    end = max(last for _, last, _ in got)
                    after = sum(sum(1 for t in times if t > start) for _, _, times in got)
                    rates.append(after / (end - start))
                    ttfts.append(statistics.median(first for first, _, _ in got))
                rows.append({"batch": b, "decode_tok_s": statistics.median(rates),
                             "ttft_s": statistics.median(ttfts)})
            return {"version": version, "rows": rows}
    except PeerUnavailable as err:
        return {"version": "", "rows": [], "unavailable": str(err)}


def _stream(url: str, model: str, ids: list[int], new_tokens: int) -> tuple[float, float, list[float]]:
    """One streamed completion of exactly `new_tokens` tokens: (first token's time, last one's, every chunk's)
    in seconds since the request was sent."""
    import time

    import httpx

    body = {"model": model, "prompt": ids, "max_tokens": new_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True}
    times, start = [], time.perf_counter()
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=300) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]" and json.loads(line[6:]).get("choices"):
                times.append(time.perf_counter() - start)
    return times[0], times[-1], times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="reports/decode.json")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--generators", nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny-llama, 16 prompt tokens, 4 new, batch 1 and 2")
    parser.add_argument("--vllm", action="store_true", help="also vLLM's server, from .venv-vllm (make peers)")
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
    if args.vllm:
        report["vllm"] = _vllm_decode(args.model, **sizes)
        for r in report["vllm"].get("rows", []):
            print(f"{'vLLM ' + report['vllm']['version']:24s} b{r['batch']:<2d} {r['decode_tok_s']:8.1f} tok/s  "
                  f"(server process; first token {r['ttft_s'] * 1e3:.0f} ms)")
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

