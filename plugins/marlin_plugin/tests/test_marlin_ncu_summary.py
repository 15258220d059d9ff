"""gpu/summarize_ncu_stalls.py on a synthetic Nsight Compute export, on the CPU.

The fixture is written in the shape ncu prints its pages (`--page source --csv --print-source sass`,
`--page details --csv`, `--page raw --csv`), with the column labels of ncu 2025.1's
SourceCounters section (`Warp Stall Sampling (All Samples)`, `stall_long_sb`, `stall_barrier (Not
Issued)`, ...) and, for later versions, the metric names themselves
(`smsp__pcsamp_warps_issue_stalled_long_scoreboard`, `..._not_issued`). Every expected number
below is worked out by hand from the rows, so a parsing change that moves any of them fails.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "gpu" / "summarize_ncu_stalls.py"
_spec = importlib.util.spec_from_file_location("summarize_ncu_stalls", SCRIPT)
summ = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(summ)

#: ncu 2025.1 SourceCounters labels, in the section's order; the not-issued group spells sleeping.
LABELS = ["barrier", "branch_resolving", "dispatch", "drain", "imc", "lg", "long_sb", "math",
          "membar", "mio", "misc", "no_inst", "not_selected", "selected", "short_sb", "sleep",
          "tex", "wait"]
#: The same reasons as smsp__pcsamp_warps_issue_stalled_<metric>.
METRICS = ["barrier", "branch_resolving", "dispatch_stall", "drain", "imc_miss", "lg_throttle",
           "long_scoreboard", "math_pipe_throttle", "membar", "mio_throttle", "misc",
           "no_instructions", "not_selected", "selected", "short_scoreboard", "sleeping",
           "tex_throttle", "wait"]
K128 = "void tile_gemm_kernel<__nv_bfloat16, 0, 128, 2, 0>(GemmParams)"
KWS = "void tile_gemm_ws_kernel<__nv_bfloat16, 0, 64, 2>(GemmParams)"

# (address, SASS, all samples, {reason (metric name): samples}, instructions executed).
# All samples may exceed the listed reasons: the rest is a reason without a column ("(unlisted)").
BARRIER_128 = [
    ("0x7f0000001000", "      IMAD.MOV.U32 R1, RZ, RZ, c[0x0][0x28] ", "5", {"selected": 5}, 112),
    ("0x7f0000001010", "      LDS.128 R24, [R3+0x400] ", "40", {"selected": 4}, 28672),
    ("0x7f0000001020", "      LOP3.LUT R30, R24, 0xf000f, RZ, 0xc0, !PT ", "300",
     {"short_scoreboard": 240, "wait": 50, "selected": 10}, 28672),
    ("0x7f0000001030", "      PRMT R31, R30, 0x5410, R25 ", "30", {"wait": 25, "selected": 5},
     28672),
    ("0x7f0000001040", "      HFMA2 R32, R31, R8.H0_H0, -R9.H0_H0 ", "60",
     {"wait": 45, "math_pipe_throttle": 10, "selected": 5}, 28672),
    ("0x7f0000001050", "      @!P0 LDGSTS.E.LTC128B [R10+0x800], desc[UR6][R12.64] ", "90",
     {"lg_throttle": 70, "long_scoreboard": 10, "selected": 10}, 57344),
    ("0x7f0000001060", "      BAR.SYNC.DEFER_BLOCKING 0x0 ", "250", {"barrier": 245, "selected": 5},
     3584),
    ("0x7f0000001070", "      HGMMA.64x256x16.F32.BF16 R40, R32, gdesc[UR4], R40, gsb0 ", "80",
     {"dispatch_stall": 20, "selected": 60}, 14336),
    # 1,200 all samples, 30 listed: 1170 fall to "(unlisted)" (Hopper's gmma has no column here).
    ("0x7f0000001080", "      WARPGROUP.DEPBAR.LE gsb0, 0x1 ", "1,200", {"wait": 30}, 3584),
    ("0x7f0000001090", "      SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR8+0x10], R2 ", "0", {}, 0),
]
WS_64 = [
    ("0x7f0000009000", "      LDS.128 R24, [R3] ", "500", {"short_scoreboard": 400,
                                                          "mio_throttle": 90, "selected": 10},
     14336),
    ("0x7f0000009010", "      SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR8], R2 ", "200",
     {"long_scoreboard": 150, "sleeping": 30, "selected": 20}, 3584),
    ("0x7f0000009020", "      HGMMA.64x64x16.F32.BF16 R40, R32, gdesc[UR4], R40, gsb0 ", "100",
     {"selected": 100}, 7168),
]


def _source_csv(kernels: list[tuple[str, list]], names: list[str], not_issued_suffix,
                sample_label: str = "Warp Stall Sampling (All Samples)") -> str:
    """One block per kernel, as ncu writes --page source --csv --print-source sass."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    header = (["Address", "Source", sample_label, "Warp Stall Sampling (Not-issued Samples)",
               "Instructions Executed", "# Samples", "Instructions Executed",
               "Thread Instructions Executed", "Address Space"]
              + [n for n in names] + [not_issued_suffix(n) for n in names])
    for kernel, rows in kernels:
        writer.writerow(["Kernel Name", kernel, ""])
        writer.writerow(header)
        for address, sass, all_samples, reasons, executed in rows:
            by_column = [str(reasons.get(m, 0)) for m in METRICS]
            # Not-issued samples: everything but "selected"; they must not be counted twice.
            ni = [str(0 if m == "selected" else reasons.get(m, 0)) for m in METRICS]
            writer.writerow([address, sass, all_samples,
                             str(sum(int(v) for v in ni)), str(executed), all_samples,
                             str(executed), str(32 * executed), "-"] + by_column + ni)
    return "==PROF== Connected to process 505\n" + out.getvalue()


