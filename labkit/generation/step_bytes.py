"""Bytes one decode step reads: the denominator of the bandwidth-bound roofline.

    onnx_step_bytes(folder)       # an ONNX Runtime GenAI folder
    module_step_bytes(model, b)   # a PyTorch model holding b resident bytes
    gguf_step_bytes(path)         # a GGUF file (llama.cpp)

At batch 1 a step reads every weight once, except a lookup table: the embedding gives each sequence one row, so an
embedding stored apart from the LM head costs a row, not its V × H values. A tied head (the embedding's matrix
multiplied at the end) is read once, as the head. Counting the whole table instead inflates the bytes, hence the
bound's denominator, and a fast path would show more than 100 % of the bound (the int8 ONNX build keeps a 113 MB
fp32 embedding that a step reads one row of). Files' metadata (graph, tokenizer) is not read per step either.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

LOOKUPS = {"Gather", "GatherBlockQuantized"}  # ONNX ops that read rows of a table, not the whole table


def _onnx_size(t) -> int:
    for e in t.external_data:
        if e.key == "length":
            return int(e.value)
    return len(t.raw_data)


def onnx_step_bytes(folder: Path | str) -> int:
    """Initializer bytes of `folder`/model.onnx one decode step reads (weights stored outside the graph included).

    Args:
        folder: an ONNX Runtime GenAI folder (model.onnx and its external data).
    Returns:
        bytes: every initializer, except one used only by lookup ops (`LOOKUPS`), which counts one row
        (its bytes / its first dimension).
    """
    import onnx

    model = onnx.load(str(Path(folder) / "model.onnx"), load_external_data=False)
    users = defaultdict(set)
    for node in model.graph.node:
        for name in node.input:
            users[name].add(node.op_type)
    total = 0
    for t in model.graph.initializer:
        size = _onnx_size(t)
        lookup_only = users[t.name] and users[t.name] <= LOOKUPS and len(t.dims) >= 2
        total += size // t.dims[0] if lookup_only else size
    return total


def module_step_bytes(model, resident: int) -> int:
    """Bytes a PyTorch causal LM reads per decode step, from the bytes it holds.

    Args:
        model: a transformers causal LM (get_input_embeddings / get_output_embeddings).
        resident: the bytes its weights occupy (e.g. `labkit.memory.resident_bytes`; counts a tied matrix once).
    Returns:
        resident, less the embedding table but one row when the head does not read the same storage.
    """
    import torch

    emb = getattr(model.get_input_embeddings(), "weight", None)
    head = getattr(model.get_output_embeddings(), "weight", None)  # a method on torch.ao's quantized Linear
    if not isinstance(emb, torch.Tensor) or emb.dim() != 2:
        return resident  # a quantized table: no plain rows to count
    if isinstance(head, torch.Tensor) and head.data_ptr() == emb.data_ptr():
        return resident  # tied: the table is read once per step, as the head
    table = emb.numel() * emb.element_size()
    return resident - table + table // emb.shape[0]


def gguf_step_bytes(path: Path | str) -> int:
    """Tensor bytes of a GGUF file one decode step reads (not the metadata: vocabulary, chat template).

    Args:
        path: the .gguf file.
    Returns:
        the sum of its tensors' bytes; with a separate `output.weight`, `token_embd.weight` counts one row (llama.cpp
        looks up rows); without one the head is the embedding and it counts once, whole.
    """
    import gguf

    tensors = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    total = 0
    for name, t in tensors.items():
        size = int(t.n_bytes)
        rows = int(t.shape[-1]) if len(t.shape) > 1 else 1  # GGUF lists dimensions innermost first
        total += size // rows if name == "token_embd.weight" and "output.weight" in tensors else size
    return total
