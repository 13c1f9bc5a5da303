"""labkit: the small library behind Inference Lab's notebooks.

Each module is one idea (hardware, models, data, measure, plots, widgets, training, runner, cli);
notebooks call plain functions from here and plot what they return.
"""

from __future__ import annotations

__version__ = "0.1.0"


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
    for noisy in ("torchao", "bitsandbytes"):  # optional-kernel warnings that do not apply to these labs
        logging.getLogger(noisy).setLevel(logging.ERROR)
    torch.manual_seed(seed)
    renderer = plots.setup()
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "labkit": __version__, "plotly_renderer": renderer}
