"""The ORT GenAI model builder as a converter: refused before any work where it cannot run, cached, and its fp32
graph computes HF's logits."""

import importlib.util

import numpy as np
import pytest
import torch

from labkit import hardware, models
from labkit.cache import cache_dir
from labkit.convert import genai

needs_genai = pytest.mark.skipif(importlib.util.find_spec("onnxruntime_genai") is None,
                                 reason="onnxruntime-genai is not installed")  # fmt: skip


def test_bad_precision_and_unsupported_architecture_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=r"unknown ORT GenAI precision 'fp8'; choose from \['fp32', 'int8', 'int4'\]"):
        genai.build_genai(tmp_path, "fp8")
    (tmp_path / "config.json").write_text('{"model_type": "bloom"}')
    with pytest.raises(hardware.Unavailable, match="does not support bloom"):
        genai.build_genai(tmp_path, "int4")
    assert not list(cache_dir("genai").glob(f"{tmp_path.name}-*"))  # nothing was built


@needs_genai
def test_build_is_cached_and_fp32_matches_hf_logits():
    checkpoint = models.checkpoint_dir("tiny-llama")
    path = genai.build_genai(checkpoint, "fp32")
    built_at = (path / "genai_config.json").stat().st_mtime_ns
    assert genai.build_genai(checkpoint, "fp32") == path  # the second call reuses the folder
    assert (path / "genai_config.json").stat().st_mtime_ns == built_at
    fp32 = genai.load_genai(path, "fp32", threads=2)
    prompts = [[5, 17, 300, 42, 9, 1000], [7, 7, 8, 2048, 11, 12]]
    net, _ = models.load_cached("tiny-llama")
    with torch.no_grad():
        expected = net(input_ids=torch.tensor(prompts), use_cache=False).logits.numpy()
    got = fp32.logits(prompts)
    assert got.shape == expected.shape == (2, 6, net.config.vocab_size)
    np.testing.assert_allclose(got, expected, atol=1e-3 * np.abs(expected).max())
    int4 = genai.load_genai(genai.build_genai(checkpoint, "int4"), "int4", threads=2)
    assert int4.weight_bytes < 0.5 * fp32.weight_bytes  # 4-bit blocks (the input embedding stays fp32)
