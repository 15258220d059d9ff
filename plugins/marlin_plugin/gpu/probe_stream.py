"""Timing sweep of the stream kernel's pipelines at decode sizes, side by side with bf16
``torch.matmul``, for choosing the M <= 32 launch configuration.

For int4 g128 and NVFP4 W4A16 (bf16 activations), the issue's four (N, K) shapes and M in
{1, 4, 16, 32}: the time of what ``apply_weights`` runs, of each bulk-pipeline variant (the
default consumer with 8 warps, pipeline 2; the flat consumer with 8 warps and, at M <= 8, with 16,
pipeline 3; at M <= 16 the flat consumer whose last tile group decodes only the pass's own tiles,
pipeline 4, which runs pipeline 3's instance where every pass of the widest block holds whole tile
groups; at M = 9..16 pipeline 4 planned with a 2-stage ring allowed, pipeline 5), of the launch
the plugin took before the bulk pipeline (``launch_config`` without it), of bf16
``torch.matmul``, and the achieved weight bandwidth as a share of the copy bandwidth.
Every time is a median of CUDA-graph replays over copies of weights and inputs totalling more
than L2, the graphs of one (shape, M) replayed in turn round after round (the benchmark's own
helpers). Every variant's output (and the automatic choice's) is
compared with the float64 product of the same activations and the weight the random checkpoint
encodes (``dequantize_weight`` before packing); a relative error above 1e-2 is logged as FAILED.

Usage (repo root, extension built): python3 plugins/marlin_plugin/gpu/probe_stream.py --out F
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
import bench_marlin as bench  # noqa: E402

from kernel_core.formats.layer import dequantize_weight  # noqa: E402
from kernel_core.testing import relative_error  # noqa: E402
from kernel_core_marlin import ops  # noqa: E402
from kernel_core_marlin.prepare import Format  # noqa: E402

SHAPES = ((28672, 8192), (8192, 28672), (10240, 8192), (8192, 8192))
M_VALUES = (1, 4, 16, 32)
#: Bars of issue #4 at M = 1 and 16: geomean over the three large shapes, and 8192 x 8192.
BARS = {"large_shapes_geomean": 3.3, "8192x8192": 2.3}


#: Relative error against float64 above which a variant's output counts as wrong.
MAX_RELATIVE_ERROR = 1e-2


def variants(m: int, fmt: int, chunk_scales: bool) -> dict[str, tuple[int, ...]]:
    mt = ops.launch_config(m, fmt, True)[0]
    found = {
        "bulk w8": (mt, 1, 1, 8, 2),
        "flat w8": (mt, 1, 1, 8, 3),
    }
    if mt == 1:
        found["flat w16"] = (mt, 1, 1, 16, 3)
    if mt <= 2 and Format.BITS[fmt] == 4:
        found["flat tail w8"] = (mt, 1, 1, 8, 4)
    if mt == 2 and Format.BITS[fmt] == 4:
        found["flat tail 2-stage w8"] = (mt, 1, 1, 8, 5)
    if mt <= 2 and chunk_scales:
        found["scale after mma w8"] = (mt, 1, 1, 8, 6)
    found["before (no bulk)"] = ops.launch_config(m, fmt, False)
    return found


def run_shape(fmt: str, n: int, k: int, replays: int, copy_bw: float, log) -> list[dict]:
    config, kernel_class = bench._config(fmt, n, k)
    layer = bench._layer(bench._random_checkpoint(config, fmt))
    reference = dequantize_weight(config, layer, dtype=torch.float64)
    kernel = kernel_class(config)
    kernel.process_weights_after_loading(layer)
    weight_bytes = bench._bytes(layer)
    copies = max(1, math.ceil(bench.ROTATE_BYTES / weight_bytes))
    layers = [layer] + [bench._layer({name: p.data.clone() for name, p in layer.named_parameters()})
                        for _ in range(copies - 1)]
    reps = max(1, 8 // copies)
    chan = [getattr(lay, "weight_channel_scale", None) for lay in layers]
    rows = []
    bf16_copies = max(1, math.ceil(bench.ROTATE_BYTES / (n * k * 2)))
    bf16_weights = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
                    for _ in range(bf16_copies)]
    for m in M_VALUES:
        xs = [torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]

        def call(i: int, cfg: tuple[int, ...], xs=xs) -> torch.Tensor:
            lay = layers[i]
            return ops.gemm(xs[i], lay.weight, lay.weight_scale, None, None, chan[i], None,
                            kernel._fmt, n, kernel._group_size, kernel._zconst, *cfg)

        configs = variants(m, kernel._fmt, kernel._chunk_scales)
        candidates = {
            "bf16": [lambda w=w, x=xs[i % copies]: torch.matmul(x, w.T)
                     for i, w in enumerate(bf16_weights)] * max(1, 8 // bf16_copies),
            "auto": [lambda lay=lay, x=x: kernel.apply_weights(lay, x)
                     for lay, x in zip(layers, xs)] * reps,
        }
        for name, cfg in configs.items():
            candidates[name] = [lambda i=i, cfg=cfg: call(i, cfg) for i in range(copies)] * reps
        times = bench.interleaved_times_us(candidates, replays)
        bf16_us = times.pop("bf16")
        expected = xs[0].double() @ reference.T
        errors = {"auto": relative_error(kernel.apply_weights(layers[0], xs[0]), expected)}
        for name, cfg in configs.items():
            if name not in times:
                log(f"{fmt} {n}x{k} M={m} {name} {cfg}: refused")
                continue
            # Poison: the freed block of a NaN-filled output is what the caching allocator hands
            # the next call of the same size, so an unwritten element shows as NaN.
            stale = call(0, cfg)
            stale.fill_(float("nan"))
            del stale
            out = call(0, cfg)
            errors[name] = relative_error(out, expected)
        failed = {name: e for name, e in errors.items() if not e <= MAX_RELATIVE_ERROR}
        if failed:
            log(f"FAILED {fmt} {n}x{k} M={m}: relative error vs float64 {failed}")
        auto_us = times["auto"]
        row = {
            "format": fmt, "N": n, "K": k, "M": m, "bf16_matmul_us": round(bf16_us, 2),
            "kernel_us": round(auto_us, 2), "speedup": round(bf16_us / auto_us, 3),
            "weight_bandwidth_share_of_copy": round(weight_bytes / (auto_us * 1e-6) / copy_bw, 3),
            "auto_config": list(ops.launch_config(m, kernel._fmt, kernel._bulk,
                                                  kernel._chunk_scales)),
            "variants_us": {name: round(t, 2) for name, t in times.items()},
            "variant_speedups": {name: round(bf16_us / t, 3) for name, t in times.items()},
            "relative_error_vs_float64": {name: float(f"{v:.3g}") for name, v in errors.items()},
            "correct": not failed,
            "weight_bytes": weight_bytes,
        }
        log(f"{fmt} {n}x{k} M={m}: bf16 {bf16_us:.1f} us, auto {auto_us:.1f} us "
            f"({row['speedup']:.2f}x, {row['weight_bandwidth_share_of_copy']:.0%} of copy); "
            + ", ".join(f"{name} {t:.1f}" for name, t in times.items())
            + f"; errors {row['relative_error_vs_float64']}")
        rows.append(row)
        del xs
    del layers, reference, bf16_weights
    torch.cuda.empty_cache()
    return rows


def summarize(rows: list[dict]) -> dict:
    summary = {}
    for fmt in sorted({r["format"] for r in rows}):
        for m in M_VALUES:
            sel = [r for r in rows if r["format"] == fmt and r["M"] == m]
            big = [r["speedup"] for r in sel if (r["N"], r["K"]) != (8192, 8192)]
            small = [r["speedup"] for r in sel if (r["N"], r["K"]) == (8192, 8192)]
            summary[f"{fmt} M={m}"] = {
                "geomean_speedup_large_shapes": round(bench.geomean(big), 3) if big else None,
                "speedup_8192x8192": small[0] if small else None,
                "bars": BARS if m in (1, 16) else None,
            }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--replays", type=int, default=12)
    parser.add_argument("--formats", default="int4_g128,nvfp4_w4a16")
    args = parser.parse_args()
    torch.manual_seed(0)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    copy_bw = bench.copy_bandwidth()
    device = torch.cuda.get_device_name()
    log(f"{device}: copy bandwidth {copy_bw / 1e12:.2f} TB/s")
    rows: list[dict] = []
    for fmt in args.formats.split(","):
        for n, k in SHAPES:
            rows += run_shape(fmt, n, k, args.replays, copy_bw, log)
            result = {
                "device": device,
                "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                "command": " ".join(sys.argv),
                "git_revision": os.environ.get("KCM_GIT_REV", "unknown"),
                "versions": {"python": platform.python_version(), "torch": torch.__version__,
                             "cuda": torch.version.cuda},
                "method": "CUDA-graph replay medians, the graphs of one (shape, M) replayed in "
                          f"turn for {args.replays} rounds; weights and inputs rotated over copies "
                          f"totalling >= {bench.ROTATE_BYTES >> 20} MiB; bf16 activations",
                "copy_bandwidth_TBps": round(copy_bw / 1e12, 3),
                "summary": summarize(rows),
                "results": rows,
            }
            Path(args.out).write_text(json.dumps(result, indent=1))  # partial results survive


if __name__ == "__main__":
    main()
