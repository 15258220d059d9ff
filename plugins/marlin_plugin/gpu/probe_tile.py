"""Probe the tile kernel (wgmma, M >= 64) on a GPU machine in one call, without the torch extension.

Uses ``libkcm_tile_probe.so`` (the tile and stream sources plus ``tile_probe_shim.cu``, built with
nvcc anywhere) through ctypes:

1. correctness: every format the plugin packs (processed by the plugin's own kernel classes),
   both activation dtypes, M in {64, 65, 128, 200, 256, 1000}, every tile shape and two splits,
   outputs poisoned with NaN, against a float64 reference with bias;
2. timing: int4 g128 and NVFP4 on the benchmark shapes, every tile shape and a range of splits per
   M, against bf16 ``torch.matmul`` and decode + cuBLAS, CUDA-graph replay medians with weights
   rotated beyond L2 (the helpers of benchmarks/bench_marlin.py).

Build (in plugins/marlin_plugin)::

    nvcc -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ \
        -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr \
        -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -shared -Xcompiler -fPIC \
        -cudart static kernel_core_marlin/csrc/{tile,gemm}_{bf16,fp16}.cu gpu/tile_probe_shim.cu \
        -o gpu/libkcm_tile_probe.so

Run (repo root): ``PYTHONPATH=.:plugins/marlin_plugin:benchmarks python3
plugins/marlin_plugin/gpu/probe_tile.py --out OUT.json``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
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
from kernel_core_marlin.tile import tile_plan
from kernel_core_marlin.kernels import (
    MarlinFp8LinearKernel,
    MarlinMPLinearKernel,
    MarlinMxfp8LinearKernel,
    MarlinMxFp4LinearKernel,
    MarlinNvFp4LinearKernel,
)

LIB = ctypes.CDLL(str(Path(__file__).with_name("libkcm_tile_probe.so")))
LIB.kcm_probe_tile.restype = ctypes.c_int
LIB.kcm_probe_tile.argtypes = [ctypes.c_int] * 5 + [ctypes.c_void_p] * 8 + [ctypes.c_int] * 8 + [
    ctypes.c_void_p]
LIB.kcm_probe_tile_clusters.restype = ctypes.c_int
LIB.kcm_probe_tile_clusters.argtypes = [ctypes.c_int] * 5
LIB.kcm_probe_tile_permuted_x.restype = ctypes.c_int
LIB.kcm_probe_tile_permuted_x.argtypes = [ctypes.c_int] * 4 + [ctypes.c_void_p] * 5 + [
    ctypes.c_int] * 8 + [ctypes.c_void_p]
LIB.kcm_probe_dequantize.restype = ctypes.c_int
LIB.kcm_probe_dequantize.argtypes = [ctypes.c_int] * 2 + [ctypes.c_void_p] * 6 + [
    ctypes.c_int] * 6 + [ctypes.c_void_p]
SHAPES = ((28672, 8192), (8192, 28672), (10240, 8192), (8192, 8192))
TILE_SHAPES = ((64, 1), (64, 2), (128, 1), (128, 2), (256, 1))
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


class Packed:
    """A processed layer's tensors and the plain ints the kernel takes."""

    def __init__(self, kernel, layer: torch.nn.Module, n: int) -> None:
        self.kernel, self.layer, self.n = kernel, layer, n
        self.zeros = getattr(layer, "weight_zero_point", None)
        self.gtab = getattr(layer, "weight_group_table", None)
        self.chan = getattr(layer, "weight_channel_scale", None)
        self.perm = getattr(layer, "weight_perm", None)

    def tile(self, x: torch.Tensor, out: torch.Tensor, bmx: int, rw: int, split: int,
             bias: torch.Tensor | None = None) -> None:
        w = self.layer.weight
        code = LIB.kcm_probe_tile(
            int(x.dtype == torch.bfloat16), self.kernel._fmt, bmx, rw, split, x.data_ptr(),
            w.data_ptr(), self.layer.weight_scale.data_ptr(), _ptr(self.zeros), _ptr(self.gtab),
            _ptr(self.chan), _ptr(bias), out.data_ptr(), x.shape[0], self.n, x.shape[1],
            w.shape[1], w.shape[0], self.layer.weight_scale.shape[1], self.kernel._group_size,
            self.kernel._zconst, torch.cuda.current_stream().cuda_stream)
        if code:
            raise RuntimeError(f"tile launch bmx={bmx} rw={rw} split={split}: cudaError {code}")

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


