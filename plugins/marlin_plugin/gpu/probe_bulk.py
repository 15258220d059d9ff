"""Diagnose the bulk pipeline on the GPU in seconds (prebuilt ``libkcm_bulk.so``, no extension
build): its copy pipeline alone (consumers only wait for and release each stage) and its consumers
alone (no copies, no waits) against the full kernel, stages of 8, 4 and 2 warps' chunks, the
device's read-only and copy bandwidth and bf16 ``torch.matmul``, for int4 g128 at M = 1 and 16;
CUDA-graph replays over weight copies larger than L2. Checks the kernel against a float64
reference first. Build the library as ``probe_bulk_shim.cu`` says; run from the repo root:
``PYTHONPATH=plugins/marlin_plugin python3 plugins/marlin_plugin/gpu/probe_bulk.py``
(``--ncu-target``: only the launches Nsight Compute profiles, see ``NCU_TARGETS``; ``--ncu-count``
prints how many a round holds; ``--grid-sweep``: only the grid and K sweep of ``grid_sweep``).
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
import bench_marlin as bench  # noqa: E402

from kernel_core.testing import relative_error  # noqa: E402
from kernel_core_marlin.layout import pair_rows, repack_codes  # noqa: E402

#: KCM_BULK_LIB: another build of the shim (libkcm_bulk_trace.so: with the per-block timeline of
#: pipeline 6, whose recording slows its consumers ~5%) to compare; KCM_BULK_JSON: the result
#: file's name under $OUT.
LIB = ctypes.CDLL(str(Path(__file__).with_name(os.environ.get("KCM_BULK_LIB", "libkcm_bulk.so"))))
RESULT_NAME = os.environ.get("KCM_BULK_JSON", "probe_bulk.json")
LIB.kcm_probe_bulk.restype = ctypes.c_int
LIB.kcm_probe_bulk.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int] * 13 + [ctypes.c_void_p]
LIB.kcm_probe_bulk_trace.restype = ctypes.c_int
LIB.kcm_probe_bulk_set_grid.restype = ctypes.c_int
LIB.kcm_probe_bulk_set_grid.argtypes = [ctypes.c_int]
LIB.kcm_probe_bulk_trace.argtypes = [ctypes.c_void_p]
TRACE_SLOTS = LIB.kcm_probe_bulk_trace_slots()
#: Where the trace's slots start (stream_gemm.cuh, bulk_trace): consumer start / end, the waits
#: for each ring position (before, after), the producer's fills.
TRACE_WAITS, TRACE_FILLS = 2, 128
INT4 = 0
GROUP = 128
#: ``gemm(grid=EVEN_GRID)``: as few blocks as keep the widest block's row tiles (stream_gemm.cuh,
#: kBulkEvenGrid): 128 blocks of exactly k tiles on the benchmark layers (N16 = 128 k), where the
#: default 132 give some blocks k - 1.
EVEN_GRID = -1


def packed(n: int, k: int) -> dict:
    codes = torch.randint(0, 16, (n, k), device="cuda", dtype=torch.uint8)
    scale = torch.rand(n, k // GROUP, device="cuda") * 0.01 + 0.005
    return {"codes": codes, "scale": scale, "qweight": repack_codes(codes, 4),
            "gscale": pair_rows(scale.to(torch.bfloat16)), "n": n, "k": k}


def gemm(x: torch.Tensor, w: dict, out: torch.Tensor, mt: int, cap: int, decode: int,
         consumers: int = 8, pipeline: int = 2, grid: int = 0) -> None:
    """One launch: pipeline 2 (default consumer) or 6 (the plugin's M <= 16 default), ``cap`` row
    tiles per pass at most, ``consumers`` warps (a stage holds that many chunks per tile),
    ``decode`` 0 for the copy pipeline alone, 2 for pipeline 6's consumers alone (no copies, no
    waits: the output is garbage); ``grid`` 0 one block per SM, a positive count at most that
    many blocks, :data:`EVEN_GRID` as few as keep the widest block's tiles."""
    assert LIB.kcm_probe_bulk_set_grid(grid) == 0
    code = LIB.kcm_probe_bulk(
        x.data_ptr(), w["qweight"].data_ptr(), w["gscale"].data_ptr(), None, out.data_ptr(),
        x.shape[0], w["n"], w["k"], w["qweight"].shape[1], w["qweight"].shape[0],
        w["gscale"].shape[1], GROUP, INT4, mt, consumers, cap, decode, pipeline,
        torch.cuda.current_stream().cuda_stream)
    if code != 0:
        raise RuntimeError(f"launch failed with cudaError {code}")