def labels_csv() -> str:
    labels = [f"stall_{n}" for n in LABELS]
    return _source_csv([(K128, BARRIER_128), (KWS, WS_64)], labels,
                       lambda n: n.replace("stall_sleep", "stall_sleeping") + " (Not Issued)")


def metrics_csv() -> str:
    names = [f"smsp__pcsamp_warps_issue_stalled_{n}" for n in METRICS]
    return _source_csv([(K128, BARRIER_128), (KWS, WS_64)], names, lambda n: n + "_not_issued")


DETAILS_HEADER = ["ID", "Process ID", "Process Name", "Host Name", "Kernel Name", "Context",
                  "Stream", "Block Size", "Grid Size", "Device", "CC", "Section Name",
                  "Metric Name", "Metric Unit", "Metric Value", "Rule Name", "Rule Type",
                  "Rule Description", "Estimated Speedup Type", "Estimated Speedup"]
DETAILS = [  # (ID, kernel, section, label, unit, value)
    # The same label in two sections with two units, the Gbyte/s one first: "%" must be picked.
    ("0", K128, "Memory Workload Analysis", "Memory Throughput", "Gbyte/s", "811.80"),
    ("0", K128, "GPU Speed Of Light Throughput", "Duration", "usecond", "154.94"),
    ("0", K128, "GPU Speed Of Light Throughput", "Memory Throughput", "%", "37.01"),
    ("0", K128, "GPU Speed Of Light Throughput", "DRAM Throughput", "%", "24.22"),
    ("0", K128, "Compute Workload Analysis", "Issue Slots Busy", "%", "25.61"),
    ("0", K128, "Scheduler Statistics", "Eligible Warps Per Scheduler", "warp", "0.42"),
    ("0", K128, "Scheduler Statistics", "Active Warps Per Scheduler", "warp", "1.99"),
    ("0", K128, "Scheduler Statistics", "No Eligible", "%", "69.47"),
    ("0", K128, "Warp State Statistics", "Warp Cycles Per Issued Instruction", "cycle", "6.52"),
    ("0", K128, "Instruction Statistics", "Executed Instructions", "inst", "36,555,904"),
    ("1", KWS, "GPU Speed Of Light Throughput", "Duration", "msecond", "0.1105"),
    ("1", KWS, "Compute Workload Analysis", "Issue Slots Busy", "%", "35.2"),
    ("1", KWS, "Scheduler Statistics", "Eligible Warps Per Scheduler", "warp", "0.55"),
]


def details_csv() -> str:
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(DETAILS_HEADER)
    for kid, kernel, section, label, unit, value in DETAILS:
        writer.writerow([kid, "505", "python3.12", "127.0.0.1", kernel, "1", "7", "(256, 1, 1)",
                         "(112, 1, 1)", "0", "9.0", section, label, unit, value, "", "", "", "",
                         ""])
    return out.getvalue()


RAW_METRICS = ["gpu__time_duration.sum",
               "sm__pipe_shared_cycles_active.avg.pct_of_peak_sustained_active",
               "sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active",
               "sm__inst_executed_pipe_tensor_op_gmma.avg.pct_of_peak_sustained_active",
               "smsp__warps_eligible.avg.per_cycle_active",
               "smsp__average_warp_latency_issue_stalled_barrier.ratio",
               "smsp__average_warp_latency_issue_stalled_gmma.ratio",
               "smsp__average_warp_latency_issue_stalled_short_scoreboard.ratio",
               "smsp__average_warp_latency_issue_stalled_selected.ratio"]


