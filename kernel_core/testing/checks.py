"""The conformance checks themselves, usable without pytest (``kernel-core doctor``, scripts).

:func:`check_conformance` runs one kernel on one config against the emulation oracle and raises
:class:`ConformanceError` (an ``AssertionError``) naming the first thing that is wrong. The other
``check_*`` functions cover what does not depend on a config: metadata, refusals, bad input.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from kernel_core.config import LayerConfig
from kernel_core.families import family_of
from kernel_core.kernel import PLATFORMS, LinearKernel, Priority
from kernel_core.platform import current_compute_capability, current_platform
from kernel_core.registry import registry
from kernel_core.testing.tolerances import tolerance_for

__all__ = [
    "ConformanceError",
    "ConformanceReport",
    "check_conformance",
    "check_cuda_graph",
    "check_metadata",
    "check_refusals",
    "check_rejects_bad_input",
    "reference_kernel",
    "runnable_device",
    "make_test_layer",
]

logger = logging.getLogger(__name__)

#: Token counts of the 3-D input ``[2, 5, K]`` and of the transposed (non-contiguous) input.
BATCHED_SHAPE = (2, 5)
NON_CONTIGUOUS_M = 33


class ConformanceError(AssertionError):
    """A kernel broke the contract; the message names the kernel, config and what differed."""


@dataclass
class ConformanceReport:
    """What :func:`check_conformance` measured: relative error per input, against ``tolerance``."""

    kernel: str
    reference: str
    config: LayerConfig
    device: str
    tolerance: float
    errors: dict[str, float] = field(default_factory=dict)

    @property
    def worst(self) -> float:
        return max(self.errors.values(), default=0.0)


def _device_of(platform: str) -> torch.device:
    return torch.device({"cuda": "cuda", "rocm": "cuda", "xpu": "xpu"}.get(platform, "cpu"))


def runnable_device(kernel_class: type[LinearKernel]) -> tuple[torch.device | None, str | None]:
    """Where the kit runs ``kernel_class``: this machine's accelerator if the kernel runs there,
    else the CPU if it runs there; ``(None, reason)`` when neither (the reason says why)."""
    here = current_platform()
    for platform in dict.fromkeys((here, "cpu")):
        if platform not in kernel_class.platforms:
            continue
        capability = current_compute_capability() if platform in ("cuda", "rocm") else None
        ok, reason = kernel_class.is_supported(capability)
        if ok:
            return _device_of(platform), None
        return None, f"{kernel_class.name} is not supported on {platform}: {reason}"
    return None, (
        f"{kernel_class.name} runs on {', '.join(sorted(kernel_class.platforms))}; this machine "
        f"offers {here}"
    )


def reference_kernel(family: str) -> type[LinearKernel]:
    """The oracle of ``family``: the registered kernel at ``Priority.REFERENCE`` (the emulation
    plugin's, preferred by provider name when several exist)."""
    found = [k for k in registry.kernels(family) if int(k.priority) == Priority.REFERENCE]
    if not found:
        raise ConformanceError(
            f"no reference kernel is registered for family {family!r}; the conformance kit "
            "compares against the emulation oracle: pip install kernel-core-emulation"
        )
    return sorted(found, key=lambda k: (k.provider != "emulation", k.name))[0]


def make_test_layer(config: LayerConfig, device: torch.device, seed: int) -> torch.nn.Module:
    """Fresh random quantized weights in the contract (the core's ``make_layer``: act-order group
    indices and static activation scales included where the config has them)."""
    from kernel_core.formats.layer import make_layer

    return make_layer(config, seed=seed, device=device)


def _describe(kernel_class: type, config: LayerConfig) -> str:
    return f"{kernel_class.name} on {config.short()}"


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``||out - ref|| / ||ref||`` in float64: how every correctness check here compares a kernel's
    output with its reference (a zero reference counts as tiny, not as a division by zero)."""
    ref64 = ref.to(torch.float64)
    return float((out.to(torch.float64) - ref64).norm() / ref64.norm().clamp(min=1e-30))


def _poison(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> None:
    """Leave a NaN-filled block of the output's size in the allocator: the CUDA caching allocator
    hands it to the kernel's next allocation of that size, so an element the kernel never writes
    reads NaN. (On the CPU the allocator may or may not reuse it: a best effort there.)"""
    block = torch.full(tuple(shape), float("nan"), dtype=dtype, device=device)
    del block


class _Runner:
    """One kernel and the oracle on twin copies of one layer; compares every call."""

    def __init__(
        self,
        kernel_class: type[LinearKernel],
        config: LayerConfig,
        device: torch.device,
        seed: int,
        reference: type[LinearKernel] | None,
    ) -> None:
        self.what = _describe(kernel_class, config)
        self.config = config
        self.device = device
        self.generator = torch.Generator().manual_seed(seed + 1)
        layer = make_test_layer(config, device, seed)
        self.reference_layer = copy.deepcopy(layer)
        reference = reference or reference_kernel(config.family)
        self.report = ConformanceReport(
            kernel_class.name, reference.name, config, str(device), tolerance_for(config)
        )
        names = [spec.name for spec in kernel_class.parameter_specs(config)]
        before = {name: layer._parameters.get(name) for name in names}
        try:
            self.kernel = kernel_class(config)
            self.kernel.process_weights_after_loading(layer)
        except Exception as exc:
            what = f"{type(exc).__name__}: {exc}"
            raise ConformanceError(f"{self.what}: setup raised {what}") from exc
        for name, parameter in before.items():
            after = layer._parameters.get(name)
            if parameter is not None and after is not None and after is not parameter:
                raise ConformanceError(
                    f"{self.what}: process_weights_after_loading replaced the Parameter object "
                    f"{name!r}; keep its identity (kernel_core.replace_parameter) so captured "
                    "CUDA graphs and engine references stay valid"
                )
        self.layer = layer
        self.oracle = reference(config)
        self.oracle.process_weights_after_loading(self.reference_layer)

    def random(self, *shape: int) -> torch.Tensor:
        values = torch.randn(*shape, generator=self.generator)
        return values.to(device=self.device, dtype=self.config.act_dtype)

    def run(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        n = self.config.out_features
        _poison((*x.shape[:-1], n), self.config.out_dtype, self.device)
        try:
            return self.kernel.apply_weights(self.layer, x, bias)
        except Exception as exc:
            raise ConformanceError(
                f"{self.what}: apply_weights on x {list(x.shape)} raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def compare(self, label: str, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Run the kernel, check shape, dtype and finiteness, compare with the oracle."""
        out = self.run(x, bias)
        expected_shape = (*x.shape[:-1], self.config.out_features)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected_shape:
            found = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConformanceError(
                f"{self.what} [{label}]: expected output shape {list(expected_shape)}, "
                f"found {found}"
            )
        if out.dtype != self.config.out_dtype:
            raise ConformanceError(
                f"{self.what} [{label}]: expected output dtype {self.config.out_dtype}, found "
                f"{out.dtype}"
            )
        if out.device != x.device:
            raise ConformanceError(
                f"{self.what} [{label}]: output on {out.device}, input on {x.device}"
            )
        ref = self.oracle.apply_weights(self.reference_layer, x, bias)
        if not bool(torch.isfinite(out).all()) and bool(torch.isfinite(ref).all()):
            bad = int((~torch.isfinite(out)).sum())
            raise ConformanceError(
                f"{self.what} [{label}]: {bad} non-finite output element(s) where the oracle's "
                "are finite (an unwritten element reads NaN from the poisoned allocator)"
            )
        error = relative_error(out, ref)
        self.report.errors[label] = error
        if not error <= self.report.tolerance:
            raise ConformanceError(
                f"{self.what} [{label}]: relative error {error:.3g} against {self.report.reference}"
                f" exceeds {self.report.tolerance:.3g}"
            )
        return out


def check_conformance(
    kernel_class: type[LinearKernel],
    config: LayerConfig,
    *,
    device: torch.device | str | None = None,
    m_values: Iterable[int] = (1, 33, 257),
    seed: int = 0,
    reference: type[LinearKernel] | None = None,
) -> ConformanceReport:
    """Run ``kernel_class`` on ``config`` against the oracle; raise :class:`ConformanceError`.

    Checks, in order: construction and ``process_weights_after_loading`` succeed and keep the
    contract's Parameter objects; for every M, output shape, dtype, device, finiteness (outputs are
    poisoned) and relative error with a bias; bitwise-identical repeated calls; the bias is added
    (with and without it); a 3-D input; a non-contiguous (transposed) input.
    """
    if device is None:
        device, reason = runnable_device(kernel_class)
        if device is None:
            raise ConformanceError(f"cannot run here: {reason}")
    runner = _Runner(kernel_class, config, torch.device(device), seed, reference)
    n, k = config.weight_shape
    bias = None
    for m in m_values:
        x = runner.random(m, k)
        if bias is None:
            scale = runner.oracle.apply_weights(runner.reference_layer, x).float().pow(2).mean()
            bias = runner.random(n) * scale.sqrt().to(runner.config.act_dtype)
        out = runner.compare(f"M={m}", x, bias)
        again = runner.run(x, bias)
        if not torch.equal(out, again):
            raise ConformanceError(
                f"{runner.what} [M={m}]: a repeated call on the same input gave a different result"
            )
    x = runner.random(NON_CONTIGUOUS_M, k)
    without_bias = runner.compare("no bias", x, None).to(torch.float64)
    with_bias = runner.run(x, bias).to(torch.float64)
    bias_error = relative_error(with_bias - without_bias, bias.expand_as(with_bias))
    runner.report.errors["bias"] = bias_error
    if not bias_error <= 2 * runner.report.tolerance:
        raise ConformanceError(
            f"{runner.what}: the bias is not added (relative error {bias_error:.3g} of "
            "out(x, bias) - out(x, None) against the bias)"
        )
    runner.compare("3-D input", runner.random(*BATCHED_SHAPE, k), bias)
    transposed = runner.random(k, NON_CONTIGUOUS_M).t()
    runner.compare("non-contiguous input", transposed, bias)
    return runner.report


def check_cuda_graph(
    kernel_class: type[LinearKernel],
    config: LayerConfig,
    *,
    device: torch.device | str = "cuda",
    m_values: Iterable[int] = (1, 33),
    seed: int = 0,
    reference: type[LinearKernel] | None = None,
) -> ConformanceReport:
    """``apply_weights`` captured in a CUDA graph and replayed on new inputs matches the oracle.

    Capture fails on a host synchronisation or a host read of device data; a replay that returns
    the captured input's result means something was baked in at capture time. Warm-up runs on a
    side stream first, as ``torch.cuda.graph`` requires for lazily initialised libraries.
    """
    device = torch.device(device)
    if device.type != "cuda":
        raise ConformanceError(f"CUDA graphs need a CUDA device, found {device}")
    runner = _Runner(kernel_class, config, device, seed, reference)
    n, k = config.weight_shape
    bias = runner.random(n)
    for m in m_values:
        static_x = runner.random(m, k)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                runner.run(static_x, bias)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                static_out = runner.kernel.apply_weights(runner.layer, static_x, bias)
        except Exception as exc:
            raise ConformanceError(
                f"{runner.what} [M={m}]: apply_weights cannot be captured in a CUDA graph: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        for replay in range(2):
            fresh = runner.random(m, k)
            static_x.copy_(fresh)
            graph.replay()
            ref = runner.oracle.apply_weights(runner.reference_layer, fresh, bias)
            label = f"graph M={m} replay {replay}"
            error = relative_error(static_out, ref)
            runner.report.errors[label] = error
            if not error <= runner.report.tolerance:
                raise ConformanceError(
                    f"{runner.what} [{label}]: relative error {error:.3g} against "
                    f"{runner.report.reference} exceeds {runner.report.tolerance:.3g} (the replay "
                    "does not follow the new input)"
                )
    return runner.report


def check_metadata(kernel_class: type) -> None:
    """Family, name, priority, platforms and the ``is_supported`` answer are well formed."""
    try:
        family_of(kernel_class)
    except TypeError as exc:
        raise ConformanceError(str(exc)) from exc
    name = kernel_class.__name__
    if getattr(kernel_class, "__abstractmethods__", None):
        missing = ", ".join(sorted(kernel_class.__abstractmethods__))
        raise ConformanceError(f"{name} leaves abstract: {missing}")
    if not isinstance(kernel_class.name, str) or not kernel_class.name:
        raise ConformanceError(f"{name}.name must be a non-empty string")
    if not isinstance(kernel_class.priority, int):
        raise ConformanceError(f"{name}.priority must be an int (a Priority band), found "
                               f"{kernel_class.priority!r}")
    if not kernel_class.platforms or not set(kernel_class.platforms) <= PLATFORMS:
        raise ConformanceError(
            f"{name}.platforms must be a non-empty subset of {sorted(PLATFORMS)}, found "
            f"{sorted(kernel_class.platforms)}"
        )
    for capability in (None, 80, 90, 100):
        answer = kernel_class.is_supported(capability)
        _check_answer(f"{name}.is_supported({capability})", answer)


def _check_answer(where: str, answer: object) -> None:
    if (
        not isinstance(answer, tuple)
        or len(answer) != 2
        or not isinstance(answer[0], bool)
        or not (answer[1] is None or isinstance(answer[1], str))
    ):
        raise ConformanceError(f"{where}: expected (bool, str | None), found {answer!r}")
    if not answer[0] and not answer[1]:
        raise ConformanceError(f"{where}: refused without a reason; a refusal must say why")


def check_refusals(
    kernel_class: type[LinearKernel], refused: Sequence[tuple[LayerConfig, str | None]]
) -> int:
    """Every refused config has a non-empty reason and the constructor refuses it too.

    Returns how many refusals were checked (0: the kernel accepts the whole grid)."""
    for config, reason in refused:
        _check_answer(f"{kernel_class.name}.can_implement({config.short()})", (False, reason))
        try:
            kernel_class(config)
        except ValueError:
            continue
        raise ConformanceError(
            f"{kernel_class.name}({config.short()}) constructed although can_implement refused "
            f"it ({reason}); __init__ must raise (LinearKernel.__init__ does)"
        )
    return len(refused)


def check_rejects_bad_input(
    kernel_class: type[LinearKernel],
    config: LayerConfig,
    *,
    device: torch.device | str,
    seed: int = 0,
) -> None:
    """An input whose last dimension is not K, or a bias that is not ``[N]``, is a ValueError."""
    layer = make_test_layer(config, torch.device(device), seed)
    kernel = kernel_class(config)
    kernel.process_weights_after_loading(layer)
    n, k = config.weight_shape
    x = torch.randn(3, k, device=device).to(config.act_dtype)
    cases = {
        f"x of shape [3, {k + 16}]": (torch.randn(3, k + 16, device=device).to(config.act_dtype),
                                      None),
        f"bias of shape [{n + 1}]": (x, torch.randn(n + 1, device=device).to(config.act_dtype)),
    }
    for what, (bad_x, bad_bias) in cases.items():
        try:
            kernel.apply_weights(layer, bad_x, bad_bias)
        except ValueError:
            continue
        except Exception as exc:
            raise ConformanceError(
                f"{_describe(kernel_class, config)}: {what} raised {type(exc).__name__}, expected "
                f"a ValueError naming what was expected and found: {exc}"
            ) from exc
        raise ConformanceError(f"{_describe(kernel_class, config)}: {what} was accepted")
