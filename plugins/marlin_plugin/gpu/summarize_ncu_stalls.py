"""Summarize an Nsight Compute report of a Marlin kernel: where its warps stall, per instruction.

Reads the text exports of one report (``run_gpu.sh`` steps ``KCM_TILE_NCU``, ``KCM_STREAM_NCU``):

- ``--source``: ``ncu --import R --page source --csv --print-source sass`` (one block per profiled
  kernel: a ``"Kernel Name",...`` row, a header row with ``Address`` and ``Source``, one row per
  SASS instruction with the sampled warp states: ``Warp Stall Sampling (All Samples)``,
  ``(Not-issued Samples)`` and one column per stall reason, labelled ``stall_long_sb`` /
  ``stall_barrier (Not Issued)`` in ncu 2023-2025.1 or by metric name
  ``smsp__pcsamp_warps_issue_stalled_long_scoreboard`` / ``..._not_issued`` in later versions);
  several files may be given (one per kernel);
- ``--details``: ``ncu --import R --page details --csv`` (long format: ``ID``, ``Kernel Name``,
  ``Section Name``, ``Metric Name``, ``Metric Unit``, ``Metric Value``), optional;
- ``--raw``: ``ncu --import R --page raw --csv`` (wide: one column per metric, a units row, one row
  per kernel), optional: pipe utilizations and the WarpStateStats stall counters are only there.

Columns are matched by name pieces, not positions, and what was matched is printed and kept in the
JSON (``columns``), so a renamed column shows up as missing instead of as a wrong number.
Writes ``--json`` and ``--txt``: per kernel its duration, tensor-pipe use, issue-slot use, eligible
and active warps per scheduler, cycles per issued instruction, the stall reasons ranked by share of
samples (and by the counters where the raw page has them), the top instructions by stall samples
with their opcode and dominant reason, and the samples per opcode class (wgmma, shared loads,
async copies, barriers / mbarriers, decode ALU, ...).

Standard library only (runs on the CPU; tests/test_marlin_ncu_summary.py feeds it a synthetic
export). Exit status 1 when no instruction row with samples could be read from any source file.

Usage: python3 summarize_ncu_stalls.py --source S.csv [--details D.csv] [--raw R.csv]
       --json OUT.json --txt OUT.txt [--top 25]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

#: The reason given to samples that no reason column of the page covers.
UNLISTED = "(unlisted)"
#: Stall reason labels of the source page (ncu <= 2025.1) -> the metric's own reason name
#: (smsp__pcsamp_warps_issue_stalled_<name>), which later versions print as the column name.
REASON_ALIASES = {
    "long_sb": "long_scoreboard", "short_sb": "short_scoreboard", "mio": "mio_throttle",
    "lg": "lg_throttle", "math": "math_pipe_throttle", "tex": "tex_throttle",
    "dispatch": "dispatch_stall", "no_inst": "no_instructions", "sleep": "sleeping",
    "imc": "imc_miss",
}
#: What each reason means for this kernel (Nsight Compute's profiling guide, shortened).
REASON_NOTES = {
    "long_scoreboard": "waits on an L1TEX result (global / local memory)",
    "short_scoreboard": "waits on an MIO result (shared memory LDS/LDSM, MUFU, special registers)",
    "mio_throttle": "MIO instruction queue full (shared-memory / special-op issue pressure)",
    "lg_throttle": "local/global (LSU) queue full (LDG / cp.async issue pressure)",
    "math_pipe_throttle": "the target math pipe is busy",
    "wait": "fixed-latency dependency (ALU chain, or a DEPBAR-style counter wait)",
    "barrier": "BAR.SYNC: waits for the other warps of the block",
    "membar": "memory barrier / fence",
    "dispatch_stall": "dispatch stall (pipeline interlock)",
    "branch_resolving": "branch target computation",
    "no_instructions": "instruction cache miss / no instruction fetched",
    "not_selected": "eligible but another warp was picked (not a latency stall)",
    "selected": "issued (not a stall)",
    "sleeping": "NANOSLEEP / suspended (e.g. mbarrier try_wait back-off)",
    "drain": "waits for memory stores to drain at exit",
    "misc": "miscellaneous",
    "gmma": "waits on wgmma (HGMMA) results: WARPGROUP.DEPBAR / ARRIVE",
    "tex_throttle": "texture queue full",
    "imc_miss": "immediate-constant cache miss",
    UNLISTED: "samples beyond the listed reason columns (a reason without a column, e.g. gmma)",
}
#: Opcode classes, first match wins (the base opcode before the first '.').
OPCODE_CLASSES = (
    ("wgmma (HGMMA, WARPGROUP.*)", {"HGMMA", "IGMMA", "QGMMA", "BGMMA", "WARPGROUP"}),
    ("mma.sync (HMMA)", {"HMMA"}),
    ("shared load (LDS, LDSM)", {"LDS", "LDSM"}),
    ("shared store (STS, STSM)", {"STS", "STSM"}),
    ("async copy (LDGSTS, LDGDEPBAR, DEPBAR, TMA)",
     {"LDGSTS", "LDGDEPBAR", "DEPBAR", "UBLKCP", "UBLKPF", "UTMALDG", "UTMASTG", "UTMAPF",
      "UTMACCTL", "UTMACMDFLUSH"}),
    ("sync (BAR, SYNCS/mbarrier, ARRIVES, MEMBAR, FENCE)",
     {"BAR", "BARRIER", "SYNCS", "ARRIVES", "MEMBAR", "FENCE", "ERRBAR", "WARPSYNC", "NANOSLEEP",
      "CCTL", "CGAERRBAR"}),
    ("global/generic memory (LDG, STG, LD, ST, RED, ATOM)",
     {"LDG", "STG", "LD", "ST", "RED", "REDG", "ATOM", "ATOMG", "ATOMS", "LDL", "STL", "REDAS",
      "REDUX", "QSPC", "MATCH"}),
    ("decode ALU (LOP3, SHF, PRMT, HFMA2, HMUL2, HADD2, F2FP, I2F, ...)",
     {"LOP3", "SHF", "PRMT", "HFMA2", "HMUL2", "HADD2", "HMNMX2", "HSET2", "HSETP2", "F2FP",
      "I2F", "I2FP", "F2F", "F2I", "FFMA", "FMUL", "FADD", "FMNMX", "FSEL", "FSETP", "MUFU",
      "BMSK", "SGXT", "POPC", "FLO", "LOP", "FCHK", "DFMA", "DMUL", "DADD"}),
    ("int/address (IMAD, IADD3, LEA, ISETP, SEL, MOV, S2R, SHFL, ...)",
     {"IMAD", "IADD3", "IADD", "LEA", "ISETP", "SEL", "MOV", "IABS", "IMNMX", "VIMNMX", "S2R",
      "CS2R", "S2UR", "LDC", "SHFL", "VOTE", "VOTEU", "ELECT", "R2UR", "P2R", "R2P", "PLOP3",
      "IMUL", "IDP", "I2I", "IMMA"}),
    ("control (BRA, EXIT, BSSY, BSYNC, CALL, RET, NOP)",
     {"BRA", "BRX", "JMP", "JMX", "EXIT", "BSSY", "BSYNC", "CALL", "RET", "NOP", "YIELD", "BPT",
      "KILL", "BREAK", "ACQBULK", "PREEXIT", "ENDCOLLECTIVE", "WARPGROUPSET"}),
)
UNIFORM_CLASS = "uniform datapath (U*)"
OTHER_CLASS = "other"

_PREDICATE = re.compile(r"^@!?U?P[T0-9]+\s+")
_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")
_TILE_NAME = re.compile(r"tile_gemm(_ws|_bulk)?_kernel\s*<\s*[^,<>]+,\s*(?:\(int\))?(\d+),\s*"
                        r"(?:\(int\))?(\d+),\s*(?:\(int\))?(\d+)")


def number(text: str | None) -> float | None:
    """A CSV cell as a number: '1,234.5' (thousands separators) and '9,5' (decimal comma) too;
    None for '', '-', 'n/a' and text."""
    if text is None:
        return None
    s = text.strip().strip('"')
    if not s or s.lower() in ("-", "n/a", "nan"):
        return None
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    elif s.count(",") == 1 and "." not in s:
        s = s.replace(",", ".")
    try:
        return float(s)
    except ValueError:
        return None


def read_rows(path: Path) -> list[list[str]]:
    """CSV rows of an ncu export, without the tool's own '==PROF==' / '==WARNING==' lines."""
    lines = [line for line in path.read_text(errors="replace").splitlines()
             if not line.startswith("==")]
    return [row for row in csv.reader(io.StringIO("\n".join(lines))) if any(c.strip() for c in row)]


