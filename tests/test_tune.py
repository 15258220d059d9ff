"""The tune table: reading, writing, merging, environment mismatch, ranking over M ranges, pins."""

from __future__ import annotations

import json
import logging
import math
import os

import pytest

import kernel_core
from kernel_core import MPLinearLayerConfig, choose_kernel, explain, tune
from kernel_core.cli import main

MP4 = MPLinearLayerConfig(weight_shape=(256, 512))
OTHER = MPLinearLayerConfig(weight_shape=(512, 512))

# Kernel A streams weights (wins at small M); kernel B is a GEMM (wins at large M).
TIMES = {
    1: {"A": 10.0, "B": 40.0},
    16: {"A": 12.0, "B": 41.0},
    64: {"A": 30.0, "B": 45.0},
    1024: {"A": 900.0, "B": 200.0},
    8192: {"A": 7000.0, "B": 1500.0},
}


@pytest.fixture
def tuned(fresh_registry, monkeypatch, tmp_path, kernel_factory):
    """In-process kernels A, B (priority 100) and Z (300, never measured); the table's path."""
    monkeypatch.setenv("KERNEL_CORE_PLUGINS", "")
    monkeypatch.setenv("KERNEL_CORE_TUNE_TABLE", str(tmp_path / "tune.json"))
    fresh_registry.reload()
    tune.reload()
    with kernel_core.scoped_registry():
        for name, priority in (("A", 100), ("B", 100), ("Z", 300)):
            kernel_core.register_kernel(kernel_factory(name=name, priority=priority))
        yield tmp_path / "tune.json"
    tune.reload()


def write_table(path, times=TIMES, pin=None, environment=None, config=MP4):
    table = tune.TuneTable()
    table.merge_layer(environment or tune.environment_key(), config, times, label="test")
    if pin is not None:
        table.data["entries"][0]["layers"][0]["pin"] = pin
    table.save(path)
    tune.reload()
    return table


def test_table_round_trip_merge_keeps_pins_and_older_points(tuned):
    table = write_table(tuned, {1: {"A": 10.0}}, pin="A")
    loaded = tune.TuneTable.load(tuned)
    layer = loaded.layers(tune.environment_key())[tune.layer_key(MP4)]
    assert layer["times_us"] == {"1": {"A": 10.0}} and layer["pin"] == "A"
    loaded.merge_layer(tune.environment_key(), MP4, {1: {"A": 11.5}, 64: {"B": 3.25}})
    loaded.merge_layer(tune.environment_key(), OTHER, {1: {"B": 1.0}})
    loaded.save()
    again = tune.TuneTable.load(tuned).layers(tune.environment_key())
    assert again[tune.layer_key(MP4)]["times_us"] == {"1": {"A": 11.5}, "64": {"B": 3.25}}
    assert again[tune.layer_key(MP4)]["pin"] == "A"
    assert again[tune.layer_key(OTHER)]["times_us"] == {"1": {"B": 1.0}}
    assert table.path == tuned and not list(tuned.parent.glob(".*tmp"))


def test_another_environment_gets_its_own_entry(tuned):
    table = write_table(tuned)
    other = {**tune.environment_key(), "device": "NVIDIA H200"}
    table.merge_layer(other, MP4, {1: {"B": 1.0}})
    assert len(table.data["entries"]) == 2
    assert table.layers(tune.environment_key())[tune.layer_key(MP4)]["times_us"]["1"] == {
        "A": 10.0, "B": 40.0}


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"format": "something else", "entries": []}', "expected a JSON object with format"),
    ('{"format": "kernel-core tune table 1", "entries": [{"environment": {}, "layers": '
     '[{"config": {}, "pin": 3}]}]}', "pin: expected null, a kernel name"),
])
def test_bad_tables_are_value_errors(tmp_path, text, message):
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        tune.TuneTable.load(path)


def test_resolve_m_range():
    assert tune.resolve_m_range(None) == tune.PHASES[tune.DEFAULT_PHASE] == (1, 64)
    assert tune.resolve_m_range("prefill") == (128, 8192)
    assert tune.resolve_m_range((3, 9)) == (3, 9)
    for bad in ("training", (0, 4), (8, 4), (1, 2, 3), (1.0, 4)):
        with pytest.raises(ValueError, match="m_range"):
            tune.resolve_m_range(bad)


def test_without_a_table_priority_decides(tuned):
    assert not tuned.exists()
    result = explain(MP4, platform="cpu")
    assert result.chosen.name == "Z" and result.measured_source is None
    assert all(c.measured_us is None for c in result.candidates)


