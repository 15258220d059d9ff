"""The tile kernel's host logic on the CPU: the plan's choices and reasons and the dispatch by M
(its sources' compile checks are in test_marlin_compile.py)."""

from __future__ import annotations


import pytest
import torch

from kernel_core.families import MPLinearLayerConfig
from kernel_core.formats.layer import make_layer
from kernel_core_marlin import ops, tile
from kernel_core_marlin.kernels import MarlinMPLinearKernel

SMS = 132
#: An H100's answers (cudaOccupancyMaxActiveClusters, probe run 2, barrier variant): a cluster
#: must sit in one GPC, so clusters of 3+ blocks leave SMs idle; 64x128 blocks fit twice per SM.
#: The specialized variant (384 threads x 168 registers) holds one block per SM in every shape;
#: its limits, measured in the v5 probe (marlin-tile-v5-h100-2026-11-27.json), are those of one
#: block per SM.
_ONE_PER_SM = (132, 66, 39, 30, 22, 17, 15, 15)
H100_LIKE = {**{(v, b, r, s): c for v in tile.TILE_VARIANTS for (b, r) in tile.variant_shapes(v)
                for s, c in zip(range(1, 9), _ONE_PER_SM)},
             **{(0, 64, 1, s): c for s, c in zip(range(1, 9), (264, 132, 79, 62, 47, 39, 32, 30))}}
#: Default plans by (m, n, chunks): (variant, bmx, rw, split). On the benchmark layers the
#: whole-tile plans are the fastest launch the H100 run-3 probe measured
#: (marlin-tile-v18-run3-h100-2026-11-28.json) or within 0.5 us of it, except 10240 rows at M=64
#: (the barrier kernel's 64x256 blocks in clusters of 5, 54.0 us, where the bulk variant measured
#: 49.6 us); stream-K is planned where its measured costs (H200, tile.STREAM_CHUNK_US) beat
#: them: 10240 rows at M = 64 / 128 / 256 (36.9 / 49.5 / 79.0 us against 40.4 / 58.7 / 87.4 for
#: the whole-tile plans, marlin-stream-k-probe-h200-2026-11-29-v32.json and
#: marlin-h200-2026-11-29-v30-final.json), 28672 rows at M = 64 (70.7 against 72.3) and M=256
#: (181.6 against 179.8 for whole tiles in the same probe: a modelled 181 against 184), and
#: 8192 x 28672 at M=64 (modelled 72 us against 83 for split-K clusters; not yet measured).
DEFAULT_PLANS = {
    (64, 28672, 128): (3, 64, 2, 1), (64, 8192, 128): (2, 64, 1, 2),
    (64, 10240, 128): (3, 64, 2, 1), (64, 8192, 448): (3, 64, 2, 1),
    (128, 28672, 128): (2, 128, 2, 1), (128, 8192, 128): (2, 128, 1, 2),
    (128, 10240, 128): (3, 128, 1, 1), (128, 8192, 448): (2, 128, 1, 2),
    (256, 28672, 128): (3, 256, 1, 1), (256, 8192, 128): (2, 256, 1, 2),
    (256, 10240, 128): (3, 256, 1, 1), (256, 8192, 448): (2, 256, 1, 2),
    (48, 28672, 128): (3, 64, 2, 1), (300, 1000, 16): (0, 64, 1, 3), (511, 256, 4): (2, 64, 1, 1),
}
#: The measured per-chunk times of the variants with whole tiles per block (no stream-K).
WHOLE_TILES = {shape: us for shape, us in tile.CHUNK_US.items() if shape[0] != tile.STREAM_K}


def test_plan_fills_the_device_for_a_wide_layer() -> None:
    plan = tile.tile_plan(64, 28672, 128, tile.ideal_cluster_limits(SMS), SMS, WHOLE_TILES)
    assert (plan.bmx, plan.split) == (64, 1)
    assert "1 wave" in plan.reason and "blocks of" in plan.reason


def test_stream_k_evens_out_tiles_that_leave_sms_idle() -> None:
    """10240 rows at M=128: 80 tiles of 128 rows on 132 SMs leave SMs idle with whole tiles per
    block; stream-K gives each of the 132 blocks 78 of the 80 x 128 chunks."""
    plan = tile.tile_plan(128, 10240, 128, H100_LIKE, SMS)
    assert (plan.variant, plan.split) == (tile.STREAM_K, 1), plan
    assert "132 blocks sharing 80 tiles" in plan.reason and "(78 chunks each)" in plan.reason
    assert "stream-K kernel" in plan.reason
    assert tile.tile_plan(128, 10240, 128, H100_LIKE, SMS, WHOLE_TILES).variant != tile.STREAM_K


