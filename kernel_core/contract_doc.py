"""Render the layer parameter contract as the Markdown table in ``docs/parameters.md``.

The table is generated from the families' ``parameter_specs`` so the docs cannot drift from the
validation code: a test regenerates it and compares. Run ``python -m kernel_core.contract_doc`` to
print it after changing a contract.
"""

from __future__ import annotations

from kernel_core.config import LayerConfig
from kernel_core.families import (
    FAMILIES,
    FP8ScaledMMLinearLayerConfig,
    Int8ScaledMMLinearLayerConfig,
    MPLinearLayerConfig,
    NvFp4LinearLayerConfig,
)
from kernel_core.scalar_types import scalar_types

__all__ = ["contract_table"]

# Sizes chosen so that every derived extent is a distinct number, then printed as its symbol.
N, K, G = 1152, 8192, 256
_SYMBOLS = {
    N: "N", K: "K", K // 2: "K/2", K // 4: "K/4", K // 8: "K/8", K // 16: "K/16",
    K // 32: "K/32", K // G: "K/G", K // 128: "K/128", N // 128: "N/128", 1: "1",
}


def _shape_text(shapes: tuple[tuple[int, ...], ...]) -> str:
    return " or ".join("[" + ", ".join(_SYMBOLS[d] for d in shape) + "]" for shape in shapes)


def _cases() -> list[tuple[str, LayerConfig]]:
    shape = {"weight_shape": (N, K)}
    return [
        ("mp, uint4b8 (uint8b128: weight is [N, K/4])", MPLinearLayerConfig(**shape, group_size=G)),
        ("mp, uint4 with zero points and act-order", MPLinearLayerConfig(
            **shape, weight_type=scalar_types.uint4, zero_points=True, has_g_idx=True,
            group_size=G)),
        ("int8, static asymmetric activations", Int8ScaledMMLinearLayerConfig(
            **shape, input_scale="static", input_symmetric=False)),
        ("fp8, static per-tensor activations", FP8ScaledMMLinearLayerConfig(
            **shape, input_scale="static", input_scale_granularity="tensor")),
        ("fp8_block", FAMILIES["fp8_block"].config_class(**shape)),
        ("nvfp4, W4A4", NvFp4LinearLayerConfig(**shape)),
        ("mxfp4", FAMILIES["mxfp4"].config_class(**shape)),
        ("mxfp8", FAMILIES["mxfp8"].config_class(**shape)),
    ]


def contract_table() -> str:
    """One row per parameter of each family (the most complete variant of each);
    G is the group size (-1, channelwise: one column)."""
    lines = [
        "| family (variant) | parameter | dtype | shape | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, config in _cases():
        for spec in FAMILIES[config.family].parameter_specs(config):
            lines.append(
                f"| {label} | `{spec.name}` | {spec.dtype_text()} | "
                f"{_shape_text(spec.shapes)} | {spec.doc} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(contract_table(), end="")
