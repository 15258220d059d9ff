"""Processing a layer, checked on the CPU: decode the processed parameters the way the kernel does
(the same bit constructions, in torch) and compare with the core's exact dequantization of the
original checkpoint parameters. Also: the layer keeps only the packed tensors, Parameter
objects of the contract keep their identity, and apply_weights refuses a wrong input (shape,
dtype, device) before any launch."""

from __future__ import annotations

import copy

import pytest
import torch

from kernel_core.families import (
    FP8ScaledMMLinearLayerConfig,
    MPLinearLayerConfig,
    Mxfp8LinearLayerConfig,
    MxFp4LinearLayerConfig,
    NvFp4LinearLayerConfig,
)
from kernel_core.formats.layer import dequantize_weight, make_layer
from kernel_core.scalar_types import scalar_types
from kernel_core.testing import relative_error
from kernel_core_marlin import ops
from kernel_core_marlin.kernels import (
    MarlinFp8LinearKernel,
    MarlinMPLinearKernel,
    MarlinMxfp8LinearKernel,
    MarlinMxFp4LinearKernel,
    MarlinNvFp4LinearKernel,
)
from kernel_core_marlin.layout import unpack_codes, unpair_rows
from kernel_core_marlin.prepare import Format, act_order_plan

DTYPES = (torch.bfloat16, torch.float16)


def _mp(weight_type, group_size, act_order, dtype, shape=(48, 384)):
    return MPLinearLayerConfig(
        weight_shape=shape, act_dtype=dtype, weight_type=weight_type,
        zero_points=not weight_type.has_bias, group_size=group_size, has_g_idx=act_order,
    )


CASES = [
    *(
        (MarlinMPLinearKernel, _mp(wt, g, ao, d))
        for d in DTYPES
        for wt in (scalar_types.uint4b8, scalar_types.uint4, scalar_types.uint8b128,
                   scalar_types.uint8)
        for g, ao in ((128, False), (32, False), (-1, False), (64, True))
    ),
    (MarlinMPLinearKernel, MPLinearLayerConfig(
        weight_shape=(40, 256), full_weight_shape=(40, 512), act_dtype=torch.bfloat16,
        group_size=128, has_g_idx=True)),  # row-parallel act-order partition
    *((MarlinNvFp4LinearKernel, NvFp4LinearLayerConfig(
        weight_shape=(48, 384), act_dtype=d, activation_mode="w4a16")) for d in DTYPES),
    *((MarlinMxFp4LinearKernel, MxFp4LinearLayerConfig(
        weight_shape=(48, 384), act_dtype=d, activation_mode="w4a16")) for d in DTYPES),
    *((MarlinFp8LinearKernel, FP8ScaledMMLinearLayerConfig(
        weight_shape=(48, 384), act_dtype=d, activation_mode="w8a16",
        weight_scale_granularity=gran)) for d in DTYPES for gran in ("channel", "tensor")),
    *((MarlinMxfp8LinearKernel, Mxfp8LinearLayerConfig(
        weight_shape=(48, 384), act_dtype=d, activation_mode="w8a16")) for d in DTYPES),
]


