"""Importing labkit (what the CLI and the scripts do) prints none of the optional kernels' load failures, torch's
deprecation notices about them, or DeepSpeed's accelerator announcement: a learner's first output is the lab's."""

import importlib.util
import subprocess
import sys

NOISE = ("Failed to load", "register_constant", "Could not load this library", "Setting accelerator to",
         "Setting ds_accelerator")


def test_importing_labkit_and_its_model_stack_is_quiet():
    code = "import labkit.serving.paged.runner, labkit.quant, labkit.generation; print('ok')"
    if importlib.util.find_spec("deepspeed"):  # the parallel extra: it announces its accelerator on stdout
        code = code.replace("; print", "; import deepspeed; print")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip().splitlines()[-1] == "ok"
    noisy = [line for line in (done.stdout + done.stderr).splitlines() if any(n in line for n in NOISE)]
    assert not noisy, noisy
