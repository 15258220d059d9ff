"""The compiled hot-path check (``csrc/eager_call.cpp``) on CPU tensors: it runs the layer's runner
for the serving case only and returns None for everything else (the kernel's checked Python path
then runs, and names what is wrong). Builds the extension once (about 30 s on 2 cores)."""

from __future__ import annotations

import pytest
import torch

from kernel_core_flashinfer.eager import checked_path_only, eager_call
from kernel_core_flashinfer.kernels import _PLAN

N, K = 64, 128


class _Runner:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, x: torch.Tensor, m: int, bias: torch.Tensor | None) -> torch.Tensor:
        self.calls.append((x, m, bias))
        return torch.full((m, N), 3.0)


def _layer(static: bool = False) -> tuple[torch.nn.Module, _Runner]:
    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(torch.randn(N, K), requires_grad=False)
    layer.weight_scale = torch.nn.Parameter(torch.rand(1) + 0.5, requires_grad=False)
    if static:
        layer.input_scale = torch.nn.Parameter(torch.rand(1) + 0.5, requires_grad=False)
    runner = _Runner()
    layer.__dict__[_PLAN] = (
        K, torch.bfloat16, N, layer.weight.data_ptr(), layer.weight_scale.data_ptr(),
        layer.input_scale.data_ptr() if static else 0, runner,
    )
    return layer, runner


@pytest.fixture(scope="module")
def call():
    function = eager_call()
    if function is checked_path_only:
        pytest.fail("the eager fast path did not build (see the warning above)")
    return function


def _x(m: int = 5) -> torch.Tensor:
    return torch.randn(m, K).to(torch.bfloat16)


@pytest.mark.parametrize("static", [False, True])
def test_serving_call_runs_the_runner_with_x_m_and_bias(call, static) -> None:
    layer, runner = _layer(static)
    x, bias = _x(7), torch.randn(N).to(torch.bfloat16)
    out = call(layer, x, bias, _PLAN)
    assert out.shape == (7, N) and bool((out == 3).all())
    assert call(layer, x, None, _PLAN) is not None
    (first_x, first_m, first_bias), (second_x, second_m, second_bias) = runner.calls
    assert first_x is x and first_m == 7 and first_bias is bias
    assert second_x is x and second_m == 7 and second_bias is None


class _Subclass(torch.Tensor):
    """A tensor subclass (as tracers use): the checked Python path decides. (``nn.Parameter``,
    which torch's C API counts as an exact tensor, is served like a tensor.)"""


@pytest.mark.parametrize(
    "case",
    ["float16 x", "float32 x", "3-D x", "1-D x", "wrong K", "transposed x", "sliced x",
     "subclass x", "sparse x", "nested x", "meta x", "bias wrong length", "bias 2-D",
     "integer bias", "bias not a tensor", "subclass bias", "meta bias", "sparse bias", "no plan",
     "no _parameters"],
)
def test_anything_else_returns_none_without_running(call, case) -> None:
    layer, runner = _layer()
    x, bias = _x(), None
    if case == "float16 x":
        x = x.half()
    elif case == "float32 x":
        x = x.float()
    elif case == "3-D x":
        x = x.reshape(1, 5, K)
    elif case == "1-D x":
        x = x[0]
    elif case == "wrong K":
        x = torch.randn(5, K + 1).to(torch.bfloat16)
    elif case == "transposed x":
        x = torch.randn(K, 5).to(torch.bfloat16).t()
    elif case == "sliced x":
        x = torch.randn(5, 2 * K).to(torch.bfloat16)[:, :K]
    elif case == "subclass x":
        x = x.as_subclass(_Subclass)
    elif case == "sparse x":
        x = x.to_sparse()
    elif case == "nested x":
        x = torch.nested.nested_tensor([x[0], x[1]])
    elif case == "meta x":  # not on the weights' device
        x = torch.empty(5, K, dtype=torch.bfloat16, device="meta")
    elif case == "bias wrong length":
        bias = torch.randn(N + 1).to(torch.bfloat16)
    elif case == "bias 2-D":
        bias = torch.randn(1, N).to(torch.bfloat16)
    elif case == "integer bias":
        bias = torch.ones(N, dtype=torch.int32)
    elif case == "bias not a tensor":
        bias = [0.0] * N
    elif case == "subclass bias":  # could run Python (dispatch) during the check
        bias = torch.randn(N).to(torch.bfloat16).as_subclass(_Subclass)
    elif case == "meta bias":
        bias = torch.empty(N, dtype=torch.bfloat16, device="meta")
    elif case == "sparse bias":
        bias = torch.randn(N).to(torch.bfloat16).to_sparse()
    elif case == "no plan":
        del layer.__dict__[_PLAN]
    elif case == "no _parameters":
        layer = type("NotAModule", (), {})()
        layer.__dict__[_PLAN] = _layer()[0].__dict__[_PLAN]
    if case in ("transposed x", "sliced x"):
        assert x.shape == (5, K) and not x.is_contiguous()
    assert call(layer, x, bias, _PLAN) is None
    assert runner.calls == []


