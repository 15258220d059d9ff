"""On the GPU: the conformance kit for every kernel, CUDA-graph replay, torch.compile, every launch
configuration, and NaN-poisoned outputs written in full."""

from __future__ import annotations

import pytest
import torch

from kernel_core.families import (
    FP8ScaledMMLinearLayerConfig,
    MPLinearLayerConfig,
    Mxfp8LinearLayerConfig,
    MxFp4LinearLayerConfig,
    NvFp4LinearLayerConfig,
)
from kernel_core.formats.layer import dequantize_weight, make_layer
from kernel_core.scalar_types import scalar_types
from kernel_core.testing import conformance_tests, relative_error
from kernel_core_marlin import ops
from kernel_core_marlin.kernels import (
    MarlinFp8LinearKernel,
    MarlinMPLinearKernel,
    MarlinMxfp8LinearKernel,
    MarlinMxFp4LinearKernel,
    MarlinNvFp4LinearKernel,
)
from kernel_core_marlin.prepare import Format

TestMarlinMP = conformance_tests(MarlinMPLinearKernel)
TestMarlinNvFp4 = conformance_tests(MarlinNvFp4LinearKernel)
TestMarlinMxFp4 = conformance_tests(MarlinMxFp4LinearKernel)
TestMarlinFp8 = conformance_tests(MarlinFp8LinearKernel)
TestMarlinMxfp8 = conformance_tests(MarlinMxfp8LinearKernel)

pytestmark = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _processed(config, seed: int = 0):
    layer = make_layer(config, seed=seed, device="cuda")
    reference = dequantize_weight(config, layer, dtype=torch.float64)
    kernel = {
        "mp": MarlinMPLinearKernel, "nvfp4": MarlinNvFp4LinearKernel,
        "mxfp4": MarlinMxFp4LinearKernel, "fp8": MarlinFp8LinearKernel,
        "mxfp8": MarlinMxfp8LinearKernel,
    }[config.family](config)
    kernel.process_weights_after_loading(layer)
    return kernel, layer, reference


INT4 = MPLinearLayerConfig(weight_shape=(1000, 2048), group_size=128)
FP4 = NvFp4LinearLayerConfig(weight_shape=(512, 1024), activation_mode="w4a16",
                             act_dtype=torch.float16)


#: Every code format and zero-point flavour, both activation dtypes, unaligned N and K.
FORMATS = {
    "int4": INT4,
    "nvfp4": FP4,
    "uint4-zp-g64-fp16": MPLinearLayerConfig(
        weight_shape=(200, 704), weight_type=scalar_types.uint4, zero_points=True, group_size=64,
        act_dtype=torch.float16),
    "uint8b128-g32": MPLinearLayerConfig(
        weight_shape=(256, 512), weight_type=scalar_types.uint8b128, group_size=32),
    "uint8-zp-channel-fp16": MPLinearLayerConfig(
        weight_shape=(96, 1024), weight_type=scalar_types.uint8, zero_points=True,
        group_size=-1, act_dtype=torch.float16),
    "mxfp4": MxFp4LinearLayerConfig(weight_shape=(320, 1024), activation_mode="w4a16"),
    "fp8-channel": FP8ScaledMMLinearLayerConfig(weight_shape=(256, 528), activation_mode="w8a16"),
    "mxfp8-fp16": Mxfp8LinearLayerConfig(weight_shape=(256, 1024), activation_mode="w8a16",
                                         act_dtype=torch.float16),
}


@needs_cuda
@pytest.mark.parametrize("name", list(FORMATS))
@pytest.mark.parametrize("m", [1, 16, 33])
def test_every_format_through_apply(name: str, m: int) -> None:
    config = FORMATS[name]
    kernel, layer, reference = _processed(config)
    x = torch.randn(m, config.in_features, device="cuda", dtype=config.act_dtype)
    bias = torch.randn(config.out_features, device="cuda", dtype=config.act_dtype)
    out = kernel.apply_weights(layer, x, bias)
    expected = x.double() @ reference.T + bias.double()
    assert bool(torch.isfinite(out).all())
    assert relative_error(out, expected) < 1e-2


