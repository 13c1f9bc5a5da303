"""The device-map exercise: its grader passes the reference answer, fails the usual mistakes with the failing case
and layer named, and never raises; the reference answer agrees with Accelerate on random sizes and budgets and on a
real transformers model (a tiny Llama on the meta device), read at the level of its whole layers."""

import random
import warnings

from labkit.exercises import device_map
from labkit.exercises.solutions import device_map as solutions


def test_the_solution_passes_and_agrees_with_accelerate_on_random_layers_and_budgets():
    assert device_map.grade(solutions.device_map_for).ok
    rng = random.Random(0)
    for _ in range(300):
        sizes = {f"layer{i}": rng.randint(1, 100) for i in range(rng.randint(1, 8))}
        devices = rng.choice([[0], ["cpu"], [0, "cpu"], [0, 1], [0, 1, "cpu"], [0, 1, 2, "cpu"]])
        budgets = {d: rng.randint(0, 300) for d in devices}
        assert solutions.device_map_for(sizes, budgets) == device_map.reference(sizes, budgets), (sizes, budgets)


def test_the_solution_agrees_with_accelerate_on_a_tiny_llama_at_the_level_of_its_layers():
    from accelerate import infer_auto_device_map
    from accelerate.utils import compute_module_sizes

    from labkit import offload

    empty = offload.empty_model("tiny-llama")  # transformers' LlamaForCausalLM on the meta device
    assert not empty.config.tie_word_embeddings  # tied weights are outside the exercise's contract
    every = compute_module_sizes(empty)
    layers = ["model.embed_tokens", *(f"model.layers.{i}" for i in range(empty.config.num_hidden_layers)),
              "model.norm", "lm_head"]  # fmt: skip
    sizes = {name: every[name] for name in layers}
    total = sum(sizes.values())
    rng = random.Random(1)
    for _ in range(40):
        devices = rng.choice([[0], ["cpu"], [0, "cpu"], [0, 1, "cpu"]])
        budgets = {d: rng.randint(0, total) for d in devices}
        with warnings.catch_warnings(), device_map._quiet_accelerate():
            warnings.simplefilter("ignore")  # its note about the rotary embedding's buffers on offloaded devices
            placed = infer_auto_device_map(empty, max_memory=dict(budgets), clean_result=False,
                                           no_split_module_classes=empty._no_split_modules)  # fmt: skip
        # each whole layer is on the device of the entry that holds it (Accelerate may keep "model" as one entry)
        accelerate_map = {n: next(d for k, d in placed.items() if n == k or n.startswith(k + ".")) for n in layers}
        assert solutions.device_map_for(sizes, budgets) == accelerate_map, budgets


def _variant(reserve: str = "later", main_only: bool = True, back: bool = False, strict: bool = False, gpu_name=None):
    """The reference rule with one usual mistake switched on."""

    def device_map_for(sizes, budgets):
        devices = [*budgets, "disk"]
        gpus = [d for d in devices if isinstance(d, int)]
        main = {gpus[0], "cpu"} if gpus else {"cpu"}
        names, placed, used = list(sizes), {}, dict.fromkeys(devices, 0)
        current = 0
        for i, name in enumerate(names):
            later = max((sizes[n] for n in names[i + 1:]), default=0)
            keep = {"later": later, "all": max(sizes.values()), "none": 0}[reserve]
            start = 0 if back else current
            for j in range(start, len(devices)):
                d = devices[j]
                room = float("inf") if d == "disk" else budgets[d] - (keep if d in main or not main_only else 0)
                if (used[d] + sizes[name] < room) if strict else (used[d] + sizes[name] <= room):
                    current = max(current, j)
                    break
            placed[name] = gpu_name(d) if gpu_name and isinstance(d, int) else d
            used[d] += sizes[name]
        return placed

    return device_map_for


def test_wrong_answers_are_graded_wrong_with_the_layer_named():
    assert device_map.grade(_variant()).ok  # the harness itself, without a mistake, is right
    stub = device_map.grade(lambda sizes, budgets: dict.fromkeys(sizes, "disk"))
    assert not stub.ok and stub.cases == 1 and "embed (400 B) is on 'disk', Accelerate puts it on 0" in stub.message
    no_reserve = device_map.grade(_variant(reserve="none"))
    assert not no_reserve.ok and no_reserve.cases == 2 and "layer1 (250 B) is on 0" in no_reserve.message
    first_fit = device_map.grade(_variant(back=True))  # a small layer goes back to a device with room
    assert not first_fit.ok and first_fit.cases == 2 and "norm (1 B) is on 0" in first_fit.message
    strict = device_map.grade(_variant(strict=True))
    assert not strict.ok and strict.cases == 5
    every_gpu = device_map.grade(_variant(main_only=False))
    assert not every_gpu.ok and every_gpu.cases == 6
    largest_of_all = device_map.grade(_variant(reserve="all"))
    assert not largest_of_all.ok and largest_of_all.cases == 5 and "head (400 B) is on 'disk'" in largest_of_all.message
    named = device_map.grade(_variant(gpu_name=lambda i: f"cuda:{i}"))
    assert not named.ok and "a GPU is named by its index" in named.message


def test_an_exception_in_the_learners_code_is_reported_not_raised():
    grade = device_map.grade(lambda sizes, budgets: {n: list(budgets)[2] for n in sizes})  # case 1 has 2 devices
    assert not grade.ok and grade.cases == 1 and "raised IndexError" in grade.message and str(grade).startswith("✗ ")
