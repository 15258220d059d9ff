"""Where the stream-K tile variant (3) loses time against the bulk variant (2), on a GPU machine.

Both variants run the same consumers and copy roles; stream-K adds segments (a block's share of
the chunks crossing tile boundaries), the pieces of shared tiles through the workspace, and one
mbarrier arrival per weight warp and chunk. The layers below separate those costs (int4 g128, bf16,
through the extension's op, CUDA-graph replays, interleaved rounds of benchmarks/bench_marlin.py):

- ``one_tile``: 132 tiles, so each stream-K block gets exactly one whole tile, the same work as
  the bulk variant's grid of 132 blocks: any difference is per-chunk code;
- ``two_tiles``: 264 tiles, two whole tiles per stream-K block (two segments, no pieces) against
  the bulk variant's two waves;
- ``shared``: 198 tiles, one and a half per block (every block stores and may sum pieces);
- the benchmark layers 28672 x 8192 and 10240 x 8192.

Run (repo root): ``PYTHONPATH=.:plugins/marlin_plugin:benchmarks python3
plugins/marlin_plugin/gpu/probe_stream_k.py --out OUT.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch

from bench_marlin import _config, _layer, _random_checkpoint, interleaved_times_us
from kernel_core_marlin import tile

#: (name, N, K, M, bmx, rw) of each comparison; N in 128-row tiles of 132 SMs where named so.
CASES = [
    ("one_tile", 132 * 128, 8192, 128, 128, 1),
    ("one_tile", 132 * 128, 8192, 64, 64, 1),
    ("one_tile", 132 * 128, 8192, 256, 256, 1),
    ("two_tiles", 264 * 128, 8192, 128, 128, 1),
    ("shared", 198 * 128, 8192, 128, 128, 1),
    ("bench", 28672, 8192, 128, 128, 1),
    ("bench", 28672, 8192, 256, 256, 1),
    ("bench", 10240, 8192, 128, 128, 1),
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--replays", type=int, default=10)
    args = parser.parse_args()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rows = []
    for name, n, k, m, bmx, rw in CASES:
        config, kernel_class = _config("int4_g128", n, k)
        layer = _layer(_random_checkpoint(config, "int4_g128"))
        kernel = kernel_class(config)
        kernel.process_weights_after_loading(layer)
        copies = max(1, math.ceil(150 * 2**20 / sum(p.numel() * p.element_size()
                                                   for p in layer.parameters())))
        layers = [layer] + [_layer({nm: p.data.clone() for nm, p in layer.named_parameters()})
                            for _ in range(copies - 1)]
        xs = [torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for _ in layers]

        def calls(variant: int):
            return [lambda lay=lay, x=x: tile.tile_gemm(
                x, lay.weight, lay.weight_scale, None, None, None, None, kernel._fmt, n,
                kernel._group_size, kernel._zconst, bmx, rw, 1, variant)
                for lay, x in zip(layers, xs)] * max(1, 8 // copies)

        times = interleaved_times_us({"bulk": calls(2), "stream-K": calls(tile.STREAM_K)},
                                     args.replays)
        tiles = math.ceil(n / (128 * rw)) * math.ceil(m / bmx)
        chunks = layer.weight.shape[1]
        per_block = math.ceil(tiles * chunks / min(sms, tiles * chunks))
        ref = tile.tile_gemm(xs[0], layer.weight, layer.weight_scale, None, None, None, None,
                             kernel._fmt, n, kernel._group_size, kernel._zconst, bmx, rw, 1, 2)
        got = tile.tile_gemm(xs[0], layer.weight, layer.weight_scale, None, None, None, None,
                             kernel._fmt, n, kernel._group_size, kernel._zconst, bmx, rw, 1,
                             tile.STREAM_K)
        row = {"case": name, "N": n, "K": k, "M": m, "bmx": bmx, "rw": rw, "tiles": tiles,
               "stream_chunks_per_block": per_block, "bulk_waves": math.ceil(tiles / sms),
               "bulk_us": round(times["bulk"], 2), "stream_k_us": round(times["stream-K"], 2),
               "stream_k_us_per_chunk": round(times["stream-K"] / per_block, 4),
               "bulk_us_per_chunk": round(times["bulk"] / (math.ceil(tiles / sms) * chunks), 4),
               "max_abs_diff": float((ref.float() - got.float()).abs().max())}
        log(json.dumps(row))
        rows.append(row)
        del layers, xs
        torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(0), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
