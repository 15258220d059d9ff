"""The kernel-core command: JSON outputs, explain, and one-line errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kernel_core.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kernel_core.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_plugins_json_lists_the_four_distributions(fresh_registry, capsys):
    assert main(["plugins", "--json"]) == 0
    records = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name in ("emulation", "marlin", "cutlass", "flashinfer"):
        assert records[name]["distribution"] == f"kernel-core-{name}"
        assert set(records[name]) == {"name", "distribution", "version", "kernels", "error"}


def test_kernels_json_says_whether_each_runs_here(fresh_registry, capsys):
    assert main(["kernels", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    for row in rows:
        assert set(row) >= {"name", "family", "provider", "priority", "runs_here", "reason"}
        if not row["runs_here"]:
            assert row["reason"], f"{row['name']} does not run here but gives no reason"


def test_explain_json_for_a_layer(with_fixture_plugins, monkeypatch, capsys):
    monkeypatch.setenv("KERNEL_CORE_PLUGINS", "fixture_good")
    with_fixture_plugins.reload()
    code = main(["explain", "mp", "--shape", "256", "512", "--group-size", "128", "--json",
                 "--platform", "cpu"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["chosen"] == "FixtureMPKernel"
    assert data["config"]["group_size"] == 128
    code = main(["explain", "mp", "--shape", "256", "512", "--weight-type", "uint8",
                 "--platform", "cpu"])
    out = capsys.readouterr().out
    assert code == 1 and "only symmetric 4-bit weights" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["explain", "mp", "--shape", "256", "500"], "group_size=128 does not divide"),
        (["explain", "fp8", "--shape", "256", "512", "--activation-mode", "w4a4"],
         "activation_mode='w4a4' is not allowed"),
        (["explain", "bogus", "--shape", "1", "2"], "invalid choice: 'bogus'"),
        (["explain", "mp", "--shape", "256", "512", "--weight-type", "int3"],
         "unknown scalar type 'int3'"),
        (["explain", "mp", "--shape", "256", "512", "--force", "Nope"],
         "forced kernel 'Nope' is not registered"),
        (["explain", "int8", "--shape", "256", "512", "--activation-mode", "w8a16"],
         "--activation-mode does not apply to 'int8'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: command"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message in lines[0]


def test_the_installed_command_prints_no_traceback():
    result = run_cli("explain", "mp", "--shape", "256", "500")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "kernel-core: error: MPLinearLayerConfig.group_size=128 does not divide in_features=500"
    )
