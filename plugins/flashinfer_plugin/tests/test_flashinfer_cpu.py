"""CPU tests of the FlashInfer plugin: registration, refusal reasons, trap checks, environment.

None of these needs a GPU or flashinfer itself; where flashinfer's presence matters it is faked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import kernel_core
from kernel_core import FP8ScaledMMLinearLayerConfig, Fp8BlockLinearLayerConfig, Priority
from kernel_core.formats.fp8 import quantize_fp8, quantize_fp8_block
from kernel_core_flashinfer import environment
from kernel_core_flashinfer import kernels as kernels_module
from kernel_core_flashinfer.kernels import (
    FlashInferFp8BlockScaledMMLinearKernel as BlockKernel,
)
from kernel_core_flashinfer.kernels import FlashInferFp8ScaledMMLinearKernel as Fp8Kernel

KERNELS = (Fp8Kernel, BlockKernel)


def fp8_config(**fields) -> FP8ScaledMMLinearLayerConfig:
    base = dict(
        weight_shape=(256, 512), weight_scale_granularity="tensor", input_scale="dynamic",
        input_scale_granularity="tensor",
    )
    base.update(fields)
    return FP8ScaledMMLinearLayerConfig(**base)


def block_config(**fields) -> Fp8BlockLinearLayerConfig:
    base = dict(weight_shape=(576, 1024))
    base.update(fields)
    return Fp8BlockLinearLayerConfig(**base)


# -- registration ---------------------------------------------------------------------------


def test_plugin_registers_both_kernels() -> None:
    record = next(p for p in kernel_core.registry.plugins() if p.name == "flashinfer")
    assert record.error is None
    assert set(record.kernels) == {k.name for k in KERNELS}
    for kernel in KERNELS:
        assert kernel_core.registry.get(kernel.name) is kernel
        assert kernel.provider == "flashinfer"
        assert kernel.priority == Priority.LIBRARY
        assert kernel.platforms == frozenset({"cuda"})
    assert Fp8Kernel.family == "fp8" and BlockKernel.family == "fp8_block"


def test_registering_imports_neither_flashinfer_nor_triton() -> None:
    code = textwrap.dedent(
        """
        import sys, kernel_core
        kernel_core.registry.kernels()
        from kernel_core import explain, Fp8BlockLinearLayerConfig
        explain(Fp8BlockLinearLayerConfig(weight_shape=(256, 512)), 90, platform="cuda")
        print(sorted(m for m in ("flashinfer", "triton", "kernel_core_flashinfer.ops")
                     if m in sys.modules))
        """
    )
    env = dict(os.environ, KERNEL_CORE_PLUGINS="flashinfer")  # other plugins may load triton
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


# -- platform refusals ----------------------------------------------------------------------


@pytest.mark.parametrize("kernel", KERNELS)
def test_no_gpu_is_refused_with_reason(kernel) -> None:
    ok, reason = kernel.is_supported(None)
    assert not ok and "no CUDA device" in reason


def test_capability_gates() -> None:
    ok, reason = Fp8Kernel.is_supported(80)
    assert not ok and ">= 89" in reason and "80" in reason
    ok, reason = BlockKernel.is_supported(89)
    assert not ok and "90 exactly" in reason
    ok, reason = BlockKernel.is_supported(100)
    assert not ok and "found 100" in reason


@pytest.fixture
def fake_toolkit(monkeypatch, tmp_path):
    """A CUDA toolkit as far as the checks can tell, whatever this machine has."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "include").mkdir()
    (tmp_path / "bin" / "nvcc").write_text("")
    (tmp_path / "include" / "cuda_runtime.h").write_text("")
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("kernel,cc", [(Fp8Kernel, 90), (Fp8Kernel, 89), (BlockKernel, 90)])
def test_missing_flashinfer_is_refused_with_reason(kernel, cc, monkeypatch, fake_toolkit) -> None:
    real = environment.importlib.util.find_spec
    monkeypatch.setattr(
        environment.importlib.util, "find_spec",
        lambda name, *a: None if name == "flashinfer" else real(name, *a),
    )
    ok, reason = kernel.is_supported(cc)
    assert not ok and "flashinfer-python is not installed" in reason


