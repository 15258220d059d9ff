"""GPU tests of the FlashInfer plugin: accuracy against float64, CUDA graphs, torch.compile.

Skipped with the kernel's own reason where it cannot run (no GPU, no flashinfer, not SM90).
"""

from __future__ import annotations

import pytest
import torch

from kernel_core import FP8ScaledMMLinearLayerConfig, Fp8BlockLinearLayerConfig
from kernel_core.formats.fp8 import (
    dequantize_fp8,
    dequantize_fp8_block,
    dequantize_fp8_per_token_group,
    quantize_fp8,
    quantize_fp8_block,
    quantize_fp8_per_token_group,
)
from kernel_core.platform import current_compute_capability
from kernel_core.testing import relative_error
from kernel_core.workspace import workspace_devices
from kernel_core_flashinfer.kernels import (
    FlashInferFp8BlockScaledMMLinearKernel as BlockKernel,
)
from kernel_core_flashinfer.kernels import FlashInferFp8ScaledMMLinearKernel as Fp8Kernel

pytestmark = pytest.mark.gpu
BLOCK_SHAPE = (576, 1024)  # N is 4.5 blocks of 128: the last scale row covers a half block
FP8_SHAPE = (384, 1024)


def require(kernel) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    ok, reason = kernel.is_supported(current_compute_capability())
    if not ok:
        pytest.skip(f"{kernel.name}: {reason}")


