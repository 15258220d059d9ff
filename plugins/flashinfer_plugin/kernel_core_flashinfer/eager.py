"""The compiled check of the eager hot path (``csrc/eager_call.cpp``), built on first use.

``eager_call(layer, x, bias, plan_attribute)`` returns the runner of the layer's plan
(``layer.__dict__[plan_attribute]``, layout: ``kernels._PLAN``) applied to ``x`` when the call is
the serving case the plan was made for, else None (the kernel then takes its checked Python path).
It exists for speed alone: the same checks in Python cost 1.3-1.4 us of host time per call on the
CPU machine, and on the H100 the plugin measured 2.4-2.9 us above calling FlashInfer by hand with
them (``benchmarks/results/flashinfer-h100-2026-11-27-final.json``).

Building needs a host C++ compiler (FlashInfer's own JIT needs one too). Without it the plugin
still works, every call through the checked Python path, and says so once in a warning.
"""

from __future__ import annotations

import functools
import logging
import subprocess
from collections.abc import Callable
from pathlib import Path

from kernel_core.jit import load_extension

__all__ = ["checked_path_only", "eager_call"]

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "csrc" / "eager_call.cpp"


def checked_path_only(layer: object, x: object, bias: object, plan_attribute: str) -> None:
    """Stands in for the compiled check when it could not be built: every call is 'not the
    serving case', so the kernel's checked Python path runs it."""
    return None


@functools.cache
def eager_call() -> Callable[[tuple, object, object, object], object]:
    """The compiled ``eager_call``, built (cached on disk) or loaded once per process."""
    try:
        module = load_extension(
            "kernel_core_flashinfer_eager", [SOURCE], arch=None, extra_cflags=("-O3",)
        )
    except (OSError, RuntimeError, ImportError, subprocess.CalledProcessError) as error:
        logger.warning(
            "kernel-core-flashinfer: could not build the eager fast path (%s); every "
            "apply_weights call takes the checked Python path (more host time per call)", error
        )
        return checked_path_only
    return module.eager_call
