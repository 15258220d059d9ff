"""The tile kernel's host logic on the CPU: the plan's choices and reasons, the dispatch by M, and
(slow) the tile sources compiling for sm_90a and sm_80."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from kernel_core.families import MPLinearLayerConfig
from kernel_core.formats.layer import make_layer
from kernel_core_marlin import ops, tile
from kernel_core_marlin.kernels import MarlinMPLinearKernel

SMS = 132
#: An H100's answers (cudaOccupancyMaxActiveClusters, probe run 2): a cluster must sit in one
#: GPC, so clusters of 3+ blocks leave SMs idle; 64x128 blocks fit twice per SM.
H100_LIKE = {**{(b, r, s): c for (b, r) in tile.TILE_SHAPES
                for s, c in zip(range(1, 9), (132, 66, 39, 30, 22, 17, 15, 15))},
             **{(64, 1, s): c for s, c in zip(range(1, 9), (264, 132, 79, 62, 47, 39, 32, 30))}}


def test_plan_fills_the_device_for_a_wide_layer() -> None:
    plan = tile.tile_plan(64, 28672, 128, tile.ideal_cluster_limits(SMS), SMS)
    assert (plan.bmx, plan.split) == (64, 1)
    assert "1 wave" in plan.reason and "blocks of" in plan.reason


def test_plan_splits_k_for_a_narrow_layer() -> None:
    plan = tile.tile_plan(64, 8192, 128, tile.ideal_cluster_limits(SMS), SMS)
    assert plan.split > 1, plan
    blocks = 8192 // (128 * plan.rw) * plan.split
    assert blocks <= SMS, plan


def test_plan_avoids_clusters_the_device_cannot_hold() -> None:
    ideal = tile.tile_plan(64, 8192, 128, tile.ideal_cluster_limits(SMS), SMS)
    measured = tile.tile_plan(64, 8192, 128, H100_LIKE, SMS)
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


def test_dispatch_serves_its_range_and_caches_plans() -> None:
    dispatch = tile.TileDispatch(H100_LIKE, SMS, 28672, 128)
    assert not dispatch.serves(tile.TILE_MIN_M - 1)
    assert dispatch.serves(tile.TILE_MIN_M)
    assert dispatch.serves(tile.TILE_MAX_M - 1) and not dispatch.serves(tile.TILE_MAX_M)
    assert dispatch.plan(128) is dispatch.plan(128)


def test_no_tile_kernel_without_sm90() -> None:
    assert tile.TileDispatch.for_device(torch.device("cpu"), 0, 256, 4) is None


@pytest.mark.parametrize("m", [16, 64, 300])
def test_apply_weights_routes_by_m(monkeypatch: pytest.MonkeyPatch, m: int) -> None:
    """Below TILE_MIN_M the stream kernel, from it the tile kernel with the plan's shape (given a
    device that has one); without it the old stream / decode + cuBLAS split."""
    config = MPLinearLayerConfig(weight_shape=(256, 512), group_size=128)
    layer = make_layer(config, seed=0)
    kernel = MarlinMPLinearKernel(config)
    kernel.process_weights_after_loading(layer)
    calls: list[tuple] = []

    def fake_tile(x, *args):
        calls.append(("tile", *args[-3:]))
        return x.new_zeros(x.shape[0], 256)

    def fake_gemm(x, *args):
        calls.append(("stream",))
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
    kernel._tile = tile.TileDispatch(H100_LIKE, SMS, 256, layer.weight.shape[1])
    kernel.apply_weights(layer, x)
    with_tile = calls.pop()
    if m < tile.TILE_MIN_M:
        assert without == with_tile == ("stream",)
    else:
        plan = kernel._tile.plan(m)
        assert with_tile == ("tile", plan.bmx, plan.rw, plan.split)
        assert without[0] in ("stream", "dequantize")


NVCC = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
TORCH_CUDA_FLAGS = ["-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
                    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
                    "--expt-relaxed-constexpr"]


@pytest.mark.slow
@pytest.mark.skipif(not Path(NVCC).exists(), reason="nvcc is not installed")
def test_tile_sources_compile(tmp_path: Path) -> None:
    """wgmma kernels for sm_90a without ptxas serialization warnings; stubs for sm_80."""
    jobs = {
        "bf16 sm_90a": [NVCC, *TORCH_CUDA_FLAGS, "-std=c++17", "-O3", "-Xptxas", "-v",
                        "-gencode=arch=compute_90a,code=sm_90a", "-c",
                        str(ops.CSRC / "tile_bf16.cu"), "-o", str(tmp_path / "bf16.o")],
        "fp16 sm_80": [NVCC, *TORCH_CUDA_FLAGS, "-std=c++17", "-O3",
                       "-gencode=arch=compute_80,code=sm_80", "-c",
                       str(ops.CSRC / "tile_fp16.cu"), "-o", str(tmp_path / "fp16.o")],
    }
    running = {name: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True) for name, cmd in jobs.items()}
    for name, proc in running.items():
        output, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"{name} failed:\n{output[-3000:]}"
        assert "C7513" not in output and "C7510" not in output, (
            f"{name}: ptxas serialized the wgmmas:\n{output[-3000:]}")
        spills = [int(v) for v in re.findall(r"(\d+) bytes spill stores", output)]
        assert not any(spills), f"{name}: register spills {spills}"