def poison(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    """Leave a NaN block of the output's size for the caching allocator to hand out next."""
    block = torch.full(shape, float("nan"), dtype=dtype, device="cuda")
    del block


def bound(ref: torch.Tensor, dtype: torch.dtype) -> float:
    """What rounding the exact result to ``dtype`` costs, doubled, plus fp32-accumulation slack."""
    return 2 * relative_error(ref.to(dtype), ref) + 2e-3


def block_layer(n: int, k: int, seed: int) -> tuple[torch.nn.Module, torch.Tensor]:
    gen = torch.Generator(device="cuda").manual_seed(seed)
    w = torch.randn(n, k, generator=gen, device="cuda")
    magnitudes = torch.exp2(torch.randint(-4, 5, (-(-n // 128), k // 128), device="cuda",
                                          generator=gen).float())
    w = w * magnitudes.repeat_interleave(128, 0)[:n].repeat_interleave(128, 1)
    q, s = quantize_fp8_block(w)
    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(q, requires_grad=False)
    layer.weight_scale = torch.nn.Parameter(s, requires_grad=False)
    return layer, dequantize_fp8_block(q, s).double()


def activations(m: int, k: int, seed: int) -> torch.Tensor:
    gen = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(m, k, generator=gen, device="cuda")
    return (x * torch.exp(torch.randn(m, 1, generator=gen, device="cuda"))).to(torch.bfloat16)


def fp8_layer(config: FP8ScaledMMLinearLayerConfig, seed: int) -> tuple[torch.nn.Module, torch.Tensor]:
    gen = torch.Generator(device="cuda").manual_seed(seed)
    n, k = config.weight_shape
    q, s = quantize_fp8(torch.randn(n, k, generator=gen, device="cuda"), "tensor")
    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(q, requires_grad=False)
    layer.weight_scale = torch.nn.Parameter(s.reshape(()), requires_grad=False)
    if config.input_scale == "static":
        layer.input_scale = torch.nn.Parameter(torch.tensor(0.011, device="cuda"), requires_grad=False)
    return layer, dequantize_fp8(q, s).double()


# -- quantizers --------------------------------------------------------------------------------


def assert_codes_agree(q: torch.Tensor, reference: torch.Tensor) -> None:
    """Equal codes, except on rare rounding ties, where the two values are fp8 neighbours."""
    ours, theirs = q.float(), reference.float()
    differ = ours != theirs
    assert differ.float().mean().item() <= 2e-3, "too many codes differ from the formats'"
    gap = (ours - theirs).abs()[differ]
    step = torch.maximum(ours.abs(), theirs.abs())[differ] * 2.0**-3 + 2.0**-9
    assert bool((gap <= step).all()), "a differing code is not a rounding neighbour"


def test_quantizers_agree_with_the_formats() -> None:
    require(Fp8Kernel)
    from kernel_core_flashinfer.ops import block_input_scales
    from kernel_core_flashinfer.triton_kernels import quantize_per_tensor, quantize_per_token_group

    x = activations(301, 1024, seed=1) * 7
    for scale in (None, torch.tensor([0.013], device="cuda")):
        q, s = quantize_per_tensor(x, scale)
        q_ref, s_ref = quantize_fp8(x, "tensor", scale=scale)
        assert q.shape == (1, 301, 1024)
        assert_codes_agree(q[0], q_ref)
        torch.testing.assert_close(s.reshape(1), s_ref.reshape(1), rtol=2.0**-22, atol=0)
    scales = block_input_scales(301, 1024, torch.device("cuda"))
    memory = scales.t()  # what the kernel reads: [K/128, round_up(M, 4)] row-major
    memory.fill_(float("nan"))
    q = quantize_per_token_group(x, scales)
    q_ref, s_ref = quantize_fp8_per_token_group(x)
    assert_codes_agree(q, q_ref)
    torch.testing.assert_close(scales[:301], s_ref, rtol=2.0**-22, atol=0)
    assert memory.shape == (8, 304) and memory.is_contiguous()
    assert not memory[:, :301].isnan().any() and memory[:, 301:].isnan().all()


# -- accuracy -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["static", "dynamic"])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m", [1, 7, 32, 128, 1000])
def test_fp8_matches_float64(mode, out_dtype, m) -> None:
    require(Fp8Kernel)
    config = FP8ScaledMMLinearLayerConfig(
        weight_shape=FP8_SHAPE, weight_scale_granularity="tensor", input_scale=mode,
        input_scale_granularity="tensor", out_dtype=out_dtype,
    )
    layer, w64 = fp8_layer(config, seed=m)
    kernel = Fp8Kernel(config)
    kernel.process_weights_after_loading(layer)
    x = activations(m, FP8_SHAPE[1], seed=m + 1)
    bias = torch.randn(FP8_SHAPE[0], device="cuda").to(torch.bfloat16)
    static = layer.input_scale if mode == "static" else None
    q, s = quantize_fp8(x, "tensor", scale=static)
    ref = dequantize_fp8(q, s).double() @ w64.t() + bias.double()
    poison((m, FP8_SHAPE[0]), out_dtype)
    out = kernel.apply_weights(layer, x, bias)
    assert out.dtype == out_dtype and out.shape == (m, FP8_SHAPE[0])
    assert torch.isfinite(out).all()
    assert relative_error(out, ref) <= bound(ref, out_dtype)


@pytest.mark.parametrize("m", [1, 16, 31, 32, 33, 100, 257, 1000])
def test_block_matches_float64(m) -> None:
    require(BlockKernel)
    n, k = BLOCK_SHAPE
    layer, w64 = block_layer(n, k, seed=m)
    kernel = BlockKernel(Fp8BlockLinearLayerConfig(weight_shape=BLOCK_SHAPE))
    kernel.process_weights_after_loading(layer)
    x = activations(m, k, seed=m + 1)
    bias = torch.randn(n, device="cuda").to(torch.bfloat16)
    q, s = quantize_fp8_per_token_group(x)
    ref = dequantize_fp8_per_token_group(q, s).double() @ w64.t() + bias.double()
    poison((m, n), torch.bfloat16)
    out = kernel.apply_weights(layer, x, bias)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert relative_error(out, ref) <= bound(ref, torch.bfloat16)
    # Row by row against the product of exactly the codes the plugin fed the GEMM: a bad row (a
    # misread scale, an unwritten tile) shows here, free of any rounding-tie difference.
    from kernel_core_flashinfer.ops import block_input_scales
    from kernel_core_flashinfer.triton_kernels import quantize_per_token_group

    scales = block_input_scales(m, k, x.device)
    codes = quantize_per_token_group(x, scales)
    exact = dequantize_fp8_per_token_group(codes, scales[:m].contiguous()).double() @ w64.t()
    exact = exact + bias.double()
    rows = (out.double() - exact).norm(dim=1) / exact.norm(dim=1)
    assert rows.max().item() <= 2 * bound(exact, torch.bfloat16), "one row is off"


def test_fp8_workspace_is_one_per_device() -> None:
    require(Fp8Kernel)
    from kernel_core_flashinfer import ops

    layers = []
    for shape in ((384, 1024), (256, 512)):
        config = FP8ScaledMMLinearLayerConfig(
            weight_shape=shape, weight_scale_granularity="tensor", input_scale="dynamic",
            input_scale_granularity="tensor",
        )
        layer, _ = fp8_layer(config, seed=shape[0])
        kernel = Fp8Kernel(config)
        kernel.process_weights_after_loading(layer)
        kernel.apply_weights(layer, activations(16, shape[1], seed=3))
        layers.append(layer)
    assert workspace_devices(ops.CUBLAS_WORKSPACE) == [
        torch.device("cuda", torch.cuda.current_device())]
    assert all(set(dict(layer.named_parameters())) == {"weight", "weight_scale"} for layer in layers)


# -- CUDA graphs and torch.compile ------------------------------------------------------------


def _kernel_and_layer(which: str):
    if which in ("fp8", "fp8_static"):
        require(Fp8Kernel)
        config = FP8ScaledMMLinearLayerConfig(
            weight_shape=FP8_SHAPE, weight_scale_granularity="tensor",
            input_scale="static" if which == "fp8_static" else "dynamic",
            input_scale_granularity="tensor",
        )
        layer, _ = fp8_layer(config, seed=5)
        kernel = Fp8Kernel(config)
    else:
        require(BlockKernel)
        layer, _ = block_layer(*BLOCK_SHAPE, seed=5)
        kernel = BlockKernel(Fp8BlockLinearLayerConfig(weight_shape=BLOCK_SHAPE))
    kernel.process_weights_after_loading(layer)
    return kernel, layer


@pytest.mark.parametrize("which", ["fp8", "fp8_block"])
@pytest.mark.parametrize("m", [1, 16, 48])
def test_cuda_graph_capture_and_replay(which, m) -> None:
    kernel, layer = _kernel_and_layer(which)
    k = kernel.config.weight_shape[1]
    static_x = activations(m, k, seed=7)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        kernel.apply_weights(layer, static_x)  # warm-up outside capture (JIT, workspace)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = kernel.apply_weights(layer, static_x)
    for seed in (8, 9):
        fresh = activations(m, k, seed=seed)
        static_x.copy_(fresh)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_out, kernel.apply_weights(layer, fresh))


@pytest.mark.parametrize("which", ["fp8", "fp8_static", "fp8_block"])
def test_torch_compile_fullgraph(which) -> None:
    kernel, layer = _kernel_and_layer(which)
    k = kernel.config.weight_shape[1]

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(kernel.apply_weights(layer, x)) * 2

    compiled = torch.compile(forward, fullgraph=True)
    for m in (3, 40):
        x = activations(m, k, seed=m)
        assert torch.equal(compiled(x), forward(x))
