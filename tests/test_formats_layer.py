"""The bridge to the layer parameter contract: make_layer / quantize_weight / dequantize_weight."""

from __future__ import annotations

import pytest
import torch

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
from kernel_core.formats import (
    DEFAULT_INPUT_AMAX,
    dequantize_int,
    dequantize_weight,
    make_act_order_g_idx,
    make_layer,
    qdq_mxfp4,
    qdq_mxfp8,
    qdq_nvfp4,
    quantize_weight,
    unpack_along_k,
)
from kernel_core.params import validate_layer_params
from kernel_core.scalar_types import scalar_types

u4b8, u4, u8b128, u8 = (
    scalar_types.uint4b8, scalar_types.uint4, scalar_types.uint8b128, scalar_types.uint8
)

# (config, largest relative error ||W_deq - W|| / ||W|| allowed)
CASES = [
    (MPLinearLayerConfig(weight_shape=(96, 256), weight_type=u4b8, group_size=128), 0.15),
    (MPLinearLayerConfig(weight_shape=(64, 256), weight_type=u4, zero_points=True, group_size=64,
                         act_dtype=torch.float16), 0.15),
    (MPLinearLayerConfig(weight_shape=(64, 256), weight_type=u8b128, group_size=-1), 0.02),
    (MPLinearLayerConfig(weight_shape=(64, 128), weight_type=u8, zero_points=True, group_size=32,
                         act_dtype=torch.float32), 0.02),
    (MPLinearLayerConfig(weight_shape=(64, 256), weight_type=u4b8, group_size=64,
                         has_g_idx=True), 0.15),
    (MPLinearLayerConfig(weight_shape=(32, 320), weight_type=u4, zero_points=True,
                         group_size=128, has_g_idx=True), 0.15),
    (MPLinearLayerConfig(weight_shape=(32, 256), full_weight_shape=(32, 512), weight_type=u4b8,
                         group_size=128, has_g_idx=True), 0.15),
    (Int8ScaledMMLinearLayerConfig(weight_shape=(64, 128)), 0.02),
    (Int8ScaledMMLinearLayerConfig(weight_shape=(64, 128), weight_scale_granularity="tensor",
                                   input_scale="static"), 0.03),
    (Int8ScaledMMLinearLayerConfig(weight_shape=(64, 128), input_scale="static",
                                   input_symmetric=False), 0.02),
    (FP8ScaledMMLinearLayerConfig(weight_shape=(64, 128)), 0.05),
    (FP8ScaledMMLinearLayerConfig(weight_shape=(64, 128), weight_scale_granularity="tensor",
                                  input_scale="static", input_scale_granularity="tensor"), 0.05),
    (FP8ScaledMMLinearLayerConfig(weight_shape=(64, 128), activation_mode="w8a16"), 0.05),
    (Fp8BlockLinearLayerConfig(weight_shape=(256, 384)), 0.05),
    (Fp8BlockLinearLayerConfig(weight_shape=(200, 300)), 0.05),
    (NvFp4LinearLayerConfig(weight_shape=(64, 128)), 0.15),
    (NvFp4LinearLayerConfig(weight_shape=(48, 64), activation_mode="w4a16"), 0.15),
    (MxFp4LinearLayerConfig(weight_shape=(64, 128)), 0.2),
    (MxFp4LinearLayerConfig(weight_shape=(64, 128), activation_mode="w4a4"), 0.2),
    (Mxfp8LinearLayerConfig(weight_shape=(64, 128)), 0.05),
    (Mxfp8LinearLayerConfig(weight_shape=(32, 64), activation_mode="w8a16"), 0.05),
]


