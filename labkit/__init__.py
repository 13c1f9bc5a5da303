"""labkit: the library behind Inference Lab's notebooks, organised by concept.

Foundations (hardware, precision, memory, cache, measure, plots, widgets), then data/ and models/, decoding/ and
training, convert/ and engines/, quant, offload and anatomy, generation/, parallel/ and serving/; on top,
experiments/ (what the labs call: plain arguments in, a table and a figure out) and notebook/ (papermill runs and
reports). The layers are import contracts in pyproject.toml, checked by `lint-imports`.
"""

from __future__ import annotations

import logging as _logging

__version__ = "0.1.0"

# Import noise that says nothing to a learner, silenced before any of it is imported (notebooks, CLI, scripts):
# torchao's optional CUDA/MXFP8 kernels that this machine cannot load, and torch's notice that torchao registers
# enums the old way.
QUIET_LOGGERS = ("torchao", "torch.utils._pytree", "bitsandbytes")
for _name in QUIET_LOGGERS:
    _logging.getLogger(_name).setLevel(_logging.ERROR)
# DeepSpeed announces which accelerator it picked (and, without a GPU, that it found none) on every import; it sets
# its logger's level itself, so a filter, attached before it exists, drops those two lines and nothing else.
_DEEPSPEED_NOISE = ("Setting accelerator to CPU", "Setting ds_accelerator to")
_logging.getLogger("DeepSpeed").addFilter(lambda record: not str(record.msg).startswith(_DEEPSPEED_NOISE))

from labkit.cache import keep_compiled_kernels as _keep_compiled_kernels  # noqa: E402

_keep_compiled_kernels()  # torch.compile's kernels in LABKIT_CACHE/inductor, before anything reads the variable


def setup(seed: int = 0) -> dict:
    """What a lab's first cell calls: plot renderer, quiet logs, fixed seed; returns the versions."""
    import logging
    import os
    import platform

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    from labkit import plots

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # weight-loading bars add noise, not insight
    logging.getLogger("labkit").setLevel(logging.INFO)
    for noisy in QUIET_LOGGERS:  # again: a notebook may have reconfigured logging since the import
        logging.getLogger(noisy).setLevel(logging.ERROR)
    torch.manual_seed(seed)
    renderer = plots.setup()
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "labkit": __version__, "plotly_renderer": renderer}
