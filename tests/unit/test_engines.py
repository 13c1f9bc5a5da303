"""Every available engine computes what PyTorch eager computes, on every workload."""

import numpy as np
import pytest
import torch

from labkit import engines, hardware, precision
from labkit.engines import base

CPU_ENGINES = ["torch-eager", "torchscript", "torch-compile", "onnxruntime", "openvino"]


def need(name: str) -> None:
    ok, reason = engines.ENGINES[name].available()
    if not ok:
        pytest.skip(f"{name} is not available here: {reason}")


def workload_graph(workload: str, **shape):
    from labkit.models import smollm2

    if workload == "smollm2-135m" and not smollm2.is_prepared() and smollm2.find_gguf() is None:
        try:
            smollm2.download_gguf()
        except RuntimeError as err:  # an offline GPU box; `make test` prepares it before the tests
            pytest.skip(f"SmolLM2 is not prepared and cannot be downloaded here: {err}")
    graph = engines.graph_for(workload, **shape)
    return first_layers(graph, SMOLLM2_LAYERS) if workload == "smollm2-135m" else graph


# SmolLM2's real weights through the engines, in its first SMOLLM2_LAYERS decoder layers of 30 (embedding, those
# layers, final norm and the tied head): every layer is the same code with other weights, and exporting all 30 to
# ONNX took 72 s of a fresh machine's `make test` (the cache empty), the 2-layer graph a few seconds.
SMOLLM2_LAYERS = 2


def first_layers(graph, n: int):
    """The graph's LM cut to its first n decoder layers, sharing their weights (nothing copied)."""
    import copy

    from labkit.convert import Graph
    from labkit.engines.workloads import LogitsOnly

    lm = graph.module.lm
    cut = copy.copy(lm.model)  # a shallow copy: the same embedding, norm and layer modules
    cut._modules = dict(lm.model._modules, layers=torch.nn.ModuleList(lm.model.layers[:n]))
    cut.config = copy.deepcopy(lm.config)
    cut.config.num_hidden_layers = n
    head = copy.copy(lm)
    head._modules = dict(lm._modules, model=cut)
    head.config = cut.config
    return Graph(f"{graph.name}-{n}layers", LogitsOnly(head).eval(), graph.example, graph.input_names,
                 graph.dynamic_axes, graph.output_name)


# SmolLM2 is a LlamaForCausalLM, the class tiny-llama already runs through every engine. torch.compile's SmolLM2
# run compiles the same code at other sizes with other weights, and cost 38.8 s of a fresh machine's `make test`
# (inductor's cache empty): it is left out; the other engines still check SmolLM2's real weights.
PARITY_CASES = [(n, w) for n in CPU_ENGINES for w in engines.WORKLOADS if (n, w) != ("torch-compile", "smollm2-135m")]


# torch.compile compiles per shape (dynamic=False): its cases take the shape lab 04's smoke run compiles (batch 1,
# 32 tokens), so that after the labs' tests they hit Inductor's cache; cold, tiny-bloom's case took 21 s of a 2-core
# machine. The other engines keep batch 2: a batch of more than one.
COMPILE_SHAPE = dict(batch_size=1, seq_len=32)


@pytest.mark.parametrize(("name", "workload"), PARITY_CASES)
def test_fp32_parity_with_eager(name, workload):
    need(name)
    graph = workload_graph(workload, **(COMPILE_SHAPE if name == "torch-compile" else dict(batch_size=2, seq_len=16)))
    session = engines.get_engine(name).prepare(graph, num_threads=2)
    parity = engines.check_parity(session, graph)  # raises ParityError with the numbers
    assert parity.ok and parity.relative_diff <= precision.tolerance("fp32")
    assert session.info.engine == name and session.info.precision == "fp32" and session.info.threads == 2
    assert session.info.prepare_s > 0 and session.info.device == "cpu"  # the default device, named


@pytest.mark.parametrize("name", ["torch-eager", "openvino"])
def test_bf16_is_close_but_not_exact(name):
    need(name)
    graph = engines.graph_for("tiny-llama", batch_size=1, seq_len=16)
    parity = engines.check_parity(engines.get_engine(name).prepare(graph, precision="bf16"), graph)
    assert 0 < parity.relative_diff <= precision.tolerance("bf16")


def test_dynamic_shapes_one_session_many_shapes():
    need("onnxruntime")
    graph = engines.graph_for("tiny-bloom", batch_size=1, seq_len=8)
    session = engines.get_engine("onnxruntime").prepare(graph)
    for batch, seq in [(1, 8), (3, 20)]:
        other = engines.graph_for("tiny-bloom", batch_size=batch, seq_len=seq)
        assert session.run(*other.example).shape == (batch, seq, 4096)
        assert engines.check_parity(session, other).ok


