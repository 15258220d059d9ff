"""ModelOpt converter on byte-level vectors and round trips.

ModelOpt writes its checkpoints on GPU with its own library, which is not installed here; the
vectors are built in the test (E2M1 nibbles decoded by hand, float weights encoded with the
formats' quantizers into ModelOpt's tensor names and decode-style scales). The NVFP4 converter is
also compared with compressed-tensors' own ModelOpt -> compressed-tensors converter when the
package is installed.
"""

from __future__ import annotations

import importlib
import logging
import os

import pytest
import torch

from kernel_core.converters import compressed_tensors as ct_conv
from kernel_core.converters import modelopt
from kernel_core.formats.fp4 import quantize_nvfp4
from kernel_core.formats.fp8 import quantize_fp8
from kernel_core.formats.layer import dequantize_weight

E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def e2m1_by_hand(packed: torch.Tensor) -> torch.Tensor:
    """Test-side E2M1 decoder: even k in the low nibble, bit 3 the sign."""
    nibbles = torch.stack((packed & 0xF, packed >> 4), dim=-1).flatten(-2).long()
    magnitude = torch.tensor(E2M1, dtype=torch.float64)[nibbles & 7]
    return torch.where(nibbles >= 8, -magnitude, magnitude)


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-6) -> None:
    a, e = actual.double(), expected.double()
    err = (a - e).norm() / e.norm()
    assert err <= rel, f"relative error {err:.3g} > {rel}"


def _weight(n: int, k: int, seed: int) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.05


def modelopt_nvfp4(weight: torch.Tensor, input_amax: float = 3.0) -> dict[str, torch.Tensor]:
    """Test-side ModelOpt NVFP4 encoder: decode-style global scales (amax / (448 * 6))."""
    packed, block_scale, global_scale = quantize_nvfp4(weight)
    return {
        "weight": packed,
        "weight_scale": block_scale,
        "weight_scale_2": global_scale.reshape(()),
        "input_scale": torch.tensor(input_amax / 2688),
    }


