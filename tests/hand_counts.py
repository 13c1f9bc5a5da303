"""Parameter counts written out by hand from a published config (labkit.models.specs.MODEL_CONFIGS): the independent
source that unit tests and lab checks compare labkit's meta-device counts and memory numbers with."""


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