def test_inductor_writes_its_kernels_into_the_labs_cache():
    """Compiled ops live under LABKIT_CACHE (the house rule), not in Inductor's default /tmp/torchinductor_<user>:
    labkit sets the variable on import, before a BLOOM forward (the first tests here) makes Inductor fix it."""
    import os

    from labkit.cache import cache_dir

    need("torch-compile")
    ours = str(cache_dir("inductor"))
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR", ours) != ours:
        pytest.skip(f"the caller chose Inductor's cache: {os.environ['TORCHINDUCTOR_CACHE_DIR']}")
    engines.get_engine("torch-compile").prepare(engines.graph_for("digits-cnn", **COMPILE_SHAPE), num_threads=2)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == ours
    assert any(p.is_file() for p in cache_dir("inductor").rglob("*"))


def test_openvino_compiles_for_the_example_shape_unless_asked_not_to():
    need("openvino")
    graph = engines.graph_for("tiny-bloom", batch_size=1, seq_len=8)
    other = engines.graph_for("tiny-bloom", batch_size=2, seq_len=12)
    static = engines.get_engine("openvino").prepare(graph)
    assert "static shapes" in static.info.provider
    shapes = r"compiled for input shapes \[\(1, 8\)\], got \[\(2, 12\)\].*static_shapes=False"
    with pytest.raises(ValueError, match=shapes):
        static.run(*other.example)
    dynamic = engines.get_engine("openvino").prepare(graph, static_shapes=False)
    assert "dynamic shapes" in dynamic.info.provider and engines.check_parity(dynamic, other).ok


def test_engine_table_lists_every_engine_with_a_reason():
    table = engines.engine_table()
    assert list(table.engine) == list(engines.ENGINES)
    assert table.reason.str.len().min() > 5
    trt = table.set_index("engine").loc["tensorrt"]
    if not torch.cuda.is_available():
        assert not trt.available and "GPU" in trt.reason


def test_unknown_engine_lists_all_engines_with_status():
    with pytest.raises(ValueError, match=r"unknown engine 'tvm'; engines: torch-eager \(available\).*tensorrt"):
        engines.get_engine("tvm")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error; this machine has a GPU")
def test_unavailable_engine_says_why():
    with pytest.raises(engines.EngineUnavailable, match=r"'tensorrt' is not available here \(needs an NVIDIA GPU"):
        engines.get_engine("tensorrt")
    with pytest.raises(engines.EngineUnavailable, match="needs an NVIDIA GPU"):
        engines.ENGINES["tensorrt"].prepare(engines.graph_for("digits-cnn"))
    assert issubclass(engines.EngineUnavailable, hardware.Unavailable)  # what experiments skip, and nothing else


def test_bad_precision_and_threads_are_refused():
    need("onnxruntime")
    graph = engines.graph_for("digits-cnn")
    with pytest.raises(ValueError, match=r"supports precisions \['fp32'\], not 'bf16'"):
        engines.get_engine("onnxruntime").prepare(graph, precision="bf16")
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        engines.get_engine("torch-eager").prepare(graph, num_threads=0)
    with pytest.raises(ValueError, match=r"unknown precision 'fp8'; choose from \['fp32'"):
        engines.get_engine("torch-eager").prepare(graph, precision="fp8")
    eager = engines.get_engine("torch-eager").prepare(graph, precision="bfloat16")  # an alias, at the edge
    assert eager.info.precision == "bf16"
    with pytest.raises(ValueError, match=r"unknown provider 'rocm'; choose from \['cpu', 'cuda', 'tensorrt'\]"):
        engines.get_engine("onnxruntime").prepare(graph, provider="rocm")
    with pytest.raises(ValueError, match="provider 'cuda' runs on cuda, not on cpu"):
        engines.get_engine("onnxruntime").prepare(graph, provider="cuda")  # the provider must match the device
    with pytest.raises(ValueError, match=r"unknown device 'tpu'; choose from \['auto', 'cpu'"):
        engines.get_engine("torch-eager").prepare(graph, device="tpu")
    with pytest.raises(ValueError, match="unknown workload"):
        engines.graph_for("resnet-50")


def test_parity_failure_raises_with_the_numbers():
    graph = engines.graph_for("digits-cnn")

    class Wrong(base.Session):
        info = base.SessionInfo("wrong", "fp32", None, "cpu", "-", 0.0)

        def run(self, *inputs):
            return graph.reference(inputs) + 1.0

    with pytest.raises(engines.ParityError, match=r"wrong \(fp32\) differs from torch eager by 1 \(relative"):
        engines.check_parity(Wrong(), graph)
    assert not engines.check_parity(Wrong(), graph, raise_on_fail=False).ok


def test_the_cnn_is_actually_trained():
    from labkit.models import cnn

    assert cnn.accuracy(cnn.load_digits_cnn()) > 0.95
    graph = engines.graph_for("digits-cnn", batch_size=4)
    assert graph.example[0].shape == (4, 1, 8, 8) and np.isfinite(graph.reference()).all()


@pytest.mark.gpu
@pytest.mark.parametrize("name, precision", [("torch-eager", "fp16"), ("torch-compile", "bf16")])
def test_gpu_sessions_match_cpu_eager(name, precision):
    graph = engines.graph_for("tiny-llama", batch_size=2, seq_len=16)
    session = engines.get_engine(name).prepare(graph, precision=precision, device="cuda")
    assert session.info.device.startswith("cuda")
    assert engines.check_parity(session, graph).ok


