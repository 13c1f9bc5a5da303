"""Lab 05's online path: SmolLM2 from the Hub's cache (bf16 safetensors), not the offline GGUF copy.

There is no network here, so the test builds what the Hub would leave in a Hugging Face cache — a snapshot of
HuggingFaceTB/SmolLM2-135M-Instruct with a bf16 `model.safetensors` — and runs the lab's calls in a fresh process
whose HF_HOME points at it, with HF_HUB_OFFLINE=1. Only the download itself is not exercised. The snapshot's
weights are the offline copy rounded to bf16 (the published file is bf16 too); what is checked is the path: the
choice of weights, the checkpoint's dtype, the fp32 reference being those bf16 weights upcast exactly, and the GGUF
row measured against them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from labkit import models
from labkit.models import smollm2
from tests.hub_cache import hub_snapshot


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory):
    """An HF_HOME whose hub cache holds SmolLM2-135M-Instruct as the Hub serves it (bf16 weights)."""
    home = tmp_path_factory.mktemp("hf_home")
    return home, hub_snapshot(home, smollm2.HUB_ID, models.resolve(smollm2.NAME).checkpoint_dir)


SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from safetensors.torch import load_file
    from labkit import models
    from labkit.experiments import quantization
    from labkit.models import smollm2

    name, why = smollm2.weights("auto")
    out = {"name": name, "why": why, "dtype": str(models.get_config(name).dtype)}
    stored = load_file(sys.argv[1] + "/model.safetensors")
    comparison = quantization.compare_quantizers(name, names=["fp32", "gguf-q4_1"], budget=256, decode_tokens=3,
                                                 batch_sizes=(1,), progress=False, device="cpu")
    fp32 = comparison.models["fp32"].model
    params = dict(fp32.named_parameters())
    out["upcast_max_diff"] = max(float((params[k].detach() - v.float()).abs().max()) for k, v in stored.items()
                                 if k in params)
    out["compared"] = sum(k in params for k in stored)
    out["fp32_dtypes"] = sorted({str(p.dtype) for p in fp32.parameters()})
    table = comparison.table.set_index("quantizer")
    out["rows"] = {q: {"perplexity_vs_fp32": float(table.loc[q, "perplexity_vs_fp32"]),
                       "top1_agreement": float(table.loc[q, "top1_agreement"])} for q in table.index}
    print("RESULT " + json.dumps(out))
""")


def test_lab05_takes_the_hubs_bf16_weights_when_they_are_cached(hub_home):
    home, snapshot = hub_home
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(snapshot)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
    assert out["name"] == smollm2.HUB_ID and "published checkpoint" in out["why"]
    assert out["dtype"] == "torch.bfloat16"  # what the lab prints as the checkpoint's stored precision
    # the fp32 reference is the bf16 checkpoint upcast, bit for bit: every stored tensor compared
    assert out["fp32_dtypes"] == ["torch.float32"] and out["compared"] > 0 and out["upcast_max_diff"] == 0.0
    # the GGUF row is measured against the Hub's weights: here those are the GGUF copy rounded to bf16, so the two
    # agree closely — a different reference would show up as a perplexity ratio far from 1
    gguf = out["rows"]["gguf-q4_1"]
    assert out["rows"]["fp32"]["perplexity_vs_fp32"] == pytest.approx(1.0)
    assert 0.9 < gguf["perplexity_vs_fp32"] < 1.1 and gguf["top1_agreement"] > 0.8
