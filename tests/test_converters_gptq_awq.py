"""GPTQ and AWQ converters on byte-level vectors.

No library writes these layouts on CPU here, so the vectors are built by hand: int32 words whose
codes are decoded by hand, and round trips where a float weight is encoded in the checkpoint's own
layout (the test-side encoders use the formats' packers) and the converted parameters must
dequantize to the checkpoint's own formula, computed here with an unpacker written in the test.
The AWQ converter is also compared with compressed-tensors' own AutoAWQ converter when the package
is installed.
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch

from kernel_core.converters import awq, gptq
from kernel_core.converters import compressed_tensors as ct_conv
from kernel_core.formats.integer import pack_awq, pack_gptq_qweight, pack_gptq_qzeros, quantize_int
from kernel_core.formats.layer import dequantize_weight, make_act_order_g_idx
from kernel_core.scalar_types import scalar_types

AWQ_SLOT_OF_COLUMN = (0, 4, 1, 5, 2, 6, 3, 7)


def word(value: int) -> int:
    """An unsigned 32-bit word as the int32 a checkpoint stores."""
    return value - 2**32 if value >= 2**31 else value


def codes_of_words(words: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Test-side unpacker, independent of the formats': field i of the last dim, LSB first."""
    unsigned = words.to(torch.int64) & 0xFFFFFFFF
    per_word = 32 // bits
    index = torch.arange(count)
    fields = unsigned[..., index // per_word] >> (bits * (index % per_word))
    return fields & (2**bits - 1)


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-6) -> None:
    a, e = actual.double(), expected.double()
    err = (a - e).norm() / e.norm()
    assert err <= rel, f"relative error {err:.3g} > {rel}"


def _weight(n: int, k: int, seed: int) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.05


# ---------------------------------------------------------------------------------------------
# GPTQ
# ---------------------------------------------------------------------------------------------


def test_gptq_hand_decoded_words():
    """Column 0 holds k = 0..7 as nibbles 0..7; column 1 a word with the top bit set
    (0x89ABCDEF: k = 0..7 are 15, 14, ..., 8). Symmetric: w = (code - 8) * scale."""
    n, k = 8, 8
    qweight = torch.full((1, n), word(0x88888888), dtype=torch.int32)  # codes 8: value 0
    qweight[0, 0] = word(0x76543210)
    qweight[0, 1] = word(0x89ABCDEF)
    scales = (torch.arange(1, n + 1, dtype=torch.float16) / 16).reshape(1, n)
    config, params = gptq.convert(
        {"qweight": qweight, "scales": scales}, bits=4, group_size=-1, sym=True
    )
    assert config.weight_type == scalar_types.uint4b8 and config.weight_shape == (n, k)
    w = dequantize_weight(config, params)
    assert w[0].tolist() == [(c - 8) / 16 for c in range(8)]
    assert w[1].tolist() == [(c - 8) * 2 / 16 for c in range(15, 7, -1)]
    assert (w[2:] == 0).all()


def test_gptq_v1_zero_point_off_by_one():
    """Asymmetric, one group, N = 8: the zeros word 0x6543210F stores zero - 1 for zeros 0..7 in
    v1 (zero 0 wraps to 15); gptq_v2 reads the same word as the zeros themselves."""
    n, k = 8, 8
    qweight = torch.full((1, n), word(0x99999999), dtype=torch.int32)  # every code 9
    qzeros = torch.tensor([[word(0x6543210F)]], dtype=torch.int32)
    scales = torch.ones(1, n, dtype=torch.float16)
    tensors = {"qweight": qweight, "qzeros": qzeros, "scales": scales}
    _, v1 = gptq.convert(tensors, bits=4, group_size=-1, sym=False, checkpoint_format="gptq")
    assert v1["weight_zero_point"].flatten().tolist() == list(range(8))
    config, v2 = gptq.convert(tensors, bits=4, group_size=-1, sym=False,
                              checkpoint_format="gptq_v2")
    assert v2["weight_zero_point"].flatten().tolist() == [15, 0, 1, 2, 3, 4, 5, 6]
    assert config.weight_type == scalar_types.uint4 and config.weight_shape == (n, k)
    w = dequantize_weight(config, v2)
    assert w[:, 0].tolist() == [9 - z for z in [15, 0, 1, 2, 3, 4, 5, 6]]


