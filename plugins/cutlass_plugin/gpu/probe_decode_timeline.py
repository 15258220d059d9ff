"""Per-CTA timeline of the CUTLASS decode GEMM: where its fixed cost goes (NOTES.md v17).

The decode apply on 8192 x 8192 is ~1.4 us of fixed cost behind bf16 matmul's (the GEMM alone:
4.5 us over its stream, cuBLAS's bf16 3.1) plus ~1.3 us the quantizer adds under PDL. This probe
builds ``decode_timeline_probe.cu`` (the weight-first decode tiles with the stamps of
``csrc/decode_trace.h``: %globaltimer at each phase of each CTA) as a plain shared library, calls
it through ctypes, and reports every phase relative to the first CTA's producer start: as the
GEMM alone on codes quantized once (launched plainly), after the quantizer (launched with PDL,
as ``apply_weights`` does), and alone with per-tensor scales (what the epilogue's scale vectors
cost). The call's CUDA-event time beside it shows what lies outside the CTAs (launch, teardown).

Run on the GPU machine from the repository root (the nvidia-cutlass wheel's headers on the path):
    python3 plugins/cutlass_plugin/gpu/probe_decode_timeline.py --out $OUT/timeline.json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
from pathlib import Path

import torch
from probe_library import build_probe_library

from kernel_core_cutlass import ops, quant
from kernel_core_cutlass.tiles import TileConfig

HERE = Path(__file__).parent
SOURCE = HERE / "decode_timeline_probe.cu"
#: csrc/decode_trace.h's DecodeEvent, in order.
EVENTS = ("producer_start", "lead_issued", "wait_returned", "last_copy_issued", "consumer_start",
          "consumer_issued", "epilogue_start", "epilogue_stored", "epilogue_done")
#: (N, K) layers on one wave of 64-row tiles (128 CTAs on 132 SMs) and the (M, tile) points.
LAYERS = ((8192, 8192), (8192, 28672))
POINTS = ((1, TileConfig.SWAP_64x16_K256), (16, TileConfig.SWAP_64x16_K256),
          (64, TileConfig.SWAP_64x64_K256))
WARMUP, REPS = 5, 25


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_library() -> ctypes.CDLL:
    """The probe library (gpu/probe_library.py: cached per source, csrc headers and flags), with
    its entry points' signatures."""
    # The csrc headers count through their folder (a unit of it stands for them all).
    lib = build_probe_library(SOURCE, "decode_timeline", keyed_with=[ops.CSRC / "scaled_mm_sm90.cuh"])
    lib.kcc_set_decode_trace.restype = ctypes.c_char_p
    lib.kcc_set_decode_trace.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.kcc_traced_decode.restype = ctypes.c_char_p
    lib.kcc_traced_decode.argtypes = [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
        ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
        ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_int,
        ctypes.c_int]
    return lib


def checked(error: bytes | None) -> None:
    if error is not None:
        raise RuntimeError(error.decode())


def traced_gemm(lib: ctypes.CDLL, tile: TileConfig, q: torch.Tensor, s: torch.Tensor,
                w: torch.Tensor, w_scale: torch.Tensor, out: torch.Tensor, pdl: bool) -> None:
    """One launch of the traced decode GEMM on the current stream (capturable)."""
    m, k = q.shape
    workspace = ops.workspace_for(q.device)
    checked(lib.kcc_traced_decode(
        int(tile), q.data_ptr(), w.data_ptr(), s.data_ptr(), int(s.numel() != 1),
        w_scale.data_ptr(), int(w_scale.numel() != 1), out.data_ptr(), m, w.shape[0], k,
        q.device.index, torch.cuda.get_device_properties(q.device).multi_processor_count,
        workspace.data_ptr(), workspace.nbytes, torch.cuda.current_stream().cuda_stream, int(pdl),
        ops.WEIGHT_LEAD_STAGES))


def summarize(traces: list[torch.Tensor], times_us: list[float]) -> dict:
    """Per event: the median over reps of the median and the latest CTA, in us from the first
    CTA's producer start."""
    per_event: dict[str, dict[str, float]] = {}
    for e, name in enumerate(EVENTS):
        medians, lasts = [], []
        for trace in traces:
            t0 = trace[:, 0].min()
            column = (trace[:, e] - t0).double() / 1000.0
            medians.append(column.median().item())
            lasts.append(column.max().item())
        per_event[name] = {"median_cta_us": statistics.median(medians),
                           "last_cta_us": statistics.median(lasts)}
    first_starts = [((trace[:, 0] - trace[:, 0].min()).double().max() / 1000.0).item()
                    for trace in traces]
    return {"events": per_event, "producer_start_spread_us": statistics.median(first_starts),
            "call_us": statistics.median(times_us)}


