"""Converters from real checkpoint conventions into the layer parameter contract.

One module per convention: :mod:`~kernel_core.converters.compressed_tensors`,
:mod:`~kernel_core.converters.modelopt`, :mod:`~kernel_core.converters.gptq` and
:mod:`~kernel_core.converters.awq`. Each takes one layer's tensors as the checkpoint stores them
(local names, module prefix stripped) plus the fields of the checkpoint's quantization config, and
returns ``(config, params)``: the family config and the parameters the family's
``parameter_specs`` describe, already validated against them. :func:`load_into_layer` puts the
parameters on a layer. See ``docs/converters.md``.
"""

from __future__ import annotations

from kernel_core.converters import awq, compressed_tensors, gptq, modelopt
from kernel_core.converters._tensors import Converted, load_into_layer

__all__ = ["Converted", "awq", "compressed_tensors", "gptq", "load_into_layer", "modelopt"]
