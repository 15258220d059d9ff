"""Launch the stream kernel's bulk pipeline for Nsight Compute: a few int4 g128 benchmark points.

``run_gpu.sh`` step ``KCM_STREAM_NCU`` runs this under ``ncu --kernel-name regex:stream_gemm_bulk
--launch-skip (warm-up rounds x targets) --launch-count (targets)``: every round launches each
target once (plain launches, no PDL: ncu serializes kernels anyway), so the profiled round holds
one warm launch of each, in the order printed on stderr. The question it answers is where the
consumer warps of the M <= 16 kernels wait (NOTES.md v15: they set the pace, and a sixth fewer
ALU instructions took only 3-4% off).

Usage: python3 plugins/marlin_plugin/gpu/profile_stream.py [--warmup 2] | --count
"""

from __future__ import annotations

import argparse
import sys

import torch
from bench_marlin import _config, _layer, _random_checkpoint
from kernel_core_marlin import ops

#: (N, K, M, pipeline): 5 vs 6 on the shape whose blocks hold a group of 4 tiles and a tail of 1
#: (10240 x 8192, 70% of copy bandwidth), 6 on a 14-tile shape at M = 1 and 16, 6 on 4-tile
#: blocks.
TARGETS = ((10240, 8192, 1, 5), (10240, 8192, 1, 6), (28672, 8192, 1, 6), (28672, 8192, 16, 6),
           (8192, 8192, 1, 6))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=2, help="rounds before the profiled one")
    parser.add_argument("--count", action="store_true",
                        help="print the number of targets (launches per round) and exit")
    args = parser.parse_args()
    if args.count:
        print(len(TARGETS))
        return 0
    torch.manual_seed(0)
    launches = []
    layers = {}
    for n, k, m, pipeline in TARGETS:
        if (n, k) not in layers:
            config, kernel_class = _config("int4_g128", n, k)
            layer = _layer(_random_checkpoint(config, "int4_g128"))
            kernel = kernel_class(config)
            kernel.process_weights_after_loading(layer)
            layers[(n, k)] = (kernel, layer)
        kernel, layer = layers[(n, k)]
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        mt, rows, wn, wk, _ = ops.launch_config(m, kernel._fmt, True, kernel._chunk_scales)
        launches.append((kernel, layer, x, n, (mt, rows, wn, wk, pipeline)))
        print(f"target {len(launches) - 1}: {n}x{k} M={m} pipeline {pipeline}", file=sys.stderr)
    for _ in range(args.warmup + 1):
        for kernel, layer, x, n, launch in launches:
            ops.gemm(x, layer.weight, layer.weight_scale, None, None, None, None, kernel._fmt, n,
                     kernel._group_size, kernel._zconst, *launch)
        torch.cuda.synchronize()
    print(f"{args.warmup + 1} rounds of {len(launches)} launches", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
