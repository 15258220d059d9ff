"""kernel-core bench and tune on a CPU: presets, timing, the report, the CLI's table/JSON/PNG."""

from __future__ import annotations

import json
import struct
import sys
import time

import pytest
import torch

from kernel_core import MPLinearLayerConfig, tune
from kernel_core.bench.presets import PRESETS, preset_layers
from kernel_core.bench.runner import BenchLayer, run_bench
from kernel_core.bench.timing import CPU_BUDGET, Budget, paired, rotation_count, time_calls
from kernel_core.cli import _bench_layers, build_parser, main

SHAPE = ["--shape", "64", "128", "--group-size", "64"]
FAST = ["--m", "1", "8", "--warmup-ms", "0.1", "--rep-ms", "0.5"]
TINY_BUDGET = Budget(warmup_ms=0.1, rep_ms=0.5, min_reps=3, max_reps=5)


@pytest.fixture
def emulation_only(fresh_registry, monkeypatch, tmp_path):
    monkeypatch.setenv("KERNEL_CORE_PLUGINS", "emulation")
    monkeypatch.setenv("KERNEL_CORE_TUNE_TABLE", str(tmp_path / "tune.json"))
    fresh_registry.reload()
    tune.reload()
    yield tmp_path
    tune.reload()


def test_presets_hold_the_documented_shapes():
    shapes = {name: [(p.n, p.k) for p in layers] for name, layers in PRESETS.items()}
    assert shapes["llama-3-8b"] == [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)]
    assert shapes["llama-3-70b"] == [(10240, 8192), (8192, 8192), (57344, 8192), (8192, 28672)]
    assert shapes["deepseek-v3"][:4] == [(7168, 18432), (18432, 7168), (4096, 7168), (2112, 7168)]
    assert all(p.source for layers in PRESETS.values() for p in layers)
    with pytest.raises(ValueError, match="unknown preset 'llama-2'; expected one of"):
        preset_layers("llama-2")


def test_preset_layers_take_the_layer_options():
    args = build_parser().parse_args(
        ["bench", "fp8", "--preset", "llama-3-70b", "--shape", "256", "512"])
    layers = _bench_layers(args)
    assert [layer.label for layer in layers] == [
        "llama-3-70b.qkv", "llama-3-70b.o", "llama-3-70b.gate_up", "llama-3-70b.down", "256x512"]
    assert layers[2].config.weight_shape == (57344, 8192)
    assert all(layer.config.family == "fp8" for layer in layers)


def test_rotation_exceeds_the_l2():
    mib = 1 << 20
    assert rotation_count(10 * mib, 50 * mib) == 10  # 2 x L2 / set
    assert rotation_count(200 * mib, 50 * mib) == 1
    assert rotation_count(1, 50 * mib) == 16  # capped
    assert rotation_count(10 * mib, 0) == 1  # CPU: nothing to rotate against


def test_paired_ratios_come_from_the_same_rounds():
    """A drift common to both sides cancels round by round; the range is the rounds' own."""
    reference = [100.0, 120.0, 110.0, 200.0]  # the machine slows down in round 4
    candidate = [50.0, 60.0, 50.0, 100.0]
    result = paired(reference, candidate)
    assert result["ratio"] == pytest.approx(2.0)  # median of 2.0, 2.0, 2.2, 2.0
    assert (result["ratio_min"], result["ratio_max"]) == (pytest.approx(2.0), pytest.approx(2.2))
    assert result["us"] == pytest.approx(55.0) and result["reference_us"] == pytest.approx(115.0)
    assert paired("cublas refused", candidate) == "reference failed: cublas refused"
    assert paired(reference, "launch refused") == "launch refused"
    with pytest.raises(ValueError):
        paired(reference, candidate[:3])


def test_time_calls_reports_the_median_per_call_on_cpu():
    calls = [lambda: time.sleep(0.002), lambda: time.sleep(0.002)]
    timing = time_calls(calls, torch.device("cpu"), use_graph=False, budget=CPU_BUDGET)
    assert timing.mode == "cpu" and timing.samples >= CPU_BUDGET.min_reps
    assert 1900 <= timing.median_us < 20000  # per call, not per pass of two calls
    with pytest.raises(ValueError, match="at least one call"):
        time_calls([], torch.device("cpu"), use_graph=False, budget=CPU_BUDGET)


