"""CPU tests of kernel-core-cutlass: registration, probes, refusals, the tile heuristic, the
parameter processing and the fake (meta) implementations of the custom ops."""

from __future__ import annotations

import pytest
import torch

from kernel_core.families.fp8 import FP8ScaledMMLinearLayerConfig
from kernel_core.families.fp8_block import Fp8BlockLinearLayerConfig
from kernel_core.families.int8 import Int8ScaledMMLinearLayerConfig
from kernel_core.formats.layer import make_layer
from kernel_core.kernel import Priority
from kernel_core_cutlass import ops, plugin
from kernel_core_cutlass.kernels import (
    CutlassFp8BlockScaledMMLinearKernel,
    CutlassFP8ScaledMMLinearKernel,
    CutlassInt8ScaledMMLinearKernel,
)
from kernel_core_cutlass.tiles import (
    BlockTileConfig,
    TileConfig,
    block_scaled_mm_tile,
    scaled_mm_tile,
)

KERNELS = (
    CutlassFP8ScaledMMLinearKernel,
    CutlassInt8ScaledMMLinearKernel,
    CutlassFp8BlockScaledMMLinearKernel,
)


def test_hook_registers_the_three_kernels_with_metadata():
    seen: list[type] = []
    plugin.register_kernels(seen.append)
    assert seen == list(KERNELS)
    assert {k.family for k in seen} == {"fp8", "int8", "fp8_block"}
    for kernel in seen:
        assert kernel.priority == Priority.SPECIALIZED
        assert kernel.platforms == frozenset({"cuda"})


def test_entry_point_registers_into_the_global_registry():
    from kernel_core.registry import registry

    registry.reload()
    names = {k.name for k in registry.kernels()}
    assert {k.name for k in KERNELS} <= names
    assert registry.get("CutlassFP8ScaledMMLinearKernel").provider == "cutlass"


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(
    "capability, needle", [(80, "found compute capability 8.0"), (89, "8.9"), (100, "10.0")]
)
def test_is_supported_refuses_other_architectures_with_a_reason(kernel, capability, needle):
    ok, reason = kernel.is_supported(capability)
    assert not ok and "SM90" in reason and needle in reason


@pytest.mark.parametrize("kernel", KERNELS)
def test_is_supported_without_a_gpu_says_so(kernel, monkeypatch):
    monkeypatch.setattr("kernel_core_cutlass.kernels.current_compute_capability", lambda: None)
    ok, reason = kernel.is_supported()
    assert not ok and "no CUDA device" in reason


def test_is_supported_names_a_missing_toolchain(monkeypatch):
    monkeypatch.setattr(ops, "_nvcc", lambda: None)
    ok, reason = CutlassFP8ScaledMMLinearKernel.is_supported(90)
    assert not ok and "nvcc" in reason
    monkeypatch.setattr(ops, "_nvcc", lambda: "/usr/bin/nvcc")
    monkeypatch.setattr(ops, "cutlass_include_dirs", lambda: None)
    ok, reason = CutlassFP8ScaledMMLinearKernel.is_supported(90)
    assert not ok and "nvidia-cutlass" in reason


def test_cutlass_headers_come_from_the_wheel():
    dirs = ops.cutlass_include_dirs()
    assert dirs is not None, "the nvidia-cutlass wheel is a dependency of this plugin"
    assert (dirs[0] / "cutlass" / "gemm" / "collective" / "collective_builder.hpp").is_file()
    assert (dirs[1] / "cutlass" / "util" / "packed_stride.hpp").is_file()


def fp8_config(**kw) -> FP8ScaledMMLinearLayerConfig:
    return FP8ScaledMMLinearLayerConfig(weight_shape=kw.pop("weight_shape", (256, 512)), **kw)


def test_fp8_refuses_w8a16_and_points_to_marlin():
    ok, reason = CutlassFP8ScaledMMLinearKernel.can_implement(fp8_config(activation_mode="w8a16"))
    assert not ok and "Marlin" in reason


