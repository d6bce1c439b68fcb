"""The console's one mapping of refusals to form fields, its role check and large amounts in words."""

from __future__ import annotations

from decimal import Decimal

import pytest
from graphql import GraphQLError

from console.forms import amount_in_words, field_errors, refused_variables
from console.permissions import role_may
from console.views import grouped_amount


def test_user_errors_land_beside_their_input() -> None:
    errors = [
        {"field": ["input", "amount"], "message": "must be positive"},
        {"field": None, "message": "the customer is suspended"},
        {"field": ["lines", "0", "amount"], "message": "more than the line"},
    ]
    assert field_errors(errors) == {"amount": "must be positive", "form": "the customer is suspended"}, "first wins"
    assert field_errors(errors, prefix="purchase_")["purchase_amount"] == "must be positive"
    assert field_errors(errors, whole_path=True)["lines.0.amount"] == "more than the line"


def test_a_refused_variable_is_a_field_error_and_anything_else_is_not() -> None:
    decimal = GraphQLError(
        "Variable '$input' has invalid value at .amount: 'ten dollars' is not a decimal number",
        extensions={"code": "INVALID_DECIMAL"},
    )
    whole = GraphQLError(
        "Variable '$input' has invalid value at .maxRedemptions: Int cannot represent non-integer value"
    )
    assert refused_variables([decimal, whole]) == [
        {"field": ["amount"], "code": "INVALID_DECIMAL", "message": "'ten dollars' is not a decimal number"},
        {"field": ["maxRedemptions"], "code": "INVALID", "message": "must be a whole number"},
    ]
    assert refused_variables([decimal, GraphQLError("Forbidden: your role may not grant credits.")]) is None


@pytest.mark.parametrize(
    ("amount", "currency", "words"),
    [
        ("150000.00", "USD", "one hundred and fifty thousand US dollars"),
        ("12345.67", "EUR", "twelve thousand, three hundred and forty-five and 67/100 euros"),
        ("2000000", "JPY", "two million Japanese yen"),
        ("10000.00", "USD", None),
        ("-20000.00", "USD", "minus twenty thousand US dollars"),
    ],
)
def test_large_amounts_in_words(amount: str, currency: str, words: str | None) -> None:
    assert amount_in_words(amount, currency, above=Decimal(10_000)) == words


def test_grouped_amounts_keep_their_digits() -> None:
    assert grouped_amount("150000.00") == "150,000.00" and grouped_amount("12.5") == "12.5"


def test_roles_and_capabilities() -> None:
    assert role_may("support", "grant_credits") and not role_may("support", "adjust_balances")
    assert not role_may("viewer", "grant_credits") and role_may("viewer", "read_audit_log")
    assert not role_may(None, "read_customers")
    with pytest.raises(ValueError):
        role_may("admin", "grant_credit")  # a typo in a template fails loudly