def test_stream_k_plans_only_its_instances() -> None:
    for m in (64, 100, 128, 200, 256, 511):
        plan = tile.tile_plan(m, 28672, 128, H100_LIKE, SMS)
        if plan.variant == tile.STREAM_K:
            assert (plan.bmx, plan.rw) in tile.STREAM_SHAPES, (m, plan)
    assert (128, 2) not in tile.STREAM_SHAPES


def test_stream_k_launches_no_more_blocks_than_chunks() -> None:
    plan = tile.tile_plan(64, 256, 4, H100_LIKE, SMS, {(tile.STREAM_K, 64, 1): 0.4})
    assert "8 blocks sharing 2 tiles" in plan.reason and "(1 chunks each)" in plan.reason


def test_plan_splits_k_for_a_narrow_layer() -> None:
    plan = tile.tile_plan(64, 8192, 128, tile.ideal_cluster_limits(SMS), SMS, WHOLE_TILES)
    assert plan.split > 1, plan
    blocks = 8192 // (128 * plan.rw) * plan.split
    assert blocks <= SMS, plan


def test_plan_avoids_clusters_the_device_cannot_hold() -> None:
    ideal = tile.tile_plan(64, 8192, 128, tile.ideal_cluster_limits(SMS), SMS, WHOLE_TILES)
    measured = tile.tile_plan(64, 8192, 128, H100_LIKE, SMS, WHOLE_TILES)
    assert ideal.split == 4
    assert measured.split != 4 and "1 wave" in measured.reason, measured


def test_plan_never_wastes_half_a_block_on_tokens() -> None:
    for m in (64, 65, 100, 128, 129, 200, 256, 1000, 4096):
        plan = tile.tile_plan(m, 28672, 128, H100_LIKE, SMS)
        assert plan.bmx == 64 or plan.bmx // 2 < m, (m, plan)


def test_plan_uses_more_tokens_per_block_as_m_grows() -> None:
    small = tile.tile_plan(64, 28672, 128, H100_LIKE, SMS)
    large = tile.tile_plan(1024, 28672, 128, H100_LIKE, SMS)
    assert large.bmx > small.bmx


def test_plan_rejects_empty_problems() -> None:
    with pytest.raises(ValueError, match="positive"):
        tile.tile_plan(0, 28672, 128, H100_LIKE, SMS)


def test_default_plans() -> None:
    for (m, n, chunks), expected in DEFAULT_PLANS.items():
        plan = tile.tile_plan(m, n, chunks, H100_LIKE, SMS)
        assert (plan.variant, plan.bmx, plan.rw, plan.split) == expected, (m, n, chunks, plan)
        assert f"{tile.TILE_VARIANTS[plan.variant]} kernel" in plan.reason


def _with_specialized(factor: float) -> dict[tuple[int, int, int], float]:
    """The barrier variant's measured times plus the specialized variant at ``factor`` times
    them (the bulk variant left out)."""
    barrier = {shape: us for shape, us in tile.CHUNK_US.items() if shape[0] == 0}
    return {**barrier, **{(1, b, r): us * factor for (_, b, r), us in barrier.items()}}


def test_plan_takes_the_specialized_variant_once_measured_faster() -> None:
    for m in (64, 128, 256):
        plan = tile.tile_plan(m, 28672, 128, H100_LIKE, SMS, _with_specialized(0.6))
        assert plan.variant == 1 and "specialized kernel" in plan.reason, (m, plan)
    dispatch = tile.TileDispatch(H100_LIKE, SMS, 28672, 128, _with_specialized(0.6))
    assert dispatch.plan(128).variant == 1


def test_plan_keeps_the_barrier_variant_where_it_is_faster() -> None:
    for m in (64, 128, 256):
        plan = tile.tile_plan(m, 28672, 128, H100_LIKE, SMS, _with_specialized(1.3))
        assert plan.variant == 0, (m, plan)


def test_plan_counts_the_second_block_per_sm_only_where_it_fits() -> None:
    """At equal per-chunk times, 64x128 blocks of the barrier kernel fit twice per SM (one wave
    where the specialized kernel needs two), so a 256-block problem stays on the barrier one."""
    times = {(0, 64, 1): 0.5, (1, 64, 1): 0.5}
    plan = tile.tile_plan(64, 256 * 128, 4, H100_LIKE, SMS, times)
    assert (plan.variant, plan.split) == (0, 1) and "1 wave" in plan.reason, plan