def test_untested_flashinfer_release_is_refused(monkeypatch, fake_toolkit) -> None:
    pytest.importorskip("packaging")
    real = environment.importlib.util.find_spec
    monkeypatch.setattr(
        environment.importlib.util, "find_spec",
        lambda name, *a: object() if name == "flashinfer" else real(name, *a),
    )
    monkeypatch.setattr(environment.importlib.metadata, "version", lambda name: "0.6.6")
    ok, reason = Fp8Kernel.is_supported(90)
    assert not ok and "0.6.6" in reason and "0.7.2.post1" in reason
    monkeypatch.setattr(environment.importlib.metadata, "version", lambda name: "0.7.2.post1")
    assert Fp8Kernel.is_supported(90) == (True, None)
    assert BlockKernel.is_supported(90) == (True, None)


def test_missing_toolkit_is_refused(monkeypatch) -> None:
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setattr(environment, "find_cuda_home", lambda: None)
    ok, reason = BlockKernel.is_supported(90)
    assert not ok and "nvcc" in reason


# -- the traps, in can_implement -------------------------------------------------------------


@pytest.mark.parametrize(
    "fields,needle",
    [
        ({"weight_shape": (576 + 32, 1024)}, "multiple of 64"),
        ({"weight_shape": (576, 1024 + 64)}, "multiple of 128"),
        ({"out_dtype": torch.float16}, "bfloat16 bits"),
        ({"out_dtype": torch.float32}, "always writes bfloat16"),
        ({"act_dtype": torch.float16, "out_dtype": torch.bfloat16}, "bfloat16 activations only"),
    ],
)
def test_block_kernel_refuses_trap_configs(fields, needle) -> None:
    ok, reason = BlockKernel.can_implement(block_config(**fields))
    assert not ok and needle in reason
    with pytest.raises(kernel_core.KernelConfigError, match=needle):
        BlockKernel(block_config(**fields))


def test_block_kernel_accepts_aligned_bf16() -> None:
    for shape in ((576, 1024), (64, 128), (7168, 18432)):
        assert BlockKernel.can_implement(block_config(weight_shape=shape)) == (True, None)


@pytest.mark.parametrize(
    "fields,needle",
    [
        ({"weight_scale_granularity": "channel"}, "per-channel"),
        ({"input_scale_granularity": "token"}, "per-token"),
        ({"activation_mode": "w8a16"}, "W8A16"),
        ({"out_dtype": torch.float32}, "bfloat16 or float16"),
        ({"weight_shape": (256, 520)}, "multiples of 16"),
    ],
)
def test_fp8_kernel_refuses_with_reason(fields, needle) -> None:
    ok, reason = Fp8Kernel.can_implement(fp8_config(**fields))
    assert not ok and needle in reason


@pytest.mark.parametrize("mode", ["static", "dynamic"])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
def test_fp8_kernel_accepts_per_tensor(mode, out_dtype) -> None:
    assert Fp8Kernel.can_implement(fp8_config(input_scale=mode, out_dtype=out_dtype)) == (True, None)


# -- weights after loading ----------------------------------------------------------------------


