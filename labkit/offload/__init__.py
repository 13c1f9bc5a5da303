"""Big-model inference with HF Accelerate: device maps, offload to CPU / disk, and the bytes behind them.

The recipe Accelerate uses for a model larger than the fast device:

1. build the model on the meta device (`init_empty_weights`: no memory used) and tie its weights;
2. `infer_auto_device_map(max_memory=...)` fills devices in order — GPU, then CPU, then "disk";
3. `load_checkpoint_and_dispatch` loads what fits and writes the rest to an offload folder;
   hooks on each offloaded module copy its weights in just before its forward and drop them after.

What moves per token depends on the compute device (Accelerate's `dispatch_model`): on a GPU every block placed
on "cpu" or "disk" is copied host→device in each forward; on a CPU-only machine the CPU is the compute device, so
"cpu" blocks are where it computes from (0 bytes moved) and only "disk" blocks are read back from the offload folder.

Every function takes a model name or, better, a `models.ModelSpec` resolved once by the caller, and a `device`
("auto": the GPU when there is one, else the CPU; `hardware.resolve_device`).
"""

from labkit.offload.link import host_to_device_gbps, offload_seconds_per_token
from labkit.offload.placement import (
    budget,
    bytes_moved_per_forward,
    compute_device,
    device_map,
    empty_model,
    execution_device,
    fast_device,
    load_offloaded,
    max_memory_for,
    module_bytes,
    offloaded_tiers,
    placement_figure,
    placement_name,
    placement_table,
    tier,
)

__all__ = ["budget", "bytes_moved_per_forward", "compute_device", "device_map", "empty_model", "execution_device",
           "fast_device", "host_to_device_gbps", "load_offloaded", "max_memory_for", "module_bytes",
           "offload_seconds_per_token", "offloaded_tiers", "placement_figure", "placement_name", "placement_table",
           "tier"]
