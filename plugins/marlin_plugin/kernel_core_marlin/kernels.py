"""The plugin's kernel classes: one per family, all served by the same stream kernel.

Each class converts its family's checkpoint parameters into the shared packed form
(:mod:`kernel_core_marlin.prepare`) once, then runs ``kernel_core_marlin::gemm`` for small and
medium M and ``kernel_core_marlin::dequantize`` + cuBLAS for large M.

After ``process_weights_after_loading`` a layer holds only:

=========================== ==================================================================
``weight``                  int32 ``[Np/16, Kp/64, bits/4, 32, 4]`` fragment-ordered codes
``weight_scale``            ``[Np/16, G, 8, 2]`` per-group multiplier, activation dtype
``weight_zero_point``       ``[Np/16, G, 8, 2]`` zero-point codes, activation dtype (zero points)
``weight_channel_scale``    fp32 ``[N]`` multiplier of each output row (FP formats, channelwise)
``weight_perm``             int64 ``[Kp]`` activation column of each kernel channel (act-order)
``weight_group_table``      int32 ``[Kp/16]`` group of each 16 kernel channels (act-order)
=========================== ==================================================================
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kernel_core.families import (
    FP8ScaledMMLinearKernel,
    FP8ScaledMMLinearLayerConfig,
    MPLinearKernel,
    MPLinearLayerConfig,
    Mxfp8LinearKernel,
    Mxfp8LinearLayerConfig,
    MxFp4LinearKernel,
    MxFp4LinearLayerConfig,
    NvFp4LinearKernel,
    NvFp4LinearLayerConfig,
)
from kernel_core.families.mxfp4 import MX_GROUP
from kernel_core.kernel import Priority
from kernel_core.params import processed_tensors, replace_parameter
from kernel_core_marlin import ops, tile
from kernel_core_marlin.layout import CHUNK_K, TILE_N, round_up
from kernel_core_marlin.prepare import (
    Format,
    PackedWeights,
    act_order_plan,
    fp_bias_compensation,
    nibbles_of,
    pack_codes,
    pad_columns,
    paired,
)

__all__ = [
    "MarlinMPLinearKernel",
    "MarlinNvFp4LinearKernel",
    "MarlinMxFp4LinearKernel",
    "MarlinFp8LinearKernel",
    "MarlinMxfp8LinearKernel",
    "KERNELS",
    "DEQUANT_MATMUL_MIN_M",
    "cuda_support",
]

#: From this many rows of activations on, decode the weight once and let cuBLAS multiply
#: (crossovers measured on an H100, benchmarks/results/marlin-h100-2026-11-22.json: the stream
#: kernel still wins at M=128 for int4 g128 on 3 of 4 shapes, loses there for NVFP4).
DEQUANT_MATMUL_MIN_M = {Format.INT4: 256, Format.INT8: 256, Format.FP4: 128, Format.FP8: 128}
#: Group size given to the kernel when one group spans all of K.
_ONE_GROUP = 1 << 30
_ACT_DTYPES = (torch.float16, torch.bfloat16)
_PACKED_NAMES = (
    "weight",
    "weight_scale",
    "weight_zero_point",
    "weight_channel_scale",
    "weight_perm",
    "weight_group_table",
)


def cuda_support(compute_capability: int | None) -> tuple[bool, str | None]:
    """CUDA device of capability 8.0+ and a CUDA toolchain to build the kernels."""
    if torch.version.cuda is None:
        return False, "torch was built without CUDA"
    if not torch.cuda.is_available():
        return False, "no CUDA device is available"
    if compute_capability is None:
        major, minor = torch.cuda.get_device_capability()
        compute_capability = major * 10 + minor
    if compute_capability < 80:
        return False, (
            f"needs compute capability 8.0 or newer (bf16 mma.sync), found "
            f"{compute_capability // 10}.{compute_capability % 10}"
        )
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None:
        return False, (
            "the CUDA toolchain (nvcc) is needed to build the kernels; CUDA_HOME not found"
        )
    return True, None


def _activation_reason(config) -> str | None:
    if config.act_dtype not in _ACT_DTYPES:
        return f"activations must be float16 or bfloat16, found {config.act_dtype}"
    return None


def _k_reason(k: int) -> str | None:
    if k % 16:
        return f"in_features must be a multiple of 16 (16-channel activation loads), found {k}"
    return None


class _StreamKernel:
    """Shared lifecycle: validate, pack, replace the parameters; then run the ops."""

    priority = Priority.SPECIALIZED
    platforms = frozenset({"cuda"})

    @classmethod
    def is_supported(cls, compute_capability: int | None = None) -> tuple[bool, str | None]:
        return cuda_support(compute_capability)

    @classmethod
    def warmup(cls, compute_capability: int | None = None) -> None:
        if cuda_support(compute_capability)[0]:
            ops.extension()

    def _pack(self, tensors: dict[str, torch.Tensor]) -> PackedWeights:
        raise NotImplementedError

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        tensors = self.validate_layer(layer)  # type: ignore[attr-defined]
        with torch.no_grad():
            packed = self._pack(tensors)
        del tensors
        for spec in self.parameter_specs(self.config):  # type: ignore[attr-defined]
            if spec.name not in _PACKED_NAMES:
                replace_parameter(layer, spec.name, None)
        values = {
            "weight": packed.qweight,
            "weight_scale": packed.gscale,
            "weight_zero_point": packed.zeros,
            "weight_channel_scale": packed.chan,
            "weight_perm": packed.perm,
            "weight_group_table": packed.gtab,
        }
        for name, value in values.items():
            if value is None:
                replace_parameter(layer, name, None)
            else:
                replace_parameter(layer, name, value)
        self._fmt = packed.fmt
        self._group_size = packed.group_size
        self._zconst = packed.zconst
        self._bulk = ops.bulk_pipeline_available(packed.qweight.device)
        self._sms = (torch.cuda.get_device_properties(packed.qweight.device).multi_processor_count
                     if packed.qweight.device.type == "cuda" else 0)
        self._chunk_scales = ops.scales_per_chunk(packed.fmt, packed.group_size,
                                                  packed.gtab is not None)
        if packed.qweight.device.type == "cuda":
            # A GEMM launched as a programmatic dependent reads the layer's codes and scales
            # before the kernel ahead of it completes (ops.launch_with_pdl): the kernels that just
            # wrote them must be done.
            torch.cuda.current_stream(packed.qweight.device).synchronize()
        n = self.config.weight_shape[0]  # type: ignore[attr-defined]
        self._tile = tile.TileDispatch.for_device(
            packed.qweight.device, packed.fmt, n, packed.qweight.shape[1]
        )

    def apply_weights(
        self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        config = self.config  # type: ignore[attr-defined]
        n, k = config.weight_shape
        self.check_apply_inputs(x, bias)  # type: ignore[attr-defined]
        # The processed tensors come straight from the parameter dict (process_weights_after_loading
        # registers them all as parameters): Module.__getattr__ takes ~1 us a name on the CPU
        # machine and more for each absent optional one (it raises AttributeError); with the GEMM
        # stubbed a call took 17-21 us that way and 8-9 us this way there.
        params = processed_tensors(layer)
        weight = params["weight"]
        scale = params["weight_scale"]
        self.check_apply_device(x, weight, bias)  # type: ignore[attr-defined]
        lead = x.shape[:-1]
        x2 = x.reshape(-1, k)
        perm = params.get("weight_perm")
        if perm is not None:
            x2 = x2.index_select(1, perm)
        x2 = x2.contiguous()
        if bias is not None:
            bias = bias.to(config.act_dtype)
        zeros = params.get("weight_zero_point")
        gtab = params.get("weight_group_table")
        chan = params.get("weight_channel_scale")
        m = x2.shape[0]
        if self._tile is not None and self._tile.serves(m):
            plan = self._tile.plan(m)
            out = tile.tile_gemm(
                x2, weight, scale, zeros, gtab, chan, bias, self._fmt, n,
                self._group_size, self._zconst, plan.bmx, plan.rw, plan.split, plan.variant,
            )
        elif m >= DEQUANT_MATMUL_MIN_M[self._fmt]:
            dense = ops.dequantize(
                weight, scale, zeros, gtab, chan, self._fmt, n,
                self._group_size, self._zconst, config.act_dtype,
            )
            out = torch.nn.functional.linear(x2, dense[:, : x2.shape[1]], bias)
        else:
            launch = ops.launch_config(m, self._fmt, self._bulk, self._chunk_scales, n=n,
                                       k=x2.shape[1], sms=self._sms)
            out = ops.gemm(
                x2, weight, scale, zeros, gtab, chan, bias, self._fmt, n,
                self._group_size, self._zconst, *launch, pdl=ops.launch_with_pdl(launch[4]),
            )
        return out.to(config.out_dtype).reshape(*lead, n)


def _fp_tables(
    fmt: int, act_dtype: torch.dtype, exponents: torch.Tensor, np_: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """E8M0 group exponents: group multiplier ``2^(E - Emax_row + bias)`` in the 16-bit type,
    ``2^(Emax_row - 127)`` per row in fp32 (so neither overflows the 16-bit range)."""
    e = exponents.to(torch.int16)
    emax = e.amax(dim=1, keepdim=True)
    comp = fp_bias_compensation(fmt, act_dtype)
    # Powers of two from 2^(comp - 254) to 2^comp: exact in fp32 down to its subnormals, and the
    # 16-bit cast flushes only groups ~2^-133 (bf16) smaller than the row's largest.
    gscale = torch.exp2((e - emax + comp).to(torch.float32)).to(act_dtype)
    chan = torch.exp2((emax[:, 0] - 127).to(torch.float32))
    return paired(gscale, np_, act_dtype), chan


def _e4m3_bytes(weight: torch.Tensor) -> torch.Tensor:
    """FP8 E4M3 codes as their bytes (the kernel decodes them by bit operations)."""
    return weight.contiguous().view(torch.uint8)


def _pack_mx(
    config: MxFp4LinearLayerConfig | Mxfp8LinearLayerConfig,
    tensors: dict[str, torch.Tensor],
    fmt: int,
    codes_of: Callable[[torch.Tensor], torch.Tensor],
    *,
    bits: int,
) -> PackedWeights:
    """MXFP4 and MXFP8: the codes repacked, and the E8M0 exponents of each group of 32."""
    n, k = config.weight_shape
    np_, kp = round_up(n, TILE_N), round_up(k, CHUNK_K)
    weight = tensors["weight"]
    qweight = pack_codes(
        lambda r0, r1: pad_columns(codes_of(weight[r0:r1]), kp), n, kp, bits, weight
    )
    gscale, chan = _fp_tables(fmt, config.act_dtype, tensors["weight_scale"], np_)
    return PackedWeights(
        qweight=qweight, gscale=gscale, zeros=None, chan=chan, perm=None, gtab=None,
        fmt=fmt, group_size=MX_GROUP, zconst=0,
    )


class MarlinMPLinearKernel(_StreamKernel, MPLinearKernel):
    """GPTQ / compressed-tensors / AWQ-converted int4 and int8 weights, W4A16 and W8A16."""

    name = "MarlinMPLinearKernel"

    @classmethod
    def can_implement(cls, config: MPLinearLayerConfig) -> tuple[bool, str | None]:
        reason = _activation_reason(config)
        if reason:
            return False, reason
        if not config.has_g_idx:
            reason = _k_reason(config.in_features)
            if reason:
                return False, reason
            if config.group_size != -1 and config.group_size % 16:
                return False, (
                    f"group_size must be -1 or a multiple of 16, found {config.group_size}"
                )
        return True, None

    def _pack(self, tensors: dict[str, torch.Tensor]) -> PackedWeights:
        config: MPLinearLayerConfig = self.config
        n, k = config.weight_shape
        np_ = round_up(n, TILE_N)
        bits = config.weight_type.size_bits
        weight = tensors["weight"]
        device = weight.device
        zp = tensors.get("weight_zero_point")

        def raw_codes(r0: int, r1: int) -> torch.Tensor:
            rows = weight[r0:r1]
            return nibbles_of(rows) if bits == 4 else rows.contiguous().view(torch.uint8)

        perm = gtab = None
        if config.has_g_idx:
            plan_perm, plan_gtab = act_order_plan(tensors["weight_g_idx"], config.num_groups)
            kp = plan_perm.numel()
            gather = plan_perm.clamp(min=0).to(device)
            pad_blocks = (plan_perm < 0).to(device)
            pad_groups = plan_gtab.to(device).repeat_interleave(16).to(torch.int64)

            def codes_of(r0: int, r1: int) -> torch.Tensor:
                codes = raw_codes(r0, r1)[:, gather]
                if zp is not None:
                    zero_code = zp[r0:r1][:, pad_groups]
                else:
                    zero_code = torch.full_like(codes, config.weight_type.bias)
                return torch.where(pad_blocks, zero_code, codes)

            perm, gtab = gather, plan_gtab.to(device)
        else:
            kp = round_up(k, CHUNK_K)

            def codes_of(r0: int, r1: int) -> torch.Tensor:
                return pad_columns(raw_codes(r0, r1), kp)

        qweight = pack_codes(codes_of, n, kp, bits, weight)
        scale = tensors["weight_scale"]
        if config.group_size == -1 and not config.has_g_idx:
            chan = scale[:, 0].to(torch.float32).contiguous()
            gscale = paired(torch.ones_like(scale, dtype=torch.float32), np_, config.act_dtype)
        else:
            chan = None
            gscale = paired(scale, np_, config.act_dtype)
        if config.group_size == -1 or config.has_g_idx:
            group_size = _ONE_GROUP if not config.has_g_idx else 0
        else:
            group_size = config.group_size
        return PackedWeights(
            qweight=qweight,
            gscale=gscale,
            zeros=paired(zp, np_, config.act_dtype) if zp is not None else None,
            chan=chan,
            perm=perm,
            gtab=gtab,
            fmt=Format.INT4 if bits == 4 else Format.INT8,
            group_size=group_size,
            zconst=config.weight_type.bias,
        )


class MarlinNvFp4LinearKernel(_StreamKernel, NvFp4LinearKernel):
    """NVFP4 weights (E2M1, E4M3 scales per 16, fp32 global scale) with 16-bit activations."""

    name = "MarlinNvFp4LinearKernel"

    @classmethod
    def can_implement(cls, config: NvFp4LinearLayerConfig) -> tuple[bool, str | None]:
        if config.activation_mode != "w4a16":
            return False, (
                f"activation_mode={config.activation_mode!r}: this kernel is weight-only (w4a16); "
                "W4A4 needs FP4 tensor cores (SM100)"
            )
        return (False, r) if (r := _activation_reason(config)) else (True, None)

    def _pack(self, tensors: dict[str, torch.Tensor]) -> PackedWeights:
        config: NvFp4LinearLayerConfig = self.config
        n, k = config.weight_shape
        np_, kp = round_up(n, TILE_N), round_up(k, CHUNK_K)
        weight = tensors["weight"]
        qweight = pack_codes(
            lambda r0, r1: pad_columns(nibbles_of(weight[r0:r1]), kp), n, kp, 4, weight
        )
        # E2M1 x E4M3 is exact in bf16 and fp16; keep the product in the normal range and move
        # the rest of the power of two (and the global scale) to the fp32 row multiplier.
        down = 10 if config.act_dtype == torch.float16 else 9
        comp = fp_bias_compensation(Format.FP4, config.act_dtype)
        # E4M3 values and their power-of-two multiples are exact in bf16/fp16: no fp32 temporary.
        gscale = tensors["weight_scale"].to(config.act_dtype).mul_(2.0 ** (comp - down))
        global_scale = tensors["weight_global_scale"].to(torch.float32).reshape(())
        chan = (global_scale * 2.0**down).expand(n).contiguous()
        return PackedWeights(
            qweight=qweight, gscale=paired(gscale, np_, config.act_dtype), zeros=None,
            chan=chan, perm=None, gtab=None, fmt=Format.FP4, group_size=16, zconst=0,
        )


class MarlinMxFp4LinearKernel(_StreamKernel, MxFp4LinearKernel):
    """MXFP4 weights (E2M1, E8M0 scales per 32) with 16-bit activations."""

    name = "MarlinMxFp4LinearKernel"

    @classmethod
    def can_implement(cls, config: MxFp4LinearLayerConfig) -> tuple[bool, str | None]:
        if config.activation_mode != "w4a16":
            return False, (
                f"activation_mode={config.activation_mode!r}: this kernel is weight-only (w4a16)"
            )
        return (False, r) if (r := _activation_reason(config)) else (True, None)

    def _pack(self, tensors: dict[str, torch.Tensor]) -> PackedWeights:
        return _pack_mx(self.config, tensors, Format.FP4, nibbles_of, bits=4)


class MarlinFp8LinearKernel(_StreamKernel, FP8ScaledMMLinearKernel):
    """FP8 E4M3 weights, per-channel or per-tensor scales, 16-bit activations (W8A16)."""

    name = "MarlinFp8LinearKernel"

    @classmethod
    def can_implement(cls, config: FP8ScaledMMLinearLayerConfig) -> tuple[bool, str | None]:
        if config.activation_mode != "w8a16":
            return False, (
                f"activation_mode={config.activation_mode!r}: this kernel is weight-only (w8a16); "
                "FP8 activations are served by the scaled-MM kernels"
            )
        if r := _activation_reason(config):
            return False, r
        return (False, r) if (r := _k_reason(config.in_features)) else (True, None)

    def _pack(self, tensors: dict[str, torch.Tensor]) -> PackedWeights:
        config: FP8ScaledMMLinearLayerConfig = self.config
        n, k = config.weight_shape
        np_, kp = round_up(n, TILE_N), round_up(k, CHUNK_K)
        weight = tensors["weight"]
        qweight = pack_codes(
            lambda r0, r1: pad_columns(_e4m3_bytes(weight[r0:r1]), kp), n, kp, 8, weight,
        )
        comp = fp_bias_compensation(Format.FP8, config.act_dtype)
        gscale = torch.full((n, 1), 2.0**comp, device=weight.device)
        chan = tensors["weight_scale"].to(torch.float32).reshape(-1).expand(n).contiguous()
        return PackedWeights(
            qweight=qweight, gscale=paired(gscale, np_, config.act_dtype), zeros=None,
            chan=chan, perm=None, gtab=None, fmt=Format.FP8, group_size=_ONE_GROUP, zconst=0,
        )


class MarlinMxfp8LinearKernel(_StreamKernel, Mxfp8LinearKernel):
    """MXFP8 weights (E4M3, E8M0 scales per 32) with 16-bit activations (W8A16)."""

    name = "MarlinMxfp8LinearKernel"

    @classmethod
    def can_implement(cls, config: Mxfp8LinearLayerConfig) -> tuple[bool, str | None]:
        if config.activation_mode != "w8a16":
            return False, (
                f"activation_mode={config.activation_mode!r}: this kernel is weight-only (w8a16)"
            )
        return (False, r) if (r := _activation_reason(config)) else (True, None)

    def _pack(self, tensors: dict[str, torch.Tensor]) -> PackedWeights:
        return _pack_mx(self.config, tensors, Format.FP8, _e4m3_bytes, bits=8)


KERNELS = (
    MarlinMPLinearKernel,
    MarlinNvFp4LinearKernel,
    MarlinMxFp4LinearKernel,
    MarlinFp8LinearKernel,
    MarlinMxfp8LinearKernel,
)