def gptq_checkpoint(weight, bits, group, sym, g_idx, fmt):
    """Test-side GPTQ encoder: quantize, then lay the result out as GPTQ stores it."""
    weight_type = {(4, True): scalar_types.uint4b8, (8, True): scalar_types.uint8b128,
                   (4, False): scalar_types.uint4, (8, False): scalar_types.uint8}[(bits, sym)]
    q = quantize_int(weight, weight_type, group, g_idx=g_idx, scale_dtype=torch.float16)
    tensors = {"qweight": pack_gptq_qweight(q.codes, bits), "scales": q.scale.t().contiguous()}
    zeros = q.zero_point if not sym else torch.full_like(q.scale, 2 ** (bits - 1),
                                                         dtype=torch.uint8)
    if fmt == "gptq":
        zeros = ((zeros.to(torch.int32) - 1) % 2**bits).to(torch.uint8)
    tensors["qzeros"] = pack_gptq_qzeros(zeros, bits)
    if g_idx is not None:
        tensors["g_idx"] = g_idx
    return tensors


def gptq_formula(tensors, bits, group, sym, fmt):
    """GPTQ's dequantization from the stored words:
    ``w[n, k] = (q[k, n] - z[g(k), n]) * s[g(k), n]``."""
    qweight, scales = tensors["qweight"], tensors["scales"].double()
    k, n = qweight.shape[0] * 32 // bits, qweight.shape[1]
    q = codes_of_words(qweight.t(), bits, k).double()  # [N, K]
    if sym:
        z = torch.full((scales.shape[0], n), 2.0 ** (bits - 1), dtype=torch.float64)
    else:
        z = codes_of_words(tensors["qzeros"], bits, n).double()  # [G, N]
        if fmt == "gptq":
            z = (z + 1) % 2**bits
    g = tensors.get("g_idx")
    g = (torch.arange(k) // (k if group == -1 else group)) if g is None else g.long()
    return (q - z[g].t()) * scales[g].t()


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("group,act_order", [(128, False), (64, True), (-1, False)])
@pytest.mark.parametrize("fmt", ["gptq", "gptq_v2"])
def test_gptq_round_trip(bits, sym, group, act_order, fmt):
    n, k = 48, 256
    weight = _weight(n, k, seed=bits * 100 + group)
    g_idx = make_act_order_g_idx(k, group, seed=3) if act_order else None
    tensors = gptq_checkpoint(weight, bits, group, sym, g_idx, fmt)
    config, params = gptq.convert(
        tensors, bits=bits, group_size=group, sym=sym, desc_act=act_order, checkpoint_format=fmt
    )
    assert config.has_g_idx == act_order
    assert config.act_dtype == torch.float16
    expected = gptq_formula(tensors, bits, group, sym, fmt)
    assert_close_rel(dequantize_weight(config, params), expected)
    assert_close_rel(expected, weight, 0.2 if bits == 4 else 0.02)


def test_gptq_plain_order_g_idx_is_dropped():
    n, k = 16, 256
    tensors = gptq_checkpoint(_weight(n, k, 1), 4, 128, True, None, "gptq")
    tensors["g_idx"] = (torch.arange(k) // 128).int()
    config, params = gptq.convert(tensors, bits=4, group_size=128, desc_act=True)
    assert not config.has_g_idx and "weight_g_idx" not in params


@pytest.fixture(scope="module")
def gptq_asym():
    return gptq_checkpoint(_weight(16, 256, 2), 4, 128, False, None, "gptq")


@pytest.mark.parametrize(
    "fields,edit,match",
    [
        ({"bits": 3}, None, r"gptq: bits=3 is not supported; expected 4 or 8"),
        ({"checkpoint_format": "gptq_v3"}, None, r"checkpoint_format='gptq_v3' is not supported"),
        ({"group_size": 0}, None, r"group_size=0 is not allowed"),
        ({}, lambda t: {**t, "qweight": t["qweight"].float()},
         r"gptq.qweight: expected dtype int32, found float32"),
        ({}, lambda t: {k: v for k, v in t.items() if k != "qweight"}, r"gptq.qweight: missing"),
        ({}, lambda t: {**t, "qweight": t["qweight"].flatten()},
         r"gptq.qweight: expected a 2-D tensor"),
        ({}, lambda t: {**t, "scales": t["scales"].t()},
         r"gptq.scales: expected shape \[2, 16\], found \[16, 2\]"),
        ({}, lambda t: {k: v for k, v in t.items() if k != "qzeros"}, r"gptq.qzeros: missing"),
        ({"sym": True}, lambda t: {**t, "qzeros": t["qzeros"][:1]},
         r"gptq.qzeros: expected shape \[2, 2\], found \[1, 2\]"),
        ({"desc_act": True}, None, r"gptq.g_idx: missing"),
        ({}, lambda t: {**t, "g_idx": torch.full((256,), -1, dtype=torch.int32)},
         r"gptq.g_idx: expected group indices in \[0, 2\), found values in \[-1, -1\]"),
    ],
)
def test_gptq_errors(gptq_asym, fields, edit, match):
    tensors = edit(gptq_asym) if edit else gptq_asym
    kwargs = {"bits": 4, "group_size": 128, "sym": False} | fields
    with pytest.raises(ValueError, match=match):
        gptq.convert(tensors, **kwargs)


# ---------------------------------------------------------------------------------------------
# AWQ
# ---------------------------------------------------------------------------------------------


def test_awq_hand_interleaved_word():
    """Slot j of 0x76543210 holds j; AWQ puts slot j at column [0,2,4,6,1,3,5,7][j], so columns
    0..7 read 0,4,1,5,2,6,3,7. Zero points 0 and scale 1 make the weight the codes themselves."""
    k, n = 8, 8
    qweight = torch.full((k, 1), word(0x76543210), dtype=torch.int32)
    tensors = {
        "qweight": qweight,
        "qzeros": torch.zeros(1, 1, dtype=torch.int32),
        "scales": torch.ones(1, n, dtype=torch.float16),
    }
    config, params = awq.convert(tensors, group_size=-1)
    assert config.weight_type == scalar_types.uint4 and config.weight_shape == (n, k)
    w = dequantize_weight(config, params)
    assert w[:, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    # The contract packs along K: row n's first word repeats code w[n, 0] eight times.
    assert codes_of_words(params["weight"], 4, k)[2].tolist() == [1] * 8


def awq_formula(tensors, group):
    """AWQ's dequantization from the stored words, with the interleave undone here:
    column n of a word sits in slot AWQ_SLOT_OF_COLUMN[n % 8]."""
    qweight, qzeros, scales = tensors["qweight"], tensors["qzeros"], tensors["scales"].double()
    k, n = qweight.shape[0], qweight.shape[1] * 8
    columns = torch.arange(n)
    slots = torch.tensor(AWQ_SLOT_OF_COLUMN)[columns % 8]

    def unpack(words):
        unsigned = words.to(torch.int64) & 0xFFFFFFFF
        return ((unsigned[:, columns // 8] >> (4 * slots)) & 15).double()

    g = torch.arange(k) // (k if group == -1 else group)
    return ((unpack(qweight) - unpack(qzeros)[g]) * scales[g]).t()


def awq_checkpoint(weight, group):
    q = quantize_int(weight, scalar_types.uint4, group, scale_dtype=torch.float16)
    return {
        "qweight": pack_awq(q.codes.t().contiguous()),
        "qzeros": pack_awq(q.zero_point.t().contiguous()),
        "scales": q.scale.t().contiguous(),
    }


@pytest.mark.parametrize("group", [128, 32, -1])
def test_awq_round_trip(group):
    n, k = 64, 256
    weight = _weight(n, k, seed=group + 7)
    tensors = awq_checkpoint(weight, group)
    config, params = awq.convert(tensors, group_size=group)
    expected = awq_formula(tensors, group)
    assert_close_rel(dequantize_weight(config, params), expected)
    assert_close_rel(expected, weight, 0.2)


def test_awq_matches_compressed_tensors_autoawq_converter():
    """compressed-tensors' own AutoAWQ -> pack-quantized converter, then our compressed-tensors
    converter, must give the same contract parameters as our AWQ converter."""
    if os.environ.get("CI"):
        importlib.import_module("compressed_tensors")  # CI installs it: this must not skip
    else:
        pytest.importorskip("compressed_tensors")
    from compressed_tensors.entrypoints.convert.converters.autoawq import AutoAWQConverter

    n, k = 64, 256
    tensors = awq_checkpoint(_weight(n, k, seed=5), 128)
    ours_config, ours = awq.convert(tensors, group_size=128)
    prefixed = {f"layer.{name}": t.clone() for name, t in tensors.items()}
    converted = AutoAWQConverter(group_size=128, targets=("Linear",)).process(prefixed)
    ct_tensors = {name.removeprefix("layer."): t for name, t in converted.items()}
    ct_config, theirs = ct_conv.convert_wna16(
        ct_tensors, num_bits=4, group_size=128, symmetric=False
    )
    assert ct_config == ours_config
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


@pytest.mark.parametrize(
    "fields,edit,match",
    [
        ({"bits": 8}, None, r"awq: bits=8 is not supported; expected 4"),
        ({"version": "gemv"}, None, r"version='gemv' is not supported"),
        ({"zero_point": False}, None, r"zero_point=False is not supported"),
        ({"group_size": -5}, None, r"group_size=-5 is not allowed"),
        ({}, lambda t: {k: v for k, v in t.items() if k != "qzeros"}, r"awq.qzeros: missing"),
        ({}, lambda t: {**t, "qzeros": t["qzeros"].to(torch.int64)},
         r"awq.qzeros: expected dtype int32, found int64"),
        ({}, lambda t: {**t, "scales": t["scales"][:, :8]},
         r"awq.scales: expected shape \[2, 16\], found \[2, 8\]"),
        ({}, lambda t: {**t, "scales": t["scales"].to(torch.int32)},
         r"awq.scales: expected dtype float16 or bfloat16 or float32, found int32"),
    ],
)
def test_awq_errors(fields, edit, match):
    tensors = awq_checkpoint(_weight(16, 256, 1), 128)
    tensors = edit(tensors) if edit else tensors
    with pytest.raises(ValueError, match=match):
        awq.convert(tensors, **({"group_size": 128} | fields))


def test_convert_from_config_files():
    n, k = 32, 256
    weight = _weight(n, k, seed=21)
    gptq_tensors = gptq_checkpoint(weight, 4, 128, False, None, "gptq_v2")
    quantize_config = {"bits": 4, "group_size": 128, "sym": False, "desc_act": False,
                       "damp_percent": 0.01, "checkpoint_format": "gptq_v2"}
    config, params = gptq.convert_from_config(gptq_tensors, quantize_config)
    assert config.weight_type == scalar_types.uint4
    assert_close_rel(dequantize_weight(config, params),
                     gptq_formula(gptq_tensors, 4, 128, False, "gptq_v2"))
    # No checkpoint_format: v1, whose zeros are read one higher.
    _, v1 = gptq.convert_from_config(gptq_tensors, {**quantize_config, "checkpoint_format": None})
    assert torch.equal(v1["weight_zero_point"], (params["weight_zero_point"] + 1) % 16)
    with pytest.raises(ValueError, match=r"gptq quantization config: missing 'group_size'"):
        gptq.convert_from_config(gptq_tensors, {"bits": 4})

    awq_tensors = awq_checkpoint(weight, 64)
    autoawq = {"w_bit": 4, "q_group_size": 64, "zero_point": True, "version": "GEMM"}
    config, params = awq.convert_from_config(awq_tensors, autoawq)
    assert config.group_size == 64
    assert_close_rel(dequantize_weight(config, params), awq_formula(awq_tensors, 64))
    hf = {"quant_method": "awq", "bits": 4, "group_size": 64, "version": "gemm"}
    assert awq.convert_from_config(awq_tensors, hf)[0] == config
    with pytest.raises(ValueError, match=r"awq quantization config: missing 'group_size'"):
        awq.convert_from_config(awq_tensors, {"w_bit": 4})
