"""Every email kind renders in every locale (pure: no database): one-line subjects, Babel's
amounts and dates, and a customer's name escaped in the HTML body, never in the text."""

from __future__ import annotations

import pytest

from customers.billing_details import SUPPORTED_LOCALES
from notifications.models import EMAIL_KINDS
from notifications.rendering import render

AT = "2026-03-01T00:00:00+00:00"
NAME = 'Acme <script>alert("x")</script>\nBcc: evil@example.com'
FACTS = {
    "invoice_issued": {
        "kind": "invoice",
        "invoice_number": 12,
        "currency": "EUR",
        "total": 123450,
        "amount_due": 123450,
        "issued_at": AT,
        "due_at": AT,
        "period_start": "2026-02-01T00:00:00+00:00",
        "period_end": AT,
    },
    "payment_failed": {
        "invoice_number": 12,
        "currency": "EUR",
        "amount_due": 123450,
        "failed_at": AT,
        "next_retry_at": AT,
    },
    "payment_receipt": {"invoice_number": 12, "currency": "EUR", "amount_paid": 123450, "paid_at": AT},
    "credit_note": {
        "credit_note_number": "CN-1",
        "invoice_number": 12,
        "currency": "EUR",
        "amount": 123450,
        "issued_at": AT,
    },
    "usage_alert": {
        "alert_name": "80% of the budget",
        "metric": "spend",
        "threshold_unit": "percent",
        "threshold": "80",
        "currency": "EUR",
        "threshold_amount": 120000,
        "running_amount": 123450,
        "period_start": "2026-02-01T00:00:00+00:00",
        "period_end": AT,
    },
}
AMOUNTS = {"en": "€1,234.50", "fr": "1\u202f234,50\xa0€", "de": "1.234,50\xa0€", "es": "1.234,50\xa0€"}
DATES = {"en": "March 1, 2026", "fr": "1 mars 2026", "de": "1. März 2026", "es": "1 de marzo de 2026"}


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
@pytest.mark.parametrize("kind", EMAIL_KINDS)
def test_every_kind_renders_in_every_locale(kind: str, locale: str) -> None:
    rendered = render(kind, locale, {"customer_name": NAME, **FACTS[kind]})
    assert "\n" not in rendered.subject and rendered.subject
    assert AMOUNTS[locale] in rendered.text and AMOUNTS[locale] in rendered.html
    assert DATES[locale] in rendered.text
    assert "<script>" not in rendered.html and "&lt;script&gt;" in rendered.html
    assert NAME in rendered.text  # plain text is not HTML: shown as written
    assert f'lang="{locale}"' in rendered.html


def test_a_usage_alert_names_the_meter_and_the_usage_that_crossed_it() -> None:
    facts = {
        **FACTS["usage_alert"],
        "metric": "usage",
        "meter_key": "api_calls",
        "threshold_quantity": "800",
        "used": "812",
        "customer_name": "Acme",
    }
    rendered = render("usage_alert", "fr", facts)
    assert "812 api_calls" in rendered.subject and "80 % de votre limite" in rendered.text


def test_a_failed_payment_without_a_retry_says_there_is_none_and_credits_paid_it() -> None:
    facts = {**FACTS["payment_failed"], "customer_name": "Acme", "next_retry_at": None}
    assert "We will not try again" in render("payment_failed", "en", facts).text
    paid = {**FACTS["invoice_issued"], "customer_name": "Acme", "amount_due": 0}
    assert "Nothing is due: your credits paid it." in render("invoice_issued", "en", paid).text


def test_an_interim_invoice_says_why_it_comes_before_the_period_ends() -> None:
    interim = render("invoice_issued", "en", {**FACTS["invoice_issued"], "customer_name": "Acme", "kind": "interim"})
    assert "This is an interim invoice" in interim.text and "This is an interim invoice" in interim.html
    assert "interim" not in render("invoice_issued", "en", {**FACTS["invoice_issued"], "customer_name": "Acme"}).text
    legacy = {key: value for key, value in FACTS["invoice_issued"].items() if key != "kind"}
    assert "interim" not in render("invoice_issued", "fr", {**legacy, "customer_name": "Acme"}).text, "queued before"
