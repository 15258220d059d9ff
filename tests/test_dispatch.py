"""Dispatch by M: the plan from the tune table, the choice per call, weight copies, their cost."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

import kernel_core
from kernel_core import MPLinearLayerConfig, init_kernel, tune
from kernel_core.cli import main
from kernel_core.dispatch import (
    DispatchingLinearKernel,
    Route,
    describe_plan,
    plan_by_m,
    weight_bytes,
)
from kernel_core.formats.layer import dequantize_weight, make_layer
from kernel_core.params import replace_parameter
from kernel_core.testing import relative_error
from kernel_core_emulation.kernels import EmulationMPLinearKernel

MP = MPLinearLayerConfig(weight_shape=(128, 256), group_size=64)


class SmallM(EmulationMPLinearKernel):
    """Reads the contract parameters as loaded (the emulation kernel), and records its calls."""

    priority = 100
    calls: ClassVar[list[int]] = []

    def apply_weights(self, layer, x, bias=None):
        type(self).calls.append(x.shape[0] if x.dim() == 2 else x.shape[:-1].numel())
        return super().apply_weights(layer, x, bias)


class LargeM(EmulationMPLinearKernel):
    """Repacks: doubles the scales in place, halves the output (exact in bf16). Sharing its
    processed layer with SmallM would double SmallM's outputs, so a shared copy is caught."""

    priority = 100
    calls: ClassVar[list[int]] = []

    def process_weights_after_loading(self, layer):
        super().process_weights_after_loading(layer)
        replace_parameter(layer, "weight_scale", layer.weight_scale * 2)

    def apply_weights(self, layer, x, bias=None):
        type(self).calls.append(x.shape[:-1].numel())
        return super().apply_weights(layer, x, bias) / 2


class SharedA(EmulationMPLinearKernel):
    priority = 100
    weight_layout = "contract"


class SharedB(EmulationMPLinearKernel):
    priority = 90
    weight_layout = "contract"


TIMES = {1: {"SmallM": 5.0, "LargeM": 20.0}, 16: {"SmallM": 6.0, "LargeM": 21.0},
         64: {"SmallM": 30.0, "LargeM": 22.0}, 1024: {"SmallM": 400.0, "LargeM": 90.0}}


@pytest.fixture
def table(fresh_registry, monkeypatch, tmp_path):
    monkeypatch.setenv("KERNEL_CORE_PLUGINS", "")
    monkeypatch.setenv("KERNEL_CORE_TUNE_TABLE", str(tmp_path / "tune.json"))
    fresh_registry.reload()
    tune.reload()
    SmallM.calls.clear()
    LargeM.calls.clear()
    with kernel_core.scoped_registry():
        for kernel in (SmallM, LargeM, SharedA, SharedB):
            kernel_core.register_kernel(kernel, provider="test")

        def write(times=TIMES, pin=None):
            t = tune.TuneTable()
            t.merge_layer(tune.environment_key(), MP, times)
            t.data["entries"][0]["layers"][0]["pin"] = pin
            t.save(tmp_path / "tune.json")
            tune.reload()

        yield write
    tune.reload()


def loaded_weight(layer):
    """The float64 weight the checkpoint parameters encode (read before any kernel repacks)."""
    return dequantize_weight(MP, layer, dtype=torch.float64)


def reference(weight, x):
    return x.double() @ weight.T


def test_plan_switches_after_the_last_point_a_kernel_wins(table):
    table()
    routes = plan_by_m(MP, platform="cpu")
    assert routes == (Route(16, SmallM), Route(None, LargeM))
    plan = describe_plan(MP, routes)
    assert plan["text"].startswith("M 1..16: SmallM; M>=17: LargeM")
    assert plan["weight_copies"] == 2 and plan["extra_bytes"] == weight_bytes(MP, SmallM)
    assert "holds 2 copies of the weights: +" in plan["text"]


