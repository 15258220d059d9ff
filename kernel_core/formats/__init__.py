"""Weight and activation formats: byte-exact reference codecs in plain torch (CPU and CUDA).

The single source of truth for every format the families use: quantize, pack, unpack and
dequantize per format (:mod:`integer`, :mod:`fp8`, :mod:`int8`, :mod:`fp4`, :mod:`mx`) and the
bridge to the layer parameter contract (:mod:`layer`: ``quantize_weight``, ``dequantize_weight``,
``make_layer``). Scales are always decode multipliers.
"""

from kernel_core.formats.fp4 import (
    E2M1_MAX,
    E2M1_VALUES,
    NVFP4_GROUP,
    decode_e2m1,
    dequantize_mxfp4,
    dequantize_nvfp4,
    encode_e2m1,
    nvfp4_global_scale,
    pack_fp4,
    qdq_mxfp4,
    qdq_nvfp4,
    quantize_mxfp4,
    quantize_nvfp4,
    unpack_fp4,
)
from kernel_core.formats.fp8 import (
    FP8_E4M3_MAX,
    FP8_GROUP_AMAX_FLOOR,
    FP8_MIN_SCALE,
    dequantize_fp8,
    dequantize_fp8_block,
    dequantize_fp8_per_token_group,
    quantize_fp8,
    quantize_fp8_block,
    quantize_fp8_per_token_group,
)
from kernel_core.formats.int8 import INT8_AMAX_FLOOR, dequantize_int8, quantize_int8
from kernel_core.formats.integer import (
    AWQ_PACK_ORDER,
    IntQuantized,
    dequantize_int,
    pack_along_k,
    pack_awq,
    pack_ct_zero_point,
    pack_gptq_qweight,
    pack_gptq_qzeros,
    quantize_int,
    unpack_along_k,
    unpack_awq,
    unpack_ct_zero_point,
    unpack_gptq_qweight,
    unpack_gptq_qzeros,
)
from kernel_core.formats.layer import (
    DEFAULT_INPUT_AMAX,
    REFERENCE_WEIGHT_STD,
    dequantize_weight,
    make_act_order_g_idx,
    make_layer,
    quantize_weight,
)
from kernel_core.formats.mx import (
    E8M0_NAN,
    MX_GROUP,
    dequantize_mxfp8,
    e8m0_reciprocal,
    e8m0_to_float,
    float_to_e8m0,
    qdq_mxfp8,
    quantize_mxfp8,
)

__all__ = [
    # integer (GPTQ / compressed-tensors / AWQ)
    "IntQuantized",
    "quantize_int",
    "dequantize_int",
    "pack_along_k",
    "unpack_along_k",
    "pack_gptq_qweight",
    "unpack_gptq_qweight",
    "pack_gptq_qzeros",
    "unpack_gptq_qzeros",
    "pack_ct_zero_point",
    "unpack_ct_zero_point",
    "pack_awq",
    "unpack_awq",
    "AWQ_PACK_ORDER",
    # fp8
    "FP8_E4M3_MAX",
    "FP8_MIN_SCALE",
    "FP8_GROUP_AMAX_FLOOR",
    "quantize_fp8",
    "dequantize_fp8",
    "quantize_fp8_block",
    "dequantize_fp8_block",
    "quantize_fp8_per_token_group",
    "dequantize_fp8_per_token_group",
    # int8 activations
    "INT8_AMAX_FLOOR",
    "quantize_int8",
    "dequantize_int8",
    # fp4
    "E2M1_MAX",
    "E2M1_VALUES",
    "NVFP4_GROUP",
    "encode_e2m1",
    "decode_e2m1",
    "pack_fp4",
    "unpack_fp4",
    "nvfp4_global_scale",
    "quantize_nvfp4",
    "dequantize_nvfp4",
    "qdq_nvfp4",
    "quantize_mxfp4",
    "dequantize_mxfp4",
    "qdq_mxfp4",
    # mx
    "MX_GROUP",
    "E8M0_NAN",
    "e8m0_to_float",
    "float_to_e8m0",
    "e8m0_reciprocal",
    "quantize_mxfp8",
    "dequantize_mxfp8",
    "qdq_mxfp8",
    # layer contract
    "DEFAULT_INPUT_AMAX",
    "REFERENCE_WEIGHT_STD",
    "quantize_weight",
    "dequantize_weight",
    "make_layer",
    "make_act_order_g_idx",
]
