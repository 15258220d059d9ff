"""Selection: order, force, disable, probe failures, reasons, platform, caching."""

from __future__ import annotations

import pytest

import kernel_core
from kernel_core import (
    FP8ScaledMMLinearLayerConfig,
    MPLinearLayerConfig,
    NoKernelError,
    Priority,
    choose_kernel,
    explain,
    init_kernel,
)
from kernel_core.selection import set_measured_times

MP4 = MPLinearLayerConfig(weight_shape=(256, 512))


@pytest.fixture
def isolated(fresh_registry, monkeypatch):
    """Only in-process kernels: no installed plugin takes part."""
    monkeypatch.setenv("KERNEL_CORE_PLUGINS", "")
    fresh_registry.reload()
    with kernel_core.scoped_registry() as reg:
        yield reg


def test_higher_priority_wins_and_name_breaks_ties(isolated, kernel_factory):
    kernel_core.register_kernel(kernel_factory(name="Low", priority=Priority.REFERENCE))
    kernel_core.register_kernel(kernel_factory(name="B", priority=Priority.SPECIALIZED))
    kernel_core.register_kernel(kernel_factory(name="A", priority=Priority.SPECIALIZED))
    result = explain(MP4, platform="cpu")
    assert [c.name for c in result.candidates] == ["A", "B", "Low"]
    assert choose_kernel(MP4, platform="cpu").name == "A"


def test_first_accepted_wins_and_rejections_carry_reasons(isolated, kernel_factory):
    kernel_core.register_kernel(
        kernel_factory(name="NoHw", priority=300, supported=(False, "needs SM90"))
    )
    kernel_core.register_kernel(
        kernel_factory(name="NoLayer", priority=200, implements=(False, "group size 32 only"))
    )
    kernel_core.register_kernel(kernel_factory(name="Boom", priority=150, raises_in="can_implement"))
    kernel_core.register_kernel(kernel_factory(name="Works", priority=100))
    result = explain(MP4, platform="cpu")
    reasons = {c.name: c.reason for c in result.candidates}
    assert reasons == {
        "NoHw": "needs SM90",
        "NoLayer": "group size 32 only",
        "Boom": "can_implement raised RuntimeError: probe exploded",
        "Works": None,
    }
    assert result.chosen.name == "Works"
    assert "* " in result.table().splitlines()[-1] or "Works" in result.table()


def test_no_kernel_error_lists_every_candidate(isolated, kernel_factory):
    kernel_core.register_kernel(kernel_factory(name="X", supported=(False, "no GPU")))
    kernel_core.register_kernel(kernel_factory(name="Y", raises_in="is_supported"))
    kernel_core.register_kernel(kernel_factory(name="Z", supported=(False, None)))
    with pytest.raises(NoKernelError) as info:
        choose_kernel(MP4, platform="cpu")
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "X (<in-process>): no GPU" in message
    assert "Y (<in-process>): is_supported raised RuntimeError" in message
    assert "Z (<in-process>): is_supported refused without a reason" in message
    assert len(info.value.explanation.candidates) == 3


def test_empty_family_says_no_kernel_is_registered(isolated):
    with pytest.raises(NoKernelError, match="no kernel of this family is registered"):
        choose_kernel(MP4, platform="cpu")


def test_platform_filter(isolated, kernel_factory):
    kernel_core.register_kernel(
        kernel_factory(name="GpuOnly", priority=300, platforms=frozenset({"cuda"}))
    )
    kernel_core.register_kernel(kernel_factory(name="Anywhere", priority=0))
    cpu = explain(MP4, platform="cpu")
    assert cpu.chosen.name == "Anywhere"
    assert cpu.candidates[0].reason == "runs on cuda, not cpu"
    assert choose_kernel(MP4, 90, platform="cuda").name == "GpuOnly"


def test_other_family_kernels_are_not_candidates(isolated, kernel_factory):
    kernel_core.register_kernel(kernel_factory(family="fp8", name="Fp8Only"))
    with pytest.raises(NoKernelError):
        choose_kernel(MP4, platform="cpu")
    fp8 = FP8ScaledMMLinearLayerConfig(weight_shape=(256, 512))
    assert choose_kernel(fp8, platform="cpu").name == "Fp8Only"


def test_force_argument_and_environment(isolated, kernel_factory, monkeypatch):
    for name, priority in (("Top", 300), ("Mid", 200), ("Bottom", 100)):
        kernel_core.register_kernel(kernel_factory(name=name, priority=priority))
    assert choose_kernel(MP4, platform="cpu", force="Bottom").name == "Bottom"
    monkeypatch.setenv("KERNEL_CORE_FORCE_KERNELS", "Mid")
    assert choose_kernel(MP4, platform="cpu").name == "Mid"
    # The argument comes before the environment.
    assert choose_kernel(MP4, platform="cpu", force="Bottom").name == "Bottom"
    candidates = explain(MP4, platform="cpu", force="Bottom").candidates
    assert [c.name for c in candidates] == ["Bottom", "Mid", "Top"]
    assert [c.forced for c in candidates] == [True, True, False]