def test_run_bench_times_the_emulation_against_matmul(emulation_only, capsys):
    config = MPLinearLayerConfig(weight_shape=(64, 128), group_size=64)
    report = run_bench([BenchLayer("tiny", config)], (1, 8), budget=TINY_BUDGET)
    layer = report.layers[0]
    assert layer.baseline == "torch.matmul(bf16)"
    assert layer.names == ["torch.matmul(bf16)", "EmulationMPLinearKernel"]
    assert {(r.name, r.m) for r in layer.results} == {
        (name, m) for name in layer.names for m in (1, 8)}
    for r in layer.results:
        assert r.error is None and r.time_us > 0 and r.mode == "cpu"
        assert r.rel_error < 1e-2  # both compute with the same decoded weight
        if r.kind == "baseline":
            assert r.speedup == 1.0
        else:
            assert r.speedup == pytest.approx(layer.times_by_m("baseline")[r.m][layer.baseline]
                                              / r.time_us)
    assert set(layer.times_by_m("kernel")) == {1, 8}
    assert report.environment == tune.environment_key()
    progress = capsys.readouterr().err
    assert "4/4 tiny M=8 EmulationMPLinearKernel" in progress
    table = report.table()
    assert "tiny: mp(N=64, K=128" in table and "EmulationMPLinearKernel" in table


def test_bench_cli_table_json_and_plot(emulation_only, capsys):
    tmp = emulation_only
    assert main(["bench", "mp", *SHAPE, *FAST]) == 0
    captured = capsys.readouterr()
    assert "times in us; (speedup over torch.matmul(bf16))" in captured.out
    assert "EmulationMPLinearKernel" in captured.out and "x)" in captured.out
    assert "[" in captured.err and "/4" in captured.err  # the progress bar

    assert main(["bench", "mp", *SHAPE, *FAST, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["m_values"] == [1, 8] and data["command"].startswith("kernel-core bench mp")
    assert data["layers"][0]["config"]["weight_shape"] == [64, 128]

    png, report = tmp / "speedup.png", tmp / "bench.json"
    assert main(["bench", "mp", *SHAPE, *FAST, "--json", str(report), "--plot", str(png)]) == 0
    assert "times in us" in capsys.readouterr().out
    assert json.loads(report.read_text())["layers"][0]["label"] == "64x128"
    raw = png.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
    width, height = struct.unpack(">II", raw[16:24])
    assert width > 300 and height > 200 and len(raw) > 10_000


def test_plot_without_matplotlib_is_a_one_line_error(emulation_only, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["bench", "mp", *SHAPE, *FAST, "--plot", str(emulation_only / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "--plot needs matplotlib" in err


def test_bench_without_layers_is_a_usage_error(emulation_only, capsys):
    assert main(["bench", "mp"]) == 2
    assert "give --shape N K (repeatable) or --preset NAME" in capsys.readouterr().err
    assert main(["bench", "mp", "--preset", "gpt-5"]) == 2
    assert "unknown preset 'gpt-5'" in capsys.readouterr().err


def test_tune_writes_merges_and_selection_reads(emulation_only, capsys):
    output = emulation_only / "my-table.json"
    assert main(["tune", "mp", *SHAPE, *FAST, "--output", str(output)]) == 0
    assert main(["tune", "mp", *SHAPE, "--m", "4", "--rep-ms", "0.5", "--output", str(output)]) == 0
    assert f"wrote tune table {output}" in capsys.readouterr().err
    table = tune.TuneTable.load(output)
    (entry,) = table.data["entries"]
    assert entry["environment"] == tune.environment_key()
    (layer,) = entry["layers"]
    assert set(layer["times_us"]) == {"1", "4", "8"}  # the second run merged into the first
    assert set(layer["times_us"]["4"]) == {"EmulationMPLinearKernel"}
    assert set(layer["baselines_us"]["4"]) == {"torch.matmul(bf16)"}
    assert layer["pin"] is None and layer["label"] == "64x128"
    # Selection reads the table where KERNEL_CORE_TUNE_TABLE points.
    (emulation_only / "tune.json").write_text(output.read_text())
    tune.reload()
    assert main(["explain", "mp", *SHAPE, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    measured = {c["name"]: c["measured_us"] for c in data["candidates"]}
    assert measured["EmulationMPLinearKernel"] > 0
    assert "geometric mean over M=1,4,8" in data["measured_source"]
