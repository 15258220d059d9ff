"""The oracle's GEMM as ``torch.library`` custom ops, one per family.

``kernel_core_emulation::<family>_apply(x, params, bias, layout)``: dequantize the weight with the
core's formats, quantize-dequantize the activations as the config's mode prescribes, multiply in
fp32, add the bias in fp32 and cast to the config's output dtype. A custom op keeps the format code
opaque to ``torch.compile`` (the fake implementation gives it the output's shape and dtype), so a
model using the oracle compiles with ``fullgraph=True``.

Custom-op schemas take tensors and plain values, not config objects, so a kernel interns its config
under a string ``layout`` key (:func:`intern_layout`) and passes the key; ``params`` are the layer's
contract tensors in the order of the family's ``parameter_specs``.

This module deliberately has no ``from __future__ import annotations``: ``torch.library`` infers
the op schema from real annotation objects.
"""

import functools

import torch

from kernel_core.config import LayerConfig
from kernel_core.families import FAMILIES
from kernel_core.formats.layer import dequantize_weight
from kernel_core_emulation.activations import quantize_dequantize_activations

__all__ = ["APPLY_OPS", "intern_layout", "layout_of", "parameter_names"]

NAMESPACE = "kernel_core_emulation"
_layouts: dict[str, LayerConfig] = {}


def intern_layout(config: LayerConfig) -> str:
    """The key the ops use to find ``config`` again (its repr: deterministic and complete)."""
    key = repr(config)
    _layouts.setdefault(key, config)
    return key


def layout_of(key: str) -> LayerConfig:
    try:
        return _layouts[key]
    except KeyError:
        raise ValueError(
            f"{NAMESPACE}: unknown layout {key!r}; expected a key from intern_layout() "
            "(construct the emulation kernel in this process first)"
        ) from None


@functools.cache
def parameter_names(config: LayerConfig) -> tuple[str, ...]:
    """The contract tensors the oracle reads, in ``parameter_specs`` order."""
    return tuple(spec.name for spec in FAMILIES[config.family].parameter_specs(config))


def _reference_linear(
    x: torch.Tensor, params: list[torch.Tensor], bias: torch.Tensor | None, layout: str
) -> torch.Tensor:
    config = layout_of(layout)
    by_name = dict(zip(parameter_names(config), params, strict=True))
    n, k = config.weight_shape
    weight = dequantize_weight(config, by_name, dtype=torch.float32)
    rows = x.reshape(-1, k).to(torch.float32)
    if rows.shape[0]:  # no tokens: nothing to quantize (a per-tensor amax of nothing is undefined)
        rows = quantize_dequantize_activations(config, rows, by_name)
    out = rows @ weight.t()
    if bias is not None:
        out = out + bias.to(torch.float32)
    return out.to(config.out_dtype).reshape(*x.shape[:-1], n)


def _fake_linear(
    x: torch.Tensor, params: list[torch.Tensor], bias: torch.Tensor | None, layout: str
) -> torch.Tensor:
    config = layout_of(layout)
    return x.new_empty((*x.shape[:-1], config.out_features), dtype=config.out_dtype)


def _define_apply_op(family: str) -> torch.library.CustomOpDef:
    def apply(
        x: torch.Tensor, params: list[torch.Tensor], bias: torch.Tensor | None, layout: str
    ) -> torch.Tensor:
        return _reference_linear(x, params, bias, layout)

    op = torch.library.custom_op(f"{NAMESPACE}::{family}_apply", apply, mutates_args=())
    op.register_fake(_fake_linear)
    return op


#: ``APPLY_OPS[family]`` is ``torch.ops.kernel_core_emulation.<family>_apply``.
APPLY_OPS: dict[str, torch.library.CustomOpDef] = {
    family: _define_apply_op(family) for family in FAMILIES
}
