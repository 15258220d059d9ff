"""Plugin discovery, isolation, allowlist, strict mode, in-process and scoped registration."""

from __future__ import annotations

import pytest

import kernel_core
from kernel_core import MPLinearLayerConfig, choose_kernel, hookimpl
from kernel_core.registry import DuplicateKernelError

MP4 = MPLinearLayerConfig(weight_shape=(256, 512))


def test_the_four_project_plugins_are_discovered(fresh_registry):
    by_name = {p.name: p for p in fresh_registry.plugins()}
    for name in ("emulation", "marlin", "cutlass", "flashinfer"):
        assert by_name[name].distribution == f"kernel-core-{name}"
        assert by_name[name].version
        assert by_name[name].error is None


def test_installed_fixture_plugin_is_discovered_and_its_kernel_selected(
    with_fixture_plugins, monkeypatch
):
    record = {p.name: p for p in with_fixture_plugins.plugins()}["fixture_good"]
    assert record.distribution == "kernel-core-fixture-good"
    assert record.kernels == ["FixtureMPKernel"]
    kernel = with_fixture_plugins.get("FixtureMPKernel")
    assert kernel.provider == "fixture_good"
    assert kernel.family == "mp"
    # Nothing of higher priority accepts a CPU mp layer, so the fixture's kernel wins here.
    monkeypatch.setenv("KERNEL_CORE_PLUGINS", "fixture_good")
    with_fixture_plugins.reload()
    assert choose_kernel(MP4, platform="cpu") is with_fixture_plugins.get("FixtureMPKernel")


def test_broken_plugins_are_isolated_and_recorded(with_fixture_plugins):
    records = {p.name: p for p in with_fixture_plugins.plugins()}
    assert "import failed: ImportError" in records["fixture_broken_import"].error
    assert "register_kernels failed: RuntimeError" in records["fixture_broken_hook"].error
    # The kernel registered before the hook raised does not stay.
    assert records["fixture_broken_hook"].kernels == []
    names = {k.name for k in with_fixture_plugins.kernels()}
    assert "HalfRegisteredKernel" not in names
    # Selection still works.
    assert choose_kernel(MP4, platform="cpu").name == "FixtureMPKernel"


def test_strict_mode_reraises_the_plugin_error(with_fixture_plugins, monkeypatch):
    monkeypatch.setenv("KERNEL_CORE_STRICT_PLUGINS", "1")
    monkeypatch.setenv("KERNEL_CORE_PLUGINS", "fixture_broken_import")
    with_fixture_plugins.reload()
    with pytest.raises(ImportError, match="dependency of this plugin is missing"):
        with_fixture_plugins.plugins()


def test_allowlist_loads_only_named_plugins(fresh_registry, monkeypatch):
    monkeypatch.setenv("KERNEL_CORE_PLUGINS", "emulation, cutlass")
    fresh_registry.reload()
    assert sorted(p.name for p in fresh_registry.plugins()) == ["cutlass", "emulation"]
    monkeypatch.setenv("KERNEL_CORE_PLUGINS", "")
    fresh_registry.reload()
    assert fresh_registry.plugins() == []


def test_scoped_registration_leaves_no_trace(fresh_registry, kernel_factory):
    before = {k.name for k in fresh_registry.kernels()}
    with kernel_core.scoped_registry():
        kernel_core.register_kernel(kernel_factory(name="ScopedKernel"))
        assert "ScopedKernel" in {k.name for k in fresh_registry.kernels()}
    assert {k.name for k in fresh_registry.kernels()} == before
    assert all(p.name != "<in-process>" for p in fresh_registry.plugins())


def test_in_process_plugin_object_registers_through_its_hook(fresh_registry, kernel_factory):
    kernel = kernel_factory(name="FromPluginObject")

    class EnginePlugin:
        @hookimpl
        def register_kernels(self, register):
            register(kernel)

    with kernel_core.scoped_registry():
        record = kernel_core.register_plugin(EnginePlugin(), name="engine")
        assert record.kernels == ["FromPluginObject"]
        assert kernel.provider == "engine"
        with pytest.raises(ValueError, match="already registered"):
            kernel_core.register_plugin(EnginePlugin(), name="engine")
    assert "engine" not in {p.name for p in fresh_registry.plugins()}


def test_duplicate_kernel_names_are_an_error_naming_both_providers(fresh_registry, kernel_factory):
    with kernel_core.scoped_registry():
        kernel_core.register_kernel(kernel_factory(name="Twin"), provider="first")
        with pytest.raises(DuplicateKernelError, match="'first' and by 'second'"):
            kernel_core.register_kernel(kernel_factory(name="Twin"), provider="second")


def test_non_kernel_and_abstract_classes_are_refused(fresh_registry):
    with kernel_core.scoped_registry():
        with pytest.raises(TypeError, match="not a kernel of any family"):
            kernel_core.register_kernel(int)
        with pytest.raises(TypeError, match="leaves abstract"):
            kernel_core.register_kernel(kernel_core.MPLinearKernel)


def test_unknown_kernel_name_lists_the_registered_ones(fresh_registry):
    with pytest.raises(ValueError, match="unknown kernel 'Nope'; registered kernels:"):
        fresh_registry.get("Nope")


def test_unknown_platform_in_kernel_metadata_is_refused(kernel_factory):
    with pytest.raises(TypeError, match="unknown platform"):
        kernel_factory(platforms=frozenset({"tpu"}))
