"""Scalars of the public contract: exact decimals travel as strings, never as floats."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import strawberry
from graphql import GraphQLError
from strawberry.types.scalar import ScalarDefinition

#: The code a refused Decimal carries in its error's `extensions` (a variable is refused before
#: any resolver runs, so it cannot be a `userErrors` entry).
INVALID_DECIMAL = "INVALID_DECIMAL"


def _serialize_decimal(value: Decimal) -> str:
    return format(value, "f")


def _refused(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": INVALID_DECIMAL})


def _parse_decimal(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _refused('Decimal is sent as a JSON string such as "12.50", never a float')
    try:
        parsed = Decimal(str(value).strip())
    except InvalidOperation:
        raise _refused(f"{value!r} is not a decimal number") from None
    if not parsed.is_finite():
        raise _refused(f"{value!r} is not a finite decimal number (NaN and Infinity are refused)")
    return parsed


DECIMAL_SCALAR = strawberry.scalar(
    name="Decimal",
    description='An exact decimal number, sent and returned as a JSON string such as "12.500000".',
    serialize=_serialize_decimal,
    parse_value=_parse_decimal,
)

SCALAR_MAP: dict[object, ScalarDefinition] = {Decimal: DECIMAL_SCALAR}
