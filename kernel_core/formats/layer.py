"""The bridge from float weights to the layer parameter contract, and back.

:func:`quantize_weight` turns a float ``[N, K]`` weight into exactly the parameters a family's
``parameter_specs(config)`` lists (names, dtypes, shapes; scales as decode multipliers);
:func:`dequantize_weight` decodes such parameters to the exact float weight they represent (what
the emulation kernels multiply by); :func:`make_layer` builds a test layer holding them.

Static activation scales, which a checkpoint would carry, are derived from an assumed activation
range ``input_amax`` (default :data:`DEFAULT_INPUT_AMAX`):

* int8 static symmetric: ``input_scale = input_amax / 127``.
* int8 static asymmetric: the range is taken as the skewed ``[-input_amax / 2, input_amax]`` so the
  zero point is not zero (it is -43) and kernels' zero-point paths are exercised:
  ``input_scale = 1.5 * input_amax / 255``, ``input_zero_point = round(-128 + 0.5 * input_amax /
  input_scale)``.
* fp8 static: ``input_scale = input_amax / 448``.
* nvfp4 W4A4: ``input_global_scale = input_amax / (448 * 6)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from kernel_core.config import LayerConfig
from kernel_core.families import (
    FAMILIES,
    FP8ScaledMMLinearLayerConfig,
    Fp8BlockLinearLayerConfig,
    Int8ScaledMMLinearLayerConfig,
    MPLinearLayerConfig,
    MxFp4LinearLayerConfig,
    Mxfp8LinearLayerConfig,
    NvFp4LinearLayerConfig,
)
from kernel_core.formats._checks import check_float, check_ndim
from kernel_core.formats.fp4 import (
    dequantize_mxfp4,
    dequantize_nvfp4,
    nvfp4_global_scale,
    quantize_mxfp4,
    quantize_nvfp4,
)
from kernel_core.formats.fp8 import (
    dequantize_fp8,
    dequantize_fp8_block,
    quantize_fp8,
    quantize_fp8_block,
)
from kernel_core.formats.int8 import dequantize_int8, quantize_int8
from kernel_core.formats.integer import dequantize_int, pack_along_k, quantize_int, unpack_along_k
from kernel_core.formats.mx import dequantize_mxfp8, quantize_mxfp8
from kernel_core.params import ParamSpec, validate_layer_params

__all__ = [
    "DEFAULT_INPUT_AMAX",
    "REFERENCE_WEIGHT_STD",
    "quantize_weight",
    "dequantize_weight",
    "make_layer",
    "make_act_order_g_idx",
]

#: Assumed largest activation magnitude when deriving static input scales (about the largest of
#: a few thousand standard normal samples).
DEFAULT_INPUT_AMAX = 4.0
#: Standard deviation of the random weights :func:`make_layer` draws (typical of LLM linears).
REFERENCE_WEIGHT_STD = 0.05

Params = dict[str, torch.Tensor]


def make_act_order_g_idx(k: int, group_size: int, *, seed: int = 0) -> torch.Tensor:
    """A GPTQ act-order (``desc_act``) style ``g_idx``: ``int32 [K]``, ``g_idx[k] = perm[k] //
    group_size`` for a seeded random permutation ``perm`` of ``range(K)``.

    GPTQ quantizes channels in a permuted order and assigns groups along that order, so every group
    keeps ``group_size`` members but they are scattered over K. ``group_size == -1``: all zeros.
    """
    if group_size == -1:
        return torch.zeros(k, dtype=torch.int32)
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(k, generator=generator)
    return (perm // group_size).to(torch.int32)


def _input_amax(input_amax: float | None) -> float:
    amax = DEFAULT_INPUT_AMAX if input_amax is None else input_amax
    if isinstance(amax, bool) or not isinstance(amax, int | float) or not amax > 0:
        raise ValueError(f"input_amax: expected a positive float, found {input_amax!r}")
    return float(amax)


# ---------------------------------------------------------------------------------------------
# Per family: float weight -> contract parameters
# ---------------------------------------------------------------------------------------------


def _quantize_mp(
    config: MPLinearLayerConfig,
    weight: torch.Tensor,
    g_idx: torch.Tensor | None,
    input_amax: float | None,
    seed: int,
) -> Params:
    weight_type = config.weight_type
    act = config.act_dtype
    scale_dtype = act if act in (torch.float16, torch.bfloat16) else torch.float32
    if config.has_g_idx:
        if g_idx is None:
            g_idx = make_act_order_g_idx(config.in_features, config.group_size, seed=seed)
        quantized = quantize_int(
            weight, weight_type, config.group_size, g_idx=g_idx.to(weight.device),
            scale_dtype=scale_dtype, num_groups=config.num_groups,
        )
    else:
        quantized = quantize_int(weight, weight_type, config.group_size, scale_dtype=scale_dtype)
    params = {
        "weight": pack_along_k(quantized.codes, weight_type.size_bits),
        "weight_scale": quantized.scale,
    }
    if config.zero_points:
        params["weight_zero_point"] = quantized.zero_point
    if config.has_g_idx:
        params["weight_g_idx"] = quantized.g_idx
    return params


def _quantize_int8(
    config: Int8ScaledMMLinearLayerConfig,
    weight: torch.Tensor,
    g_idx: torch.Tensor | None,
    input_amax: float | None,
    seed: int,
) -> Params:
    per_channel = config.weight_scale_granularity == "channel"
    q, scale, _ = quantize_int8(weight, "token" if per_channel else "tensor")
    params = {"weight": q, "weight_scale": scale.reshape(-1)}
    if config.input_scale == "static":
        amax = _input_amax(input_amax)
        low = -amax if config.input_symmetric else -amax / 2
        span = torch.tensor([low, amax], device=weight.device)
        _, input_scale, zero_point = quantize_int8(
            span, "tensor", symmetric=config.input_symmetric
        )
        params["input_scale"] = input_scale
        if not config.input_symmetric:
            params["input_zero_point"] = zero_point
    return params


def _quantize_fp8(
    config: FP8ScaledMMLinearLayerConfig,
    weight: torch.Tensor,
    g_idx: torch.Tensor | None,
    input_amax: float | None,
    seed: int,
) -> Params:
    q, scale = quantize_fp8(weight, config.weight_scale_granularity)
    params = {"weight": q, "weight_scale": scale}
    if config.activation_mode == "w8a8" and config.input_scale == "static":
        amax = torch.tensor([_input_amax(input_amax)], device=weight.device)
        params["input_scale"] = quantize_fp8(amax, "tensor")[1]
    return params


def _quantize_fp8_block(
    config: Fp8BlockLinearLayerConfig,
    weight: torch.Tensor,
    g_idx: torch.Tensor | None,
    input_amax: float | None,
    seed: int,
) -> Params:
    q, scale = quantize_fp8_block(weight, config.weight_block)
    return {"weight": q, "weight_scale": scale}


def _quantize_nvfp4(
    config: NvFp4LinearLayerConfig,
    weight: torch.Tensor,
    g_idx: torch.Tensor | None,
    input_amax: float | None,
    seed: int,
) -> Params:
    packed, block_scale, global_scale = quantize_nvfp4(weight)
    params = {"weight": packed, "weight_scale": block_scale, "weight_global_scale": global_scale}
    if config.activation_mode == "w4a4":
        amax = torch.tensor([_input_amax(input_amax)], device=weight.device)
        params["input_global_scale"] = nvfp4_global_scale(amax)
    return params


def _quantize_mxfp4(
    config: MxFp4LinearLayerConfig,
    weight: torch.Tensor,
    g_idx: torch.Tensor | None,
    input_amax: float | None,
    seed: int,
) -> Params:
    packed, scale = quantize_mxfp4(weight)
    return {"weight": packed, "weight_scale": scale}


def _quantize_mxfp8(
    config: Mxfp8LinearLayerConfig,
    weight: torch.Tensor,
    g_idx: torch.Tensor | None,
    input_amax: float | None,
    seed: int,
) -> Params:
    q, scale = quantize_mxfp8(weight)
    return {"weight": q, "weight_scale": scale}


_QUANTIZERS: dict[str, Callable[..., Params]] = {
    "mp": _quantize_mp,
    "int8": _quantize_int8,
    "fp8": _quantize_fp8,
    "fp8_block": _quantize_fp8_block,
    "nvfp4": _quantize_nvfp4,
    "mxfp4": _quantize_mxfp4,
    "mxfp8": _quantize_mxfp8,
}


def _family_specs(config: LayerConfig) -> tuple[ParamSpec, ...]:
    family = getattr(config, "family", None)
    if family not in _QUANTIZERS or family not in FAMILIES:
        known = ", ".join(sorted(_QUANTIZERS))
        raise ValueError(
            f"config: expected a layer config of one of the families {known}, found "
            f"{type(config).__name__} (family {family!r})"
        )
    return FAMILIES[family].parameter_specs(config)


def quantize_weight(
    config: LayerConfig,
    weight: torch.Tensor,
    *,
    g_idx: torch.Tensor | None = None,
    input_amax: float | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Quantize a float ``[N, K]`` weight into the parameters of ``config``'s family contract.

    ``g_idx`` (mp with ``has_g_idx`` only): the act-order group of each input channel; when omitted
    one is drawn with :func:`make_act_order_g_idx` from ``seed``. ``input_amax``: the activation
    range static input scales are derived from (module docstring). mp scales are stored in the
    config's ``act_dtype`` when it is fp16/bf16, else fp32. Tensors are on ``weight``'s device.
    """
    specs = _family_specs(config)
    check_float("weight", weight)
    check_ndim("weight", weight, ndim=2)
    if tuple(weight.shape) != tuple(config.weight_shape):
        raise ValueError(
            f"weight: expected shape {list(config.weight_shape)} (config.weight_shape), found "
            f"{list(weight.shape)}"
        )
    if g_idx is not None and not getattr(config, "has_g_idx", False):
        raise ValueError(
            f"g_idx: only an mp config with has_g_idx=True takes one; found {config.short()}"
        )
    params = _QUANTIZERS[config.family](
        config, weight.detach().to(torch.float32), g_idx, input_amax, seed
    )
    expected = [spec.name for spec in specs]
    if sorted(params) != sorted(expected):
        raise AssertionError(f"quantize_weight produced {sorted(params)}, contract {expected}")
    for spec in specs:
        spec.check(params[spec.name], owner="quantize_weight")
    return {name: params[name] for name in expected}


