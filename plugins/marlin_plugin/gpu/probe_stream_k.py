"""Where the stream-K tile variant (3) loses time against the bulk variant (2), on a GPU machine.

Both variants run the same consumers, copy roles and stages (two chunks where three such stages
fit, the scale tables by tensor copies: NOTES.md v32); stream-K adds segments (a block's share of
the chunks crossing tile boundaries), the pieces of shared tiles through the workspace, and one
mbarrier arrival per weight warp and stage. The layers below separate those costs (int4 g128,
bf16, through the extension's op, CUDA-graph replays, interleaved rounds of
benchmarks/bench_marlin.py):

- ``one_tile``: 132 tiles, so each stream-K block gets exactly one whole tile, the same work as
  the bulk variant's grid of 132 blocks: any difference is per-chunk code;
- ``two_tiles``: 264 tiles, two whole tiles per stream-K block (two segments, no pieces) against
  the bulk variant's two waves: with ``one_tile``, a block's fixed cost and its per-chunk time;
- ``shared``: 198 tiles, one and a half per block (every block stores and may sum pieces);
- the benchmark layers (``bench``), where the planner would weigh stream-K against the bulk
  variant's whole tiles.

Every stream-K case also runs on half the blocks (``stream_k_half_blocks_us``): twice the chunks a
block and half the pieces, so against the full grid it says whether the time is the chunks' or the
pieces' (with no cost per piece, t(half) - t(full) = chunks per full block x the per-chunk time).

Run (repo root): ``PYTHONPATH=.:plugins/marlin_plugin:benchmarks python3
plugins/marlin_plugin/gpu/probe_stream_k.py --out OUT.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable

import torch
from bench_marlin import _config, _layer, _random_checkpoint, interleaved_times_us
from kernel_core_marlin import ops, tile

#: (name, N, K, M, bmx, rw) of each comparison; N in tiles of 132 SMs where named so.
CASES = [
    ("one_tile", 132 * 256, 8192, 64, 64, 2),
    ("one_tile", 132 * 128, 8192, 64, 64, 1),
    ("one_tile", 132 * 128, 8192, 128, 128, 1),
    ("one_tile", 132 * 128, 8192, 256, 256, 1),
    ("two_tiles", 264 * 256, 8192, 64, 64, 2),
    ("two_tiles", 264 * 128, 8192, 128, 128, 1),
    ("shared", 198 * 128, 8192, 128, 128, 1),
    ("bench", 28672, 8192, 64, 64, 2),
    ("bench", 10240, 8192, 64, 64, 2),
    ("bench", 28672, 8192, 128, 128, 1),
    ("bench", 10240, 8192, 128, 128, 1),
    ("bench", 28672, 8192, 256, 256, 1),
    ("bench", 10240, 8192, 256, 256, 1),
    ("bench", 8192, 8192, 256, 256, 1),
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure(name: str, n: int, k: int, m: int, bmx: int, rw: int, sms: int,
            replays: int) -> dict:
    """One case: the bulk variant's whole tiles, stream-K on every SM and on half of them."""
    config, kernel_class = _config("int4_g128", n, k)
    layer = _layer(_random_checkpoint(config, "int4_g128"))
    kernel = kernel_class(config)
    kernel.process_weights_after_loading(layer)
    copies = max(1, math.ceil(150 * 2**20 / sum(p.numel() * p.element_size()
                                               for p in layer.parameters())))
    layers = [layer] + [_layer({nm: p.data.clone() for nm, p in layer.named_parameters()})
                        for _ in range(copies - 1)]
    xs = [torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for _ in layers]
    partials, arrivals = tile.stream_workspace(xs[0].device)
    ext = ops.extension(xs[0].device)
    empty = xs[0].new_empty(0)

    def launch(lay, x, variant: int, blocks: int) -> torch.Tensor:
        """tile.tile_gemm with the stream-K grid cut to ``blocks`` (the op gives it one block per
        SM: the workspace's counters)."""
        stream = torch.cuda.current_stream().cuda_stream  # the capture's stream in a graph
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
        img = torch.empty((lay.weight.shape[1], (m + 7) // 8 * 8, 64), dtype=x.dtype,
                          device=x.device)
        ext.activation_image(x, img, stream)
        ext.tile_gemm(x, img, lay.weight, lay.weight_scale, empty, empty, empty, empty, out,
                      partials, arrivals[:blocks], kernel._fmt, kernel._group_size,
                      kernel._zconst, bmx, rw, 1, variant, ops.LAUNCH_WITH_PDL, stream)
        return out

    def calls(variant: int, blocks: int = sms):
        return [lambda lay=lay, x=x: launch(lay, x, variant, blocks)
                for lay, x in zip(layers, xs)] * max(1, 8 // copies)

    times = interleaved_times_us({"bulk": calls(2), "stream-K": calls(tile.STREAM_K),
                                  "stream-K half": calls(tile.STREAM_K, sms // 2)}, replays)
    tiles = math.ceil(n / (128 * rw)) * math.ceil(m / bmx)
    chunks = layer.weight.shape[1]
    per_block = math.ceil(tiles * chunks / min(sms, tiles * chunks))
    ref = launch(layer, xs[0], 2, sms)
    diffs = {f"max_abs_diff_{blocks}_blocks": float(
        (ref.float() - launch(layer, xs[0], tile.STREAM_K, blocks).float()).abs().max())
        for blocks in (sms, sms // 2)}
    return {"case": name, "N": n, "K": k, "M": m, "bmx": bmx, "rw": rw, "tiles": tiles,
            "stream_chunks_per_block": per_block, "bulk_waves": math.ceil(tiles / sms),
            "bulk_us": round(times["bulk"], 2), "stream_k_us": round(times["stream-K"], 2),
            "stream_k_half_blocks_us": round(times["stream-K half"], 2),
            "stream_k_us_per_chunk": round(times["stream-K"] / per_block, 4),
            "bulk_us_per_chunk": round(times["bulk"] / (math.ceil(tiles / sms) * chunks), 4),
            "ref_finite": bool(torch.isfinite(ref).all()), **diffs}


def run_cases(out: str, measure: Callable[..., dict], *extra: int,
              shown: Callable[[dict], dict] = lambda row: row) -> None:
    """measure(*case, sms, *extra) for every case of CASES, each row logged (as ``shown`` gives
    it) and the JSON at ``out`` rewritten after every case: a timeout keeps what ran."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rows = []
    for case in CASES:
        row = measure(*case, sms, *extra)
        log(json.dumps(shown(row)))
        rows.append(row)
        torch.cuda.empty_cache()
        with open(out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                       "git_revision": os.environ.get("KCM_GIT_REV", "unknown"),
                       "command": " ".join(sys.argv), "rows": rows}, f, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--replays", type=int, default=10)
    args = parser.parse_args()
    run_cases(args.out, measure, args.replays)


if __name__ == "__main__":
    main()
