"""On an SM90 GPU: the tile kernel (wgmma, M >= tile.layer_min_m), every launch variant
(barrier, warp-specialized, bulk producer, stream-K), against float64 for every format, M with and
without tails, every tile shape and split with NaN-poisoned outputs, bias, and apply_weights
through CUDA-graph replay and torch.compile(fullgraph=True)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from kernel_core_marlin import ops, tile
from kernel_core_marlin.kernels import (
    MarlinFp8LinearKernel,
    MarlinMPLinearKernel,
    MarlinMxFp4LinearKernel,
    MarlinMxfp8LinearKernel,
    MarlinNvFp4LinearKernel,
)
from kernel_core_marlin.x_image import activation_image

from kernel_core.families import (
    FP8ScaledMMLinearLayerConfig,
    MPLinearLayerConfig,
    MxFp4LinearLayerConfig,
    Mxfp8LinearLayerConfig,
    NvFp4LinearLayerConfig,
)
from kernel_core.formats.layer import dequantize_weight, make_layer
from kernel_core.scalar_types import scalar_types
from kernel_core.testing import relative_error

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available()
                       or torch.cuda.get_device_capability() != (9, 0),
                       reason="the tile kernel needs an SM90 (H100/H200) device"),
]

FORMATS = {
    "int4-g128-bf16": MPLinearLayerConfig(weight_shape=(1000, 2048), group_size=128),
    # N not a multiple of 8: output rows are not 16-byte aligned, so the epilogue stores element
    # by element (store_slice's other branch).
    "int4-g128-odd-rows-bf16": MPLinearLayerConfig(weight_shape=(1003, 2048), group_size=128),
    "uint4-zp-g64-fp16": MPLinearLayerConfig(
        weight_shape=(200, 704), weight_type=scalar_types.uint4, zero_points=True, group_size=64,
        act_dtype=torch.float16),
    "uint8b128-g32-bf16": MPLinearLayerConfig(
        weight_shape=(256, 512), weight_type=scalar_types.uint8b128, group_size=32),
    "act-order-uint4-zp-fp16": MPLinearLayerConfig(
        weight_shape=(256, 512), full_weight_shape=(256, 1024), weight_type=scalar_types.uint4,
        zero_points=True, group_size=128, has_g_idx=True, act_dtype=torch.float16),
    "nvfp4-fp16": NvFp4LinearLayerConfig(weight_shape=(512, 1024), activation_mode="w4a16",
                                         act_dtype=torch.float16),
    "nvfp4-bf16": NvFp4LinearLayerConfig(weight_shape=(640, 2048), activation_mode="w4a16"),
    "mxfp4-bf16": MxFp4LinearLayerConfig(weight_shape=(320, 1024), activation_mode="w4a16"),
    "fp8-channel-bf16": FP8ScaledMMLinearLayerConfig(weight_shape=(256, 528),
                                                     activation_mode="w8a16"),
    "mxfp8-fp16": Mxfp8LinearLayerConfig(weight_shape=(256, 1024), activation_mode="w8a16",
                                         act_dtype=torch.float16),
}


def _processed(config, seed: int = 0):
    layer = make_layer(config, seed=seed, device="cuda")
    reference = dequantize_weight(config, layer, dtype=torch.float64)
    kernel = {
        "mp": MarlinMPLinearKernel, "nvfp4": MarlinNvFp4LinearKernel,
        "mxfp4": MarlinMxFp4LinearKernel, "fp8": MarlinFp8LinearKernel,
        "mxfp8": MarlinMxfp8LinearKernel,
    }[config.family](config)
    kernel.process_weights_after_loading(layer)
    assert kernel._tile is not None, "an SM90 layer must get the tile kernel"
    return kernel, layer, reference


def _inputs(config, layer, m: int):
    x = torch.randn(m, config.in_features, device="cuda", dtype=config.act_dtype)
    perm = getattr(layer, "weight_perm", None)
    x2 = x.index_select(1, perm).contiguous() if perm is not None else x
    bias = torch.randn(config.out_features, device="cuda", dtype=config.act_dtype)
    return x, x2, bias


def _launch(kernel, layer, x2, bias, out, bmx: int, rw: int, split: int, variant: int,
            stream_blocks: int | None = None, pdl: bool = False) -> None:
    """The extension's tile launch; stream-K on the device's workspace, its grid cut to
    ``stream_blocks`` blocks when given (one per SM otherwise: the workspace's counters);
    ``pdl``: as a programmatic dependent of the kernel before it."""
    empty = x2.new_empty(0)

    def given(name: str) -> torch.Tensor:
        value = getattr(layer, name, None)
        return value if value is not None else empty

    # Variants 2 and 3 read the activation image instead of x: here the torch reference builds
    # it (the op runs the extension's image kernel, tested against it below and through the op
    # tests).
    x_img = activation_image(x2, layer.weight.shape[1]) if variant >= 2 else empty
    partials, arrivals = (tile.stream_workspace(x2.device) if variant == tile.STREAM_K
                          else (empty, empty))
    arrivals = arrivals[:stream_blocks]
    ops.extension().tile_gemm(
        x2, x_img, layer.weight, layer.weight_scale, given("weight_zero_point"),
        given("weight_group_table"), given("weight_channel_scale"), bias, out, partials,
        arrivals, kernel._fmt, kernel._group_size, kernel._zconst, bmx, rw, split, variant, pdl,
        torch.cuda.current_stream().cuda_stream)


def _splits(variant: int, chunks: int) -> list[int]:
    """Cluster splits to try: stream-K takes none (split 1)."""
    if variant == tile.STREAM_K:
        return [1]
    return sorted({1, 2, min(3, chunks), min(tile.MAX_SPLIT, chunks)})


@pytest.mark.parametrize("variant", sorted(tile.TILE_VARIANTS))
@pytest.mark.parametrize("name", list(FORMATS))
@pytest.mark.parametrize("m", [9, 17, 32, 64, 65, 128, 200, 256, 1000, 4096])
def test_planned_tile_against_float64(name: str, m: int, variant: int) -> None:
    """The plan's shape and split for every M in every variant (apply_weights sends M >=
    TILE_MAX_M to decode + cuBLAS, the op serves any M; stream-K gets the plan among its own
    shapes), output poisoned with NaN first."""
    config = FORMATS[name]
    kernel, layer, reference = _processed(config)
    x, x2, bias = _inputs(config, layer, m)
    dispatch = kernel._tile
    plan = dispatch.plan(m)
    if variant == tile.STREAM_K:
        own = {key: us for key, us in dispatch.chunk_us.items() if key[0] == tile.STREAM_K}
        plan = tile.tile_plan(m, dispatch.n, dispatch.chunks, dispatch.limits, dispatch.sms, own,
                              dispatch.stream_overheads)
    out = torch.full((m, config.out_features), float("nan"), device="cuda",
                     dtype=config.act_dtype)
    _launch(kernel, layer, x2, bias, out, plan.bmx, plan.rw, plan.split, variant)
    expected = x.double() @ reference.T + bias.double()
    assert bool(torch.isfinite(out).all()), plan
    assert relative_error(out, expected) < 1e-2, (plan, relative_error(out, expected))


@pytest.mark.parametrize("variant", sorted(tile.TILE_VARIANTS))
@pytest.mark.parametrize("name", ["int4-g128-bf16", "int4-g128-odd-rows-bf16", "nvfp4-fp16",
                                  "uint8b128-g32-bf16", "act-order-uint4-zp-fp16"])
@pytest.mark.parametrize("m", [64, 200])
def test_every_tile_shape_and_split(name: str, m: int, variant: int) -> None:
    config = FORMATS[name]
    kernel, layer, reference = _processed(config)
    x, x2, bias = _inputs(config, layer, m)
    expected = x.double() @ reference.T + bias.double()
    chunks = layer.weight.shape[1]
    for bmx, rw in tile.variant_shapes(variant):
        for split in _splits(variant, chunks):
            out = torch.full((m, config.out_features), float("nan"), device="cuda",
                             dtype=config.act_dtype)
            _launch(kernel, layer, x2, bias, out, bmx, rw, split, variant)
            assert bool(torch.isfinite(out).all()), (bmx, rw, split)
            error = relative_error(out, expected)
            assert error < 1e-2, (bmx, rw, split, error)


@pytest.mark.parametrize("variant,split", [(1, 1), (1, 3), (2, 1), (2, 3), (3, 1)])
def test_specialized_variant_over_many_ring_passes(split: int, variant: int) -> None:
    """A long K (448 chunks: dozens of passes over every stage, so the full/empty phases wrap
    many times) with a partial last row block and a partial token block; under stream-K each
    tile's 448 chunks are shared by ~66-132 blocks."""
    config = MPLinearLayerConfig(weight_shape=(200, 28672), group_size=128)
    kernel, layer, reference = _processed(config)
    x, x2, bias = _inputs(config, layer, 77)
    expected = x.double() @ reference.T + bias.double()
    for bmx, rw in tile.variant_shapes(variant):
        out = torch.full((77, 200), float("nan"), device="cuda", dtype=config.act_dtype)
        _launch(kernel, layer, x2, bias, out, bmx, rw, split, variant)
        assert bool(torch.isfinite(out).all()), (bmx, rw)
        assert relative_error(out, expected) < 1e-2, (bmx, rw, relative_error(out, expected))