@pytest.mark.parametrize(
    "change", ["replace weight", "swap weight .data", "replace weight_scale",
               "swap weight_scale .data", "replace input_scale", "delete weight_scale"]
)
def test_a_changed_parameter_returns_none(call, change) -> None:
    """The plan's runner holds aliases of the storage it was made from: a replaced Parameter or
    swapped ``.data`` must not reach it (the Python path makes a new plan)."""
    layer, runner = _layer(static=True)
    x = _x()
    assert call(layer, x, None, _PLAN) is not None  # the unchanged layer is served
    if change == "replace weight":
        layer.weight = torch.nn.Parameter(torch.randn(N, K), requires_grad=False)
    elif change == "swap weight .data":
        layer.weight.data = torch.randn(N, K)
    elif change == "replace weight_scale":
        layer.weight_scale = torch.nn.Parameter(torch.rand(1), requires_grad=False)
    elif change == "swap weight_scale .data":
        layer.weight_scale.data = torch.rand(1)
    elif change == "replace input_scale":
        layer.input_scale = torch.nn.Parameter(torch.rand(1), requires_grad=False)
    elif change == "delete weight_scale":
        del layer.weight_scale
    assert call(layer, x, None, _PLAN) is None
    assert len(runner.calls) == 1


def test_the_dynamic_plan_ignores_input_scale(call) -> None:
    """A plan with input_scale pointer 0 (dynamic activation scales) never reads input_scale."""
    layer, runner = _layer(static=False)
    layer.input_scale = torch.nn.Parameter(torch.rand(1), requires_grad=False)
    assert call(layer, _x(), None, _PLAN) is not None and len(runner.calls) == 1


@pytest.mark.parametrize(
    "plan", ["a list", "six items", "a string K", "a string input_scale_ptr", "a float N"])
def test_a_malformed_plan_raises_type_error(call, plan) -> None:
    """Also where the bad field would be read last (no input_scale Parameter to look up)."""
    layer, _ = _layer()
    good = layer.__dict__[_PLAN]
    layer.__dict__[_PLAN] = {
        "a list": list(good), "six items": good[:6], "a string K": ("128", *good[1:]),
        "a string input_scale_ptr": (*good[:5], "0", good[6]),
        "a float N": (*good[:2], float(N), *good[3:]),
    }[plan]
    with pytest.raises(TypeError):
        call(layer, _x(), None, _PLAN)


def test_the_runners_error_propagates(call) -> None:
    layer, _ = _layer()

    def failing(x: torch.Tensor, m: int, bias: torch.Tensor | None) -> torch.Tensor:
        raise RuntimeError("from the runner")

    layer.__dict__[_PLAN] = (*layer.__dict__[_PLAN][:6], failing)
    with pytest.raises(RuntimeError, match="from the runner"):
        call(layer, _x(), None, _PLAN)


def test_wrong_argument_count_raises_type_error(call) -> None:
    layer, _ = _layer()
    with pytest.raises(TypeError, match="expected 4 arguments, found 3"):
        call(layer, _x(), None)
