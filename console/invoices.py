"""The Invoices page: every customer's invoices with filters (status, issue dates, customer,
total, overdue), totals per currency of all that match, "next page" paging, a CSV of the filtered
list, and the lookup by number."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from app.api.context import TallyContext
from console.billing import invoice_reference
from console.graphql_client import ConsoleQueryFailed
from console.pages import CSV_ROW_LIMIT, ContextDep, csv_download, query, render

router = APIRouter(prefix="/console", include_in_schema=False)

STATUSES = ("issued", "paid", "void", "uncollectible")
PAGE_SIZE = 50
# The API's filter fields, by the form's input each one comes from.
REFUSED_FIELDS = {
    "minTotal": "min_total",
    "maxTotal": "max_total",
    "issuedFrom": "issued_from",
    "customer": "customer",
    "currency": "currency",
}
MAX_TEXT = 200


@dataclass
class InvoiceFilters:
    """The page's filters as typed, and what was wrong with them, by field."""

    status: str = ""
    currency: str = ""
    customer: str = ""
    issued_from: str = ""
    issued_to: str = ""
    min_total: str = ""
    max_total: str = ""
    overdue: bool = False
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, values: dict[str, str]) -> InvoiceFilters:
        return cls(
            status=values.get("status", "") if values.get("status") in STATUSES else "",
            currency=values.get("currency", "").strip().upper()[:3],
            customer=values.get("customer", "").strip()[:MAX_TEXT],
            issued_from=values.get("issued_from", "").strip(),
            issued_to=values.get("issued_to", "").strip(),
            min_total=values.get("min_total", "").strip(),
            max_total=values.get("max_total", "").strip(),
            overdue=values.get("overdue", "") in ("1", "on", "true"),
        )

    def _day(self, name: str, *, next_day: bool = False) -> str | None:
        text = getattr(self, name)
        if not text:
            return None
        try:
            day = date.fromisoformat(text) + timedelta(days=1 if next_day else 0)
        except ValueError:
            self.errors[name] = "give a date as YYYY-MM-DD"
            return None
        return f"{day.isoformat()}T00:00:00+00:00"

    def _amount(self, name: str) -> str | None:
        text = getattr(self, name).replace(",", "")
        if not text:
            return None
        try:
            amount = Decimal(text)
        except InvalidOperation:
            amount = Decimal("NaN")
        if not amount.is_finite() or amount < 0 or amount >= Decimal(10) ** 15:
            self.errors[name] = "give an amount such as 1,250.00"
            return None
        return str(amount)

    def variables(self) -> dict[str, Any]:
        """The GraphQL filter; the "to" date is included (until the next midnight, UTC)."""
        return {
            "statuses": [self.status.upper()] if self.status else None,
            "currency": self.currency or None,
            "customer": self.customer or None,
            "issuedFrom": self._day("issued_from"),
            "issuedUntil": self._day("issued_to", next_day=True),
            "minTotal": self._amount("min_total"),
            "maxTotal": self._amount("max_total"),
            "overdue": self.overdue,
        }

    def query_string(self, **more: str) -> str:
        values = {
            "status": self.status,
            "currency": self.currency,
            "customer": self.customer,
            "issued_from": self.issued_from,
            "issued_to": self.issued_to,
            "min_total": self.min_total,
            "max_total": self.max_total,
            "overdue": "1" if self.overdue else "",
            **more,
        }
        return urlencode({name: value for name, value in values.items() if value})


async def invoice_list(
    request: Request, context: TallyContext, filters: InvoiceFilters, *, first: int, after: str | None, totals: bool
) -> dict[str, Any] | None:
    variables = filters.variables()
    if filters.errors:
        return None
    try:
        found = await query(
            request,
            "ConsoleInvoiceList",
            {"filter": variables, "first": first, "after": after, "withTotals": totals},
            context,
        )
    except ConsoleQueryFailed as refused:
        for message in refused.messages:
            field, _, reason = message.removeprefix("filter.").partition(": ")
            if field not in REFUSED_FIELDS:
                raise
            filters.errors[REFUSED_FIELDS[field]] = reason
        return None
    return found["invoiceList"]


@router.get("/invoices")
async def invoices_page(request: Request, context: ContextDep, number: str = "", after: str | None = None) -> Response:
    """The list; ``number`` opens one invoice (an id, ``INV-000042`` or ``42``)."""
    number = number.strip()
    if number:
        found = (await query(request, "ConsoleInvoice", invoice_reference(number), context))["invoice"]
        if found is not None:
            return RedirectResponse(f"/console/invoices/{found['number']}", status_code=303)
    filters = InvoiceFilters.parse(dict(request.query_params))
    listed = await invoice_list(request, context, filters, first=PAGE_SIZE, after=after, totals=True)
    return render(
        request,
        "invoices.html",
        {
            "number": number,
            "missing": bool(number),
            "filters": filters,
            "statuses": STATUSES,
            "listed": listed,
            "after": after,
            "csv_url": f"/console/invoices.csv?{filters.query_string()}",
            "next_url": (
                f"/console/invoices?{filters.query_string(after=listed['pageInfo']['endCursor'])}"
                if listed and listed["pageInfo"]["hasNextPage"]
                else None
            ),
            "first_url": f"/console/invoices?{filters.query_string()}",
        },
        status_code=404 if number else 422 if filters.errors else 200,
    )


CSV_HEADER = [
    "number",
    "customer_external_id",
    "customer_name",
    "status",
    "kind",
    "period_start",
    "period_end",
    "issued_at",
    "due_at",
    "overdue",
    "currency",
    "subtotal",
    "tax",
    "credits_applied",
    "total",
    "amount_due",
    "still_due",
]


@router.get("/invoices.csv")
async def invoices_csv(request: Request, context: ContextDep) -> Response:
    """The filtered list, every page of it (up to the console's CSV limit), newest first."""
    filters = InvoiceFilters.parse(dict(request.query_params))
    rows: list[list[Any]] = []
    after = None
    while len(rows) < CSV_ROW_LIMIT:
        listed = await invoice_list(request, context, filters, first=100, after=after, totals=False)
        if listed is None:
            return render(request, "error.html", {"messages": list(filters.errors.values())}, status_code=400)
        for edge in listed["edges"]:
            node, invoice = edge["node"], edge["node"]["invoice"]
            rows.append(
                [
                    invoice["number"],
                    node["customerExternalId"],
                    node["customerName"],
                    invoice["status"],
                    invoice["kind"],
                    invoice["periodStart"],
                    invoice["periodEnd"],
                    invoice["issuedAt"],
                    invoice["dueAt"],
                    "yes" if node["overdue"] else "no",
                    invoice["total"]["currency"],
                    invoice["subtotal"]["amount"],
                    invoice["tax"]["amount"],
                    invoice["creditsApplied"]["amount"],
                    invoice["total"]["amount"],
                    invoice["amountDue"]["amount"],
                    node["amountStillDue"]["amount"],
                ]
            )
        if not listed["pageInfo"]["hasNextPage"]:
            break
        after = listed["pageInfo"]["endCursor"]
    return csv_download("invoices.csv", CSV_HEADER, rows[:CSV_ROW_LIMIT])
