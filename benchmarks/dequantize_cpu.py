"""Time ``dequantize_weight`` of a 4096 x 4096 int4 (uint4b8, group 128) layer on the CPU.

The emulation kernels decode their weight on every forward when it is not cached, so the decode
must stay vectorized; the requirement is under 1 s on the developers' 2-core machine. Reports the
median and best of several runs, for symmetric and zero-point layers, with and without act-order.

    python benchmarks/dequantize_cpu.py [--n 4096] [--k 4096] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from kernel_core.families import MPLinearLayerConfig
from kernel_core.formats import dequantize_weight, make_layer
from kernel_core.scalar_types import scalar_types


def time_dequantize(config: MPLinearLayerConfig, repeats: int) -> list[float]:
    layer = make_layer(config, seed=0)
    dequantize_weight(config, layer)  # warm-up (allocator, thread pool)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dequantize_weight(config, layer, dtype=torch.bfloat16)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)
    cases = {
        "uint4b8 g128": dict(weight_type=scalar_types.uint4b8, zero_points=False),
        "uint4 g128 + zero points": dict(weight_type=scalar_types.uint4, zero_points=True),
        "uint4b8 g128 act-order": dict(
            weight_type=scalar_types.uint4b8, zero_points=False, has_g_idx=True
        ),
    }
    print(f"dequantize_weight, N={args.n} K={args.k}, to bfloat16 (computed in fp32)")
    for label, fields in cases.items():
        config = MPLinearLayerConfig(
            weight_shape=(args.n, args.k), group_size=128, act_dtype=torch.bfloat16, **fields
        )
        times = time_dequantize(config, args.repeats)
        print(
            f"  {label:28s} median {statistics.median(times) * 1e3:7.1f} ms   "
            f"best {min(times) * 1e3:7.1f} ms"
        )


if __name__ == "__main__":
    main()