def opcode_of(sass: str) -> str:
    """'@!P0 HGMMA.64x256x16.F32.BF16 gdesc[UR4], ... ;' -> 'HGMMA.64x256x16.F32.BF16'."""
    text = _PREDICATE.sub("", sass.strip())
    token = text.split(None, 1)[0] if text else ""
    return token.rstrip(";")


def opcode_class(opcode: str) -> str:
    base = opcode.split(".", 1)[0].upper()
    for name, bases in OPCODE_CLASSES:
        if base in bases:
            return name
    if base.startswith("U") and len(base) > 1:
        return UNIFORM_CLASS
    return OTHER_CLASS


def canonical_reason(column: str) -> tuple[str, bool] | None:
    """(reason, not_issued) for a stall-reason column, None for any other column."""
    c = column.strip().lower()
    not_issued = "not issued" in c or "not_issued" in c
    if "pcsamp_warps_issue_stalled_" in c:
        name = c.split("pcsamp_warps_issue_stalled_", 1)[1]
    elif c.startswith("stall_"):
        name = c[len("stall_"):]
    else:
        return None
    name = re.sub(r"\s*\(not issued\)$", "", name)
    name = re.sub(r"_not_issued$", "", name).strip()
    return REASON_ALIASES.get(name, name), not_issued