def case_id(case) -> str:
    return case[0].short()


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_make_layer_meets_contract_and_decodes_close(case) -> None:
    config, tolerance = case
    layer = make_layer(config, seed=3)
    specs = FAMILIES[config.family].parameter_specs(config)
    found = validate_layer_params(layer, specs)
    assert sorted(found) == sorted(name for name, _ in layer.named_parameters())
    for param in layer.parameters():
        assert isinstance(param, torch.nn.Parameter) and not param.requires_grad
    reference = layer.reference_weight
    assert reference.dtype == torch.float32 and reference.shape == config.weight_shape
    assert bool((reference != 0).all())
    decoded = dequantize_weight(config, layer)
    assert decoded.dtype == torch.float32 and decoded.shape == config.weight_shape
    rel = ((decoded - reference).norm() / reference.norm()).item()
    assert 1e-4 < rel < tolerance  # it quantized, and not badly
    as_dict = dequantize_weight(config, dict(layer.named_parameters()), dtype=torch.bfloat16)
    assert as_dict.dtype == torch.bfloat16
    assert torch.equal(as_dict, decoded.to(torch.bfloat16))


def test_reference_weight_is_a_non_persistent_buffer() -> None:
    config = MxFp4LinearLayerConfig(weight_shape=(16, 64))
    layer = make_layer(config)
    assert "reference_weight" not in dict(layer.named_parameters())
    assert "reference_weight" in dict(layer.named_buffers())
    assert "reference_weight" not in layer.state_dict()


def test_make_layer_is_seeded() -> None:
    config = NvFp4LinearLayerConfig(weight_shape=(16, 64))
    a, b, c = make_layer(config, seed=1), make_layer(config, seed=1), make_layer(config, seed=2)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.reference_weight, b.reference_weight)
    assert not torch.equal(a.reference_weight, c.reference_weight)
    assert 0.03 < a.reference_weight.std().item() < 0.07


