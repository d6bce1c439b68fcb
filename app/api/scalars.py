"""Scalars of the public contract: exact decimals travel as strings, never as floats."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import strawberry
from strawberry.types.scalar import ScalarDefinition


def _serialize_decimal(value: Decimal) -> str:
    return format(value, "f")


def _parse_decimal(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError('Decimal is sent as a JSON string such as "12.50", never a float')
    try:
        parsed = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal number") from None
    if not parsed.is_finite():
        raise ValueError(f"{value!r} is not a finite decimal number")
    return parsed


DECIMAL_SCALAR = strawberry.scalar(
    name="Decimal",
    description='An exact decimal number, sent and returned as a JSON string such as "12.500000".',
    serialize=_serialize_decimal,
    parse_value=_parse_decimal,
)

SCALAR_MAP: dict[object, ScalarDefinition] = {Decimal: DECIMAL_SCALAR}
