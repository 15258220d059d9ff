"""CPU checks of the launch choice: the pipeline and tile shape each M takes, and the bulk
pipeline's shared-memory plan (``kcm::plan_bulk``, built with nvcc into a host harness) for the
benchmark shapes and awkward ones."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from kernel_core_marlin import ops
from kernel_core_marlin.ops import CSRC
from kernel_core_marlin.prepare import Format

NVCC = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
H100_SMS = 132
H100_SMEM = 232448  # cudaDevAttrMaxSharedMemoryPerBlockOptin
ONE_GROUP = 1 << 30


@pytest.mark.parametrize("fmt", [Format.INT4, Format.INT8, Format.FP4, Format.FP8])
def test_bulk_pipeline_serves_small_m(fmt: int) -> None:
    largest = 8 if fmt == Format.FP8 else 16
    assert ops.BULK_MAX_M[fmt] == largest
    # 4-bit codes: pipeline 5 (ops._FLAT_FORMATS says why; NVFP4 up to M = 16 since
    # marlin-h100-2026-11-27-v9.json); 8-bit codes keep pipeline 2 (not measured).
    for m in range(1, largest + 1):
        mt = 1 if m <= 8 else 2
        pipeline = 2 if Format.BITS[fmt] == 8 else 5
        assert ops.launch_config(m, fmt, True) == (mt, 1, 1, 8, pipeline), m
    for m in (largest + 1, 32, 33, 64, 255):
        assert ops.launch_config(m, fmt, True) == ops.launch_config(m, fmt), m


def test_int4_layers_with_chunk_scale_groups_take_pipeline_6() -> None:
    """Pipeline 6 (scales after each chunk's mma) serves int4 layers whose scale groups hold whole
    64-channel chunks; everything else keeps its pipeline."""
    for group_size in (64, 128, 256, 192, ONE_GROUP):
        assert ops.scales_per_chunk(Format.INT4, group_size, act_order=False), group_size
    for group_size in (16, 32, 96):
        assert not ops.scales_per_chunk(Format.INT4, group_size, act_order=False), group_size
    assert not ops.scales_per_chunk(Format.INT4, 0, act_order=True)
    for fmt in (Format.INT8, Format.FP4, Format.FP8):
        assert not ops.scales_per_chunk(fmt, 128, act_order=False), fmt
    for m in range(1, 17):
        assert ops.launch_config(m, Format.INT4, True, True) == (1 if m <= 8 else 2, 1, 1, 8, 6)
        assert ops.launch_config(m, Format.INT4, False, True) == ops.launch_config(m, Format.INT4)
    for m in (17, 32, 64):
        assert ops.launch_config(m, Format.INT4, True, True) == ops.launch_config(m, Format.INT4)


def test_pipeline_6_takes_16_warps_on_few_tiles_and_long_k() -> None:
    """16 consumer warps where the widest block holds one whole tile group (4 row tiles, the
    measured case) and K is long (ops._WIDE_BULK_MIN_K), M <= 8; 8 elsewhere, and wherever the
    shape is not known."""
    long_k = ops._WIDE_BULK_MIN_K
    for m in (1, 8):
        assert ops.launch_config(m, Format.INT4, True, True, n=8192, k=28672, sms=132) == \
            (1, 1, 1, 16, 6)
        assert ops.launch_config(m, Format.INT4, True, True, n=8448, k=long_k, sms=132)[3] == 16
    # 8448 rows: 528 tiles, 4 a block on 132 SMs; 8464 rows: 529 tiles, 5 for one block.
    assert ops.launch_config(1, Format.INT4, True, True, n=8464, k=long_k, sms=132)[3] == 8
    assert ops.launch_config(1, Format.INT4, True, True, n=4096, k=long_k, sms=132)[3] == 8
    assert ops.launch_config(1, Format.INT4, True, True, n=8192, k=8192, sms=132)[3] == 8
    assert ops.launch_config(1, Format.INT4, True, True, n=28672, k=28672, sms=132)[3] == 8
    assert ops.launch_config(9, Format.INT4, True, True, n=8192, k=28672, sms=132) == \
        (2, 1, 1, 8, 6)
    assert ops.launch_config(1, Format.INT4, True, True)[3] == 8
    assert ops.launch_config(1, Format.FP4, True, False, n=8192, k=28672, sms=132)[3] == 8


@pytest.mark.parametrize("fmt", [Format.INT4, Format.INT8, Format.FP4, Format.FP8])
def test_without_bulk_pipeline_the_ring_and_register_pipelines_serve(fmt: int) -> None:
    for m in range(1, 65):
        mt, rows, wn, wk, pipeline = ops.launch_config(m, fmt)
        assert pipeline == (1 if m <= 8 else 0), m
        assert 8 * mt >= m and wn * wk <= 8, m


def test_register_pipeline_rows_at_four_m_tiles() -> None:
    # M = 17..32 on the register pipeline: two row tiles per warp for 4-bit codes (NVFP4 at M = 32
    # on an H100: 14-22% faster than one on all four benchmark shapes,
    # marlin-h100-2026-11-27-v6.json), one for 8-bit codes (not measured).
    for fmt in (Format.INT4, Format.FP4, Format.INT8, Format.FP8):
        expected = 1 if Format.BITS[fmt] == 8 else 2
        assert ops.launch_config(32, fmt) == (4, expected, 1, 8, 0), fmt


def test_only_the_bulk_pipelines_launch_with_pdl(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ops.PDL_PIPELINES == {2, 3, 4, 5, 6}
    assert [ops.launch_with_pdl(p) for p in range(7)] == [False, False] + [True] * 5
    # every bulk launch the plugin chooses goes out with PDL
    for fmt in (Format.INT4, Format.INT8, Format.FP4, Format.FP8):
        for m in range(1, ops.BULK_MAX_M[fmt] + 1):
            for chunk_scales in (False, True):
                launch = ops.launch_config(m, fmt, True, chunk_scales)
                assert ops.launch_with_pdl(launch[4]), (fmt, m)
    monkeypatch.setattr(ops, "LAUNCH_WITH_PDL", False)
    assert not any(ops.launch_with_pdl(p) for p in range(7))


def test_bulk_pipeline_unavailable_off_cuda() -> None:
    assert not ops.bulk_pipeline_available(torch.device("cpu"))


@pytest.fixture(scope="module")
def plan_harness(tmp_path_factory) -> Path:
    if not Path(NVCC).exists():
        pytest.skip("nvcc is not installed")
    exe = tmp_path_factory.mktemp("bulk_plan") / "bulk_plan"
    subprocess.run([NVCC, "-std=c++17", "-O1", f"-I{CSRC}",
                    str(Path(__file__).with_name("bulk_plan_main.cu")), "-o", str(exe)],
                   check=True, capture_output=True, text=True, timeout=300)
    return exe


def _plan(exe: Path, fmt: int, mt: int, m: int, n: int, k: int, groups: int, group_size: int, *,
          zeros: bool = False, act_order: bool = False, consumers: int = 8,
          sms: int = H100_SMS, smem: int = H100_SMEM, chunks: int | None = None,
          min_stages: int = 3) -> dict:
    chunks = chunks if chunks is not None else -(-k // 64)
    args = [fmt, mt, m, -(-n // 16), chunks, k, groups, group_size, int(zeros), int(act_order),
            consumers, sms, smem, min_stages]
    result = subprocess.run([str(exe), *map(str, args)], check=True, capture_output=True,
                            text=True, timeout=60)
    return json.loads(result.stdout)


def _even_grid(n16: int, sms: int = H100_SMS) -> int:
    """The bulk launches' block count (stream_gemm.cuh, kBulkEvenGrid): as few blocks as keep
    the widest block's row tiles when one block per SM would split them unevenly."""
    widest = -(-n16 // min(sms, n16))
    return -(-n16 // widest)


#: (format, M tiles, M, N, K, groups, group size, zero points, act-order): the benchmark's shapes
#: for int4 g128, NVFP4 and 8-bit codes, plus small N, K tails, zero points and act-order.
PLAN_CASES = [
    (Format.INT4, 1, 1, 28672, 8192, 64, 128, False, False),
    (Format.INT4, 2, 16, 28672, 8192, 64, 128, False, False),
    (Format.INT4, 4, 32, 28672, 8192, 64, 128, False, False),
    (Format.INT4, 1, 4, 8192, 28672, 224, 128, False, False),
    (Format.INT4, 2, 16, 10240, 8192, 64, 128, False, False),
    (Format.INT4, 2, 13, 8192, 8192, 64, 128, False, False),
    (Format.FP4, 1, 1, 28672, 8192, 512, 16, False, False),
    (Format.FP4, 2, 16, 8192, 28672, 1792, 16, False, False),
    (Format.FP4, 4, 32, 28672, 8192, 256, 32, False, False),
    (Format.FP8, 1, 1, 28672, 8192, 1, ONE_GROUP, False, False),
    (Format.INT8, 4, 32, 28672, 8192, 256, 32, True, False),
    (Format.INT4, 1, 2, 256, 1040, 65, 16, True, False),
    (Format.INT4, 4, 30, 200, 704, 11, 64, True, False),
    (Format.INT4, 2, 16, 2304, 1024, 8, 0, True, True),
    (Format.INT4, 1, 1, 16, 64, 1, 48, False, False),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", PLAN_CASES, ids=lambda c: "-".join(map(str, c[:7])))
def test_bulk_plan_fits_and_covers(plan_harness: Path, case) -> None:
    fmt, mt, m, n, k, groups, group_size, zeros, act_order = case
    plan = _plan(plan_harness, fmt, mt, m, n, k, groups, group_size, zeros=zeros,
                 act_order=act_order)
    assert plan["code"] == 0, plan
    n16, chunks = -(-n // 16), -(-k // 64)
    vectors = Format.BITS[fmt] // 4
    tiles = plan["tiles_per_pass"]
    assert plan["blocks"] == _even_grid(n16)
    span = -(-n16 // plan["blocks"])
    assert span == -(-n16 // min(H100_SMS, n16)), "the even grid keeps the widest block's tiles"
    assert 1 <= tiles <= 16 // mt and tiles <= span
    # Few passes (each re-reads the activations): no more than the register budget forces, unless
    # shared memory does.
    assert tiles == span or -(-span // tiles) >= -(-span // (16 // mt))
    assert plan["bar_off"] + 2 * plan["stages"] * 8 <= H100_SMEM
    # Chunks per stage: 8 consumer warps times 1, 2 or 4 (up to ~8 tile-chunks of work per warp
    # between barriers, fewer where the activation rows would not leave room for 3 stages).
    stage_chunks = plan["chunks"]
    assert stage_chunks in (8, 16, 32)
    assert stage_chunks <= 8 * (1 if tiles >= 8 else 2 if tiles >= 4 else 4)
    assert 3 <= plan["stages"] <= 12 or (tiles == 1 and stage_chunks == 8 and plan["stages"] == 2)
    power_of_two = group_size > 0 and group_size & (group_size - 1) == 0
    expected_shift = group_size.bit_length() - 1 if power_of_two and not act_order else -1
    assert plan["group_shift"] == expected_shift
    # Stage layout: codes, scale groups, zero-point groups, activation rows, each starting
    # 128-byte aligned (the tensor copies' destinations) right after the one before.
    def after(offset: int) -> int:
        return -(-offset // 128) * 128
    assert plan["wslot"] == stage_chunks * 512 * vectors
    assert plan["xstride"] == stage_chunks * 128 + 16
    assert plan["scale_off"] == tiles * plan["wslot"]
    assert plan["zero_off"] == after(plan["scale_off"] + tiles * plan["sslot"])
    assert plan["x_off"] == (after(plan["zero_off"] + tiles * plan["sslot"]) if zeros
                             else plan["zero_off"])
    assert plan["x_off"] + m * plan["xstride"] <= plan["stage_bytes"]
    assert plan["stage_bytes"] % 128 == 0 and plan["sslot"] == 32 * plan["group_cap"]
    assert plan["red_off"] == plan["stages"] * plan["stage_bytes"]
    assert plan["bar_off"] - plan["red_off"] >= 4 * tiles * mt * 512
    for key in ("scale_off", "zero_off", "x_off", "stage_bytes"):
        assert plan[key] % 128 == 0, key
    for key in ("red_off", "bar_off"):
        assert plan[key] % 16 == 0, key
    # The scale slot holds every group a stage touches (act-order: up to one per 16 channels; the
    # kernel reads any other group from global memory).
    if act_order:
        assert plan["group_cap"] == min(groups, 4 * stage_chunks)
    else:
        for cb in range(0, chunks, stage_chunks):
            ce = min(cb + stage_chunks, chunks)
            lo = min(cb * 64 // group_size, groups - 1)
            hi = min((ce * 64 - 1) // group_size, groups - 1)
            assert hi - lo + 1 <= plan["group_cap"], (cb, lo, hi)


@pytest.mark.slow
@pytest.mark.parametrize("n, blocks", [(28672, 128), (8192, 128), (10240, 128),
                                       (16 * H100_SMS * 8, H100_SMS), (16 * 100, 100),
                                       (16 * 201, 101)])
def test_even_grid_keeps_the_widest_block(plan_harness: Path, n: int, blocks: int) -> None:
    """The benchmark layers (N16 = 128 k row tiles) run on 128 blocks of exactly k tiles, not
    132 blocks of k or k - 1; a multiple of the SM count keeps one block per SM, fewer row
    tiles than SMs one block per tile, and 201 tiles 101 blocks of at most 2."""
    plan = _plan(plan_harness, Format.INT4, 1, 1, n, 4096, 32, 128)
    assert plan["code"] == 0, plan
    assert plan["blocks"] == blocks == _even_grid(n // 16)


#: (M tiles, M, N, K, whether every pass of the widest block holds whole tile groups): pipeline 4
#: runs its exact-last-group instance only where not. The benchmark shapes (passes of 14, 7 + 7
#: and 5 tiles: partial; 4: whole) and N = 16 x 132 x tiles with 8, 15 (at MT = 2 passes of 7 and
#: 8: partial although the plan's pass holds 8) and 16 tiles per block.
WHOLE_GROUP_CASES = [
    (1, 1, 28672, 8192, False),
    (2, 16, 28672, 8192, False),
    (1, 1, 8192, 28672, True),
    (2, 16, 8192, 8192, True),
    (1, 4, 10240, 8192, False),
    (1, 1, 16 * H100_SMS * 8, 1024, True),
    (2, 16, 16 * H100_SMS * 15, 1024, False),
    (2, 12, 16 * H100_SMS * 16, 1024, True),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", WHOLE_GROUP_CASES, ids=lambda c: "-".join(map(str, c[:4])))
def test_exact_tail_instance_where_a_widest_pass_is_partial(plan_harness: Path, case) -> None:
    mt, m, n, k, whole = case
    plan = _plan(plan_harness, Format.INT4, mt, m, n, k, -(-k // 128), 128)
    assert plan["code"] == 0, plan
    assert plan["widest_passes_whole"] is whole, plan


#: Passes of 4-7 tiles at M = 16 whose 3-stage plan falls back to 1 chunk per warp and stage: the
#: two large benchmark shapes with 5- and 7-tile passes (int4 g128) and a zero-point case. (NVFP4
#: on 28672 x 8192 keeps 1 chunk: its 65 scale groups per tile and stage leave room for 1 stage of
#: 2 chunks per warp.)
TWO_STAGE_CASES = [
    (Format.INT4, 28672, 8192, 64, 128, False),
    (Format.INT4, 10240, 8192, 64, 128, False),
    (Format.INT4, 9000, 1024, 8, 128, True),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", TWO_STAGE_CASES, ids=lambda c: "-".join(map(str, c[:3])))
def test_bulk_plan_two_stage_ring(plan_harness: Path, case) -> None:
    """A 2-stage ring allowed (pipeline 5): the same passes as the 3-stage plan, 2 chunks per
    warp and stage where 3 stages of them do not fit."""
    fmt, n, k, groups, group_size, zeros = case
    three = _plan(plan_harness, fmt, 2, 16, n, k, groups, group_size, zeros=zeros)
    two = _plan(plan_harness, fmt, 2, 16, n, k, groups, group_size, zeros=zeros, min_stages=2)
    assert three["code"] == 0 and two["code"] == 0, (three, two)
    assert two["tiles_per_pass"] == three["tiles_per_pass"] and 4 <= two["tiles_per_pass"] <= 7
    assert three["chunks"] == 8 and three["stages"] >= 3, three
    assert two["chunks"] == 16 and two["stages"] == 2, two
    assert two["x_off"] + 16 * two["xstride"] <= two["stage_bytes"]
    assert two["bar_off"] + 2 * two["stages"] * 8 <= H100_SMEM


#: The 16-consumer-warp plans (pipeline 3, M <= 8): the benchmark shapes for int4 g128 and
#: NVFP4, zero points, a K tail and fewer row tiles than SMs.
WIDE_PLAN_CASES = [
    (Format.INT4, 1, 28672, 8192, 64, 128, False),
    (Format.INT4, 4, 8192, 28672, 224, 128, False),
    (Format.INT4, 8, 10240, 8192, 64, 128, False),
    (Format.INT4, 1, 8192, 8192, 64, 128, False),
    (Format.FP4, 1, 28672, 8192, 512, 16, False),
    (Format.FP4, 8, 8192, 8192, 512, 16, False),
    (Format.INT8, 1, 8192, 8192, 256, 32, True),
    (Format.INT4, 3, 256, 1040, 65, 16, True),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", WIDE_PLAN_CASES, ids=lambda c: "-".join(map(str, c[:4])))
def test_bulk_plan_sixteen_consumers(plan_harness: Path, case) -> None:
    """16 consumer warps have 96 registers each: passes of at most one 4-tile group, stages of
    16 or more chunks, and the tree-sum slices of 8 warps in shared memory."""
    fmt, m, n, k, groups, group_size, zeros = case
    plan = _plan(plan_harness, fmt, 1, m, n, k, groups, group_size, zeros=zeros, consumers=16)
    assert plan["code"] == 0, plan
    n16 = -(-n // 16)
    span = -(-n16 // plan["blocks"])
    tiles = plan["tiles_per_pass"]
    assert plan["blocks"] == _even_grid(n16)
    assert 1 <= tiles <= 4 and tiles <= span
    # The register budget alone allows 4 tiles: with unbounded shared memory the fewest passes of
    # at most 4 tiles, split evenly; fewer tiles only where shared memory forces them (8-bit
    # codes with zero points here).
    even = -(-span // -(-span // 4))
    roomy = _plan(plan_harness, fmt, 1, m, n, k, groups, group_size, zeros=zeros, consumers=16,
                  smem=1 << 24)
    assert roomy["tiles_per_pass"] == even, roomy
    assert tiles == even or Format.BITS[fmt] == 8, plan
    assert plan["chunks"] in (16, 32, 64)
    assert plan["stages"] >= 3 or (tiles == 1 and plan["stages"] == 2)
    assert plan["bar_off"] - plan["red_off"] >= 8 * tiles * 512
    assert plan["bar_off"] + 2 * plan["stages"] * 8 <= H100_SMEM
    assert plan["xstride"] == plan["chunks"] * 128 + 16
    assert plan["x_off"] + m * plan["xstride"] <= plan["stage_bytes"]


@pytest.mark.slow
@pytest.mark.parametrize("change", ["m_over_tiles", "three_consumers", "chunks_past_k",
                                    "no_shared_memory", "sixteen_consumers_two_m_tiles",
                                    "thirty_two_consumers"])
def test_bulk_plan_refuses(plan_harness: Path, change: str) -> None:
    args = dict(fmt=Format.INT4, mt=1, m=8, n=4096, k=4096, groups=32, group_size=128)
    extra = {
        "m_over_tiles": dict(m=9),
        "three_consumers": dict(consumers=3),
        "chunks_past_k": dict(chunks=65),
        "no_shared_memory": dict(smem=16 * 1024),
        "sixteen_consumers_two_m_tiles": dict(mt=2, m=12, consumers=16),
        "thirty_two_consumers": dict(consumers=32),
    }[change]
    args.update(extra)
    exe_args = {key: args.pop(key) for key in ("consumers", "chunks", "smem") if key in args}
    plan = _plan(plan_harness, *args.values(), **exe_args)
    assert plan["code"] != 0, plan