def test_nvfp4_hand_decoded_bytes():
    """Bytes 0x2F and 0x97: k0 = 0xF (-6), k1 = 0x2 (1.0), k2 = 0x7 (6), k3 = 0x9 (-0.5)."""
    n, k = 2, 16
    weight = torch.zeros(n, k // 2, dtype=torch.uint8)
    weight[0, 0], weight[0, 1] = 0x2F, 0x97
    weight[1, :] = 0x11  # every value 0.5
    tensors = {
        "weight": weight,
        "weight_scale": torch.tensor([[2.0], [0.25]]).to(torch.float8_e4m3fn),
        "weight_scale_2": torch.tensor(0.5),
        "input_scale": torch.tensor([0.125]),
    }
    config, params = modelopt.convert(tensors, "NVFP4")
    assert config.activation_mode == "w4a4"
    assert params["input_global_scale"].item() == 0.125
    w = dequantize_weight(config, params)
    assert w[0, :4].tolist() == [-6.0, 1.0, 6.0, -0.5]
    assert (w[0, 4:] == 0).all()
    assert (w[1] == 0.5 * 0.25 * 0.5).all()


@pytest.mark.parametrize("activation_mode", ["w4a4", "w4a16"])
def test_nvfp4_round_trip(activation_mode):
    weight = _weight(64, 256, seed=1)
    tensors = modelopt_nvfp4(weight)
    config, params = modelopt.convert_nvfp4(tensors, activation_mode=activation_mode)
    assert ("input_global_scale" in params) == (activation_mode == "w4a4")
    # ModelOpt's formula: e2m1 * e4m3(weight_scale) * weight_scale_2.
    block = tensors["weight_scale"].double().repeat_interleave(16, dim=1)
    expected = e2m1_by_hand(tensors["weight"]) * block * tensors["weight_scale_2"].double()
    assert_close_rel(dequantize_weight(config, params), expected)
    assert_close_rel(expected, weight, 0.15)


def test_nvfp4_fused_partitions_take_the_max_decode_scale(caplog):
    tensors = modelopt_nvfp4(_weight(32, 64, seed=2))
    tensors["weight_scale_2"] = torch.tensor([1e-4, 3e-4, 2e-4])
    tensors["input_scale"] = torch.tensor([1e-3, 1e-3, 1e-3])
    with caplog.at_level(logging.WARNING):
        _, params = modelopt.convert(tensors, "NVFP4")
    assert params["weight_global_scale"].item() == pytest.approx(3e-4)
    assert params["input_global_scale"].item() == pytest.approx(1e-3)
    assert "weight_scale_2: fused partitions have different values" in caplog.text
    assert "input_scale" not in caplog.text


def test_nvfp4_matches_compressed_tensors_modelopt_converter():
    """compressed-tensors' own ModelOpt -> compressed-tensors NVFP4 converter (which inverts the
    scales into encode divisors), then our compressed-tensors converter, must decode the same."""
    if os.environ.get("CI"):
        importlib.import_module("compressed_tensors")  # CI installs it: this must not skip
    else:
        pytest.importorskip("compressed_tensors")
    from compressed_tensors.entrypoints.convert.converters.modelopt_nvfp4 import (
        ModelOptNvfp4Converter,
    )

    tensors = modelopt_nvfp4(_weight(48, 128, seed=3))
    config, ours = modelopt.convert_nvfp4(tensors)
    prefixed = {f"layer.{name}": t.clone() for name, t in tensors.items()}
    converted = ModelOptNvfp4Converter(targets=("re:.*",)).process(prefixed)
    ct_tensors = {name.removeprefix("layer."): t for name, t in converted.items()}
    assert "weight_packed" in ct_tensors and "weight_global_scale" in ct_tensors
    ct_config, theirs = ct_conv.convert_nvfp4(ct_tensors)
    assert ct_config == config
    assert torch.equal(ours["weight"], theirs["weight"])
    assert torch.equal(
        ours["weight_scale"].view(torch.uint8), theirs["weight_scale"].view(torch.uint8)
    )
    for name in ("weight_global_scale", "input_global_scale"):
        assert theirs[name].item() == pytest.approx(ours[name].item(), rel=1e-6)
    assert_close_rel(dequantize_weight(ct_config, theirs), dequantize_weight(config, ours))


def test_fp8_per_tensor_static():
    weight = _weight(40, 96, seed=4)
    q, scale = quantize_fp8(weight, "tensor")
    tensors = {"weight": q, "weight_scale": scale.reshape(()), "input_scale": torch.tensor(0.02)}
    config, params = modelopt.convert(tensors, "FP8")
    assert (config.weight_scale_granularity, config.input_scale) == ("tensor", "static")
    assert params["input_scale"].item() == pytest.approx(0.02)
    assert_close_rel(dequantize_weight(config, params), q.double() * scale.double())


def test_fp8_per_channel_per_token():
    weight = _weight(40, 96, seed=5)
    q, scale = quantize_fp8(weight, "channel")
    config, params = modelopt.convert(
        {"weight": q, "weight_scale": scale}, "FP8_PER_CHANNEL_PER_TOKEN"
    )
    assert (config.weight_scale_granularity, config.input_scale) == ("channel", "dynamic")
    assert config.input_scale_granularity == "token"
    assert_close_rel(dequantize_weight(config, params), q.double() * scale.double().unsqueeze(1))


def test_fp8_fused_per_tensor_becomes_exact_per_channel():
    parts = [_weight(n, 64, seed=s) * (s + 1) for s, n in ((0, 24), (1, 8))]
    encoded = [quantize_fp8(p, "tensor") for p in parts]
    tensors = {
        "weight": torch.cat([q for q, _ in encoded]),
        "weight_scale": torch.cat([s for _, s in encoded]),
        "input_scale": torch.tensor([0.01, 0.03]),
    }
    config, params = modelopt.convert(tensors, "FP8", partition_sizes=[24, 8])
    assert config.weight_scale_granularity == "channel"
    assert params["input_scale"].item() == pytest.approx(0.03)
    expected = torch.cat([q.double() * s.double() for q, s in encoded])
    assert_close_rel(dequantize_weight(config, params), expected)


def test_fp8_weight_only_ignores_input_scale():
    q, scale = quantize_fp8(_weight(8, 32, seed=6), "tensor")
    config, params = modelopt.convert_fp8({"weight": q, "weight_scale": scale},
                                          activation_mode="w8a16")
    assert config.activation_mode == "w8a16" and "input_scale" not in params


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda t: {k: v for k, v in t.items() if k != "weight_scale_2"},
         r"modelopt.weight_scale_2: missing"),
        (lambda t: {**t, "weight_scale_2": torch.tensor(-1.0)},
         r"modelopt.weight_scale_2: expected a finite positive decode multiplier, found -1.0"),
        (lambda t: {**t, "input_scale": torch.tensor(float("inf"))},
         r"modelopt.input_scale: expected a finite positive decode multiplier"),
        (lambda t: {**t, "weight": t["weight"].to(torch.int8)},
         r"modelopt.weight: expected dtype uint8, found int8"),
        (lambda t: {**t, "weight": t["weight"][:, :4]},
         r"modelopt.weight: expected K = 2 \* columns to be a multiple of 16"),
        (lambda t: {**t, "weight_scale": t["weight_scale"][:, :1]},
         r"modelopt.weight_scale: expected shape \[8, 2\], found \[8, 1\]"),
    ],
)
def test_nvfp4_errors(edit, match):
    tensors = modelopt_nvfp4(_weight(8, 32, seed=7))
    with pytest.raises(ValueError, match=match):
        modelopt.convert(edit(tensors), "NVFP4")


def test_fp8_and_algo_errors():
    q, scale = quantize_fp8(_weight(8, 32, seed=8), "tensor")
    with pytest.raises(ValueError, match=r"modelopt.input_scale: missing"):
        modelopt.convert({"weight": q, "weight_scale": scale}, "FP8")
    with pytest.raises(
        ValueError, match=r"modelopt.weight_scale: expected shape \[8, 1\] or \[8\]"
    ):
        modelopt.convert({"weight": q, "weight_scale": scale}, "FP8_PER_CHANNEL_PER_TOKEN")
    with pytest.raises(ValueError, match=r"quant_algo='W4A8_AWQ' is not supported"):
        modelopt.convert({}, "W4A8_AWQ")
