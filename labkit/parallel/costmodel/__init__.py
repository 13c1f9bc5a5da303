"""A cost model of LLM generation on several GPUs: tensor parallelism (DeepSpeed-Inference), naive pipeline
parallelism (Accelerate's device map) and ZeRO-Inference (one stream per GPU), fitted on some published BLOOM-176B
cells and tested on the others.

    model        Shape / shape(), Engine, step_ms: the terms of one step, by cause
    memory       memory_gb, fits, accelerate_placement, offloaded_bytes, capacity_gb
    generation   generation_ms, ms_per_token: the published benchmark's accounting
    calibration  fit(rows) on the rows' fit cells only, calibrate(), workspace_interval()
    evaluation   evaluation(), summary(), side_by_side(): in-sample and held-out errors, OOM cells
    views        published_vs_predicted(), predict()

The published rows, with the one marking of fit and held-out cells, are `labkit.models.specs.BLOOM_ROWS`.
"""

from labkit.parallel.costmodel.calibration import (  # noqa: F401  (the package's public names)
    PROMPT,
    calibrate,
    fit,
    fit_cells,
    row_shape,
    workspace_interval,
)
from labkit.parallel.costmodel.evaluation import SETS, evaluation, predict_row, side_by_side, summary  # noqa: F401
from labkit.parallel.costmodel.generation import generation_ms, ms_per_token, streams  # noqa: F401
from labkit.parallel.costmodel.memory import (  # noqa: F401
    GATHER_COPIES,
    KV_COPIES,
    OFFLOAD_ABOVE,
    PREFETCH_BUCKET_HIDDEN2,
    RESERVED_GB,
    accelerate_placement,
    capacity_gb,
    fits,
    memory_gb,
    offloaded_bytes,
)
from labkit.parallel.costmodel.model import (  # noqa: F401
    DEEPSPEED_INT8_TRAFFIC,
    HBM_EFFICIENCY,
    HOST_GBPS,
    LINK_EFFICIENCY,
    PARTS,
    STRATEGIES,
    STRATEGY,
    ZERO_GATHER_COPY_TRAFFIC,
    ZERO_HOST_GBPS,
    Engine,
    Shape,
    shape,
    step_ms,
)
from labkit.parallel.costmodel.views import COMPARED, predict, published_vs_predicted  # noqa: F401
