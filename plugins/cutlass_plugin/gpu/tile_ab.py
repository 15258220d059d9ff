"""Two W8A8 tiles against each other on one GEMM, int8 and fp8, on a GPU machine.

Each tile runs as a CUDA graph of 20 GEMMs on the same random operands (quantized per token and
per channel as the plugin does), in 21 rounds whose order alternates; the ratio is the first
tile's time over the second's in the same round (median, min, max). The two outputs are compared
too. Written for the 1x4-cluster tile at 28672 x 8192 M=128 (NOTES.md v11: int8 shares the fp8
heuristic); after that run its body moved into functions, the measurement unchanged.

Run (repo root, extension built): ``python3 plugins/cutlass_plugin/gpu/tile_ab.py [--n N --k K
--m M --tiles A B] > OUT.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from kernel_core.bench.timing import capture_graph
from kernel_core_cutlass import ops, quant
from kernel_core_cutlass.tiles import TileConfig

ROUNDS = 21
CALLS_PER_GRAPH = 20


def operands(kind: str, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(x_q, token scale, w_q, channel scale) for ``kind`` "int8" or "fp8"."""
    if kind == "int8":
        q, s = quant.quantize_int8_per_token(x, True)[:2]
        w_scale = (w.abs().amax(1) / 127).float()
        return q, s, (w / w_scale[:, None]).round().clamp(-127, 127).to(torch.int8), w_scale
    q, s = quant.quantize_fp8_per_token(x)
    w_scale = (w.abs().amax(1) / 448).float()
    return q, s, (w / w_scale[:, None]).to(torch.float8_e4m3fn), w_scale


def compare(kind: str, x: torch.Tensor, w: torch.Tensor, tiles: tuple[int, int]) -> dict:
    q, s, w_q, w_scale = operands(kind, x, w)
    workspace = ops.workspace_for(x.device)

    def gemm(tile: int) -> torch.Tensor:
        return ops.scaled_mm(q, w_q, s, w_scale, None, None, None, workspace, torch.bfloat16,
                             tile, False)

    outs = {tile: gemm(tile).float() for tile in tiles}
    graphs = {tile: capture_graph([lambda tile=tile: gemm(tile)] * CALLS_PER_GRAPH)
              for tile in tiles}
    times: dict[int, list[float]] = {tile: [] for tile in tiles}
    for r in range(ROUNDS):
        for tile in (tiles if r % 2 else tiles[::-1]):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graphs[tile].replay()
            end.record()
            torch.cuda.synchronize()
            times[tile].append(start.elapsed_time(end) * 1e3 / CALLS_PER_GRAPH)
    first, second = tiles
    ratio = [a / b for a, b in zip(times[first], times[second])]
    return {
        **{f"us_{TileConfig(tile).name}": statistics.median(times[tile]) for tile in tiles},
        "ratio_first_over_second": {"median": statistics.median(ratio), "min": min(ratio),
                                    "max": max(ratio)},
        "max_abs_diff_rel": float((outs[first] - outs[second]).abs().max()
                                  / outs[first].abs().max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=28672)
    parser.add_argument("--k", type=int, default=8192)
    parser.add_argument("--m", type=int, default=128)
    parser.add_argument("--tiles", type=int, nargs=2, default=(
        int(TileConfig.PINGPONG_64x128_CLUSTER2), int(TileConfig.PINGPONG_128x128_CLUSTER_N4)))
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.m, args.k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(args.n, args.k, device="cuda") * 0.05
    tiles = tuple(args.tiles)
    print(json.dumps({kind: compare(kind, x, w, tiles) for kind in ("int8", "fp8")}, indent=1))


if __name__ == "__main__":
    main()