# ---------------------------------------------------------------------------------------------
# Contract parameters -> float weight
# ---------------------------------------------------------------------------------------------


def dequantize_weight(
    config: LayerConfig,
    params: Mapping[str, torch.Tensor] | torch.nn.Module,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The exact float ``[N, K]`` weight that the parameters encode, computed in fp32, returned in
    ``dtype``. ``params`` is a mapping or a layer (read by attribute); the contract's parameters
    are validated (dtype and shape only, no host reads) and other entries are ignored."""
    specs = _family_specs(config)
    if isinstance(params, torch.nn.Module):
        p = validate_layer_params(params, specs)
    else:
        p = {}
        for spec in specs:
            if spec.name not in params:
                if spec.required:
                    raise ValueError(
                        f"params.{spec.name}: missing; expected dtype {spec.dtype_text()} and "
                        f"shape {spec.shape_text()} ({spec.doc})"
                    )
                continue
            p[spec.name] = spec.check(params[spec.name], owner="params")
    family = config.family
    if family == "mp":
        n, k = config.weight_shape
        codes = unpack_along_k(p["weight"], config.weight_type.size_bits, k)
        return dequantize_int(
            codes, p["weight_scale"], config.weight_type, config.group_size,
            zero_point=p.get("weight_zero_point"), g_idx=p.get("weight_g_idx"), dtype=dtype,
        )
    if family == "int8":
        return dequantize_int8(p["weight"], p["weight_scale"], dtype=dtype)
    if family == "fp8":
        return dequantize_fp8(p["weight"], p["weight_scale"], dtype=dtype)
    if family == "fp8_block":
        return dequantize_fp8_block(
            p["weight"], p["weight_scale"], config.weight_block, dtype=dtype
        )
    if family == "nvfp4":
        return dequantize_nvfp4(
            p["weight"], p["weight_scale"], p["weight_global_scale"], dtype=dtype
        )
    if family == "mxfp4":
        return dequantize_mxfp4(p["weight"], p["weight_scale"], dtype=dtype)
    return dequantize_mxfp8(p["weight"], p["weight_scale"], dtype=dtype)


def make_layer(
    config: LayerConfig,
    weight: torch.Tensor | None = None,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    g_idx: torch.Tensor | None = None,
    input_amax: float | None = None,
) -> torch.nn.Module:
    """A bare ``torch.nn.Module`` holding ``config``'s contract parameters as
    ``Parameter(requires_grad=False)``.

    Without ``weight``, one is drawn as ``randn * REFERENCE_WEIGHT_STD`` from a CPU generator seeded
    with ``seed`` (the same values on every device). The float weight before quantization is kept
    as ``layer.reference_weight``, an fp32 non-persistent buffer: it follows ``layer.to(...)`` but
    is neither a parameter nor in the state dict.
    """
    _family_specs(config)
    if weight is None:
        generator = torch.Generator().manual_seed(seed)
        weight = torch.randn(config.weight_shape, generator=generator) * REFERENCE_WEIGHT_STD
    reference = weight.detach().to(device=device, dtype=torch.float32).clone()
    params = quantize_weight(config, reference, g_idx=g_idx, input_amax=input_amax, seed=seed)
    layer = torch.nn.Module()
    for name, tensor in params.items():
        layer.register_parameter(name, torch.nn.Parameter(tensor, requires_grad=False))
    layer.register_buffer("reference_weight", reference, persistent=False)
    validate_layer_params(layer, _family_specs(config), owner="make_layer")
    return layer
