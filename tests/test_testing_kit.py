"""The conformance kit catches broken kernels (and passes a correct one).

Each broken kernel is the emulation kernel with one deliberate bug; the kit's check functions
must raise :class:`ConformanceError` naming it, and a pytest run of ``conformance_tests`` on it
must fail.
"""

from __future__ import annotations

import os

import pytest
import torch

from kernel_core import (
    FP8ScaledMMLinearLayerConfig,
    MPLinearLayerConfig,
    NvFp4LinearLayerConfig,
    replace_parameter,
)
from kernel_core.testing import (
    GRID_ENV,
    ConformanceError,
    check_conformance,
    check_cuda_graph,
    check_metadata,
    check_refusals,
    check_rejects_bad_input,
    conformance_tests,
    kernel_configs,
    runnable_device,
    tolerance_for,
)
from kernel_core_emulation.kernels import (
    EmulationFP8LinearKernel,
    EmulationMPLinearKernel,
    EmulationMxfp8LinearKernel,
    EmulationNvFp4LinearKernel,
)

pytest_plugins = ["pytester"]

MP = MPLinearLayerConfig(weight_shape=(64, 128), group_size=32, act_dtype=torch.float16)
FP8 = FP8ScaledMMLinearLayerConfig(weight_shape=(64, 128), act_dtype=torch.bfloat16)
NVFP4 = NvFp4LinearLayerConfig(weight_shape=(64, 128), activation_mode="w4a16",
                               act_dtype=torch.bfloat16)
SMALL_M = (1, 7)


class DropsBias(EmulationMPLinearKernel):
    def apply_weights(self, layer, x, bias=None):
        return super().apply_weights(layer, x, None)


class DoublesWeightScale(EmulationFP8LinearKernel):
    def process_weights_after_loading(self, layer):
        super().process_weights_after_loading(layer)
        replace_parameter(layer, "weight_scale", layer.weight_scale * 2)


class SwapsNibbles(EmulationNvFp4LinearKernel):
    """Reads the odd element of each byte from the low nibble (the wrong E2M1 order)."""

    def process_weights_after_loading(self, layer):
        super().process_weights_after_loading(layer)
        w = layer.weight
        replace_parameter(layer, "weight", (w << 4) | (w >> 4))


class ReplacesParameters(EmulationMPLinearKernel):
    def process_weights_after_loading(self, layer):
        super().process_weights_after_loading(layer)
        layer.weight = torch.nn.Parameter(layer.weight.data.clone(), requires_grad=False)


class LeavesLastRowUnwritten(EmulationMPLinearKernel):
    def apply_weights(self, layer, x, bias=None):
        full = super().apply_weights(layer, x, bias)
        out = torch.empty_like(full)
        out[..., :-1, :] = full[..., :-1, :]
        return out


class Nondeterministic(EmulationMPLinearKernel):
    def apply_weights(self, layer, x, bias=None):
        out = super().apply_weights(layer, x, bias)
        return out + 1e-3 * out.abs().amax() * torch.rand_like(out)


class FlattensBatch(EmulationMPLinearKernel):
    def apply_weights(self, layer, x, bias=None):
        return super().apply_weights(layer, x.reshape(-1, x.shape[-1]), bias)


class NoInputChecks(EmulationMPLinearKernel):
    def check_apply_inputs(self, x, bias):
        pass


class RefusesWithoutReason(EmulationMPLinearKernel):
    @classmethod
    def can_implement(cls, config):
        if config.act_dtype != torch.float16:
            return False, ""
        return True, None


class CudaOnly(EmulationMPLinearKernel):
    platforms = frozenset({"cuda"})


def test_a_correct_kernel_passes_and_reports_its_errors() -> None:
    report = check_conformance(EmulationMPLinearKernel, MP, m_values=SMALL_M, device="cpu")
    assert set(report.errors) >= {"M=1", "M=7", "bias", "3-D input", "non-contiguous input"}
    assert report.worst <= report.tolerance == tolerance_for(MP)


