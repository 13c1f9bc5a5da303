"""Importing labkit (what the CLI and the scripts do) prints none of the optional kernels' load failures or torch's
deprecation notices about them: a learner's first output is the lab's, not noise."""

import subprocess
import sys

NOISE = ("Failed to load", "register_constant", "Could not load this library")


def test_importing_labkit_and_its_model_stack_is_quiet():
    code = "import labkit.serving.paged.runner, labkit.quant, labkit.generation; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip() == "ok"
    noisy = [line for line in done.stderr.splitlines() if any(n in line for n in NOISE)]
    assert not noisy, noisy
