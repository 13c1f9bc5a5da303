"""Bytes one decode step reads (`labkit.generation.step_bytes`), against the tensors' shapes counted by hand: an
embedding table apart from the head costs one row, a tied head is read once, metadata is not read."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from transformers import LlamaConfig, LlamaForCausalLM

from labkit.generation.step_bytes import gguf_step_bytes, module_step_bytes, onnx_step_bytes
from labkit.memory import resident_bytes

V, H = 64, 16  # vocabulary, hidden size of the toy models


def test_onnx_lookup_tables_count_one_row_and_shared_ones_count_whole(tmp_path):
    table = numpy_helper.from_array(np.zeros((V, H), np.float32), "embed")  # read by Gather only
    head = numpy_helper.from_array(np.zeros((H, V), np.float32), "head")  # read by MatMul (and a Gather: shared)
    nodes = [helper.make_node("Gather", ["embed", "ids"], ["x"]), helper.make_node("MatMul", ["x", "head"], ["y"]),
             helper.make_node("Gather", ["head", "ids"], ["z"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "z")],
                              [table, head])  # fmt: skip
    onnx.save(helper.make_model(graph), tmp_path / "model.onnx")
    assert onnx_step_bytes(tmp_path) == H * 4 + H * V * 4  # one row of the table + the whole head


@pytest.mark.parametrize("tied", [True, False])
def test_module_tied_head_once_untied_embedding_one_row(tied):
    cfg = LlamaConfig(vocab_size=V, hidden_size=H, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, tie_word_embeddings=tied)  # fmt: skip
    model = LlamaForCausalLM(cfg)
    # parameters() lists a tied matrix once; the buffers (RoPE's inverse frequencies) are read too
    every = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    expected = every if tied else every - V * H * 4 + H * 4
    assert module_step_bytes(model, resident_bytes(model)) == expected


@pytest.mark.parametrize("with_output", [True, False])
def test_gguf_tensors_without_metadata_and_embedding_rows(tmp_path, with_output):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "toy.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("tokenizer.chat_template", "x" * 10_000)  # metadata: in the file, not read per step
    tensors = {"token_embd.weight": (V, H), "blk.0.ffn_up.weight": (32, H)}
    if with_output:
        tensors["output.weight"] = (V, H)
    for name, shape in tensors.items():
        writer.add_tensor(name, np.zeros(shape, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    every = sum(r * c * 4 for r, c in tensors.values())
    expected = every - V * H * 4 + H * 4 if with_output else every
    assert gguf_step_bytes(path) == expected < path.stat().st_size