def test_variants_agree() -> None:
    """Same decode, same wgmmas, same order of the K sums within a block: the variants'
    outputs match to a few bf16 rounding steps (variant 2 reads the same activations through the
    image, so it must equal variant 1 exactly)."""
    config = FORMATS["int4-g128-bf16"]
    kernel, layer, _ = _processed(config)
    _, x2, bias = _inputs(config, layer, 128)
    outs = []
    for variant in sorted(tile.TILE_VARIANTS):
        out = torch.full((128, config.out_features), float("nan"), device="cuda",
                         dtype=config.act_dtype)
        _launch(kernel, layer, x2, bias, out, 128, 1, 1, variant)
        outs.append(out.double())
    assert relative_error(outs[1], outs[0]) < 1e-3
    assert torch.equal(outs[2], outs[1])
    # Stream-K sums the same chunks in other groupings (a tile's pieces added in block order):
    # close to the others, and the same bits on every launch.
    assert relative_error(outs[3], outs[2]) < 1e-3
    again = torch.full_like(out, float("nan"))
    _launch(kernel, layer, x2, bias, again, 128, 1, 1, tile.STREAM_K)
    assert torch.equal(again.double(), outs[3])


@pytest.mark.parametrize("name", list(FORMATS))
def test_small_stream_shapes_at_decode_m(name: str) -> None:
    """The 16- and 32-token stream-K blocks (m64n16k16 / m64n32k16; 256 and 384 rows: the last
    row block of a 1000-row layer partial) at the M they are for and around it: one partial token
    block (M = 1, 9, 23), exactly one (16, 32), two (M = 17 on 16 tokens); every format, output
    poisoned with NaN."""
    config = FORMATS[name]
    kernel, layer, reference = _processed(config)
    for m in (1, 9, 16, 17, 23, 32):
        x, x2, bias = _inputs(config, layer, m)
        expected = x.double() @ reference.T + bias.double()
        for bmx, rw in tile.SMALL_STREAM_SHAPES:
            out = torch.full((m, config.out_features), float("nan"), device="cuda",
                             dtype=config.act_dtype)
            _launch(kernel, layer, x2, bias, out, bmx, rw, 1, tile.STREAM_K)
            assert bool(torch.isfinite(out).all()), (m, bmx, rw)
            error = relative_error(out, expected)
            assert error < 1e-2, (m, bmx, rw, error)
            assert int(tile.stream_workspace(x.device)[1].abs().sum()) == 0, (m, bmx, rw)


