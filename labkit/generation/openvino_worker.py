"""OpenVINO GenAI's side of the `openvino-genai-*` decode backends: run by the python of `.venv-openvino`, never
imported by labkit (optimum-intel pins transformers < 5.6; the lab runs 5.x).

    python openvino_worker.py export   '{"checkpoint": DIR, "weights": "int4", "out": DIR}'
    python openvino_worker.py generate '{"model": DIR, "prompts": [[ids]], "new_tokens": 64, "warmup": 1,
                                         "repeat": 3, "threads": 2}'
    python openvino_worker.py logits   '{"model": DIR, "prompts": [[ids]], "threads": 2, "out": FILE.npy}'

Each command prints one JSON object as its last line of standard output. Only the standard library, numpy and
OpenVINO's packages are imported here.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # run as a script: labkit's modules beside it must not shadow the packages imported here

# optimum-cli's weight compression for each `weights` name. int4: NNCF's asymmetric 4-bit blocks of 32 with a
# scale and a zero point each (the layout of GGUF's Q4_1) on every linear layer (ratio 1.0); NNCF keeps the tied
# embedding / LM head in 8 bits per channel, as llama.cpp keeps it in Q8_0. int8: 8 bits per output channel.
WEIGHTS = {"int4": ["--weight-format", "int4", "--group-size", "32", "--ratio", "1.0"],
           "int8": ["--weight-format", "int8"]}  # fmt: skip


def export(checkpoint: str, weights: str, out: str) -> dict:
    """optimum-intel's export of a transformers checkpoint to OpenVINO IR (stateful KV cache) with NNCF weight
    compression, plus the tokenizer models OpenVINO GenAI loads. Returns `info(out)`."""
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; choose from {list(WEIGHTS)}")
    cli = Path(sys.executable).with_name("optimum-cli")
    subprocess.run([str(cli), "export", "openvino", "--model", checkpoint, "--task", "text-generation-with-past",
                    *WEIGHTS[weights], out], check=True, stdout=sys.stderr)  # fmt: skip
    return info(out)


def info(model: str) -> dict:
    """Bytes of the exported weights, bytes one batch-1 decode step reads, and the versions."""
    import openvino as ov
    import openvino_genai

    ir = ov.Core().read_model(str(Path(model) / "openvino_model.xml"))
    weight_bytes = (Path(model) / "openvino_model.bin").stat().st_size
    step_bytes = weight_bytes
    for node in ir.get_ordered_ops():  # an embedding table that no MatMul reads: a step reads one row of it
        if node.get_type_name() != "Gather":
            continue
        table = _constant_source(node.input_value(0).get_node())
        if table is not None and not any(_feeds_matmul(o) for o in table.outputs()):
            rows = table.get_output_shape(0)[0]
            step_bytes -= table.get_byte_size() * (rows - 1) // rows
    return {"weight_bytes": weight_bytes, "step_bytes": step_bytes, "openvino_genai": openvino_genai.__version__,
            "openvino": ov.__version__}  # fmt: skip


def _constant_source(node):
    """The Constant a weight-decompression chain (Convert, Subtract, Multiply, Reshape) starts from, or None."""
    while node.get_type_name() in ("Convert", "Subtract", "Multiply", "Reshape"):
        node = node.input_value(0).get_node()
    return node if node.get_type_name() == "Constant" else None


def _feeds_matmul(output, depth: int = 6) -> bool:
    """Whether a MatMul consumes `output` within `depth` decompression ops."""
    for target in output.get_target_inputs():
        node = target.get_node()
        if node.get_type_name() == "MatMul" or (depth and any(_feeds_matmul(o, depth - 1) for o in node.outputs())):
            return True
    return False


def decode_steps(times: list[float], batch_sizes: list[int], batch: int) -> list[float]:
    """Decode step durations from OpenVINO GenAI's per-step clock: the intervals between consecutive steps that each
    produced a token for every one of the `batch` sequences (its scheduler may admit prompts over several steps).

    Args:
        times: `raw_metrics.m_new_token_times`, one time point per step (ms). batch_sizes: `raw_metrics.m_batch_sizes`,
            tokens produced at each step. batch: sequences in the generation.
    Returns:
        durations in seconds.
    """
    return [(b - a) / 1e3 for a, b, na, nb in zip(times, times[1:], batch_sizes, batch_sizes[1:], strict=False)
            if na == nb == batch]  # fmt: skip


def _pipeline(model: str, threads: int):
    import openvino_genai as og

    scheduler = og.SchedulerConfig()
    scheduler.enable_prefix_caching = False  # every repeat re-reads the same prompts: no cached prefix may help
    return og.LLMPipeline(model, "CPU", INFERENCE_NUM_THREADS=threads, scheduler_config=scheduler)


def generate(model: str, prompts: list[list[int]], new_tokens: int, warmup: int, repeat: int, threads: int) -> dict:
    """Greedy generations of exactly `new_tokens` tokens (`min_new_tokens`: EOS does not stop it), `warmup` untimed
    then `repeat` timed. Returns the last tokens, each timed generation's TTFT and wall time (s), and every decode
    step's duration (s, pooled)."""
    import numpy as np
    import openvino as ov
    import openvino_genai as og

    pipe = _pipeline(model, threads)
    config = og.GenerationConfig()
    config.max_new_tokens = config.min_new_tokens = new_tokens
    config.do_sample = False
    ids = np.asarray(prompts, dtype=np.int64)
    inputs = og.TokenizedInputs(ov.Tensor(ids), ov.Tensor(np.ones_like(ids)))
    ttft, totals, steps, tokens = [], [], [], []
    for i in range(warmup + repeat):
        result = pipe.generate(inputs, config)
        if i < warmup:
            continue
        raw = result.perf_metrics.raw_metrics
        ttft.append(result.perf_metrics.get_ttft().mean / 1e3)
        totals.append(sum(raw.generate_durations) / 1e6)
        steps += decode_steps(list(raw.m_new_token_times), list(raw.m_batch_sizes), len(prompts))
        tokens = [list(map(int, t)) for t in result.tokens]
    return {"tokens": tokens, "ttft_s": ttft, "totals_s": totals, "step_s": steps,
            "median_step_s": statistics.median(steps) if steps else None}  # fmt: skip


def logits(model: str, prompts: list[list[int]], threads: int, out: str) -> dict:
    """Teacher-forced next-token logits over the prompts, one forward each (the stateful model reset first), saved
    as a (batch, seq, vocab) float32 .npy at `out`."""
    import numpy as np
    import openvino as ov

    compiled = ov.Core().compile_model(str(Path(model) / "openvino_model.xml"), "CPU",
                                       {"INFERENCE_NUM_THREADS": threads})  # fmt: skip
    request, rows = compiled.create_infer_request(), []
    for prompt in prompts:
        request.reset_state()
        ids = np.asarray([prompt], dtype=np.int64)
        request.infer({"input_ids": ids, "attention_mask": np.ones_like(ids),
                       "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None],
                       "beam_idx": np.zeros(1, dtype=np.int32)})  # fmt: skip
        rows.append(np.array(request.get_tensor("logits").data[0], dtype=np.float32))
    np.save(out, np.stack(rows))
    return {"shape": [len(rows), *rows[0].shape]}


def main(argv: list[str]) -> int:
    commands = {"export": export, "generate": generate, "logits": logits, "info": info}
    if len(argv) != 2 or argv[0] not in commands:
        print(f"usage: openvino_worker.py {{{','.join(commands)}}} JSON", file=sys.stderr)
        return 2
    print(json.dumps(commands[argv[0]](**json.loads(argv[1]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