def raw_csv() -> str:
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(["ID", "Process ID", "Kernel Name"] + RAW_METRICS)
    writer.writerow(["", "", "", "nsecond", "%", "%", "%", "warp", "", "", "", ""])
    writer.writerow(["0", "505", K128, "154,940", "41.13", "40.2", "12.5", "0.43", "0.9", "3.1",
                     "0.7", "1.0"])
    writer.writerow(["1", "505", KWS, "110,500", "30.0", "29.5", "9.0", "0.55", "0.1", "1.2",
                     "2.4", "1.0"])
    return out.getvalue()


@pytest.fixture
def export(tmp_path: Path) -> dict[str, Path]:
    paths = {"labels": tmp_path / "source_labels.csv", "metrics": tmp_path / "source_metrics.csv",
             "details": tmp_path / "details.csv", "raw": tmp_path / "raw.csv"}
    paths["labels"].write_text(labels_csv())
    paths["metrics"].write_text(metrics_csv())
    paths["details"].write_text(details_csv())
    paths["raw"].write_text(raw_csv())
    return paths


def _reasons(kernel: dict) -> dict[str, float]:
    return {r["reason"]: r["samples"] for r in kernel["samples"]["by_reason"]}


def test_labels_export(export: dict[str, Path]) -> None:
    summary = summ.summarize([export["labels"]], export["details"], export["raw"], top=25)
    assert summary["warnings"] == []
    barrier, ws = summary["kernels"]
    assert (barrier["variant"], barrier["bmx"], barrier["rw"]) == (0, 128, 2)
    assert (ws["variant"], ws["bmx"], ws["rw"]) == (1, 64, 2)
    assert barrier["label"] == "v0 barrier 128x256 (BMX=128, RW=2, M=128)"

    # Samples: all = 5+40+300+30+60+90+250+80+1200+0 = 2055; selected = 104 (LDS: 4 listed of 40,
    # so 36 unlisted; DEPBAR: 1170 unlisted); stall = 2055 - 104 = 1951.
    s = barrier["samples"]
    assert (s["all"], s["stall"], s["unattributed"]) == (2055, 1951, 1206)
    assert barrier["instructions"] == 10
    assert _reasons(barrier) == {"(unlisted)": 1206, "barrier": 245, "short_scoreboard": 240,
                                 "wait": 150, "selected": 104, "lg_throttle": 70,
                                 "dispatch_stall": 20, "long_scoreboard": 10,
                                 "math_pipe_throttle": 10}
    assert [r["reason"] for r in s["by_reason"][:3]] == ["(unlisted)", "barrier",
                                                          "short_scoreboard"]
    assert s["by_reason"][1]["share"] == round(245 / 2055, 4)

    top = barrier["top_instructions"]
    assert [t["opcode"] for t in top[:4]] == ["WARPGROUP.DEPBAR.LE", "LOP3.LUT",
                                              "BAR.SYNC.DEFER_BLOCKING", "LDGSTS.E.LTC128B"]
    assert top[0]["offset"] == "+0x00080" and top[0]["stall_samples"] == 1200
    assert top[0]["dominant_reason"] == "(unlisted)" and top[0]["dominant_share"] == 0.975
    assert top[1]["dominant_reason"] == "short_scoreboard" and top[1]["stall_samples"] == 290
    assert top[3]["sass"].startswith("@!P0 LDGSTS") and top[3]["dominant_reason"] == "lg_throttle"
    assert len(top) == 8  # instructions without stall samples (IMAD: all issued) are not listed

    classes = {c["class"]: c for c in barrier["opcode_classes"]}
    wgmma = classes["wgmma (HGMMA, WARPGROUP.*)"]
    assert (wgmma["static_instructions"], wgmma["stall_samples"]) == (2, 1220)
    assert wgmma["top_reasons"][0]["reason"] == "(unlisted)"
    assert classes["decode ALU (LOP3, SHF, PRMT, HFMA2, HMUL2, HADD2, F2FP, I2F, ...)"][
        "stall_samples"] == 290 + 25 + 55
    assert classes["shared load (LDS, LDSM)"]["stall_samples"] == 36
    assert classes["sync (BAR, SYNCS/mbarrier, ARRIVES, MEMBAR, FENCE)"]["static_instructions"] == 2
    assert classes["async copy (LDGSTS, LDGDEPBAR, DEPBAR, TMA)"]["stall_samples"] == 80
    assert barrier["opcode_classes"][0]["class"] == "wgmma (HGMMA, WARPGROUP.*)"

    m = barrier["metrics"]
    assert m["duration_us"] == pytest.approx(154.94)
    assert m["memory_throughput_pct"] == pytest.approx(37.01)  # the % row, not Gbyte/s
    assert m["eligible_warps_per_scheduler"] == pytest.approx(0.42)  # details before raw
    assert m["executed_instructions"] == 36555904
    assert (m["issue_slots_busy_pct"], m["warp_cycles_per_issued_instruction"]) == (25.61, 6.52)
    assert barrier["tensor_pipe_metric"].startswith("sm__pipe_tensor_op_gmma_cycles_active")
    assert barrier["tensor_pipe_pct"] == pytest.approx(40.2)
    assert len(barrier["pipes_pct"]) == 3
    assert [(r["reason"], r["ratio"]) for r in barrier["warp_state_per_issue"]] == [
        ("gmma", 3.1), ("barrier", 0.9), ("short_scoreboard", 0.7)]  # "selected" is no stall

    assert ws["metrics"]["duration_us"] == pytest.approx(110.5)  # msecond -> us
    assert ws["samples"]["all"] == 800 and ws["samples"]["unattributed"] == 0
    assert ws["top_instructions"][0]["dominant_reason"] == "short_scoreboard"
    assert ws["top_instructions"][1]["dominant_reason"] == "long_scoreboard"
    assert ws["tensor_pipe_pct"] == pytest.approx(29.5)


