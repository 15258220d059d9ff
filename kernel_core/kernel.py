"""The kernel contract every family ABC and every plugin kernel follows.

Lifecycle (the seed contract, unchanged): the registry asks ``is_supported`` (can it run on this
platform?) and ``can_implement`` (can it handle this layer?); the winner is constructed with the
layer config; ``process_weights_after_loading(layer)`` runs once after the checkpoint is loaded;
``apply_weights(layer, x, bias)`` runs on every forward.

Kernel metadata are class attributes with defaults, so a minimal kernel sets none of them:

========== ============================================ =======================================
attribute  meaning                                      default
========== ============================================ =======================================
name       unique name, used by force/disable knobs      the class name
provider   who ships it (the plugin's name)              set by the plugin that registers it
priority   higher runs first when nothing is measured    ``Priority.PORTABLE`` (100)
platforms  platforms it can run on                       ``{"cuda"}``
========== ============================================ =======================================
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from kernel_core.config import LayerConfig
from kernel_core.params import ParamSpec, dtype_name, validate_layer_params

__all__ = ["LinearKernel", "Priority", "KernelConfigError", "PLATFORMS"]

PLATFORMS = frozenset({"cuda", "rocm", "xpu", "cpu"})


class Priority(enum.IntEnum):
    """Documented priority bands. Pick the band, then adjust by a few points inside it."""

    REFERENCE = 0  # emulation and other oracles: always last
    PORTABLE = 100  # generic code (Triton, torch ops) that runs broadly but is not tuned
    LIBRARY = 200  # a vendor library's kernel (cuBLAS, FlashInfer)
    SPECIALIZED = 300  # hand-written for this format and architecture (Marlin, CUTLASS SM90)


class KernelConfigError(ValueError):
    """A kernel was constructed with a config it cannot implement."""


class LinearKernel(ABC):
    """Base of every family ABC. Plugin kernels subclass a family ABC, not this class."""

    #: Family key ("mp", "fp8", ...); set by each family ABC, inferred for subclasses.
    family: ClassVar[str] = ""
    #: The config dataclass the family's kernels take.
    config_class: ClassVar[type[LayerConfig]] = LayerConfig
    name: ClassVar[str] = ""
    provider: ClassVar[str] = ""
    priority: ClassVar[int] = Priority.PORTABLE
    platforms: ClassVar[frozenset[str]] = frozenset({"cuda"})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__
        platforms = frozenset(cls.platforms)
        unknown = platforms - PLATFORMS
        if unknown:
            raise TypeError(
                f"{cls.__name__}.platforms has unknown platform(s) {sorted(unknown)}; "
                f"expected a subset of {sorted(PLATFORMS)}"
            )
        cls.platforms = platforms

    @classmethod
    @abstractmethod
    def is_supported(cls, compute_capability: int | None = None) -> tuple[bool, str | None]:
        """Can this kernel run on this platform (hardware, installed libraries)?"""

    @classmethod
    @abstractmethod
    def can_implement(cls, config: Any) -> tuple[bool, str | None]:
        """Can this kernel handle this layer (dtypes, group size, alignment, ...)?"""

    @classmethod
    def warmup(cls, compute_capability: int | None = None) -> None:
        """Build or load any JIT code ahead of time (``kernel-core warmup``). Default: nothing."""

    def __init__(self, config: LayerConfig) -> None:
        if not isinstance(config, self.config_class):
            raise KernelConfigError(
                f"{self.name} expects a {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        ok, reason = self.can_implement(config)
        if not ok:
            raise KernelConfigError(f"{self.name} cannot implement {config}: {reason}")
        self.config = config

    @staticmethod
    def parameter_specs(config: Any) -> tuple[ParamSpec, ...]:
        """The layer parameters this family's kernels read (the contract); set by each family."""
        return ()

    def validate_layer(self, layer: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Check the layer against the family's parameter contract; return the tensors by name."""
        return validate_layer_params(layer, self.parameter_specs(self.config), type(layer).__name__)

    @abstractmethod
    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        """Once, after loading: validate, repack, swizzle or pad the layer's parameters in place."""

    @abstractmethod
    def apply_weights(
        self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x`` of shape ``(..., K)`` to ``(..., N)`` in the config's output dtype."""

    def check_apply_inputs(self, x: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Refuse an ``x`` that is not ``(..., K)`` in the config's ``act_dtype``, or a ``bias``
        that is not a floating-point ``[N]``, with a ``ValueError`` naming expected and found.

        Kernels call it first thing in ``apply_weights``, so a wrong input never reaches a GPU
        kernel (which would fail deep inside or, worse, read the wrong bytes). A passing call is one
        short comparison chain (well under a microsecond), cheap enough for every forward.
        """
        config = self.config
        n, k = config.weight_shape
        shape = x.shape
        if (
            x.dtype is config.act_dtype
            and shape
            and shape[-1] == k
            and (bias is None or (bias.shape == (n,) and bias.is_floating_point()))
        ):
            return
        where = f"{type(self).__name__}.apply_weights"
        if not shape or shape[-1] != k or x.dtype is not config.act_dtype:
            raise ValueError(
                f"{where}: expected x of shape (..., {k}) and dtype {dtype_name(config.act_dtype)} "
                f"(the config's act_dtype), found {list(shape)} {dtype_name(x.dtype)}"
            )
        raise ValueError(
            f"{where}: expected a floating-point bias of shape [{n}], found "
            f"{dtype_name(bias.dtype)} of shape {list(bias.shape)}"  # type: ignore[union-attr]
        )

    def check_apply_device(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
    ) -> None:
        """Refuse an ``x`` (or a ``bias``) on another device than ``weight``, a tensor of the
        layer's, with a ``ValueError`` naming the layer's device and the one found.

        Kernels that hand raw pointers to their own GPU code call it in ``apply_weights`` right
        after :meth:`check_apply_inputs`: an activation on the CPU or on another GPU would
        otherwise fail deep inside the launch, or read the wrong memory. A passing call builds two
        ``torch.device`` objects (three with a bias) and compares them: about 0.3 us without a
        bias and 0.4 us with one, timed on the CPU machine. ``x.device == weight.device`` is the
        cheapest correct test measured there: ``get_device()`` is -1 for CPU and meta tensors
        alike and the same index for ``cuda:0`` and ``xpu:0``, and guarding it with ``is_cuda``
        costs more than the comparison it would replace.
        """
        device = weight.device
        if x.device == device and (bias is None or bias.device == device):
            return
        where = f"{type(self).__name__}.apply_weights"
        if x.device != device:
            raise ValueError(f"{where}: expected x on the layer's device {device}, found {x.device}")
        raise ValueError(
            f"{where}: expected bias on the layer's device {device}, "
            f"found {bias.device}"  # type: ignore[union-attr]
        )

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Metadata as plain data (CLI, explain)."""
        return {
            "name": cls.name,
            "family": cls.family,
            "provider": cls.provider,
            "priority": int(cls.priority),
            "platforms": sorted(cls.platforms),
            "class": f"{cls.__module__}.{cls.__qualname__}",
        }