def label_of(name: str) -> dict:
    """Variant and tile shape from a demangled tile kernel name (<T, FMT, BMX, RW, ...>)."""
    match = _TILE_NAME.search(name)
    if not match:
        return {"label": name[:80]}
    ws, fmt, bmx, rw = match.group(1), int(match.group(2)), int(match.group(3)), int(match.group(4))
    variant, kind = {None: (0, "barrier"), "_ws": (1, "specialized"), "_bulk": (2, "bulk")}[ws]
    return {"variant": variant, "fmt": fmt, "bmx": bmx, "rw": rw,
            "label": f"v{variant} {kind} {bmx}x{128 * rw} (BMX={bmx}, RW={rw}, M={bmx})"}


# ---------------------------------------------------------------------------------------------
# Source page


def _find(header: list[str], *pieces: str, exclude: tuple[str, ...] = ()) -> int | None:
    """Index of the first header cell that contains every piece (case-insensitive)."""
    for i, cell in enumerate(header):
        c = cell.strip().lower()
        if all(p in c for p in pieces) and not any(e in c for e in exclude):
            return i
    return None


def _first(*indices: int | None) -> int | None:
    return next((i for i in indices if i is not None), None)


def _source_columns(header: list[str]) -> dict:
    h = [c.strip().lower() for c in header]
    cols = {
        "address": _find(header, "address"),
        "source": h.index("source") if "source" in h else _find(header, "source"),
        "samples_all": _first(_find(header, "warp stall sampling", "all"),
                              _find(header, "# samples"), _find(header, "pcsamp_sample_count")),
        "samples_not_issued": _first(_find(header, "warp stall sampling", "not-issued"),
                                     _find(header, "warp stall sampling", "not issued")),
        "inst_executed": (h.index("instructions executed") if "instructions executed" in h
                          else h.index("inst_executed") if "inst_executed" in h else None),
    }
    reasons, reasons_not_issued = {}, {}
    for i, cell in enumerate(header):
        parsed = canonical_reason(cell)
        if parsed is None:
            continue
        name, not_issued = parsed
        target = reasons_not_issued if not_issued else reasons
        target.setdefault(name, i)
    cols["reasons"] = reasons
    cols["reasons_not_issued"] = reasons_not_issued
    return cols


