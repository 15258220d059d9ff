"""compressed-tensors converter, tested on bytes written by the compressed-tensors package itself.

Each test quantizes a fresh random weight with the package's own qparam code and compressor,
converts the compressed tensors, and compares ``dequantize_weight(config, params)`` with the
package's own ``decompress`` of the same tensors. Act-order (``weight_g_idx``), which the package
no longer writes, is tested on byte-level vectors built with the formats' packers.
"""

from __future__ import annotations

import importlib
import logging
import os

import pytest
import torch

from kernel_core.converters import compressed_tensors as ct_conv
from kernel_core.converters._tensors import CheckpointTensors, finish
from kernel_core.families import MPLinearLayerConfig
from kernel_core.formats.integer import pack_along_k, pack_ct_zero_point, quantize_int
from kernel_core.formats.layer import dequantize_weight
from kernel_core.scalar_types import scalar_types

if os.environ.get("CI"):
    importlib.import_module("compressed_tensors")  # CI installs it: these tests must not skip
else:
    pytest.importorskip(
        "compressed_tensors", reason="the compressed-tensors package is not installed"
    )

from compressed_tensors.compressors import BaseCompressor
from compressed_tensors.quantization import (
    QuantizationArgs,
    QuantizationScheme,
    preset_name_to_scheme,
)
from compressed_tensors.quantization.utils import (
    calculate_qparams,
    generate_gparam,
    maybe_pad_tensor_for_block_quant,
)


def _strategy(args: QuantizationArgs) -> str:
    return getattr(args.strategy, "value", args.strategy)


