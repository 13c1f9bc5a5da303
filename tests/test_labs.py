"""Every lab runs headless with smoke parameters; the results it recorded are asserted here."""

import importlib
from pathlib import Path

import pytest

from labkit.runner import list_labs, run_lab

pytest.importorskip("papermill", reason="papermill is not installed here: notebooks cannot run (install labkit[lab])")

from .conftest import NOTEBOOK_DURATIONS

SMOKE_BUDGET_S = 90


def check_00(r: dict) -> None:
    assert r["logical_cores"] >= 1
    assert 0.5 < r["bandwidth_GBps"] < 20_000
    assert r["smollm2_fp32_bound_tok_s"] == pytest.approx(r["bandwidth_GBps"] / 0.538060032, rel=1e-6)
    assert {"00_start_here.ipynb", "01_lifecycle_training_vs_inference.ipynb"} <= set(r["labs_available"])
    assert 0 < r["tiny_bloom_forward_median_ms"] <= r["tiny_bloom_forward_p99_ms"]


def check_01(r: dict) -> None:
    assert r["val_loss_drop"] >= 0.30, r["val_loss_drop"]  # validation loss falls by at least 30 %
    assert r["final_val_loss"] < r["first_val_loss"]
    assert r["inference_step_ms"] < r["train_step_ms"]  # inference is faster ...
    assert r["inference_peak_MiB"] < r["train_peak_MiB"]  # ... and smaller
    assert r["inference_persistent_MiB"] < r["train_persistent_MiB"]
    assert r["checkpoint_roundtrip_identical"] is True
    thr = r["sweep_sequences_per_s"]
    assert max(thr) > 1.5 * thr[0]  # batching raises throughput
    assert r["sweep_latency_ms"][-1] > r["sweep_latency_ms"][0]  # ... at the cost of latency


def check_03(r: dict) -> None:
    assert r["parity_ok"] and r["max_relative_diff"] < 1e-4  # every format computes what PyTorch computes
    nodes = r["bloom_nodes"]
    assert nodes["all"] < nodes["basic"] < nodes["exported (raw)"]  # optimisation shrinks the graph
    assert "com.microsoft:FastGelu" in r["bloom_fused_ops"]
    assert r["fastgelu_nodes"] == r["n_layers"] == 4
    assert r["bn_folded"] == 2
    assert "com.microsoft.nchwc:Conv" in r["cnn_layout_ops"]  # the NCHWc layout change
    assert r["folding_nodes"][1] < r["folding_nodes"][0]
    # BLOOM's ALiBi attention: no ORT fusion finds it; the export patch writes one Attention node per layer
    assert r["transformer_attention_fusions"] == 0
    assert r["attention_nodes"] == {"plain export": 0, "fused attention": r["n_layers"]}
    assert r["nodes_after_all"]["fused attention"] < 0.7 * r["nodes_after_all"]["plain export"]
    assert r["attention_speedups"]["ORT, fused attention"] > 1.2 and r["attention_max_relative_diff"] < 1e-4


def check_04(r: dict) -> None:
    assert {"torch-eager", "torchscript", "torch-compile", "onnxruntime", "openvino", "tensorrt"} <= set(r["engines"])
    assert all(r["unavailable"].values())  # every unavailable engine carries its reason
    assert r["ort_speedup_tiny_bloom_b1"] > 1.0  # ONNX Runtime beats eager on tiny-bloom
    assert r["max_relative_diff"] < 1e-4  # parity held for every session
    assert set(r["cold_start_s"]) >= {"torch-eager", "onnxruntime", "openvino"}
    assert set(r["option_speedups"]) >= {"torch-eager", "ORT, plain export", "ORT, fused attention"}
    c = r["matmul_ceiling"]  # ORT's MatMuls alone: less time than the whole model, a higher ceiling
    assert c["matmuls"] == 17 and 0 < c["matmul_share"] < 1 and c["ceiling_speedup"] > c["ort_speedup"]


def check_05(r: dict) -> None:
    assert set(r["quantizers"]) >= {"fp32", "bf16", "int8-dynamic", "int4-weight", "bnb-nf4", "ort-int8", "ort-int4"}
    size = r["size_vs_fp32"]
    assert abs(size["bf16"] - 0.5) < 0.01 and size["int8-dynamic"] < 0.56 and size[r["smallest_4bit"]] < 0.45
    assert all(v < 1.05 for v in r["perplexity_vs_fp32"].values())  # no quantizer broke the model
    assert r["top1_agreement"]["fp32"] == 1.0
    assert all(r["errors"].values())  # a quantizer that could not run says why
    claims = r["claims_GB"]
    assert 60 < claims["llama-30b/float16"] < 70 and 30 < claims["llama-30b/int8"] < 35
    assert 352 <= claims["bloom-176b/bfloat16"] < 353


def check_06(r: dict) -> None:
    assert len(r["methods"]) == 10
    lp = r["mean_logprob"]
    assert lp["greedy"] > lp["sample"]  # greedy's text is the more likely one
    assert r["distinct_2"]["sample"] >= r["distinct_2"]["greedy"]  # sampling is more diverse
    assert r["greedy_equals_prompt_lookup"]  # speculation never changes greedy's text
    assert r["speculative_same_tokens"] and 0 <= r["acceptance_rate"] <= 1
    k = r["kept_counts"]
    assert k["top-k (k=5)"] == 5 and k["min-p (min_p=0.1)"] >= 1
    ent = list(r["entropy_by_temperature"].values())
    assert ent == sorted(ent)  # entropy rises with temperature
    assert r["repetition_4gram"][1] <= r["repetition_4gram"][0]


CHECKS = {"00": check_00, "01": check_01, "03": check_03, "04": check_04, "05": check_05, "06": check_06}
# Labs may keep their checks in their own file, tests/checks_labNN.py, defining `check(results)`.
for _path in sorted(Path(__file__).parent.glob("checks_lab[0-9][0-9].py")):
    CHECKS[_path.stem[-2:]] = importlib.import_module(f"{__package__}.{_path.stem}").check


@pytest.mark.timeout(300)
@pytest.mark.parametrize("lab", list_labs(), ids=lambda p: p.stem)
def test_lab_runs_and_records_results(lab: Path, tmp_path):
    number = lab.name[:2]
    assert number in CHECKS, f"{lab.name} has no checks in tests/test_labs.py"
    run = run_lab(lab, tmp_path, smoke=True, html=True)
    NOTEBOOK_DURATIONS[lab.stem] = run.seconds
    assert run.results, f"{lab.name} recorded no results"
    CHECKS[number](run.results)
    html = run.html.read_text()
    assert "plotly-graph-div" in html and "Plotly.newPlot" in html  # figures are in the HTML
    assert run.seconds < SMOKE_BUDGET_S, f"{lab.name} took {run.seconds:.0f} s in smoke mode"