@pytest.mark.parametrize("m", [1000, 77])
def test_stream_k_blocks_over_many_tiles(m: int) -> None:
    """A short K (8 chunks) and many tiles (32 row blocks x 16 token blocks at M=1000): each block
    walks several whole tiles between a shared first and last one; at M=77 a tile spans a few
    blocks. The arrival counters are all back at zero afterwards (the next launch relies on it)."""
    config = MPLinearLayerConfig(weight_shape=(4096, 512), group_size=64)
    kernel, layer, reference = _processed(config)
    x, x2, bias = _inputs(config, layer, m)
    expected = x.double() @ reference.T + bias.double()
    for bmx, rw in tile.STREAM_SHAPES:
        out = torch.full((m, 4096), float("nan"), device="cuda", dtype=config.act_dtype)
        _launch(kernel, layer, x2, bias, out, bmx, rw, 1, tile.STREAM_K)
        assert bool(torch.isfinite(out).all()), (bmx, rw)
        assert relative_error(out, expected) < 1e-2, (bmx, rw, relative_error(out, expected))
        assert int(tile.stream_workspace(x.device)[1].abs().sum()) == 0, (bmx, rw)


#: Layers of 19 chunks (odd: segments end in a stage's first chunk with two-chunk stages) with
#: the scale tables by tensor copies (int4 g64; g16, where a two-chunk stage's box of 8 groups is
#: exactly full) and by cp.async (act-order, zero points).
ODD_CHUNK_LAYERS = {
    "int4-g64-bf16": MPLinearLayerConfig(weight_shape=(1024, 1216), group_size=64),
    "int4-g16-bf16": MPLinearLayerConfig(weight_shape=(1024, 1216), group_size=16),
    "act-order-uint4-zp-fp16": MPLinearLayerConfig(
        weight_shape=(1024, 1216), weight_type=scalar_types.uint4, zero_points=True,
        group_size=64, has_g_idx=True, act_dtype=torch.float16),
}