def parse_source(paths: list[Path]) -> tuple[list[dict], dict, list[str]]:
    """Kernel blocks of the source page(s): [{name, instructions: [...]}], the matched columns,
    and warnings."""
    blocks, warnings, columns = [], [], {}
    for path in paths:
        name, cols, block = None, None, None
        for row in read_rows(path):
            first = row[0].strip()
            filled = [c for c in row if c.strip()]
            if first.lower() in ("kernel name", "function name", "kernel") and len(filled) <= 3:
                name = row[1].strip() if len(row) > 1 else ""
                cols, block = None, None
                continue
            lowered = [c.strip().lower() for c in row]
            if "source" in lowered and any("address" in c for c in lowered):
                cols = _source_columns(row)
                columns = {k: (row[v] if isinstance(v, int) else
                               {r: row[i] for r, i in v.items()} if isinstance(v, dict) else None)
                           for k, v in cols.items()}
                block = {"name": name or f"kernel {len(blocks)}", "file": path.name,
                         "instructions": []}
                blocks.append(block)
                continue
            if cols is None or block is None or cols["source"] is None:
                continue
            if len(row) <= cols["source"] or not row[cols["source"]].strip():
                continue
            block["instructions"].append(_instruction(row, cols))
    # The same kernel exported twice (a per-kernel re-export of a page that held them all).
    unique, seen = [], set()
    for block in blocks:
        key = (block["name"],
               tuple((i["address"], i["samples_all"]) for i in block["instructions"]))
        if key in seen:
            warnings.append(f"duplicate source block dropped: {block['name'][:60]}")
            continue
        seen.add(key)
        unique.append(block)
    return unique, columns, warnings


def _instruction(row: list[str], cols: dict) -> dict:
    def cell(index):
        return row[index] if index is not None and index < len(row) else None

    reasons = {r: number(cell(i)) or 0.0 for r, i in cols["reasons"].items()}
    reasons_ni = {r: number(cell(i)) or 0.0 for r, i in cols["reasons_not_issued"].items()}
    sass = (cell(cols["source"]) or "").strip()
    opcode = opcode_of(sass)
    samples_all = number(cell(cols["samples_all"]))
    if samples_all is None and reasons:
        samples_all = sum(reasons.values())
    if reasons:
        # Samples the reason columns do not cover (a reason this ncu has no column for, e.g.
        # Hopper's gmma) are kept as their own reason instead of vanishing.
        unlisted = (samples_all or 0.0) - sum(reasons.values())
        if unlisted > 0:
            reasons[UNLISTED] = unlisted
        stall = sum(v for r, v in reasons.items() if r != "selected")
    else:
        stall = number(cell(cols["samples_not_issued"]))
        if stall is None:
            stall = samples_all
    return {"address": (cell(cols["address"]) or "").strip(), "sass": sass, "opcode": opcode,
            "class": opcode_class(opcode), "samples_all": samples_all or 0.0,
            "samples_not_issued": number(cell(cols["samples_not_issued"])),
            "stall_samples": stall or 0.0, "inst_executed": number(cell(cols["inst_executed"])),
            "reasons": reasons, "reasons_not_issued": reasons_ni}


# ---------------------------------------------------------------------------------------------
# Details and raw pages

_DETAIL_METRICS = (  # (key, label, wanted unit piece or None)
    ("duration", "Duration", None),
    ("sm_frequency", "SM Frequency", None),
    ("elapsed_cycles", "Elapsed Cycles", None),
    ("compute_sm_throughput_pct", "Compute (SM) Throughput", "%"),
    ("memory_throughput_pct", "Memory Throughput", "%"),
    ("dram_throughput_pct", "DRAM Throughput", "%"),
    ("l1_throughput_pct", "L1/TEX Cache Throughput", "%"),
    ("l2_throughput_pct", "L2 Cache Throughput", "%"),
    ("executed_ipc_active", "Executed Ipc Active", None),
    ("issue_slots_busy_pct", "Issue Slots Busy", "%"),
    ("sm_busy_pct", "SM Busy", "%"),
    ("mem_pipes_busy_pct", "Mem Pipes Busy", "%"),
    ("one_or_more_eligible_pct", "One or More Eligible", "%"),
    ("no_eligible_pct", "No Eligible", "%"),
    ("active_warps_per_scheduler", "Active Warps Per Scheduler", None),
    ("eligible_warps_per_scheduler", "Eligible Warps Per Scheduler", None),
    ("issued_warp_per_scheduler", "Issued Warp Per Scheduler", None),
    ("warp_cycles_per_issued_instruction", "Warp Cycles Per Issued Instruction", None),
    ("executed_instructions", "Executed Instructions", None),
    ("registers_per_thread", "Registers Per Thread", None),
    ("dynamic_smem_per_block", "Dynamic Shared Memory Per Block", None),
    ("achieved_occupancy_pct", "Achieved Occupancy", "%"),
)
_RAW_METRICS = (  # (key, exact metric names in order of preference)
    ("duration", ("gpu__time_duration.sum",)),
    ("issue_slots_busy_pct", ("sm__inst_issued.avg.pct_of_peak_sustained_active",)),
    ("issue_active_pct", ("smsp__issue_active.avg.pct_of_peak_sustained_active",)),
    ("eligible_warps_per_scheduler", ("smsp__warps_eligible.avg.per_cycle_active",)),
    ("active_warps_per_scheduler", ("smsp__warps_active.avg.per_cycle_active",)),
    ("warp_cycles_per_issued_instruction", ("smsp__average_warp_latency_per_inst_issued.ratio",
                                            "smsp__average_warps_active_per_inst_issued.ratio")),
    ("pc_samples", ("smsp__pcsamp_sample_count",)),
)
#: Tensor-pipe utilization metrics, headline first match.
_TENSOR_HEADLINE = ("sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active",
                    "sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active",
                    "sm__pipe_shared_cycles_active.avg.pct_of_peak_sustained_active",
                    "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active")
