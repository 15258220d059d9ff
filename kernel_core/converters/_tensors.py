"""Reading one layer's checkpoint tensors, and handing the result to the layer contract.

Every converter reads tensors by their checkpoint name and checks them against what its
convention stores; every mismatch is a ``ValueError`` that names the tensor, the convention, what
was expected and what was found. The result is checked once more against the family's
``parameter_specs`` so a converter can never hand an engine parameters a kernel would refuse.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch

from kernel_core.config import LayerConfig
from kernel_core.families import FAMILIES
from kernel_core.params import ParamSpec, replace_parameter, validate_layer_params

__all__ = [
    "CheckpointTensors",
    "act_order_or_none",
    "Converted",
    "finish",
    "load_into_layer",
    "reduce_partition_scalars",
    "w8a8_weight_scale",
]

logger = logging.getLogger(__name__)

#: ``(config, params)``: a family config and the parameters of the layer contract by name.
Converted = tuple[LayerConfig, dict[str, torch.Tensor]]

FLOAT_SCALE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


class CheckpointTensors:
    """One layer's tensors as a checkpoint stores them, read with checks.

    ``tensors`` maps the layer-local names (``weight_packed``, ``qweight``, ...) to tensors; a
    module prefix (``model.layers.0.mlp.down_proj.``) must already be stripped. ``convention``
    names the checkpoint convention in messages.
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor], convention: str) -> None:
        if not isinstance(tensors, Mapping):
            raise ValueError(
                f"{convention}: expected a mapping of tensor name -> tensor, found "
                f"{type(tensors).__name__}"
            )
        self.tensors = tensors
        self.convention = convention

    def has(self, name: str) -> bool:
        return self.tensors.get(name) is not None

    def take(
        self,
        name: str,
        dtypes: tuple[torch.dtype, ...],
        shapes: Sequence[tuple[int, ...]] | None = None,
        meaning: str = "",
    ) -> torch.Tensor:
        """The tensor ``name``; a ValueError if it is missing or its dtype or shape differ.

        ``shapes`` lists the accepted shapes; ``None`` accepts any shape (the caller derives
        dimensions from it and checks them itself).
        """
        tensor = self.tensors.get(name)
        spec = ParamSpec(name, dtypes, tuple(tuple(s) for s in shapes or ()), meaning)
        if tensor is None:
            shape_text = f" and shape {spec.shape_text()}" if shapes else ""
            present = ", ".join(sorted(self.tensors)) or "none"
            raise ValueError(
                f"{self.convention}.{name}: missing; expected a tensor of dtype "
                f"{spec.dtype_text()}{shape_text} ({meaning}); tensors present: {present}"
            )
        if shapes is None:
            spec = ParamSpec(name, dtypes, (tuple(tensor.shape),), meaning)
        return spec.check(tensor, self.convention)

    def take_2d(self, name: str, dtypes: tuple[torch.dtype, ...], meaning: str) -> torch.Tensor:
        """A tensor that must be 2-D, of any size (its dimensions define the layer's shape)."""
        tensor = self.take(name, dtypes, None, meaning)
        if tensor.dim() != 2:
            raise ValueError(
                f"{self.convention}.{name}: expected a 2-D tensor ({meaning}), found shape "
                f"{list(tensor.shape)}"
            )
        return tensor

    def take_scalars(
        self, name: str, dtypes: tuple[torch.dtype, ...], meaning: str
    ) -> torch.Tensor:
        """A per-tensor scale: ``[]``, ``[1]`` or ``[P]``, one per fused partition. Returned 1-D."""
        tensor = self.take(name, dtypes, None, meaning)
        if tensor.dim() > 1 or tensor.numel() == 0:
            raise ValueError(
                f"{self.convention}.{name}: expected a scalar, [1], or [P] with one value per "
                f"fused partition ({meaning}), found shape {list(tensor.shape)}"
            )
        return tensor.reshape(-1)

    def forbid(self, name: str, why: str) -> None:
        """A tensor that must not be there (its presence means another convention or config)."""
        if self.has(name):
            raise ValueError(
                f"{self.convention}.{name}: expected no such tensor ({why}), found one"
            )


