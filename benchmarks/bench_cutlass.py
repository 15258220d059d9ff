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
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import triton

from kernel_core.bench.timing import Budget, l2_cache_bytes, rotation_count, time_calls
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
    BlockTileConfig,
    TileConfig,
    block_scaled_mm_tile,
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
#: The tiles swept per M range (the heuristic's pick is always among them).
SWEEP = (
    (64, (TileConfig.SWAP_64x16, TileConfig.SWAP_64x64, TileConfig.SWAP_64x16_K256,
          TileConfig.SWAP_64x64_K256, TileConfig.PINGPONG_64x128,
          TileConfig.PINGPONG_64x128_CLUSTER2)),
    (256, (TileConfig.SWAP_64x64, TileConfig.SWAP_64x64_K256, TileConfig.PINGPONG_64x128,
           TileConfig.PINGPONG_64x128_CLUSTER2, TileConfig.PINGPONG_64x256,
           TileConfig.PINGPONG_128x128_CLUSTER2, TileConfig.COOPERATIVE_128x128,
           TileConfig.COOPERATIVE_128x128_STREAM_K)),
    (1 << 30, (TileConfig.PINGPONG_64x128_CLUSTER2, TileConfig.PINGPONG_64x256,
               TileConfig.PINGPONG_128x128_CLUSTER2, TileConfig.COOPERATIVE_128x128,
               TileConfig.COOPERATIVE_128x128_STREAM_K, TileConfig.COOPERATIVE_128x256,
               TileConfig.COOPERATIVE_256x128)),
)

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
    for m in m_values:
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
        del xs, fq, iq, methods


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
    for m in m_values:
        graph = m <= GRAPH_MAX_M
        xs = [torch.randn((m, k), generator=gen, device="cuda").to(torch.bfloat16) for _ in sets]
        qs = [quant.quantize_fp8_per_group(x, 128) for x in xs]
        fi_outs = [torch.empty((m, n), dtype=torch.bfloat16, device="cuda") for _ in sets]

        def gemm(tile: int = -1) -> list[Call]:
            return [lambda i=i: ops.block_scaled_mm(qs[i][0], layers[i].weight, qs[i][1],
                                                    layers[i].weight_scale, None, kernel.workspace,
                                                    torch.bfloat16, tile) for i in sets]

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
        del xs, qs, fi_outs, methods


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--git-rev", default="unknown", help="revision of the code measured")
    parser.add_argument("--command", default="", help="the exact command line, for the record")
    parser.add_argument("--skip-scaled", action="store_true")
    parser.add_argument("--skip-block", action="store_true")
    parser.add_argument("--m", type=int, nargs="+", default=list(M_VALUES),
                        help="token counts to run (default: all)")
    parser.add_argument("--no-sweep", action="store_true", help="skip the per-tile sweeps")
    args = parser.parse_args()

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