_PIPE = re.compile(r"^sm__(pipe_(tensor|shared)\w*cycles_active|inst_executed_pipe_tensor\w*)"
                   r"\.avg\.pct_of_peak_sustained_active$")
#: WarpStateStats counters per stall reason: warps stalled per issue cycle (they add up to the
#: cycles per issued instruction), else the latency form some versions collect instead.
_WARP_STATE = (re.compile(r"^smsp__average_warps_issue_stalled_(\w+)_per_issue_active\.ratio$"),
               re.compile(r"^smsp__average_warp_latency_issue_stalled_(\w+)\.ratio$"))


def _to_us(value: float | None, unit: str) -> float | None:
    if value is None:
        return None
    u = unit.strip().lower()
    scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3,
             "second": 1e6, "s": 1e6}.get(u)
    return value * scale if scale is not None else value


def parse_details(path: Path) -> tuple[list[dict], list[str]]:
    """[{id, name, metrics: {key: value}}] in ID order, and the metric labels matched."""
    rows = read_rows(path)
    header_at = next((i for i, r in enumerate(rows)
                      if "Metric Name" in [c.strip() for c in r]), None)
    if header_at is None:
        return [], []
    header = [c.strip() for c in rows[header_at]]
    col = {k: header.index(k) if k in header else None
           for k in ("ID", "Kernel Name", "Section Name", "Metric Name", "Metric Unit",
                     "Metric Value")}
    kernels: dict[str, dict] = {}
    for row in rows[header_at + 1:]:
        if len(row) < len(header):
            continue
        kid = row[col["ID"]] if col["ID"] is not None else row[col["Kernel Name"]]
        kernel = kernels.setdefault(kid, {"id": kid, "name": row[col["Kernel Name"]].strip()
                                          if col["Kernel Name"] is not None else kid,
                                          "all": []})
        kernel["all"].append((row[col["Section Name"]] if col["Section Name"] is not None else "",
                              row[col["Metric Name"]].strip(),
                              row[col["Metric Unit"]] if col["Metric Unit"] is not None else "",
                              row[col["Metric Value"]]))
    matched = set()
    out = []
    for kernel in kernels.values():
        metrics = {}
        for key, label, unit_piece in _DETAIL_METRICS:
            candidates = [m for m in kernel["all"] if m[1].lower() == label.lower()]
            if unit_piece:
                candidates = [m for m in candidates if unit_piece in m[2]] or candidates
            if not candidates:
                continue
            _, name, unit, value = candidates[0]
            v = number(value)
            if key == "duration":
                v = _to_us(v, unit)
                key = "duration_us"
            if v is not None:
                metrics[key] = v
                matched.add(name)
        out.append({"id": kernel["id"], "name": kernel["name"], "metrics": metrics})
    return out, sorted(matched)


