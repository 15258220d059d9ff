"""Benchmark of kernel-core-marlin against bf16 ``torch.matmul`` on the same shapes, in one run.

For each weight format (int4 g128 symmetric, NVFP4 W4A16), (N, K) and M: the time of the plugin's
path that ``apply_weights`` picks, of every launch variant tried (stream-kernel tile shapes and
the decode + cuBLAS path), of bf16 ``torch.matmul``, the speedup, and the achieved weight
bandwidth as a share of the device-to-device copy bandwidth measured in the same run. Every time
is a median of CUDA-graph replays; each graph calls the op on several copies of weights and
inputs whose total exceeds L2, so no call finds its weights cached. The graphs of one (shape, M)
are replayed once per round, in a new random order each round, so a drift of clocks during the
run, and the kernel that ran just before, fall on bf16, the plugin's choice and every variant
alike. The bulk pipelines go out as programmatic dependents (PDL) of the call before them; at
M <= 64 where the plugin's path does, the same launch without PDL and every call preceded by an
RMS norm (bf16, the plugin, the plain launch) show how much of the time that overlap takes off.
Also reports, per layer, the bytes held after processing against the packed checkpoint's bytes.

Usage: python benchmarks/bench_marlin.py --out results.json [--plot results.png] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from kernel_core.bench.timing import capture_graph, paired
from kernel_core.families import MPLinearLayerConfig, NvFp4LinearLayerConfig
from kernel_core_marlin import ops, tile
from kernel_core_marlin.kernels import (
    DEQUANT_MATMUL_MIN_M,
    MarlinMPLinearKernel,
    MarlinNvFp4LinearKernel,
)

SHAPES = ((28672, 8192), (8192, 28672), (10240, 8192), (8192, 8192))
M_VALUES = (1, 16, 32, 64, 128, 256, 4096)
L2_BYTES = 50 * 2**20
ROTATE_BYTES = 3 * L2_BYTES  # weights touched by one graph's calls before any repeats
TARGETS = {1: 3.3, 16: 3.3, 64: 2.5, 128: 1.5, 256: 1.0, 4096: 0.85}
#: (rows per warp, warps along N, warps along K, pipeline) of the stream kernel tried per M
#: (pipelines 2-6, the bulk pipeline with the default consumer, the flat one, the flat one with
#: an exact last tile group, that one on a plan with a 2-stage ring allowed, and that one with the
#: scales applied after each chunk's mma (int4 layers whose groups hold whole chunks); SM90 only).
STREAM_VARIANTS = ((1, 1, 8, 0), (2, 1, 8, 0), (2, 2, 4, 0), (1, 1, 4, 1), (2, 1, 4, 1),
                   (1, 1, 8, 1), (1, 1, 8, 2), (1, 1, 8, 3), (1, 1, 8, 4), (1, 1, 8, 5),
                   (1, 1, 8, 6))
#: The candidate that runs the plugin's own launch configuration without PDL (where it uses PDL).
PLAIN_LAUNCH = "stream (auto config), plain launch"
#: Candidates that first compute x = rms_norm(x) (a kernel that does not trigger its dependents
#: early), then the GEMM: bf16, the plugin's path, and its launch configuration without PDL.
AFTER_NORM = {"bf16": "rms_norm + bf16", "auto": "rms_norm + auto",
              "plain": "rms_norm + stream (auto config), plain launch"}
#: M range (inclusive) where stream-K's 16- and 32-token tile blocks run beside the plugin's path
#: (tile.SMALL_STREAM_SHAPES): the stream kernel's two-column-tile range and up.
SMALL_TILE_M = (9, 32)
#: Most 8-column M tiles each bulk pipeline serves (M <= 32, and M <= 16 for pipelines 4-6);
#: the launcher refuses more, so those variants are not tried.
BULK_MAX_M_TILES = {2: 4, 3: 4, 4: 2, 5: 2, 6: 2}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _ratio_range(pair: dict) -> dict[str, float]:
    """A :func:`paired` result's per-round ratios as {median, min, max}, rounded for the JSON."""
    return {"median": round(pair["ratio"], 3), "min": round(pair["ratio_min"], 3),
            "max": round(pair["ratio_max"], 3)}