def run_point(lib: ctypes.CDLL, n: int, k: int, m: int, tile: TileConfig) -> dict:
    g = torch.Generator(device="cuda").manual_seed(n + k + m)
    w = (torch.randn((n, k), generator=g, device="cuda") * 30).to(torch.float8_e4m3fn)
    w_scale = torch.rand(n, generator=g, device="cuda") + 0.5
    x = torch.randn((m, k), generator=g, device="cuda").to(torch.bfloat16)
    q, s = quant.quantize_fp8_per_token(x)
    ctas = -(-n // 64) * -(-m // (16 if tile == TileConfig.SWAP_64x16_K256 else 64))
    out = torch.empty((m, n), dtype=torch.bfloat16, device="cuda")
    reference = (q.double() @ w.double().T) * s.double()[:, None] * w_scale.double()[None, :]
    # Room for four times the expected grid: rows no CTA stamps stay zero and are dropped.
    trace = torch.zeros((4 * ctas, len(EVENTS)), dtype=torch.int64, device="cuda")
    checked(lib.kcc_set_decode_trace(trace.data_ptr(), torch.cuda.current_stream().cuda_stream))
    result = {"N": n, "K": k, "M": m, "tile": tile.name, "ctas": ctas}

    def gemm_alone() -> None:
        traced_gemm(lib, tile, q, s, w, w_scale, out, pdl=False)

    def after_quantizer() -> None:  # as apply_weights: the quantizer, then the GEMM with PDL
        q2, s2 = quant.quantize_fp8_per_token(x)
        traced_gemm(lib, tile, q2, s2, w, w_scale, out, pdl=True)

    # The GEMM alone with one token scale and one channel scale (per-tensor): the epilogue's
    # broadcast nodes then read one value each instead of their rows, so the difference in the
    # epilogue's phases is what loading the scale vectors costs. Its output is not the reference's.
    scalar_token, scalar_channel = s[:1].clone(), w_scale[:1].clone()

    def gemm_alone_scalar_scales() -> None:
        traced_gemm(lib, tile, q, scalar_token, w, scalar_channel, out, pdl=False)

    for mode, call in (("gemm_alone", gemm_alone), ("after_quantizer_pdl", after_quantizer),
                       ("gemm_alone_scalar_scales", gemm_alone_scalar_scales)):
        call()  # compiles the quantizer before capture
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            call()
        traces, times = [], []
        for rep in range(WARMUP + REPS):
            trace.zero_()
            out.fill_(float("nan"))
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            torch.cuda.synchronize()
            if rep >= WARMUP:
                rows = trace.cpu()
                traces.append(rows[(rows != 0).any(dim=1)])
                times.append(start.elapsed_time(end) * 1000.0)
        stamped = sorted({len(t) for t in traces})
        unwritten = sum(int((t == 0).sum()) for t in traces)
        expected = reference
        if mode == "gemm_alone_scalar_scales":
            expected = (q.double() @ w.double().T) * float(scalar_token) * float(scalar_channel)
        error = ((out.double() - expected).norm() / expected.norm()).item()
        result[mode] = {**summarize(traces, times), "ctas_stamped": stamped,
                        "unwritten_stamps": unwritten, "relative_error": error}
        log(f"probe: N={n} K={k} M={m} {mode}: call {result[mode]['call_us']:.2f} us, "
            + ", ".join(f"{name} {v['median_cta_us']:.2f}/{v['last_cta_us']:.2f}"
                        for name, v in result[mode]["events"].items())
            + f"; error {error:.1e}, CTAs {stamped}, unwritten stamps {unwritten}")
        del graph
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    lib = build_library()
    rows = [run_point(lib, n, k, m, tile) for n, k in LAYERS for m, tile in POINTS]
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "events": list(EVENTS),
              "method": "per CTA %globaltimer stamps (ns) at each decode phase; per rep the median "
                        "and the last CTA relative to the first CTA's producer start, then the "
                        f"median over {REPS} reps after {WARMUP}; call_us: CUDA events around one "
                        "CUDA-graph replay of the call (and the quantizer before it in "
                        "after_quantizer_pdl)",
              "rows": rows}
    args.out.write_text(json.dumps(report, indent=1))
    log(f"probe: wrote {args.out}")


if __name__ == "__main__":
    main()
