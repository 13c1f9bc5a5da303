"""The device-map exercise's answer: Accelerate's rule for layers kept whole (`infer_auto_device_map`): fill the
devices in order, never go back, and keep room on the first GPU and the CPU for the largest layer still to come."""

from __future__ import annotations


def device_map_for(module_sizes: dict[str, int], budgets: dict[int | str, int]) -> dict[str, int | str]:
    """Place each layer, in order, on the first device in turn that still has room for it.

    Args:
        module_sizes: layer name -> bytes, in forward order. budgets: device -> bytes, in the order the devices
            are filled (GPU indices ascending, then "cpu"); "disk" comes last, without a limit.
    Returns:
        layer name -> device (a GPU index, "cpu" or "disk"), in forward order.
    """
    devices = [d for d in budgets if d != "disk"] + ["disk"]
    gpus = [d for d in devices if isinstance(d, int)]
    main = {gpus[0], "cpu"} if gpus else {"cpu"}  # where an offloaded layer is brought back to run
    names = list(module_sizes)
    placed, current, used = {}, 0, 0  # used: bytes already on devices[current]
    for i, name in enumerate(names):
        size = module_sizes[name]
        reserve = max((module_sizes[n] for n in names[i + 1:]), default=0)  # the largest layer still to come
        while devices[current] != "disk":
            device = devices[current]
            if used + size <= budgets[device] - (reserve if device in main else 0):
                break
            current, used = current + 1, 0  # this device is done: later layers never come back to it
        placed[name] = devices[current]
        used += size
    return placed