def timeline(x: torch.Tensor, w: dict, out: torch.Tensor, mt: int, us: float) -> dict:
    """One pipeline-6 launch with its per-block timeline (SM clocks from the consumers' start),
    summarized as medians over blocks in microseconds, at the clock rate that makes the median
    block's span the launch's measured time ``us``: the wait for the first stage, the other
    waits for stages in all, the time from the last stage's arrival to the outputs stored, and
    when the producer issued each fill."""
    sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    trace = torch.full((sms, TRACE_SLOTS), -1, device="cuda", dtype=torch.int64)
    torch.cuda.synchronize()
    assert LIB.kcm_probe_bulk_trace(trace.data_ptr()) == 0
    gemm(x, w, out, mt, 16, 1, 8, 6)
    torch.cuda.synchronize()
    assert LIB.kcm_probe_bulk_trace(None) == 0
    rows = [[int(v) for v in row] for row in trace.cpu() if row[0] >= 0]
    med = statistics.median
    span = med(r[1] - r[0] for r in rows)
    per_us = span / us
    def waits(r: list) -> list:
        """(start from the consumers' start, length) of each recorded ring wait of a block."""
        pairs = []
        for it in range((TRACE_FILLS - TRACE_WAITS) // 2):
            before, after = r[TRACE_WAITS + 2 * it], r[TRACE_WAITS + 2 * it + 1]
            if before < 0:
                break
            pairs.append((before - r[0], after - before))
        return pairs
    block_waits = [waits(r) for r in rows]
    first = [w[0][1] for w in block_waits]
    rest = [sum(wait for _, wait in w[1:]) for w in block_waits]
    tail = [r[1] - r[0] - sum(w[-1]) for r, w in zip(rows, block_waits)]
    fills = [[r[TRACE_FILLS + i] - r[0] for i in range(TRACE_SLOTS - TRACE_FILLS)
              if r[TRACE_FILLS + i] >= 0] for r in rows]
    return {"blocks": len(rows), "clocks_per_us": round(per_us, 1),
            "consumer_span_us": round(span / per_us, 2),
            "first_stage_wait_us": round(med(first) / per_us, 2),
            "other_stage_waits_us": round(med(rest) / per_us, 2),
            "stages_waited_for": len(block_waits[0]),
            "last_stage_to_stored_us": round(med(tail) / per_us, 2),
            "fill_issue_us_median_block": [round(med(f[i] for f in fills) / per_us, 2)
                                           for i in range(min(len(f) for f in fills))]}


def _revision() -> str:
    """The carried ``.git_revision`` (the device copy has no ``.git``)."""
    path = Path(__file__).resolve().parents[3] / ".git_revision"
    return path.read_text().strip() if path.exists() else "unknown"


def read_bandwidth() -> float:
    """Bytes per second of a sum over 1 GiB of bf16 (reads only), median of 20."""
    data = torch.randn(1 << 29, device="cuda", dtype=torch.bfloat16)
    times = []
    for _ in range(23):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        data.sum()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000.0)
    return data.numel() * 2 / statistics.median(times[3:])


#: ``--ncu-target`` launches, one per round each: (N, K, M, decode) of pipeline 6 on 8 consumer
#: warps, the whole kernel and its consumers alone on a 14-tile and a 4-tile shape at M=1,
#: consumers alone at M=16 (the plugin takes 16 warps on the 4-tile one since v28: not profiled).
NCU_TARGETS = ((28672, 8192, 1, 1), (28672, 8192, 1, 2), (8192, 28672, 1, 2), (28672, 8192, 16, 2))


def ncu_target(warmup: int) -> None:
    """Plain launches of NCU_TARGETS, ``warmup`` rounds and one more, for Nsight Compute
    (``run_gpu.sh`` step ``KCM_BULK_NCU`` profiles the last round)."""
    launches = []
    for n, k, m, decode in NCU_TARGETS:
        w = packed(n, k)
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        launches.append((x, w, out, 1 if m <= 8 else 2, decode))
        print(f"target {len(launches) - 1}: {n}x{k} M={m} decode {decode}", file=sys.stderr)
    for _ in range(warmup + 1):
        for x, w, out, mt, decode in launches:
            gemm(x, w, out, mt, 16, decode, 8, 6)
        torch.cuda.synchronize()