@needs_cuda
@pytest.mark.parametrize("config", [INT4, FP4], ids=["int4", "nvfp4"])
@pytest.mark.parametrize("m", [1, 5, 16, 24, 64, 100])
def test_every_launch_config_agrees(config, m: int) -> None:
    kernel, layer, reference = _processed(config)
    x = torch.randn(m, config.in_features, device="cuda", dtype=config.act_dtype)
    expected = x.double() @ reference.T
    n = config.out_features
    for mt in (1, 2, 4, 8):
        for rows, wn, wk in ((1, 1, 8), (2, 1, 8), (2, 2, 4), (1, 4, 2), (2, 4, 2), (1, 8, 1)):
            for pipeline in (0, 1):
                try:
                    out = ops.gemm(x, layer.weight, layer.weight_scale, None, None,
                                   getattr(layer, "weight_channel_scale", None), None,
                                   kernel._fmt, n, kernel._group_size, kernel._zconst, mt, rows,
                                   wn, wk, pipeline)
                except RuntimeError as exc:  # a ring larger than shared memory is refused
                    assert pipeline == 1 and "invalid argument" in str(exc), exc
                    continue
                error = relative_error(out, expected)
                assert error < 1e-2, (mt, rows, wn, wk, pipeline, error)


@needs_cuda
@pytest.mark.parametrize("launch", [
    (37, (8, 2, 4, 2, 0)),
    *(pytest.param((m, cfg), marks=pytest.mark.skipif(
        not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9,
        reason="the bulk pipeline needs compute capability 9.0 or newer"))
      for m, cfg in ((29, (4, 1, 1, 8, 2)), (29, (4, 1, 1, 8, 3)), (7, (1, 1, 1, 16, 3)))),
], ids=["register", "bulk", "flat-w8", "flat-w16"])
def test_poisoned_output_fully_written(launch) -> None:
    m, config = launch
    kernel, layer, reference = _processed(INT4)
    x = torch.randn(m, INT4.in_features, device="cuda", dtype=torch.bfloat16)
    out = torch.full((m, INT4.out_features), float("nan"), device="cuda", dtype=torch.bfloat16)
    empty = x.new_empty(0)
    ops.extension().gemm(x, layer.weight, layer.weight_scale, empty, empty, empty, empty, out,
                         kernel._fmt, kernel._group_size, kernel._zconst, *config, False,
                         torch.cuda.current_stream().cuda_stream)
    assert bool(torch.isfinite(out).all())
    assert relative_error(out, x.double() @ reference.T) < 1e-2


@needs_cuda
@pytest.mark.parametrize("m", [1, 16, 300])
def test_cuda_graph_replay(m: int) -> None:
    kernel, layer, reference = _processed(INT4)
    x = torch.randn(m, INT4.in_features, device="cuda", dtype=torch.bfloat16)
    bias = torch.randn(INT4.out_features, device="cuda", dtype=torch.bfloat16)
    kernel.apply_weights(layer, x, bias)  # build and warm up outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = kernel.apply_weights(layer, x, bias)
    for _ in range(3):
        x.copy_(torch.randn_like(x))
        graph.replay()
        torch.cuda.synchronize()
        expected = x.double() @ reference.T + bias.double()
        assert bool(torch.isfinite(out).all())
        assert relative_error(out, expected) < 1e-2


@needs_cuda
@pytest.mark.parametrize("m", [4, 512])
def test_torch_compile_fullgraph(m: int) -> None:
    kernel, layer, reference = _processed(FP4)
    x = torch.randn(2, m, FP4.in_features, device="cuda", dtype=torch.float16)

    @torch.compile(fullgraph=True)
    def forward(inp: torch.Tensor) -> torch.Tensor:
        return kernel.apply_weights(layer, inp) * 2

    out = forward(x)
    expected = 2 * (x.double() @ reference.T)
    assert relative_error(out, expected) < 1e-2


