"""Compile ahead, in parallel, the DeepGEMM kernels ``fp8_blockscale_gemm_sm90`` builds at run time.

The kernel runs nvcc once per (N, K, tile config), and the tile config depends on M, the first time
each is called. Those compiles are serial inside one process; their cubins land in
``TRTLLM_DG_CACHE_DIR``, which every process reads. So several worker processes, each calling the
plugin's op on a slice of the (N, K, M) list, fill the cache for the tests, the accuracy sweep and
the benchmark that follow (FlashInfer's bf16-input mode runs the same kernels).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import sys
import time

SHAPES_M = {
    "accuracy": {
        (4096, 7168): (1, 2, 4, 8, 16, 31, 32, 33, 64, 128, 256, 512, 1024, 4096, 8192),
        (7168, 18432): (1, 2, 4, 8, 16, 31, 32, 33, 64, 128, 256, 512, 1024, 4096, 8192),
    },
    "bench": {
        (n, k): (1, 16, 64, 128, 256, 1024, 4096)
        for n, k in ((7168, 18432), (18432, 7168), (4096, 7168), (2112, 7168))
    },
    # the GPU tests and the conformance kit's quick grid
    "tests": {
        (576, 1024): (1, 3, 16, 31, 32, 33, 40, 48, 100, 257, 1000),
        (64, 128): (1, 10, 33, 257),
        (256, 512): (1, 10, 16, 33, 257),
        (192, 384): (1, 10, 33, 257),
    },
}


def _work(items: list[tuple[int, int, int]]) -> list[str]:
    import torch

    from kernel_core_flashinfer import ops

    done = []
    for n, k, m in items:
        x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
        w = torch.randn(n, k, device="cuda").to(torch.float8_e4m3fn)
        s = torch.ones(-(-n // 128), k // 128, device="cuda")
        t0 = time.perf_counter()
        ops.fp8_block_gemm(x, m, n, k, w, s, None)
        torch.cuda.synchronize()
        done.append(f"N={n} K={k} M={m}: {time.perf_counter() - t0:.1f} s")
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--groups", default="accuracy,bench,tests",
                        help=f"comma-separated, of {sorted(SHAPES_M)}")
    parser.add_argument("--bench-m", default=None,
                        help="comma-separated: only these M for the bench group")
    args = parser.parse_args()
    items = set()
    for group in args.groups.split(","):
        for (n, k), ms in SHAPES_M[group].items():
            if group == "bench" and args.bench_m:
                ms = tuple(int(m) for m in args.bench_m.split(","))
            items.update((n, k, m) for m in ms)
    items = sorted(items)
    slices = [items[i :: args.workers] for i in range(args.workers)]
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        for lines in pool.map(_work, slices):
            for line in lines:
                print(line, file=sys.stderr)
    print(f"prewarm: {len(items)} calls in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
