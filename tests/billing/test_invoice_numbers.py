"""The invoice number's one format, written and read back."""

from __future__ import annotations

import pytest

from billing.invoice_numbers import invoice_number, parse_invoice_number


def test_a_number_is_written_with_six_digits_at_least_and_read_back() -> None:
    assert invoice_number(42) == "INV-000042"
    assert invoice_number(1_234_567) == "INV-1234567"
    for number in (1, 42, 999_999, 1_234_567, 10**17):
        assert parse_invoice_number(invoice_number(number)) == number


@pytest.mark.parametrize("text", ["inv-000042", " INV-42 ", "42"])
def test_people_may_type_it_loosely(text: str) -> None:
    assert parse_invoice_number(text) == 42


@pytest.mark.parametrize("text", ["", "INV-", "INV-4x", "INV--42", "INV-" + "9" * 19, "INV-٤٢", "CN-000042", "4 2"])
def test_what_is_not_a_number_is_none(text: str) -> None:
    assert parse_invoice_number(text) is None
