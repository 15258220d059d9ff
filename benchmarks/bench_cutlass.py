"""kernel-core-cutlass against what a user would run instead, side by side on one GPU.

Per (N, K) and M, median microseconds per call (``kernel_core.bench.timing.time_calls``: CUDA
events; weights and activations rotate over enough copies that one pass touches more than twice
the L2, so no call reads a weight the previous one left in L2; M <= 256 as CUDA-graph replays,
larger M as back-to-back eager launches). The main methods of a row are timed in rounds of
alternating order (2 for graph rows; 4 for eager rows, where power-limited FP8 GEMMs drift by up to
10% between rounds), and each reports the median of its rounds (clock and power drift then falls on
both sides of a ratio); the per-round values are in ``rounds_us``. Tile sweeps: 1 round for graph
rows, 2 for eager rows (median).

fp8 / int8 shapes (N, K) in {(8192, 8192), (28672, 8192), (8192, 28672)}:
  ``fp8_gemm``       our FP8 GEMM alone (per-token activation x per-channel weight scales in the
                     epilogue), the heuristic's tile, plain launch (no PDL: nothing precedes it)
  ``scaled_mm``      ``torch._scaled_mm`` rowwise, same operands, ``use_fast_accum=True``
  ``int8_gemm``      our int8 GEMM alone (symmetric, same scaling)
  ``int_mm_scaled``  ``torch._int_mm`` + the same scaling in torch (M > 16 only: _int_mm's limit)
  ``fp8_apply`` / ``int8_apply``  the whole ``apply_weights``, bf16 in -> bf16 out, dynamic
                     per-token quantization included (the GEMM launched with PDL)
  ``fp8_apply_plain_launch``  the same quantizer + GEMM with a plain GEMM launch (PDL's share)
  ``*_one_program_a_row``  the apply / quantizer with each row on one program, where its
                     family splits rows (``quant.ROW_SPLIT_PROGRAMS``; paired rows only)
  ``bf16_matmul``    ``torch.matmul`` with the bf16 weight
  ``fp8_tiles``      the FP8 GEMM alone with each candidate tile for this M (one round; int8 uses
                     the same heuristic and the same tile shapes)
  ``host_us``        median host time to enqueue one ``apply_weights`` (and one bf16 matmul),
                     20 calls per sample with the queue far from full: the eager overhead
fp8_block shapes (DeepSeek-V3) {(7168, 18432), (18432, 7168), (4096, 7168), (2112, 7168)}:
  ``block_gemm`` (+ ``block_tiles``), ``block_apply`` (per-1x128-group quantization included),
  ``flashinfer_gemm``: FlashInfer's ``fp8_blockscale_gemm_sm90`` runner in FP8-input mode on the
  same quantized activations and weights (the GEMM alone, as ours), ``flashinfer_bf16_in``: the
  public ``fp8_blockscale_gemm_sm90`` on bf16 input (its own quantizer; eager rows only, as it
  allocates a workspace per call), ``bf16_matmul``.
JSON goes to ``--out`` after every shape; a plot beside it at the end.

``--paired`` (the method of the v4 runs): per point, ours against the reference in interleaved
CUDA-graph rounds (``interleaved_rounds``), then every tile x raster x swizzle of the M range with
the reference in the same rounds; each row keeps every candidate's per-round times
(``rounds_us``); after all timing, ``kernels`` lists the CUDA kernels the reference and ours
launch at every point (cuBLAS's and FlashInfer's names carry their tile shapes). The apply rows add the quantizers' weight prefetch
at the other size (8 MiB where the default is 16 MiB, else 16 MiB) as a probe beside the default.
``--replay-ms`` sets each candidate's batch per round (default 1 ms; the FP8 GEMMs are power-bound
from M=256 on, and with 25-ms batches their clocks settle on each kernel's own draw: CUTLASS NOTES
v22b), ``--skip-apply`` leaves out the apply rows (the GEMMs alone).
"""

from __future__ import annotations

import argparse
import enum
import json
import math
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import astuple
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import triton

from kernel_core.bench.timing import (
    Budget,
    capture_graph,
    l2_cache_bytes,
    paired,
    rotation_count,
    time_calls,
)
from kernel_core.families.fp8 import FP8ScaledMMLinearLayerConfig
from kernel_core.families.fp8_block import Fp8BlockLinearLayerConfig
from kernel_core.families.int8 import Int8ScaledMMLinearLayerConfig
from kernel_core.formats.layer import make_layer
from kernel_core_cutlass import ops, quant
from kernel_core_cutlass.kernels import (
    CutlassFp8BlockScaledMMLinearKernel,
    CutlassFP8ScaledMMLinearKernel,
    CutlassInt8ScaledMMLinearKernel,
)
from kernel_core_cutlass.tiles import (
    N_CLUSTERED_TILES,
    SWIZZLES,
    BlockTileConfig,
    Raster,
    TileConfig,
    block_scaled_mm_order,
    block_scaled_mm_tile,
    scaled_mm_order,
    scaled_mm_tile,
)

SCALED_SHAPES = ((8192, 8192), (28672, 8192), (8192, 28672))
BLOCK_SHAPES = ((7168, 18432), (18432, 7168), (4096, 7168), (2112, 7168))
M_VALUES = (1, 16, 64, 128, 256, 1024, 4096)
GRAPH_MAX_M = 256
BUDGET = Budget(warmup_ms=10.0, rep_ms=30.0, min_reps=10, max_reps=400)
#: Rounds of the main methods (graph rows, eager rows) and of the tile sweeps (graph, eager).
ROUNDS = {True: 2, False: 4}
TILE_ROUNDS = {True: 1, False: 2}
#: The 128x128 tiles clustered along N, as cuBLAS runs them where it leads at M >= 128 (v10
#: file, `kernels`: nvjet 128x128 with clusters of 4 along our N at M=128, 2 at M=256 on
#: N=8192 and at M >= 1024, 2x4 on 28672 x 8192 at M=256): all of them up to M=256, above it
#: the 1x2 ones (nvjet's 2x1 there; the H200 holds 30 clusters of 4, i.e. 120 CTAs, so clusters
#: of 4 and 8 leave SMs out of many-wave problems: NOTES.md v21). All of them:
#: tiles.N_CLUSTERED_TILES.
N_CLUSTERED_LARGE_M = (TileConfig.PINGPONG_128x128_CLUSTER_N2,
                       TileConfig.COOPERATIVE_128x128_CLUSTER_N2)
