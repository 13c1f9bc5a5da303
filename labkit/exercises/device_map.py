"""Implementation exercise: a device map from memory budgets, graded against Accelerate's `infer_auto_device_map`.

A learner writes `device_map_for(module_sizes, budgets)`: given the bytes of each layer in forward order and a byte
budget per device, say where each layer lives. The contract graded is Accelerate's rule for layers it must keep
whole (the decoder layers transformers lists in `_no_split_modules`; a model's top-level blocks here):

1. Devices are filled in the order of `budgets` (GPU indices ascending, then "cpu"), then "disk", which has no limit.
2. Layers are placed in order. A layer goes on the current device if the bytes already placed there plus its own are
   at most the device's budget, else the next device becomes current (for it and for every later layer: a layer
   never goes back to an earlier device, even a small one that would fit).
3. On the *main* devices, the first GPU and "cpu" ("cpu" alone when there is no GPU), the budget is first reduced by
   the largest layer still to come after the one being placed (0 for the last layer): an offloaded layer is copied
   there to run, so room for the biggest one is kept free. Other GPUs keep no such reserve.

The reference builds a real module on the meta device from the sizes (one child block per layer, each block made of
two parameters so that Accelerate could split it, listed in `no_split_module_classes` so that it keeps it whole) and
asks Accelerate with `max_memory=budgets`. The rule above is Accelerate's own docstring for `infer_auto_device_map`
("there is always room left on GPU 0 to put back the layer offloaded on CPU that has the largest size", and the same
for the CPU and disk) with the details of its code (the reserve counts the layers not yet placed; the fit test is
"≤"). It agrees with Accelerate on a transformers model too, when the map is read at the level of its decoder layers,
embedding, norm and head (tests/unit/test_exercise_device_map.py checks a tiny Llama); tied weights, layers that may
be split and buffers are left out. Source: Accelerate, `accelerate.utils.modeling.infer_auto_device_map`.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict

import torch

from labkit.exercises import Case, Grade, grade_cases

JUDGE = "Accelerate's infer_auto_device_map"


class _Half(torch.nn.Module):
    def __init__(self, nbytes: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(nbytes, dtype=torch.uint8, device="meta"), requires_grad=False)


class Block(torch.nn.Module):
    """A layer of `nbytes` bytes on the meta device, in two parts (so it could be split; the reference forbids it)."""

    def __init__(self, nbytes: int):
        super().__init__()
        self.first, self.second = _Half(nbytes // 2), _Half(nbytes - nbytes // 2)


@contextlib.contextmanager
def _quiet_accelerate():
    # a GPU index in max_memory on a machine without that GPU is a planning question here, not a mistake
    log = logging.getLogger("accelerate.utils.modeling")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def reference(module_sizes: dict[str, int], budgets: dict[int | str, int]) -> dict[str, int | str]:
    """Accelerate's device map for layers of these sizes, each kept whole.

    Args:
        module_sizes: layer name (no dots) -> bytes, in forward order. budgets: device -> bytes, Accelerate's
            `max_memory` (GPU indices and/or "cpu").
    Returns:
        layer name -> device (a GPU index, "cpu" or "disk"), in forward order.
    """
    from accelerate import infer_auto_device_map

    model = torch.nn.Sequential(OrderedDict((name, Block(n)) for name, n in module_sizes.items()))
    with _quiet_accelerate():
        placed = infer_auto_device_map(model, max_memory=dict(budgets), no_split_module_classes=[Block.__name__],
                                       clean_result=False)  # fmt: skip
    return dict(placed)


def cases() -> list[Case]:
    """The grader's inputs: (module_sizes, budgets), each with what it tests."""
    model = {"embed": 400, **{f"layer{i}": 250 for i in range(6)}, "norm": 1, "head": 400}  # 2301 bytes
    big_middle = {"a": 100, "big": 900, "c": 100, "d": 100}
    return [
        Case("everything fits on GPU 0", (model, {0: 3000, "cpu": 3000})),
        Case("GPU 0 keeps room for the largest layer still to come, then the rest goes to the CPU",
             (model, {0: 1200, "cpu": 5000})),
        Case("GPU, then CPU RAM (which keeps the same reserve), then disk; the small norm never goes back",
             (model, {0: 1000, "cpu": 1000})),
        Case("CPU only: the CPU keeps the reserve, the rest goes to disk", (model, {"cpu": 1500})),
        Case("a budget of exactly the model's bytes holds it all: a device fills to the byte (≤) and the last layer "
             "reserves nothing", (model, {0: 2301})),
        Case("a second GPU keeps no reserve (only the first GPU and the CPU do)",
             (model, {0: 1000, 1: 1000, "cpu": 1000})),
        Case("the reserve is the largest layer still to come, not the largest of all (once 'big' is placed, 100)",
             (big_middle, {0: 1200, "cpu": 1000})),
        Case("a zero budget skips its device", (model, {0: 0, 1: 2000, "cpu": 2000})),
    ]  # fmt: skip


def _compare(got, want, case: Case) -> str | None:
    sizes, _ = case.args
    if not isinstance(got, dict):
        return f"returned {type(got).__name__}, expected a dict layer name -> device"
    if set(got) != set(want):
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        return f"the map's layers differ: missing {missing}, unexpected {extra}"
    for name in want:
        if got[name] != want[name] or type(got[name]) is not type(want[name]):
            hint = ""
            if isinstance(got[name], str) and got[name] not in ("cpu", "disk"):
                hint = " (a GPU is named by its index, an int, as in max_memory)"
            yours = [got[n] for n in want]
            return (f"{name} ({sizes[name]} B) is on {got[name]!r}, Accelerate puts it on {want[name]!r}{hint}; "
                    f"layers in order: yours {yours}, Accelerate's {list(want.values())}")  # fmt: skip
    return None


def grade(device_map_for) -> Grade:
    """Run a learner's device-map function on `cases()` and compare each map with `reference`.

    Args:
        device_map_for: (module_sizes: {layer: bytes} in order, budgets: {device: bytes}) -> {layer: device}, a
            device being a GPU index, "cpu" or "disk".
    Returns:
        Grade: ok only if every case places every layer where Accelerate does; otherwise the first failing case and
        the first layer placed elsewhere. An exception inside the learner's code is reported, not raised.
    """
    return grade_cases(device_map_for, cases(), reference, _compare, JUDGE)