@needs_cuda
def test_act_order_row_parallel() -> None:
    config = MPLinearLayerConfig(weight_shape=(256, 512), full_weight_shape=(256, 1024),
                                 weight_type=scalar_types.uint4, zero_points=True,
                                 group_size=128, has_g_idx=True, act_dtype=torch.float16)
    layer = make_layer(config, seed=3, device="cuda")
    reference = dequantize_weight(config, layer, dtype=torch.float64)
    kernel = MarlinMPLinearKernel(config)
    kernel.process_weights_after_loading(layer)
    for m in (1, 40, 300):
        x = torch.randn(m, 512, device="cuda", dtype=torch.float16)
        assert relative_error(kernel.apply_weights(layer, x), x.double() @ reference.T) < 1e-2


needs_bulk = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9,
    reason="the bulk pipeline needs a CUDA device of compute capability 9.0 or newer")

#: Shapes for the bulk pipeline: more row tiles than an H100 has SMs (several passes per block at
#: M > 8), K tails inside the last 64-channel chunk and a last stage of fewer chunks than consumer
#: warps, zero-point and act-order scale tables, 8-bit codes (two vectors per lane).
BULK_FORMATS = {
    "int4-g128": MPLinearLayerConfig(weight_shape=(9000, 1024), group_size=128),
    # 527 row tiles: on 132 SMs every block holds 4 or 3 (16 consumer warps serve it, the 3-tile
    # block copying the one-fewer box), groups of 64 (pipeline 6), 25 chunks (a partial stage).
    "uint4-zp-g64": MPLinearLayerConfig(
        weight_shape=(8432, 1600), weight_type=scalar_types.uint4, zero_points=True,
        group_size=64),
    "uint4-zp-g32-fp16": MPLinearLayerConfig(
        weight_shape=(4200, 1568), weight_type=scalar_types.uint4, zero_points=True,
        group_size=32, act_dtype=torch.float16),
    "uint8b128-channel": MPLinearLayerConfig(
        weight_shape=(2200, 1040), weight_type=scalar_types.uint8b128, group_size=-1),
    "nvfp4": NvFp4LinearLayerConfig(weight_shape=(9000, 1024), activation_mode="w4a16"),
    "mxfp4-fp16": MxFp4LinearLayerConfig(weight_shape=(4100, 1536), activation_mode="w4a16",
                                         act_dtype=torch.float16),
    "fp8-channel": FP8ScaledMMLinearLayerConfig(weight_shape=(4100, 1040),
                                                activation_mode="w8a16"),
    "mxfp8": Mxfp8LinearLayerConfig(weight_shape=(2100, 2048), activation_mode="w8a16"),
    "uint4-zp-act-order-fp16": MPLinearLayerConfig(
        weight_shape=(2304, 1024), weight_type=scalar_types.uint4, zero_points=True,
        group_size=128, has_g_idx=True, act_dtype=torch.float16),
}


#: Bulk-pipeline variants as (pipeline, consumer warps): the default consumer (pipeline 2), the
#: flat consumer (pipeline 3) with 8 and 16 warps (16: M <= 8 without act-order only) and the
#: flat consumer decoding only a pass's own tiles in its last group (pipeline 4: 4-bit codes,
#: M <= 16; it runs pipeline 3's instance where every pass of the widest block holds whole tile
#: groups), pipeline 4 planned with a 2-stage ring allowed (pipeline 5; the 4-bit default) and
#: pipeline 5 with the scales applied after each chunk's mma (pipeline 6; int4 layers whose scale
#: groups hold whole chunks, the default for those).
BULK_VARIANTS = {"bulk-w8": (2, 8), "flat-w8": (3, 8), "flat-w16": (3, 16), "flat-tail-w8": (4, 8),
                 "flat-tail-two-stage-w8": (5, 8), "scale-after-mma-w8": (6, 8),
                 "scale-after-mma-w16": (6, 16)}