@pytest.mark.parametrize(
    "config, needle",
    [
        (fp8_config(out_dtype=torch.float32), "bfloat16 or float16"),
        (fp8_config(weight_shape=(256, 520)), "multiple of 16, found 520"),
        (fp8_config(weight_shape=(260, 512)), "multiple of 8, found 260"),
        (Int8ScaledMMLinearLayerConfig(weight_shape=(256, 24)), "multiple of 16, found 24"),
        (Fp8BlockLinearLayerConfig(weight_shape=(256, 320)), "multiple of 128, found 320"),
    ],
)
def test_can_implement_refusals_name_the_constraint(config, needle):
    kernel = {"fp8": CutlassFP8ScaledMMLinearKernel, "int8": CutlassInt8ScaledMMLinearKernel,
              "fp8_block": CutlassFp8BlockScaledMMLinearKernel}[config.family]
    ok, reason = kernel.can_implement(config)
    assert not ok and needle in reason
    with pytest.raises(ValueError, match="cannot implement"):
        kernel(config)


@pytest.mark.parametrize("m, expected", [
    (1, TileConfig.SWAP_64x16), (16, TileConfig.SWAP_64x16),
    (17, TileConfig.SWAP_64x64), (64, TileConfig.SWAP_64x64),
    (65, TileConfig.PINGPONG_64x128), (128, TileConfig.PINGPONG_64x128),
    (256, TileConfig.PINGPONG_64x128),
    (257, TileConfig.COOPERATIVE_128x128), (512, TileConfig.COOPERATIVE_128x128),
    (513, TileConfig.COOPERATIVE_128x256), (2048, TileConfig.COOPERATIVE_128x256),
    (2049, TileConfig.COOPERATIVE_256x128), (4096, TileConfig.COOPERATIVE_256x128),
])
def test_scaled_mm_tile_per_m_range(m, expected):
    assert scaled_mm_tile(m, 8192) == expected


def test_scaled_mm_tile_keeps_narrow_layers_on_128_wide_tiles():
    # N < 4096 has too few 256-wide tile columns to fill the GPU at large M.
    assert scaled_mm_tile(4096, 2048) == TileConfig.COOPERATIVE_128x128


@pytest.mark.parametrize("m, expected", [
    (1, BlockTileConfig.PINGPONG_64x128), (128, BlockTileConfig.PINGPONG_64x128),
    (129, BlockTileConfig.COOPERATIVE_128x128), (4096, BlockTileConfig.COOPERATIVE_128x128),
])
def test_block_scaled_mm_tile_per_m_range(m, expected):
    assert block_scaled_mm_tile(m, 7168) == expected


def test_tile_ids_match_the_cpp_enum():
    header = (ops.CSRC / "scaled_mm_api.h").read_text()
    for name, cpp in [
        ("SWAP_64x16", "kSwap64x16"), ("SWAP_64x64", "kSwap64x64"),
        ("PINGPONG_64x128", "kPingpong64x128"), ("COOPERATIVE_128x128", "kCooperative128x128"),
        ("COOPERATIVE_128x256", "kCooperative128x256"),
        ("COOPERATIVE_256x128", "kCooperative256x128"), ("PINGPONG_64x256", "kPingpong64x256"),
    ]:
        assert f"{cpp} = {int(TileConfig[name])}," in header
    assert f"kNumTileConfigs = {len(TileConfig)}," in header
    for name, cpp in [("PINGPONG_64x128", "kBlockPingpong64x128"),
                      ("COOPERATIVE_128x128", "kBlockCooperative128x128")]:
        assert f"{cpp} = {int(BlockTileConfig[name])}," in header


# --- parameter processing on CPU (no GEMM runs) --------------------------------------------------


@pytest.mark.parametrize("granularity, shape", [
    ("tensor", ()), ("tensor", (1,)), ("channel", (256,)), ("channel", (256, 1)),
])
def test_fp8_accepts_documented_scale_shapes_and_flattens_them(granularity, shape):
    config = fp8_config(weight_scale_granularity=granularity, input_scale="static",
                        input_scale_granularity="tensor")
    layer = make_layer(config, seed=1)
    scale = layer.weight_scale.detach().clone()
    layer.weight_scale = torch.nn.Parameter(scale.reshape(shape), requires_grad=False)
    layer.input_scale = torch.nn.Parameter(layer.input_scale.detach().reshape(()),
                                           requires_grad=False)
    weight = layer.weight
    CutlassFP8ScaledMMLinearKernel(config).process_weights_after_loading(layer)
    assert layer.weight is weight, "the weight is used in place, never copied"
    assert layer.weight_scale.shape == (scale.numel(),)
    assert torch.equal(layer.weight_scale, scale.reshape(-1))
    assert layer.input_scale.shape == (1,)


