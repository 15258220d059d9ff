"""Probe the stream kernel's load pipelines (register batches vs cp.async ring) in seconds.

Uses ``libkcm_probe.so`` (the kernel sources plus ``probe_shim.cu``, built with nvcc anywhere; no
torch extension build on the GPU machine) through ctypes: checks both pipelines against a float
reference on an int4 g128 layer, then times them against bf16 ``torch.matmul`` under CUDA-graph
replay with weights rotated beyond L2. Build (repo root)::

    nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -shared -Xcompiler -fPIC \
        -cudart static kernel_core_marlin/csrc/gemm_{bf16,fp16}.cu gpu/probe_shim.cu \
        -o gpu/libkcm_probe.so          (in plugins/marlin_plugin)

Run: ``PYTHONPATH=plugins/marlin_plugin python3 plugins/marlin_plugin/gpu/probe_pipelines.py``.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import statistics
import sys
from pathlib import Path

import torch

from kernel_core.testing import relative_error
from kernel_core_marlin.layout import pair_rows, repack_codes, round_up

LIB = ctypes.CDLL(str(Path(__file__).with_name("libkcm_probe.so")))
LIB.kcm_probe_gemm.restype = ctypes.c_int
LIB.kcm_probe_gemm.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 5 + [ctypes.c_int] * 14 + [
    ctypes.c_void_p]
ROTATE_BYTES = 150 * 2**20
INT4, FP4 = 0, 2


class Packed:
    def __init__(self, codes: torch.Tensor, group: int, fmt: int) -> None:
        n, k = codes.shape
        self.n, self.k, self.fmt, self.group = n, k, fmt, group
        self.qweight = repack_codes(codes, 4)
        groups = k // group
        scale = torch.rand(n, groups, device=codes.device) * 0.01 + 0.005
        if fmt == FP4:
            scale = scale * 2.0**126  # the bias compensation the NVFP4 tables carry
        self.scale = scale
        self.gscale = pair_rows(scale.to(torch.bfloat16))
        self.chan = torch.ones(n, device=codes.device) if fmt == FP4 else None

    def clone(self) -> Packed:
        other = object.__new__(Packed)
        other.__dict__.update(self.__dict__)
        other.qweight = self.qweight.clone()
        other.gscale = self.gscale.clone()
        return other


def gemm(x: torch.Tensor, w: Packed, out: torch.Tensor, cfg: tuple[int, ...]) -> None:
    mt, rows, wn, wk, pipeline = cfg
    code = LIB.kcm_probe_gemm(
        1, x.data_ptr(), w.qweight.data_ptr(), w.gscale.data_ptr(),
        w.chan.data_ptr() if w.chan is not None else None, out.data_ptr(), x.shape[0], w.n,
        x.shape[1], w.qweight.shape[1], w.qweight.shape[0], w.gscale.shape[1], w.group, 8,
        w.fmt, mt, rows, wn, wk, pipeline, torch.cuda.current_stream().cuda_stream)
    if code != 0:
        raise RuntimeError(f"launch {cfg} failed with cudaError {code}")


def graph_us(calls, replays: int = 10) -> float:
    for call in calls:
        call()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / len(calls))
    return statistics.median(times)


def mt_of(m: int) -> int:
    return 1 if m <= 8 else 2 if m <= 16 else 4 if m <= 32 else 8


def main() -> None:
    out_dir = Path(os.environ.get("OUT", "/tmp"))
    result: dict = {"device": torch.cuda.get_device_name(), "correctness": [], "timing": []}
    torch.manual_seed(0)
    # Correctness: int4 g128 (codes - 8) * scale, both pipelines, several M.
    n, k = 1000, 2048
    codes = torch.randint(0, 16, (round_up(n, 16), k), device="cuda", dtype=torch.uint8)
    w = Packed(codes, 128, INT4)
    w.n = n
    weight = (codes[:n].float() - 8) * w.scale[:n].to(torch.bfloat16).float().repeat_interleave(
        128, dim=1)
    for m in (1, 5, 16, 33, 64):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        ref = x.double() @ weight.double().T
        for cfg in [(mt_of(m), 1, 1, 8, 0), (mt_of(m), 1, 1, 4, 1), (mt_of(m), 2, 1, 4, 1),
                    (mt_of(m), 2, 1, 8, 1), (mt_of(m), 1, 2, 4, 1)]:
            out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
            try:
                gemm(x, w, out, cfg)
            except RuntimeError as exc:
                result["correctness"].append({"M": m, "config": cfg, "error": str(exc)})
                continue
            err = relative_error(out, ref)
            result["correctness"].append({"M": m, "config": cfg, "rel_error": err,
                                          "finite": bool(torch.isfinite(out).all())})
            print(f"check M={m} {cfg}: relative error {err:.2e}", file=sys.stderr, flush=True)
    # Timing.
    for n, k in ((28672, 8192), (8192, 8192)):
        codes = torch.randint(0, 16, (n, k), device="cuda", dtype=torch.uint8)
        bf16 = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
                for _ in range(max(1, math.ceil(ROTATE_BYTES / (n * k * 2))))]
        for fmt, group in ((INT4, 128), (FP4, 16)):
            base = Packed(codes, group, fmt)
            copies = max(1, math.ceil(ROTATE_BYTES / (n * k // 2)))
            ws = [base] + [base.clone() for _ in range(copies - 1)]
            for m in (1, 16, 32, 64):
                xs = [torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for _ in ws]
                outs = [torch.empty(m, n, device="cuda", dtype=torch.bfloat16) for _ in ws]
                reps = max(1, 8 // len(ws))
                bf16_us = graph_us([lambda b=b, x=xs[0]: torch.matmul(x, b.T) for b in bf16] * reps)
                row = {"N": n, "K": k, "fmt": "int4_g128" if fmt == INT4 else "fp4_g16", "M": m,
                       "bf16_us": round(bf16_us, 2), "variants_us": {}}
                mt = mt_of(m)
                for cfg in [(mt, 1, 1, 8, 0), (mt, 2, 1, 8, 0), (mt, 1, 1, 4, 1), (mt, 2, 1, 4, 1),
                            (mt, 1, 1, 8, 1), (mt, 2, 1, 8, 1), (mt, 1, 1, 2, 1)]:
                    calls = [lambda x=x, w=w, o=o, cfg=cfg: gemm(x, w, o, cfg)
                             for x, w, o in zip(xs, ws, outs)] * reps
                    try:
                        row["variants_us"][str(cfg)] = round(graph_us(calls), 2)
                    except RuntimeError as exc:
                        row["variants_us"][str(cfg)] = str(exc)
                best = min((v, c) for c, v in row["variants_us"].items() if isinstance(v, float))
                row["best"] = {"config": best[1], "us": best[0],
                               "speedup": round(bf16_us / best[0], 3)}
                print(json.dumps(row), file=sys.stderr, flush=True)
                result["timing"].append(row)
                (out_dir / "probe.json").write_text(json.dumps(result, indent=1))
            del ws
        del bf16
    (out_dir / "probe.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
