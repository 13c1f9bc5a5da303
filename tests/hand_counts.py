"""Parameter counts written out by hand from a published config (labkit.models.specs.MODEL_CONFIGS): the independent
source that unit tests and lab checks compare labkit's meta-device counts and memory numbers with; and the add-one
unigram loss recounted with collections.Counter, the baseline lab 01's training must beat."""

import math
from collections import Counter


def llama_params(c: dict) -> int:
    """Llama: untied embedding and LM head, per layer q/o (h × h), k/v (h × kv_dim), gate/up/down (h × inter) and
    two RMSNorms (h each), a final RMSNorm; no biases (Touvron et al., 2023)."""
    h, inter, heads = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"]
    kv_dim = c.get("num_key_value_heads", heads) * h // heads
    per_layer = 2 * h * h + 2 * h * kv_dim + 3 * h * inter + 2 * h
    return 2 * c["vocab_size"] * h + c["num_hidden_layers"] * per_layer + h


def bloom_params(c: dict) -> int:
    """BLOOM: a tied embedding and its LayerNorm (2h), per layer fused QKV (3h² + 3h), dense (h² + h), MLP (4h² + 4h
    and 4h² + h) and two LayerNorms (4h) = 12h² + 13h, a final LayerNorm (2h) (BigScience, 2022)."""
    h = c["hidden_size"]
    return c["vocab_size"] * h + 4 * h + c["n_layer"] * (12 * h * h + 13 * h)


def add_one_unigram_loss(tokenizer, max_chars: int | None) -> float:
    """Nats per token on the validation plays of token frequencies counted on the training plays, add-one smoothed:
    -mean log((count + 1) / (N + V)) (Laplace smoothing; Jurafsky & Martin, ch. 3), counted here with Counter."""
    from labkit import data

    train_ids = tokenizer(data.shakespeare("train", max_chars))["input_ids"]
    counts, n, v = Counter(train_ids), len(train_ids), len(tokenizer)
    val_ids = tokenizer(data.shakespeare("validation", max_chars))["input_ids"]
    return -sum(math.log((counts[t] + 1) / (n + v)) for t in val_ids) / len(val_ids)