def check_formats() -> list[dict]:
    """Every format x M x tile shape x split against float64, NaN-poisoned outputs."""
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
            for bmx, rw in TILE_SHAPES:
                for split in sorted({1, min(3, chunks), min(8, chunks)}):
                    out = torch.full((m, config.out_features), float("nan"), device="cuda",
                                     dtype=config.act_dtype)
                    packed.tile(x2, out, bmx, rw, split, bias)
                    torch.cuda.synchronize()
                    finite = bool(torch.isfinite(out).all())
                    error = float((out.double() - expected).norm() / expected.norm())
                    ok = finite and error < 1e-2
                    rows.append({"format": name, "M": m, "bmx": bmx, "rw": rw, "split": split,
                                 "finite": finite, "rel_error": error, "ok": ok})
                    if not ok:
                        log(f"FAIL {name} M={m} bmx={bmx} rw={rw} split={split}: "
                            f"finite={finite} error={error:.3g}")
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


def time_formats(replays: int, m_values: tuple[int, ...], fmts: list[str],
                 rows: list[dict], save) -> None:
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
                limits_of[fmt] = {(b, r, sp): LIB.kcm_probe_tile_clusters(1, kernel._fmt, b, r, sp)
                                  for (b, r) in TILE_SHAPES for sp in range(1, 9)}
                log(f"{fmt}: clusters that fit at once by (bmx, rw, split): {limits_of[fmt]}")
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
                variants = {}
                chunks = layer.weight.shape[1]
                plan = tile_plan(m, n, chunks, limits)
                candidates = {(plan.bmx, plan.rw, plan.split)}
                for bmx, rw in TILE_SHAPES:
                    if bmx > max(64, 2 ** math.ceil(math.log2(m))):
                        continue
                    candidates |= {(bmx, rw, sp) for sp in splits_for(n, m, chunks, bmx, rw, sms)}
                for bmx, rw, split in sorted(candidates):
                    calls = [lambda p=p, x=x, o=o, a=(bmx, rw, split): p.tile(x, o, *a)
                             for p, x, o in zip(packs, xs, outs)] * reps
                    variants[f"tile bmx={bmx} rw={rw} split={split}"] = graph_time_us(
                        calls, replays)
                plan_name = f"tile bmx={plan.bmx} rw={plan.rw} split={plan.split}"
                tiles = {v: t for v, t in variants.items() if v.startswith("tile")}
                best_tile = min(tiles, key=tiles.get)
                # The best tile variant against decode + cuBLAS (the same decoded values, fp32
                # sums): a race or a wrong index would show far above bf16 rounding.
                bmx, rw, split = (int(f.split("=")[1]) for f in best_tile.split()[1:])
                out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
                packs[0].tile(xs[0], out, bmx, rw, split)
                ref = torch.matmul(xs[0], packs[0].dequantize(torch.bfloat16)[:, :k].T).double()
                check = float((out.double() - ref).norm() / ref.norm())
                finite = bool(torch.isfinite(out).all())
                if (bmx, rw) in ((64, 2), (128, 2), (256, 1)) and m <= 1024:
                    # The same tile shape on pre-permuted activations (16-byte copies), with and
                    # without the permutation pass; its output must equal the plain kernel's.
                    kp = chunks * 64
                    xps = [permuted_x(x, kp) for x in xs]
                    calls = [lambda p=p, x=x, o=o, a=(bmx, rw, split): p.tile_permuted_x(x, o, *a)
                             for p, x, o in zip(packs, xps, outs)] * reps
                    variants["permuted-x " + best_tile] = graph_time_us(calls, replays)
                    calls = [lambda p=p, x=x, o=o, a=(bmx, rw, split): p.tile_permuted_x(
                        permuted_x(x, kp), o, *a) for p, x, o in zip(packs, xs, outs)] * reps
                    variants["permute+permuted-x " + best_tile] = graph_time_us(calls, replays)
                    out_xp = torch.full_like(out, float("nan"))
                    packs[0].tile_permuted_x(xps[0], out_xp, bmx, rw, split)
                    if not torch.equal(out_xp, out):
                        log(f"MISMATCH permuted-x {fmt} {n}x{k} M={m}")
                        finite = False
                if m >= 256:
                    calls = [lambda p=p, x=x: torch.matmul(x, p.dequantize(torch.bfloat16)[:, :k].T)
                             for p, x in zip(packs, xs)] * max(1, 4 // copies)
                    variants["dequantize+matmul"] = graph_time_us(calls, replays)
                best = min(variants, key=variants.get)
                row = {"format": fmt, "N": n, "K": k, "M": m, "bf16_matmul_us": round(bf16_us, 2),
                       "best": best, "best_us": round(variants[best], 2),
                       "best_speedup": round(bf16_us / variants[best], 3),
                       "best_tile": best_tile, "best_tile_us": round(tiles[best_tile], 2),
                       "plan": plan_name, "plan_us": round(variants[plan_name], 2),
                       "plan_reason": plan.reason,
                       "plan_speedup": round(bf16_us / variants[plan_name], 3),
                       "best_tile_vs_dequant_matmul_rel_error": check, "best_tile_finite": finite,
                       "variants_us": {v: round(t, 2) for v, t in variants.items()},
                       "cluster_limits": {f"{b},{r},{sp}": c for (b, r, sp), c in limits.items()}}
                rows.append(row)
                save()
                if "permuted-x " + best_tile in variants:
                    print(f"    permuted-x {variants['permuted-x ' + best_tile]:7.1f}, with the "
                          f"permutation {variants['permute+permuted-x ' + best_tile]:7.1f}",
                          flush=True)
                print(f"{fmt:12s} {n:5d}x{k:<5d} M={m:<5d} bf16 {bf16_us:7.1f} best {best_tile} "
                      f"{tiles[best_tile]:7.1f} ({bf16_us / tiles[best_tile]:4.2f}x) plan "
                      f"{plan.bmx}/{plan.rw}/{plan.split} {variants[plan_name]:7.1f} "
                      f"({row['plan_speedup']:4.2f}x) err {check:.1e}"
                      + ("" if finite else " NONFINITE")
                      + (f" deq+mm {variants['dequantize+matmul']:7.1f}"
                         if "dequantize+matmul" in variants else ""), flush=True)
            del packs, layer
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--replays", type=int, default=10)
    parser.add_argument("--m", default="64,128,256;1024,4096",
                        help="M values; ';' separates passes over all formats and shapes")
    parser.add_argument("--formats", default="int4_g128,nvfp4_w4a16")
    parser.add_argument("--skip-checks", action="store_true")
    parser.add_argument("--ncu-target", action="store_true",
                        help="only run 128/2/1 at M=128 and 64/2/1 at M=64 on 28672x8192 int4, "
                             "three times each (for Nsight Compute)")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.ncu_target:
        config, kernel_class = _config("int4_g128", 28672, 8192)
        layer = _layer(_random_checkpoint(config, "int4_g128"))
        kernel = kernel_class(config)
        kernel.process_weights_after_loading(layer)
        packed = Packed(kernel, layer, 28672)
        for m, shape in ((128, (128, 2, 1)), (64, (64, 2, 1))):
            x = torch.randn(m, 8192, device="cuda", dtype=torch.bfloat16)
            out = torch.empty(m, 28672, device="cuda", dtype=torch.bfloat16)
            for _ in range(3):
                packed.tile(x, out, *shape)
        torch.cuda.synchronize()
        return
    start = time.time()
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "command": " ".join(sys.argv)}
    rev = Path(".git_revision")
    result["git_revision"] = rev.read_text().strip() if rev.exists() else "unknown"
    result["copy_bandwidth_TBps"] = round(copy_bandwidth() / 1e12, 3)
    if not args.skip_checks:
        checks = check_formats()
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
        time_formats(args.replays, m_values, args.formats.split(","), result["timing"], save)
    log(f"done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