def _block_layer(n: int, k: int, per_row: bool = False) -> torch.nn.Module:
    w = torch.randn(n, k) * torch.exp(torch.randn(n, 1))
    layer = torch.nn.Module()
    if per_row:
        rows = w.unflatten(1, (k // 128, 128))
        scale = rows.abs().amax(-1) / 448
        q = (rows / scale[..., None]).clamp(-448, 448).to(torch.float8_e4m3fn).flatten(1)
    else:
        q, scale = quantize_fp8_block(w)
    layer.weight = torch.nn.Parameter(q, requires_grad=False)
    layer.weight_scale = torch.nn.Parameter(scale, requires_grad=False)
    return layer


def test_per_row_weight_scales_are_refused_with_reason() -> None:
    kernel = BlockKernel(block_config())
    layer = _block_layer(576, 1024, per_row=True)
    with pytest.raises(ValueError, match=r"\[5, 8\].*per-row \(1x128\).*\[576, 8\]"):
        kernel.process_weights_after_loading(layer)


def test_block_layer_holds_only_weight_and_scale() -> None:
    pytest.importorskip("triton")
    kernel = BlockKernel(block_config())
    layer = _block_layer(576, 1024)
    before = {name: p.clone() for name, p in layer.named_parameters()}
    kernel.process_weights_after_loading(layer)
    assert {name for name, _ in layer.named_parameters()} == {"weight", "weight_scale"}
    assert not list(layer.named_buffers())
    for name, value in before.items():
        assert torch.equal(getattr(layer, name).float(), value.float())
        assert getattr(layer, name).is_contiguous()


def _processed_fp8(mode: str) -> tuple[Fp8Kernel, torch.nn.Module, torch.Tensor]:
    """A processed 256 x 512 per-tensor fp8 layer, its kernel and the weight scale as quantized."""
    pytest.importorskip("triton")
    kernel = Fp8Kernel(fp8_config(input_scale=mode))
    q, scale = quantize_fp8(torch.randn(256, 512), "tensor")
    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(q, requires_grad=False)
    layer.weight_scale = torch.nn.Parameter(scale.reshape(()), requires_grad=False)
    if mode == "static":
        layer.input_scale = torch.nn.Parameter(torch.tensor(0.02), requires_grad=False)
    kernel.process_weights_after_loading(layer)
    return kernel, layer, scale


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_fp8_layer_holds_only_processed_tensors(mode) -> None:
    kernel, layer, scale = _processed_fp8(mode)
    expected = {"weight", "weight_scale"} | ({"input_scale"} if mode == "static" else set())
    assert {name for name, _ in layer.named_parameters()} == expected
    assert layer.weight_scale.shape == (1,) and layer.weight_scale.dtype == torch.float32
    assert torch.equal(layer.weight_scale.reshape(()), scale.reshape(()))


def test_wrong_weight_dtype_is_a_value_error() -> None:
    kernel = BlockKernel(block_config())
    layer = _block_layer(576, 1024)
    layer.weight = torch.nn.Parameter(torch.randn(576, 1024), requires_grad=False)
    with pytest.raises(ValueError, match="weight: expected dtype float8_e4m3fn, found float32"):
        kernel.process_weights_after_loading(layer)


def test_ops_have_fake_implementations() -> None:
    pytest.importorskip("triton")
    from torch._subclasses.fake_tensor import FakeTensorMode

    from kernel_core_flashinfer import ops

    with FakeTensorMode():
        x = torch.empty(7, 512, dtype=torch.bfloat16, device="cuda")
        w = torch.empty(256, 512, dtype=torch.float8_e4m3fn, device="cuda")
        s = torch.empty(1, device="cuda")
        out = ops.fp8_per_tensor_mm(x, w, s, None, None, torch.float16)
        assert out.shape == (7, 256) and out.dtype == torch.float16
        ws = torch.empty(2, 4, device="cuda")
        out = ops.fp8_block_mm(x, w, ws, None)
        assert out.shape == (7, 256) and out.dtype == torch.bfloat16


# -- eager and compiled paths -------------------------------------------------------------------


class _Spy:
    """Stands in for a GEMM implementation: records each call, returns a marked output."""

    def __init__(self, n: int) -> None:
        self.calls: list[tuple] = []
        self.n = n

    def __call__(self, x: torch.Tensor, *args: object) -> torch.Tensor:
        self.calls.append((x, *args))
        return torch.full((x.shape[0], self.n), 7.0)


class _RunnerSpy:
    """Stands in for a runner factory (``ops.per_tensor_runner`` / ``ops.block_runner``): records
    the operands each runner is made with (``made``) and each run's ``(x, m, bias, runner
    index)`` (``runs``); a run returns a marked output."""

    def __init__(self, n: int) -> None:
        self.made: list[tuple] = []
        self.runs: list[tuple] = []
        self.n = n

    def __call__(self, *operands: object):
        self.made.append(operands)
        index = len(self.made) - 1

        def run(x: torch.Tensor, m: int, bias: torch.Tensor | None) -> torch.Tensor:
            self.runs.append((x, m, bias, index))
            return torch.full((m, self.n), 7.0)

        return run


def _processed_fp8_layer(mode: str, monkeypatch) -> tuple[Fp8Kernel, torch.nn.Module, object]:
    """:func:`_processed_fp8` with a stand-in for the shared cuBLASLt workspace."""
    from kernel_core_flashinfer import ops

    kernel, layer, _ = _processed_fp8(mode)
    workspace = torch.empty(16, dtype=torch.uint8)  # FlashInfer's would import it (seconds)
    monkeypatch.setattr(ops, "cublas_workspace", lambda device: workspace)
    return kernel, layer, workspace


def _same_storage(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.dtype == b.dtype


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_fp8_eager_and_op_run_the_same_implementation(mode, monkeypatch) -> None:
    """Eager apply_weights skips the dispatcher but runs what the op's CUDA implementation runs:
    a runner made with the same operands (the weight as a [1, K, N] view of the same storage, the
    layer's scales, the shared workspace). The eager path binds plain tensors (aliases), never the
    Parameters themselves, and makes its runner once."""
    from kernel_core_flashinfer import ops

    kernel, layer, workspace = _processed_fp8_layer(mode, monkeypatch)
    spy = _RunnerSpy(256)
    monkeypatch.setattr(ops, "per_tensor_runner", spy)
    x = torch.randn(5, 512).to(torch.bfloat16)
    bias = torch.randn(256).to(torch.bfloat16)
    out = kernel.apply_weights(layer, x, bias)
    assert out.shape == (5, 256) and bool((out == 7).all())
    kernel.apply_weights(layer, x, bias)
    input_scale = layer.input_scale if mode == "static" else None
    ops._fp8_per_tensor_mm_cuda(x, layer.weight, layer.weight_scale, input_scale, bias,
                                torch.bfloat16)
    assert len(spy.made) == 2  # one for the layer's plan, one for the op's call
    for n, weight_t, weight_scale, scale, out_dtype, ws in spy.made:
        assert n == 256 and out_dtype is torch.bfloat16 and ws is workspace
        assert weight_t.shape == (1, 512, 256) and weight_t.data_ptr() == layer.weight.data_ptr()
        assert torch.equal(weight_t[0].float(), layer.weight.t().float())
        assert _same_storage(weight_scale, layer.weight_scale)
        assert _same_storage(scale, input_scale)
    assert all(type(t) is torch.Tensor for t in spy.made[0][1:4] if t is not None)
    assert [(r[0] is x, r[1], r[2] is bias, r[3]) for r in spy.runs] == [
        (True, 5, True, 0), (True, 5, True, 0), (True, 5, True, 1)]


def test_fp8_eager_plan_follows_replaced_parameters(monkeypatch) -> None:
    """The eager path's runner (aliases, [1, K, N] view) is made once per layer, and made again
    when a Parameter is replaced or its ``.data`` swapped (never a stale operand)."""
    from kernel_core_flashinfer import ops

    kernel, layer, _ = _processed_fp8_layer("static", monkeypatch)
    spy = _RunnerSpy(256)
    monkeypatch.setattr(ops, "per_tensor_runner", spy)
    x = torch.randn(3, 512).to(torch.bfloat16)
    kernel.apply_weights(layer, x)
    kernel.apply_weights(layer, x)
    assert len(spy.made) == 1 and [r[3] for r in spy.runs] == [0, 0]  # reused, not remade
    new_codes = quantize_fp8(torch.randn(256, 512), "tensor")[0]
    layer.weight.data = new_codes
    kernel.apply_weights(layer, x)
    assert spy.made[1][1].data_ptr() == new_codes.data_ptr()
    replacement = torch.nn.Parameter(quantize_fp8(torch.randn(256, 512), "tensor")[0],
                                     requires_grad=False)
    layer.weight = replacement
    kernel.apply_weights(layer, x)
    assert spy.made[2][1].data_ptr() == replacement.data_ptr()
    assert torch.equal(spy.made[2][1][0].float(), replacement.t().float())
    layer.weight_scale.data = torch.tensor([0.5])
    kernel.apply_weights(layer, x)
    assert spy.made[3][2].item() == 0.5
    layer.input_scale = torch.nn.Parameter(torch.tensor([0.25]), requires_grad=False)
    kernel.apply_weights(layer, x)
    assert spy.made[4][3].item() == 0.25
    assert [r[3] for r in spy.runs] == [0, 0, 1, 2, 3, 4]


def test_block_eager_and_op_run_the_same_implementation(monkeypatch) -> None:
    pytest.importorskip("triton")
    from kernel_core_flashinfer import ops

    kernel = BlockKernel(block_config())
    layer = _block_layer(576, 1024)
    kernel.process_weights_after_loading(layer)
    spy = _RunnerSpy(576)
    monkeypatch.setattr(ops, "block_runner", spy)
    x = torch.randn(2, 3, 1024).to(torch.bfloat16)
    out = kernel.apply_weights(layer, x)
    assert out.shape == (2, 3, 576)
    ops._fp8_block_mm_cuda(x.reshape(6, 1024), layer.weight, layer.weight_scale, None)
    for n, k, weight, weight_scale in spy.made:
        assert (n, k) == (576, 1024)
        assert _same_storage(weight, layer.weight)
        assert _same_storage(weight_scale, layer.weight_scale)
    assert type(spy.made[0][2]) is torch.Tensor and type(spy.made[0][3]) is torch.Tensor
    for rows, m, bias, _ in spy.runs:
        assert rows.shape == (6, 1024) and rows.is_contiguous()
        assert torch.equal(rows, x.reshape(6, 1024)) and m == 6 and bias is None
    layer.weight_scale = torch.nn.Parameter(layer.weight_scale * 2, requires_grad=False)
    kernel.apply_weights(layer, x)
    assert _same_storage(spy.made[2][3], layer.weight_scale)


@pytest.mark.parametrize("which", ["fp8", "fp8_block"])
def test_hot_path_and_full_path_hand_over_the_same_rows(which, monkeypatch) -> None:
    """After the plan exists, a contiguous [M, K] x goes straight to the layer's runner as is; a
    transposed [M, K] view and a 3-D x take the full path and reach the same runner as the same
    contiguous rows (the output shaped like x); a bias is handed over as is."""
    pytest.importorskip("triton")
    from kernel_core_flashinfer import ops

    if which == "fp8":
        kernel, layer, _ = _processed_fp8_layer("static", monkeypatch)
        n, k, name = 256, 512, "per_tensor_runner"
    else:
        kernel = BlockKernel(block_config())
        layer = _block_layer(576, 1024)
        kernel.process_weights_after_loading(layer)
        n, k, name = 576, 1024, "block_runner"
    spy = _RunnerSpy(n)
    monkeypatch.setattr(ops, name, spy)
    x = torch.randn(6, k).to(torch.bfloat16)
    bias = torch.randn(n).to(torch.bfloat16)
    kernel.apply_weights(layer, x)  # makes the plan
    assert kernel.apply_weights(layer, x).shape == (6, n)
    assert spy.runs[-1][0] is x
    assert kernel.apply_weights(layer, x.t().contiguous().t()).shape == (6, n)
    assert spy.runs[-1][0].is_contiguous() and torch.equal(spy.runs[-1][0], x)
    assert kernel.apply_weights(layer, x.reshape(2, 3, k)).shape == (2, 3, n)
    assert torch.equal(spy.runs[-1][0], x)
    kernel.apply_weights(layer, x, bias)
    assert spy.runs[-1][0] is x and spy.runs[-1][2] is bias
    assert len(spy.made) == 1 and {r[3] for r in spy.runs} == {0}  # one runner served all


@pytest.mark.parametrize("which", ["fp8", "fp8_block"])
def test_x_or_bias_on_another_device_is_refused_naming_both(which, monkeypatch) -> None:
    """x (or bias) on a device other than the layer's is a ValueError naming both, before
    anything runs (the compiled check sends it to the checked path)."""
    pytest.importorskip("triton")
    from kernel_core_flashinfer import ops

    if which == "fp8":
        kernel, layer, _ = _processed_fp8_layer("dynamic", monkeypatch)
        k = 512
    else:
        kernel = BlockKernel(block_config())
        layer = _block_layer(576, 1024)
        kernel.process_weights_after_loading(layer)
        k = 1024
    for name in ("per_tensor_runner", "block_runner"):
        monkeypatch.setattr(ops, name, None)  # nothing may run
    x = torch.empty(4, k, dtype=torch.bfloat16, device="meta")
    with pytest.raises(ValueError, match="expected x on the layer's device cpu, found meta"):
        kernel.apply_weights(layer, x)
    n = layer.weight.shape[0]
    bias = torch.empty(n, dtype=torch.bfloat16, device="meta")
    with pytest.raises(ValueError, match="expected bias on the layer's device cpu, found meta"):
        kernel.apply_weights(layer, torch.randn(4, k).to(torch.bfloat16), bias)


@pytest.mark.parametrize("which", ["fp8", "fp8_block"])
def test_compiling_goes_through_the_op(which, monkeypatch) -> None:
    """While torch.compile traces, apply_weights calls the registered op (whose fake
    implementation the compiler uses), with the layer's parameters."""
    pytest.importorskip("triton")
    from kernel_core_flashinfer import ops

    if which == "fp8":
        kernel, layer, _ = _processed_fp8_layer("static", monkeypatch)
        op_name, n, k = "fp8_per_tensor_mm", 256, 512
    else:
        kernel = BlockKernel(block_config())
        layer = _block_layer(576, 1024)
        kernel.process_weights_after_loading(layer)
        op_name, n, k = "fp8_block_mm", 576, 1024
    spy = _Spy(n)
    monkeypatch.setattr(ops, op_name, spy)
    for name in ("per_tensor_runner", "block_runner", "fp8_per_tensor_gemm", "fp8_block_gemm"):
        monkeypatch.setattr(ops, name, None)  # any eager call would fail
    monkeypatch.setattr(kernels_module, "_is_compiling", lambda: True)
    monkeypatch.setattr(kernels_module, "_is_dynamo_compiling", lambda: True)
    assert kernel.apply_weights(layer, torch.randn(4, k).to(torch.bfloat16)).shape == (4, n)
    (call,) = spy.calls
    assert call[1] is layer.weight and call[2] is layer.weight_scale
    if which == "fp8":
        assert call[3] is layer.input_scale


class _TracedTensor(torch.Tensor):
    """Stands in for the tensor subclasses that make_fx / non-strict torch.export trace with."""


@pytest.mark.parametrize("which", ["fp8", "fp8_block"])
def test_other_tracers_reach_the_op_even_with_a_plan(which, monkeypatch) -> None:
    """The hot path asks only is_dynamo_compiling; a tracer that runs Python on tensor subclasses
    (torch.compiler.is_compiling() true, dynamo not tracing) must still reach the op, also when
    eager calls already made the layer's plan (its data pointers are not read)."""
    pytest.importorskip("triton")
    from kernel_core_flashinfer import ops

    if which == "fp8":
        kernel, layer, _ = _processed_fp8_layer("static", monkeypatch)
        n, k, runner, op_name = 256, 512, "per_tensor_runner", "fp8_per_tensor_mm"
    else:
        kernel = BlockKernel(block_config())
        layer = _block_layer(576, 1024)
        kernel.process_weights_after_loading(layer)
        n, k, runner, op_name = 576, 1024, "block_runner", "fp8_block_mm"
    runs = _RunnerSpy(n)
    monkeypatch.setattr(ops, runner, runs)
    x = torch.randn(4, k).to(torch.bfloat16)
    kernel.apply_weights(layer, x)  # eager: makes the plan
    op = _Spy(n)
    monkeypatch.setattr(ops, op_name, op)
    monkeypatch.setattr(kernels_module, "_is_compiling", lambda: True)
    out = kernel.apply_weights(layer, x.as_subclass(_TracedTensor))
    assert out.shape == (4, n) and len(op.calls) == 1 and len(runs.runs) == 1


@pytest.mark.parametrize("which", ["fp8", "fp8_block"])
@pytest.mark.parametrize(
    "x_shape,x_dtype,bias_shape,needle",
    [
        ((4, 100), torch.bfloat16, None, r"expected x of shape \(\.\.\., K\) and dtype bfloat16 "
         r"\(the config's act_dtype\), found \[4, 100\] bfloat16"),
        ((4, 0), torch.float32, None, "found \\[4, K\\] float32"),
        ((), torch.bfloat16, None, "found \\[\\] bfloat16"),
        ((4, 0), torch.bfloat16, (3,), "expected a floating-point bias of shape \\[N\\], found bfloat16 of shape \\[3\\]"),
    ],
)
@pytest.mark.parametrize("planned", [False, True], ids=["first-call", "after-a-good-call"])
def test_eager_path_checks_x_and_bias(which, x_shape, x_dtype, bias_shape, needle, planned,
                                      monkeypatch) -> None:
    """The direct path keeps the checks: a wrong K, dtype, a 0-d x or a bias of the wrong shape
    is a ValueError naming expected and found, before anything runs; also once a good call made
    the layer's plan (the hot path's inlined checks send anything else to the full check)."""
    pytest.importorskip("triton")
    from kernel_core_flashinfer import ops

    if which == "fp8":
        kernel, layer, _ = _processed_fp8_layer("dynamic", monkeypatch)
        n, k = 256, 512
    else:
        kernel = BlockKernel(block_config())
        layer = _block_layer(576, 1024)
        kernel.process_weights_after_loading(layer)
        n, k = 576, 1024
    if planned:
        monkeypatch.setattr(ops, "per_tensor_runner" if which == "fp8" else "block_runner",
                            _RunnerSpy(n))
        kernel.apply_weights(layer, torch.randn(4, k).to(torch.bfloat16))
    for name in ("per_tensor_runner", "block_runner", "fp8_per_tensor_mm", "fp8_block_mm"):
        monkeypatch.setattr(ops, name, None)  # nothing may run
    shape = tuple(k if d == 0 else d for d in x_shape)
    x = torch.zeros(shape, dtype=x_dtype) if shape else torch.tensor(1.0, dtype=x_dtype)
    bias = None if bias_shape is None else torch.zeros(bias_shape, dtype=torch.bfloat16)
    needle = needle.replace("K", str(k)).replace("N", str(n))
    with pytest.raises(ValueError, match=needle):
        kernel.apply_weights(layer, x, bias)


# -- environment ----------------------------------------------------------------------------


def test_environment_defaults(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("KERNEL_CORE_CACHE_DIR", str(tmp_path))
    environ: dict[str, str] = {}
    applied = environment.configure_environment(environ)
    assert environ["FLASHINFER_WORKSPACE_BASE"] == str(tmp_path / "flashinfer")
    assert environ["TRTLLM_DG_CACHE_DIR"] == str(tmp_path / "flashinfer" / "deep_gemm")
    assert environ["FLASHINFER_NO_DOWNLOAD"] == "1"
    assert applied == environ
    if not torch.cuda.is_available():
        assert "FLASHINFER_CUDA_ARCH_LIST" not in environ


def test_environment_keeps_user_values(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("KERNEL_CORE_CACHE_DIR", str(tmp_path))
    user = {
        "FLASHINFER_WORKSPACE_BASE": "/mine/ws",
        "TRTLLM_DG_CACHE_DIR": "/mine/dg",
        "FLASHINFER_NO_DOWNLOAD": "0",
        "CUDA_HOME": "/opt/my-cuda",
        "FLASHINFER_CUDA_ARCH_LIST": "8.9 9.0a",
    }
    environ = dict(user)
    assert environment.configure_environment(environ) == {}
    assert environ == user


def test_arch_list_is_the_current_device_only(monkeypatch, tmp_path) -> None:
    """The arch list names the current device's capability, so FlashInfer never queries every
    GPU (a stand-in device of capability 9.0)."""
    monkeypatch.setenv("KERNEL_CORE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(environment.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(environment.torch.cuda, "get_device_capability", lambda: (9, 0))
    environ: dict[str, str] = {}
    environment.configure_environment(environ)
    assert environ["FLASHINFER_CUDA_ARCH_LIST"] == "9.0"


def test_tested_range_is_the_distributions_pin() -> None:
    """environment.TESTED_FLASHINFER (what the plugin checks at run time) and pyproject.toml's
    dependency (what pip installs) name the same range."""
    low_op, low, high_op, high = environment.TESTED_FLASHINFER
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert f'"flashinfer-python{low_op}{low},{high_op}{high}"' in pyproject


def test_warmup_builds_the_compiled_eager_check(monkeypatch) -> None:
    """``kernel-core warmup`` reaches each kernel's warmup, which builds FlashInfer's module and
    the plugin's compiled eager check (stand-ins record the calls; the real build is tested in
    test_flashinfer_eager_call.py)."""
    from kernel_core_flashinfer import ops

    built: list[str] = []
    monkeypatch.setattr(ops, "cublas_fp8_gemm", lambda: built.append("gemm"))
    monkeypatch.setattr(ops, "blockscale_runner", lambda: built.append("blockscale"))
    monkeypatch.setattr(kernels_module, "eager_call", lambda: built.append("eager_call"))
    Fp8Kernel.warmup()
    BlockKernel.warmup()
    assert built == ["gemm", "eager_call", "blockscale", "eager_call"]


def test_cuda_path_counts_as_user_toolkit(monkeypatch) -> None:
    environ = {"CUDA_PATH": "/opt/other-cuda"}
    environment.configure_environment(environ)
    assert "CUDA_HOME" not in environ


def test_cuda_home_skips_nvcc_wrapper_scripts(monkeypatch, tmp_path) -> None:
    wrapper_dir = tmp_path / "wrapper" / "bin"
    wrapper_dir.mkdir(parents=True)
    (wrapper_dir / "nvcc").write_text("#!/bin/sh\nexec /somewhere/nvcc \"$@\"\n")
    monkeypatch.setattr(environment.shutil, "which", lambda name: str(wrapper_dir / "nvcc"))
    found = environment.find_cuda_home()
    assert found != str(tmp_path / "wrapper")
    toolkit = tmp_path / "cuda-13.0"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "include").mkdir()
    (toolkit / "bin" / "nvcc").write_text("")
    (toolkit / "include" / "cuda_runtime.h").write_text("")
    monkeypatch.setattr(environment.shutil, "which", lambda name: str(toolkit / "bin" / "nvcc"))
    assert environment.find_cuda_home() == str(toolkit)


# -- the activation scale layout fp8_blockscale_gemm_sm90 reads, in the Triton interpreter ----

_INTERPRETED_QUANTIZERS = """
import torch
from kernel_core.formats.fp8 import quantize_fp8, quantize_fp8_per_token_group
from kernel_core_flashinfer.ops import block_input_scales
from kernel_core_flashinfer.triton_kernels import quantize_per_tensor, quantize_per_token_group
torch.manual_seed(0)
m, k = 37, 384
x = (torch.randn(m, k) * torch.exp(torch.randn(m, 1))).to(torch.bfloat16)
scales = block_input_scales(m, k, torch.device("cpu"))
memory = scales.t()
memory.fill_(float("nan"))
quantize_per_token_group(x, scales)
_, reference = quantize_fp8_per_token_group(x)
print(list(memory.shape), memory.is_contiguous(), torch.equal(scales[:m], reference),
      bool(memory[:, m:].isnan().all()))
q, scale = quantize_per_tensor(x, None)
_, reference = quantize_fp8(x, "tensor")
print(list(q.shape), q.dtype, list(scale.shape), torch.equal(scale, reference.reshape(1)))
"""


def test_quantizers_write_the_layouts_the_kernels_read() -> None:
    """The trap: the block kernel reads FP8-input scales as [K/128, round_up(M, 4)] row-major.
    ``block_input_scales`` is that memory (one allocation) seen as [round_up(M, 4), K/128]; the
    quantizer writes exactly the formats' 1x128 scales into rows 0..M-1 and leaves the padding
    alone. The per-tensor quantizer returns ``bmm_fp8``'s batched [1, M, K] operand and the
    formats' dynamic scale (its amax goes to the kernel as a 0-d tensor).

    Only the scales are compared: the interpreter's fp8 conversion is not round-to-nearest-even
    (the GPU test compares the codes).
    """
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run(
        [sys.executable, "-c", _INTERPRETED_QUANTIZERS], capture_output=True, text=True, env=env,
        cwd=Path(__file__).parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == [
        "[3, 40] True True True", "[1, 37, 384] torch.float8_e4m3fn [1] True"
    ], done.stdout


# -- why FlashInfer's own 1x128 quantizer and the oracle's disagree, emulated ------------------


def test_flashinfer_style_rounding_differs_on_ties_only() -> None:
    """FlashInfer's bf16-input mode quantizes ``x * (448 / amax)`` and keeps ``1 / (448 / amax)``;
    the oracle divides by ``amax / 448``. On bf16 data the two disagree on a small fraction of
    codes (values on fp8 rounding ties), which is what the GPU measurement showed against the
    oracle; against the unquantized product both are equally accurate (README)."""
    gen = torch.Generator().manual_seed(0)
    m, k, n = 64, 2048, 256
    x = torch.randn(m, k, generator=gen) * torch.exp(torch.randn(m, 1, generator=gen))
    x = (x * torch.exp(torch.randn(m, k // 128, generator=gen)).repeat_interleave(128, 1))
    x = x.to(torch.bfloat16)
    w = torch.randn(n, k, generator=gen, dtype=torch.float64)
    groups = x.float().unflatten(1, (k // 128, 128))
    amax = groups.abs().amax(-1, keepdim=True)

    def encode(values: torch.Tensor) -> torch.Tensor:
        return values.clamp(-448, 448).to(torch.float8_e4m3fn).float()

    oracle_scale = amax / 448
    oracle = encode(groups / oracle_scale)
    flashinfer_scale = 448 / amax
    theirs = encode(groups * flashinfer_scale)
    differ = (oracle != theirs).float().mean().item()
    assert 1e-5 < differ < 1e-2
    exact = x.double() @ w.t()

    def error(codes: torch.Tensor, scale: torch.Tensor) -> float:
        out = (codes * scale).flatten(1).double() @ w.t()
        return ((out - exact).norm() / exact.norm()).item()

    ours_error = error(oracle, oracle_scale)
    their_error = error(theirs, 1 / flashinfer_scale)
    assert abs(ours_error - their_error) <= 0.01 * ours_error
