"""Models by name: the registry (tiny BLOOM / Llama, SmolLM2 from PyPI, Hub ids), their configs and memory."""

from labkit.models.registry import (  # noqa: F401  (the package's public names)
    DTYPES,
    REGISTRY,
    SEED,
    MemoryEstimate,
    ModelNotAvailable,
    ModelSpec,
    available_memory,
    check_fits,
    complete,
    encode_prompt,
    estimate_memory,
    get_config,
    list_models,
    load_cached,
    load_model,
    shakespeare_checkpoint_dir,
)
