"""Configs validate themselves: a bad field names the field, the value and what is allowed."""

from __future__ import annotations

import pytest
import torch

from kernel_core import (
    FAMILIES,
    FP8ScaledMMLinearLayerConfig,
    Fp8BlockLinearLayerConfig,
    Int8ScaledMMLinearLayerConfig,
    MPLinearLayerConfig,
    Mxfp8LinearLayerConfig,
    MxFp4LinearLayerConfig,
    NvFp4LinearLayerConfig,
    scalar_types,
)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_defaults_are_valid_frozen_and_hashable(family):
    config = FAMILIES[family].config_class(weight_shape=(256, 512))
    assert config.family == family
    assert config.full_weight_shape == (256, 512)
    assert config.out_dtype == config.act_dtype == torch.bfloat16
    assert hash(config) == hash(FAMILIES[family].config_class(weight_shape=(256, 512)))
    with pytest.raises(AttributeError):
        config.weight_shape = (1, 1)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: MPLinearLayerConfig(weight_shape=(0, 512)), r"weight_shape=\(0, 512\) is not allowed"),
        (lambda: MPLinearLayerConfig(weight_shape=(8, 512), full_weight_shape=(8, 256)),
         "smaller than weight_shape"),
        (lambda: MPLinearLayerConfig(weight_shape=(8, 512), act_dtype=torch.int8),
         "act_dtype=torch.int8 is not allowed; expected one of"),
        (lambda: MPLinearLayerConfig(weight_shape=(8, 512), weight_type=scalar_types.int8),
         "weight_type=ScalarType.int8 is not allowed"),
        (lambda: MPLinearLayerConfig(weight_shape=(8, 500)), "group_size=128 does not divide"),
        (lambda: MPLinearLayerConfig(weight_shape=(8, 512), group_size=0), "group_size=0"),
        (lambda: MPLinearLayerConfig(weight_shape=(8, 12), group_size=-1), "multiple of 8"),
        (lambda: MPLinearLayerConfig(weight_shape=(8, 512), weight_type=scalar_types.uint4),
         "zero_points=False does not match weight_type=uint4"),
        (lambda: Int8ScaledMMLinearLayerConfig(weight_shape=(8, 512), input_scale="per-call"),
         "input_scale='per-call' is not allowed; expected one of: 'static', 'dynamic'"),
        (lambda: Int8ScaledMMLinearLayerConfig(weight_shape=(8, 512), weight_scale_granularity="row"),
         "weight_scale_granularity='row'"),
        (lambda: FP8ScaledMMLinearLayerConfig(weight_shape=(8, 512), activation_mode="w4a4"),
         "activation_mode='w4a4' is not allowed; expected one of: 'w8a8', 'w8a16'"),
        (lambda: FP8ScaledMMLinearLayerConfig(weight_shape=(8, 512), input_scale="static"),
         "input_scale_granularity='token' is not allowed with input_scale='static'"),
        (lambda: Fp8BlockLinearLayerConfig(weight_shape=(8, 512), weight_block=(64, 64)),
         r"weight_block=\(64, 64\) is not allowed"),
        (lambda: Fp8BlockLinearLayerConfig(weight_shape=(8, 512), input_scale="static"),
         "input_scale='static'"),
        (lambda: NvFp4LinearLayerConfig(weight_shape=(8, 40)), "multiple of 16"),
        (lambda: MxFp4LinearLayerConfig(weight_shape=(8, 48)), "multiple of 32"),
        (lambda: Mxfp8LinearLayerConfig(weight_shape=(8, 512), activation_mode="w4a16"),
         "activation_mode='w4a16'"),
    ],
)
def test_bad_fields_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_mp_act_order_scales_cover_the_whole_layer():
    config = MPLinearLayerConfig(
        weight_shape=(64, 256), full_weight_shape=(64, 1024), group_size=128, has_g_idx=True
    )
    assert config.is_row_parallel
    assert config.num_groups == 8
    assert MPLinearLayerConfig(weight_shape=(64, 256), group_size=-1).num_groups == 1


def test_as_dict_and_short_are_plain():
    config = MPLinearLayerConfig(weight_shape=(64, 256), weight_type=scalar_types.uint4,
                                 zero_points=True)
    data = config.as_dict()
    assert data == {
        "family": "mp", "weight_shape": [64, 256], "full_weight_shape": [64, 256],
        "act_dtype": "bfloat16", "out_dtype": "bfloat16", "weight_type": "uint4",
        "group_size": 128, "zero_points": True, "has_g_idx": False,
    }
    assert config.short().startswith("mp(N=64, K=256")