def parse_raw(path: Path) -> tuple[list[dict], list[str]]:
    """[{id, name, metrics, pipes: {metric: pct}, warp_state: {reason: cycles per issue}}]."""
    rows = read_rows(path)
    header_at = next((i for i, r in enumerate(rows) if "Kernel Name" in [c.strip() for c in r]),
                     None)
    if header_at is None:
        return [], []
    header = [c.strip() for c in rows[header_at]]
    data = rows[header_at + 1:]
    units = [""] * len(header)
    if data and data[0][header.index("Kernel Name")].strip() == "":
        units, data = data[0], data[1:]
    matched = set()
    out = []
    for row in data:
        if len(row) < len(header):
            continue
        values = dict(zip(header, row))
        unit = dict(zip(header, units))
        metrics = {}
        for key, names in _RAW_METRICS:
            for name in names:
                v = number(values.get(name))
                if v is not None:
                    if key == "duration":
                        v, key = _to_us(v, unit.get(name, "")), "duration_us"
                    metrics[key] = v
                    matched.add(name)
                    break
        pipes = {n: number(v) for n, v in values.items()
                 if _PIPE.match(n) and number(v) is not None}
        matched.update(pipes)
        warp_state = {}
        for pattern in _WARP_STATE:
            for n, v in values.items():
                m = pattern.match(n)
                if m and number(v) is not None:
                    warp_state.setdefault(REASON_ALIASES.get(m.group(1), m.group(1)), number(v))
                    matched.add(n)
            if warp_state:
                break
        out.append({"id": values.get("ID", str(len(out))), "name": values.get("Kernel Name", ""),
                    "metrics": metrics, "pipes": pipes, "warp_state": warp_state})
    return out, sorted(matched)


# ---------------------------------------------------------------------------------------------
# Summary


def _ranked(counts: dict[str, float], total: float, key: str = "samples",
            digits: int = 1) -> list[dict]:
    return [{"reason": r, key: round(v, digits), "share": round(v / total, 4) if total else 0.0}
            for r, v in sorted(counts.items(), key=lambda kv: -kv[1]) if v > 0]


def _dominant(reasons: dict[str, float]) -> tuple[str, float]:
    stalls = {r: v for r, v in reasons.items() if r != "selected" and v > 0}
    if not stalls:
        return ("-", 0.0)
    reason = max(stalls, key=stalls.get)
    return reason, stalls[reason] / sum(stalls.values())


def summarize_block(block: dict, top: int) -> dict:
    instructions = block["instructions"]
    total_all = sum(i["samples_all"] for i in instructions)
    total_stall = sum(i["stall_samples"] for i in instructions)
    by_reason: dict[str, float] = defaultdict(float)
    for inst in instructions:
        for r, v in inst["reasons"].items():
            by_reason[r] += v
    unattributed = by_reason.get(UNLISTED, 0.0)
    base = None
    for inst in instructions:
        try:
            base = int(inst["address"], 16)
            break
        except ValueError:
            continue

    def offset(address: str) -> str:
        try:
            return f"+0x{int(address, 16) - base:05x}" if base is not None else address
        except ValueError:
            return address

    top_rows = []
    for inst in sorted(instructions, key=lambda i: -i["stall_samples"])[:top]:
        if inst["stall_samples"] <= 0:
            break
        reason, share = _dominant(inst["reasons"])
        top_rows.append({
            "offset": offset(inst["address"]), "sass": inst["sass"][:100], "opcode": inst["opcode"],
            "class": inst["class"], "stall_samples": round(inst["stall_samples"], 1),
            "share_of_kernel_stalls": round(inst["stall_samples"] / total_stall, 4)
            if total_stall else 0.0,
            "samples_all": round(inst["samples_all"], 1), "dominant_reason": reason,
            "dominant_share": round(share, 3), "inst_executed": inst["inst_executed"]})
    classes: dict[str, dict] = {}
    for inst in instructions:
        c = classes.setdefault(inst["class"], {"class": inst["class"], "static_instructions": 0,
                                               "samples_all": 0.0, "stall_samples": 0.0,
                                               "inst_executed": 0.0, "reasons": defaultdict(float)})
        c["static_instructions"] += 1
        c["samples_all"] += inst["samples_all"]
        c["stall_samples"] += inst["stall_samples"]
        c["inst_executed"] += inst["inst_executed"] or 0.0
        for r, v in inst["reasons"].items():
            c["reasons"][r] += v
    class_rows = []
    for c in sorted(classes.values(), key=lambda c: -c["stall_samples"]):
        stalls = {r: v for r, v in c["reasons"].items() if r != "selected"}
        class_rows.append({
            "class": c["class"], "static_instructions": c["static_instructions"],
            "inst_executed": c["inst_executed"], "stall_samples": round(c["stall_samples"], 1),
            "share_of_kernel_stalls": round(c["stall_samples"] / total_stall, 4)
            if total_stall else 0.0,
            "top_reasons": _ranked(stalls, sum(stalls.values()))[:3]})
    return {"samples": {"all": round(total_all, 1), "stall": round(total_stall, 1),
                        "by_reason": _ranked(dict(by_reason), total_all),
                        "unattributed": round(unattributed, 1),
                        "unattributed_share": round(unattributed / total_all, 4)
                        if total_all else 0.0},
            "instructions": len(instructions), "top_instructions": top_rows,
            "opcode_classes": class_rows}


