"""How fast is the oracle? One apply of a 4096x4096 layer per family at M=1 on this CPU.

The emulation kernels dequantize the whole weight on every call (they keep no cache, so they always
reflect the layer's parameters); this measures that cost, next to a plain fp32 ``torch.matmul``
with an already dequantized weight (what the oracle would cost if it cached).

    python benchmarks/emulation_cpu.py [--size 4096] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial

import torch

from kernel_core import (
    FP8ScaledMMLinearLayerConfig,
    Fp8BlockLinearLayerConfig,
    Int8ScaledMMLinearLayerConfig,
    MPLinearLayerConfig,
    Mxfp8LinearLayerConfig,
    MxFp4LinearLayerConfig,
    NvFp4LinearLayerConfig,
)
from kernel_core.formats import dequantize_weight, make_layer
from kernel_core_emulation.kernels import EMULATION_KERNELS


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="N = K of the layer")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = (args.size, args.size)
    emulation = {kernel.family: kernel for kernel in EMULATION_KERNELS}
    configs = [
        MPLinearLayerConfig(weight_shape=shape, group_size=128),
        Int8ScaledMMLinearLayerConfig(weight_shape=shape),
        FP8ScaledMMLinearLayerConfig(weight_shape=shape),
        Fp8BlockLinearLayerConfig(weight_shape=shape),
        NvFp4LinearLayerConfig(weight_shape=shape),
        MxFp4LinearLayerConfig(weight_shape=shape),
        Mxfp8LinearLayerConfig(weight_shape=shape),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, M=1, N=K={args.size}")
    print(f"{'config':<58} {'dequantize':>11} {'apply':>9} {'fp32 matmul':>12}")
    for config in configs:
        print(f"  building {config.short()} ...", file=sys.stderr)
        layer = make_layer(config, seed=0)
        kernel = emulation[config.family](config)
        kernel.process_weights_after_loading(layer)
        x = torch.randn(1, args.size).to(config.act_dtype)
        dense = dequantize_weight(config, layer)
        dequant = _median_seconds(partial(dequantize_weight, config, layer), args.repeats)
        apply = _median_seconds(partial(kernel.apply_weights, layer, x), args.repeats)
        matmul = _median_seconds(partial(torch.matmul, x.float(), dense.T), args.repeats)
        label = f"{config.family} {getattr(config, 'activation_mode', '')} ({kernel.name})"
        print(f"{label:<58} {dequant * 1e3:>9.1f}ms {apply * 1e3:>7.1f}ms {matmul * 1e3:>10.2f}ms")


if __name__ == "__main__":
    main()