def test_plan_rejects_unknown_variants() -> None:
    with pytest.raises(ValueError, match="variants must be among"):
        tile.tile_plan(64, 8192, 128, H100_LIKE, SMS, {(4, 64, 1): 0.5})


def test_bulk_variant_is_planned_where_measured_faster() -> None:
    """The bulk producer's measured per-chunk times make it the default at M = 128 and 256 on the
    28672-row layer; without its entries the planner falls back to the barrier kernel there."""
    dispatch = tile.TileDispatch(H100_LIKE, SMS, 28672, 128, WHOLE_TILES)
    assert dispatch.plan(128).variant == 2 and "bulk kernel" in dispatch.plan(128).reason
    assert dispatch.plan(256).variant == 2
    without = {shape: us for shape, us in WHOLE_TILES.items() if shape[0] != 2}
    assert tile.tile_plan(128, 28672, 128, H100_LIKE, SMS, without).variant == 0


def test_dispatch_serves_its_range_and_caches_plans() -> None:
    dispatch = tile.TileDispatch(H100_LIKE, SMS, 28672, 128)
    assert not dispatch.serves(tile.TILE_MIN_M - 1)
    assert dispatch.serves(tile.TILE_MIN_M)
    assert dispatch.serves(tile.TILE_MAX_M - 1) and not dispatch.serves(tile.TILE_MAX_M)
    assert dispatch.plan(128) is dispatch.plan(128)


#: The small-token plans and where the tile kernel starts on the four benchmark layers, by the
#: v39b fits: (n, chunks): ((bmx, rw) at M=16, at M=32, first M) for int4 and for NVFP4 (its own
#: fits, tile.FP4_SMALL_STREAM_FITS).
SMALL_PLANS = {
    (28672, 128): {ops.Format.INT4: ((16, 3), (32, 3), 9), ops.Format.FP4: ((16, 3), (32, 2), 9)},
    (8192, 448): {ops.Format.INT4: ((16, 3), (32, 3), 9), ops.Format.FP4: ((16, 3), (32, 2), 9)},
    (10240, 128): {ops.Format.INT4: ((16, 2), (32, 2), 17), ops.Format.FP4: ((16, 2), (32, 2), 9)},
    (8192, 128): {ops.Format.INT4: ((16, 2), (32, 2), 17), ops.Format.FP4: ((16, 2), (32, 2), 17)},
}


@pytest.mark.parametrize("fmt", [ops.Format.INT4, ops.Format.FP4], ids=["int4", "fp4"])
@pytest.mark.parametrize("layer", list(SMALL_PLANS))
def test_small_token_blocks_from_their_minimum_m(layer: tuple[int, int], fmt: int) -> None:
    """M = 17..32 takes stream-K's 32-token blocks (384 rows for int4 on the tall layers, where
    they were measured faster; 256 elsewhere and for NVFP4, whose 384-row blocks measured slower
    there), M = 9..16 the 16-token ones where the layer starts there: 4-bit layers whose plan
    models faster than their format's stream kernel (int4: the tall ones; NVFP4: all but 8192^2,
    where its stream kernel measured 22.1 us against 22.46 for the 16-token block)."""
    n, chunks = layer
    at_16, at_32, first = SMALL_PLANS[layer][fmt]
    costs = tile.format_costs(fmt)
    for m, shape in ((9, at_16), (16, at_16), (17, at_32), (24, at_32), (32, at_32)):
        plan = tile.tile_plan(m, n, chunks, H100_LIKE, SMS, *costs)
        assert (plan.variant, plan.bmx, plan.rw) == (tile.STREAM_K, *shape), (m, plan)
    assert tile.layer_min_m(fmt, n, chunks, H100_LIKE, SMS) == first


def test_eight_bit_codes_start_the_tile_kernel_at_25() -> None:
    for n, chunks in SMALL_PLANS:
        for fmt in (ops.Format.INT8, ops.Format.FP8):
            assert tile.layer_min_m(fmt, n, chunks, H100_LIKE, SMS) == tile.TILE_MIN_M_8BIT == 25


