"""Scalar types of quantized weights and scales.

A :class:`ScalarType` says how a stored code maps to a value. Integers carry a *bias*: the stored
unsigned code is ``value + bias`` (``uint4b8`` stores ``v + 8`` for ``v`` in ``[-8, 7]``), which is
how GPTQ and compressed-tensors store symmetric weights. Floats are described by exponent and
mantissa widths. The ``id`` packs every field into one integer, bit for bit as vLLM's
``ScalarType.id`` does, so a kernel written for vLLM's custom ops receives the same numbers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["NanRepr", "ScalarType", "scalar_types"]


class NanRepr(enum.IntEnum):
    """How a float format encodes NaN."""

    NONE = 0  # no NaN (E2M1)
    IEEE_754 = 1  # all-ones exponent with a non-zero mantissa
    EXTD_RANGE_MAX_MIN = 2  # only the all-ones pattern is NaN (E4M3FN, E8M0)


@dataclass(frozen=True)
class ScalarType:
    """A stored number format: ``exponent`` = 0 means an integer type."""

    exponent: int
    mantissa: int
    signed: bool
    bias: int = 0
    finite_values_only: bool = False
    nan_repr: NanRepr = NanRepr.IEEE_754

    @property
    def size_bits(self) -> int:
        return self.exponent + self.mantissa + int(self.signed)

    @property
    def is_integer(self) -> bool:
        return self.exponent == 0

    @property
    def is_floating_point(self) -> bool:
        return self.exponent != 0

    @property
    def has_bias(self) -> bool:
        return self.bias != 0

    @property
    def min(self) -> float:
        """Smallest representable *value* (after removing the bias)."""
        if self.is_integer:
            low = -(2 ** (self.size_bits - 1)) if self.signed else 0
            return low - self.bias
        return -self.max if self.signed else self._float_min_unsigned()

    @property
    def max(self) -> float:
        """Largest representable *value* (after removing the bias)."""
        if self.is_integer:
            high = 2 ** (self.size_bits - 1) - 1 if self.signed else 2**self.size_bits - 1
            return high - self.bias
        return self._float_max()

    def _float_min_unsigned(self) -> float:
        return 2.0 ** (0 - self._float_bias())

    def _float_bias(self) -> int:
        return 2 ** (self.exponent - 1) - 1 if self.mantissa or self.signed else 127

    def _float_max(self) -> float:
        bias = self._float_bias()
        max_exp_code = 2**self.exponent - 1
        mantissa_max = 2**self.mantissa - 1
        if self.nan_repr == NanRepr.IEEE_754:
            max_exp_code -= 1  # the all-ones exponent is inf/NaN
        elif self.nan_repr == NanRepr.EXTD_RANGE_MAX_MIN and self.mantissa > 0:
            mantissa_max -= 1  # the all-ones pattern is NaN
        elif self.nan_repr == NanRepr.EXTD_RANGE_MAX_MIN:
            max_exp_code -= 1  # E8M0: 0xFF is NaN
        return (1 + mantissa_max / 2**self.mantissa) * 2.0 ** (max_exp_code - bias)

    @property
    def id(self) -> int:
        """All fields packed LSB first: exponent(8) mantissa(8) signed(1) bias(32) finite(1) nan(8)."""
        value, offset = 0, 0
        for field, width in (
            (self.exponent, 8),
            (self.mantissa, 8),
            (int(self.signed), 1),
            (self.bias, 32),
            (int(self.finite_values_only), 1),
            (int(self.nan_repr), 8),
        ):
            value |= (field & ((1 << width) - 1)) << offset
            offset += width
        return value

    @property
    def name(self) -> str:
        if self.is_integer:
            base = f"{'int' if self.signed else 'uint'}{self.size_bits}"
            return f"{base}b{self.bias}" if self.bias else base
        text = f"float{self.size_bits}_e{self.exponent}m{self.mantissa}"
        if self.finite_values_only:
            text += "f"
            if self.nan_repr == NanRepr.EXTD_RANGE_MAX_MIN:
                text += "n"
            if not self.signed:
                text += "u"
        return text

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"ScalarType.{self.name}"

    @classmethod
    def int_(cls, bits: int, bias: int = 0) -> ScalarType:
        return cls(0, bits - 1, True, bias)

    @classmethod
    def uint(cls, bits: int, bias: int = 0) -> ScalarType:
        return cls(0, bits, False, bias)

    @classmethod
    def float_(
        cls, exponent: int, mantissa: int, finite_values_only: bool, nan_repr: NanRepr
    ) -> ScalarType:
        return cls(exponent, mantissa, True, 0, finite_values_only, nan_repr)


class scalar_types:  # noqa: N801 - a namespace, spelled as vLLM spells it
    """The named types used by the families (``scalar_types.uint4b8`` etc.)."""

    int4 = ScalarType.int_(4)
    int8 = ScalarType.int_(8)
    uint4 = ScalarType.uint(4)
    uint8 = ScalarType.uint(8)
    uint4b8 = ScalarType.uint(4, 8)
    uint8b128 = ScalarType.uint(8, 128)
    float8_e4m3fn = ScalarType.float_(4, 3, True, NanRepr.EXTD_RANGE_MAX_MIN)
    float8_e5m2 = ScalarType.float_(5, 2, False, NanRepr.IEEE_754)
    float4_e2m1f = ScalarType.float_(2, 1, True, NanRepr.NONE)
    # E8M0: 8 exponent bits, no sign, no mantissa, 0xFF = NaN; value 2**(E - 127).
    float8_e8m0fnu = ScalarType(8, 0, False, 0, True, NanRepr.EXTD_RANGE_MAX_MIN)

    @classmethod
    def by_name(cls, name: str) -> ScalarType:
        found = getattr(cls, name, None)
        if not isinstance(found, ScalarType):
            known = ", ".join(sorted(k for k, v in vars(cls).items() if isinstance(v, ScalarType)))
            raise ValueError(f"unknown scalar type {name!r}; known: {known}")
        return found