def _variant_serves(variant: str, m: int, config, kernel) -> bool:
    pipeline, consumers = BULK_VARIANTS[variant]
    if pipeline == 6:
        if consumers <= 8:
            return m <= 16 and kernel._chunk_scales
        # 16 warps: one M tile, blocks of at most one tile group (4 row tiles).
        tiles = -(-config.out_features // 16)
        sms = torch.cuda.get_device_properties(0).multi_processor_count
        return m <= 8 and kernel._chunk_scales and -(-tiles // min(tiles, sms)) <= 4
    if pipeline >= 4:
        return m <= 16 and Format.BITS[kernel._fmt] == 4
    return consumers <= 8 or (m <= 8 and not getattr(config, "has_g_idx", False))


def _force_bulk_variant(monkeypatch: pytest.MonkeyPatch, variant: str) -> None:
    """Make apply_weights launch ``variant`` wherever it would launch the bulk pipeline."""
    pipeline, consumers = BULK_VARIANTS[variant]
    default = ops.launch_config

    def forced(m: int, fmt: int, bulk: bool = False, chunk_scales: bool = False,
               **shape: int) -> tuple[int, int, int, int, int]:
        mt, rows, wn, wk, chosen = default(m, fmt, bulk, chunk_scales, **shape)
        assert chosen in (2, 5, 6), "bulk pipeline not chosen"  # 5, 6: flat consumer (4-bit)
        return mt, rows, wn, consumers, pipeline

    monkeypatch.setattr(ops, "launch_config", forced)


@needs_bulk
@pytest.mark.parametrize("variant", list(BULK_VARIANTS))
@pytest.mark.parametrize("name", list(BULK_FORMATS))
def test_bulk_pipeline_every_format(name: str, variant: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    config = BULK_FORMATS[name]
    kernel, layer, reference = _processed(config)
    bias = torch.randn(config.out_features, device="cuda", dtype=config.act_dtype)
    _force_bulk_variant(monkeypatch, variant)
    served = [m for m in (1, 3, 8, 9, 16)
              if m <= ops.BULK_MAX_M[kernel._fmt] and _variant_serves(variant, m, config, kernel)]
    if not served:
        pytest.skip(f"{variant} does not serve {name} layers")
    for m in served:
        x = torch.randn(m, config.in_features, device="cuda", dtype=config.act_dtype)
        out = kernel.apply_weights(layer, x, bias)
        expected = x.double() @ reference.T + bias.double()
        assert bool(torch.isfinite(out).all()), (name, m)
        error = relative_error(out, expected)
        assert error < 1e-2, (name, m, error)


@needs_bulk
@pytest.mark.parametrize("pipeline", [2, 3], ids=["bulk", "flat"])
@pytest.mark.parametrize("name", ["int4-g128", "nvfp4", "uint4-zp-g32-fp16", "fp8-channel"])
def test_bulk_pipeline_up_to_m_32(name: str, pipeline: int) -> None:
    """M past BULK_MAX_M (up to four M tiles, passes of fewer row tiles) is not chosen by default
    but served."""
    config = BULK_FORMATS[name]
    kernel, layer, reference = _processed(config)
    n = config.out_features
    for m in (9, 16, 17, 27, 32):
        mt = 2 if m <= 16 else 4
        x = torch.randn(m, config.in_features, device="cuda", dtype=config.act_dtype)
        out = ops.gemm(x, layer.weight, layer.weight_scale,
                       getattr(layer, "weight_zero_point", None), None,
                       getattr(layer, "weight_channel_scale", None), None, kernel._fmt, n,
                       kernel._group_size, kernel._zconst, mt, 1, 1, 8, pipeline)
        assert bool(torch.isfinite(out).all()), (name, m)
        error = relative_error(out, x.double() @ reference.T)
        assert error < 1e-2, (name, m, error)


@needs_bulk
@pytest.mark.parametrize("pipeline", [2, 3], ids=["bulk", "flat"])
@pytest.mark.parametrize("config", [INT4, FP4], ids=["int4", "nvfp4"])
def test_bulk_pipeline_consumer_counts(config, pipeline: int) -> None:
    kernel, layer, reference = _processed(config)
    n = config.out_features
    for mt in (1, 2, 4):
        for m in (8 * mt - 5, 8 * mt):
            x = torch.randn(m, config.in_features, device="cuda", dtype=config.act_dtype)
            expected = x.double() @ reference.T
            counts = (2, 4, 8, 16) if pipeline == 3 and mt == 1 else (2, 4, 8)
            for wk in counts:
                out = ops.gemm(x, layer.weight, layer.weight_scale, None, None,
                               getattr(layer, "weight_channel_scale", None), None, kernel._fmt,
                               n, kernel._group_size, kernel._zconst, mt, 1, 1, wk, pipeline)
                error = relative_error(out, expected)
                assert error < 1e-2, (mt, m, wk, pipeline, error)


#: Row tiles per block (N = 16 x SMs x this) that give every length (1..4) of a pass's last tile
#: group at MT = 1 (one pass of up to 16 tiles) and MT = 2 (passes of up to 8: 13 -> 6 + 7); 8
#: (whole groups) runs pipeline 3's instance.
EXACT_TAIL_TILES_PER_BLOCK = (5, 6, 7, 8, 13, 14)


def _exact_tail_configs(tiles: int, pipeline: int) -> list:
    """Layers of 16 x SMs x ``tiles`` rows for the exact-tail pipelines: int4 g128 and NVFP4 for
    4 and 5; for 6 (int4 whose groups hold whole chunks) int4 g128, zero points g64 with fp16
    activations, channelwise, groups of 192 (not a power of two) and channelwise with K = 208 (a
    last chunk only partly filled; groups divide K, so only one group can leave a partial chunk)."""
    n = 16 * torch.cuda.get_device_properties(0).multi_processor_count * tiles
    if pipeline == 6:
        return [MPLinearLayerConfig(weight_shape=(n, 512), group_size=128),
                MPLinearLayerConfig(weight_shape=(n, 512), weight_type=scalar_types.uint4,
                                    zero_points=True, group_size=64, act_dtype=torch.float16),
                MPLinearLayerConfig(weight_shape=(n, 512), group_size=-1),
                MPLinearLayerConfig(weight_shape=(n, 576), group_size=192),
                MPLinearLayerConfig(weight_shape=(n, 208), group_size=-1)]
    return [MPLinearLayerConfig(weight_shape=(n, 512), group_size=128),
            NvFp4LinearLayerConfig(weight_shape=(n, 512), activation_mode="w4a16")]


@needs_bulk
@pytest.mark.parametrize("pipeline", [4, 5, 6], ids=["three-stage", "two-stage", "scale-after"])
@pytest.mark.parametrize("tiles", EXACT_TAIL_TILES_PER_BLOCK)
def test_exact_tail_consumer_every_tail_length(tiles: int, pipeline: int) -> None:
    """Pipeline 4 (the flat consumer decoding only a pass's own tiles in its last group), 5
    (the same with 2 chunks per warp and stage on a 2-stage ring at M > 8) and 6 (5 with the
    scales applied after each chunk's mma) against float64, through outputs poisoned with NaN."""
    for config in _exact_tail_configs(tiles, pipeline):
        kernel, layer, reference = _processed(config)
        n = config.out_features
        args = (layer.weight, layer.weight_scale, getattr(layer, "weight_zero_point", None), None,
                getattr(layer, "weight_channel_scale", None), None, kernel._fmt, n,
                kernel._group_size, kernel._zconst)
        for m in (1, 5, 12, 16):
            x = torch.randn(m, config.in_features, device="cuda", dtype=config.act_dtype)
            launch = (1 if m <= 8 else 2, 1, 1, 8, pipeline)
            stale = ops.gemm(x, *args, *launch)
            stale.fill_(float("nan"))
            del stale  # the allocator hands this NaN-filled block to the next call of its size
            out = ops.gemm(x, *args, *launch)
            assert bool(torch.isfinite(out).all()), (config.family, tiles, m)
            error = relative_error(out, x.double() @ reference.T)
            assert error < 1e-2, (config.family, tiles, m, error)


@needs_bulk
@pytest.mark.parametrize("zero_points", [False, True], ids=["symmetric", "zero-points"])
def test_scale_after_bf16_offset_keeps_precision(zero_points: bool) -> None:
    """Pipeline 6 with bf16 activations feeds magic + code to the mma and starts each chunk's sum
    at -(magic + zero) x the activations' sum (stream_gemm.cuh, kOffsetAfter). The cancellation
    is worst when the activations share a large mean; the output must still be as close to
    float64 as bf16 rounding allows (~1.7e-3 here; the offset's fp32 cancellation ~1e-6)."""
    n = 16 * torch.cuda.get_device_properties(0).multi_processor_count * 6
    config = MPLinearLayerConfig(weight_shape=(n, 4096), group_size=128,
                                 weight_type=scalar_types.uint4 if zero_points
                                 else scalar_types.uint4b8, zero_points=zero_points)
    kernel, layer, reference = _processed(config)
    assert kernel._chunk_scales
    args = (layer.weight, layer.weight_scale, getattr(layer, "weight_zero_point", None), None,
            getattr(layer, "weight_channel_scale", None), None, kernel._fmt, n,
            kernel._group_size, kernel._zconst)
    for m in (1, 16):
        x = torch.randn(m, config.in_features, device="cuda", dtype=torch.bfloat16) + 2.0
        out = ops.gemm(x, *args, 1 if m <= 8 else 2, 1, 1, 8, 6)
        error = relative_error(out, x.double() @ reference.T)
        assert error < 2.5e-3, (zero_points, m, error)


@needs_bulk
@pytest.mark.parametrize("zero_points", [False, True], ids=["symmetric", "zero-points"])
@pytest.mark.parametrize("narrow", [False, True], ids=["four-tile-blocks", "one-three-tile-block"])
def test_sixteen_warp_scale_after_default_on_four_tile_blocks(zero_points: bool,
                                                              narrow: bool) -> None:
    """apply_weights takes pipeline 6 with 16 consumer warps where the widest block holds 4 row
    tiles and K >= ops._WIDE_BULK_MIN_K (M <= 8): the default path there, checked against
    float64 with a poisoned output and in a CUDA graph replay. ``narrow``: one block of 3 tiles
    (the one-fewer box) and a K whose last stage holds 2 of 32 chunks."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    n = 16 * (4 * sms - (1 if narrow else 0))
    k = ops._WIDE_BULK_MIN_K + (128 if narrow else 0)
    config = MPLinearLayerConfig(weight_shape=(n, k), group_size=128,
                                 weight_type=scalar_types.uint4 if zero_points
                                 else scalar_types.uint4b8, zero_points=zero_points)
    kernel, layer, reference = _processed(config)
    for m in (1, 5, 8):
        assert ops.launch_config(m, kernel._fmt, True, kernel._chunk_scales, n=n, k=k,
                                 sms=sms) == (1, 1, 1, 16, 6), m
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
        empty = x.new_empty(0)
        zeros = getattr(layer, "weight_zero_point", None)
        ops.extension().gemm(x, layer.weight, layer.weight_scale,
                             zeros if zeros is not None else empty, empty, empty, empty, out,
                             kernel._fmt, kernel._group_size, kernel._zconst, 1, 1, 1, 16, 6,
                             False, torch.cuda.current_stream().cuda_stream)
        assert bool(torch.isfinite(out).all()), m
        assert relative_error(out, x.double() @ reference.T) < 2.5e-3, m
        applied = kernel.apply_weights(layer, x)  # the default path: the same launch
        assert relative_error(applied, x.double() @ reference.T) < 2.5e-3, m
    x = torch.randn(5, k, device="cuda", dtype=torch.bfloat16)
    expected = kernel.apply_weights(layer, x)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        replayed = kernel.apply_weights(layer, x)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(replayed, expected)


@needs_bulk
def test_exact_tail_consumer_refuses_eight_bit_codes() -> None:
    config = BULK_FORMATS["fp8-channel"]
    kernel, layer, _ = _processed(config)
    x = torch.randn(4, config.in_features, device="cuda", dtype=config.act_dtype)
    with pytest.raises(RuntimeError, match="invalid argument"):
        ops.gemm(x, layer.weight, layer.weight_scale, None, None,
                 getattr(layer, "weight_channel_scale", None), None, kernel._fmt,
                 config.out_features, kernel._group_size, kernel._zconst, 1, 1, 1, 8, 4)


@needs_cuda
def test_group_size_zero_without_act_order_table_refused() -> None:
    """Without a group table the kernels divide by group_size: zero is refused at the binding."""
    kernel, layer, _ = _processed(INT4)
    x = torch.randn(4, INT4.in_features, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="group_size must be positive without an act-order"):
        ops.gemm(x, layer.weight, layer.weight_scale, None, None, None, None, kernel._fmt,
                 INT4.out_features, 0, kernel._zconst, 1, 1, 1, 4, 1)


@needs_bulk
@pytest.mark.parametrize("name", ["nvfp4", "uint4-zp-g32-fp16", "uint4-zp-act-order-fp16"])
def test_scale_after_mma_refuses_groups_inside_a_chunk(name: str) -> None:
    """Pipeline 6 applies one scale per row to a whole chunk's sum: FP4 codes, groups of 32
    channels and act-order are refused with the reason, not computed with the wrong scales."""
    config = BULK_FORMATS[name]
    kernel, layer, _ = _processed(config)
    assert not kernel._chunk_scales
    x = torch.randn(4, config.in_features, device="cuda", dtype=config.act_dtype)
    with pytest.raises(RuntimeError, match="pipeline 6 needs 4-bit integer codes"):
        ops.gemm(x, layer.weight, layer.weight_scale, getattr(layer, "weight_zero_point", None),
                 getattr(layer, "weight_group_table", None),
                 getattr(layer, "weight_channel_scale", None), None, kernel._fmt,
                 config.out_features, kernel._group_size, kernel._zconst, 1, 1, 1, 8, 6)


@needs_bulk
@pytest.mark.parametrize("mt,rows,wk,m,pipeline", [
    (8, 1, 8, 40, 2), (2, 2, 8, 16, 2), (1, 1, 3, 4, 2), (1, 1, 8, 9, 2), (8, 1, 8, 40, 3),
    (2, 1, 16, 12, 3), (4, 1, 8, 20, 4), (4, 1, 8, 20, 5), (2, 1, 16, 12, 6)],
    ids=["mt8", "two-rows", "three-warps", "m-over-tile", "flat-mt8", "flat-w16-two-m-tiles",
         "flat-tail-mt4", "flat-tail-two-stage-mt4", "scale-after-w16-two-m-tiles"])
def test_bulk_pipeline_refuses_unserved_configs(mt: int, rows: int, wk: int, m: int,
                                                pipeline: int) -> None:
    kernel, layer, _ = _processed(INT4)
    x = torch.randn(m, INT4.in_features, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="invalid argument"):
        ops.gemm(x, layer.weight, layer.weight_scale, None, None, None, None, kernel._fmt,
                 INT4.out_features, kernel._group_size, kernel._zconst, mt, rows, 1, wk, pipeline)


@needs_bulk
def test_sixteen_consumer_warps_refused_off_the_flat_consumer() -> None:
    """16 consumer warps: pipeline 2 is refused by the bindings, act-order by the launcher."""
    kernel, layer, _ = _processed(INT4)
    x = torch.randn(4, INT4.in_features, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="at most 8 warps"):
        ops.gemm(x, layer.weight, layer.weight_scale, None, None, None, None, kernel._fmt,
                 INT4.out_features, kernel._group_size, kernel._zconst, 1, 1, 1, 16, 2)
    config = BULK_FORMATS["uint4-zp-act-order-fp16"]
    kernel, layer, _ = _processed(config)
    x = torch.randn(4, config.in_features, device="cuda", dtype=config.act_dtype)
    with pytest.raises(RuntimeError, match="invalid argument"):
        ops.gemm(x, layer.weight, layer.weight_scale, layer.weight_zero_point,
                 layer.weight_group_table, None, None, kernel._fmt, config.out_features,
                 kernel._group_size, kernel._zconst, 1, 1, 1, 16, 3)


@needs_bulk
@pytest.mark.parametrize("variant", ["flat-w8", "flat-w16", "flat-tail-w8",
                                     "flat-tail-two-stage-w8", "scale-after-mma-w16"])
def test_flat_consumer_cuda_graph_replay(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    kernel, layer, reference = _processed(INT4)
    _force_bulk_variant(monkeypatch, variant)
    x = torch.randn(5, INT4.in_features, device="cuda", dtype=torch.bfloat16)
    kernel.apply_weights(layer, x)  # warm up outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = kernel.apply_weights(layer, x)
    for _ in range(3):
        x.copy_(torch.randn_like(x))
        graph.replay()
        torch.cuda.synchronize()
        assert bool(torch.isfinite(out).all())
        assert relative_error(out, x.double() @ reference.T) < 1e-2



#: A square int4 layer (N = K), so each GEMM of a chain reads the output of the one before it;
#: wide enough that a block of the next GEMM starts while blocks of the previous one still write.
CHAIN = MPLinearLayerConfig(weight_shape=(4096, 4096), group_size=128)


@needs_bulk
@pytest.mark.parametrize("m", [1, 16])
@pytest.mark.parametrize("pipeline", sorted(ops.PDL_PIPELINES))
def test_pdl_chain_reads_what_the_gemm_before_it_wrote(pipeline: int, m: int) -> None:
    """Four GEMMs, each reading the one before's output, launched as programmatic dependents:
    bit-identical to the same chain of plain launches, eagerly (every output block handed out
    NaN-poisoned by the allocator, so a read or a write before the grid dependency wait would
    show) and replayed from a CUDA graph; the first link against float64."""
    kernel, layer, reference = _processed(CHAIN)
    args = (layer.weight, layer.weight_scale, None, None, None, None, kernel._fmt,
            CHAIN.out_features, kernel._group_size, kernel._zconst, 1 if m <= 8 else 2, 1, 1, 8,
            pipeline)

    def chain(x: torch.Tensor, pdl: bool) -> list[torch.Tensor]:
        outs = [x]
        for _ in range(4):
            outs.append(ops.gemm(outs[-1], *args, pdl=pdl))
        return outs[1:]

    x = torch.randn(m, CHAIN.in_features, device="cuda", dtype=torch.bfloat16)
    plain = chain(x, False)
    assert relative_error(plain[0], x.double() @ reference.T) < 1e-2
    assert all(bool(torch.isfinite(y).all()) for y in plain)
    poison = [torch.full_like(y, float("nan")) for y in plain]
    del poison  # the next four outputs of this size reuse these blocks
    for a, b in zip(chain(x, True), plain):
        assert torch.equal(a, b)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = chain(x, True)
    for _ in range(2):
        x.copy_(torch.randn_like(x))
        for y in captured:
            y.fill_(float("nan"))
        graph.replay()
        for a, b in zip(captured, chain(x, False)):
            assert torch.equal(a, b)


@needs_cuda
@pytest.mark.parametrize("pipeline", [0, 1])
def test_pdl_refused_off_the_bulk_pipelines(pipeline: int) -> None:
    kernel, layer, _ = _processed(INT4)
    x = torch.randn(4, INT4.in_features, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="needs a bulk pipeline"):
        ops.gemm(x, layer.weight, layer.weight_scale, None, None, None, None, kernel._fmt,
                 INT4.out_features, kernel._group_size, kernel._zconst, 1, 1, 1, 4, pipeline,
                 pdl=True)


@needs_cuda
@pytest.mark.parametrize("config", [
    MPLinearLayerConfig(weight_shape=(4096, 4096), group_size=128),
    MPLinearLayerConfig(weight_shape=(1024, 8192), weight_type=scalar_types.uint8b128,
                        group_size=-1),
    NvFp4LinearLayerConfig(weight_shape=(4096, 4096), activation_mode="w4a16"),
    MPLinearLayerConfig(weight_shape=(4088, 4096), group_size=128),
], ids=["int4", "int8-channel", "nvfp4", "int4-padded-rows"])
def test_processing_needs_at_most_one_extra_copy(config) -> None:
    """Peak memory allocated while processing, above the loaded checkpoint, against the bytes the
    processed layer holds: at most one copy of them where the layout is written over the
    checkpoint's codes (N a multiple of 16, K of 64). A padded layout is a new tensor, so there it
    is one copy plus the slab temporaries (at most ~1/4 of a 4-bit layer: 1.5x asserted)."""
    layer = make_layer(config, seed=0, device="cuda")
    kernel = (MarlinMPLinearKernel if config.family == "mp" else MarlinNvFp4LinearKernel)(config)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    kernel.process_weights_after_loading(layer)
    peak_extra = torch.cuda.max_memory_allocated() - base
    held = sum(p.numel() * p.element_size() for p in layer.parameters())
    aligned = config.weight_shape[0] % 16 == 0
    assert peak_extra <= (1.0 if aligned else 1.5) * held, (peak_extra, held)
