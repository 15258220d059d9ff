"""The layer parameter contract: which tensors a kernel reads from a layer, and their checks.

Each family declares, per config, a tuple of :class:`ParamSpec` (names, dtypes, allowed shapes,
meaning). :func:`validate_layer_params` is the one validation every kernel calls before touching a
layer: a missing parameter, a wrong dtype or a wrong shape is a ``ValueError`` that names the
parameter, what was expected and what was found. Nothing is reinterpreted silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "dtype_name",
    "ParamSpec",
    "validate_layer_params",
    "replace_parameter",
    "processed_tensors",
    "SCALAR_SHAPES",
    "per_channel_shapes",
]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``: how error messages name a dtype."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of the contract.

    ``shapes`` lists the accepted shapes (several when a scale may be given as ``[N]`` or
    ``[N, 1]``, or a scalar as ``[]`` or ``[1]``); ``doc`` says what the values mean.
    """

    name: str
    dtypes: tuple[torch.dtype, ...]
    shapes: tuple[tuple[int, ...], ...]
    doc: str
    required: bool = True

    def shape_text(self) -> str:
        return " or ".join(f"[{', '.join(str(d) for d in s)}]" for s in self.shapes)

    def dtype_text(self) -> str:
        return " or ".join(dtype_name(d) for d in self.dtypes)

    def check(self, tensor: object, owner: str = "layer") -> torch.Tensor:
        """Return the tensor if it fits, else raise a ValueError naming what differs."""
        where = f"{owner}.{self.name}"
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(
                f"{where}: expected a tensor of dtype {self.dtype_text()} and shape "
                f"{self.shape_text()}, found {type(tensor).__name__}"
            )
        if tensor.dtype not in self.dtypes:
            raise ValueError(
                f"{where}: expected dtype {self.dtype_text()}, found {dtype_name(tensor.dtype)}"
            )
        if tuple(tensor.shape) not in self.shapes:
            raise ValueError(
                f"{where}: expected shape {self.shape_text()}, found {list(tensor.shape)}"
            )
        return tensor


def validate_layer_params(
    layer: torch.nn.Module, specs: Sequence[ParamSpec], owner: str | None = None
) -> dict[str, torch.Tensor]:
    """Check every spec against ``layer`` and return ``{name: tensor}`` for those present."""
    owner = owner or type(layer).__name__
    found: dict[str, torch.Tensor] = {}
    for spec in specs:
        tensor = getattr(layer, spec.name, None)
        if tensor is None:
            if spec.required:
                raise ValueError(
                    f"{owner}.{spec.name}: missing; expected a tensor of dtype "
                    f"{spec.dtype_text()} and shape {spec.shape_text()} ({spec.doc})"
                )
            continue
        found[spec.name] = spec.check(tensor, owner)
    return found


def replace_parameter(layer: torch.nn.Module, name: str, value: torch.Tensor | None) -> None:
    """Put ``value`` on ``layer`` under ``name``, keeping the existing Parameter where possible.

    Same shape, dtype and device: copy in place (the storage, and so any captured CUDA graph, stays
    valid). Otherwise the existing Parameter's ``.data`` is rebound (its identity is kept), a
    missing one is registered, and ``None`` removes the parameter (frees the checkpoint tensor).
    """
    old = getattr(layer, name, None)
    if value is None:
        if name in layer._parameters:
            del layer._parameters[name]
        elif name in layer._buffers:
            del layer._buffers[name]
        elif hasattr(layer, name):
            delattr(layer, name)
        return
    if isinstance(old, torch.nn.Parameter):
        if (
            old.shape == value.shape
            and old.dtype == value.dtype
            and old.device == value.device
            and old.stride() == value.stride()
        ):
            if old.data_ptr() != value.data_ptr():
                old.data.copy_(value)
        else:
            old.data = value
        return
    if name in layer._buffers:
        del layer._buffers[name]
    elif old is not None and name not in layer._parameters:
        delattr(layer, name)
    layer.register_parameter(name, torch.nn.Parameter(value, requires_grad=False))


def processed_tensors(layer: torch.nn.Module) -> Mapping[str, torch.Tensor | None]:
    """The mapping an apply path reads a processed layer's tensors from, by name (``.get`` gives
    None for an absent optional one).

    Normally ``layer._parameters`` itself: a dict lookup, where ``getattr`` goes through
    ``Module.__getattr__`` (~1 us a name on a CPU, more for an absent name, which raises and is
    caught). A replica made by ``torch.nn.DataParallel`` holds its parameters as plain attributes
    and none in ``_parameters``, so for a replica it is the instance dict.
    """
    attributes = layer.__dict__
    return attributes if attributes.get("_is_replica", False) else layer._parameters


#: Shapes a per-tensor scale may take: a 0-d tensor or one element.
SCALAR_SHAPES: tuple[tuple[int, ...], ...] = ((), (1,))


def per_channel_shapes(n: int) -> tuple[tuple[int, ...], ...]:
    """Shapes a per-output-channel scale may take: ``[N]`` or ``[N, 1]``."""
    return ((n,), (n, 1))
