"""GGUF's quantized blocks (Q4_0, Q4_1, Q8_0) read as codes, scales and minimums, and laid out for ONNX Runtime's
MatMulNBits: the format half of `convert.gguf_nbits` (which carries them into a graph).

    codes, d, m, bits = gguf_rows(reader, "blk.0.attn_q.weight", heads)   # value = d·code + m, rows in HF order
    arrays = to_matmul_nbits(codes, d, m, bits)                          # B, scales, residual (or zero points)
    w = dequantize(arrays, codes.shape[1])                               # the (N, K) weights they stand for

Layouts: ggml's `block_q4_1` is a scale d and a minimum m (fp16), then 32 4-bit codes, element j in the low nibble
of byte j and element j + 16 in the high one (`ggml-common.h`); MatMulNBits packs element 2j low and 2j + 1 high,
one scale per block and an optional zero point per block (ONNX Runtime's contrib operator MatMulNBits).
"""

from __future__ import annotations

import numpy as np

from labkit.hardware import Unavailable

QK = 32  # values per ggml block (QK4_0 = QK4_1 = QK8_0)
BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}
BITS = {"Q4_0": 4, "Q4_1": 4, "Q8_0": 8}
def decode_blocks(raw: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a GGUF tensor's rows of blocks into codes, scales and minimums.

    Args:
        raw: (rows, blocks × BLOCK_BYTES[kind]) uint8, as `gguf.GGUFReader` returns a quantized tensor.
        kind: "Q4_0", "Q4_1" or "Q8_0".
    Returns:
        codes (rows, blocks × 32) uint8 in 0 .. 2^bits − 1; d and m (rows, blocks) float32, such that each value is
        d·code + m (Q4_0: m = −8d; Q8_0: codes = q + 128, m = −128d).
    Raises:
        Unavailable: another block type (naming the supported ones).
    """
    if kind not in BLOCK_BYTES:
        raise Unavailable(f"GGUF block type {kind} is not carried over; supported: {sorted(BLOCK_BYTES)}")
    rows = raw.shape[0]
    blocks = np.ascontiguousarray(raw).reshape(rows, -1, BLOCK_BYTES[kind])
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    if kind == "Q8_0":
        codes = (blocks[..., 2:].copy().view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        return codes.reshape(rows, -1), d, -128 * d
    if kind == "Q4_1":
        m, qs = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32), blocks[..., 4:]
    else:
        m, qs = -8 * d, blocks[..., 2:]
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # (rows, blocks, 32): j low nibble, j + 16 high
    return codes.reshape(rows, -1), d, m


ZERO_POINTS = ("exact", "rounded")


def to_matmul_nbits(codes: np.ndarray, d: np.ndarray, m: np.ndarray, bits: int,
                    zero_point: str = "exact") -> dict[str, np.ndarray]:  # fmt: skip
    """MatMulNBits' inputs for these blocks, and what each block adds on top of them.

    Args:
        codes: (N, K) uint8. d, m: (N, K / 32) float32 (value = d·code + m). bits: 4 or 8.
        zero_point: "exact" (the default zero point 2^(bits−1) and a residual) or "rounded" (4-bit only: an integer
            zero point per block, round(−m/d) clipped to 0..15, and no residual; see the module's docstring).
    Returns:
        {"B": (N, K/32, 32·bits/8) uint8 codes (4-bit: two per byte), "scales": (N·K/32,) float32 = d,
        "residual": (N, K/32) float32 = m + 2^(bits−1)·d, the constant each block's values exceed
        d·(code − 2^(bits−1)) by (zeros when rounded)}; rounded adds "zero_points": (N·⌈K/64⌉,) uint8, two
        4-bit zero points per byte, the first block low (MatMulNBits' layout), and "shift": (N, K/32) float32,
        what each block's values moved by.
    Raises:
        ValueError: an unknown zero_point (naming the choices), or "rounded" at 8 bits.
    """
    if zero_point not in ZERO_POINTS or (zero_point == "rounded" and bits != 4):
        raise ValueError(f"zero_point must be one of {ZERO_POINTS} (rounded: 4-bit blocks only); got "
                         f"{zero_point!r} at {bits} bits")
    n, k = codes.shape
    blocks = codes.reshape(n, k // QK, QK)
    packed = blocks if bits == 8 else (blocks[..., 0::2] | (blocks[..., 1::2] << 4)).astype(np.uint8)
    out = {"B": np.ascontiguousarray(packed), "scales": d.reshape(-1)}
    if zero_point == "exact":
        return {**out, "residual": (m + 2 ** (bits - 1) * d).astype(np.float32)}
    safe = np.where(d == 0, 1, d)
    z = np.where(d == 0, 8, np.clip(np.rint(-m / safe), 0, 15)).astype(np.uint8)  # (N, K/32)
    padded = np.pad(z, ((0, 0), (0, z.shape[1] % 2)))  # an even count of blocks per row: whole bytes
    zp = (padded[:, 0::2] | (padded[:, 1::2] << 4)).astype(np.uint8).reshape(-1)
    shift = (m + d * z).astype(np.float32)  # value − d·(code − z), per block
    return {**out, "zero_points": zp, "residual": np.zeros_like(shift), "shift": shift}


def dequantize(nbits: dict[str, np.ndarray], k: int) -> np.ndarray:
    """(N, K) float32 weights that `to_matmul_nbits`' arrays stand for: s·(q − 2^(bits−1)) + residual (a check)."""
    b = nbits["B"]
    bits = 8 if b.shape[-1] == QK else 4
    codes = b if bits == 8 else np.stack([b & 0x0F, b >> 4], axis=-1).reshape(*b.shape[:2], QK)
    n = b.shape[0]
    s, r = nbits["scales"].reshape(n, -1, 1), nbits["residual"].reshape(n, -1, 1)
    z = np.float32(2 ** (bits - 1))
    if "zero_points" in nbits:  # two 4-bit zero points per byte, first block low
        zp = nbits["zero_points"].reshape(n, -1)
        z = np.stack([zp & 0x0F, zp >> 4], axis=-1).reshape(n, -1)[:, :s.shape[1], None].astype(np.float32)
    return (s * (codes.astype(np.float32) - z) + r).reshape(n, k)


def unpermute_rows(rows: int, n_head: int) -> np.ndarray:
    """Row order that undoes llama.cpp's q/k permutation: GGUF row order[i] goes to row i.

    Args:
        rows: the tensor's rows. n_head: its heads (attn_q: the attention heads; attn_k: the key/value heads).
    Returns:
        (rows,) int64 index (transformers' `_reverse_permute_weights` applied to the row numbers).
    """
    idx = np.arange(rows)
    return idx.reshape(n_head, rows // n_head // 2, 2).swapaxes(2, 1).reshape(rows)


def gguf_rows(reader, name: str, heads: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """A GGUF tensor's (codes, d, m, bits), rows in the Hugging Face order.

    Args:
        reader: a `gguf.GGUFReader`. name: the tensor ("blk.0.attn_q.weight"). heads: {"attn_q": heads,
            "attn_k": key/value heads}.
    Raises:
        KeyError: no such tensor. Unavailable: an unsupported block type.
    """
    tensor = next((t for t in reader.tensors if t.name == name), None)
    if tensor is None:
        raise KeyError(f"GGUF tensor {name!r} not found")
    kind = tensor.tensor_type.name
    codes, d, m = decode_blocks(np.asarray(tensor.data), kind)
    part = name.split(".")[-2]
    if part in heads:
        order = unpermute_rows(codes.shape[0], heads[part])
        codes, d, m = codes[order], d[order], m[order]
    return codes, d, m, BITS[kind]