def test_format_costs_replace_only_the_small_stream_blocks() -> None:
    int4_us, int4_fixed = tile.format_costs(ops.Format.INT4)
    fp4_us, fp4_fixed = tile.format_costs(ops.Format.FP4)
    assert int4_us is tile.CHUNK_US
    changed = {key for key in int4_us if int4_us[key] != fp4_us[key]}
    assert changed == {(tile.STREAM_K, *shape) for shape in tile.SMALL_STREAM_SHAPES}
    assert {key for key in int4_fixed if int4_fixed[key] != fp4_fixed[key]} <= set(
        tile.SMALL_STREAM_SHAPES)
    assert tile.format_costs(ops.Format.INT8) == (int4_us, int4_fixed)


@pytest.mark.parametrize("n,chunks", [(2048, 64), (1024, 64), (4096, 28), (256, 4)])
def test_small_layers_keep_the_stream_kernel_below_17(n: int, chunks: int) -> None:
    """On layers the M=16 plan serves with too few chunks an SM to pay the tile kernel's fixed
    cost (or not with a 16-token stream-K block at all), 4-bit codes keep the stream kernel up to
    M=16 (no small layer was measured at M <= 16 on the tile kernel)."""
    for fmt in (ops.Format.INT4, ops.Format.FP4):
        assert tile.layer_min_m(fmt, n, chunks, H100_LIKE, SMS) == tile.TILE_MIN_M, (fmt, n)


def test_stream_kernel_model_at_m16() -> None:
    """The stream kernel's M = 9..16 models on the benchmark layers (int4, v39b: 53.3 / 55.1 /
    23.2 / 20.5 us measured; NVFP4, v39: 67.7 / 63.3 / 27.2 / 22.1)."""
    int4 = [tile.stream_kernel_m16_us(ops.Format.INT4, n, c, SMS) for n, c in SMALL_PLANS]
    fp4 = [tile.stream_kernel_m16_us(ops.Format.FP4, n, c, SMS) for n, c in SMALL_PLANS]
    assert [round(t, 1) for t in int4] == [54.2, 54.2, 23.4, 20.3]
    assert [round(t, 1) for t in fp4] == [65.6, 65.6, 26.6, 22.7]


def test_no_tile_kernel_without_sm90() -> None:
    assert tile.TileDispatch.for_device(torch.device("cpu"), 0, 256, 4) is None


@pytest.mark.parametrize("m,min_m", [(16, tile.TILE_MIN_M), (64, tile.TILE_MIN_M),
                                     (300, tile.TILE_MIN_M), (8, 9), (9, 9), (16, 9)])
def test_apply_weights_routes_by_m(monkeypatch: pytest.MonkeyPatch, m: int, min_m: int) -> None:
    """Below the dispatch's first M the stream kernel, from it the tile kernel with the plan's shape
    (given a device that has one); without it the old stream / decode + cuBLAS split."""
    config = MPLinearLayerConfig(weight_shape=(256, 512), group_size=128)
    layer = make_layer(config, seed=0)
    kernel = MarlinMPLinearKernel(config)
    kernel.process_weights_after_loading(layer)
    calls: list[tuple] = []

    def fake_tile(x, *args):
        calls.append(("tile", *args[-4:]))
        return x.new_zeros(x.shape[0], 256)

    def fake_gemm(x, *args, pdl=False):
        calls.append(("stream", args[-1], pdl))  # the pipeline, and whether launched with PDL
        return x.new_zeros(x.shape[0], 256)

    def fake_dequantize(qweight, *args):
        calls.append(("dequantize",))
        return torch.zeros(256, 512, dtype=args[-1])

    monkeypatch.setattr(tile, "tile_gemm", fake_tile)
    monkeypatch.setattr(ops, "gemm", fake_gemm)
    monkeypatch.setattr(ops, "dequantize", fake_dequantize)
    x = torch.randn(m, 512, dtype=config.act_dtype)
    kernel._tile = None  # a CPU layer has no tile kernel
    kernel.apply_weights(layer, x)
    without = calls.pop()
    kernel._tile = tile.TileDispatch(H100_LIKE, SMS, 256, layer.weight.shape[1], min_m=min_m)
    kernel.apply_weights(layer, x)
    with_tile = calls.pop()
    if m < min_m:
        assert without == with_tile == ("stream", ops.launch_config(m, kernel._fmt)[4], False)
        kernel._bulk = True  # as on SM90: the bulk pipeline, launched as a programmatic dependent
        kernel.apply_weights(layer, x)
        expected = ops.launch_config(m, kernel._fmt, True, kernel._chunk_scales)[4]
        assert calls.pop() == ("stream", expected, True)
    else:
        plan = kernel._tile.plan(m)
        assert with_tile == ("tile", plan.bmx, plan.rw, plan.split, plan.variant)
        assert without[0] in ("stream", "dequantize")
