"""The one-client comparison of labkit's server with its engine alone and ONNX Runtime GenAI: the server answers
with exactly as many tokens as the engines produce for the same requests, the engine alone equals transformers'
greedy `generate()` and GenAI's tokens, and the summary's ratios are those of the table's medians."""

import pytest

pytest.importorskip("fastapi", reason="the serving extra is not installed (pip install labkit[serve])")
pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installed (pip install labkit[engines])")

from labkit.experiments import serving_overhead  # noqa: E402


def test_server_and_engine_alone_serve_the_same_tokens():
    got = serving_overhead.one_client("tiny-llama", ["The sea", "A cat sat"], max_tokens=6, rounds=1,
                                      prompt_tokens=16)  # fmt: skip
    t, s = got.table, got.table.attrs["summary"]
    tokens = t.set_index("path").tokens
    assert tokens["server"] == tokens["engine alone"] > 0  # same requests, same replies (usage vs the engine)
    assert tokens[serving_overhead.GENAI] == tokens["server"]
    assert s["engine_tokens_equal_generate"] and s["engine_tokens_equal_genai"]  # exact, both of them
    med = t.groupby("path").median(numeric_only=True)
    assert s["serving_cost"] == pytest.approx(med.tokens_per_s["server"] / med.tokens_per_s["engine alone"])
    faster = max(med.tokens_per_s["engine alone"], med.tokens_per_s[serving_overhead.GENAI])
    assert s["vs_fastest"] == pytest.approx(med.tokens_per_s["server"] / faster)


def test_bad_arguments_are_refused_before_anything_loads():
    with pytest.raises(ValueError, match="rounds >= 1"):
        serving_overhead.one_client("tiny-llama", ["x"], rounds=0)