#: The tiles swept per M range (the heuristic's pick is always among them).
SWEEP = (
    (64, (TileConfig.SWAP_64x16, TileConfig.SWAP_64x64, TileConfig.SWAP_64x16_K256,
          TileConfig.SWAP_64x16_K512, TileConfig.SWAP_64x64_K256, TileConfig.PINGPONG_64x128,
          TileConfig.PINGPONG_64x128_CLUSTER2)),
    (256, (TileConfig.SWAP_64x64, TileConfig.SWAP_64x64_K256, TileConfig.PINGPONG_64x128,
           TileConfig.PINGPONG_64x128_CLUSTER2, TileConfig.PINGPONG_64x256,
           TileConfig.PINGPONG_128x128_CLUSTER2, TileConfig.COOPERATIVE_128x128,
           TileConfig.COOPERATIVE_128x128_STREAM_K, *N_CLUSTERED_TILES)),
    (1 << 30, (TileConfig.PINGPONG_64x128_CLUSTER2, TileConfig.PINGPONG_64x256,
               TileConfig.PINGPONG_128x128_CLUSTER2, TileConfig.COOPERATIVE_128x128,
               TileConfig.COOPERATIVE_128x128_STREAM_K, TileConfig.COOPERATIVE_128x256,
               TileConfig.COOPERATIVE_256x128, *N_CLUSTERED_LARGE_M)),
)

#: --paired: head-to-head rounds (ours against the reference) and sweep rounds; each round times
#: every candidate once as one CUDA-graph replay of at least REPLAY_MS (a batch of passes over the
#: rotated copies: no host gaps), the candidates in a rotating order, reversed every other round.
PAIR_ROUNDS = 21
#: Weight stages requested before the decode tiles' wait, measured beside ops.WEIGHT_LEAD_STAGES
#: in the apply rows (0: wait first; -1: the whole ring). 2 and -1 were timed in v12b and v13
#: (never ahead of 1); 0 stays as the baseline of the lead's gain.
WEIGHT_LEAD_PROBES = (0, 1)
#: Candidate decode tiles timed in the apply rows at M in [low, high] (quantizer, then the GEMM
#: with that tile launched as apply_weights launches the chosen one).
APPLY_TILE_PROBES = ((1, 16, TileConfig.SWAP_64x16_K512),)
SWEEP_ROUNDS = 7
REPLAY_MS = 1.0
PAIRED_M = (128, 256, 1024, 4096)
PAIRED_BLOCK_M = (256, 1024, 4096)
#: The whole-apply comparison against bf16 (the decode bars: >= 1.7x at M <= 64).
PAIRED_APPLY_M = (1, 16, 64)
#: The tiles swept with every raster order x swizzle in the paired sweeps, by M (the heuristic's
#: pick is always among them). The fp8_block sweep takes every BlockTileConfig. With the stream-K
#: tile's splits: 113 variants per point up to M=256, 89 above (v10: 65).
ORDER_SWEEP = (
    (256, (TileConfig.PINGPONG_64x128, TileConfig.PINGPONG_64x128_CLUSTER2,
           TileConfig.PINGPONG_128x128_CLUSTER2, TileConfig.PINGPONG_64x256,
           TileConfig.COOPERATIVE_128x128, *N_CLUSTERED_TILES)),
    (1 << 30, (TileConfig.PINGPONG_64x256, TileConfig.PINGPONG_128x128_CLUSTER2,
               TileConfig.COOPERATIVE_128x128, TileConfig.COOPERATIVE_128x256,
               TileConfig.COOPERATIVE_256x128, *N_CLUSTERED_LARGE_M)),
)
#: Split-K counts tried on the stream-K tiles (0 = stream-K itself).
SPLITS = (0, 2, 3, 4, 6)

Call = Callable[[], Any]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sm_count() -> int:
    return torch.cuda.get_device_properties(0).multi_processor_count


def sweep_tiles(m: int) -> tuple[TileConfig, ...]:
    return next(tiles for limit, tiles in SWEEP if m <= limit)


#: Timing caveats of the run (a capture that failed and was timed eagerly), for the JSON.
NOTES: list[str] = []


def time_us(calls: list[Call], graph: bool, label: str = "") -> float | str:
    """Median microseconds per call, or the error text if the calls fail."""
    try:
        timing = time_calls(calls, torch.device("cuda"), use_graph=graph, budget=BUDGET)
    except Exception as exc:  # noqa: BLE001 - record it and go on with the other methods
        torch.cuda.synchronize()
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    if timing.note:
        NOTES.append(f"{label}: {timing.note}")
        log(f"NOTE {label}: {timing.note}")
    return timing.median_us


def time_rounds(
    methods: dict[str, list[Call]], graph: bool, where: str, rounds: int
) -> tuple[dict, dict]:
    """Each method timed ``rounds`` times, alternating the order; (median of rounds, per round)."""
    per_round: dict[str, list] = {name: [] for name in methods}
    names = list(methods)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            per_round[name].append(time_us(methods[name], graph, f"{where} {name}"))
    medians = {name: (statistics.median(v) if all(isinstance(t, float) for t in v)
                      else next(t for t in v if isinstance(t, str)))
               for name, v in per_round.items()}
    return medians, per_round