def test_forced_kernel_that_cannot_serve_says_why_and_the_rest_follow(
    isolated, kernel_factory, caplog
):
    kernel_core.register_kernel(kernel_factory(name="Picky", implements=(False, "K too small")))
    kernel_core.register_kernel(kernel_factory(name="Fine", priority=0))
    with caplog.at_level("WARNING"):
        assert choose_kernel(MP4, platform="cpu", force="Picky").name == "Fine"
    assert "forced kernel Picky cannot serve" in caplog.text and "K too small" in caplog.text


def test_forcing_an_unknown_or_foreign_kernel_is_a_clear_error(isolated, kernel_factory):
    kernel_core.register_kernel(kernel_factory(name="Mp"))
    kernel_core.register_kernel(kernel_factory(family="fp8", name="Fp8"))
    with pytest.raises(ValueError, match="forced kernel 'Nope' is not registered; 'mp' kernels: Mp"):
        choose_kernel(MP4, platform="cpu", force="Nope")
    with pytest.raises(ValueError, match="'Fp8' is a 'fp8' kernel; the layer is 'mp'"):
        choose_kernel(MP4, platform="cpu", force="Fp8")


def test_disabled_kernels(isolated, kernel_factory, monkeypatch):
    kernel_core.register_kernel(kernel_factory(name="Fast", priority=300))
    kernel_core.register_kernel(kernel_factory(name="Slow", priority=100))
    monkeypatch.setenv("KERNEL_CORE_DISABLED_KERNELS", "Fast")
    result = explain(MP4, platform="cpu")
    assert result.chosen.name == "Slow"
    assert result.candidates[0].reason == "disabled by KERNEL_CORE_DISABLED_KERNELS"


def test_results_are_cached_and_invalidated_by_registry_changes(isolated, kernel_factory):
    kernel_core.register_kernel(kernel_factory(name="First", priority=100))
    a = explain(MP4, platform="cpu")
    assert explain(MP4, platform="cpu") is a
    assert explain(MPLinearLayerConfig(weight_shape=(256, 512)), platform="cpu") is a
    kernel_core.register_kernel(kernel_factory(name="Better", priority=300))
    b = explain(MP4, platform="cpu")
    assert b is not a and b.chosen.name == "Better"


def test_measured_times_rank_before_priority(isolated, kernel_factory):
    kernel_core.register_kernel(kernel_factory(name="HighPrio", priority=300))
    kernel_core.register_kernel(kernel_factory(name="MeasuredFast", priority=100))
    set_measured_times(lambda config, kernels: {"MeasuredFast": 10.0, "HighPrio": 25.0})
    try:
        result = explain(MP4, platform="cpu")
        assert result.chosen.name == "MeasuredFast"
        assert result.candidates[0].measured_us == 10.0
    finally:
        set_measured_times(None)
    assert choose_kernel(MP4, platform="cpu").name == "HighPrio"


def test_init_kernel_constructs_and_kernel_refuses_foreign_configs(isolated, kernel_factory):
    kernel_core.register_kernel(kernel_factory(name="Ok"))
    kernel = init_kernel(MP4, platform="cpu")
    assert kernel.config is MP4
    with pytest.raises(kernel_core.KernelConfigError, match="expects a MPLinearLayerConfig"):
        type(kernel)(FP8ScaledMMLinearLayerConfig(weight_shape=(256, 512)))
    refusing = kernel_factory(name="Refuses", implements=(False, "no thanks"))
    with pytest.raises(kernel_core.KernelConfigError, match="no thanks"):
        refusing(MP4)


def test_explain_as_dict_is_json_ready(isolated, kernel_factory):
    import json

    kernel_core.register_kernel(kernel_factory(name="Ok"))
    data = json.loads(json.dumps(explain(MP4, platform="cpu").as_dict()))
    assert data["chosen"] == "Ok"
    assert data["config"]["weight_type"] == "uint4b8"
    assert data["config"]["act_dtype"] == "bfloat16"


def test_probe_platform_turns_every_failure_into_a_reason(kernel_factory):
    from kernel_core.selection import probe_platform

    ok = kernel_factory(name="Fine")
    assert probe_platform(ok, None, "cpu") == (True, None)
    assert probe_platform(ok, None, "xpu") == (False, "runs on cpu, cuda, not xpu")
    boom = kernel_factory(name="Boom", raises_in="is_supported")
    assert probe_platform(boom, None, "cpu") == (
        False, "is_supported raised RuntimeError: probe exploded"
    )
    malformed = kernel_factory(name="Malformed", supported=True)  # not a (bool, reason) pair
    assert probe_platform(malformed, None, "cpu") == (
        False, "is_supported returned True, expected (bool, reason)"
    )