@pytest.mark.parametrize(
    ("kernel", "config", "message"),
    [
        (DropsBias, MP, "relative error"),
        (DoublesWeightScale, FP8, "relative error"),
        (SwapsNibbles, NVFP4, "relative error"),
        (ReplacesParameters, MP, "replaced the Parameter object 'weight'"),
        (Nondeterministic, MP, "repeated call"),
        (FlattensBatch, MP, r"3-D input\]: expected output shape \[2, 5, 64\]"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_a_broken_kernel_fails(kernel, config, message: str) -> None:
    with pytest.raises(ConformanceError, match=message):
        check_conformance(kernel, config, m_values=SMALL_M, device="cpu")


def test_unwritten_output_is_caught_by_the_poison() -> None:
    # The CPU allocator reuses the freed NaN block only sometimes; the output is then either NaN
    # (the poison) or stale garbage: both fail, by finiteness or by relative error.
    with pytest.raises(ConformanceError, match="non-finite|relative error"):
        check_conformance(LeavesLastRowUnwritten, MP, m_values=(257,), device="cpu")


def test_bad_input_must_be_a_value_error() -> None:
    check_rejects_bad_input(EmulationMPLinearKernel, MP, device="cpu")
    with pytest.raises(ConformanceError, match="expected a ValueError"):
        check_rejects_bad_input(NoInputChecks, MP, device="cpu")


def test_refusals_need_a_reason() -> None:
    accepted, refused = kernel_configs(RefusesWithoutReason, "quick")
    assert accepted and all(p.config.act_dtype == torch.float16 for p in accepted)
    assert refused
    with pytest.raises(ConformanceError, match="refused without a reason"):
        check_refusals(RefusesWithoutReason, refused)
    assert check_refusals(EmulationMPLinearKernel, []) == 0


def test_metadata_and_platform_skip() -> None:
    check_metadata(EmulationMPLinearKernel)
    with pytest.raises(ConformanceError, match="not a kernel of any family"):
        check_metadata(int)
    if not torch.cuda.is_available():
        device, reason = runnable_device(CudaOnly)
        assert device is None and "runs on cuda" in reason
    assert [m.name for m in conformance_tests(CudaOnly).pytestmark] == ["gpu"]
    assert not hasattr(conformance_tests(EmulationMPLinearKernel), "pytestmark")


def test_cuda_graph_check_needs_cuda() -> None:
    with pytest.raises(ConformanceError, match="CUDA graphs need a CUDA device, found cpu"):
        check_cuda_graph(EmulationMPLinearKernel, MP, device="cpu")


def test_full_grid_is_larger_than_quick() -> None:
    quick, _ = kernel_configs(EmulationMPLinearKernel, "quick")
    full, _ = kernel_configs(EmulationMPLinearKernel, "full")
    assert 0 < len(quick) < len(full)
    covered = {choice for p in quick for choice in p.choices}
    assert covered == {choice for p in full for choice in p.choices}


def test_the_pytest_suite_passes_a_good_kernel_and_fails_a_broken_one(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_suite="""
        from kernel_core.testing import conformance_tests
        from kernel_core_emulation.kernels import EmulationMxfp8LinearKernel

        class DropsBias(EmulationMxfp8LinearKernel):
            def apply_weights(self, layer, x, bias=None):
                return super().apply_weights(layer, x, None)

        TestGood = conformance_tests(EmulationMxfp8LinearKernel)
        TestBroken = conformance_tests(DropsBias)
        """
    )
    monkeypatch.setenv(GRID_ENV, "full")
    result = pytester.runpytest("-p", "kernel_core.testing.plugin", "--kernel-core-grid=quick")
    assert os.environ[GRID_ENV] == "full"  # the option applied to that session only
    result.stdout.fnmatch_lines(["kernel-core conformance: grid=quick*"])
    outcomes = result.parseoutcomes()
    cases = len(kernel_configs(EmulationMxfp8LinearKernel, "quick")[0])
    # With CUDA each config also has a CUDA graph test; without, each class skips one.
    per_config = 2 if torch.cuda.is_available() else 1
    # Broken: every config fails, and so does the bad-input test (a wrong bias is not noticed).
    assert outcomes["failed"] == per_config * cases + 1
    # Good: every config, metadata, bad input; broken: metadata.
    assert outcomes["passed"] == per_config * cases + 2 + 1
    # Both skip the refusal test (the emulation kernel accepts everything), and the graph test.
    assert outcomes["skipped"] == (2 if torch.cuda.is_available() else 4)
