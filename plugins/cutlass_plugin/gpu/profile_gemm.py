"""Nsight Compute's view of our fp8 GEMM tiles beside `torch._scaled_mm`'s cuBLAS kernel.

At M >= 256 our tiles trail `torch._scaled_mm` by 1-5% (NOTES.md v11, s19-final) with the same
tile, stage count and cluster size as cuBLAS's nvjet kernel, so the difference is inside the
kernels: this script launches each candidate on the same operands (quantized as the plugin does)
WARMUP + 1 times in a row; ``run_gpu.sh``'s ncu step (``KCC_NCU=1``) profiles every launch (ncu
flushes the caches before each), in the order the labels are printed on stderr: `_scaled_mm`
first, then the tiles as given, per M (the last launch also sits in an NVTX range named
``profile``, for a timeline tool).

Run (repo root, extension built): ``python3 plugins/cutlass_plugin/gpu/profile_gemm.py --n 8192
--k 8192 --m 256 --tiles heuristic COOPERATIVE_128x128``.
"""

from __future__ import annotations

import argparse
import sys

import torch
from tile_ab import operands

from kernel_core_cutlass import ops
from kernel_core_cutlass.tiles import TileConfig

WARMUP = 3


def profile_m(m: int, w: torch.Tensor, gen: torch.Generator, tiles: list[str]) -> None:
    """Each candidate at ``m`` tokens: WARMUP launches, then one inside the NVTX range."""
    x = torch.randn((m, w.shape[1]), generator=gen, device="cuda").to(torch.bfloat16)
    q, s, w_q, w_scale = operands("fp8", x, w)
    workspace = ops.workspace_for(x.device)
    calls = {f"scaled_mm_m{m}": lambda: torch._scaled_mm(
        q, w_q.t(), scale_a=s[:, None], scale_b=w_scale[None, :], out_dtype=torch.bfloat16,
        use_fast_accum=True)}
    for name in tiles:
        tile = -1 if name == "heuristic" else int(TileConfig[name])
        calls[f"{name}_m{m}"] = lambda tile=tile: ops.scaled_mm(
            q, w_q, s, w_scale, None, None, None, workspace, torch.bfloat16, tile, False)
    for label, call in calls.items():
        for _ in range(WARMUP):
            call()
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_push("profile")
        call()
        torch.cuda.nvtx.range_pop()
        torch.cuda.synchronize()
        print(f"profiled {label}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--k", type=int, default=8192)
    parser.add_argument("--m", type=int, nargs="+", default=[256])
    parser.add_argument("--tiles", nargs="+", default=["PINGPONG_128x128_CLUSTER2"],
                        help="TileConfig names; `heuristic` for scaled_mm_tile's choice")
    args = parser.parse_args()
    gen = torch.Generator(device="cuda").manual_seed(args.n + args.k)
    w = torch.randn((args.n, args.k), generator=gen, device="cuda") * 0.05
    for m in args.m:
        profile_m(m, w, gen, args.tiles)


if __name__ == "__main__":
    main()