@pytest.mark.parametrize("name", list(ODD_CHUNK_LAYERS))
@pytest.mark.parametrize("blocks", [1, 7, 66])
def test_stream_k_on_fewer_blocks(name: str, blocks: int) -> None:
    """The grid cut to a few blocks (the workspace's counters set the block count): long
    segments over many ring passes, odd ones among them."""
    config = ODD_CHUNK_LAYERS[name]
    kernel, layer, reference = _processed(config)
    x, x2, bias = _inputs(config, layer, 100)
    expected = x.double() @ reference.T + bias.double()
    for bmx, rw in tile.STREAM_SHAPES:
        out = torch.full((100, 1024), float("nan"), device="cuda", dtype=config.act_dtype)
        _launch(kernel, layer, x2, bias, out, bmx, rw, 1, tile.STREAM_K, stream_blocks=blocks)
        assert bool(torch.isfinite(out).all()), (bmx, rw)
        assert relative_error(out, expected) < 1e-2, (bmx, rw, relative_error(out, expected))
        assert int(tile.stream_workspace(x.device)[1].abs().sum()) == 0, (bmx, rw)


def test_tile_binding_refusals() -> None:
    config = FORMATS["int4-g128-bf16"]
    kernel, layer, _ = _processed(config)
    _, x2, bias = _inputs(config, layer, 64)
    out = torch.empty((64, config.out_features), device="cuda", dtype=config.act_dtype)
    with pytest.raises(RuntimeError, match="variant 3 \\(stream-K\\) takes split 1, found 2"):
        _launch(kernel, layer, x2, bias, out, 64, 1, 2, tile.STREAM_K)
    with pytest.raises(RuntimeError, match="no instance of bmx=128, rw=2"):
        _launch(kernel, layer, x2, bias, out, 128, 2, 1, tile.STREAM_K)
    for variant, bmx, rw in ((tile.STREAM_K, 16, 1), (tile.STREAM_K, 64, 3), (tile.STREAM_K, 48, 2),
                             (2, 32, 2), (0, 64, 3)):
        with pytest.raises(RuntimeError, match=f"tile variant {variant} has no instance of "
                           f"bmx={bmx}, rw={rw}"):
            _launch(kernel, layer, x2, bias, out, bmx, rw, 1, variant)
    partials, arrivals = tile.stream_workspace(x2.device)
    small = partials[: arrivals.numel() * 128 * 64 - 1]
    with pytest.raises(RuntimeError, match=f"float32 partials of at least {arrivals.numel()} "
                       "blocks x 8192 elements"):
        ops.extension().tile_gemm(
            x2, activation_image(x2, layer.weight.shape[1]), layer.weight, layer.weight_scale,
            x2.new_empty(0), x2.new_empty(0), x2.new_empty(0), bias, out, small, arrivals,
            kernel._fmt, kernel._group_size, kernel._zconst, 64, 1, 1, tile.STREAM_K, False,
            torch.cuda.current_stream().cuda_stream)
    with pytest.raises(RuntimeError, match="pdl\\) of the tile kernel needs variant 2 or 3"):
        _launch(kernel, layer, x2, bias, out, 64, 1, 1, 1, pdl=True)
    with pytest.raises(RuntimeError, match="16-byte aligned partials"):
        ops.extension().tile_gemm(
            x2, activation_image(x2, layer.weight.shape[1]), layer.weight, layer.weight_scale,
            x2.new_empty(0), x2.new_empty(0), x2.new_empty(0), bias, out, partials[1:], arrivals,
            kernel._fmt, kernel._group_size, kernel._zconst, 64, 1, 1, tile.STREAM_K, False,
            torch.cuda.current_stream().cuda_stream)
    shifted = torch.empty(out.numel() + 1, device="cuda", dtype=out.dtype)[1:].view(out.shape)
    with pytest.raises(RuntimeError, match="out must be 16-byte aligned, found an offset of 2"):
        _launch(kernel, layer, x2, bias, shifted, 64, 1, 1, 2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,k,chunks", [(1, 64, 1), (7, 208, 4), (8, 2048, 32), (65, 528, 9),
                                        (200, 8192, 128), (33, 1024, 20)])
