"""``kernel-core doctor``: what runs here, which plugins failed, and a quick check of each choice.

For every family it builds a representative layer, asks selection for a kernel, runs it on fresh
random data and compares the result with the reference: the emulation kernel when the chosen
kernel is another one, otherwise a float64 product with the exactly decoded weight (then the error
includes the activation quantization the family prescribes, hence the looser bounds).
"""

from __future__ import annotations

import platform as host_platform
import time
from dataclasses import dataclass
from typing import Any

import torch

from kernel_core.config import LayerConfig
from kernel_core.families import (
    FP8ScaledMMLinearLayerConfig,
    Fp8BlockLinearLayerConfig,
    Int8ScaledMMLinearLayerConfig,
    MPLinearLayerConfig,
    Mxfp8LinearLayerConfig,
    MxFp4LinearLayerConfig,
    NvFp4LinearLayerConfig,
)
from kernel_core.platform import current_compute_capability, current_platform, device_name
from kernel_core.registry import registry
from kernel_core.selection import NoKernelError, choose_kernel

__all__ = ["representative_configs", "run_doctor", "CheckResult"]

# Relative error bound against a float64 product with the decoded weight: activation quantization
# (8-bit: ~1e-2 worst case at these sizes; 4-bit activations: ~0.2) plus bf16 output rounding.
FLOAT64_TOLERANCE = {"w4a16": 1e-2, "w8a16": 1e-2, "w8a8": 6e-2, "w4a4": 0.3}
# Against the emulation kernel: same quantized inputs, so only accumulation order and rounding.
EMULATION_TOLERANCE = 2e-2


def representative_configs(n: int = 256, k: int = 512) -> list[LayerConfig]:
    """One common layer per family (the checkpoints people actually run)."""
    shape = (n, k)
    return [
        MPLinearLayerConfig(weight_shape=shape, group_size=128),
        Int8ScaledMMLinearLayerConfig(weight_shape=shape),
        FP8ScaledMMLinearLayerConfig(weight_shape=shape),
        Fp8BlockLinearLayerConfig(weight_shape=shape),
        NvFp4LinearLayerConfig(weight_shape=shape, activation_mode="w4a16"),
        MxFp4LinearLayerConfig(weight_shape=shape, activation_mode="w4a16"),
        Mxfp8LinearLayerConfig(weight_shape=shape, activation_mode="w8a16"),
    ]


@dataclass
class CheckResult:
    family: str
    config: str
    kernel: str | None
    provider: str | None
    reference: str | None
    rel_error: float | None
    tolerance: float | None
    ok: bool
    seconds: float
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _activation_mode(config: LayerConfig) -> str:
    return getattr(config, "activation_mode", None) or config.activation_modes[0]


def _emulation_for(config: LayerConfig):
    for kernel in registry.kernels(config.family):
        if kernel.provider == "emulation":
            return kernel
    return None


def check_config(config: LayerConfig, device: torch.device, m: int = 7) -> CheckResult:
    """Choose a kernel for ``config`` and compare its output with the reference."""
    from kernel_core.formats.layer import dequantize_weight, make_layer

    start = time.perf_counter()
    result = CheckResult(config.family, config.short(), None, None, None, None, None, False, 0.0)
    try:
        kernel_class = choose_kernel(config)
    except NoKernelError as exc:
        result.error = str(exc)
        result.seconds = time.perf_counter() - start
        return result
    result.kernel, result.provider = kernel_class.name, kernel_class.provider
    try:
        layer = make_layer(config, seed=1234, device=device)
        generator = torch.Generator(device="cpu").manual_seed(4321)
        x = torch.randn(m, config.in_features, generator=generator).to(device, config.act_dtype)
        emulation = _emulation_for(config)
        if emulation is not None and emulation is not kernel_class:
            reference_layer = make_layer(config, seed=1234, device=device)
            reference_kernel = emulation(config)
            reference_kernel.process_weights_after_loading(reference_layer)
            reference = reference_kernel.apply_weights(reference_layer, x).double()
            result.reference, result.tolerance = emulation.name, EMULATION_TOLERANCE
        else:
            params = {name: p for name, p in layer.named_parameters()}
            weight = dequantize_weight(config, params, dtype=torch.float64)
            reference = x.double() @ weight.T
            result.reference = "float64 product with the decoded weight"
            result.tolerance = FLOAT64_TOLERANCE[_activation_mode(config)]
        kernel = kernel_class(config)
        kernel.process_weights_after_loading(layer)
        out = kernel.apply_weights(layer, x).double()
        error = (out - reference).norm() / reference.norm()
        result.rel_error = float(error)
        result.ok = bool(torch.isfinite(error)) and result.rel_error <= result.tolerance
    except Exception as exc:  # doctor reports, it does not crash
        result.error = f"{type(exc).__name__}: {exc}"
    result.seconds = time.perf_counter() - start
    return result


def run_doctor() -> dict[str, Any]:
    """Everything ``kernel-core doctor`` prints, as plain data."""
    platform = current_platform()
    device = torch.device("cuda" if platform in ("cuda", "rocm") else "cpu")
    plugins = [p.as_dict() for p in registry.plugins()]
    checks = [check_config(c, device).as_dict() for c in representative_configs()]
    return {
        "platform": platform,
        "compute_capability": current_compute_capability(),
        "device": device_name(),
        "python": host_platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "plugins": plugins,
        "checks": checks,
        "ok": all(c["ok"] for c in checks) and not any(p["error"] for p in plugins),
    }