#: ``--grid-sweep`` (NOTES.md v37): on 28672 x N16 = 1792 row tiles at M=1, the copy pipeline alone
#: (pipeline 2, decode 0) and pipeline 6 at these grids (0: 132 blocks of 13-14 tiles; EVEN_GRID:
#: 128 blocks of 14; 64 and 32 blocks: 2 and 4 passes of the same 14-tile stages) and K's (each at
#: grids 0 and EVEN_GRID): whether a block's copies stream at a per-SM rate that stays put as
#: blocks drop out (then the copy path of an SM is the cap) or at the device's rate shared by the
#: blocks (then the widest block's bytes over that rate plus a fixed cost per launch set the time).
SWEEP_N = 28672
SWEEP_GRIDS = (0, EVEN_GRID, 64, 32)
SWEEP_KS = (2048, 4096, 8192, 16384)


def planned_blocks(n16: int, sms: int, grid: int) -> int:
    """The block count plan_bulk takes for ``grid`` (stream_gemm.cuh)."""
    blocks = min(n16, sms)
    if grid == EVEN_GRID:
        widest = -(-n16 // blocks)
        return -(-n16 // widest)
    return min(blocks, grid) if grid > 0 else blocks


def rotated(base: dict) -> tuple[list[dict], int, int]:
    """Copies of a packed layer totalling more than the L2 (bench.ROTATE_BYTES), the layer's
    bytes, and how many times a graph repeats the copies' calls to hold at least eight."""
    wbytes = base["qweight"].numel() * 4 + base["gscale"].numel() * 2
    copies = max(1, math.ceil(bench.ROTATE_BYTES / wbytes))
    ws = [base] + [dict(base, qweight=base["qweight"].clone(), gscale=base["gscale"].clone())
                   for _ in range(copies - 1)]
    return ws, wbytes, max(1, 8 // copies)


def grid_sweep(result: dict, out_dir: Path) -> None:
    sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    result["grid_sweep"] = []
    for k in SWEEP_KS:
        ws, wbytes, reps = rotated(packed(SWEEP_N, k))
        xs = [torch.randn(1, k, device="cuda", dtype=torch.bfloat16) for _ in ws]
        outs = [torch.empty(1, SWEEP_N, device="cuda", dtype=torch.bfloat16) for _ in ws]
        n16 = SWEEP_N // 16
        for grid in SWEEP_GRIDS if k == 8192 else (0, EVEN_GRID):
            blocks = planned_blocks(n16, sms, grid)
            widest = -(-n16 // blocks)
            row = {"N": SWEEP_N, "K": k, "M": 1, "grid": grid, "blocks": blocks,
                   "widest_block_tiles": widest, "weight_bytes": wbytes, "us": {}, "TBps": {},
                   "widest_block_B_per_ns": {}}
            for name, decode, pipeline in (("copy pipeline only", 0, 2), ("pipeline 6", 1, 6)):
                calls = [lambda x=x, w=w, o=o, dec=decode, pl=pipeline, g=grid:
                         gemm(x, w, o, 1, 16, dec, 8, pl, g)
                         for x, w, o in zip(xs, ws, outs)] * reps
                us = bench.graph_time_us(calls, 12)
                row["us"][name] = round(us, 2)
                row["TBps"][name] = round(wbytes / us / 1e6, 3)
                row["widest_block_B_per_ns"][name] = round(wbytes * widest / n16 / us / 1e3, 1)
            print(json.dumps(row), file=sys.stderr, flush=True)
            result["grid_sweep"].append(row)
            (out_dir / RESULT_NAME).write_text(json.dumps(result, indent=1))
        del ws, xs, outs
        torch.cuda.empty_cache()


def main() -> None:
    if "--ncu-target" in sys.argv:
        ncu_target(2)
        return
    if "--ncu-count" in sys.argv:
        print(len(NCU_TARGETS))
        return
    out_dir = Path(os.environ.get("OUT", "/tmp"))
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    result: dict = {"device": torch.cuda.get_device_name(),
                    "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                    "command": " ".join(sys.argv), "library": LIB._name,
                    "git_revision": os.environ.get("KCM_GIT_REV") or _revision(),
                    "versions": {"python": platform.python_version(), "torch": torch.__version__,
                                 "cuda": torch.version.cuda},
                    "checks": [], "timing": []}
    result["copy_bandwidth_TBps"] = round(bench.copy_bandwidth() / 1e12, 3)
    result["read_bandwidth_TBps"] = round(read_bandwidth() / 1e12, 3)
    print(json.dumps(result), file=sys.stderr, flush=True)
    if "--grid-sweep" in sys.argv:
        grid_sweep(result, out_dir)
        return
    w = packed(8192, 8192)
    weight = (w["codes"].double() - 8) * w["scale"].to(torch.bfloat16).double().repeat_interleave(
        GROUP, dim=1)
    for m, mt in ((1, 1), (5, 1), (16, 2)):
        x = torch.randn(m, 8192, device="cuda", dtype=torch.bfloat16)
        ref = x.double() @ weight.T
        for cap, consumers, pipeline, grid in ((16, 8, 2, 0), (4, 8, 2, 0), (2, 8, 2, 0),
                                               (16, 8, 6, 0), (16, 4, 6, 0), (16, 16, 6, 0),
                                               (16, 8, 6, EVEN_GRID), (16, 8, 2, 66),
                                               (16, 8, 6, 44)):
            if consumers == 16 and mt > 1:
                continue  # 16 consumer warps serve one M tile
            out = torch.full((m, 8192), float("nan"), device="cuda", dtype=torch.bfloat16)
            gemm(x, w, out, mt, cap, 1, consumers, pipeline, grid)
            err = relative_error(out, ref)
            result["checks"].append({"M": m, "tiles_cap": cap, "consumers": consumers,
                                     "pipeline": pipeline, "grid": grid, "rel_error": err})
    del weight
    print(json.dumps(result["checks"]), file=sys.stderr, flush=True)
    for n, k in ((28672, 8192), (8192, 28672), (8192, 8192)):
        ws, wbytes, reps = rotated(packed(n, k))
        bf16 = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
        for m, mt in ((1, 1), (16, 2)):
            xs = [torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for _ in ws]
            outs = [torch.empty(m, n, device="cuda", dtype=torch.bfloat16) for _ in ws]
            row = {"N": n, "K": k, "M": m, "weight_bytes": wbytes,
                   "bf16_matmul_us": round(bench.graph_time_us(
                       [lambda: torch.matmul(xs[0], bf16.T)] * 8, 12), 2), "us": {}}
            # (cap, decode, consumers, pipeline[, grid]). A stage holds `consumers` chunks of each of
            # the pass's tiles (one per warp; two or four at fewer than 8 tiles per pass), so the
            # copy-only rows with 4 and 2 warps measure the ring with half- and quarter-size
            # stages (and up to twice / four times as many of them) on the same bytes.
            variants = {"pipeline 6": (16, 1, 8, 6), "pipeline 6, consumers alone": (16, 2, 8, 6),
                        "pipeline 6, 4 warps": (16, 1, 4, 6),
                        "pipeline 6, 16 warps": (16, 1, 16, 6),
                        "pipeline 6, 16 warps, consumers alone": (16, 2, 16, 6),
                        "pipeline 6, 4 warps, consumers alone": (16, 2, 4, 6),
                        "bulk": (16, 1, 8, 2), "copy pipeline only": (16, 0, 8, 2),
                        "copy pipeline only, 4-warp stages": (16, 0, 4, 2),
                        "copy pipeline only, 2-warp stages": (16, 0, 2, 2),
                        "copy pipeline only, even grid": (16, 0, 8, 2, EVEN_GRID),
                        "pipeline 6, even grid": (16, 1, 8, 6, EVEN_GRID)}
            for name, (cap, decode, consumers, pipeline, *grid) in variants.items():
                if consumers == 16 and (mt > 1 or n > 8192):
                    continue  # one M tile, blocks of at most one tile group (4 tiles)
                calls = [lambda x=x, w=w, o=o, cap=cap, dec=decode, c=consumers, pl=pipeline,
                         g=(grid or [0])[0]: gemm(x, w, o, mt, cap, dec, c, pl, g)
                         for x, w, o in zip(xs, ws, outs)] * reps
                us = bench.graph_time_us(calls, 12)
                row["us"][name] = round(us, 2)
                row.setdefault("TBps", {})[name] = round(wbytes / us / 1e6, 3)
            if TRACE_SLOTS:
                row["pipeline 6 timeline"] = timeline(xs[0], ws[0], outs[0], mt,
                                                      row["us"]["pipeline 6"])
            print(json.dumps(row), file=sys.stderr, flush=True)
            result["timing"].append(row)
            (out_dir / RESULT_NAME).write_text(json.dumps(result, indent=1))
        del ws, bf16
        torch.cuda.empty_cache()
    (out_dir / RESULT_NAME).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