def test_metric_name_columns_read_the_same(export: dict[str, Path]) -> None:
    by_labels = summ.summarize([export["labels"]], None, None, top=25)
    by_metrics = summ.summarize([export["metrics"]], None, None, top=25)
    for a, b in zip(by_labels["kernels"], by_metrics["kernels"], strict=True):
        assert a["samples"] == b["samples"]
        assert a["top_instructions"] == b["top_instructions"]
        assert a["opcode_classes"] == b["opcode_classes"]
    for summary in (by_labels, by_metrics):  # the not-issued group is told apart in both
        assert len(summary["columns"]["source"]["reasons_not_issued"]) == 18
    assert by_labels["columns"]["source"]["reasons"]["long_scoreboard"] == "stall_long_sb"
    assert by_labels["columns"]["source"]["reasons_not_issued"]["sleeping"] == (
        "stall_sleeping (Not Issued)")
    reasons = by_metrics["columns"]["source"]["reasons"]
    assert len(reasons) == 18 and reasons["long_scoreboard"].endswith("long_scoreboard")
    assert len(by_metrics["columns"]["source"]["reasons_not_issued"]) == 18
    # Without the details page the kernels are still named and labelled from the source page.
    assert by_metrics["kernels"][1]["label"].startswith("v1 specialized 64x256")


def test_one_file_per_kernel_and_duplicates(export: dict[str, Path], tmp_path: Path) -> None:
    """run_gpu.sh re-exports one kernel per file when the page held fewer kernels than profiled;
    a re-export that still holds every kernel must not count them twice."""
    text = labels_csv()
    second = text.index('"Kernel Name","' + KWS)
    first_only, second_only = tmp_path / "s0.csv", tmp_path / "s1.csv"
    first_only.write_text(text[:second])
    second_only.write_text(text[second:])
    split = summ.summarize([first_only, second_only], export["details"], None, top=5)
    whole = summ.summarize([export["labels"], export["labels"]], export["details"], None, top=5)
    assert [k["samples"]["all"] for k in split["kernels"]] == [2055, 800]
    assert [k["samples"]["all"] for k in whole["kernels"]] == [2055, 800]
    assert any("duplicate" in w for w in whole["warnings"])
    assert len(split["kernels"][0]["top_instructions"]) == 5


def test_cli_writes_json_and_text(export: dict[str, Path], tmp_path: Path) -> None:
    out_json, out_txt = tmp_path / "s.json", tmp_path / "s.txt"
    run = subprocess.run([sys.executable, str(SCRIPT), "--source", str(export["labels"]),
                          "--details", str(export["details"]), "--raw", str(export["raw"]),
                          "--json", str(out_json), "--txt", str(out_txt)],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "2 kernels, 2 with per-instruction samples" in run.stdout
    assert "'Warp Stall Sampling (All Samples)'" in out_txt.read_text()
    summary = json.loads(out_json.read_text())
    assert summary["kernels"][0]["samples"]["stall"] == 1951
    text = out_txt.read_text()
    assert "=== v0 barrier 128x256" in text and "=== v1 specialized 64x256" in text
    assert "duration 154.9 us | tensor pipe 40.2%" in text
    assert "WARPGROUP.DEPBAR.LE gsb0, 0x1" in text


def test_unreadable_export_fails(tmp_path: Path) -> None:
    """No header row (e.g. ncu printed an error instead of the page): exit status 1."""
    bad = tmp_path / "source.csv"
    bad.write_text('==ERROR== The report could not be loaded\n"Kernel Name","x"\n"1","2","3"\n')
    code = summ.main(["--source", str(bad), "--json", str(tmp_path / "s.json"),
                      "--txt", str(tmp_path / "s.txt")])
    assert code == 1
    assert json.loads((tmp_path / "s.json").read_text())["kernels"] == []
    missing = summ.main(["--source", str(tmp_path / "absent.csv"), "--json",
                         str(tmp_path / "m.json"), "--txt", str(tmp_path / "m.txt")])
    assert missing == 1
