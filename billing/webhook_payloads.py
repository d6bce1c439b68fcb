"""What the webhook events of invoices, credit notes and anomalies carry as ``data``: the resource
as the GraphQL type of the same name shows it (``Invoice``, ``CreditNote``, ``Anomaly``), in the
shapes :mod:`customers.webhook_payloads` describes, and the helpers that emit them in the caller's
transaction. Pure: :mod:`billing.invoices.events` and the invoice's own statement
(:data:`billing.invoices.repository.WRITE_INVOICE`, which knows the number) emit them.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from billing.invoice_numbers import invoice_number
from billing.models import CreditNote, Invoice
from customers.webhook_payloads import enum_name, moment, money_json


def invoice_data(invoice: dict[str, Any], *, number: int | None, credited: int = 0, reduced: int = 0) -> dict[str, Any]:
    """An invoice's row (the columns of ``invoices``) as ``Invoice`` shows it; ``credited`` is what
    its credit notes took back, ``reduced`` the part of that taken off what was due. ``number`` is
    None while the invoice's statement has yet to take it (that statement fills it in)."""
    currency = invoice["currency"]
    subscription_id = invoice["subscription_id"]
    return {
        "id": str(invoice["id"]),
        "number": invoice_number(number) if number is not None else None,
        "status": enum_name(invoice["status"]),
        "kind": invoice["kind"],
        "periodStart": moment(invoice["period_start"]),
        "periodEnd": moment(invoice["period_end"]),
        "issuedAt": moment(invoice["issued_at"]),
        "subtotal": money_json(invoice["subtotal"], currency),
        "creditsApplied": money_json(invoice["credits_applied"], currency),
        "total": money_json(invoice["total"], currency),
        "amountDue": money_json(invoice["amount_due"], currency),
        "tax": money_json(invoice["tax_amount"], currency),
        "customerId": str(invoice["customer_id"]),
        "subscriptionId": str(subscription_id) if subscription_id else None,
        "dueAt": moment(invoice["due_at"] or invoice["issued_at"]),
        "traceId": invoice["trace_id"],
        "creditedAmount": money_json(credited, currency),
        "amountStillDue": money_json(invoice["amount_due"] - reduced, currency),
    }


def credit_note_data(note: CreditNote, invoice: Invoice, *, number: str) -> dict[str, Any]:
    return {
        "id": str(note.id),
        "number": number,
        "invoiceId": str(note.invoice_id),
        "customerId": str(note.customer_id),
        "issuedAt": moment(note.issued_at),
        "amount": money_json(note.amount, note.currency),
        "tax": money_json(note.tax_amount, note.currency),
        "method": note.method,
        "reason": enum_name(note.reason),
        "note": note.note,
        "status": enum_name(note.status),
        "invoiceNumber": invoice_number(invoice.number),
    }


def anomaly_data(
    anomaly_id: uuid.UUID,
    *,
    kind: str,
    severity: str,
    summary: str,
    numbers: dict[str, Any],
    window_start: datetime,
    window_end: datetime,
    detected_at: datetime,
) -> dict[str, Any]:
    """A newly opened anomaly as ``Anomaly`` shows it (``numbers`` as the JSON text the API gives)."""
    stored = json.loads(json.dumps(numbers, default=str))  # as the jsonb column keeps them
    return {
        "id": str(anomaly_id),
        "kind": kind,
        "severity": enum_name(severity),
        "status": "OPEN",
        "detectedAt": moment(detected_at),
        "summary": summary,
        "numbers": json.dumps(stored, sort_keys=True),
        "windowStart": moment(window_start),
        "windowEnd": moment(window_end),
        "note": None,
        "statusAt": None,
    }
