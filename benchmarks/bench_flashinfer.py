"""The FlashInfer plugin's ``apply_weights`` against calling FlashInfer directly and against torch.

Candidates per family, shape and M (bf16 activations in, bf16 out):

fp8 (per-tensor W8A8):
  ``plugin_static`` / ``plugin_dynamic``  the plugin kernel (static / dynamic activation scale)
  ``direct_static`` / ``direct_dynamic``  the same work written by hand against FlashInfer: our
        quantizer (the plugin's; dynamic: amax then quantize), an output tensor, FlashInfer's
        cuBLASLt FP8 binding (what ``bmm_fp8(backend="cublas")`` runs at tactic -1) and the
        ``[M, N]`` view of its batched output; the weight's ``[1, K, N]`` view and the workspace
        made once, scales as plain tensors, as a careful caller would. ``plugin_X - direct_X``
        is the wrapper's cost.
  ``direct_static_parameters``  ``direct_static`` handed the layer's ``nn.Parameter`` scales
        instead of plain tensors: what taking a Parameter costs in Triton's launcher and
        tvm-ffi (the plugin hands over plain aliases)
  ``fi_bmm_fp8_static``  our quantizer + the public ``flashinfer.bmm_fp8(backend="cublas")``
  ``torch_scaled_mm``    ``torch._scaled_mm`` per tensor on pre-quantized FP8 operands (GEMM alone)
  ``torch_matmul_bf16``  ``torch.matmul`` with a bf16 weight
fp8_block (DeepSeek 128x128 blocks):
  ``plugin``             the plugin kernel
  ``direct``             by hand: the scale buffer in the kernel's layout, our 1x128 quantizer,
                         FlashInfer's runner in FP8-input mode (the overhead baseline)
  ``fi_public``          ``flashinfer.gemm.fp8_blockscale_gemm_sm90`` on bf16 input (its own
                         quantizer; eager only: it allocates and configures a workspace per call)
  ``torch_matmul_bf16``  ``torch.matmul`` with a bf16 weight

Timings, microseconds per call:
  ``eager_us``  GPU time of back-to-back eager calls (CUDA events; launch gaps included), median
                of 7 batches
  ``graph_us``  CUDA-graph replay of the same calls (M <= 256), median of 7 replays
  ``host_us``   host time to enqueue one call: ``perf_counter`` around ``--calls`` back-to-back
                calls with no synchronisation inside (a synchronise before each batch)
  ``wall_us``   the same batch up to the synchronise at its end: what a caller waits per call
``host_us`` / ``wall_us`` are medians over ``--reps`` rounds (``host_min_us``: the minimum). Each
round times every candidate of the row once, in a fresh random order, each timed batch after 4
untimed calls of the same candidate, so neither drift of the host nor what ran just before
favours one candidate; ``overhead_us`` gives per pair the median (and 25th / 75th percentiles)
over rounds of the per-round difference ``host(plugin) - host(direct)``, and ``eager_us`` /
``graph_us`` differences. Python's garbage collector is off during the rounds. Weights and activations rotate over enough copies to exceed 2x the L2 cache, so no
call reads a warm weight. Writes JSON to ``--out`` after every shape.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from kernel_core.bench.timing import capture_graph
from kernel_core.families.fp8 import FP8ScaledMMLinearLayerConfig
from kernel_core.families.fp8_block import Fp8BlockLinearLayerConfig
from kernel_core.formats.fp8 import quantize_fp8, quantize_fp8_block
from kernel_core_flashinfer import ops
from kernel_core_flashinfer.environment import flashinfer
from kernel_core_flashinfer.kernels import (
    FlashInferFp8BlockScaledMMLinearKernel,
    FlashInferFp8ScaledMMLinearKernel,
)
from kernel_core_flashinfer.triton_kernels import quantize_per_tensor, quantize_per_token_group

FP8_SHAPES = ((8192, 8192), (28672, 8192), (8192, 28672))
BLOCK_SHAPES = ((7168, 18432), (18432, 7168), (4096, 7168), (2112, 7168))
M_VALUES = (1, 16, 64, 128, 256, 1024, 4096)
GRAPH_MAX_M = 256
BATCHES = 7
WARM_CALLS = 4
OVERHEAD_PAIRS = {
    "fp8": (("plugin_static", "direct_static"), ("plugin_dynamic", "direct_dynamic")),
    "fp8_block": (("plugin", "direct"),),
}

Call = Callable[[int], object]


def copies_for(nbytes: int) -> int:
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    return max(2, math.ceil(2 * l2 / max(nbytes, 1)))


def time_eager(fn: Call, copies: int) -> float:
    calls = copies * max(1, 24 // copies)
    times = []
    for _ in range(BATCHES):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for j in range(calls):
            fn(j % copies)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / calls)
    return statistics.median(times)


def time_graph(fn: Call, copies: int) -> float:
    calls = copies * max(1, 24 // copies)
    graph = capture_graph([lambda j=j: fn(j % copies) for j in range(calls)])
    times = []
    for _ in range(BATCHES):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / calls)
    del graph
    return statistics.median(times)


def host_rounds(
    candidates: dict[str, Call], copies: int, calls: int, reps: int
) -> dict[str, list[tuple[float, float]]]:
    """Per candidate, ``reps`` samples of (host us, wall us) per call. Each round visits the
    candidates in a fresh random order (fixed seed), and each timed batch follows ``WARM_CALLS``
    untimed calls of the same candidate and a synchronise: whatever ran before (another
    candidate's code, a GPU backlog to wait out) cannot favour one side of a pair."""
    names = list(candidates)
    order = random.Random(1234)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    gc.collect()
    gc.disable()
    try:
        for _ in range(reps):
            order.shuffle(names)
            for name in names:
                fn = candidates[name]
                for j in range(WARM_CALLS):
                    fn(j % copies)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for j in range(calls):
                    fn(j % copies)
                t1 = time.perf_counter()
                torch.cuda.synchronize()
                t2 = time.perf_counter()
                samples[name].append(((t1 - t0) * 1e6 / calls, (t2 - t0) * 1e6 / calls))
    finally:
        gc.enable()
    return samples


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def measure(
    family: str, candidates: dict[str, Call], copies: int, m: int, eager_only: set[str],
    calls: int, reps: int,
) -> dict:
    row: dict[str, dict] = {}
    for name, fn in candidates.items():  # warm-up: JIT builds, plans, cuBLASLt heuristics
        try:
            for i in range(2 * copies):
                fn(i % copies)
            torch.cuda.synchronize()
        except Exception as exc:
            row[name] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    working = {name: fn for name, fn in candidates.items() if name not in row}
    if m >= 1024:  # GPU-bound: fewer rounds keep the run short; host time does not depend on M
        calls, reps = max(4, calls // 4), max(7, reps // 2)
    samples = host_rounds(working, copies, calls, reps)
    for name, fn in working.items():
        hosts = [host for host, _ in samples[name]]
        entry: dict[str, float | str] = {
            "host_us": statistics.median(hosts),
            "host_min_us": min(hosts),
            "wall_us": statistics.median(wall for _, wall in samples[name]),
        }
        try:
            entry["eager_us"] = time_eager(fn, copies)
            if m <= GRAPH_MAX_M and name not in eager_only:
                entry["graph_us"] = time_graph(fn, copies)
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        row[name] = entry
    overhead = {}
    for plugin, direct in OVERHEAD_PAIRS[family]:
        if plugin in samples and direct in samples:
            diffs = [p[0] - d[0] for p, d in zip(samples[plugin], samples[direct])]
            q1, q2, q3 = quartiles(diffs)
            # The baseline must do the plugin's work: the same inputs give the same bits.
            same = bool(torch.equal(candidates[plugin](0), candidates[direct](0)))
            overhead[f"{plugin}-{direct}"] = {
                "median_us": q2, "p25_us": q1, "p75_us": q3, "same_output": same,
            }
            for key in ("eager_us", "graph_us"):
                if key in row[plugin] and key in row[direct]:
                    overhead[f"{plugin}-{direct}"][key] = row[plugin][key] - row[direct][key]
    return {"calls_per_round": calls, "rounds": reps, **row, "overhead_us": overhead}


def fp8_rows(n: int, k: int, gen: torch.Generator, m_values: tuple[int, ...], calls: int,
             reps: int) -> list[dict]:
    fi = flashinfer()
    copies = copies_for(n * k)
    weights = [(torch.randn(n, k, generator=gen, device="cuda") * 0.02) for _ in range(copies)]
    quantized = [quantize_fp8(w, "tensor") for w in weights]
    bf16_weights = [w.to(torch.bfloat16) for w in weights]
    del weights
    layers = {}
    for mode in ("static", "dynamic"):
        config = FP8ScaledMMLinearLayerConfig(
            weight_shape=(n, k), weight_scale_granularity="tensor", input_scale=mode,
            input_scale_granularity="tensor",
        )
        kernel = FlashInferFp8ScaledMMLinearKernel(config)
        mods = []
        for wq, ws in quantized:
            layer = torch.nn.Module()
            layer.weight = torch.nn.Parameter(wq, requires_grad=False)
            layer.weight_scale = torch.nn.Parameter(ws.clone(), requires_grad=False)
            if mode == "static":
                layer.input_scale = torch.nn.Parameter(
                    torch.tensor([0.05], device="cuda"), requires_grad=False)
            kernel.process_weights_after_loading(layer)
            mods.append(layer)
        layers[mode] = (kernel, mods)
    # The by-hand baseline's one-time setup: FlashInfer's binding, the weights' [1, K, N] views,
    # fp32 [1] scales, the workspace (FlashInfer's size, as the plugin shares it).
    bmm = ops.cublas_fp8_gemm()
    weight_t = [wq.t().unsqueeze(0) for wq, _ in quantized]
    weight_scales = [ws.reshape(1).float().contiguous() for _, ws in quantized]
    workspace = ops.cublas_workspace(torch.device("cuda", torch.cuda.current_device()))
    ks, ls = layers["static"]
    kd, ld = layers["dynamic"]
    rows = []
    for m in m_values:
        xs = [torch.randn(m, k, generator=gen, device="cuda").to(torch.bfloat16)
              for _ in range(copies)]
        a_scale = torch.tensor([0.05], device="cuda")
        qs = [quantize_per_tensor(x, a_scale)[0][0] for x in xs]

        def direct(i: int, scale: torch.Tensor | None, weight_scale: torch.Tensor) -> torch.Tensor:
            x = xs[i]
            q, s = quantize_per_tensor(x, scale)
            out = torch.empty((1, m, n), dtype=torch.bfloat16, device=x.device)
            bmm(q, weight_t[i], out, s, weight_scale, workspace)
            return out[0]

        def fi_bmm_fp8_static(i: int) -> object:
            q, s = quantize_per_tensor(xs[i], a_scale)
            return fi.bmm_fp8(q, weight_t[i], s, weight_scales[i], torch.bfloat16,
                              backend="cublas")

        candidates: dict[str, Call] = {
            "plugin_static": lambda i: ks.apply_weights(ls[i], xs[i]),
            "direct_static": lambda i: direct(i, a_scale, weight_scales[i]),
            # the same with the layer's nn.Parameter scales instead of plain tensors
            "direct_static_parameters": lambda i: direct(i, ls[i].input_scale, ls[i].weight_scale),
            "plugin_dynamic": lambda i: kd.apply_weights(ld[i], xs[i]),
            "direct_dynamic": lambda i: direct(i, None, weight_scales[i]),
            "fi_bmm_fp8_static": fi_bmm_fp8_static,
            "torch_scaled_mm": lambda i: torch._scaled_mm(
                qs[i], quantized[i][0].t(), a_scale, weight_scales[i], out_dtype=torch.bfloat16),
            "torch_matmul_bf16": lambda i: torch.matmul(xs[i], bf16_weights[i].t()),
        }
        row = {"family": "fp8", "N": n, "K": k, "M": m, "copies": copies}
        row.update(measure("fp8", candidates, copies, m, set(), calls, reps))
        rows.append(row)
        print(summary(row), file=sys.stderr, flush=True)
    return rows


def block_rows(n: int, k: int, gen: torch.Generator, m_values: tuple[int, ...], calls: int,
               reps: int) -> list[dict]:
    fi = flashinfer()
    copies = copies_for(n * k)
    config = Fp8BlockLinearLayerConfig(weight_shape=(n, k))
    kernel = FlashInferFp8BlockScaledMMLinearKernel(config)
    layers, bf16_weights = [], []
    for _ in range(copies):
        w = torch.randn(n, k, generator=gen, device="cuda") * 0.02
        wq, ws = quantize_fp8_block(w)
        bf16_weights.append(w.to(torch.bfloat16))
        layer = torch.nn.Module()
        layer.weight = torch.nn.Parameter(wq, requires_grad=False)
        layer.weight_scale = torch.nn.Parameter(ws, requires_grad=False)
        kernel.process_weights_after_loading(layer)
        layers.append(layer)
    run_gemm = ops.blockscale_runner().run_gemm
    weights = [layer.weight.detach() for layer in layers]  # plain tensors, as a caller holds them
    weight_scales = [layer.weight_scale.detach() for layer in layers]
    rows = []
    for m in m_values:
        xs = [torch.randn(m, k, generator=gen, device="cuda").to(torch.bfloat16)
              for _ in range(copies)]
        padded = -(-m // 4) * 4

        def direct(i: int) -> torch.Tensor:
            x = xs[i]
            out = torch.empty((m, n), dtype=torch.bfloat16, device=x.device)
            scales = torch.empty_strided((padded, k // 128), (1, padded), dtype=torch.float32,
                                         device=x.device)
            q = quantize_per_token_group(x, scales)
            run_gemm(q, weights[i], out, scales, weight_scales[i])
            return out

        candidates: dict[str, Call] = {
            "plugin": lambda i: kernel.apply_weights(layers[i], xs[i]),
            "direct": direct,
            "fi_public": lambda i: fi.gemm.fp8_blockscale_gemm_sm90(
                xs[i], weights[i], None, weight_scales[i], out_dtype=torch.bfloat16),
            "torch_matmul_bf16": lambda i: torch.matmul(xs[i], bf16_weights[i].t()),
        }
        row = {"family": "fp8_block", "N": n, "K": k, "M": m, "copies": copies}
        row.update(measure("fp8_block", candidates, copies, m, {"fi_public"}, calls, reps))
        rows.append(row)
        print(summary(row), file=sys.stderr, flush=True)
    return rows


def summary(row: dict) -> str:
    cells = []
    for name, entry in row.items():
        if isinstance(entry, dict) and name != "overhead_us":
            keys = ("eager_us", "graph_us", "host_us")
            parts = [f"{entry[key]:.1f}" for key in keys if key in entry]
            cells.append(f"{name}={'/'.join(parts) or entry.get('error', '?')[:40]}")
    for pair, values in row["overhead_us"].items():
        cells.append(f"overhead[{pair}]={values['median_us']:+.2f}"
                     f" ({values['p25_us']:+.2f}..{values['p75_us']:+.2f})")
    return f"{row['family']} N={row['N']} K={row['K']} M={row['M']}: " + " ".join(cells)


def overhead_summary(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per pair, over all rows: the median and the largest of the per-row median host overheads,
    and the median eager / graph GPU-time differences."""
    collected: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for pair, values in row["overhead_us"].items():
            bucket = collected.setdefault(pair, {})
            for key in ("median_us", "eager_us", "graph_us"):
                if key in values:
                    bucket.setdefault(key, []).append(values[key])
    return {
        pair: {
            "host_median_us": statistics.median(bucket["median_us"]),
            "host_max_row_median_us": max(bucket["median_us"]),
            "eager_median_us": statistics.median(bucket["eager_us"]),
            **({"graph_median_us": statistics.median(bucket["graph_us"])}
               if "graph_us" in bucket else {}),
            "rows": len(bucket["median_us"]),
        }
        for pair, bucket in collected.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--families", default="fp8,fp8_block")
    parser.add_argument("--m", default=",".join(str(m) for m in M_VALUES),
                        help="comma-separated batch sizes")
    parser.add_argument("--calls", type=int, default=40, help="calls per host-timing batch")
    parser.add_argument("--reps", type=int, default=25, help="host-timing rounds")
    args = parser.parse_args()
    m_values = tuple(int(m) for m in args.m.split(","))
    fi = flashinfer()
    import triton

    report = {
        "benchmark": "benchmarks/bench_flashinfer.py",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_revision": os.environ.get("KC_GIT_REVISION", "unknown"),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": torch.cuda.get_device_name(),
        "versions": {
            "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "triton": triton.__version__, "flashinfer": fi.__version__,
        },
        "units": "microseconds per call",
        "method": __doc__.split("Timings, microseconds per call:")[1].strip(),
        "summary_line_format": "eager/graph/host us; overhead = host(plugin) - host(direct)",
        "rows": [],
    }
    gen = torch.Generator(device="cuda").manual_seed(0)
    families = args.families.split(",")
    work = [("fp8", s) for s in FP8_SHAPES if "fp8" in families]
    work += [("fp8_block", s) for s in BLOCK_SHAPES if "fp8_block" in families]
    for family, (n, k) in work:
        make = fp8_rows if family == "fp8" else block_rows
        report["rows"].extend(make(n, k, gen, m_values, args.calls, args.reps))
        report["overhead_summary"] = overhead_summary(report["rows"])
        torch.cuda.empty_cache()
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=1)
    print(json.dumps(report.get("overhead_summary", {}), indent=1), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
