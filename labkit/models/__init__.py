"""Models by name: the registry (tiny BLOOM / Llama, SmolLM2 from PyPI, published architectures, Hub ids), resolved
once into a ModelSpec; loading with a memory check; prompting."""

from labkit.models.loading import (  # noqa: F401  (the package's public names)
    MemoryEstimate,
    available_memory,
    check_fits,
    complete,
    encode_prompt,
    estimate_memory,
    load_cached,
    load_model,
)
from labkit.models.registry import (  # noqa: F401
    REGISTRY,
    SEED,
    ModelNotAvailable,
    ModelSpec,
    RegistryEntry,
    checkpoint_dir,
    count_params,
    get_config,
    list_models,
    load_weights,
    resolve,
    shakespeare_checkpoint_dir,
    train_default_checkpoint,
)
