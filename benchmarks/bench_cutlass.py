"""kernel-core-cutlass against what a user would run instead, side by side on one GPU.

Per (N, K) and M, medians (``triton.testing.do_bench``, which flushes the L2 cache before every
timed call, so no call reads a warm weight) in microseconds of:

fp8 / int8 shapes (N, K) in {(8192, 8192), (28672, 8192), (8192, 28672)}:
  ``fp8_gemm``       our FP8 GEMM alone (per-token activation x per-channel weight scales in the
                     epilogue), the heuristic's tile; ``fp8_tiles`` every tile configuration
  ``scaled_mm``      ``torch._scaled_mm`` rowwise, same operands, ``use_fast_accum=True``
  ``int8_gemm``      our int8 GEMM alone (symmetric, same scaling); ``int8_tiles`` every tile
  ``int_mm_scaled``  ``torch._int_mm`` + the same scaling in torch (M > 16 only: _int_mm's limit)
  ``fp8_apply`` / ``int8_apply``  the whole ``apply_weights``, bf16 in -> bf16 out, dynamic
                     per-token quantization included
  ``bf16_matmul``    ``torch.matmul`` with the bf16 weight
fp8_block shapes (DeepSeek-V3) {(7168, 18432), (18432, 7168), (4096, 7168), (2112, 7168)}:
  ``block_gemm`` (+ ``block_tiles``), ``block_apply`` (per-1x128-group quantization included),
  ``bf16_matmul``; FlashInfer's ``fp8_blockscale_gemm_sm90`` when ``flashinfer`` imports.

M <= 256 is timed as CUDA-graph replays (what a decode step runs), larger M as eager launches;
every method of one row is timed the same way. JSON goes to ``--out`` after every shape.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import triton
from triton.testing import do_bench

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


def median_us(fn: Callable[[], object], graph: bool) -> float:
    """Median time of one call; under a CUDA graph of 10 calls when ``graph``."""
    fn()
    torch.cuda.synchronize()
    if not graph:
        return do_bench(fn, warmup=5, rep=30, return_mode="median") * 1e3
    calls = 10
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(calls):
            fn()
    g.replay()
    torch.cuda.synchronize()
    return do_bench(g.replay, warmup=5, rep=30, return_mode="median") * 1e3 / calls


def flashinfer_block_gemm() -> tuple[Callable | None, str]:
    try:
        from flashinfer.gemm import fp8_blockscale_gemm_sm90
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available here"
        return None, f"flashinfer not importable on this machine: {type(exc).__name__}: {exc}"
    return fp8_blockscale_gemm_sm90, "flashinfer imported"


def bench_scaled(n: int, k: int, rows: list[dict], tiles: bool) -> None:
    gen = torch.Generator(device="cuda").manual_seed(n + k)
    weight = torch.randn((n, k), generator=gen, device="cuda") * 0.05
    w_bf16 = weight.to(torch.bfloat16)
    fp8_config = FP8ScaledMMLinearLayerConfig(weight_shape=(n, k))
    fp8_layer = make_layer(fp8_config, weight=weight, device="cuda")
    int8_config = Int8ScaledMMLinearLayerConfig(weight_shape=(n, k))
    int8_layer = make_layer(int8_config, weight=weight, device="cuda")
    del weight
    for layer in (fp8_layer, int8_layer):
        del layer.reference_weight
    fp8 = CutlassFP8ScaledMMLinearKernel(fp8_config)
    fp8.process_weights_after_loading(fp8_layer)
    int8 = CutlassInt8ScaledMMLinearKernel(int8_config)
    int8.process_weights_after_loading(int8_layer)
    w8, ws8 = fp8_layer.weight, fp8_layer.weight_scale
    wi, wsi = int8_layer.weight, int8_layer.weight_scale
    ws = fp8.workspace
    for m in M_VALUES:
        graph = m <= GRAPH_MAX_M
        x = torch.randn((m, k), generator=gen, device="cuda").to(torch.bfloat16)
        xq, xs = quant.quantize_fp8_per_token(x)
        xi, xsi, _, _ = quant.quantize_int8_per_token(x, True)
        bf16 = torch.bfloat16
        row: dict = {"N": n, "K": k, "M": m, "timing": "cuda_graph" if graph else "eager",
                     "fp8_tile": scaled_mm_tile(m, n).name}
        row["fp8_gemm"] = median_us(
            lambda: ops.scaled_mm(xq, w8, xs, ws8, None, None, None, ws, bf16), graph)
        row["scaled_mm"] = median_us(
            lambda: torch._scaled_mm(xq, w8.t(), scale_a=xs[:, None], scale_b=ws8[None, :],
                                     out_dtype=bf16, use_fast_accum=True), graph)
        row["int8_gemm"] = median_us(
            lambda: ops.scaled_mm(xi, wi, xsi, wsi, None, None, None, ws, bf16), graph)
        if m > 16:
            row["int_mm_scaled"] = median_us(
                lambda: (torch._int_mm(xi, wi.t()).float() * xsi[:, None] * wsi[None, :]).to(bf16),
                graph)
        row["fp8_apply"] = median_us(lambda: fp8.apply_weights(fp8_layer, x), graph)
        row["int8_apply"] = median_us(lambda: int8.apply_weights(int8_layer, x), graph)
        row["bf16_matmul"] = median_us(lambda: torch.matmul(x, w_bf16.t()), graph)
        if tiles:
            row["fp8_tiles"] = {t.name: median_us(
                lambda t=t: ops.scaled_mm(xq, w8, xs, ws8, None, None, None, ws, bf16, int(t)),
                graph) for t in TileConfig}
            row["int8_tiles"] = {t.name: median_us(
                lambda t=t: ops.scaled_mm(xi, wi, xsi, wsi, None, None, None, ws, bf16, int(t)),
                graph) for t in TileConfig}
        row["fp8_gemm_vs_scaled_mm"] = row["scaled_mm"] / row["fp8_gemm"]
        if "int_mm_scaled" in row:
            row["int8_gemm_vs_int_mm_scaled"] = row["int_mm_scaled"] / row["int8_gemm"]
        row["fp8_apply_vs_bf16"] = row["bf16_matmul"] / row["fp8_apply"]
        row["int8_apply_vs_bf16"] = row["bf16_matmul"] / row["int8_apply"]
        rows.append(row)
        print(json.dumps({k_: (round(v, 3) if isinstance(v, float) else v)
                          for k_, v in row.items() if not k_.endswith("tiles")}),
              file=sys.stderr, flush=True)


def bench_block(n: int, k: int, rows: list[dict], tiles: bool, flashinfer_fn) -> None:
    gen = torch.Generator(device="cuda").manual_seed(n + k + 1)
    weight = torch.randn((n, k), generator=gen, device="cuda") * 0.05
    w_bf16 = weight.to(torch.bfloat16)
    config = Fp8BlockLinearLayerConfig(weight_shape=(n, k))
    layer = make_layer(config, weight=weight, device="cuda")
    del weight, layer.reference_weight
    w_fi, ws_fi = layer.weight.detach().clone(), layer.weight_scale.detach().clone()
    kernel = CutlassFp8BlockScaledMMLinearKernel(config)
    kernel.process_weights_after_loading(layer)
    for m in M_VALUES:
        graph = m <= GRAPH_MAX_M
        x = torch.randn((m, k), generator=gen, device="cuda").to(torch.bfloat16)
        q, xs = quant.quantize_fp8_per_group(x, 128)
        row: dict = {"N": n, "K": k, "M": m, "timing": "cuda_graph" if graph else "eager",
                     "block_tile": block_scaled_mm_tile(m, n).name}
        row["block_gemm"] = median_us(
            lambda: ops.block_scaled_mm(q, layer.weight, xs, layer.weight_scale, None,
                                        kernel.workspace, torch.bfloat16), graph)
        row["block_apply"] = median_us(lambda: kernel.apply_weights(layer, x), graph)
        row["bf16_matmul"] = median_us(lambda: torch.matmul(x, w_bf16.t()), graph)
        if flashinfer_fn is not None:
            try:
                row["flashinfer_block_bf16_in"] = median_us(
                    lambda: flashinfer_fn(x, w_fi, None, ws_fi), False)
            except Exception as exc:  # noqa: BLE001 - record, keep benchmarking
                row["flashinfer_error"] = f"{type(exc).__name__}: {exc}"[:300]
        if tiles:
            row["block_tiles"] = {t.name: median_us(
                lambda t=t: ops.block_scaled_mm(q, layer.weight, xs, layer.weight_scale, None,
                                                kernel.workspace, torch.bfloat16, int(t)), graph)
                for t in BlockTileConfig}
        row["block_gemm_vs_bf16"] = row["bf16_matmul"] / row["block_gemm"]
        row["block_apply_vs_bf16"] = row["bf16_matmul"] / row["block_apply"]
        rows.append(row)
        print(json.dumps({k_: (round(v, 3) if isinstance(v, float) else v)
                          for k_, v in row.items() if not k_.endswith("tiles")}),
              file=sys.stderr, flush=True)


def plot(result: dict, path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no plot"
    series = [("scaled", "fp8_gemm_vs_scaled_mm"), ("scaled", "int8_gemm_vs_int_mm_scaled"),
              ("scaled", "fp8_apply_vs_bf16"), ("scaled", "int8_apply_vs_bf16"),
              ("block", "block_gemm_vs_bf16"), ("block", "block_apply_vs_bf16")]
    series = [(table, key) for table, key in series if result[table]]
    fig, axes = plt.subplots(1, len(series), figsize=(5 * len(series), 4))
    for ax, (table, key) in zip(axes, series):
        shapes = sorted({(r["N"], r["K"]) for r in result[table]})
        for shape in shapes:
            pts = [(r["M"], r[key]) for r in result[table] if (r["N"], r["K"]) == shape and key in r]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"N={shape[0]} K={shape[1]}")
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("M")
        ax.set_title(key.replace("_", " "))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return f"plot written to {path.name}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--git-rev", default="unknown", help="revision of the code measured")
    parser.add_argument("--command", default="", help="the exact command line, for the record")
    parser.add_argument("--no-tiles", action="store_true", help="skip the per-tile sweep")
    parser.add_argument("--skip-block", action="store_true")
    args = parser.parse_args()

    build_start = time.perf_counter()
    ops.build()
    fi_fn, fi_note = flashinfer_block_gemm()
    result: dict = {
        "device": torch.cuda.get_device_name(),
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda,
                     "triton": triton.__version__, "python": platform.python_version()},
        "git_revision": args.git_rev,
        "command": args.command,
        "extension_load_s": round(time.perf_counter() - build_start, 1),
        "flashinfer": fi_note,
        "method": "triton.testing.do_bench median (L2 flushed before each timed call); "
                  f"CUDA graph of 10 calls for M <= {GRAPH_MAX_M}, eager above",
        "scaled": [],
        "block": [],
    }
    for n, k in SCALED_SHAPES:
        bench_scaled(n, k, result["scaled"], tiles=not args.no_tiles)
        args.out.write_text(json.dumps(result, indent=1))
        torch.cuda.empty_cache()
    if not args.skip_block:
        for n, k in BLOCK_SHAPES:
            bench_block(n, k, result["block"], tiles=not args.no_tiles, flashinfer_fn=fi_fn)
            args.out.write_text(json.dumps(result, indent=1))
            torch.cuda.empty_cache()
    result["plot"] = plot(result, args.out.with_suffix(".png"))
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
