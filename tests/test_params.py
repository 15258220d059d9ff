"""The layer parameter contract: validation messages and parameter replacement."""

from __future__ import annotations

import pytest
import torch

from kernel_core import FAMILIES, MPLinearLayerConfig, scalar_types
from kernel_core.params import processed_tensors, replace_parameter, validate_layer_params


def _layer(**tensors: torch.Tensor) -> torch.nn.Module:
    layer = torch.nn.Module()
    for name, t in tensors.items():
        layer.register_parameter(name, torch.nn.Parameter(t, requires_grad=False))
    return layer


MP = MPLinearLayerConfig(weight_shape=(64, 256), group_size=128)
SPECS = FAMILIES["mp"].parameter_specs(MP)


def test_a_valid_layer_passes_and_tensors_come_back_by_name():
    weight = torch.randint(-(2**31), 2**31 - 1, (64, 32), dtype=torch.int32)
    scale = torch.rand(64, 2, dtype=torch.bfloat16)
    found = validate_layer_params(_layer(weight=weight, weight_scale=scale), SPECS)
    assert found["weight"] is not None and found["weight_scale"].dtype == torch.bfloat16


def test_missing_parameter_names_it_and_what_was_expected():
    with pytest.raises(ValueError, match=r"Module.weight_scale: missing; expected a tensor of dtype "
                       r"float16 or bfloat16 or float32 and shape \[64, 2\]"):
        validate_layer_params(_layer(weight=torch.zeros(64, 32, dtype=torch.int32)), SPECS)


def test_wrong_dtype_and_shape_name_expected_and_found():
    scale = torch.rand(64, 2)
    with pytest.raises(ValueError, match="weight: expected dtype int32, found int64"):
        validate_layer_params(_layer(weight=torch.ones(64, 32, dtype=torch.int64),
                                     weight_scale=scale), SPECS)
    with pytest.raises(ValueError, match=r"weight: expected shape \[64, 32\], found \[32, 64\]"):
        validate_layer_params(_layer(weight=torch.ones(32, 64, dtype=torch.int32),
                                     weight_scale=scale), SPECS)


def test_zero_points_and_g_idx_are_required_when_the_config_says_so():
    config = MPLinearLayerConfig(weight_shape=(64, 256), weight_type=scalar_types.uint4,
                                 zero_points=True, has_g_idx=True)
    names = [s.name for s in FAMILIES["mp"].parameter_specs(config)]
    assert names == ["weight", "weight_scale", "weight_zero_point", "weight_g_idx"]


def test_per_tensor_and_per_channel_scale_shapes_accepted_as_documented():
    fp8 = FAMILIES["fp8"]
    tensor_cfg = fp8.config_class(weight_shape=(64, 256), weight_scale_granularity="tensor",
                                  input_scale="static", input_scale_granularity="tensor")
    spec = {s.name: s for s in fp8.parameter_specs(tensor_cfg)}
    assert spec["weight_scale"].shapes == ((), (1,))
    assert "input_scale" in spec
    channel_cfg = fp8.config_class(weight_shape=(64, 256))
    spec = {s.name: s for s in fp8.parameter_specs(channel_cfg)}
    assert spec["weight_scale"].shapes == ((64,), (64, 1))
    with pytest.raises(ValueError, match=r"expected shape \[64\] or \[64, 1\], found \[1, 64\]"):
        spec["weight_scale"].check(torch.rand(1, 64))


def test_replace_parameter_keeps_identity_and_storage_when_shapes_match():
    layer = _layer(w=torch.randn(4, 8))
    param = layer.w
    ptr = param.data_ptr()
    new = torch.randn(4, 8)
    replace_parameter(layer, "w", new)
    assert layer.w is param and param.data_ptr() == ptr and torch.equal(param, new)


def test_replace_parameter_rebinds_data_on_shape_change_and_removes_on_none():
    layer = _layer(w=torch.randn(4, 8))
    param = layer.w
    replace_parameter(layer, "w", torch.randn(8, 4, dtype=torch.float16))
    assert layer.w is param and param.shape == (8, 4) and param.dtype == torch.float16
    replace_parameter(layer, "extra", torch.ones(3))
    assert isinstance(layer.extra, torch.nn.Parameter) and not layer.extra.requires_grad
    replace_parameter(layer, "w", None)
    assert not hasattr(layer, "w") and "w" not in dict(layer.named_parameters())


def dataparallel_replica(layer: torch.nn.Module) -> torch.nn.Module:
    """A replica as ``torch.nn.parallel.replicate`` makes one (it needs CUDA devices; these are its
    two steps for parameters): an empty parameter dict, each parameter a plain attribute."""
    replica = layer._replicate_for_data_parallel()
    for name, param in layer._parameters.items():
        setattr(replica, name, param.detach().clone())
    return replica


def test_processed_tensors_reads_parameters_and_dataparallel_replicas():
    layer = _layer(weight=torch.randn(4, 8), weight_scale=torch.rand(4))
    assert processed_tensors(layer) is layer._parameters
    replica = dataparallel_replica(layer)
    assert "weight" not in replica._parameters  # where a plain _parameters read would fail
    tensors = processed_tensors(replica)
    assert torch.equal(tensors["weight"], layer.weight)
    assert torch.equal(tensors["weight_scale"], layer.weight_scale)
    assert tensors["weight"] is not layer.weight  # the replica's own copy
    assert tensors.get("weight_zero_point") is None


def test_docs_table_matches_the_code():
    from pathlib import Path

    from kernel_core.contract_doc import contract_table

    docs = (Path(__file__).resolve().parents[1] / "docs" / "parameters.md").read_text()
    start = docs.index("<!-- contract-table:start -->\n") + len("<!-- contract-table:start -->\n")
    end = docs.index("<!-- contract-table:end -->")
    assert docs[start:end] == contract_table(), "regenerate with python -m kernel_core.contract_doc"