def _observe(x: torch.Tensor, args: QuantizationArgs) -> tuple[torch.Tensor, torch.Tensor]:
    """Min and max over the regions one scale covers (what llm-compressor's min-max observer
    hands to ``calculate_qparams``)."""
    strategy = _strategy(args)
    if strategy in ("group", "tensor_group"):
        v = x.unflatten(-1, (-1, args.group_size))
        return v.amin(-1), v.amax(-1)
    if strategy == "channel":
        return x.amin(1, keepdim=True), x.amax(1, keepdim=True)
    if strategy == "tensor":
        return x.amin(), x.amax()
    if strategy == "block":
        bn, bk = args.block_structure
        padded = maybe_pad_tensor_for_block_quant(x, (bn, bk))
        v = padded.reshape(padded.shape[0] // bn, bn, padded.shape[1] // bk, bk)
        return v.amin((1, 3)), v.amax((1, 3))
    raise AssertionError(strategy)


def ct_checkpoint(
    scheme: QuantizationScheme,
    fmt: str,
    weight: torch.Tensor,
    *,
    activations: torch.Tensor | None = None,
    global_scale: torch.Tensor | None = None,
) -> tuple[dict[str, torch.Tensor], dict, torch.Tensor]:
    """(compressed tensors, scheme as config.json writes it, the package's own dequantization)."""
    args = scheme.weights
    if _strategy(args) == "tensor_group" and global_scale is None:
        global_scale = generate_gparam(weight.min(), weight.max())
    low, high = _observe(weight, args)
    scale, zero_point = calculate_qparams(low, high, args, global_scale=global_scale)
    state = {"weight": weight, "weight_scale": scale, "weight_zero_point": zero_point}
    if global_scale is not None:
        state["weight_global_scale"] = global_scale
    acts = scheme.input_activations
    if acts is not None and activations is not None:
        a_low, a_high = activations.amin(), activations.amax()
        if _strategy(acts) == "tensor_group":
            # NVFP4: the global scale is static (calibrated), the local scales dynamic.
            state["input_global_scale"] = generate_gparam(a_low, a_high)
        elif not acts.dynamic:
            a_scale, a_zp = calculate_qparams(a_low, a_high, acts)
            state["input_scale"] = a_scale
            if not acts.symmetric:
                state["input_zero_point"] = a_zp
    compressor = BaseCompressor.get_value_from_registry(fmt)
    compressed = compressor.compress(state, scheme)
    decompressed = compressor.decompress(dict(compressed), scheme)["weight"]
    scheme_json = scheme.model_dump(mode="json")
    scheme_json["format"] = fmt
    return dict(compressed), scheme_json, decompressed


def _weight(n: int, k: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(n, k, generator=generator) * 0.05).to(dtype)


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    a, e = actual.double(), expected.double()
    err = (a - e).norm() / e.norm()
    assert err <= rel, f"relative error {err:.3g} > {rel}"


def _poisoned(params: dict[str, torch.Tensor]) -> None:
    """Every converted tensor must hold data the converter wrote: no NaN scale slipped through."""
    for name, tensor in params.items():
        if tensor.is_floating_point() and tensor.dtype != torch.float8_e4m3fn:
            assert torch.isfinite(tensor).all(), name


# ---------------------------------------------------------------------------------------------
# pack-quantized (W4A16 / W8A16, symmetric and asymmetric)
# ---------------------------------------------------------------------------------------------

WNA16_CASES = [
    ("W4A16", None, scalar_types.uint4b8),
    ("W4A16_ASYM", None, scalar_types.uint4),
    ("W8A16", None, scalar_types.uint8b128),
    ("custom", {"num_bits": 4, "strategy": "channel", "symmetric": True}, scalar_types.uint4b8),
    ("custom", {"num_bits": 8, "strategy": "group", "group_size": 64, "symmetric": False},
     scalar_types.uint8),
    ("custom", {"num_bits": 4, "strategy": "group", "group_size": 32, "symmetric": False},
     scalar_types.uint4),
]


@pytest.mark.parametrize("preset,custom,weight_type", WNA16_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_wna16_matches_package_decompress(preset, custom, weight_type, dtype):
    if custom is None:
        scheme = preset_name_to_scheme(preset, ["Linear"])
    else:
        scheme = QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(**custom))
    n, k = 72, 384
    weight = _weight(n, k, dtype, seed=hash((preset, str(custom))) % 1000)
    tensors, scheme_json, ct_dequant = ct_checkpoint(scheme, "pack-quantized", weight)
    config, params = ct_conv.convert(tensors, scheme_json)
    assert isinstance(config, MPLinearLayerConfig)
    assert config.weight_type == weight_type
    assert config.weight_shape == (n, k)
    assert config.act_dtype == (torch.bfloat16 if dtype == torch.float32 else dtype)
    assert config.zero_points == (not weight_type.has_bias)
    group = scheme.weights.group_size if _strategy(scheme.weights) == "group" else -1
    assert config.group_size == group
    _poisoned(params)
    ours = dequantize_weight(config, params)
    # The package dequantizes in the scale dtype; with fp32 scales the two agree to rounding.
    assert_close_rel(ours, ct_dequant, 1e-6 if dtype == torch.float32 else 2**-8)
    assert_close_rel(ours, weight, 0.2 if weight_type.size_bits == 4 else 0.02)


def test_wna16_zero_points_are_unpacked_codes():
    """The contract's zero point equals the package's own unpacking of its packed zero points,
    shifted into the unsigned code range (the package stores signed values + 2**(bits-1))."""
    from compressed_tensors.compressors import unpack_from_int32

    scheme = preset_name_to_scheme("W4A16_ASYM", ["Linear"])
    n, k = 40, 256
    tensors, scheme_json, _ = ct_checkpoint(scheme, "pack-quantized", _weight(n, k, seed=3))
    _, params = ct_conv.convert(tensors, scheme_json)
    signed = unpack_from_int32(tensors["weight_zero_point"], 4, torch.Size((n, k // 128)), 0)
    assert torch.equal(params["weight_zero_point"].to(torch.int16), signed.to(torch.int16) + 8)
    assert int(params["weight_zero_point"].max()) > int(params["weight_zero_point"].min())


# ---------------------------------------------------------------------------------------------
# act-order (weight_g_idx): byte-level vectors, the package no longer writes it
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("symmetric", [True, False])
def test_wna16_act_order_g_idx(symmetric):
    n, k, group = 24, 256, 64
    weight = _weight(n, k, seed=11)
    g_idx = (torch.randperm(k, generator=torch.Generator().manual_seed(5)) // group).int()
    weight_type = scalar_types.uint4b8 if symmetric else scalar_types.uint4
    q = quantize_int(weight, weight_type, group, g_idx=g_idx)
    tensors = {
        "weight_packed": pack_along_k(q.codes, 4),
        "weight_shape": torch.tensor([n, k]),
        "weight_scale": q.scale,
        "weight_g_idx": g_idx,
    }
    if not symmetric:
        tensors["weight_zero_point"] = pack_ct_zero_point(q.zero_point, 4)
    config, params = ct_conv.convert_wna16(
        tensors, num_bits=4, group_size=group, symmetric=symmetric
    )
    assert config.has_g_idx
    assert torch.equal(params["weight_g_idx"], g_idx)
    # The checkpoint's formula, computed here independently: (code - zero) * scale[n, g_idx[k]].
    codes = q.codes.double()
    zero = 8.0 if symmetric else q.zero_point.double()[:, g_idx.long()]
    expected = (codes - zero) * q.scale.double()[:, g_idx.long()]
    assert_close_rel(dequantize_weight(config, params), expected, 1e-6)


def test_wna16_plain_order_g_idx_is_dropped():
    scheme = preset_name_to_scheme("W4A16", ["Linear"])
    n, k = 16, 256
    tensors, _, ct_dequant = ct_checkpoint(scheme, "pack-quantized", _weight(n, k, seed=2))
    tensors["weight_g_idx"] = (torch.arange(k) // 128).int()
    config, params = ct_conv.convert_wna16(tensors, num_bits=4, group_size=128)
    assert not config.has_g_idx and "weight_g_idx" not in params
    assert_close_rel(dequantize_weight(config, params), ct_dequant, 1e-6)


# ---------------------------------------------------------------------------------------------
# int8 W8A8, FP8 W8A8 / W8A16, FP8 block
# ---------------------------------------------------------------------------------------------


def test_int8_w8a8_dynamic():
    scheme = preset_name_to_scheme("W8A8", ["Linear"])
    tensors, scheme_json, ct_dequant = ct_checkpoint(scheme, "int-quantized", _weight(48, 160))
    config, params = ct_conv.convert(tensors, scheme_json)
    assert config.family == "int8" and config.input_scale == "dynamic"
    assert config.weight_scale_granularity == "channel"
    assert_close_rel(dequantize_weight(config, params), ct_dequant, 1e-6)


def test_int8_w8a8_static_asymmetric_input():
    scheme = QuantizationScheme(
        targets=["Linear"],
        weights=QuantizationArgs(num_bits=8, strategy="channel", symmetric=True),
        input_activations=QuantizationArgs(
            num_bits=8, strategy="tensor", symmetric=False, dynamic=False
        ),
    )
    acts = torch.randn(64, 160) + 0.7
    tensors, scheme_json, ct_dequant = ct_checkpoint(
        scheme, "int-quantized", _weight(48, 160, seed=4), activations=acts
    )
    config, params = ct_conv.convert(tensors, scheme_json)
    assert config.input_scale == "static" and not config.input_symmetric
    assert params["input_scale"].item() == pytest.approx(tensors["input_scale"].item())
    assert params["input_zero_point"].item() == int(tensors["input_zero_point"].item())
    assert params["input_zero_point"].item() != 0
    assert_close_rel(dequantize_weight(config, params), ct_dequant, 1e-6)


@pytest.mark.parametrize("preset", ["FP8", "FP8_DYNAMIC"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp8(preset, dtype):
    scheme = preset_name_to_scheme(preset, ["Linear"])
    acts = torch.randn(32, 192) * 3
    tensors, scheme_json, ct_dequant = ct_checkpoint(
        scheme, "float-quantized", _weight(80, 192, dtype, seed=6), activations=acts
    )
    config, params = ct_conv.convert(tensors, scheme_json)
    assert config.family == "fp8" and config.activation_mode == "w8a8"
    if preset == "FP8":
        assert (config.weight_scale_granularity, config.input_scale) == ("tensor", "static")
        assert params["input_scale"].item() == pytest.approx(acts.abs().max().item() / 448, 1e-2)
    else:
        assert (config.weight_scale_granularity, config.input_scale) == ("channel", "dynamic")
        assert config.input_scale_granularity == "token"
    assert params["weight_scale"].dtype == torch.float32
    assert_close_rel(
        dequantize_weight(config, params), ct_dequant, 1e-6 if dtype == torch.float32 else 2**-8
    )


def test_fp8_weight_only_and_fused_per_tensor_partitions():
    scheme = QuantizationScheme(
        targets=["Linear"], weights=QuantizationArgs(num_bits=8, type="float", strategy="tensor")
    )
    parts = [_weight(n, 128, seed=s) * (s + 1) for s, n in ((0, 32), (1, 16), (2, 16))]
    checkpoints = [ct_checkpoint(scheme, "float-quantized", p) for p in parts]
    fused = {
        "weight": torch.cat([c[0]["weight"] for c in checkpoints]),
        "weight_scale": torch.cat([c[0]["weight_scale"] for c in checkpoints]),
    }
    scheme_json = checkpoints[0][1]
    with pytest.raises(ValueError, match="partition_sizes"):
        ct_conv.convert(fused, scheme_json)
    config, params = ct_conv.convert(fused, scheme_json, partition_sizes=[32, 16, 16])
    assert config.activation_mode == "w8a16"
    assert config.weight_scale_granularity == "channel"
    expected = torch.cat([c[2] for c in checkpoints])
    assert_close_rel(dequantize_weight(config, params), expected, 1e-6)


def test_fp8_block_with_partial_blocks():
    scheme = preset_name_to_scheme("FP8_BLOCK", ["Linear"])
    n, k = 320, 200
    tensors, scheme_json, ct_dequant = ct_checkpoint(
        scheme, "float-quantized", _weight(n, k, seed=7)
    )
    assert tuple(tensors["weight_scale"].shape) == (3, 2)
    config, params = ct_conv.convert(tensors, scheme_json)
    assert config.family == "fp8_block"
    assert_close_rel(dequantize_weight(config, params), ct_dequant, 1e-6)


# ---------------------------------------------------------------------------------------------
# NVFP4 (encode-style global scales), MXFP4, MXFP8
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["NVFP4", "NVFP4A16"])
def test_nvfp4_global_scales_become_decode_multipliers(preset):
    scheme = preset_name_to_scheme(preset, ["Linear"])
    acts = torch.randn(16, 256) * 2
    weight = _weight(64, 256, seed=8)
    tensors, scheme_json, ct_dequant = ct_checkpoint(
        scheme, "nvfp4-pack-quantized", weight, activations=acts
    )
    config, params = ct_conv.convert(tensors, scheme_json)
    assert config.family == "nvfp4"
    g = tensors["weight_global_scale"].item()
    assert g == pytest.approx(448 * 6 / weight.abs().max().item(), rel=1e-6)
    assert params["weight_global_scale"].item() == pytest.approx(1 / g, rel=1e-7)
    if preset == "NVFP4":
        assert config.activation_mode == "w4a4"
        g_a = tensors["input_global_scale"].item()
        assert params["input_global_scale"].item() == pytest.approx(1 / g_a, rel=1e-7)
    else:
        assert config.activation_mode == "w4a16" and "input_global_scale" not in params
    assert torch.equal(params["weight"], tensors["weight_packed"])
    # The package dequantizes in bf16; ours is exact in fp32.
    assert_close_rel(dequantize_weight(config, params), ct_dequant.float(), 2**-8)
    assert_close_rel(dequantize_weight(config, params), weight, 0.15)


def test_nvfp4_fused_partitions_take_the_max_encode_scale(caplog):
    scheme = preset_name_to_scheme("NVFP4A16", ["Linear"])
    parts = [_weight(32, 128, seed=s) for s in (1, 2)]
    shared = generate_gparam(torch.cat(parts).min(), torch.cat(parts).max())
    same = [ct_checkpoint(scheme, "nvfp4-pack-quantized", p, global_scale=shared) for p in parts]
    fused = {
        "weight_packed": torch.cat([c[0]["weight_packed"] for c in same]),
        "weight_scale": torch.cat([c[0]["weight_scale"] for c in same]),
        "weight_global_scale": torch.cat([c[0]["weight_global_scale"] for c in same]),
    }
    config, params = ct_conv.convert(fused, same[0][1])
    assert config.weight_shape == (64, 128)
    assert_close_rel(
        dequantize_weight(config, params), torch.cat([c[2] for c in same]).float(), 2**-8
    )
    # Different per-partition scales: the max encode scale (smallest decode), with a warning.
    fused["weight_global_scale"] = torch.tensor([300.0, 500.0])
    with caplog.at_level(logging.WARNING):
        _, params = ct_conv.convert(fused, same[0][1])
    assert params["weight_global_scale"].item() == pytest.approx(1 / 500.0)
    assert "different values" in caplog.text


@pytest.mark.parametrize("preset", ["MXFP4", "MXFP4A16"])
def test_mxfp4(preset):
    scheme = preset_name_to_scheme(preset, ["Linear"])
    weight = _weight(48, 256, seed=9)
    tensors, scheme_json, ct_dequant = ct_checkpoint(scheme, "mxfp4-pack-quantized", weight)
    config, params = ct_conv.convert(tensors, scheme_json)
    assert config.family == "mxfp4"
    assert config.activation_mode == ("w4a4" if preset == "MXFP4" else "w4a16")
    assert torch.equal(params["weight_scale"], tensors["weight_scale"])
    # e2m1 * 2**e is exact in bf16, so the package's bf16 result is exact too.
    assert torch.equal(dequantize_weight(config, params), ct_dequant.float())


def test_mxfp4_e8m0_typed_scale_is_read_as_bytes():
    if not hasattr(torch, "float8_e8m0fnu"):
        pytest.skip("this torch has no float8_e8m0fnu")
    scheme = preset_name_to_scheme("MXFP4A16", ["Linear"])
    tensors, scheme_json, ct_dequant = ct_checkpoint(
        scheme, "mxfp4-pack-quantized", _weight(16, 64, seed=1)
    )
    tensors["weight_scale"] = tensors["weight_scale"].view(torch.float8_e8m0fnu)
    config, params = ct_conv.convert(tensors, scheme_json)
    assert params["weight_scale"].dtype == torch.uint8
    assert torch.equal(dequantize_weight(config, params), ct_dequant.float())


@pytest.mark.parametrize("preset", ["MXFP8", "MXFP8A16"])
def test_mxfp8(preset):
    scheme = preset_name_to_scheme(preset, ["Linear"])
    tensors, scheme_json, ct_dequant = ct_checkpoint(
        scheme, "mxfp8-quantized", _weight(40, 128, seed=10)
    )
    config, params = ct_conv.convert(tensors, scheme_json)
    assert config.family == "mxfp8"
    assert config.activation_mode == ("w8a8" if preset == "MXFP8" else "w8a16")
    assert_close_rel(dequantize_weight(config, params), ct_dequant.float(), 2**-8)


# ---------------------------------------------------------------------------------------------
# Every ValueError
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def w4a16_asym():
    scheme = preset_name_to_scheme("W4A16_ASYM", ["Linear"])
    tensors, scheme_json, _ = ct_checkpoint(scheme, "pack-quantized", _weight(16, 256, seed=1))
    return tensors, scheme_json


def _without(tensors, name):
    return {k: v for k, v in tensors.items() if k != name}


def _with(tensors, name, value):
    return {**tensors, name: value}


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda t: _without(t, "weight_packed"), r"weight_packed: missing; expected .*int32"),
        (lambda t: _without(t, "weight_shape"), r"weight_shape: missing"),
        (lambda t: _without(t, "weight_zero_point"), r"weight_zero_point: missing"),
        (lambda t: _with(t, "weight_packed", t["weight_packed"].float()),
         r"weight_packed: expected dtype int32, found float32"),
        (lambda t: _with(t, "weight_packed", t["weight_packed"][:, :-1]),
         r"weight_packed: expected shape \[16, 32\], found \[16, 31\]"),
        (lambda t: _with(t, "weight_scale", t["weight_scale"][:, :1]),
         r"weight_scale: expected shape \[16, 2\], found \[16, 1\]"),
        (lambda t: _with(t, "weight_zero_point", t["weight_zero_point"][:1]),
         r"weight_zero_point: expected shape \[2, 2\], found \[1, 2\]"),
        (lambda t: _with(t, "weight_shape", torch.tensor([16, 0])),
         r"weight_shape: expected two positive sizes"),
        (lambda t: _with(t, "weight_g_idx", torch.full((256,), 5, dtype=torch.int32)),
         r"weight_g_idx: expected group indices in \[0, 2\), found values in \[5, 5\]"),
    ],
)
def test_wna16_errors_name_the_tensor(w4a16_asym, edit, match):
    tensors, scheme_json = w4a16_asym
    with pytest.raises(ValueError, match=match):
        ct_conv.convert(edit(tensors), scheme_json)


def test_wna16_config_errors(w4a16_asym):
    tensors, _ = w4a16_asym
    with pytest.raises(ValueError, match="num_bits=3 is not supported; expected 4 or 8"):
        ct_conv.convert_wna16(tensors, num_bits=3, group_size=128, symmetric=False)
    with pytest.raises(ValueError, match="weight_zero_point: expected no such tensor"):
        ct_conv.convert_wna16(tensors, num_bits=4, group_size=128, symmetric=True)
    channel = _with(tensors, "weight_scale", tensors["weight_scale"][:, :1])
    channel = _with(channel, "weight_zero_point", tensors["weight_zero_point"][:, :1])
    channel = _with(channel, "weight_g_idx", torch.zeros(256, dtype=torch.int32))
    with pytest.raises(ValueError, match="weight_g_idx: expected no act-order map"):
        ct_conv.convert_wna16(channel, num_bits=4, group_size=None, symmetric=False)
    with pytest.raises(ValueError, match="expected a mapping of tensor name"):
        ct_conv.convert_wna16([1, 2], num_bits=4, group_size=128)


def _fp8_tensors(n=16, k=128, scale_shape=(16, 1)):
    return {
        "weight": torch.randn(n, k).to(torch.float8_e4m3fn),
        "weight_scale": torch.rand(scale_shape) + 0.1,
    }


def test_w8a8_errors():
    with pytest.raises(ValueError, match=r"weight: expected a 2-D tensor"):
        ct_conv.convert_fp8({"weight": torch.zeros(4, dtype=torch.float8_e4m3fn)})
    with pytest.raises(ValueError, match=r"weight: expected dtype float8_e4m3fn, found int8"):
        ct_conv.convert_fp8({"weight": torch.zeros(4, 4, dtype=torch.int8)})
    with pytest.raises(ValueError, match=r"weight_scale: expected shape \[16, 1\] or \[16\]"):
        ct_conv.convert_fp8(_fp8_tensors(scale_shape=(8, 1)))
    with pytest.raises(ValueError, match=r"weight scale strategy='group' is not supported"):
        ct_conv.convert_fp8(_fp8_tensors(), weight_strategy="group")
    with pytest.raises(ValueError, match=r"weight_scale: expected a scalar, \[1\], or \[P\]"):
        ct_conv.convert_fp8(_fp8_tensors(), weight_strategy="tensor")
    with pytest.raises(ValueError, match=r"input_scale: missing"):
        ct_conv.convert_fp8(_fp8_tensors(), input_dynamic=False)
    int8 = {"weight": torch.ones(16, 128, dtype=torch.int8), "weight_scale": torch.rand(16, 1)}
    with pytest.raises(ValueError, match="weight_zero_point: expected no such tensor"):
        ct_conv.convert_int8({**int8, "weight_zero_point": torch.zeros(16, 1)})
    static = {**int8, "input_scale": torch.tensor([0.1]),
              "input_zero_point": torch.tensor([1, 2], dtype=torch.int8)}
    with pytest.raises(ValueError, match="input_zero_point: expected one value, found 2"):
        ct_conv.convert_int8(static, input_dynamic=False, input_symmetric=False)


def test_fp8_block_errors():
    tensors = _fp8_tensors(n=200, k=256, scale_shape=(2, 2))
    with pytest.raises(ValueError, match=r"block_structure=\[64, 64\] is not supported"):
        ct_conv.convert_fp8_block(tensors, block_structure=[64, 64])
    with pytest.raises(ValueError, match=r"weight_scale: expected shape \[2, 2\], found \[1, 2\]"):
        ct_conv.convert_fp8_block({**tensors, "weight_scale": torch.rand(1, 2)})


def _nvfp4_tensors(n=16, k=64):
    return {
        "weight_packed": torch.randint(0, 256, (n, k // 2), dtype=torch.uint8),
        "weight_scale": (torch.rand(n, k // 16) + 0.5).to(torch.float8_e4m3fn),
        "weight_global_scale": torch.tensor([400.0]),
        "input_global_scale": torch.tensor([900.0]),
    }


def test_fp4_errors():
    t = _nvfp4_tensors()
    with pytest.raises(ValueError, match=r"weight_packed: expected K = 2 \* columns to be a "
                       r"multiple of 16, found shape \[16, 12\]"):
        ct_conv.convert_nvfp4({**t, "weight_packed": t["weight_packed"][:, :12]})
    with pytest.raises(ValueError, match=r"weight_scale: expected dtype float8_e4m3fn"):
        ct_conv.convert_nvfp4({**t, "weight_scale": t["weight_scale"].float()})
    with pytest.raises(ValueError, match=r"weight_global_scale: expected a finite positive"):
        ct_conv.convert_nvfp4({**t, "weight_global_scale": torch.tensor([0.0])})
    with pytest.raises(ValueError, match=r"input_global_scale: missing"):
        ct_conv.convert_nvfp4(_without(t, "input_global_scale"))
    with pytest.raises(ValueError, match=r"weight_global_scale: expected a scalar"):
        ct_conv.convert_nvfp4({**t, "weight_global_scale": torch.ones(1, 2)})
    mx = {"weight_packed": t["weight_packed"], "weight_scale": torch.zeros(16, 2)}
    with pytest.raises(ValueError, match=r"weight_scale: expected dtype uint8"):
        ct_conv.convert_mxfp4(mx)
    with pytest.raises(ValueError, match=r"weight: expected K to be a multiple of 32"):
        ct_conv.convert_mxfp8(
            {"weight": torch.zeros(4, 48, dtype=torch.float8_e4m3fn),
             "weight_scale": torch.zeros(4, 1, dtype=torch.uint8)}
        )


def test_scheme_errors(w4a16_asym):
    tensors, scheme_json = w4a16_asym
    with pytest.raises(ValueError, match="expected a 'weights' mapping"):
        ct_conv.convert(tensors, {"format": "pack-quantized"})
    with pytest.raises(ValueError, match="format='marlin-24' .* is not supported"):
        ct_conv.convert(tensors, scheme_json, format="marlin-24")
    with_acts = {**scheme_json, "input_activations": {"num_bits": 8, "type": "int"}}
    with pytest.raises(ValueError, match="expected weight-only"):
        ct_conv.convert(tensors, with_acts)
    int8_w = {"weights": {"num_bits": 8, "type": "int", "strategy": "channel"}}
    with pytest.raises(ValueError, match="W8A16 int8.* is not a family"):
        ct_conv.convert({}, int8_w, format="int-quantized")
    mx_fp8_acts = {
        "weights": {"num_bits": 4, "type": "float", "strategy": "group", "group_size": 32},
        "input_activations": {"num_bits": 8, "type": "float"},
    }
    with pytest.raises(ValueError, match="expected no input_activations or float4 ones"):
        ct_conv.convert({}, mx_fp8_acts, format="mxfp4-pack-quantized")
    fp8_w = {"num_bits": 8, "type": "float", "strategy": "channel"}
    int_acts = {"num_bits": 8, "type": "int", "dynamic": True}
    with pytest.raises(ValueError, match="expected no input_activations or float8 ones"):
        ct_conv.convert({}, {"weights": fp8_w, "input_activations": int_acts},
                        format="float-quantized")
    fp8_acts = {"num_bits": 8, "type": "float", "dynamic": True}
    with pytest.raises(ValueError, match="expected no input_activations or int8 ones"):
        ct_conv.convert({}, {"weights": int8_w["weights"], "input_activations": fp8_acts},
                        format="int-quantized")
    block_w = {"weights": {**fp8_w, "strategy": "block", "block_structure": [128, 128]}}
    with pytest.raises(ValueError, match="block-scaled FP8 weights without input_activations"):
        ct_conv.convert({}, block_w, format="float-quantized")


def test_finish_rejects_params_outside_the_contract(w4a16_asym):
    tensors, scheme_json = w4a16_asym
    config, params = ct_conv.convert(tensors, scheme_json)
    with pytest.raises(ValueError, match=r"produced parameters \['stray'\]"):
        finish(config, {**params, "stray": torch.ones(1)}, "test")
    with pytest.raises(ValueError, match=r"test.weight_scale: expected shape"):
        finish(config, {**params, "weight_scale": params["weight_scale"][:1]}, "test")
    reader = CheckpointTensors({"x": torch.ones(3)}, "conv")
    with pytest.raises(ValueError, match=r"conv.x: expected a 2-D tensor"):
        reader.take_2d("x", (torch.float32,), "thing")


# ---------------------------------------------------------------------------------------------
# End to end: a converted layer runs on the kernel the registry picks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "preset,fmt,rel",
    [
        ("W4A16", "pack-quantized", 1e-5),
        ("W4A16_ASYM", "pack-quantized", 1e-5),
        ("MXFP4A16", "mxfp4-pack-quantized", 1e-5),
        ("NVFP4A16", "nvfp4-pack-quantized", 1e-2),  # the package's reference is bf16
        ("FP8_DYNAMIC", "float-quantized", 6e-2),  # activations are quantized to FP8 too
        ("FP8_BLOCK", "float-quantized", 6e-2),
    ],
)
def test_converted_layer_runs_on_the_chosen_kernel(preset, fmt, rel):
    from kernel_core import init_kernel
    from kernel_core.converters import load_into_layer

    scheme = preset_name_to_scheme(preset, ["Linear"])
    tensors, scheme_json, ct_dequant = ct_checkpoint(scheme, fmt, _weight(256, 256, seed=12))
    config, params = ct_conv.convert(tensors, scheme_json, act_dtype=torch.float32)
    layer = torch.nn.Module()
    load_into_layer(layer, params)
    kernel = init_kernel(config)
    kernel.process_weights_after_loading(layer)
    x = torch.randn(5, 256, generator=torch.Generator().manual_seed(1))
    out = kernel.apply_weights(layer, x)
    assert out.shape == (5, 256) and out.dtype == torch.float32
    assert_close_rel(out, x.double() @ ct_dequant.double().T, rel)