def reduce_partition_scalars(scales: torch.Tensor, name: str) -> torch.Tensor:
    """One float32 scalar (0-d) from ``[P]`` per-partition values: the max, as vLLM does.

    Partitions whose values differ lose accuracy under one shared scale; that is logged, because a
    fused layer with one global scale cannot represent them exactly.
    """
    values = scales.to(torch.float32)
    if values.numel() > 1 and not bool((values == values[0]).all()):
        logger.warning(
            "%s: fused partitions have different values %s; using the max, as vLLM does",
            name, values.tolist(),
        )
    return values.max().reshape(())


def finish(config: LayerConfig, params: dict[str, torch.Tensor], owner: str) -> Converted:
    """Check ``params`` against the family contract of ``config`` and return ``(config, params)``.

    A failure here is a converter bug or a checkpoint this converter misread; it names the
    parameter like any contract violation.
    """
    specs = FAMILIES[config.family].parameter_specs(config)
    holder = torch.nn.Module()
    for name, tensor in params.items():
        holder.register_buffer(name, tensor, persistent=False)
    validate_layer_params(holder, specs, owner=owner)
    expected = {spec.name for spec in specs}
    extra = sorted(set(params) - expected)
    if extra:
        raise ValueError(
            f"{owner}: produced parameters {extra} that the {config.family} contract does not "
            f"have; expected only {sorted(expected)}"
        )
    return config, params


def load_into_layer(layer: torch.nn.Module, params: Mapping[str, torch.Tensor]) -> None:
    """Put converted parameters on ``layer`` (keeping existing Parameter objects where possible)."""
    for name, tensor in params.items():
        replace_parameter(layer, name, tensor)


def w8a8_weight_scale(
    reader: CheckpointTensors,
    n: int,
    strategy: str,
    partition_sizes: Sequence[int] | None,
) -> tuple[str, torch.Tensor]:
    """(granularity, float32 scale) of a W8A8 weight scale.

    Per-tensor scales of a fused layer (one per partition, ``[P]``) become an exact per-channel
    scale when ``partition_sizes`` says which rows each partition owns.
    """
    if strategy == "channel":
        scale = reader.take(
            "weight_scale", FLOAT_SCALE_DTYPES, ((n, 1), (n,)), "scale per output channel"
        )
        return "channel", scale.to(torch.float32).reshape(n, 1)
    if strategy != "tensor":
        raise ValueError(
            f"{reader.convention}: weight scale strategy={strategy!r} is not supported here; "
            "expected 'tensor' or 'channel'"
        )
    scale = reader.take_scalars("weight_scale", FLOAT_SCALE_DTYPES, "per-tensor scale")
    if scale.numel() == 1:
        return "tensor", scale.to(torch.float32).reshape(())
    sizes = list(partition_sizes or ())
    if len(sizes) != scale.numel() or sum(sizes) != n:
        raise ValueError(
            f"{reader.convention}.weight_scale: found {scale.numel()} per-partition scales; "
            f"expected partition_sizes with {scale.numel()} entries summing to N={n}, found "
            f"{partition_sizes!r}"
        )
    rows = torch.tensor(sizes, device=scale.device)
    return "channel", scale.to(torch.float32).repeat_interleave(rows).reshape(n, 1)


def act_order_or_none(
    g_idx: torch.Tensor, group_size: int, groups: int, where: str
) -> torch.Tensor | None:
    """A checked act-order map, or None when it is the plain ``k // group_size`` order.

    ``where`` names the tensor in the error (``"gptq.g_idx"``): every index must be a group of the
    layer, ``[0, groups)``.
    """
    low, high = int(g_idx.min()), int(g_idx.max())
    if low < 0 or high >= groups:
        raise ValueError(
            f"{where}: expected group indices in [0, {groups}), found values in [{low}, {high}]"
        )
    plain = torch.arange(g_idx.numel(), dtype=torch.int32, device=g_idx.device) // group_size
    return None if torch.equal(g_idx, plain) else g_idx.contiguous()

