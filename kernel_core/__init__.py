"""kernel-core: a registry of quantized linear (GEMM) kernels for LLM inference engines.

Engines describe a layer with a family config, ask for a kernel, then run it::

    from kernel_core import MPLinearLayerConfig, init_kernel

    kernel = init_kernel(MPLinearLayerConfig(weight_shape=(4096, 4096), group_size=128))
    kernel.process_weights_after_loading(layer)      # once, after loading
    y = kernel.apply_weights(layer, x, bias)          # every forward

Plugins register kernels through the ``register_kernels`` hook (see ``kernel_core.hookspecs``).
"""

from kernel_core.config import LayerConfig
from kernel_core.families import (
    FAMILIES,
    FP8ScaledMMLinearKernel,
    FP8ScaledMMLinearLayerConfig,
    Fp8BlockLinearLayerConfig,
    Fp8BlockScaledMMLinearKernel,
    Int8ScaledMMLinearKernel,
    Int8ScaledMMLinearLayerConfig,
    MPLinearKernel,
    MPLinearLayerConfig,
    Mxfp8LinearKernel,
    Mxfp8LinearLayerConfig,
    MxFp4LinearKernel,
    MxFp4LinearLayerConfig,
    NvFp4LinearKernel,
    NvFp4LinearLayerConfig,
    family_of,
)
from kernel_core.hookspecs import hookimpl, hookspec
from kernel_core.kernel import KernelConfigError, LinearKernel, Priority
from kernel_core.params import ParamSpec, processed_tensors, replace_parameter, validate_layer_params
from kernel_core.platform import current_compute_capability, current_platform
from kernel_core.registry import DuplicateKernelError, PluginRecord, registry
from kernel_core.scalar_types import ScalarType, scalar_types
from kernel_core.seed_api import (
    choose_mp_linear_kernel,
    choose_scaled_mm_linear_kernel,
    init_mxfp4_linear_kernel,
    init_mxfp8_linear_kernel,
    init_nvfp4_linear_kernel,
    register_linear_kernel,
)
from kernel_core.selection import (
    Candidate,
    Explanation,
    NoKernelError,
    choose_kernel,
    explain,
    init_kernel,
)

__version__ = "0.1.0"

register_kernel = registry.register_kernel
register_plugin = registry.register_plugin
scoped_registry = registry.scoped

__all__ = [
    "FAMILIES",
    "Candidate",
    "DuplicateKernelError",
    "Explanation",
    "FP8ScaledMMLinearKernel",
    "FP8ScaledMMLinearLayerConfig",
    "Fp8BlockLinearLayerConfig",
    "Fp8BlockScaledMMLinearKernel",
    "Int8ScaledMMLinearKernel",
    "Int8ScaledMMLinearLayerConfig",
    "KernelConfigError",
    "LayerConfig",
    "LinearKernel",
    "MPLinearKernel",
    "MPLinearLayerConfig",
    "MxFp4LinearKernel",
    "MxFp4LinearLayerConfig",
    "Mxfp8LinearKernel",
    "Mxfp8LinearLayerConfig",
    "NoKernelError",
    "NvFp4LinearKernel",
    "NvFp4LinearLayerConfig",
    "ParamSpec",
    "PluginRecord",
    "Priority",
    "ScalarType",
    "choose_kernel",
    "choose_mp_linear_kernel",
    "choose_scaled_mm_linear_kernel",
    "current_compute_capability",
    "current_platform",
    "explain",
    "family_of",
    "hookimpl",
    "hookspec",
    "init_kernel",
    "init_mxfp4_linear_kernel",
    "init_mxfp8_linear_kernel",
    "init_nvfp4_linear_kernel",
    "processed_tensors",
    "register_kernel",
    "register_linear_kernel",
    "register_plugin",
    "registry",
    "replace_parameter",
    "scalar_types",
    "scoped_registry",
    "validate_layer_params",
]
