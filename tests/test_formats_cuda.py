"""CUDA parity: every codec gives the same bytes on CUDA as on the CPU (the reference)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from kernel_core import formats as F
from kernel_core.families import (
    FP8ScaledMMLinearLayerConfig,
    Int8ScaledMMLinearLayerConfig,
    MPLinearLayerConfig,
    NvFp4LinearLayerConfig,
)
from kernel_core.scalar_types import scalar_types

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def as_bytes(value):
    """Tensors (or tuples / dataclasses of them) -> CPU uint8 views, for byte comparison."""
    if isinstance(value, F.IntQuantized):
        value = (value.codes, value.scale, value.zero_point, value.g_idx)
    if isinstance(value, tuple | list):
        return [as_bytes(v) for v in value]
    if value is None:
        return None
    flat = value.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8) if flat.dtype != torch.bool else flat


def assert_same_bytes(cpu, cuda) -> None:
    a, b = as_bytes(cpu), as_bytes(cuda)
    if isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_bytes(x, y) if isinstance(x, list) else _equal(x, y)
    else:
        _equal(a, b)


def _equal(a, b) -> None:
    if a is None or b is None:
        assert a is None and b is None
        return
    assert torch.equal(a, b), f"{(a != b).sum().item()} of {a.numel()} bytes differ"


x_act = randn(33, 256, seed=1) * 3
x_weight = randn(96, 512, seed=2) * 0.05
g_idx = F.make_act_order_g_idx(512, 128, seed=3)
codes4 = torch.randint(0, 16, (64, 256), generator=torch.Generator().manual_seed(4),
                       dtype=torch.uint8)
group_scale = torch.rand(64, 2, generator=torch.Generator().manual_seed(8)) + 0.1
codes5 = torch.randint(0, 32, (8, 70), generator=torch.Generator().manual_seed(5),
                       dtype=torch.uint8)

# name -> function of the device: run once with CPU inputs and once with the same inputs on CUDA.
CODECS: dict[str, Callable[[Callable[[torch.Tensor], torch.Tensor]], object]] = {
    "quantize_int sym": lambda d: F.quantize_int(d(x_weight), scalar_types.uint4b8, 128),
    "quantize_int asym bf16 act-order": lambda d: F.quantize_int(
        d(x_weight), scalar_types.uint4, 128, g_idx=d(g_idx), scale_dtype=torch.bfloat16),
    "dequantize_int": lambda d: F.dequantize_int(
        d(codes4), d(group_scale), scalar_types.uint4b8, 128),
    "pack_along_k 4": lambda d: F.pack_along_k(d(codes4), 4),
    "unpack_along_k 4": lambda d: F.unpack_along_k(F.pack_along_k(d(codes4), 4), 4, 256),
    "pack/unpack 5": lambda d: F.unpack_along_k(F.pack_along_k(d(codes5), 5), 5, 70),
    "gptq qweight": lambda d: F.pack_gptq_qweight(d(codes4), 4),
    "awq": lambda d: F.unpack_awq(F.pack_awq(d(codes4))),
    "fp8 tensor": lambda d: F.quantize_fp8(d(x_act), "tensor"),
    "fp8 channel": lambda d: F.quantize_fp8(d(x_weight), "channel"),
    "fp8 token": lambda d: F.quantize_fp8(d(x_act), "token"),
    "fp8 block": lambda d: F.quantize_fp8_block(d(randn(200, 300, seed=6))),
    "fp8 token group": lambda d: F.quantize_fp8_per_token_group(d(x_act)),
    "int8 sym token": lambda d: F.quantize_int8(d(x_act), "token"),
    "int8 asym token": lambda d: F.quantize_int8(d(x_act), "token", symmetric=False),
    "e2m1 encode": lambda d: F.encode_e2m1(d(x_act)),
    "e2m1 decode": lambda d: F.decode_e2m1(d(torch.arange(16, dtype=torch.uint8))),
    "nvfp4": lambda d: F.quantize_nvfp4(d(x_act)),
    "nvfp4 dequantize": lambda d: F.dequantize_nvfp4(*F.quantize_nvfp4(d(x_act))),
    "qdq nvfp4 bf16": lambda d: F.qdq_nvfp4(d(x_act.bfloat16()), d(torch.tensor([0.001]))),
    "mxfp4": lambda d: F.quantize_mxfp4(d(x_act)),
    "qdq mxfp4": lambda d: F.qdq_mxfp4(d(x_act)),
    "e8m0": lambda d: F.float_to_e8m0(d(torch.exp2(randn(1000, seed=7) * 60))),
    "e8m0 to float": lambda d: F.e8m0_to_float(d(torch.arange(256, dtype=torch.uint8))),
    "mxfp8": lambda d: F.quantize_mxfp8(d(x_act)),
    "qdq mxfp8": lambda d: F.qdq_mxfp8(d(x_act)),
}


@pytest.mark.parametrize("name", list(CODECS))
def test_codec_bytes_match_cpu(name: str) -> None:
    codec = CODECS[name]
    cpu = codec(lambda t: t)
    cuda = codec(lambda t: t.cuda())
    assert_same_bytes(cpu, cuda)


@pytest.mark.parametrize(
    "config",
    [
        MPLinearLayerConfig(weight_shape=(64, 256), weight_type=scalar_types.uint4,
                            zero_points=True, has_g_idx=True),
        Int8ScaledMMLinearLayerConfig(weight_shape=(64, 128), input_scale="static",
                                      input_symmetric=False),
        FP8ScaledMMLinearLayerConfig(weight_shape=(64, 128)),
        NvFp4LinearLayerConfig(weight_shape=(64, 128)),
    ],
    ids=lambda c: c.family,
)
def test_make_layer_on_cuda_matches_cpu(config) -> None:
    cpu = F.make_layer(config, seed=1)
    cuda = F.make_layer(config, seed=1, device="cuda")
    for name, param in cpu.named_parameters():
        assert getattr(cuda, name).device.type == "cuda"
        assert_same_bytes(param, getattr(cuda, name))
    assert_same_bytes(F.dequantize_weight(config, cpu), F.dequantize_weight(config, cuda))