def _replay_us(graph: torch.cuda.CUDAGraph, calls: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1000.0 / calls


def graph_time_us(calls: list[Callable[[], Any]], replays: int) -> float:
    """Median time per call of a CUDA graph that runs ``calls`` once each in order."""
    graph = capture_graph(calls)
    times = [_replay_us(graph, len(calls)) for _ in range(replays)]
    del graph
    return statistics.median(times)


def interleaved_times_us(candidates: dict[str, list[Callable[[], Any]]],
                         rounds: int) -> dict[str, float]:
    """Median time per call of each candidate's CUDA graph over :func:`interleaved_rounds_us`."""
    return {name: statistics.median(t)
            for name, t in interleaved_rounds_us(candidates, rounds).items()}


def interleaved_rounds_us(candidates: dict[str, list[Callable[[], Any]]],
                          rounds: int) -> dict[str, list[float]]:
    """Time per call of each candidate's CUDA graph in each round, the graphs replayed once per
    round for ``rounds`` rounds, in a new random order each round (seeded): in a fixed order "auto"
    always replayed right after the bf16 reference and read 0.5-1.2 us slower than the identical
    forced launch (marlin-h100-2026-11-27-final.json, -v8.json). The graphs are also captured in a
    seeded random order: graphs captured later read ~0.2-0.3 us faster on 20-90 us kernels
    (marlin-h100-2026-11-27-v14-capture-order.json), which favoured the variants, captured after
    "auto". A candidate whose calls raise (a launch the kernel refuses) is logged and left out."""
    graphs = {}
    capture_order = list(candidates)
    random.Random(1).shuffle(capture_order)
    for name in capture_order:
        try:
            graphs[name] = (capture_graph(candidates[name]), len(candidates[name]))
        except RuntimeError as exc:
            log(f"{name}: {exc}")
    times: dict[str, list[float]] = {name: [] for name in graphs}
    order = list(graphs)
    shuffler = random.Random(0)
    for _ in range(rounds):
        shuffler.shuffle(order)
        for name in order:
            graph, count = graphs[name]
            times[name].append(_replay_us(graph, count))
    del graphs
    return times


def copy_bandwidth() -> float:
    """Device-to-device copy, bytes read + written per second (median of 20)."""
    size = 1 << 30
    src = torch.empty(size, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000.0)
    return 2 * size / statistics.median(times)


def _config(fmt: str, n: int, k: int):
    if fmt == "int4_g128":
        return MPLinearLayerConfig(weight_shape=(n, k), group_size=128), MarlinMPLinearKernel
    config = NvFp4LinearLayerConfig(weight_shape=(n, k), activation_mode="w4a16")
    return config, MarlinNvFp4LinearKernel


def _random_checkpoint(config, fmt: str) -> dict[str, torch.Tensor]:
    """Contract parameters of random codes and realistic scales, made directly on the GPU (the
    quantizer would need the whole float weight; here only the layout and the byte count matter)."""
    n, k = config.weight_shape
    if fmt == "int4_g128":
        return {
            "weight": torch.randint(-2**31, 2**31 - 1, (n, k // 8), dtype=torch.int32,
                                    device="cuda"),
            "weight_scale": (torch.rand(n, k // 128, device="cuda") * 1e-3 + 1e-3).to(
                config.act_dtype),
        }
    return {
        "weight": torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, device="cuda"),
        "weight_scale": (torch.rand(n, k // 16, device="cuda") * 400 + 10).to(torch.float8_e4m3fn),
        "weight_global_scale": torch.tensor([1e-4], device="cuda"),
    }


def _layer(params: dict[str, torch.Tensor]) -> torch.nn.Module:
    layer = torch.nn.Module()
    for name, tensor in params.items():
        layer.register_parameter(name, torch.nn.Parameter(tensor, requires_grad=False))
    return layer


def _bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def bench_shape(fmt: str, n: int, k: int, m_values, replays: int,
                copy_bw: float) -> tuple[list[dict], dict]:
    config, kernel_class = _config(fmt, n, k)
    checkpoint = _random_checkpoint(config, fmt)
    checkpoint_bytes = sum(t.numel() * t.element_size() for t in checkpoint.values())
    layer = _layer(checkpoint)
    del checkpoint  # the layer holds the only reference, as after an engine's loader
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    kernel = kernel_class(config)
    start = time.perf_counter()
    kernel.process_weights_after_loading(layer)
    torch.cuda.synchronize()
    memory = {
        "format": fmt, "N": n, "K": k, "checkpoint_bytes": checkpoint_bytes,
        "processed_bytes": _bytes(layer),
        "process_peak_extra_bytes": torch.cuda.max_memory_allocated() - base,
        "process_seconds": time.perf_counter() - start,
    }
    memory["peak_extra_over_processed"] = round(
        memory["process_peak_extra_bytes"] / memory["processed_bytes"], 3)
    weight_bytes = memory["processed_bytes"]
    copies = max(1, math.ceil(ROTATE_BYTES / weight_bytes))
    layers = [layer] + [_layer({name: p.data.clone() for name, p in layer.named_parameters()})
                        for _ in range(copies - 1)]
    bf16_copies = max(1, math.ceil(ROTATE_BYTES / (n * k * 2)))
    bf16_weights = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
                    for _ in range(bf16_copies)]
    chunks = layer.weight.shape[1]
    rows = []
    for m in m_values:
        xs = [torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
        candidates = {
            "bf16": [lambda w=w, x=xs[i % copies]: torch.matmul(x, w.T)
                     for i, w in enumerate(bf16_weights)] * max(1, 8 // bf16_copies),
            "auto": [lambda lay=lay, x=x: kernel.apply_weights(lay, x)
                     for lay, x in zip(layers, xs)] * max(1, 8 // copies),
        }
        def stream(lay, x, mt, r, wn, wk, pipe, pdl):
            return ops.gemm(x, lay.weight, lay.weight_scale, None, None,
                            getattr(lay, "weight_channel_scale", None), None, kernel._fmt, n,
                            kernel._group_size, kernel._zconst, mt, r, wn, wk, pipe, pdl=pdl)

        if m <= 64:
            mt = ops.launch_config(m, kernel._fmt)[0]
            for r, wn, wk, pipe in STREAM_VARIANTS:
                if mt > BULK_MAX_M_TILES.get(pipe, mt) or (pipe == 6 and not kernel._chunk_scales):
                    continue
                candidates[f"stream mt={mt} r={r} wn={wn} wk={wk} pipeline={pipe}"] = [
                    lambda lay=lay, x=x, cfg=(mt, r, wn, wk, pipe): stream(
                        lay, x, *cfg, ops.launch_with_pdl(cfg[4]))
                    for lay, x in zip(layers, xs)
                ] * max(1, 8 // copies)
        auto_config = ops.launch_config(m, kernel._fmt, kernel._bulk, kernel._chunk_scales,
                                        n=n, k=k, sms=kernel._sms)
        if m <= 64 and ops.launch_with_pdl(auto_config[4]):
            # PDL's share: the same launch, plain; and both after a kernel that does not trigger
            # its dependents early (an RMS norm producing x, as before a projection in a model),
            # against bf16 after the same norm.
            norm_weight = torch.ones(k, device="cuda", dtype=torch.bfloat16)

            def normed(x, weight=norm_weight):
                return torch.nn.functional.rms_norm(x, (k,), weight)

            candidates[PLAIN_LAUNCH] = [
                lambda lay=lay, x=x, cfg=auto_config: stream(lay, x, *cfg, False)
                for lay, x in zip(layers, xs)] * max(1, 8 // copies)
            candidates[AFTER_NORM["bf16"]] = [
                lambda w=w, x=xs[i % copies]: torch.matmul(normed(x), w.T)
                for i, w in enumerate(bf16_weights)] * max(1, 8 // bf16_copies)
            candidates[AFTER_NORM["auto"]] = [
                lambda lay=lay, x=x: kernel.apply_weights(lay, normed(x))
                for lay, x in zip(layers, xs)] * max(1, 8 // copies)
            candidates[AFTER_NORM["plain"]] = [
                lambda lay=lay, x=x, cfg=auto_config: stream(lay, normed(x), *cfg, False)
                for lay, x in zip(layers, xs)] * max(1, 8 // copies)
        if m >= 64:
            def dequant_mm(lay, x):
                w = ops.dequantize(lay.weight, lay.weight_scale, None, None,
                                   getattr(lay, "weight_channel_scale", None), kernel._fmt, n,
                                   kernel._group_size, kernel._zconst, torch.bfloat16)
                return torch.matmul(x, w[:, :k].T)

            candidates["dequantize+matmul"] = [
                lambda lay=lay, x=x: dequant_mm(lay, x) for lay, x in zip(layers, xs)
            ] * max(1, 4 // copies)
        if 64 <= m <= 256:  # the stream kernel past the crossover, for the record
            stream_config = ops.launch_config(m, kernel._fmt)
            candidates["stream (auto config)"] = [
                lambda lay=lay, x=x, cfg=stream_config: stream(lay, x, *cfg, False)
                for lay, x in zip(layers, xs)] * max(1, 4 // copies)
        def tile_launches(bmx: int, rw: int, split: int, variant: int, layers=layers,
                          xs=xs, candidates=candidates) -> None:
            candidates[f"tile {tile.TILE_VARIANTS[variant]} bmx={bmx} rw={rw} split={split}"] = [
                lambda lay=lay, x=x: tile.tile_gemm(
                    x, lay.weight, lay.weight_scale, None, None,
                    getattr(lay, "weight_channel_scale", None), None, kernel._fmt, n,
                    kernel._group_size, kernel._zconst, bmx, rw, split, variant)
                for lay, x in zip(layers, xs)] * max(1, 8 // copies)

        tile_serves = kernel._tile is not None and kernel._tile.serves(m)
        if tile_serves:  # side by side: the best plan with whole tiles per block (no stream-K)
            whole = tile.tile_plan(m, n, chunks, kernel._tile.limits, kernel._tile.sms,
                                   {shape: us for shape, us in tile.CHUNK_US.items()
                                    if shape[0] != tile.STREAM_K})
            tile_launches(whole.bmx, whole.rw, whole.split, whole.variant)
        if kernel._tile is not None and SMALL_TILE_M[0] <= m <= SMALL_TILE_M[1]:
            for bmx, rw in tile.SMALL_STREAM_SHAPES:  # stream-K's 16- and 32-token blocks
                tile_launches(bmx, rw, 1, tile.STREAM_K)
        rounds_us = interleaved_rounds_us(candidates, replays)
        head = paired(rounds_us["bf16"], rounds_us["auto"])
        variants = {name: statistics.median(t) for name, t in rounds_us.items()}
        bf16_us = variants.pop("bf16")
        after_norm = {key: variants.pop(name) for key, name in AFTER_NORM.items()
                      if name in variants}
        auto_us = variants["auto"]
        best_name = min(variants, key=variants.get)
        row = {
            "format": fmt, "N": n, "K": k, "M": m,
            "bf16_matmul_us": round(bf16_us, 2),
            "kernel_us": round(auto_us, 2),
            "speedup": round(bf16_us / auto_us, 3),
            "speedup_paired": _ratio_range(head),
            "weight_bandwidth_share_of_copy": round(weight_bytes / (auto_us * 1e-6) / copy_bw, 3),
            "best_variant": best_name,
            "best_us": round(variants[best_name], 2),
            "best_speedup": round(bf16_us / variants[best_name], 3),
            "variants_us": {name: round(t, 2) for name, t in variants.items()},
            "target_speedup": TARGETS.get(m),
        }
        if tile_serves:
            row["tile_plan"] = kernel._tile.plan(m).reason
        if PLAIN_LAUNCH in variants:
            row["pdl_saves_us"] = round(variants[PLAIN_LAUNCH] - auto_us, 2)
        if after_norm:
            row["after_rms_norm_us"] = {key: round(t, 2) for key, t in after_norm.items()}
            if "bf16" in after_norm and "auto" in after_norm:
                row["after_rms_norm_speedup"] = round(after_norm["bf16"] / after_norm["auto"], 3)
        log(f"{fmt} N={n} K={k} M={m}: bf16 {bf16_us:.1f} us, kernel {auto_us:.1f} us "
            f"({row['speedup']:.2f}x, rounds {head['ratio_min']:.2f}-{head['ratio_max']:.2f}x, "
            f"{row['weight_bandwidth_share_of_copy']:.0%} of copy bw), "
            f"best {best_name} {variants[best_name]:.1f} us")
        rows.append(row)
        del xs
    del layers, bf16_weights
    torch.cuda.empty_cache()
    return rows, memory


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def summarize(rows: list[dict]) -> dict:
    """Per format and M: the geomean of the large shapes' speedups (medians of times), the same
    over their paired per-round ratios (median, and the geomeans of each shape's lowest and
    highest round: how far the verdict against a bar moves with the rounds), and 8192 x 8192's."""
    summary = {}
    for fmt in sorted({r["format"] for r in rows}):
        for m in sorted({r["M"] for r in rows}):
            big = [r for r in rows if r["format"] == fmt and r["M"] == m
                   and (r["N"], r["K"]) != (8192, 8192)]
            small = [r["speedup"] for r in rows if r["format"] == fmt and r["M"] == m
                     and (r["N"], r["K"]) == (8192, 8192)]
            summary[f"{fmt} M={m}"] = {
                "geomean_speedup_large_shapes": round(geomean([r["speedup"] for r in big]), 3),
                "geomean_paired_large_shapes": {
                    key: round(geomean([r["speedup_paired"][key] for r in big]), 3)
                    for key in ("median", "min", "max")},
                "speedup_8192x8192": small[0] if small else None,
                "target": TARGETS.get(m),
            }
    return summary


def plot(rows: list[dict], path: str, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    formats = sorted({r["format"] for r in rows})
    fig, axes = plt.subplots(1, len(formats), figsize=(6 * len(formats), 4.5), squeeze=False)
    for ax, fmt in zip(axes[0], formats):
        for n, k in SHAPES:
            pts = sorted((r["M"], r["speedup"]) for r in rows
                         if r["format"] == fmt and (r["N"], r["K"]) == (n, k))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{n}x{k}")
        targets = sorted(TARGETS.items())
        ax.plot([t[0] for t in targets], [t[1] for t in targets], "k--", label="target")
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("M (tokens)")
        ax.set_ylabel("speedup over bf16 torch.matmul")
        ax.set_title(f"kernel-core-marlin {fmt}, {device}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--plot")
    parser.add_argument("--quick", action="store_true", help="two shapes, three M values")
    parser.add_argument("--replays", type=int, default=12)
    parser.add_argument("--formats", default="int4_g128,nvfp4_w4a16")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.cuda.get_device_name()
    copy_bw = copy_bandwidth()
    log(f"{device}: copy bandwidth {copy_bw / 1e12:.2f} TB/s")
    shapes = SHAPES[::3] if args.quick else SHAPES
    m_values = (1, 16, 256) if args.quick else M_VALUES
    rows, memory = [], []
    for fmt in args.formats.split(","):
        for n, k in shapes:
            shape_rows, shape_memory = bench_shape(fmt, n, k, m_values, args.replays, copy_bw)
            rows += shape_rows
            memory.append(shape_memory)
            write_result(args, device, copy_bw, rows, memory)  # partial results survive a timeout
    write_result(args, device, copy_bw, rows, memory)
    if args.plot:
        try:
            plot(rows, args.plot, device)
        except ImportError as exc:
            log(f"no plot: {exc}")


def write_result(args, device: str, copy_bw: float, rows: list[dict], memory: list[dict]) -> None:
    import triton

    result = {
        "device": device,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join(sys.argv),
        "git_revision": os.environ.get("KCM_GIT_REV", "unknown"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "cuda": torch.version.cuda, "triton": triton.__version__},
        "method": "CUDA-graph replay medians, the graphs of one (shape, M) replayed once "
                  f"per round in a new seeded random order for {args.replays} rounds; weights and "
                  f"inputs rotated over copies totalling >= {ROTATE_BYTES >> 20} MiB; bf16 "
                  "activations. Each graph runs its calls back to back, so a GEMM launched with "
                  "PDL (the bulk pipelines) overlaps the previous call's end; pdl_saves_us is "
                  "the same launch without PDL minus auto, after_rms_norm_us each call preceded "
                  "by an RMS norm producing x (a kernel that does not trigger its dependents). "
                  "Graphs captured in a seeded random order. speedup_paired: the per-round "
                  "ratios bf16 / auto of the same rounds (median, min, max).",
        "copy_bandwidth_TBps": round(copy_bw / 1e12, 3),
        "dequant_matmul_min_m": {str(k): v for k, v in DEQUANT_MATMUL_MIN_M.items()},
        "summary": summarize(rows),
        "results": rows,
        "memory": memory,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