def test_dispatching_kernel_picks_by_m_and_every_path_gives_the_reference(table):
    table()
    kernel = init_kernel(MP, platform="cpu", dispatch_by_m=True)
    assert isinstance(kernel, DispatchingLinearKernel)
    layer = make_layer(MP, seed=3)
    weight = loaded_weight(layer)
    kernel.process_weights_after_loading(layer)
    assert hasattr(layer, "dispatch_1")  # LargeM's own copy of the checkpoint parameters
    generator = torch.Generator().manual_seed(7)
    for m in (1, 16, 17, 64, 300):
        x = torch.randn(m, 256, generator=generator).to(torch.bfloat16)
        out = kernel.apply_weights(layer, x)
        assert out.shape == (m, 128) and out.dtype == torch.bfloat16
        assert relative_error(out, reference(weight, x)) < 1e-2, m
    assert SmallM.calls == [1, 16] and LargeM.calls == [17, 64, 300]
    x3 = torch.randn(2, 8, 256, generator=generator).to(torch.bfloat16)  # M = 2 * 8 tokens
    out3 = kernel.apply_weights(layer, x3)
    assert SmallM.calls[-1] == 16 and relative_error(out3, reference(weight, x3)) < 1e-2
    copy_bytes = sum(p.numel() * p.element_size() for p in layer.dispatch_1.parameters())
    info = kernel.describe()
    assert info["weight_copies"] == 2 and info["extra_bytes"] == copy_bytes > 0
    assert info["routes"] == [
        {"m_max": 16, "kernel": "SmallM"}, {"m_max": None, "kernel": "LargeM"}]
    assert info["memory"] == f"holds 2 copies of the weights: +{copy_bytes / 1e6:.1f} MB"


def test_kernels_with_the_same_layout_share_one_copy(table):
    table({1: {"SharedA": 1.0, "SharedB": 2.0}, 64: {"SharedA": 9.0, "SharedB": 3.0}})
    kernel = init_kernel(MP, platform="cpu", dispatch_by_m=True)
    assert isinstance(kernel, DispatchingLinearKernel)
    layer = make_layer(MP, seed=4)
    weight = loaded_weight(layer)
    kernel.process_weights_after_loading(layer)
    assert not hasattr(layer, "dispatch_1") and kernel.extra_bytes == 0
    assert kernel.memory_note() == "all kernels share one copy of the weights"
    for m in (1, 64):
        x = torch.randn(m, 256).to(torch.bfloat16)
        assert relative_error(kernel.apply_weights(layer, x), reference(weight, x)) < 1e-2


def test_one_best_kernel_or_no_table_gives_a_plain_kernel(table):
    kernel = init_kernel(MP, platform="cpu", dispatch_by_m=True)  # no table yet
    assert type(kernel) is LargeM  # equal priorities: the name decides
    table({1: {"SmallM": 5.0, "LargeM": 9.0}, 1024: {"SmallM": 50.0, "LargeM": 90.0}})
    assert type(init_kernel(MP, platform="cpu", dispatch_by_m=True)) is SmallM


def test_pins_per_m_range_shape_the_routes(table):
    table(pin=[{"kernel": "LargeM", "m_max": 1}])
    routes = plan_by_m(MP, platform="cpu")
    assert routes == (Route(1, LargeM), Route(16, SmallM), Route(None, LargeM))
    kernel = DispatchingLinearKernel(MP, routes)
    layer = make_layer(MP, seed=5)
    weight = loaded_weight(layer)
    kernel.process_weights_after_loading(layer)
    for m in (1, 2, 40):
        x = torch.randn(m, 256).to(torch.bfloat16)
        assert relative_error(kernel.apply_weights(layer, x), reference(weight, x)) < 1e-2
    assert LargeM.calls == [1, 40] and SmallM.calls == [2]


def test_routes_must_end_open(table):
    with pytest.raises(ValueError, match="two or more routes"):
        DispatchingLinearKernel(MP, (Route(16, SmallM), Route(64, LargeM)))
    with pytest.raises(ValueError, match="two or more routes"):
        DispatchingLinearKernel(MP, (Route(None, SmallM),))


def test_explain_shows_the_plan(table, capsys):
    table()
    assert main(["explain", "mp", "--shape", "128", "256", "--group-size", "64",
                 "--platform", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "fastest by M" in out and "M 1..16: SmallM; M>=17: LargeM" in out
    assert "holds 2 copies of the weights" in out


def test_the_branch_on_m_traces_into_one_graph_per_m(table):
    """torch.compile(fullgraph=True): the branch on x.shape is resolved at trace time (a guard on
    M), so each compiled graph holds exactly one kernel's ops. The eager backend checks tracing."""
    kernel = DispatchingLinearKernel(MP, (Route(16, SmallM), Route(None, LargeM)))
    layer = make_layer(MP, seed=6)
    weight = loaded_weight(layer)
    kernel.process_weights_after_loading(layer)
    compiled = torch.compile(lambda x: kernel.apply_weights(layer, x), fullgraph=True,
                             backend="eager")
    for m in (4, 32):
        x = torch.randn(m, 256).to(torch.bfloat16)
        out = compiled(x)
        assert torch.equal(out, kernel.apply_weights(layer, x))
        assert relative_error(out, reference(weight, x)) < 1e-2
    assert set(SmallM.calls) == {4} and set(LargeM.calls) == {32}
