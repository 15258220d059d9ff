"""Probe the tile kernel (wgmma, M >= 33) on a GPU machine in one call, without the torch extension.

Uses ``gpu/build/libkcm_tile_probe.so`` (the tile and stream sources plus ``tile_probe_shim.cu``,
built with nvcc anywhere by ``gpu/build_tile_probe.sh``; refused when built from other sources)
through ctypes:

1. correctness: every format the plugin packs (processed by the plugin's own kernel classes),
   both activation dtypes, M in {64, 65, 128, 200, 256, 1000}, every tile shape, three splits and
   every launch variant (barrier, warp-specialized, bulk producer), outputs poisoned with NaN, against a
   float64 reference with bias;
2. timing: int4 g128 and NVFP4 on the benchmark shapes, every variant, tile shape and a range of
   splits per M, against bf16 ``torch.matmul`` (and decode + cuBLAS from M=256), CUDA-graph replay
   medians with weights rotated beyond L2 (the helpers of benchmarks/bench_marlin.py); the best
   launch of each variant is checked against decode + matmul and for NaN; per variant and tile
   shape a per-chunk time fitted to the planner's model (``tile.CHUNK_US``).

Run (repo root): ``bash plugins/marlin_plugin/gpu/build_tile_probe.sh`` (here or on the device),
then ``PYTHONPATH=.:plugins/marlin_plugin:benchmarks python3
plugins/marlin_plugin/gpu/probe_tile.py --out OUT.json``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from bench_marlin import _config, _layer, _random_checkpoint, copy_bandwidth, graph_time_us
from kernel_core.families import (
    FP8ScaledMMLinearLayerConfig,
    MPLinearLayerConfig,
    Mxfp8LinearLayerConfig,
    MxFp4LinearLayerConfig,
    NvFp4LinearLayerConfig,
)
from kernel_core.formats.layer import dequantize_weight, make_layer
from kernel_core.scalar_types import scalar_types
from kernel_core.testing import relative_error
from kernel_core_marlin import tile
from kernel_core_marlin.kernels import (
    MarlinFp8LinearKernel,
    MarlinMPLinearKernel,
    MarlinMxfp8LinearKernel,
    MarlinMxFp4LinearKernel,
    MarlinNvFp4LinearKernel,
)
from kernel_core_marlin.prepare import Format

from probe_sources import tile_probe_digest

BUILD = Path(__file__).with_name("build")
if (BUILD / "libkcm_tile_probe.sources").read_text().strip() != tile_probe_digest():
    raise SystemExit("gpu/build/libkcm_tile_probe.so was built from other sources: run "
                     "plugins/marlin_plugin/gpu/build_tile_probe.sh")
LIB = ctypes.CDLL(str(BUILD / "libkcm_tile_probe.so"))
LIB.kcm_probe_tile.restype = ctypes.c_int
LIB.kcm_probe_tile.argtypes = [ctypes.c_int] * 6 + [ctypes.c_void_p] * 8 + [ctypes.c_int] * 8 + [
    ctypes.c_void_p]
LIB.kcm_probe_tile_clusters.restype = ctypes.c_int
LIB.kcm_probe_tile_clusters.argtypes = [ctypes.c_int] * 6
LIB.kcm_probe_tile_permuted_x.restype = ctypes.c_int
LIB.kcm_probe_tile_permuted_x.argtypes = [ctypes.c_int] * 4 + [ctypes.c_void_p] * 5 + [
    ctypes.c_int] * 8 + [ctypes.c_void_p]
LIB.kcm_probe_activation_image.restype = ctypes.c_int
LIB.kcm_probe_activation_image.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 2 + [
    ctypes.c_int] * 3 + [ctypes.c_void_p]
LIB.kcm_probe_tile_bulk_stage.restype = ctypes.c_int
LIB.kcm_probe_tile_bulk_stage.argtypes = [ctypes.c_int] * 5 + [ctypes.c_void_p] * 8 + [
    ctypes.c_int] * 8 + [ctypes.c_void_p]
LIB.kcm_probe_tile_bulk_mode.restype = ctypes.c_int
LIB.kcm_probe_tile_bulk_mode.argtypes = [ctypes.c_int] * 4 + [ctypes.c_void_p] * 5 + [
    ctypes.c_int] * 8 + [ctypes.c_void_p]
#: Formats whose bulk kernel the shim builds with one and with two chunks a stage
#: (kcm_probe_tile_bulk_stage: 4-bit codes).
STAGE_CHUNK_FORMATS = ("int4_g128", "nvfp4_w4a16")
#: The bulk kernel's probe modes (csrc/tile_gemm.cuh TileProbe), by the name a row carries.
BULK_MODES = {"consumers-alone": 1, "wgmma-alone": 2, "copies-alone": 3,
              "no-activation-copies": 4, "no-scale-copies": 5, "no-code-copies": 6,
              "decode-alone": 7}
LIB.kcm_probe_tile_stream_trace.restype = ctypes.c_int
LIB.kcm_probe_tile_stream_trace.argtypes = [ctypes.c_int] * 2 + [ctypes.c_void_p] * 7 + [
    ctypes.c_int] * 9 + [ctypes.c_void_p]
LIB.kcm_probe_dequantize.restype = ctypes.c_int
LIB.kcm_probe_dequantize.argtypes = [ctypes.c_int] * 2 + [ctypes.c_void_p] * 6 + [
    ctypes.c_int] * 6 + [ctypes.c_void_p]
SHAPES = ((28672, 8192), (8192, 28672), (10240, 8192), (8192, 8192))
TILE_SHAPES = tuple(tile.TILE_SHAPES)
KERNELS = {"mp": MarlinMPLinearKernel, "nvfp4": MarlinNvFp4LinearKernel,
           "mxfp4": MarlinMxFp4LinearKernel, "fp8": MarlinFp8LinearKernel,
           "mxfp8": MarlinMxfp8LinearKernel}
CHECKS = {
    "int4-g128-bf16": MPLinearLayerConfig(weight_shape=(1000, 2048), group_size=128),
    "int4-channel-bf16": MPLinearLayerConfig(weight_shape=(384, 4096), group_size=-1),
    "uint4-zp-g64-fp16": MPLinearLayerConfig(
        weight_shape=(200, 704), weight_type=scalar_types.uint4, zero_points=True, group_size=64,
        act_dtype=torch.float16),
    "uint4-zp-g32-bf16": MPLinearLayerConfig(
        weight_shape=(272, 1024), weight_type=scalar_types.uint4, zero_points=True, group_size=32),
    "uint8b128-g32-bf16": MPLinearLayerConfig(
        weight_shape=(256, 512), weight_type=scalar_types.uint8b128, group_size=32),
    "uint8-zp-channel-fp16": MPLinearLayerConfig(
        weight_shape=(96, 1024), weight_type=scalar_types.uint8, zero_points=True,
        group_size=-1, act_dtype=torch.float16),
    "act-order-uint4-zp-fp16": MPLinearLayerConfig(
        weight_shape=(256, 512), full_weight_shape=(256, 1024), weight_type=scalar_types.uint4,
        zero_points=True, group_size=128, has_g_idx=True, act_dtype=torch.float16),
    "nvfp4-fp16": NvFp4LinearLayerConfig(weight_shape=(512, 1024), activation_mode="w4a16",
                                         act_dtype=torch.float16),
    "nvfp4-bf16": NvFp4LinearLayerConfig(weight_shape=(640, 2048), activation_mode="w4a16"),
    "mxfp4-bf16": MxFp4LinearLayerConfig(weight_shape=(320, 1024), activation_mode="w4a16"),
    "fp8-channel-bf16": FP8ScaledMMLinearLayerConfig(weight_shape=(256, 528),
                                                     activation_mode="w8a16"),
    "mxfp8-fp16": Mxfp8LinearLayerConfig(weight_shape=(256, 1024), activation_mode="w8a16",
                                         act_dtype=torch.float16),
}
CHECK_M = (64, 65, 128, 200, 256, 1000)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _ptr(t: torch.Tensor | None) -> int | None:
    return t.data_ptr() if t is not None and t.numel() else None


def image_kernel(x: torch.Tensor, chunks: int) -> torch.Tensor:
    """The activation image by the library's kernel (csrc/x_image.cuh), as the op builds it."""
    image = torch.empty((chunks, (x.shape[0] + 7) // 8 * 8, 64), dtype=x.dtype, device=x.device)
    code = LIB.kcm_probe_activation_image(int(x.dtype == torch.bfloat16), x.data_ptr(),
                                          image.data_ptr(), x.shape[0], x.shape[1], chunks,
                                          torch.cuda.current_stream().cuda_stream)
    if code:
        raise RuntimeError(f"activation image: cudaError {code}")
    return image


class Packed:
    """A processed layer's tensors and the plain ints the kernel takes."""

    def __init__(self, kernel, layer: torch.nn.Module, n: int) -> None:
        self.kernel, self.layer, self.n = kernel, layer, n
        self.zeros = getattr(layer, "weight_zero_point", None)
        self.gtab = getattr(layer, "weight_group_table", None)
        self.chan = getattr(layer, "weight_channel_scale", None)
        self.perm = getattr(layer, "weight_perm", None)

    def tile(self, x: torch.Tensor, out: torch.Tensor, variant: int, bmx: int, rw: int,
             split: int, bias: torch.Tensor | None = None,
             x_img: torch.Tensor | None = None) -> None:
        """Variant 2 reads the activation image instead of x: built here from x by the image
        kernel (as the op does, so its times include the image pass) unless ``x_img`` is given."""
        w = self.layer.weight
        if variant == 2 and x_img is None:
            x_img = image_kernel(x, w.shape[1])
        code = LIB.kcm_probe_tile(
            int(x.dtype == torch.bfloat16), self.kernel._fmt, bmx, rw, split, variant,
            x_img.data_ptr() if variant == 2 else x.data_ptr(),
            w.data_ptr(), self.layer.weight_scale.data_ptr(), _ptr(self.zeros), _ptr(self.gtab),
            _ptr(self.chan), _ptr(bias), out.data_ptr(), x.shape[0], self.n, x.shape[1],
            w.shape[1], w.shape[0], self.layer.weight_scale.shape[1], self.kernel._group_size,
            self.kernel._zconst, torch.cuda.current_stream().cuda_stream)
        if code:
            raise RuntimeError(f"tile launch variant={variant} bmx={bmx} rw={rw} split={split}: "
                               f"cudaError {code}")

    def tile_bulk_stage(self, x: torch.Tensor, out: torch.Tensor, kc: int, bmx: int, rw: int,
                        split: int, x_img: torch.Tensor) -> None:
        """The bulk variant (bf16) with ``kc`` chunks per ring stage, on a prebuilt image."""
        w = self.layer.weight
        code = LIB.kcm_probe_tile_bulk_stage(
            kc, self.kernel._fmt, bmx, rw, split, x_img.data_ptr(), w.data_ptr(),
            self.layer.weight_scale.data_ptr(), _ptr(self.zeros), _ptr(self.gtab),
            _ptr(self.chan), None, out.data_ptr(), x.shape[0], self.n, x.shape[1], w.shape[1],
            w.shape[0], self.layer.weight_scale.shape[1], self.kernel._group_size,
            self.kernel._zconst, torch.cuda.current_stream().cuda_stream)
        if code:
            raise RuntimeError(f"bulk kc={kc} bmx={bmx} rw={rw} split={split}: cudaError {code}")

    def tile_bulk_mode(self, x: torch.Tensor, out: torch.Tensor, mode: int, bmx: int, rw: int,
                       split: int, x_img: torch.Tensor) -> None:
        """The bulk variant (bf16 int4) in probe mode ``mode`` (BULK_MODES), on a prebuilt image."""
        w = self.layer.weight
        code = LIB.kcm_probe_tile_bulk_mode(
            mode, bmx, rw, split, x_img.data_ptr(), w.data_ptr(),
            self.layer.weight_scale.data_ptr(), _ptr(self.chan), out.data_ptr(), x.shape[0],
            self.n, x.shape[1], w.shape[1], w.shape[0], self.layer.weight_scale.shape[1],
            self.kernel._group_size, self.kernel._zconst, torch.cuda.current_stream().cuda_stream)
        if code:
            raise RuntimeError(f"bulk mode={mode} bmx={bmx} rw={rw} split={split}: "
                               f"cudaError {code}")

    def tile_stream_trace(self, x: torch.Tensor, out: torch.Tensor, bmx: int, rw: int,
                          x_img: torch.Tensor, partials: torch.Tensor, arrivals: torch.Tensor,
                          trace: torch.Tensor) -> None:
        """Stream-K (bf16 int4) on a grid of ``arrivals.numel()`` blocks, recording its per-block
        timeline into ``trace`` (gpu/trace_stream_k.py), on a prebuilt image."""
        w = self.layer.weight
        code = LIB.kcm_probe_tile_stream_trace(
            bmx, rw, x_img.data_ptr(), w.data_ptr(), self.layer.weight_scale.data_ptr(),
            out.data_ptr(), partials.data_ptr(), arrivals.data_ptr(), trace.data_ptr(),
            arrivals.numel(), x.shape[0], self.n, x.shape[1], w.shape[1], w.shape[0],
            self.layer.weight_scale.shape[1], self.kernel._group_size, self.kernel._zconst,
            torch.cuda.current_stream().cuda_stream)
        if code:
            raise RuntimeError(f"stream-K trace bmx={bmx} rw={rw}: cudaError {code}")

    def tile_permuted_x(self, xp: torch.Tensor, out: torch.Tensor, bmx: int, rw: int,
                        split: int) -> None:
        """The probe variant that takes activations already in the kernel's channel order."""
        w = self.layer.weight
        code = LIB.kcm_probe_tile_permuted_x(
            self.kernel._fmt, bmx, rw, split, xp.data_ptr(), w.data_ptr(),
            self.layer.weight_scale.data_ptr(), _ptr(self.chan), out.data_ptr(), xp.shape[0],
            self.n, xp.shape[1], w.shape[1], w.shape[0], self.layer.weight_scale.shape[1],
            self.kernel._group_size, self.kernel._zconst, torch.cuda.current_stream().cuda_stream)
        if code:
            raise RuntimeError(f"permuted-x launch bmx={bmx} rw={rw} split={split}: error {code}")

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        w = self.layer.weight
        out = torch.empty((self.n, w.shape[1] * 64), dtype=dtype, device=w.device)
        code = LIB.kcm_probe_dequantize(
            int(dtype == torch.bfloat16), self.kernel._fmt, w.data_ptr(),
            self.layer.weight_scale.data_ptr(), _ptr(self.zeros), _ptr(self.gtab), _ptr(self.chan),
            out.data_ptr(), self.n, w.shape[1], w.shape[0], self.layer.weight_scale.shape[1],
            self.kernel._group_size, self.kernel._zconst, torch.cuda.current_stream().cuda_stream)
        if code:
            raise RuntimeError(f"dequantize: cudaError {code}")
        return out


def permuted_x(x: torch.Tensor, kp: int) -> torch.Tensor:
    """Channels of every 64-chunk reordered (t, s, jhi, pair) -> (s, jhi, t, pair): the order the
    tile kernel's activation copies produce (csrc/tile_gemm.cuh), padded with zeros to kp."""
    m, k = x.shape
    if kp > k:
        x = torch.nn.functional.pad(x, (0, kp - k))
    return x.view(m, kp // 64, 4, 4, 2, 2).permute(0, 1, 3, 4, 2, 5).reshape(m, kp)


def check_formats(variants: list[int]) -> list[dict]:
    """Every format x M x variant x tile shape x split against float64, NaN-poisoned outputs."""
    rows = []
    for name, config in CHECKS.items():
        layer = make_layer(config, seed=len(rows) + 1, device="cuda")
        reference = dequantize_weight(config, layer, dtype=torch.float64)
        kernel = KERNELS[config.family](config)
        kernel.process_weights_after_loading(layer)
        packed = Packed(kernel, layer, config.out_features)
        chunks = layer.weight.shape[1]
        for m in CHECK_M:
            x = torch.randn(m, config.in_features, device="cuda", dtype=config.act_dtype)
            bias = torch.randn(config.out_features, device="cuda", dtype=config.act_dtype)
            x2 = x.index_select(1, packed.perm).contiguous() if packed.perm is not None else x
            expected = x.double() @ reference.T + bias.double()
            for variant in variants:
                for bmx, rw in TILE_SHAPES:
                    for split in sorted({1, min(3, chunks), min(8, chunks)}):
                        out = torch.full((m, config.out_features), float("nan"), device="cuda",
                                         dtype=config.act_dtype)
                        packed.tile(x2, out, variant, bmx, rw, split, bias)
                        torch.cuda.synchronize()
                        finite = bool(torch.isfinite(out).all())
                        error = relative_error(out, expected)
                        ok = finite and error < 1e-2
                        rows.append({"format": name, "M": m, "variant": variant, "bmx": bmx,
                                     "rw": rw, "split": split, "finite": finite,
                                     "rel_error": error, "ok": ok})
                        if not ok:
                            log(f"FAIL {name} M={m} variant={variant} bmx={bmx} rw={rw} "
                                f"split={split}: finite={finite} error={error:.3g}")
        log(f"checked {name}: worst error "
            f"{max(r['rel_error'] for r in rows if r['format'] == name):.3g}")
    return rows


def splits_for(n: int, m: int, chunks: int, bmx: int, rw: int, sms: int) -> list[int]:
    """Split factors worth timing: 1 and those that bring the block count near 1-2 waves."""
    units = math.ceil(n / (128 * rw)) * math.ceil(m / bmx)
    found = {1}
    for split in range(2, 9):
        if split <= chunks and units * split <= 2 * sms and units < sms:
            found.add(split)
    return sorted(found)


def variant_name(variant: int, bmx: int, rw: int, split: int) -> str:
    return f"tile {tile.TILE_VARIANTS[variant]} bmx={bmx} rw={rw} split={split}"


#: The variants this probe launches: the shim passes no stream-K workspace, so variant 3 is
#: measured through the extension's op (benchmarks/bench_marlin.py) instead.
PROBED_VARIANTS = [v for v in tile.TILE_VARIANTS if v != tile.STREAM_K]
#: Stream-K's fixed costs, which the planner's model takes beside the per-chunk times; unused for
#: the probed (whole-tile) variants.
STREAM_OVERHEADS = tile.format_costs(Format.INT4)[1]
PROBED_CHUNK_US = {shape: us for shape, us in tile.CHUNK_US.items() if shape[0] in PROBED_VARIANTS}


def time_formats(replays: int, m_values: tuple[int, ...], fmts: list[str], variants: list[int],
                 permuted: bool, stage_chunks: bool, bulk_modes: bool, rows: list[dict],
                 save) -> None:
    """Appends one row per (format, shape, M) to ``rows`` and calls ``save`` after each."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    bf16_cache = {}
    limits_of = {}
    for fmt in fmts:
        for n, k in SHAPES:
            config, kernel_class = _config(fmt, n, k)
            layer = _layer(_random_checkpoint(config, fmt))
            kernel = kernel_class(config)
            kernel.process_weights_after_loading(layer)
            if fmt not in limits_of:
                limits_of[fmt] = {
                    (v, b, r, sp): LIB.kcm_probe_tile_clusters(1, kernel._fmt, b, r, sp, v)
                    for v in tile.TILE_VARIANTS for (b, r) in TILE_SHAPES for sp in range(1, 9)}
                log(f"{fmt}: clusters that fit at once by (variant, bmx, rw, split): "
                    f"{limits_of[fmt]}")
            limits = limits_of[fmt]
            weight_bytes = sum(p.numel() * p.element_size() for p in layer.parameters())
            copies = max(1, math.ceil(150 * 2**20 / weight_bytes))
            packs = [Packed(kernel, layer, n)] + [
                Packed(kernel, _layer({nm: p.data.clone() for nm, p in layer.named_parameters()}),
                       n) for _ in range(copies - 1)]
            for m in m_values:
                xs = [torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for _ in packs]
                outs = [torch.empty(m, n, device="cuda", dtype=torch.bfloat16) for _ in packs]
                reps = max(1, 8 // copies)
                if (n, k, m) not in bf16_cache:
                    wcopies = max(1, math.ceil(150 * 2**20 / (n * k * 2)))
                    weights = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
                               for _ in range(wcopies)]
                    calls = [lambda w=w, x=xs[i % len(xs)]: torch.matmul(x, w.T)
                             for i, w in enumerate(weights)] * max(1, 8 // wcopies)
                    bf16_cache[(n, k, m)] = graph_time_us(calls, replays)
                    del weights
                bf16_us = bf16_cache[(n, k, m)]
                chunks = layer.weight.shape[1]
                plan = tile.tile_plan(m, n, chunks, limits, sms, PROBED_CHUNK_US,
                                      STREAM_OVERHEADS)
                candidates = {(plan.variant, plan.bmx, plan.rw, plan.split)}
                for variant in variants:
                    for bmx, rw in TILE_SHAPES:
                        if bmx > max(64, 2 ** math.ceil(math.log2(m))):
                            continue
                        candidates |= {(variant, bmx, rw, sp)
                                       for sp in splits_for(n, m, chunks, bmx, rw, sms)}
                times = {}
                row_mismatches: list[str] = []
                for launch in sorted(candidates):
                    calls = [lambda p=p, x=x, o=o, a=launch: p.tile(x, o, *a)
                             for p, x, o in zip(packs, xs, outs)] * reps
                    times[launch] = graph_time_us(calls, replays)
                variants_us = {variant_name(*launch): t for launch, t in times.items()}
                # The best launch of each variant against decode + cuBLAS (the same decoded
                # values, fp32 sums) and for NaN in a poisoned output: a race or a wrong index
                # would show far above bf16 rounding.
                decoded = torch.matmul(xs[0], packs[0].dequantize(torch.bfloat16)[:, :k].T)
                ref = decoded.double()
                per_variant = {}
                for variant in sorted({launch[0] for launch in times}):
                    mine = {launch: t for launch, t in times.items() if launch[0] == variant}
                    best = min(mine, key=mine.get)
                    out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
                    packs[0].tile(xs[0], out, *best)
                    torch.cuda.synchronize()
                    per_variant[tile.TILE_VARIANTS[variant]] = {
                        "launch": variant_name(*best), "us": round(mine[best], 2),
                        "speedup": round(bf16_us / mine[best], 3),
                        "vs_dequant_matmul_rel_error": relative_error(out, ref),
                        "finite": bool(torch.isfinite(out).all())}
                if 2 in per_variant_launches(times):
                    images = [image_kernel(x, p.layer.weight.shape[1])
                              for p, x in zip(packs, xs)]
                    prebuilt_image_time(packs, xs, outs, images, times, reps, replays,
                                        variants_us)
                    if bulk_modes and fmt == "int4_g128":
                        bulk_mode_times(packs, xs, outs, images, times, reps, replays,
                                        variants_us)
                    if stage_chunks and fmt in STAGE_CHUNK_FORMATS:
                        bulk_stage_times(packs, xs, outs, images, times, reps, replays,
                                         variants_us, row_mismatches)
                    del images
                if permuted:
                    permuted_x_variants(packs, xs, outs, times, reps, replays, chunks,
                                        variants_us)
                if m >= 256:
                    calls = [lambda p=p, x=x, k=k: torch.matmul(
                        x, p.dequantize(torch.bfloat16)[:, :k].T)
                             for p, x in zip(packs, xs)] * max(1, 4 // copies)
                    variants_us["dequantize+matmul"] = graph_time_us(calls, replays)
                # Probe-mode rows do not compute the product: never the best.
                best = min((v for v in variants_us if not v.startswith("mode ")),
                           key=variants_us.get)
                plan_launch = (plan.variant, plan.bmx, plan.rw, plan.split)
                row = {"format": fmt, "N": n, "K": k, "M": m, "chunks": chunks,
                       "bf16_matmul_us": round(bf16_us, 2), "best": best,
                       "best_us": round(variants_us[best], 2),
                       "best_speedup": round(bf16_us / variants_us[best], 3),
                       "best_by_variant": per_variant,
                       "plan": variant_name(*plan_launch), "plan_us": round(times[plan_launch], 2),
                       "plan_reason": plan.reason,
                       "plan_speedup": round(bf16_us / times[plan_launch], 3),
                       "variants_us": {v: round(t, 2) for v, t in variants_us.items()},
                       "stage_chunks_mismatches": row_mismatches,
                       "cluster_limits": {",".join(map(str, key)): c
                                          for key, c in limits.items()}}
                rows.append(row)
                save()
                summary = "  ".join(
                    f"{name} {info['launch'].split(' ', 2)[2]} {info['us']:7.1f} "
                    f"({info['speedup']:4.2f}x) err {info['vs_dequant_matmul_rel_error']:.1e}"
                    + ("" if info["finite"] else " NONFINITE")
                    for name, info in per_variant.items())
                print(f"{fmt:12s} {n:5d}x{k:<5d} M={m:<5d} bf16 {bf16_us:7.1f}  {summary}  plan "
                      f"{row['plan']} ({row['plan_speedup']:4.2f}x)"
                      + (f" deq+mm {variants_us['dequantize+matmul']:7.1f}"
                         if "dequantize+matmul" in variants_us else ""), flush=True)
            del packs, layer
            torch.cuda.empty_cache()


def per_variant_launches(times: dict) -> set[int]:
    return {launch[0] for launch in times}


def prebuilt_image_time(packs, xs, outs, images, times, reps: int, replays: int,
                        variants_us: dict) -> None:
    """The best bulk-producer (variant 2) launch on ``images`` (the activation images, built
    before the replay): the kernel alone, without the image pass the op (and the "tile bulk"
    rows) include."""
    mine = {launch: t for launch, t in times.items() if launch[0] == 2}
    best = min(mine, key=mine.get)
    calls = [lambda p=p, x=x, o=o, i=i, a=best: p.tile(x, o, *a, x_img=i)
             for p, x, o, i in zip(packs, xs, outs, images)] * reps
    variants_us["prebuilt-image " + variant_name(*best)] = graph_time_us(calls, replays)


def best_bulk_launches(times: dict) -> list[tuple[int, int, int]]:
    """(bmx, rw, split) of the fastest bulk launch per tile shape of less than 256 tokens."""
    best: dict[tuple[int, int], tuple[float, int]] = {}
    for (variant, bmx, rw, split), t in times.items():
        if variant == 2 and (bmx, rw) != (256, 1) and t < best.get((bmx, rw), (math.inf, 0))[0]:
            best[(bmx, rw)] = (t, split)
    return [(bmx, rw, split) for (bmx, rw), (_, split) in sorted(best.items())]


def bulk_mode_times(packs, xs, outs, images, times, reps: int, replays: int,
                    variants_us: dict) -> None:
    """Per tile shape, the best bulk launch's split in each probe mode (BULK_MODES) beside the
    kernel itself, all on the prebuilt ``images``: where a block's time goes (consumers, their
    wgmmas, the copy pipeline, each class of copies)."""
    for bmx, rw, split in best_bulk_launches(times):
        name = variant_name(2, bmx, rw, split)
        calls = [lambda p=p, x=x, o=o, i=i, a=(bmx, rw, split): p.tile(x, o, 2, *a, x_img=i)
                 for p, x, o, i in zip(packs, xs, outs, images)] * reps
        variants_us["mode kernel " + name] = graph_time_us(calls, replays)
        for mode_name, mode in BULK_MODES.items():
            calls = [lambda p=p, x=x, o=o, i=i, a=(mode, bmx, rw, split):
                     p.tile_bulk_mode(x, o, *a, x_img=i)
                     for p, x, o, i in zip(packs, xs, outs, images)] * reps
            variants_us[f"mode {mode_name} " + name] = graph_time_us(calls, replays)


def bulk_stage_times(packs, xs, outs, images, times, reps: int, replays: int,
                     variants_us: dict, mismatches: list[str]) -> None:
    """Per tile shape, the best bulk launch's split with one and with two chunks per ring stage
    (on the prebuilt ``images``: the kernel alone), side by side; the two must agree bit for bit
    (the same wgmmas in the same order), else the launch is appended to ``mismatches``."""
    for bmx, rw, split in best_bulk_launches(times):
        results = []
        for kc in (1, 2):
            calls = [lambda p=p, x=x, o=o, i=i, a=(kc, bmx, rw, split):
                     p.tile_bulk_stage(x, o, *a, x_img=i)
                     for p, x, o, i in zip(packs, xs, outs, images)] * reps
            variants_us[f"stage-chunks={kc} " + variant_name(2, bmx, rw, split)] = graph_time_us(
                calls, replays)
            out = torch.full_like(outs[0], float("nan"))
            packs[0].tile_bulk_stage(xs[0], out, kc, bmx, rw, split, images[0])
            results.append(out)
        if not torch.equal(results[0], results[1]):
            log(f"MISMATCH stage chunks 1 / 2 {variant_name(2, bmx, rw, split)}")
            mismatches.append(f"{packs[0].n}x{xs[0].shape[1]} M={xs[0].shape[0]} "
                              f"{variant_name(2, bmx, rw, split)}")


def permuted_x_variants(packs, xs, outs, times, reps: int, replays: int, chunks: int,
                        variants_us: dict) -> None:
    """The best barrier launch on pre-permuted activations (16-byte copies; probe run 3: 2-7%
    faster with the permutation pass), with and without that pass; its output must equal the
    plain kernel's."""
    barrier = {launch: t for launch, t in times.items() if launch[0] == 0}
    if not barrier:
        return
    _, bmx, rw, split = min(barrier, key=barrier.get)
    if (bmx, rw) not in ((64, 2), (128, 2), (256, 1)):
        return
    kp = chunks * 64
    xps = [permuted_x(x, kp) for x in xs]
    name = variant_name(0, bmx, rw, split)
    calls = [lambda p=p, x=x, o=o, a=(bmx, rw, split): p.tile_permuted_x(x, o, *a)
             for p, x, o in zip(packs, xps, outs)] * reps
    variants_us["permuted-x " + name] = graph_time_us(calls, replays)
    calls = [lambda p=p, x=x, o=o, a=(bmx, rw, split): p.tile_permuted_x(
        permuted_x(x, kp), o, *a) for p, x, o in zip(packs, xs, outs)] * reps
    variants_us["permute+permuted-x " + name] = graph_time_us(calls, replays)
    out = torch.full_like(outs[0], float("nan"))
    out_xp = torch.full_like(outs[0], float("nan"))
    packs[0].tile(xs[0], out, 0, bmx, rw, split)
    packs[0].tile_permuted_x(xps[0], out_xp, bmx, rw, split)
    if not torch.equal(out_xp, out):
        log(f"MISMATCH permuted-x {name}")


def fit_chunk_times(rows: list[dict], sms: int) -> dict[str, float]:
    """Per (variant, bmx, rw): the median over timed points of time / modelled chunk-units (waves
    x chunks per block incl. the fixed overheads, tile._waves_and_cost at 1 us per chunk), i.e.
    the planner's per-chunk time for that variant and tile shape on this device."""
    ratios: dict[tuple[int, int, int], list[float]] = {}
    names = {name: key for key, name in tile.TILE_VARIANTS.items()}
    for row in rows:
        limits = {tuple(map(int, key.split(","))): c for key, c in row["cluster_limits"].items()}
        for launch, us in row["variants_us"].items():
            parts = launch.split()
            if parts[0] != "tile":
                continue
            variant = names[parts[1]]
            bmx, rw, split = (int(f.split("=")[1]) for f in parts[2:])
            shape = (variant, bmx, rw)
            _, units = tile._waves_and_cost(row["M"], row["N"], row["chunks"], shape, split,
                                            limits, sms, {shape: 1.0}, STREAM_OVERHEADS)
            ratios.setdefault(shape, []).append(us / units)
    return {",".join(map(str, shape)): round(statistics.median(r), 3)
            for shape, r in sorted(ratios.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="the JSON results (required unless --ncu-target)")
    parser.add_argument("--replays", type=int, default=10)
    parser.add_argument("--m", default="64,128,256;1024,4096",
                        help="M values; ';' separates passes over all formats and shapes")
    parser.add_argument("--formats", default="int4_g128,nvfp4_w4a16")
    parser.add_argument("--variants", default=",".join(map(str, PROBED_VARIANTS)),
                        help="launch variants to check and time (0 barrier, 1 specialized, "
                             "2 bulk producer)")
    parser.add_argument("--permuted-x", action="store_true",
                        help="also time the barrier kernel on pre-permuted activations")
    parser.add_argument("--skip-checks", action="store_true")
    parser.add_argument("--stage-chunks", action="store_true",
                        help="also time the bulk variant with one and two chunks per ring stage "
                             f"(formats {', '.join(STAGE_CHUNK_FORMATS)})")
    parser.add_argument("--bulk-modes", action="store_true",
                        help="also time the bulk variant's probe modes (int4 g128): consumers "
                             "alone, wgmma alone, copies alone, no activation / scale / code "
                             "copies, decode alone")
    parser.add_argument("--ncu-target", action="store_true",
                        help="only run 128/2/1 at M=128 and 64/2/1 at M=64 on 28672x8192 int4 in "
                             "every variant (for Nsight Compute): --ncu-warmup rounds over every "
                             "(shape, variant), then one more, so that --launch-skip "
                             "(warmup x launches per round) --launch-count (launches per round) "
                             "profiles each once, warm")
    parser.add_argument("--ncu-warmup", type=int, default=2,
                        help="warm-up rounds before the profiled round of --ncu-target")
    args = parser.parse_args()
    if args.out is None and not args.ncu_target:
        parser.error("--out is required (only --ncu-target writes no results)")
    variants = [int(v) for v in args.variants.split(",")]
    torch.manual_seed(0)
    if args.ncu_target:
        config, kernel_class = _config("int4_g128", 28672, 8192)
        layer = _layer(_random_checkpoint(config, "int4_g128"))
        kernel = kernel_class(config)
        kernel.process_weights_after_loading(layer)
        packed = Packed(kernel, layer, 28672)
        launches = [(torch.randn(m, 8192, device="cuda", dtype=torch.bfloat16),
                     torch.empty(m, 28672, device="cuda", dtype=torch.bfloat16), variant, shape)
                    for m, shape in ((128, (128, 2, 1)), (64, (64, 2, 1))) for variant in variants]
        # Round-major, so that the last round holds one launch of each (shape, variant) and
        # run_gpu.sh (KCM_TILE_NCU) can select it with --launch-skip / --launch-count.
        for _ in range(args.ncu_warmup + 1):
            for x, out, variant, shape in launches:
                packed.tile(x, out, variant, *shape)
            torch.cuda.synchronize()
        log(f"ncu target: {args.ncu_warmup + 1} rounds of {len(launches)} tile launches")
        return
    start = time.time()
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "command": " ".join(sys.argv)}
    rev = Path(".git_revision")
    result["git_revision"] = rev.read_text().strip() if rev.exists() else "unknown"
    result["copy_bandwidth_TBps"] = round(copy_bandwidth() / 1e12, 3)
    if not args.skip_checks:
        checks = check_formats(variants)
        result["checks"] = checks
        result["checks_failed"] = sum(not r["ok"] for r in checks)
        log(f"checks: {len(checks)} run, {result['checks_failed']} failed "
            f"({time.time() - start:.0f} s)")

    def save() -> None:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)

    save()
    result["timing"] = []
    for group in args.m.split(";"):
        m_values = tuple(int(v) for v in group.split(","))
        time_formats(args.replays, m_values, args.formats.split(","), variants, args.permuted_x,
                     args.stage_chunks, args.bulk_modes, result["timing"], save)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    result["chunk_us_fit"] = fit_chunk_times(result["timing"], sms)
    log(f"per-chunk times fitted to the planner's model (variant,bmx,rw: us): "
        f"{result['chunk_us_fit']}")
    save()
    log(f"done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