def _tensor_headline(pipes: dict[str, float]) -> tuple[str | None, float | None]:
    for name in _TENSOR_HEADLINE:
        if name in pipes:
            return name, pipes[name]
    return None, None


def summarize(source: list[Path], details: Path | None, raw: Path | None, top: int) -> dict:
    blocks, source_columns, warnings = parse_source(source)
    detail_kernels, detail_matched = (parse_details(details) if details and details.exists()
                                      else ([], []))
    raw_kernels, raw_matched = parse_raw(raw) if raw and raw.exists() else ([], [])
    if details and not detail_kernels:
        warnings.append(f"no kernel read from the details page {details}")
    if raw and not raw_kernels:
        warnings.append(f"no kernel read from the raw page {raw}")
    count = max(len(blocks), len(detail_kernels), len(raw_kernels))
    if blocks and len(blocks) != count:
        warnings.append(f"{len(blocks)} source blocks for {count} profiled kernels")

    def pick(kernels: list[dict], name: str, index: int, used: set) -> dict | None:
        for k in kernels:  # by name first (the demangled names hold the tile shape)
            if id(k) not in used and k["name"] and k["name"].strip() == name.strip():
                used.add(id(k))
                return k
        if index < len(kernels) and id(kernels[index]) not in used:
            used.add(id(kernels[index]))
            return kernels[index]
        return None

    used_d, used_r = set(), set()
    kernels = []
    for index in range(count):
        block = blocks[index] if index < len(blocks) else None
        name = (block["name"] if block else
                (detail_kernels[index]["name"] if index < len(detail_kernels) else
                 raw_kernels[index]["name"]))
        detail = pick(detail_kernels, name, index, used_d)
        rawk = pick(raw_kernels, name, index, used_r)
        if block and name.startswith("kernel ") and detail:
            name = detail["name"]
        metrics = dict(detail["metrics"]) if detail else {}
        for key, value in (rawk["metrics"] if rawk else {}).items():
            metrics.setdefault(key, value)
        pipes = rawk["pipes"] if rawk else {}
        headline, tensor = _tensor_headline(pipes)
        warp_state = rawk["warp_state"] if rawk else {}
        entry = {"name": name, **label_of(name), "id": detail["id"] if detail else None,
                 "metrics": metrics, "tensor_pipe_pct": tensor, "tensor_pipe_metric": headline,
                 "pipes_pct": pipes,
                 "warp_state_per_issue": _ranked(
                     {r: v for r, v in warp_state.items() if r != "selected"},
                     sum(v for r, v in warp_state.items() if r != "selected"), "ratio", 3)}
        if block:
            entry.update(summarize_block(block, top))
        else:
            warnings.append(f"no source block for {name[:60]}")
        kernels.append(entry)
    return {"kernels": kernels, "warnings": warnings,
            "columns": {"source": source_columns, "details_matched": detail_matched,
                        "raw_matched": raw_matched},
            "inputs": {"source": [str(p) for p in source], "details": str(details or ""),
                       "raw": str(raw or "")},
            "reason_notes": REASON_NOTES}


def _fmt(value, spec: str = ".2f", suffix: str = "") -> str:
    return format(value, spec) + suffix if isinstance(value, (int, float)) else "n/a"


