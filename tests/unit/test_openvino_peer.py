"""OpenVINO GenAI as a peer decode backend: its step clock, its refusals, and (where `make peers` built
.venv-openvino) its tokens and logits against transformers on the same checkpoint."""

import importlib.util
import math

import numpy as np
import pytest

from labkit import models, venvs
from labkit.generation import BackendUnavailable, get_backend, openvino_peer, registry

spec = importlib.util.spec_from_file_location("openvino_worker", openvino_peer.WORKER)
worker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(worker)  # only the standard library at import: it loads in the lab's venv too


def test_decode_steps_are_the_intervals_between_full_batch_steps():
    # a scheduler admitting 4 prompts over 3 steps, then decoding all 4: only 25->31 and 31->40 ms are decode steps
    steps = worker.decode_steps([0.0, 10.0, 25.0, 31.0, 40.0], [2, 3, 4, 4, 4], batch=4)
    assert steps == pytest.approx([0.006, 0.009])
    assert worker.decode_steps([0.0, 5.0, 12.0], [1, 1, 1], batch=1) == pytest.approx([0.005, 0.007])


def test_missing_venv_is_refused_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv(openvino_peer.PYTHON_ENV, str(tmp_path / "nope" / "python"))
    ok, reason = registry()["openvino-genai-int4"].available("tiny-llama")
    assert not ok and "make peers" in reason and "LABKIT_OPENVINO_PYTHON" in reason
    with pytest.raises(BackendUnavailable, match="make peers"):
        get_backend("openvino-genai-int8", "tiny-llama")
    with pytest.raises(venvs.PeerUnavailable, match="make peers"):
        openvino_peer.run_worker("info", model=str(tmp_path))


def test_unknown_weights_name_the_valid_ones():
    with pytest.raises(ValueError, match=r"choose from \['int8', 'int4'\]"):
        openvino_peer.OpenVINOGenAI("int3")
    with pytest.raises(ValueError, match="choose from"):
        worker.export("unused", "fp8", "unused")


def _peer_venv() -> bool:
    try:
        openvino_peer.openvino_python()
    except venvs.PeerUnavailable:
        return False
    return True


@pytest.mark.skipif(not _peer_venv(), reason="no .venv-openvino: `make peers` builds it (an optional peer engine)")
def test_openvino_int8_decodes_like_transformers_fp32():
    import torch

    backend = get_backend("openvino-genai-int8", "tiny-llama")
    backend.load("tiny-llama", threads=2)
    model, _ = models.load_cached("tiny-llama")
    prompts = torch.randint(5, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0)).tolist()
    with torch.no_grad():
        reference = model(torch.tensor(prompts)).logits.float().numpy()
    logits = backend.logits(prompts)
    assert logits.shape == reference.shape  # (batch, seq, vocab)
    # int8 weights per output channel: logits track fp32's closely, and most argmaxes agree
    assert np.corrcoef(logits.ravel(), reference.ravel())[0, 1] > 0.99
    assert (logits.argmax(-1) == reference.argmax(-1)).mean() >= 0.8
    run = backend.generate(prompts[:1], new_tokens=5, warmup=1, repeat=2)
    assert np.array(run.tokens).shape == (1, 5) and len(run.step_s) == 2 * 4  # batch 1: every later token is a step
    assert run.decode_tok_s == pytest.approx(1 / np.median(run.step_s)) and math.isfinite(run.prefill_s)
    both = backend.generate(prompts, new_tokens=5, warmup=0, repeat=1)
    assert np.array(both.tokens).shape == (2, 5) and 1 <= len(both.step_s) <= 4
    assert backend.weight_bytes > 0 and backend.step_bytes <= backend.weight_bytes
