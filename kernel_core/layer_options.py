"""Build a family config from command-line style options (shared by explain, doctor and bench)."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from kernel_core.config import LayerConfig
from kernel_core.families import FAMILIES
from kernel_core.scalar_types import scalar_types

__all__ = ["add_layer_options", "config_from_options", "DTYPES"]

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def add_layer_options(parser: argparse.ArgumentParser) -> None:
    """The options that describe a layer; each applies to the families that have the field."""
    parser.add_argument("family", choices=sorted(FAMILIES), help="kernel family")
    parser.add_argument("--shape", nargs=2, type=int, metavar=("N", "K"), required=True,
                        help="weight shape (out_features, in_features) of this partition")
    parser.add_argument("--full-shape", nargs=2, type=int, metavar=("N", "K"),
                        help="the whole layer's shape under tensor parallelism")
    parser.add_argument("--act-dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--out-dtype", choices=sorted(DTYPES))
    parser.add_argument("--weight-type", help="mp: uint4b8, uint4, uint8b128 or uint8")
    parser.add_argument("--group-size", type=int, help="mp: group size along K, -1 channelwise")
    parser.add_argument("--g-idx", action="store_true", help="mp: act-order (g_idx)")
    parser.add_argument("--activation-mode", help="e.g. w8a8, w8a16, w4a4, w4a16")
    parser.add_argument("--weight-scale", choices=("tensor", "channel"),
                        help="int8/fp8: weight scale granularity")
    parser.add_argument("--input-scale", choices=("static", "dynamic"),
                        help="int8/fp8: activation scales from the checkpoint or per call")
    parser.add_argument("--input-granularity", choices=("tensor", "token"),
                        help="fp8: dynamic activation scale per tensor or per token")
    parser.add_argument("--asymmetric", action="store_true",
                        help="int8: activations with a zero point")


def config_from_options(args: argparse.Namespace) -> LayerConfig:
    """A validated config; a ValueError (from the config itself) names any bad field."""
    family = args.family
    fields: dict[str, Any] = {
        "weight_shape": tuple(args.shape),
        "act_dtype": DTYPES[args.act_dtype],
    }
    if args.full_shape:
        fields["full_weight_shape"] = tuple(args.full_shape)
    if args.out_dtype:
        fields["out_dtype"] = DTYPES[args.out_dtype]
    if family == "mp":
        weight_type = scalar_types.by_name(args.weight_type or "uint4b8")
        fields.update(weight_type=weight_type, zero_points=not weight_type.has_bias,
                      has_g_idx=args.g_idx)
        if args.group_size is not None:
            fields["group_size"] = args.group_size
    if family in ("int8", "fp8") and args.weight_scale:
        fields["weight_scale_granularity"] = args.weight_scale
    if family in ("int8", "fp8") and args.input_scale:
        fields["input_scale"] = args.input_scale
        if family == "fp8" and args.input_scale == "static":
            fields["input_scale_granularity"] = "tensor"
    if family == "fp8" and args.input_granularity:
        fields["input_scale_granularity"] = args.input_granularity
    if family == "int8":
        fields["input_symmetric"] = not args.asymmetric
    if args.activation_mode:
        if "activation_mode" not in {f for f in FAMILIES[family].config_class.__dataclass_fields__}:
            modes = FAMILIES[family].config_class.activation_modes
            raise ValueError(
                f"--activation-mode does not apply to {family!r} (its only mode is {modes[0]})"
            )
        fields["activation_mode"] = args.activation_mode
    return FAMILIES[family].config_class(**fields)