def render(summary: dict) -> str:
    out = []
    for k in summary["kernels"]:
        m = k["metrics"]
        out.append(f"=== {k.get('label', k['name'])}")
        out.append(f"    {k['name'][:110]}")
        out.append(
            f"    duration {_fmt(m.get('duration_us'), '.1f', ' us')} | tensor pipe "
            f"{_fmt(k['tensor_pipe_pct'], '.1f', '%')} "
            f"({k['tensor_pipe_metric'] or 'not in the raw page'}) | issue slots busy "
            f"{_fmt(m.get('issue_slots_busy_pct'), '.1f', '%')}")
        out.append(
            f"    warps per scheduler: active {_fmt(m.get('active_warps_per_scheduler'))}, "
            f"eligible {_fmt(m.get('eligible_warps_per_scheduler'))}; no eligible "
            f"{_fmt(m.get('no_eligible_pct'), '.1f', '%')}; cycles per issued instruction "
            f"{_fmt(m.get('warp_cycles_per_issued_instruction'))}; DRAM "
            f"{_fmt(m.get('dram_throughput_pct'), '.1f', '%')}, L1 "
            f"{_fmt(m.get('l1_throughput_pct'), '.1f', '%')}, registers "
            f"{_fmt(m.get('registers_per_thread'), '.0f')}")
        if k["pipes_pct"]:
            out.append("    pipes: " + ", ".join(
                f"{n.replace('.avg.pct_of_peak_sustained_active', '').replace('sm__', '')} {v:.1f}%"
                for n, v in sorted(k["pipes_pct"].items(), key=lambda kv: -kv[1])))
        if k["warp_state_per_issue"]:
            out.append("    stall counters (WarpStateStats, per issued instruction): "
                       + ", ".join(f"{r['reason']} {r['ratio']:.2f}"
                                   for r in k["warp_state_per_issue"][:8]))
        if "samples" not in k:
            out.append("    (no per-instruction samples)")
            out.append("")
            continue
        s = k["samples"]
        out.append(f"    PC samples: {s['all']:.0f} (stalled {s['stall']:.0f}) over "
                   f"{k['instructions']} SASS instructions; reasons by share of all samples:")
        for r in s["by_reason"][:10]:
            out.append(f"      {r['reason']:<20} {100 * r['share']:5.1f}%  "
                       f"{REASON_NOTES.get(r['reason'], '')}")
        out.append("    by opcode class (share of stall samples; top reasons):")
        for c in k["opcode_classes"]:
            reasons = ", ".join(f"{r['reason']} {100 * r['share']:.0f}%" for r in c["top_reasons"])
            out.append(f"      {100 * c['share_of_kernel_stalls']:5.1f}%  {c['class']:<58} "
                       f"[{c['static_instructions']} in SASS, {c['inst_executed']:.0f} executed] "
                       f"{reasons}")
        out.append(f"    top {len(k['top_instructions'])} instructions by stall samples:")
        for t in k["top_instructions"]:
            out.append(f"      {100 * t['share_of_kernel_stalls']:5.1f}% {t['offset']:>9} "
                       f"{t['dominant_reason']:<18} {100 * t['dominant_share']:3.0f}%  "
                       f"{t['sass'][:72]}")
        out.append("")
    if summary["warnings"]:
        out.append("warnings: " + "; ".join(summary["warnings"]))
    cols = summary["columns"]["source"]
    out.append("source columns found: " + ", ".join(
        f"{key}={value!r}" for key, value in cols.items()
        if key not in ("reasons", "reasons_not_issued")))
    out.append("stall reason columns: " + ", ".join(sorted((cols.get("reasons") or {}).keys())))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", nargs="+", required=True, type=Path)
    parser.add_argument("--details", type=Path)
    parser.add_argument("--raw", type=Path)
    parser.add_argument("--json", required=True, type=Path)
    parser.add_argument("--txt", required=True, type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    sources = [p for p in args.source if p.exists()]
    summary = summarize(sources, args.details, args.raw, args.top)
    cols = summary["columns"]
    print("summarize_ncu_stalls: source columns " + json.dumps(
        {k: v for k, v in cols["source"].items() if k not in ("reasons", "reasons_not_issued")}))
    print(f"summarize_ncu_stalls: {len(cols['source'].get('reasons') or {})} stall reason columns "
          f"({len(cols['source'].get('reasons_not_issued') or {})} not-issued); details metrics "
          f"{cols['details_matched']}; raw metrics {len(cols['raw_matched'])}")
    args.json.write_text(json.dumps(summary, indent=1))
    args.txt.write_text(render(summary))
    sampled = [k for k in summary["kernels"] if k.get("samples", {}).get("all", 0) > 0]
    print(f"summarize_ncu_stalls: {len(summary['kernels'])} kernels, {len(sampled)} with "
          f"per-instruction samples -> {args.json}, {args.txt}")
    return 0 if sampled else 1


if __name__ == "__main__":
    sys.exit(main())