def _pass_ms(calls: list[Call]) -> float:
    """Median milliseconds of one eager pass over ``calls`` (3 passes after a warm one)."""
    for call in calls:
        call()
    samples = []
    for _ in range(3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for call in calls:
            call()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return statistics.median(samples)


def interleaved_rounds(candidates: dict[str, list[Call]], rounds: int, where: str) -> dict:
    """Microseconds per call of every candidate in each of ``rounds`` rounds.

    Each candidate's batch (whole passes over its rotated copies, at least ``REPLAY_MS``) is
    captured into a CUDA graph; a round replays every graph once between a pair of CUDA events,
    in an order rotated by one per round and reversed every other round, so clock and power
    drift (10-16% between eager rounds at M=4096 on an H100) and the L2 state left by the
    previous replay fall on every candidate alike. The graphs are captured in a seeded random
    order: in the Marlin benchmark graphs captured later read ~0.2-0.3 us faster on 20-90 us
    kernels (marlin-h100-2026-11-27-v14-capture-order.json), and here the reference used to be
    captured first in every call (before "ours" and before every swept variant). A candidate
    that fails is reported as its error text; one that cannot be captured is timed as an eager
    batch (and noted).
    """
    runs: dict[str, tuple[Call, int]] = {}
    result: dict[str, Any] = {}
    capture_order = list(candidates)
    random.Random(1).shuffle(capture_order)
    for name in capture_order:
        calls = candidates[name]
        try:
            batch = list(calls) * max(1, math.ceil(REPLAY_MS / max(_pass_ms(calls), 1e-3)))
            try:
                runs[name] = (capture_graph(batch).replay, len(batch))
            except Exception as exc:  # noqa: BLE001 - time it eagerly, say so
                torch.cuda.synchronize()
                NOTES.append(f"{where} {name}: capture failed ({type(exc).__name__}); eager batch")
                runs[name] = (lambda batch=batch: [call() for call in batch], len(batch))
        except Exception as exc:  # noqa: BLE001 - record it and go on with the other candidates
            torch.cuda.synchronize()
            result[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
    names = list(runs)
    for name in names:
        runs[name][0]()
    events: dict[str, list] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % max(1, len(names))
        order = names[shift:] + names[:shift]
        for name in reversed(order) if r % 2 else order:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            runs[name][0]()
            end.record()
            events[name].append((start, end))
    torch.cuda.synchronize()
    for name in names:
        result[name] = [start.elapsed_time(end) * 1e3 / runs[name][1] for start, end in events[name]]
    return result


def spread(values: list[float] | str) -> float | None:
    """(max - min) / median of one method's rounds: how much the machine drifted."""
    if isinstance(values, str):
        return None
    return (max(values) - min(values)) / statistics.median(values)


def order_name(tile: enum.IntEnum, raster: int, swizzle: int, splits: int) -> str:
    name = f"{tile.name}/{Raster(raster).name}/{swizzle}"
    return f"{name}/splitK{splits}" if splits else name


def paired_row(kind: str, n: int, k: int, m: int, ours: str, head: dict, sweep: dict | None,
               reference: str) -> dict:
    """One point of the paired section: the head-to-head and, optionally, the sweep's ratios;
    ``rounds_us`` keeps every candidate's time per round (variants compare round by round)."""
    row: dict[str, Any] = {"kind": kind, "N": n, "K": k, "M": m, "ours": ours,
                           "reference": reference,
                           "head_to_head": paired(head[reference], head["ours"]),
                           "reference_spread": spread(head[reference]),
                           "rounds_us": {"head_to_head": head, "sweep": sweep}}
    if sweep is not None:
        row["sweep"] = {name: paired(sweep[reference], times)
                        for name, times in sweep.items() if name != reference}
        ranked = sorted((v["ratio"], name) for name, v in row["sweep"].items() if isinstance(v, dict))
        row["best"] = ranked[-1][1] if ranked else None
    return row


def paired_line(row: dict) -> str:
    """The row as one line of the compact table (ratios > 1: ours faster)."""
    def cell(value: Any) -> str:
        if not isinstance(value, dict):
            return f"failed ({str(value)[:60]})"
        return f"{value['ratio']:.3f} [{value['ratio_min']:.3f}-{value['ratio_max']:.3f}]"

    head = row["head_to_head"]
    ref_us = f"{head['reference_us']:8.1f}" if isinstance(head, dict) else "     n/a"
    drift = f"{row['reference_spread'] * 100:4.1f}%" if row["reference_spread"] is not None else "  n/a"
    line = (f"{row['kind']:9s} N={row['N']:5d} K={row['K']:5d} M={row['M']:4d} | ref {ref_us} us "
            f"drift {drift} | ours {row['ours']:38s} {cell(head)}")
    if row.get("best"):
        line += f" | best {row['best']:38s} {cell(row['sweep'][row['best']])}"
    elif row.get("sweep"):  # variants to compare (the apply rows), each against the reference
        line += " | " + "  ".join(f"{name} {cell(value)}" for name, value in row["sweep"].items())
    return line


def host_us(calls: list[Call]) -> float:
    """Median host microseconds to enqueue one call (20 calls per sample, 7 samples)."""
    samples = []
    for _ in range(7):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for j in range(20):
            calls[j % len(calls)]()
        samples.append((time.perf_counter() - start) * 1e6 / 20)
    torch.cuda.synchronize()
    return statistics.median(samples)


def ratio(row: dict, numerator: str, denominator: str) -> float | None:
    a, b = row.get(numerator), row.get(denominator)
    if isinstance(a, float) and isinstance(b, float):
        return a / b
    return None


def clone_layer(layer: torch.nn.Module) -> torch.nn.Module:
    """Another processed layer with its own copies of every parameter (for rotation)."""
    copy = torch.nn.Module()
    for name, param in layer.named_parameters():
        setattr(copy, name, torch.nn.Parameter(param.detach().clone(), requires_grad=False))
    return copy


def bench_scaled(n: int, k: int, rows: list[dict], m_values: list[int], sweep: bool) -> None:
    gen = torch.Generator(device="cuda").manual_seed(n + k)
    weight = torch.randn((n, k), generator=gen, device="cuda") * 0.05
    copies = rotation_count(n * k, l2_cache_bytes(torch.device("cuda")))
    bf16_weights = [weight.to(torch.bfloat16)]
    fp8_config = FP8ScaledMMLinearLayerConfig(weight_shape=(n, k))
    int8_config = Int8ScaledMMLinearLayerConfig(weight_shape=(n, k))
    fp8_layers = [make_layer(fp8_config, weight=weight, device="cuda")]
    int8_layers = [make_layer(int8_config, weight=weight, device="cuda")]
    del weight
    for layer in (*fp8_layers, *int8_layers):
        del layer.reference_weight
    fp8 = CutlassFP8ScaledMMLinearKernel(fp8_config)
    int8 = CutlassInt8ScaledMMLinearKernel(int8_config)
    fp8.process_weights_after_loading(fp8_layers[0])
    int8.process_weights_after_loading(int8_layers[0])
    for _ in range(copies - 1):
        fp8_layers.append(clone_layer(fp8_layers[0]))
        int8_layers.append(clone_layer(int8_layers[0]))
        bf16_weights.append(bf16_weights[0].clone())
    ws = fp8.workspace
    bf16 = torch.bfloat16
    sets = range(copies)

    def one_m(m: int) -> None:
        graph = m <= GRAPH_MAX_M
        xs = [torch.randn((m, k), generator=gen, device="cuda").to(bf16) for _ in sets]
        fq = [quant.quantize_fp8_per_token(x) for x in xs]
        iq = [quant.quantize_int8_per_token(x, True)[:2] for x in xs]
        f8 = [(l.weight, l.weight_scale) for l in fp8_layers]
        i8 = [(l.weight, l.weight_scale) for l in int8_layers]

        def gemm(q, w, tile: int = -1) -> list[Call]:
            return [lambda i=i: ops.scaled_mm(q[i][0], w[i][0], q[i][1], w[i][1], None, None,
                                              None, ws, bf16, tile, False) for i in sets]

        def quant_then_plain_gemm(i: int) -> torch.Tensor:
            q, s = quant.quantize_fp8_per_token(xs[i])
            return ops.scaled_mm(q, f8[i][0], s, f8[i][1], None, None, None, ws, bf16, -1, False)

        methods: dict[str, list[Call]] = {
            "fp8_gemm": gemm(fq, f8),
            "scaled_mm": [lambda i=i: torch._scaled_mm(
                fq[i][0], f8[i][0].t(), scale_a=fq[i][1][:, None], scale_b=f8[i][1][None, :],
                out_dtype=bf16, use_fast_accum=True) for i in sets],
            "int8_gemm": gemm(iq, i8),
            "fp8_apply": [lambda i=i: fp8.apply_weights(fp8_layers[i], xs[i]) for i in sets],
            "int8_apply": [lambda i=i: int8.apply_weights(int8_layers[i], xs[i]) for i in sets],
            "bf16_matmul": [lambda i=i: torch.matmul(xs[i], bf16_weights[i].t()) for i in sets],
        }
        if m > 16:
            methods["int_mm_scaled"] = [lambda i=i: (
                torch._int_mm(iq[i][0], i8[i][0].t()).float() * iq[i][1][:, None]
                * i8[i][1][None, :]).to(bf16) for i in sets]
        if graph:
            methods["fp8_apply_plain_launch"] = [lambda i=i: quant_then_plain_gemm(i) for i in sets]
        row: dict[str, Any] = {"N": n, "K": k, "M": m, "copies": copies,
                               "timing": "cuda_graph" if graph else "eager",
                               "tile": scaled_mm_tile(m, n, k, sm_count()).name}
        where = f"N={n} K={k} M={m}"
        means, rounds = time_rounds(methods, graph, where, ROUNDS[graph])
        row.update(means)
        row["rounds_us"] = rounds
        row["host_us"] = {"fp8_apply": host_us(methods["fp8_apply"]),
                          "int8_apply": host_us(methods["int8_apply"]),
                          "bf16_matmul": host_us(methods["bf16_matmul"])}
        if sweep:
            tiles = {t.name: gemm(fq, f8, int(t)) for t in sweep_tiles(m)}
            row["fp8_tiles"] = time_rounds(tiles, graph, f"{where} fp8", TILE_ROUNDS[graph])[0]
        row["fp8_gemm_vs_scaled_mm"] = ratio(row, "scaled_mm", "fp8_gemm")
        row["int8_gemm_vs_int_mm_scaled"] = ratio(row, "int_mm_scaled", "int8_gemm")
        row["fp8_apply_vs_bf16"] = ratio(row, "bf16_matmul", "fp8_apply")
        row["int8_apply_vs_bf16"] = ratio(row, "bf16_matmul", "int8_apply")
        rows.append(row)
        log(summary(row))

    for m in m_values:
        one_m(m)


def rotated(layer: torch.nn.Module, copies: int) -> list[torch.nn.Module]:
    """``layer`` and ``copies - 1`` clones of it (for rotation)."""
    return [layer] + [clone_layer(layer) for _ in range(copies - 1)]


def order_variants(tiles: tuple[enum.IntEnum, ...], stream_k: enum.IntEnum) -> list[tuple]:
    """(tile, raster, swizzle, splits) of a sweep: every raster x swizzle of each tile, and the
    split-K counts of the stream-K tile with CUTLASS's default order."""
    variants = [(tile, int(raster), swizzle, 0) for tile in tiles for raster in Raster
                for swizzle in SWIZZLES]
    return variants + [(stream_k, int(Raster.HEURISTIC), 1, splits) for splits in SPLITS]


def kernel_names(fn: Callable, *args: Any, **kwargs: Any) -> list[str] | str:
    """The CUDA kernels ``fn(*args, **kwargs)`` launches, by name (torch.profiler): cuBLAS's and FlashInfer's
    names carry their tile and cluster shapes, the next tiles to try where they lead. Run after
    all timing (see paired_kernels), so the profiler touches no timed round."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    try:
        fn(*args, **kwargs)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn(*args, **kwargs)
            torch.cuda.synchronize()
        return sorted({event.name for event in prof.events()
                       if event.device_type == DeviceType.CUDA})
    except Exception as exc:  # noqa: BLE001 - a diagnostic: record why and go on
        torch.cuda.synchronize()
        return f"{type(exc).__name__}: {str(exc)[:200]}"


def measure_point(rows: list[dict], kind: str, shape: tuple[int, int, int], chosen: str,
                  reference_name: str, reference: list[Call], gemm: Callable[..., list[Call]],
                  variants: list[tuple]) -> None:
    """One point of the paired section: ``gemm()`` (the heuristic's choice, named ``chosen``)
    head to head with the reference, then every variant ``gemm(tile, raster, swizzle, splits)``
    with the reference in the same rounds; the row goes to ``rows`` and, as a line, to stderr."""
    n, k, m = shape
    where = f"paired {kind} N={n} K={k} M={m}"
    head = interleaved_rounds({reference_name: reference, "ours": gemm()}, PAIR_ROUNDS, where)
    swept = None
    if variants:
        candidates = {reference_name: reference}
        for variant in variants:
            candidates[order_name(*variant)] = gemm(*(int(v) for v in variant))
        swept = interleaved_rounds(candidates, SWEEP_ROUNDS, where)
    row = paired_row(kind, n, k, m, chosen, head, swept, reference_name)
    rows.append(row)
    log(paired_line(row))
    torch.cuda.empty_cache()


def paired_scaled(n: int, k: int, rows: list[dict], m_values: list[int], sweep: bool) -> None:
    """fp8 GEMM alone against ``torch._scaled_mm`` (rowwise, fast accumulation), interleaved."""
    gen = torch.Generator(device="cuda").manual_seed(n + k)
    weight = torch.randn((n, k), generator=gen, device="cuda") * 0.05
    config = FP8ScaledMMLinearLayerConfig(weight_shape=(n, k))
    first = make_layer(config, weight=weight, device="cuda")
    del weight, first.reference_weight
    kernel = CutlassFP8ScaledMMLinearKernel(config)
    kernel.process_weights_after_loading(first)
    layers = rotated(first, rotation_count(n * k, l2_cache_bytes(torch.device("cuda"))))
    sets = range(len(layers))
    ws, bf16 = kernel.workspace, torch.bfloat16

    def one_m(m: int) -> None:
        xs = [torch.randn((m, k), generator=gen, device="cuda").to(bf16) for _ in sets]
        fq = [quant.quantize_fp8_per_token(x) for x in xs]
        del xs

        def gemm(tile: int = -1, raster: int = -1, swizzle: int = -1, splits: int = -1) -> list[Call]:
            return [lambda i=i: ops.scaled_mm(fq[i][0], layers[i].weight, fq[i][1],
                                              layers[i].weight_scale, None, None, None, ws, bf16,
                                              tile, False, raster, swizzle, splits) for i in sets]

        reference = [lambda i=i: torch._scaled_mm(
            fq[i][0], layers[i].weight.t(), scale_a=fq[i][1][:, None],
            scale_b=layers[i].weight_scale[None, :], out_dtype=bf16, use_fast_accum=True)
            for i in sets]
        tile = scaled_mm_tile(m, n, k, sm_count())
        order = scaled_mm_order(m, n, k, tile)
        tiles = next(t for limit, t in ORDER_SWEEP if m <= limit)
        variants = order_variants(tiles, TileConfig.COOPERATIVE_128x128_STREAM_K) if sweep else []
        measure_point(rows, "fp8_gemm", (n, k, m), order_name(tile, *astuple(order)),
                      "scaled_mm", reference, gemm, variants)

    for m in m_values:
        one_m(m)


def probe_prefetch_bytes(m: int) -> int:
    """The probe's alternative to the quantizers' prefetch at ``m`` tokens: on a device where the
    prefetch is off (``quant.PREFETCH_OFF_DEVICES``) the size it would have elsewhere
    (``quant.prefetch_bytes``), so that choice stays measured; otherwise the other size (8 MiB
    where the default is 16 MiB, else 16 MiB)."""
    decode, above = quant.PREFETCH_DECODE_BYTES, quant.PREFETCH_BYTES
    nominal = quant.prefetch_bytes(m)
    if quant.prefetch_bytes(m, torch.device("cuda")) == 0:
        return nominal
    return above if nominal == decode else decode


def with_setting(module: ModuleType, name: str, value: Any, call: Call) -> Call:
    """``call`` with ``module.name`` set to ``value``: a launch-time knob such as
    ``ops.WEIGHT_LEAD_STAGES``, read when the kernel is launched, so a captured graph keeps it."""
    def run() -> Any:
        default = getattr(module, name)
        setattr(module, name, value)
        try:
            return call()
        finally:
            setattr(module, name, default)

    return run


def with_prefetch_bytes(total: int, call: Call) -> Call:
    """``call`` with the quantizers' weight prefetch set to ``total`` bytes at every M up to
    ``quant.PREFETCH_MAX_M``: a probe of ``quant.PREFETCH_BYTES`` / ``PREFETCH_DECODE_BYTES``, read
    when the launch is planned, so a captured graph keeps it."""
    def run() -> Any:
        defaults = quant.PREFETCH_BYTES, quant.PREFETCH_DECODE_BYTES, quant.PREFETCH_OFF_DEVICES
        quant.PREFETCH_BYTES = quant.PREFETCH_DECODE_BYTES = total
        quant.PREFETCH_OFF_DEVICES = ()  # measured on every device, also where it is off
        try:
            return call()
        finally:
            quant.PREFETCH_BYTES, quant.PREFETCH_DECODE_BYTES, quant.PREFETCH_OFF_DEVICES = defaults

    return run


def paired_apply(n: int, k: int, rows: list[dict], m_values: list[int]) -> None:
    """Whole fp8 / int8 ``apply_weights`` (bf16 in and out, quantizer included) against the bf16
    matmul, interleaved, with and without the quantizer's weight prefetch (M <= 64), with the
    prefetch at the other size (``probe_prefetch_bytes``), with the GEMM launched plainly
    after the quantizer (``fp8_apply_plain_launch``: what PDL saves), with the decode tiles
    requesting other counts of weight stages before their wait (``WEIGHT_LEAD_PROBES``), with
    candidate decode tiles (``APPLY_TILE_PROBES``), and its two launches alone (``fp8_gemm_alone``
    on codes quantized once, launched plainly; ``fp8_quantizer_alone``; the same for int8, symmetric
    per token as ``int8_apply``; both applies and quantizers also with one program a row,
    ``*_one_program_a_row``; neither prefetches the
    weight, so where the prefetch is on, as on the H100, they do not add up to the apply)."""
    gen = torch.Generator(device="cuda").manual_seed(n + k)
    weight = torch.randn((n, k), generator=gen, device="cuda") * 0.05
    fp8_config = FP8ScaledMMLinearLayerConfig(weight_shape=(n, k))
    int8_config = Int8ScaledMMLinearLayerConfig(weight_shape=(n, k))
    fp8_first = make_layer(fp8_config, weight=weight, device="cuda")
    int8_first = make_layer(int8_config, weight=weight, device="cuda")
    copies = rotation_count(n * k, l2_cache_bytes(torch.device("cuda")))
    bf16_weights = [weight.to(torch.bfloat16)] + [weight.to(torch.bfloat16) for _ in range(copies - 1)]
    del weight, fp8_first.reference_weight, int8_first.reference_weight
    fp8 = CutlassFP8ScaledMMLinearKernel(fp8_config)
    int8 = CutlassInt8ScaledMMLinearKernel(int8_config)
    fp8.process_weights_after_loading(fp8_first)
    int8.process_weights_after_loading(int8_first)
    f8, i8 = rotated(fp8_first, copies), rotated(int8_first, copies)
    sets, ws, bf16 = range(copies), fp8.workspace, torch.bfloat16

    def one_m(m: int) -> None:
        xs = [torch.randn((m, k), generator=gen, device="cuda").to(bf16) for _ in sets]

        def fp8_by_hand(i: int, tile: int = -1, pdl: bool = True) -> torch.Tensor:
            """The fp8 apply's two launches without the quantizer's weight prefetch."""
            q, s = quant.quantize_fp8_per_token(xs[i])
            return ops.scaled_mm(q, f8[i].weight, s, f8[i].weight_scale, None, None, None, ws, bf16,
                                 tile, pdl)

        # The apply's two launches timed alone in the same rounds (the GEMM on codes quantized
        # once, launched plainly): what the quantizer adds to the GEMM, and the GEMM's own time.
        codes = [quant.quantize_fp8_per_token(x) for x in xs]
        int8_codes = [quant.quantize_int8_per_token(x, True) for x in xs]

        def int8_without_prefetch(i: int) -> torch.Tensor:
            q, s, _, _ = quant.quantize_int8_per_token(xs[i], True)
            return ops.scaled_mm(q, i8[i].weight, s, i8[i].weight_scale, None, None, None, ws, bf16)

        candidates = {
            "bf16_matmul": [lambda i=i: torch.matmul(xs[i], bf16_weights[i].t()) for i in sets],
            "ours": [lambda i=i: fp8.apply_weights(f8[i], xs[i]) for i in sets],
            **{f"fp8_apply_tile_{tile.name}": [lambda i=i, tile=tile: fp8_by_hand(i, int(tile))
                                               for i in sets]
               for low, high, tile in APPLY_TILE_PROBES if low <= m <= high},
            "fp8_apply_no_prefetch": [lambda i=i: fp8_by_hand(i) for i in sets],
            "fp8_gemm_alone": [lambda i=i: ops.scaled_mm(
                codes[i][0], f8[i].weight, codes[i][1], f8[i].weight_scale, None, None, None, ws,
                bf16, -1, False) for i in sets],
            "fp8_quantizer_alone": [lambda i=i: quant.quantize_fp8_per_token(xs[i]) for i in sets],
            "fp8_apply_plain_launch": [lambda i=i: fp8_by_hand(i, pdl=False) for i in sets],
            **{f"fp8_apply_lead_{'all' if stages < 0 else stages}": [with_setting(
                ops, "WEIGHT_LEAD_STAGES", stages, lambda i=i: fp8.apply_weights(f8[i], xs[i]))
                for i in sets]
               for stages in WEIGHT_LEAD_PROBES if stages != ops.WEIGHT_LEAD_STAGES},
            "int8_apply": [lambda i=i: int8.apply_weights(i8[i], xs[i]) for i in sets],
            "int8_gemm_alone": [lambda i=i: ops.scaled_mm(
                int8_codes[i][0], i8[i].weight, int8_codes[i][1], i8[i].weight_scale, None, None,
                None, ws, bf16, -1, False) for i in sets],
            "int8_quantizer_alone": [lambda i=i: quant.quantize_int8_per_token(xs[i], True)
                                     for i in sets],
            **{f"{name}_one_program_a_row": [with_setting(
                quant, "ROW_SPLIT_PROGRAMS", dict.fromkeys(quant.ROW_SPLIT_PROGRAMS, 1), call)
                for call in calls]
               for name, family, calls in (
                   ("fp8_apply", "fp8", [lambda i=i: fp8.apply_weights(f8[i], xs[i]) for i in sets]),
                   ("int8_apply", "int8", [lambda i=i: int8.apply_weights(i8[i], xs[i]) for i in sets]),
                   ("fp8_quantizer", "fp8", [lambda i=i: quant.quantize_fp8_per_token(xs[i])
                                             for i in sets]),
                   ("int8_quantizer", "int8", [lambda i=i: quant.quantize_int8_per_token(xs[i], True)
                                               for i in sets]))
               if quant._row_parts(m, k, family) > 1},
            "int8_apply_no_prefetch": [lambda i=i: int8_without_prefetch(i) for i in sets],
        }
        probe_bytes = probe_prefetch_bytes(m)
        probe = f"prefetch_{probe_bytes >> 20}MiB"
        for name, kernel, layers in (("fp8_apply", fp8, f8), ("int8_apply", int8, i8)):
            candidates[f"{name}_{probe}"] = [with_prefetch_bytes(
                probe_bytes, lambda i=i, kernel=kernel, layers=layers, xs=xs:
                kernel.apply_weights(layers[i], xs[i])) for i in sets]
        times = interleaved_rounds(candidates, PAIR_ROUNDS, f"paired apply N={n} K={k} M={m}")
        head = {"bf16_matmul": times.pop("bf16_matmul"), "ours": times.pop("ours")}
        swept = {"bf16_matmul": head["bf16_matmul"], **times}
        prefetch = quant.prefetch_bytes(m, torch.device("cuda"))
        label = f"fp8 apply (prefetch {prefetch >> 20} MiB)" if prefetch else "fp8 apply (no prefetch here)"
        row = paired_row("fp8_apply", n, k, m, label, head, swept, "bf16_matmul")
        row.pop("best", None)  # the other candidates are variants to compare, not tiles to pick
        rows.append(row)
        log(paired_line(row))

    for m in m_values:
        one_m(m)


def paired_block(n: int, k: int, rows: list[dict], m_values: list[int], sweep: bool,
                 runner: Any) -> None:
    """fp8_block GEMM alone against FlashInfer's SM90 block-scale runner (FP8 input), interleaved."""
    gen = torch.Generator(device="cuda").manual_seed(n + k + 1)
    weight = torch.randn((n, k), generator=gen, device="cuda") * 0.05
    config = Fp8BlockLinearLayerConfig(weight_shape=(n, k))
    first = make_layer(config, weight=weight, device="cuda")
    del weight, first.reference_weight
    fi_scale = first.weight_scale.detach().clone()  # the checkpoint's [N/128, K/128] layout
    kernel = CutlassFp8BlockScaledMMLinearKernel(config)
    kernel.process_weights_after_loading(first)
    copies = rotation_count(n * k, l2_cache_bytes(torch.device("cuda")))
    layers = rotated(first, copies)
    fi_scales = [fi_scale] + [fi_scale.clone() for _ in range(copies - 1)]
    runner.configure_workspace(torch.empty(16, dtype=torch.uint8, device="cuda"))
    sets = range(copies)

    def one_m(m: int) -> None:
        xs = [torch.randn((m, k), generator=gen, device="cuda").to(torch.bfloat16) for _ in sets]
        qs = [quant.quantize_fp8_per_group(x, 128) for x in xs]
        del xs
        fi_outs = [torch.empty((m, n), dtype=torch.bfloat16, device="cuda") for _ in sets]

        def gemm(tile: int = -1, raster: int = -1, swizzle: int = -1, splits: int = -1) -> list[Call]:
            return [lambda i=i: ops.block_scaled_mm(qs[i][0], layers[i].weight, qs[i][1],
                                                    layers[i].weight_scale, None, kernel.workspace,
                                                    torch.bfloat16, tile, raster, swizzle, splits,
                                                    layers[i].weight_scale_n64)
                    for i in sets]

        reference = [lambda i=i: runner.run_gemm(qs[i][0][:m], layers[i].weight, fi_outs[i],
                                                 qs[i][1], fi_scales[i]) for i in sets]
        tile = block_scaled_mm_tile(m, n, sm_count())
        order = block_scaled_mm_order(m, n, tile)
        variants = order_variants(tuple(BlockTileConfig),
                                  BlockTileConfig.COOPERATIVE_128x128_STREAM_K) if sweep else []
        measure_point(rows, "fp8_block", (n, k, m), order_name(tile, *astuple(order)),
                      "flashinfer", reference, gemm, variants)

    for m in m_values:
        one_m(m)


def flashinfer_block() -> tuple[Any, Callable | None, str]:
    """FlashInfer's SM90 block-scale runner (FP8-input mode) and public bf16-input function."""
    try:
        from kernel_core_flashinfer.environment import flashinfer

        fi = flashinfer()
        from flashinfer.gemm.gemm_base import get_fp8_blockscale_gemm_runner_sm90

        runner = get_fp8_blockscale_gemm_runner_sm90()
        return runner, fi.gemm.fp8_blockscale_gemm_sm90, f"flashinfer {fi.__version__}"
    except Exception as exc:  # noqa: BLE001 - any failure means "not available here"
        return None, None, f"flashinfer not usable here: {type(exc).__name__}: {exc}"


def bench_block(
    n: int, k: int, rows: list[dict], m_values: list[int], sweep: bool, runner: Any,
    fi_public: Callable | None,
) -> None:
    gen = torch.Generator(device="cuda").manual_seed(n + k + 1)
    weight = torch.randn((n, k), generator=gen, device="cuda") * 0.05
    copies = rotation_count(n * k, l2_cache_bytes(torch.device("cuda")))
    config = Fp8BlockLinearLayerConfig(weight_shape=(n, k))
    first = make_layer(config, weight=weight, device="cuda")
    bf16_weights = [weight.to(torch.bfloat16)]
    del weight, first.reference_weight
    # FlashInfer reads the checkpoint's [N/128, K/128] weight scales; ours are transposed at load.
    fi_scales = [first.weight_scale.detach().clone()]
    kernel = CutlassFp8BlockScaledMMLinearKernel(config)
    kernel.process_weights_after_loading(first)
    layers = [first]
    for _ in range(copies - 1):
        layers.append(clone_layer(first))
        fi_scales.append(fi_scales[0].clone())
        bf16_weights.append(bf16_weights[0].clone())
    # The FP8-input mode uses no workspace, but the runner wants one configured.
    placeholder = torch.empty(16, dtype=torch.uint8, device="cuda")
    sets = range(copies)

    def one_m(m: int) -> None:
        graph = m <= GRAPH_MAX_M
        xs = [torch.randn((m, k), generator=gen, device="cuda").to(torch.bfloat16) for _ in sets]
        qs = [quant.quantize_fp8_per_group(x, 128) for x in xs]
        fi_outs = [torch.empty((m, n), dtype=torch.bfloat16, device="cuda") for _ in sets]

        def gemm(tile: int = -1) -> list[Call]:
            return [lambda i=i: ops.block_scaled_mm(qs[i][0], layers[i].weight, qs[i][1],
                                                    layers[i].weight_scale, None, kernel.workspace,
                                                    torch.bfloat16, tile, -1, -1, -1,
                                                    layers[i].weight_scale_n64) for i in sets]

        methods: dict[str, list[Call]] = {
            "block_gemm": gemm(),
            "block_apply": [lambda i=i: kernel.apply_weights(layers[i], xs[i]) for i in sets],
            "bf16_matmul": [lambda i=i: torch.matmul(xs[i], bf16_weights[i].t()) for i in sets],
        }
        if runner is not None:
            runner.configure_workspace(placeholder)
            methods["flashinfer_gemm"] = [lambda i=i: runner.run_gemm(
                qs[i][0][:m], layers[i].weight, fi_outs[i], qs[i][1], fi_scales[i]) for i in sets]
        row: dict[str, Any] = {"N": n, "K": k, "M": m, "copies": copies,
                               "timing": "cuda_graph" if graph else "eager",
                               "tile": block_scaled_mm_tile(m, n, sm_count()).name}
        where = f"block N={n} K={k} M={m}"
        means, rounds = time_rounds(methods, graph, where, ROUNDS[graph])
        row.update(means)
        row["rounds_us"] = rounds
        if fi_public is not None and not graph:
            row["flashinfer_bf16_in"] = time_us([lambda i=i: fi_public(
                xs[i], layers[i].weight, None, fi_scales[i], out_dtype=torch.bfloat16)
                for i in sets], False, f"{where} flashinfer_bf16_in")
        row["host_us"] = {"block_apply": host_us(methods["block_apply"])}
        if sweep:
            tiles = {t.name: gemm(int(t)) for t in BlockTileConfig}
            row["block_tiles"] = time_rounds(tiles, graph, where, TILE_ROUNDS[graph])[0]
        row["block_gemm_vs_flashinfer"] = ratio(row, "flashinfer_gemm", "block_gemm")
        row["block_apply_vs_flashinfer_bf16_in"] = ratio(row, "flashinfer_bf16_in", "block_apply")
        row["block_apply_vs_bf16"] = ratio(row, "bf16_matmul", "block_apply")
        rows.append(row)
        log(summary(row))

    for m in m_values:
        one_m(m)


def summary(row: dict) -> str:
    cells = [f"{name}={value:.1f}" for name, value in row.items()
             if isinstance(value, float) and "_vs_" not in name]
    ratios = [f"{name}={value:.3f}" for name, value in row.items()
              if "_vs_" in name and isinstance(value, float)]
    return f"N={row['N']} K={row['K']} M={row['M']} {row['tile']}: " + " ".join(cells + ratios)


def plot(result: dict, path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no plot"
    series = [("scaled", "fp8_gemm_vs_scaled_mm"), ("scaled", "int8_gemm_vs_int_mm_scaled"),
              ("scaled", "fp8_apply_vs_bf16"), ("scaled", "int8_apply_vs_bf16"),
              ("block", "block_gemm_vs_flashinfer"), ("block", "block_apply_vs_bf16")]
    series = [(table, key) for table, key in series if result[table]]
    fig, axes = plt.subplots(1, len(series), figsize=(4.5 * len(series), 4), squeeze=False)
    for ax, (table, key) in zip(axes[0], series):
        for shape in sorted({(r["N"], r["K"]) for r in result[table]}):
            pts = [(r["M"], r[key]) for r in result[table]
                   if (r["N"], r["K"]) == shape and isinstance(r.get(key), float)]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"N={shape[0]} K={shape[1]}")
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("M")
        ax.set_title(key.replace("_", " "), fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"kernel-core-cutlass, {result['device']}, rev {result['git_revision'][:7]}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return f"plot written to {path.name}"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


PAIRED_HEADER = ("kind      shape                | reference us, its drift over the rounds | "
                 "ours (tile/raster/swizzle): ratio ref/ours median [min-max of rounds] | "
                 "best swept variant, same")


def paired_kernels(args: argparse.Namespace, runner: Any) -> list[dict]:
    """The kernels the reference and ours launch at every paired GEMM point (one operand set per
    shape, built as in paired_scaled / paired_block)."""
    found: list[dict] = []
    bf16, device = torch.bfloat16, torch.device("cuda")
    if not args.skip_scaled:
        for n, k in SCALED_SHAPES:
            config = FP8ScaledMMLinearLayerConfig(weight_shape=(n, k))
            layer = make_layer(config, weight=torch.randn((n, k), device=device) * 0.05,
                               device="cuda")
            del layer.reference_weight
            kernel = CutlassFP8ScaledMMLinearKernel(config)
            kernel.process_weights_after_loading(layer)
            for m in args.m or PAIRED_M:
                q, s = quant.quantize_fp8_per_token(torch.randn((m, k), device=device).to(bf16))
                found.append({
                    "kind": "fp8_gemm", "N": n, "K": k, "M": m,
                    "scaled_mm": kernel_names(
                        torch._scaled_mm, q, layer.weight.t(), scale_a=s[:, None],
                        scale_b=layer.weight_scale[None, :], out_dtype=bf16, use_fast_accum=True),
                    "ours": kernel_names(ops.scaled_mm, q, layer.weight, s, layer.weight_scale,
                                         None, None, None, kernel.workspace, bf16)})
            del layer
    if not args.skip_block and runner is not None:
        runner.configure_workspace(torch.empty(16, dtype=torch.uint8, device=device))
        for n, k in BLOCK_SHAPES:
            config = Fp8BlockLinearLayerConfig(weight_shape=(n, k))
            layer = make_layer(config, weight=torch.randn((n, k), device=device) * 0.05,
                               device="cuda")
            del layer.reference_weight
            fi_scale = layer.weight_scale.detach().clone()
            kernel = CutlassFp8BlockScaledMMLinearKernel(config)
            kernel.process_weights_after_loading(layer)
            for m in args.m or PAIRED_BLOCK_M:
                q, xs = quant.quantize_fp8_per_group(torch.randn((m, k), device=device).to(bf16), 128)
                out = torch.empty((m, n), dtype=bf16, device=device)
                found.append({
                    "kind": "fp8_block", "N": n, "K": k, "M": m,
                    "flashinfer": kernel_names(runner.run_gemm, q[:m], layer.weight, out, xs,
                                               fi_scale),
                    "ours": kernel_names(ops.block_scaled_mm, q, layer.weight, xs,
                                         layer.weight_scale, None, kernel.workspace, bf16, -1, -1,
                                         -1, -1, layer.weight_scale_n64)})
            del layer
    return found


def run_paired(args: argparse.Namespace, result: dict, runner: Any, start: float) -> int:
    """The --paired section: rows in result["paired"], the compact table in result["table"]."""
    result["method"] = (
        f"interleaved CUDA-graph rounds: each candidate a batch of >= {REPLAY_MS} ms over "
        f"weights/activations rotated over copies exceeding 2x L2; head-to-head {PAIR_ROUNDS} "
        f"rounds, sweeps {SWEEP_ROUNDS}; order rotated per round, reversed every other; ratio = "
        "median over rounds of reference/candidate of the same round")
    result["paired"] = []

    def write() -> None:
        result["notes"] = NOTES
        result["table"] = [PAIRED_HEADER, *(paired_line(row) for row in result["paired"])]
        args.out.write_text(json.dumps(result, indent=1))

    if not args.skip_scaled and not args.skip_apply:
        for n, k in SCALED_SHAPES:
            paired_apply(n, k, result["paired"], list(PAIRED_APPLY_M))
            write()
    if not args.skip_scaled:
        for n, k in SCALED_SHAPES:
            paired_scaled(n, k, result["paired"], args.m or list(PAIRED_M), not args.no_sweep)
            write()
            torch.cuda.empty_cache()
    if not args.skip_block and runner is not None:
        for n, k in BLOCK_SHAPES:
            paired_block(n, k, result["paired"], args.m or list(PAIRED_BLOCK_M), not args.no_sweep,
                         runner)
            write()
            torch.cuda.empty_cache()
    result["wall_s"] = round(time.perf_counter() - start, 1)
    write()
    log("\n".join(result["table"]))
    log(f"wrote {args.out} in {result['wall_s']} s")
    # After every timed round and the file's write: a profiler failure cannot cost a result.
    try:
        result["kernels"] = paired_kernels(args, runner)
    except Exception as exc:  # noqa: BLE001 - a diagnostic: record why
        result["kernels"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    write()
    found = result["kernels"]
    log(f"kernel names of {len(found)} points in the JSON's `kernels`" if isinstance(found, list)
        else f"kernel names: {found}")
    return 0


def main() -> int:
    global REPLAY_MS  # --replay-ms: one setting for the whole run, read by interleaved_rounds
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--git-rev", default="unknown", help="revision of the code measured")
    parser.add_argument("--command", default="", help="the exact command line, for the record")
    parser.add_argument("--skip-scaled", action="store_true")
    parser.add_argument("--skip-block", action="store_true")
    parser.add_argument("--m", type=int, nargs="+", default=None,
                        help=f"token counts to run (default: {M_VALUES}; --paired: "
                             f"{PAIRED_M} for fp8, {PAIRED_BLOCK_M} for fp8_block)")
    parser.add_argument("--no-sweep", action="store_true", help="skip the per-tile sweeps")
    parser.add_argument("--skip-apply", action="store_true",
                        help="--paired: skip the whole-apply rows (the GEMMs alone only)")
    parser.add_argument("--replay-ms", type=float, default=REPLAY_MS,
                        help=f"--paired: each candidate's batch per round, at least this many ms "
                             f"(default {REPLAY_MS}; longer batches let the clocks settle on each "
                             "candidate's own power draw)")
    parser.add_argument("--paired", action="store_true",
                        help="only the GEMMs against their references, interleaved in CUDA-graph "
                             "rounds, with the tile x raster x swizzle sweeps")
    args = parser.parse_args()
    REPLAY_MS = args.replay_ms

    start = time.perf_counter()
    ops.build()
    runner, fi_public, fi_note = (None, None, "not run") if args.skip_block else flashinfer_block()
    log(fi_note)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda,
                     "triton": triton.__version__, "python": platform.python_version(),
                     "nvidia-cutlass": _version("nvidia-cutlass"),
                     "flashinfer-python": _version("flashinfer-python")},
        "git_revision": args.git_rev,
        "command": args.command,
        "extension_load_s": round(time.perf_counter() - start, 1),
        "flashinfer": fi_note,
        "method": (
            "kernel_core.bench.timing.time_calls medians (CUDA events, warm-up "
            f"{BUDGET.warmup_ms} ms, {BUDGET.rep_ms} ms of samples, at least {BUDGET.min_reps}); "
            "weights and activations rotated over copies exceeding 2x L2; CUDA graph of one "
            f"pass over the copies for M <= {GRAPH_MAX_M}, eager above; main methods: median of "
            f"{ROUNDS[True]} (graph) / {ROUNDS[False]} (eager) rounds in alternating order; "
            f"tiles: median of {TILE_ROUNDS[True]} / {TILE_ROUNDS[False]} rounds"),
        "scaled": [],
        "block": [],
    }
    if args.paired:
        return run_paired(args, result, runner, start)
    args.m = args.m or list(M_VALUES)
    if not args.skip_scaled:
        for n, k in SCALED_SHAPES:
            bench_scaled(n, k, result["scaled"], args.m, not args.no_sweep)
            result["notes"] = NOTES
            args.out.write_text(json.dumps(result, indent=1))
            torch.cuda.empty_cache()
    if not args.skip_block:
        for n, k in BLOCK_SHAPES:
            bench_block(n, k, result["block"], args.m, not args.no_sweep, runner, fi_public)
            result["notes"] = NOTES
            args.out.write_text(json.dumps(result, indent=1))
            torch.cuda.empty_cache()
    result["notes"] = NOTES
    result["plot"] = plot(result, args.out.with_suffix(".png"))
    result["wall_s"] = round(time.perf_counter() - start, 1)
    args.out.write_text(json.dumps(result, indent=1))
    log(f"wrote {args.out} in {result['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
