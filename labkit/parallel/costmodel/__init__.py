"""A cost model of LLM generation on several GPUs: tensor parallelism (DeepSpeed-Inference style) vs naive pipeline
parallelism (Accelerate's `device_map="auto"`), calibrated on the published BLOOM-176B rows.

    model        Shape / shape(), Engine, step_ms, memory_gb, offloaded_bytes, fits, ms_per_token
    calibration  calibrate(), workspace_interval(), fit_table(), fit_residual_pct()
    views        published_vs_predicted(), predict()

GPU datasheets (`specs.GPU`, `specs.GPUS`, `specs.A100_80GB`) and the published rows live in `labkit.models.specs`.
"""

from labkit.parallel.costmodel.calibration import (  # noqa: F401  (the package's public names)
    calibrate,
    fit_residual_pct,
    fit_table,
    workspace_interval,
)
from labkit.parallel.costmodel.model import (  # noqa: F401
    ACCELERATE_BALANCE,
    HBM_EFFICIENCY,
    HOST_GBPS,
    LINK_EFFICIENCY,
    OFFLOAD_ABOVE,
    RESERVED_GB,
    STRATEGY,
    Engine,
    Shape,
    fits,
    memory_gb,
    ms_per_token,
    offloaded_bytes,
    shape,
    step_ms,
)
from labkit.parallel.costmodel.views import predict, published_vs_predicted  # noqa: F401