def test_image_kernel_matches_the_reference_image(m: int, k: int, chunks: int,
                                                  dtype: torch.dtype) -> None:
    """The extension's image kernel (what the op runs for variant 2) writes the reference image
    of x_image.py byte for byte: permuted and swizzled rows, zeros past K (a partly filled last
    chunk, and whole chunks past K) and past M (rows up to M rounded to 8); the image starts
    NaN-poisoned, so an unwritten unit shows."""
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    image = torch.full((chunks, (m + 7) // 8 * 8, 64), float("nan"), device="cuda", dtype=dtype)
    ops.extension(x.device).activation_image(x, image, torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    expected = activation_image(x, chunks)
    assert torch.equal(image.view(torch.int16), expected.view(torch.int16))


def test_image_kernel_refuses_a_wrong_image() -> None:
    x = torch.randn(10, 128, device="cuda", dtype=torch.bfloat16)
    wrong = torch.empty((2, 10, 64), device="cuda", dtype=torch.bfloat16)  # rows not rounded to 8
    stream = torch.cuda.current_stream().cuda_stream
    with pytest.raises(RuntimeError, match=r"image must be a contiguous \[C >= 2, 16, 64\] "
                                           r"BFloat16 tensor, found \[2, 10, 64\]"):
        ops.extension(x.device).activation_image(x, wrong, stream)
    half = torch.empty((2, 16, 64), device="cuda", dtype=torch.float16)
    with pytest.raises(RuntimeError, match=r"found \[2, 16, 64\] Half"):
        ops.extension(x.device).activation_image(x, half, stream)


@pytest.mark.parametrize("variant", [1, 2, 3])
def test_specialized_split_k_graph_replay(variant: int) -> None:
    """The specialized variants with a cluster split (stream-K: tiles shared by blocks) through
    the custom op under graph replay: partial sums must not leak between replays, the mbarriers
    are re-initialized per launch, variant 2 and 3's activation image is rebuilt from x inside
    the captured op, and stream-K's arrival counters are back at zero for each replay."""
    split = 1 if variant == tile.STREAM_K else 4
    config = MPLinearLayerConfig(weight_shape=(256, 8192), group_size=128)
    kernel, layer, reference = _processed(config)
    x = torch.randn(64, 8192, device="cuda", dtype=config.act_dtype)

    def run() -> torch.Tensor:
        return tile.tile_gemm(x, layer.weight, layer.weight_scale,
                              getattr(layer, "weight_zero_point", None),
                              getattr(layer, "weight_group_table", None),
                              getattr(layer, "weight_channel_scale", None), None, kernel._fmt,
                              256, kernel._group_size, kernel._zconst, 64, 1, split, variant)

    _assert_graph_replays(run, x, lambda: x.double() @ reference.T)


@pytest.mark.parametrize("variant", [2, 3])
def test_pdl_chain_reads_what_the_launch_before_it_wrote(variant: int,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Three tile GEMMs chained through their outputs under graph replay. The op launches
    variants 2 and 3 as programmatic dependents of their image kernels (ops.LAUNCH_WITH_PDL):
    none may read its image, write its output or touch stream-K's counters before the kernel
    ahead of it is done; an early read shows as a wrong product against float64 (the
    intermediates rounded to bf16 as the kernel's are) or as NaN from the poisoned output. (A
    missing wait shows only when the timing exposes it: three launches, three replays.)"""
    monkeypatch.setattr(ops, "LAUNCH_WITH_PDL", True)
    config = MPLinearLayerConfig(weight_shape=(2048, 2048), group_size=128)
    layers = [_processed(config, seed=seed) for seed in (1, 2, 3)]
    x = torch.randn(200, 2048, device="cuda", dtype=config.act_dtype)

    def run() -> torch.Tensor:
        h = x
        for kernel, layer, _ in layers:
            h = tile.tile_gemm(h, layer.weight, layer.weight_scale, None, None,
                               getattr(layer, "weight_channel_scale", None), None, kernel._fmt,
                               2048, kernel._group_size, kernel._zconst, 64, 1, 1, variant)
        return h

    def expected() -> torch.Tensor:
        h = x
        for _, _, reference in layers:
            h = (h.double() @ reference.T).to(config.act_dtype)
        return h.double()

    _assert_graph_replays(run, x, expected)


@pytest.mark.parametrize("variant", [1, 2, 3])
def test_specialized_op_under_torch_compile(variant: int) -> None:
    config = FORMATS["nvfp4-fp16"]
    kernel, layer, reference = _processed(config)
    x = torch.randn(96, config.in_features, device="cuda", dtype=config.act_dtype)
    chan = getattr(layer, "weight_channel_scale", None)

    @torch.compile(fullgraph=True)
    def forward(inp: torch.Tensor) -> torch.Tensor:
        return tile.tile_gemm(inp, layer.weight, layer.weight_scale, None, None, chan, None,
                              kernel._fmt, config.out_features, kernel._group_size,
                              kernel._zconst, 128, 1, 1, variant) * 2

    assert relative_error(forward(x), 2 * (x.double() @ reference.T)) < 1e-2


@pytest.mark.parametrize("name", list(FORMATS))
def test_apply_weights_in_the_tile_range(name: str) -> None:
    config = FORMATS[name]
    kernel, layer, reference = _processed(config)
    for lead in ((kernel._tile.min_m,), (2, 50), (tile.TILE_MAX_M - 1,)):
        x = torch.randn(*lead, config.in_features, device="cuda", dtype=config.act_dtype)
        bias = torch.randn(config.out_features, device="cuda", dtype=config.act_dtype)
        out = kernel.apply_weights(layer, x, bias)
        expected = x.double() @ reference.T + bias.double()
        assert out.shape == (*lead, config.out_features)
        assert relative_error(out, expected) < 1e-2


#: Tall layers whose M=16 plan is a 16-token stream-K block modelled faster than the stream kernel
#: (tile.layer_min_m): the tile kernel serves them from M=9 (8192 x 28672 on the benchmark).
TALL_LAYERS = {
    "int4-g128-bf16": MPLinearLayerConfig(weight_shape=(8192, 28672), group_size=128),
    "nvfp4-bf16": NvFp4LinearLayerConfig(weight_shape=(8192, 28672), activation_mode="w4a16"),
}


@pytest.mark.parametrize("name", list(TALL_LAYERS))
def test_tall_layer_takes_the_tile_kernel_from_m9(name: str) -> None:
    """apply_weights at M = 8 (stream kernel), 9 and 16 (stream-K's 16-token blocks of 384 rows)
    against float64, and a CUDA-graph replay at M=16."""
    config = TALL_LAYERS[name]
    kernel, layer, reference = _processed(config)
    assert kernel._tile.min_m == tile.TILE_SMALL_MIN_M
    plan = kernel._tile.plan(16)
    assert (plan.variant, plan.bmx, plan.rw) == (tile.STREAM_K, 16, 3), plan
    for m in (8, 9, 16):
        x = torch.randn(m, config.in_features, device="cuda", dtype=config.act_dtype)
        out = kernel.apply_weights(layer, x)
        assert bool(torch.isfinite(out).all()), m
        assert relative_error(out, x.double() @ reference.T) < 1e-2, m
    x = torch.randn(16, config.in_features, device="cuda", dtype=config.act_dtype)
    _assert_graph_replays(lambda: kernel.apply_weights(layer, x), x,
                          lambda: x.double() @ reference.T)


def _assert_graph_replays(run: Callable[[], torch.Tensor], x: torch.Tensor,
                          expected: Callable[[], torch.Tensor]) -> None:
    """Warms ``run`` up outside a capture, captures it in a CUDA graph and replays it three times
    on fresh inputs written into ``x``, the output poisoned with NaN before each replay."""
    run()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run()
    for _ in range(3):
        x.copy_(torch.randn_like(x))
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert bool(torch.isfinite(out).all())
        assert relative_error(out, expected()) < 1e-2


def test_tile_cuda_graph_replay() -> None:
    config = FORMATS["int4-g128-bf16"]
    kernel, layer, reference = _processed(config)
    x = torch.randn(128, config.in_features, device="cuda", dtype=config.act_dtype)
    bias = torch.randn(config.out_features, device="cuda", dtype=config.act_dtype)
    _assert_graph_replays(lambda: kernel.apply_weights(layer, x, bias), x,
                          lambda: x.double() @ reference.T + bias.double())


def test_tile_split_k_graph_replay() -> None:
    """A narrow layer plans tiles shared between blocks (a cluster split, or stream-K); their
    partial sums must not leak between replays."""
    config = MPLinearLayerConfig(weight_shape=(256, 8192), group_size=128)
    kernel, layer, reference = _processed(config)
    plan = kernel._tile.plan(64)
    assert plan.split > 1 or plan.variant == tile.STREAM_K, plan
    x = torch.randn(64, 8192, device="cuda", dtype=config.act_dtype)
    _assert_graph_replays(lambda: kernel.apply_weights(layer, x), x,
                          lambda: x.double() @ reference.T)


def test_tile_torch_compile_fullgraph() -> None:
    config = FORMATS["nvfp4-fp16"]
    kernel, layer, reference = _processed(config)
    x = torch.randn(3, 48, config.in_features, device="cuda", dtype=config.act_dtype)

    @torch.compile(fullgraph=True)
    def forward(inp: torch.Tensor) -> torch.Tensor:
        return kernel.apply_weights(layer, inp) * 2

    assert relative_error(forward(x), 2 * (x.double() @ reference.T)) < 1e-2