@pytest.mark.gpu
def test_tensorrt_matches_eager():
    ok, reason = engines.ENGINES["tensorrt"].available()
    if not ok:
        pytest.skip(f"TensorRT unavailable: {reason}")
    graph = engines.graph_for("digits-cnn", batch_size=4)
    assert engines.check_parity(engines.get_engine("tensorrt").prepare(graph, device="cuda"), graph).ok


@pytest.mark.gpu
def test_onnxruntime_cuda_provider():
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        providers = ort.get_available_providers()
        pytest.skip(f"this onnxruntime build has no CUDA provider ({providers}); needs onnxruntime-gpu")
    graph = engines.graph_for("tiny-bloom", batch_size=2, seq_len=16)
    session = engines.get_engine("onnxruntime").prepare(graph, device="cuda")
    assert session.info.device == "cuda:0" and session.info.provider.startswith("CUDAExecutionProvider")
    assert engines.check_parity(session, graph).ok


def test_ort_provider_follows_the_device():
    from labkit.engines.ort import execution_providers

    gpu_build = ["CUDAExecutionProvider", "CPUExecutionProvider"]  # what onnxruntime-gpu lists (no GPU needed here)
    assert execution_providers("cpu", available=["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    cuda = execution_providers(torch.device("cuda", 1), available=gpu_build)
    assert cuda == [("CUDAExecutionProvider", {"device_id": 1, "use_tf32": 0}), "CPUExecutionProvider"]
    half = execution_providers("cuda", precision="fp16", available=gpu_build)
    assert half == [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]  # TF32 is fp32's concern
    trt = execution_providers("cuda", "tensorrt", available=["TensorrtExecutionProvider", *gpu_build])
    assert trt[0][0] == "TensorrtExecutionProvider"
    with pytest.raises(ValueError, match="provider 'tensorrt' runs on cuda, not on cpu"):
        execution_providers("cpu", "tensorrt", available=gpu_build)


def test_ort_on_cuda_without_its_provider_names_the_providers_there_are():
    import onnxruntime as ort

    from labkit.engines.ort import execution_providers

    with pytest.raises(engines.EngineUnavailable, match=r"CUDAExecutionProvider is not in this onnxruntime build, "
                                                        r"which has \['CPUExecutionProvider'\].*onnxruntime-gpu"):
        execution_providers("cuda", available=["CPUExecutionProvider"])
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    ok, reason = engines.ENGINES["onnxruntime"].supports("cuda")  # asked about without a GPU: nothing is resolved
    assert not ok and "CUDAExecutionProvider is not in this onnxruntime build" in reason
    assert all(p in reason for p in ort.get_available_providers())  # the providers this build has, by name


def test_engines_say_which_devices_they_run_on():
    ok, reason = engines.ENGINES["openvino"].supports("cuda")
    assert not ok and "runs on cpu only, not on cuda" in reason
    if engines.ENGINES["tensorrt"].available()[0]:
        assert not engines.ENGINES["tensorrt"].supports("cpu")[0]  # never timed against CPU eager
    assert engines.ENGINES["torch-eager"].supports("cuda")[0] and engines.ENGINES["torch-eager"].supports("cpu")[0]
    table = engines.engine_table("cuda").set_index("engine")
    assert (table.device == "cuda").all() and not table.loc["openvino", "available"]
    assert engines.available_engines("cpu") == [n for n in engines.ENGINES if engines.ENGINES[n].supports("cpu")[0]]
    assert "tensorrt" not in engines.available_engines("cpu") and "openvino" not in engines.available_engines("cuda")
    auto = engines.engine_table("auto").set_index("engine")  # "auto" is resolved: the GPU when there is one
    installed = engines.ENGINES["openvino"].available()[0]
    assert auto.loc["openvino", "available"] == (installed and not torch.cuda.is_available())
    with pytest.raises(ValueError, match=r"unknown device 'tpu'; choose from \['auto', 'cpu'"):
        engines.ENGINES["torch-eager"].supports("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error; this machine has a GPU")
def test_a_cuda_session_on_a_cpu_machine_is_refused_before_any_work():
    graph = engines.graph_for("digits-cnn")
    with pytest.raises(hardware.Unavailable, match="no CUDA GPU"):
        engines.get_engine("torch-eager").prepare(graph, device="cuda")


def test_fp32_on_cuda_turns_cudnn_tf32_off_only_while_it_runs():
    before = torch.backends.cudnn.allow_tf32
    with base.exact_fp32(torch.device("cpu"), "fp32"):
        assert torch.backends.cudnn.allow_tf32 == before  # the CPU: nothing to change
    with base.exact_fp32(torch.device("cuda", 0), "fp16"):
        assert torch.backends.cudnn.allow_tf32 == before  # fp16 is not fp32's concern
    with base.exact_fp32(torch.device("cuda", 0), "fp32"):  # the flag is a plain setting: no GPU needed to see it
        assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cudnn.allow_tf32 == before