def test_ranking_by_measured_time_over_the_m_range(tuned):
    write_table(tuned)
    decode = explain(MP4, platform="cpu")  # default: decode, M 1..64
    assert [c.name for c in decode.candidates] == ["A", "B", "Z"]
    expected_a = math.exp((math.log(10) + math.log(12) + math.log(30)) / 3)
    assert decode.candidates[0].measured_us == pytest.approx(expected_a)
    assert decode.candidates[2].measured_us is None  # Z was not measured: after the measured ones
    assert decode.m_range == (1, 64) and "M=1,16,64" in decode.measured_source
    prefill = explain(MP4, platform="cpu", m_range="prefill")
    assert prefill.chosen.name == "B"
    assert prefill.candidates[0].measured_us == pytest.approx(math.sqrt(200 * 1500))
    assert choose_kernel(MP4, platform="cpu", m_range=(512, 2048)).name == "B"
    # No measured point inside: the nearest measured M stands in.
    nearest = explain(MP4, platform="cpu", m_range=(2, 3)).candidates[0]
    assert nearest.measured_us == pytest.approx(10)
    # Another layer is not in the table: priority as before.
    assert choose_kernel(OTHER, platform="cpu").name == "Z"


def test_a_kernel_missing_a_point_of_the_range_gets_no_time(tuned):
    write_table(tuned, {1: {"A": 10.0, "B": 5.0}, 16: {"A": 12.0}})
    result = explain(MP4, platform="cpu", m_range=(1, 16))
    times = {c.name: c.measured_us for c in result.candidates}
    assert times == {"A": pytest.approx(math.sqrt(120)), "B": None, "Z": None}


def test_table_for_another_environment_is_ignored_with_one_warning(tuned, caplog):
    write_table(tuned, environment={**tune.environment_key(), "torch": "0.0.1"})
    with caplog.at_level(logging.WARNING, logger="kernel_core.tune"):
        assert choose_kernel(MP4, platform="cpu").name == "Z"
        assert choose_kernel(OTHER, platform="cpu").name == "Z"
        assert choose_kernel(MP4, platform="cpu", m_range="prefill").name == "Z"
    warnings = [r for r in caplog.records if "no entry for this environment" in r.message]
    assert len(warnings) == 1
    assert "0.0.1" in warnings[0].message and "kernel-core tune" in warnings[0].message


def test_an_unreadable_table_is_ignored_with_a_warning(tuned, caplog):
    tuned.write_text("{broken")
    tune.reload()
    with caplog.at_level(logging.WARNING, logger="kernel_core.tune"):
        assert choose_kernel(MP4, platform="cpu").name == "Z"
    assert any("is ignored: " in r.message and "not valid JSON" in r.message
               for r in caplog.records)


def test_pin_goes_first_with_the_reason_shown(tuned):
    write_table(tuned, pin="B")
    result = explain(MP4, platform="cpu")
    assert result.chosen.name == "B"
    assert result.candidates[0].pinned and not result.candidates[0].forced
    assert "(pinned by the tune table)" in result.table()
    assert result.as_dict()["candidates"][0]["pinned"] is True
    # An explicit force still wins over a pin.
    assert choose_kernel(MP4, platform="cpu", force="Z").name == "Z"


def test_pin_per_m_range(tuned):
    write_table(tuned, pin=[{"kernel": "Z", "m_min": 1, "m_max": 16}, {"kernel": "A", "m_min": 17}])
    assert choose_kernel(MP4, platform="cpu", m_range=(1, 8)).name == "Z"
    assert choose_kernel(MP4, platform="cpu", m_range=(32, 64)).name == "A"
    assert choose_kernel(MP4, platform="cpu", m_range="prefill").name == "A"


def test_a_pinned_kernel_that_cannot_serve_falls_through(tuned, kernel_factory, caplog):
    kernel_core.register_kernel(kernel_factory(name="Broken", implements=(False, "no")))
    write_table(tuned, pin="Broken")
    with caplog.at_level(logging.WARNING, logger="kernel_core.selection"):
        result = explain(MP4, platform="cpu")
    assert result.candidates[0].name == "Broken" and not result.candidates[0].accepted
    assert result.chosen.name == "A"
    assert any("pinned kernel Broken cannot serve" in r.message for r in caplog.records)


def test_edited_table_is_reread_when_its_mtime_changes(tuned):
    write_table(tuned)
    assert choose_kernel(MP4, platform="cpu").name == "A"
    data = json.loads(tuned.read_text())
    data["entries"][0]["layers"][0]["times_us"]["1"] = {"A": 10.0, "B": 0.01}
    tuned.write_text(json.dumps(data))
    stat = tuned.stat()
    os.utime(tuned, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    kernel_core.selection.clear_cache()  # selection's own cache; the hook sees the new mtime
    assert choose_kernel(MP4, platform="cpu").name == "B"


def test_explain_cli_m_range_and_phase(tuned, capsys):
    write_table(tuned)
    args = ["explain", "mp", "--shape", "256", "512", "--platform", "cpu"]
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["chosen"] == "A"
    assert main([*args, "--phase", "prefill"]) == 0
    out = capsys.readouterr().out
    assert "chosen: B" in out and "ranked by measured time" in out and "1024,8192" in out
    assert main([*args, "--m-range", "1", "16", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["m_range"] == [1, 16] and data["chosen"] == "A"
    assert main([*args, "--m-range", "0", "4"]) == 2
    assert "m_range" in capsys.readouterr().err