@pytest.mark.parametrize("granularity, shape, needle", [
    ("channel", (1,), r"expected shape \[256\] or \[256, 1\], found \[1\]"),
    ("channel", (1, 256), r"found \[1, 256\]"),
    ("tensor", (256,), r"expected shape \[\] or \[1\], found \[256\]"),
    ("tensor", (2,), r"found \[2\]"),
])
def test_fp8_refuses_other_scale_shapes_with_the_reason(granularity, shape, needle):
    config = fp8_config(weight_scale_granularity=granularity)
    layer = make_layer(config, seed=2)
    layer.weight_scale = torch.nn.Parameter(torch.rand(shape) + 0.1, requires_grad=False)
    with pytest.raises(ValueError, match=needle):
        CutlassFP8ScaledMMLinearKernel(config).process_weights_after_loading(layer)


def test_int8_asymmetric_precomputes_the_weight_column_sums():
    config = Int8ScaledMMLinearLayerConfig(weight_shape=(256, 512), input_scale="static",
                                           input_symmetric=False)
    layer = make_layer(config, seed=3)
    CutlassInt8ScaledMMLinearKernel(config).process_weights_after_loading(layer)
    expected = layer.weight.to(torch.float64).sum(dim=1)
    assert torch.equal(layer.weight_colsum.to(torch.float64), expected)
    assert torch.equal(layer.input_zero_point_neg, -layer.input_zero_point.float())


def test_int8_symmetric_keeps_no_extra_tensor():
    config = Int8ScaledMMLinearLayerConfig(weight_shape=(256, 512))
    layer = make_layer(config, seed=4)
    before = {name for name, _ in layer.named_parameters()}
    CutlassInt8ScaledMMLinearKernel(config).process_weights_after_loading(layer)
    assert {name for name, _ in layer.named_parameters()} == before


def test_fp8_block_transposes_the_block_scales_to_n_major():
    config = Fp8BlockLinearLayerConfig(weight_shape=(384, 512))
    layer = make_layer(config, seed=5)
    scale = layer.weight_scale.detach().clone()
    CutlassFp8BlockScaledMMLinearKernel(config).process_weights_after_loading(layer)
    assert layer.weight_scale.shape == (4, 3) and layer.weight_scale.is_contiguous()
    assert torch.equal(layer.weight_scale, scale.t())


# --- fake implementations: shapes under the meta device -----------------------------------------


def test_gemm_fake_impls_give_the_output_shape():
    meta = torch.device("meta")
    x = torch.empty(5, 512, dtype=torch.float8_e4m3fn, device=meta)
    w = torch.empty(256, 512, dtype=torch.float8_e4m3fn, device=meta)
    s = torch.empty(5, device=meta)
    ws = torch.empty(1, device=meta)
    out = torch.ops.kernel_core_cutlass.scaled_mm(x, w, s, ws, None, None, None, ws, torch.float16)
    assert out.shape == (5, 256) and out.dtype == torch.float16
    xs = torch.empty(4, 8, device=meta)
    wsb = torch.empty(4, 2, device=meta)
    out = torch.ops.kernel_core_cutlass.block_scaled_mm(x, w, xs, wsb, None, ws, torch.bfloat16)
    assert out.shape == (5, 256) and out.dtype == torch.bfloat16


def test_quantizer_fake_impls_give_the_shapes():
    x = torch.empty(5, 512, dtype=torch.bfloat16, device="meta")
    q, s = torch.ops.kernel_core_cutlass.quantize_fp8_per_group(x, 128)
    assert q.shape == (8, 512) and q.dtype == torch.float8_e4m3fn and s.shape == (4, 8)
    q, s, zp, zp_neg = torch.ops.kernel_core_cutlass.quantize_int8_per_token(x, False)
    assert q.dtype == torch.int8 and s.shape == (5,) and zp.shape == (5,) and zp_neg.shape == (5,)