def _as_float16_bits(bits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    wrapped = torch.where(bits >= 2**15, bits - 2**16, bits).to(torch.int16)
    return wrapped.view(dtype).to(torch.float32)


def emulate_decode(kernel, layer: torch.nn.Module, n: int) -> torch.Tensor:
    """The kernel's decode of every (row, kernel channel), in float64."""
    dtype = kernel.config.act_dtype
    fmt = kernel._fmt
    codes = unpack_codes(layer.weight.data, Format.BITS[fmt])[:n].to(torch.int64)
    kp = codes.shape[1]
    gscale = unpair_rows(layer.weight_scale.data)[:n]
    gtab = getattr(layer, "weight_group_table", None)
    if gtab is not None:
        groups = gtab.to(torch.int64).repeat_interleave(16)
    else:
        groups = torch.div(torch.arange(kp), kernel._group_size, rounding_mode="floor")
    groups = groups.clamp(max=gscale.shape[1] - 1).expand(n, kp)
    scale = gscale.gather(1, groups).to(torch.float32)
    if fmt in (Format.INT4, Format.INT8):
        zeros = getattr(layer, "weight_zero_point", None)
        z = (unpair_rows(zeros.data)[:n].gather(1, groups).to(torch.int64) if zeros is not None
             else kernel._zconst)
        value = (codes - z).to(torch.float32)
    elif fmt == Format.FP4:
        em_shift = 9 if dtype == torch.float16 else 6
        value = _as_float16_bits(((codes & 7) << em_shift) | ((codes & 8) << 12), dtype)
    else:
        em_shift = 7 if dtype == torch.float16 else 4
        value = _as_float16_bits(((codes & 0x7F) << em_shift) | ((codes & 0x80) << 8), dtype)
    decoded = (value * scale).to(dtype).to(torch.float64)  # one rounding, like __hmul2
    chan = getattr(layer, "weight_channel_scale", None)
    if chan is not None:
        decoded = decoded * chan.data.to(torch.float64)[:, None]
    return decoded


@pytest.mark.parametrize("kernel_class,config", CASES, ids=[c.short() for _, c in CASES])
def test_processed_layer_decodes_to_checkpoint(kernel_class, config) -> None:
    layer = make_layer(config, seed=7)
    original = copy.deepcopy(layer)
    weight_param = layer.weight
    kernel = kernel_class(config)
    kernel.process_weights_after_loading(layer)
    assert layer.weight is weight_param, "the weight Parameter must keep its identity"
    n, k = config.weight_shape
    decoded = emulate_decode(kernel, layer, n)
    perm = getattr(layer, "weight_perm", None)
    if perm is not None:
        # Kernel channel j reads activation column perm[j]; padding channels must decode to 0.
        plan, _ = act_order_plan(original.weight_g_idx.data, config.num_groups)
        assert torch.equal(plan.clamp(min=0), perm.data)
        assert bool((decoded[:, plan < 0] == 0).all())
        unpermuted = torch.zeros(n, k, dtype=torch.float64)
        unpermuted[:, plan[plan >= 0]] = decoded[:, plan >= 0]
        decoded = unpermuted
    else:
        decoded = decoded[:, :k]
    reference = dequantize_weight(config, original, dtype=torch.float32).to(torch.float64)
    error = relative_error(decoded, reference)
    exact_formats = (MarlinNvFp4LinearKernel, MarlinMxFp4LinearKernel, MarlinMxfp8LinearKernel,
                     MarlinFp8LinearKernel)
    bound = 1e-6 if kernel_class in exact_formats and config.act_dtype == torch.bfloat16 else 4e-3
    assert error < bound, f"relative error {error:.3g}"


@pytest.mark.parametrize("kernel_class,config", [
    (MarlinMPLinearKernel, _mp(scalar_types.uint4b8, 128, False, torch.bfloat16, (64, 512))),
    (MarlinMPLinearKernel, _mp(scalar_types.uint8, 64, False, torch.float16, (32, 256))),
    (MarlinNvFp4LinearKernel, NvFp4LinearLayerConfig(weight_shape=(48, 256),
                                                     activation_mode="w4a16")),
    (MarlinFp8LinearKernel, FP8ScaledMMLinearLayerConfig(weight_shape=(32, 192),
                                                         activation_mode="w8a16")),
], ids=["int4", "uint8-zp", "nvfp4", "fp8"])
def test_aligned_checkpoint_codes_are_repacked_in_place(kernel_class, config) -> None:
    """N a multiple of 16 and K of 64: the layout is written over the checkpoint's codes (no second
    copy of the weight while processing), and decodes to the checkpoint."""
    layer = make_layer(config, seed=3)
    original = copy.deepcopy(layer)
    storage = layer.weight.data.untyped_storage().data_ptr()
    kernel = kernel_class(config)
    kernel.process_weights_after_loading(layer)
    assert layer.weight.data.untyped_storage().data_ptr() == storage
    decoded = emulate_decode(kernel, layer, config.weight_shape[0])
    reference = dequantize_weight(config, original, dtype=torch.float32).to(torch.float64)
    assert relative_error(decoded, reference) < 4e-3


def test_unaligned_checkpoint_codes_get_their_own_layout() -> None:
    """N not a multiple of 16 (the layout is padded, so larger): a new tensor, the checkpoint's
    codes left as they were."""
    config = _mp(scalar_types.uint4b8, 128, False, torch.bfloat16, (40, 512))
    layer = make_layer(config, seed=4)
    checkpoint = layer.weight.data
    before = checkpoint.clone()
    kernel = MarlinMPLinearKernel(config)
    kernel.process_weights_after_loading(layer)
    assert layer.weight.data.untyped_storage().data_ptr() != checkpoint.untyped_storage().data_ptr()
    assert torch.equal(checkpoint, before)
    reference = dequantize_weight(config, make_layer(config, seed=4), dtype=torch.float32)
    assert relative_error(emulate_decode(kernel, layer, 40), reference.to(torch.float64)) < 4e-3


def test_checkpoint_off_a_16_byte_boundary_gets_its_own_layout() -> None:
    """Codes handed over as a view 4 bytes into a larger buffer: the layout (read by 16-byte
    copies) is a new, aligned tensor and the buffer is left as it was."""
    config = _mp(scalar_types.uint4b8, 128, False, torch.bfloat16, (64, 512))
    layer = make_layer(config, seed=5)
    reference = dequantize_weight(config, layer, dtype=torch.float32).to(torch.float64)
    buffer = torch.zeros(layer.weight.numel() + 1, dtype=torch.int32)
    buffer[1:] = layer.weight.data.reshape(-1)
    before = buffer.clone()
    layer.weight.data = buffer[1:].view(layer.weight.shape)
    kernel = MarlinMPLinearKernel(config)
    kernel.process_weights_after_loading(layer)
    assert layer.weight.data_ptr() % 16 == 0
    assert torch.equal(buffer, before)
    assert relative_error(emulate_decode(kernel, layer, 64), reference) < 4e-3


def test_int4_layers_with_chunk_aligned_groups_are_marked_for_pipeline_6() -> None:
    """What processing marks for pipeline 6 (the scale after each chunk's mma): int4 with groups
    of a multiple of 64 channels or channelwise, with or without zero points; not groups of 32,
    act-order, 8-bit or FP codes (the binding would refuse those)."""
    expected = {}
    for kernel_class, config in CASES:
        integer4 = kernel_class is MarlinMPLinearKernel and config.weight_type.size_bits == 4
        expected[config] = integer4 and (
            config.group_size == -1 or config.group_size % 64 == 0) and not config.has_g_idx
    assert any(expected.values()) and not all(expected.values())
    for kernel_class, config in CASES:
        layer = make_layer(config, seed=0)
        kernel = kernel_class(config)
        kernel.process_weights_after_loading(layer)
        assert kernel._chunk_scales is expected[config], config.short()


def test_layer_holds_only_packed_tensors() -> None:
    config = NvFp4LinearLayerConfig(weight_shape=(64, 128), activation_mode="w4a16")
    layer = make_layer(config, seed=1)
    MarlinNvFp4LinearKernel(config).process_weights_after_loading(layer)
    names = {name for name, _ in layer.named_parameters()}
    assert names == {"weight", "weight_scale", "weight_channel_scale"}
    packed = sum(p.numel() * p.element_size() for p in layer.parameters())
    checkpoint = 64 * 64 + 64 * 8 + 4
    assert packed <= checkpoint * 1.3


def test_bad_layer_is_a_value_error() -> None:
    config = MPLinearLayerConfig(weight_shape=(64, 128))
    layer = make_layer(config, seed=1)
    layer.weight_scale.data = layer.weight_scale.data[:, :0]
    with pytest.raises(ValueError, match="weight_scale"):
        MarlinMPLinearKernel(config).process_weights_after_loading(layer)


def test_bad_inputs_rejected_before_launch() -> None:
    config = MPLinearLayerConfig(weight_shape=(64, 128))
    layer = make_layer(config, seed=2)
    kernel = MarlinMPLinearKernel(config)
    kernel.process_weights_after_loading(layer)
    x = torch.randn(3, 128, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"expected a floating-point bias of shape \[64\], found bfloat16 of shape \[65\]"):
        kernel.apply_weights(layer, x, torch.randn(65, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match=r"expected x of shape \(\.\.\., 128\) and dtype bfloat16 .*found \[3, 144\] bfloat16"):
        kernel.apply_weights(layer, torch.randn(3, 144, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match=r"dtype bfloat16 .*found \[3, 128\] float16"):
        kernel.apply_weights(layer, x.half())  # no silent conversion to the config's dtype


#: One case of each kernel class (the act-order one for the MP kernel: it permutes x first).
ONE_PER_CLASS = [
    next(case for case in CASES if case[0] is cls and (cls is not MarlinMPLinearKernel
                                                        or case[1].has_g_idx))
    for cls in dict.fromkeys(cls for cls, _ in CASES)
]


def _launch_spy(monkeypatch) -> list[str]:
    """Replace the stream-kernel and decode ops; return the names of those called."""
    calls: list[str] = []

    def gemm(x, *args, pdl=False):
        calls.append("gemm")
        return torch.zeros(x.shape[0], args[7], dtype=x.dtype)

    def dequantize(*args):
        calls.append("dequantize")
        raise AssertionError("not reached at small M")

    monkeypatch.setattr(ops, "gemm", gemm)
    monkeypatch.setattr(ops, "dequantize", dequantize)
    return calls


@pytest.mark.parametrize("kernel_class,config", ONE_PER_CLASS,
                         ids=[c.short() for _, c in ONE_PER_CLASS])
def test_x_or_bias_on_another_device_refused_before_launch(kernel_class, config, monkeypatch):
    """The layer on the CPU, x (or bias) on "meta" (standing for another device): a ValueError
    naming both devices, and no launch."""
    layer = make_layer(config, seed=3)
    kernel = kernel_class(config)
    kernel.process_weights_after_loading(layer)
    calls = _launch_spy(monkeypatch)
    n, k = config.weight_shape
    dtype = config.act_dtype
    name = kernel_class.__name__
    with pytest.raises(ValueError, match=rf"^{name}\.apply_weights: expected x on the layer's "
                                         r"device cpu, found meta$"):
        kernel.apply_weights(layer, torch.empty(3, k, dtype=dtype, device="meta"))
    with pytest.raises(ValueError, match=rf"^{name}\.apply_weights: expected bias on the layer's "
                                         r"device cpu, found meta$"):
        kernel.apply_weights(layer, torch.randn(3, k, dtype=dtype),
                             torch.empty(n, dtype=dtype, device="meta"))
    assert calls == []
    # The same call with everything on the layer's device gets past the checks to the launch.
    out = kernel.apply_weights(layer, torch.randn(2, 3, k, dtype=dtype), torch.randn(n, dtype=dtype))
    assert calls == ["gemm"] and out.shape == (2, 3, n)


@torch.library.custom_op("kernel_core_marlin_test::gemm_stub", mutates_args=())
def _gemm_stub(x: torch.Tensor, qweight: torch.Tensor, gscale: torch.Tensor,
               zeros: torch.Tensor | None, gtab: torch.Tensor | None, chan: torch.Tensor | None,
               bias: torch.Tensor | None, fmt: int, n: int, group_size: int, zconst: int, mt: int,
               rows: int, wn: int, wk: int, pipeline: int, pdl: bool = False) -> torch.Tensor:
    """A CPU stand-in for ``kernel_core_marlin::gemm`` with its schema: the launch arguments as
    the first row of an otherwise zero output."""
    out = x.new_zeros((x.shape[0], n))
    out[0, :5] = torch.tensor([mt, rows, wn, wk, pipeline], dtype=x.dtype)
    out[0, 5] = float(pdl)
    return out


@_gemm_stub.register_fake
def _(x, qweight, gscale, zeros, gtab, chan, bias, fmt, n, group_size, zconst, mt, rows, wn, wk,
      pipeline, pdl=False):
    return x.new_empty((x.shape[0], n))


@pytest.mark.parametrize("bulk", [False, True], ids=["ring", "bulk-with-pdl"])
def test_apply_weights_traces_under_torch_compile_fullgraph(bulk: bool, monkeypatch) -> None:
    """apply_weights (parameters read from the layer's dict, launch choice, PDL flag) traces
    without a graph break and passes the same launch as in eager mode."""
    config = MPLinearLayerConfig(weight_shape=(256, 512), group_size=128)
    layer = make_layer(config, seed=0)
    kernel = MarlinMPLinearKernel(config)
    kernel.process_weights_after_loading(layer)
    kernel._bulk = bulk  # as on SM90 (the CPU layer has no GPU to ask)
    monkeypatch.setattr(ops, "gemm", _gemm_stub)
    x = torch.randn(2, 3, 512, dtype=torch.bfloat16)
    compiled = torch.compile(lambda inp: kernel.apply_weights(layer, inp) * 2, fullgraph=True,
                             backend="eager")
    out = compiled(x)
    assert torch.equal(out, kernel.apply_weights(layer, x) * 2)
    launch = ops.launch_config(6, kernel._fmt, bulk, kernel._chunk_scales)
    expected = [*launch, float(ops.launch_with_pdl(launch[4]))]
    assert out.reshape(6, 256)[0, :6].tolist() == [2 * v for v in expected]


def test_apply_weights_serves_a_dataparallel_replica(monkeypatch) -> None:
    """A replica made by torch.nn.DataParallel holds the processed tensors as plain attributes:
    apply_weights passes the GEMM the same tensors (act-order permutation and group table
    included) as for the original layer."""
    config = MPLinearLayerConfig(weight_shape=(256, 512), weight_type=scalar_types.uint4,
                                 zero_points=True, group_size=128, has_g_idx=True)
    layer = make_layer(config, seed=0)
    kernel = MarlinMPLinearKernel(config)
    kernel.process_weights_after_loading(layer)
    replica = layer._replicate_for_data_parallel()  # what torch.nn.parallel.replicate does
    for name, param in layer._parameters.items():
        setattr(replica, name, param.detach().clone())
    calls = []

    def record(x, *tensors_and_launch, pdl=False):
        calls.append((x, tensors_and_launch[:5]))
        return x.new_zeros((x.shape[0], 256))

    monkeypatch.setattr(ops, "gemm", record)
    x = torch.randn(3, 512, dtype=torch.bfloat16)
    kernel.apply_weights(layer, x)
    kernel.apply_weights(replica, x)
    (x_layer, from_layer), (x_replica, from_replica) = calls
    assert torch.equal(x_layer, x_replica) and not torch.equal(x_layer, x)  # permuted alike
    assert from_layer[3] is not None  # the act-order group table reached the GEMM
    for a, b in zip(from_layer, from_replica, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
