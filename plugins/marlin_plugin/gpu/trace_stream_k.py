"""Where a stream-K launch spends its time, block by block, on a GPU machine.

Runs the stream-K tile variant's traced instance (csrc/tile_gemm.cuh ``TileStreamTimeline``,
built into ``gpu/build/libkcm_tile_probe.so`` only) on the cases of ``probe_stream_k.py`` after
warm-up launches and reads every block's timeline: the consumers' start and end on the global
timer, and in SM clocks each segment's chunks and epilogue and the settle after the loop. Per
case it reports the launch's span, the blocks' start and end spread, per segment kind (a whole
tile, a piece of a shared tile) the time per chunk and the epilogue's time, the gaps between
segments, and the settle; NOTES.md v32's open question is which of these holds the 7-19 us a
shared tile costs over the whole-tile model.

Run (repo root): ``bash plugins/marlin_plugin/gpu/build_tile_probe.sh`` (here or on the device),
then ``PYTHONPATH=.:plugins/marlin_plugin:benchmarks python3
plugins/marlin_plugin/gpu/trace_stream_k.py --out OUT.json`` (``run_gpu.sh``: KCM_STREAM_K_TRACE=1).
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch
from bench_marlin import _config, _layer, _random_checkpoint
from probe_stream_k import run_cases
from probe_tile import Packed, image_kernel

#: Words a block writes (csrc/tile_gemm.cuh kTileStreamTraceSlots): [0] / [1] global ns at the
#: consumers' start / end, [2] clock at the start, 3 + 3 s .. 5 + 3 s clocks at segment s's start,
#: chunks done and epilogue done (s < SEGMENTS), [15] / [16] clocks at the settle's start / end,
#: [17] once the other pieces have arrived and thread 0's fence is passed (the wait included; 0:
#: it summed no tile), 18 + s once a stored piece's stores are issued (before thread 0's fence
#: and arrival).
SLOTS = 22
SEGMENTS = 4
SETTLE_FENCED = 17
PIECE_ISSUED = 18


def segments_of(block: int, blocks: int, units: int, chunks: int) -> list[tuple[int, int]]:
    """(first unit, chunk count) of a block's segments (TileStream: block b takes units [b T / G,
    (b + 1) T / G), cut where a tile ends)."""
    begin, end = block * units // blocks, (block + 1) * units // blocks
    segments = []
    while begin < end:
        count = min(end, (begin // chunks + 1) * chunks) - begin
        segments.append((begin, count))
        begin += count
    return segments


def segment_kind(first: int, count: int, chunks: int) -> str:
    """A whole tile (stored), a shared tile's head (kept in registers for the block's sum) or
    another piece (stored and arrived)."""
    if count == chunks:
        return "whole"
    return "head" if first % chunks == 0 else "piece"


def summarize(slots: list[list[int]], units: int, chunks: int) -> dict:
    """Medians and maxima over the blocks of a launch's phases, in us (a block's first segment's
    chunks include the wait for the ring's first fill; setup: the consumers' start to their first
    segment)."""
    blocks = len(slots)
    starts = [row[0] for row in slots]
    ends = [row[1] for row in slots]
    per_kind: dict[str, dict[str, list[float]]] = {
        kind: {"us_per_chunk": [], "epilogue_us": []} for kind in ("whole", "head", "piece")}
    setup, gaps, after_loop, settle = [], [], [], []
    piece_issue, piece_fence, settle_fence = [], [], []
    for b, row in enumerate(slots):
        # This SM's clock against the global timer over the block's run: us per clock.
        us = max(1, row[1] - row[0]) / max(1, row[16] - row[2]) / 1000
        segments = segments_of(b, blocks, units, chunks)
        setup.append((row[3] - row[2]) * us)
        last_end = None
        for s, (first, count) in enumerate(segments[:SEGMENTS]):
            begin, done, epilogue = row[3 + 3 * s: 6 + 3 * s]
            kind = segment_kind(first, count, chunks)
            per_kind[kind]["us_per_chunk"].append((done - begin) * us / count)
            per_kind[kind]["epilogue_us"].append((epilogue - done) * us)
            if kind == "piece":
                issued = row[PIECE_ISSUED + s]
                piece_issue.append((issued - done) * us)
                piece_fence.append((epilogue - issued) * us)
            if last_end is not None:
                gaps.append((begin - last_end) * us)
            last_end = epilogue
        if len(segments) <= SEGMENTS:
            after_loop.append((row[15] - last_end) * us)
        settle.append((row[16] - row[15]) * us)
        if row[SETTLE_FENCED]:
            settle_fence.append((row[SETTLE_FENCED] - row[15]) * us)

    def stats(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        return {"median": round(statistics.median(values), 3), "max": round(max(values), 3),
                "count": len(values)}

    return {"span_us": round((max(ends) - min(starts)) / 1000, 2),
            "start_spread_us": round((max(starts) - min(starts)) / 1000, 2),
            "end_spread_us": round((max(ends) - min(ends)) / 1000, 2),
            "setup_us": stats(setup),
            **{f"{kind}_{name}": stats(values) for kind, phases in per_kind.items()
               for name, values in phases.items()},
            "piece_store_issue_us": stats(piece_issue),
            "piece_fence_and_arrival_us": stats(piece_fence),
            "gap_between_segments_us": stats(gaps), "after_loop_us": stats(after_loop),
            "settle_us": stats(settle), "settle_wait_us": stats(settle_fence)}


def trace(name: str, n: int, k: int, m: int, bmx: int, rw: int, sms: int, warmup: int) -> dict:
    """One case: warm-up launches, then one traced launch on a zeroed timeline."""
    config, kernel_class = _config("int4_g128", n, k)
    layer = _layer(_random_checkpoint(config, "int4_g128"))
    kernel = kernel_class(config)
    kernel.process_weights_after_loading(layer)
    packed = Packed(kernel, layer, n)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    chunks = layer.weight.shape[1]
    image = image_kernel(x, chunks)
    units = math.ceil(n / (128 * rw)) * math.ceil(m / bmx) * chunks
    blocks = min(sms, units)
    partials = torch.empty(blocks * 128 * rw * bmx, dtype=torch.float32, device="cuda")
    arrivals = torch.zeros(blocks, dtype=torch.int32, device="cuda")
    timeline = torch.zeros(blocks * SLOTS, dtype=torch.int64, device="cuda")
    out = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
    for _ in range(warmup):
        packed.tile_stream_trace(x, out, bmx, rw, image, partials, arrivals, timeline)
    timeline.zero_()
    packed.tile_stream_trace(x, out, bmx, rw, image, partials, arrivals, timeline)
    torch.cuda.synchronize()
    slots = timeline.view(blocks, SLOTS).tolist()
    return {"case": name, "N": n, "K": k, "M": m, "bmx": bmx, "rw": rw, "blocks": blocks,
            "chunks_per_block": math.ceil(units / blocks),
            "outputs_finite": bool(torch.isfinite(out).all()),
            **summarize(slots, units, chunks), "slots": slots}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    run_cases(args.out, trace, args.warmup,
              shown=lambda row: {key: value for key, value in row.items() if key != "slots"})


if __name__ == "__main__":
    main()