def test_make_layer_uses_the_given_weight() -> None:
    config = Mxfp8LinearLayerConfig(weight_shape=(8, 32))
    weight = torch.randn(8, 32, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    layer = make_layer(config, weight)
    assert torch.equal(layer.reference_weight, weight.float())


def test_mp_scale_dtype_follows_act_dtype() -> None:
    for act, expected in [(torch.float16, torch.float16), (torch.bfloat16, torch.bfloat16),
                          (torch.float32, torch.float32)]:
        config = MPLinearLayerConfig(weight_shape=(16, 128), act_dtype=act)
        assert make_layer(config).weight_scale.dtype == expected


def test_mp_weight_is_the_packed_codes() -> None:
    config = MPLinearLayerConfig(weight_shape=(32, 256), weight_type=u4, zero_points=True,
                                 group_size=64, has_g_idx=True)
    layer = make_layer(config, seed=5)
    codes = unpack_along_k(layer.weight, 4, 256)
    direct = dequantize_int(codes, layer.weight_scale, u4, 64,
                            zero_point=layer.weight_zero_point, g_idx=layer.weight_g_idx)
    assert torch.equal(direct, dequantize_weight(config, layer))


def test_act_order_g_idx_is_a_balanced_permutation() -> None:
    g_idx = make_act_order_g_idx(512, 128, seed=4)
    assert g_idx.dtype == torch.int32 and g_idx.shape == (512,)
    assert torch.bincount(g_idx.long()).tolist() == [128] * 4
    assert not torch.equal(g_idx, (torch.arange(512) // 128).int())  # scattered, not contiguous
    assert torch.equal(make_act_order_g_idx(64, -1), torch.zeros(64, dtype=torch.int32))


def test_given_g_idx_is_used() -> None:
    config = MPLinearLayerConfig(weight_shape=(16, 256), group_size=128, has_g_idx=True)
    g_idx = make_act_order_g_idx(256, 128, seed=9)
    layer = make_layer(config, g_idx=g_idx)
    assert torch.equal(layer.weight_g_idx, g_idx)


def test_row_parallel_act_order_scales_cover_the_full_layer() -> None:
    config = MPLinearLayerConfig(weight_shape=(16, 256), full_weight_shape=(16, 1024),
                                 group_size=128, has_g_idx=True)
    layer = make_layer(config)
    assert layer.weight_scale.shape == (16, 8)


def test_static_input_scales() -> None:
    int8_sym = make_layer(Int8ScaledMMLinearLayerConfig(weight_shape=(8, 32), input_scale="static"))
    assert int8_sym.input_scale.item() == pytest.approx(DEFAULT_INPUT_AMAX / 127)
    int8_asym = make_layer(
        Int8ScaledMMLinearLayerConfig(weight_shape=(8, 32), input_scale="static",
                                      input_symmetric=False),
        input_amax=2.0,
    )
    assert int8_asym.input_scale.item() == pytest.approx(3.0 / 255)
    assert int8_asym.input_zero_point.dtype == torch.int32
    assert int8_asym.input_zero_point.item() == -43
    fp8 = make_layer(
        FP8ScaledMMLinearLayerConfig(weight_shape=(8, 32), weight_scale_granularity="tensor",
                                     input_scale="static", input_scale_granularity="tensor"),
        input_amax=8.0,
    )
    assert fp8.input_scale.item() == pytest.approx(8.0 / 448)
    nvfp4 = make_layer(NvFp4LinearLayerConfig(weight_shape=(8, 32)))
    assert nvfp4.input_global_scale.item() == pytest.approx(DEFAULT_INPUT_AMAX / 2688)
    assert nvfp4.weight_global_scale.item() == pytest.approx(
        nvfp4.reference_weight.abs().max().item() / 2688
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: quantize_weight(MxFp4LinearLayerConfig(weight_shape=(8, 64)), torch.randn(8, 32)),
         r"expected shape \[8, 64\]"),
        (lambda: quantize_weight(MPLinearLayerConfig(weight_shape=(8, 128)), torch.randn(8, 128),
                                 g_idx=torch.zeros(128, dtype=torch.int32)), "has_g_idx"),
        (lambda: quantize_weight(object(), torch.randn(8, 128)), "families"),
        (lambda: dequantize_weight(Mxfp8LinearLayerConfig(weight_shape=(8, 64)),
                                   {"weight": torch.zeros(8, 64).to(torch.float8_e4m3fn)}),
         "weight_scale: missing"),
        (lambda: dequantize_weight(Mxfp8LinearLayerConfig(weight_shape=(8, 64)),
                                   {"weight": torch.zeros(8, 64).to(torch.float8_e4m3fn),
                                    "weight_scale": torch.zeros(8, 3, dtype=torch.uint8)}),
         r"weight_scale: expected shape \[8, 2\]"),
        (lambda: make_layer(Int8ScaledMMLinearLayerConfig(weight_shape=(8, 32),
                                                          input_scale="static"), input_amax=-1.0),
         "input_amax"),
    ],
)
def test_layer_bad_input(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_per_call_paths_trace_without_graph_breaks() -> None:
    """The emulation kernels call these on every forward under torch.compile(fullgraph=True)."""
    mp = MPLinearLayerConfig(weight_shape=(32, 256), weight_type=u4, zero_points=True,
                             group_size=64, has_g_idx=True)
    nvfp4 = NvFp4LinearLayerConfig(weight_shape=(32, 256))
    mp_layer, nvfp4_layer = make_layer(mp), make_layer(nvfp4)
    global_scale = nvfp4_layer.input_global_scale

    def forward(x: torch.Tensor) -> torch.Tensor:
        w = dequantize_weight(mp, mp_layer, x.dtype)
        w = w + dequantize_weight(nvfp4, nvfp4_layer, x.dtype)
        return qdq_nvfp4(x, global_scale) @ w.t() + qdq_mxfp4(x) @ w.t() + qdq_mxfp8(x) @ w.t()

    torch._dynamo.reset()
    compiled = torch.compile(forward, backend="eager", fullgraph=True)
    x = torch.randn(4, 256, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    assert torch.equal(compiled(x), forward(x))
