"""The invoice list across customers: filters, a page of rows newest first, and the totals of
every matching invoice per currency (never summed across currencies)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.invoices import search_repository as repository
from billing.models import Invoice
from ledger.errors import InvalidInput

INVOICE_STATUSES = ("issued", "paid", "void", "uncollectible")
MAX_FILTER_TEXT = 200


@dataclass(frozen=True)
class InvoiceFilter:
    """Which invoices: any of ``statuses``; ``issued_from`` ≤ issue < ``issued_until``; a total
    between ``min_total`` and ``max_total`` (major units, in the invoice's own currency);
    ``customer`` an external id or part of a name; ``overdue``: unpaid past its due date with
    something still due (a credit purchase is never overdue: unpaid, it is no debt)."""

    statuses: tuple[str, ...] = ()
    currency: str | None = None
    customer_id: uuid.UUID | None = None
    customer: str | None = None
    issued_from: datetime | None = None
    issued_until: datetime | None = None
    min_total: Decimal | None = None
    max_total: Decimal | None = None
    overdue: bool = False

    def checked(self) -> InvoiceFilter:
        """Refuses what cannot match by mistake, naming the field."""
        unknown = [status for status in self.statuses if status not in INVOICE_STATUSES]
        if unknown:
            raise InvalidInput(f"unknown status {unknown[0]!r}: one of {', '.join(INVOICE_STATUSES)}", field="statuses")
        if self.customer is not None and len(self.customer) > MAX_FILTER_TEXT:
            raise InvalidInput(f"at most {MAX_FILTER_TEXT} characters", field="customer")
        for name, bound in (("minTotal", self.min_total), ("maxTotal", self.max_total)):
            if bound is not None and (not bound.is_finite() or abs(bound) >= Decimal(10) ** 18):
                raise InvalidInput("must be an amount below 10^18", field=name)
        if self.min_total is not None and self.max_total is not None and self.min_total > self.max_total:
            raise InvalidInput("must not be above the maximum", field="minTotal")
        if self.issued_from and self.issued_until and self.issued_from >= self.issued_until:
            raise InvalidInput("must be before the end of the range", field="issuedFrom")
        return self

    def parameters(self, as_of: datetime) -> dict[str, Any]:
        return {
            "statuses": list(self.statuses) or None,
            "currency": self.currency,
            "customer_id": self.customer_id,
            "customer": self.customer or None,
            "issued_from": self.issued_from,
            "issued_until": self.issued_until,
            "min_total": self.min_total,
            "max_total": self.max_total,
            "overdue": self.overdue,
            "as_of": as_of,
        }


@dataclass(frozen=True)
class ListedInvoice:
    invoice: Invoice
    customer_external_id: str
    customer_name: str
    still_due: int  # minor units: what it still asks for (0 unless unpaid)
    overdue: bool


@dataclass(frozen=True)
class InvoiceTotals:
    currency: str
    invoices: int
    total: int  # minor units
    still_due: int


@dataclass(frozen=True)
class InvoicePage:
    rows: list[ListedInvoice]
    totals: list[InvoiceTotals] = field(default_factory=list)


def is_overdue(invoice: Invoice, still_due: int, as_of: datetime) -> bool:
    """Unpaid, something still due, and its due date passed (a credit purchase: never)."""
    return (
        invoice.status == "issued"
        and still_due > 0
        and invoice.kind != "credit_purchase"
        and (invoice.due_at or invoice.issued_at) <= as_of
    )


async def list_invoices(
    session: AsyncSession,
    filters: InvoiceFilter,
    *,
    as_of: datetime,
    before_number: int | None,
    limit: int,
    with_totals: bool = True,
) -> InvoicePage:
    """Invoices matching ``filters``, newest number first, after ``before_number``; the totals
    count every matching invoice, not only the page."""
    parameters = filters.checked().parameters(as_of)
    rows = []
    columns = set(Invoice.model_fields)
    for row in await repository.page(session, parameters, before_number=before_number, limit=limit):
        invoice = Invoice(**{name: value for name, value in row.items() if name in columns})
        still_due = int(row["still_due"])
        rows.append(
            ListedInvoice(
                invoice,
                row["customer_external_id"],
                row["customer_name"],
                still_due,
                is_overdue(invoice, still_due, as_of),
            )
        )
    totals = []
    if with_totals:
        totals = [
            InvoiceTotals(row["currency"], int(row["invoices"]), int(row["total"]), int(row["still_due"]))
            for row in await repository.totals(session, parameters)
        ]
    return InvoicePage(rows, totals)
