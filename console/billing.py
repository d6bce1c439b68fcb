"""Console pages for billing: a customer's Invoices tab (balance, subscription, the upcoming
invoice, issued invoices with CSV and "more" paging, the plan-change form), the invoice page and
the invoice lookup."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from app.api.context import TallyContext
from console.forms import field_errors
from console.pages import CSV_ROW_LIMIT, ContextDep, csv_download, is_htmx, query, render
from console.views import utc_minute

router = APIRouter(prefix="/console", include_in_schema=False)

INVOICES_PAGE = 20
TIMINGS = {"IMMEDIATELY": "Immediately (prorated)", "PERIOD_END": "At the end of the current period"}
PLAN_CHANGE_FIELDS = ("plan_key", "effective", "idempotency_key", "at")
UUID_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def refusal_status(request: Request) -> int:
    """422 for a refused form; 200 for htmx, which swaps only 2xx answers into the page."""
    return 200 if is_htmx(request) else 422


@router.get("/customers/{customer_id}/invoices")
async def customer_invoices(
    request: Request,
    context: ContextDep,
    customer_id: str,
    after: str | None = None,
    first: int = INVOICES_PAGE,
    notice: str | None = None,
) -> Response:
    """The Invoices tab; with ``after`` and htmx, only the next rows of the invoices table."""
    first = min(max(first, 1), 100)
    if after and is_htmx(request):
        invoices = await invoices_page(request, context, customer_id, first=first, after=after)
        if invoices is None:
            return render(request, "not_found.html", {"what": "customer"}, status_code=404)
        return render(
            request,
            "customer_invoices.html",
            {"customer": {"id": customer_id}, "invoices": invoices, "first": first},
            block="invoice_rows",
        )
    return await _invoices_tab(request, context, customer_id, first=first, after=after, notice=notice)


async def invoices_page(
    request: Request, context: TallyContext, customer_id: str, *, first: int, after: str | None
) -> dict[str, Any] | None:
    found = (
        await query(request, "ConsoleCustomerInvoices", {"id": customer_id, "first": first, "after": after}, context)
    )["customer"]
    return found["invoices"] if found else None


async def _invoices_tab(
    request: Request,
    context: TallyContext,
    customer_id: str,
    *,
    first: int = INVOICES_PAGE,
    after: str | None = None,
    notice: str | None = None,
    plan_change: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    """The whole tab; ``plan_change`` carries a preview or the refused form into its block."""
    customer = (await query(request, "ConsoleCustomerBilling", {"id": customer_id}, context))["customer"]
    if customer is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    plans = (await query(request, "ConsolePlanChoices", {}, context))["plans"]
    invoices = await invoices_page(request, context, customer_id, first=first, after=after)
    return render(
        request,
        "customer_invoices.html",
        {
            "customer": customer,
            "plans": plans,
            "invoices": invoices,
            "first": first,
            "after": after,
            "notice": notice,
            "plan_change": plan_change or new_plan_change(customer, plans),
            "timings": TIMINGS,
        },
        status_code=status_code,
    )


def new_plan_change(customer: dict[str, Any], plans: list[dict[str, Any]]) -> dict[str, Any]:
    """A fresh form: the first plan other than the current one, and a key made now, so a double
    submit of the confirmation changes the plan once."""
    current = (customer.get("subscription") or {}).get("plan") or {}
    others = [p["key"] for p in plans if p["key"] != current.get("key")]
    form = {
        "plan_key": others[0] if others else "",
        "effective": "IMMEDIATELY",
        "idempotency_key": str(uuid.uuid4()),
        "at": "",
    }
    return {"form": form, "errors": {}, "preview": None}


@router.get("/customers/{customer_id}/invoices.csv")
async def customer_invoices_csv(request: Request, context: ContextDep, customer_id: str) -> Response:
    """Every issued invoice of the customer, newest first, paged through the same GraphQL query."""
    header = [
        "number",
        "status",
        "kind",
        "period_start",
        "period_end",
        "issued_at",
        "due_at",
        "currency",
        "subtotal",
        "credits_applied",
        "total",
        "amount_due",
    ]
    rows: list[list[Any]] = []
    after, external_id, written = None, None, 0
    while written < CSV_ROW_LIMIT:
        found = (
            await query(request, "ConsoleCustomerInvoices", {"id": customer_id, "first": 100, "after": after}, context)
        )["customer"]
        if found is None:
            return render(request, "not_found.html", {"what": "customer"}, status_code=404)
        external_id, page = found["externalId"], found["invoices"]
        for edge in page["edges"]:
            invoice = edge["node"]
            rows.append(
                [
                    invoice["number"],
                    invoice["status"],
                    invoice["kind"],
                    invoice["periodStart"],
                    invoice["periodEnd"],
                    invoice["issuedAt"],
                    invoice["dueAt"],
                    invoice["total"]["currency"],
                    invoice["subtotal"]["amount"],
                    invoice["creditsApplied"]["amount"],
                    invoice["total"]["amount"],
                    invoice["amountDue"]["amount"],
                ]
            )
            written += 1
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    return csv_download(f"invoices-{external_id}.csv", header, rows)


async def plan_change_form(request: Request) -> dict[str, str]:
    submitted = await request.form()
    return {name: str(submitted.get(name, "")).strip() for name in PLAN_CHANGE_FIELDS}


def plan_change_input(customer_id: str, form: dict[str, str], *, dry_run: bool) -> dict[str, Any]:
    return {
        "input": {
            "customerId": customer_id,
            "planKey": form["plan_key"],
            "effective": form["effective"] if form["effective"] in TIMINGS else "IMMEDIATELY",
            "idempotencyKey": form["idempotency_key"] or str(uuid.uuid4()),
            "at": form["at"] or None,
            "dryRun": dry_run,
        }
    }


@router.post("/customers/{customer_id}/plan-change/preview")
async def preview_plan_change(request: Request, context: ContextDep, customer_id: str) -> Response:
    """A dry run: the prorations, and a confirmation carrying the same key and moment, so that
    what is confirmed is exactly what was previewed (the prorations depend on the moment)."""
    form = await plan_change_form(request)
    form["at"] = datetime.now(UTC).replace(microsecond=0).isoformat()
    payload = (await query(request, "ConsoleChangePlan", plan_change_input(customer_id, form, dry_run=True), context))[
        "changePlan"
    ]
    plan_change = {
        "form": form,
        "errors": field_errors(payload["userErrors"]),
        "preview": None if payload["userErrors"] else payload,
    }
    status_code = refusal_status(request) if payload["userErrors"] else 200
    if is_htmx(request):
        customer = (await query(request, "ConsoleCustomerHeader", {"id": customer_id}, context))["customer"]
        if customer is None:
            return render(request, "not_found.html", {"what": "customer"}, status_code=404)
        plans = (await query(request, "ConsolePlanChoices", {}, context))["plans"]
        return render(
            request,
            "customer_invoices.html",
            {
                "customer": customer,
                "plans": plans,
                "plan_change": plan_change,
                "timings": TIMINGS,
            },
            block="plan_change",
            status_code=status_code,
        )
    return await _invoices_tab(request, context, customer_id, plan_change=plan_change, status_code=status_code)


@router.post("/customers/{customer_id}/plan-change")
async def change_plan(request: Request, context: ContextDep, customer_id: str) -> Response:
    form = await plan_change_form(request)
    payload = (await query(request, "ConsoleChangePlan", plan_change_input(customer_id, form, dry_run=False), context))[
        "changePlan"
    ]
    if payload["userErrors"]:
        plan_change = {"form": form, "errors": field_errors(payload["userErrors"]), "preview": None}
        return await _invoices_tab(request, context, customer_id, plan_change=plan_change, status_code=422)
    if form["effective"] == "IMMEDIATELY":
        plan = payload["subscription"]["plan"]
        notice = f"Plan changed to {plan['name']} v{plan['version']}"
    else:
        notice = f"Plan change to {form['plan_key']} scheduled for {utc_minute(payload['effectiveAt'])} UTC"
    return RedirectResponse(f"/console/customers/{customer_id}/invoices?notice={notice}", status_code=303)


def invoice_reference(reference: str) -> dict[str, str]:
    """An invoice id (a UUID) or its number, ``INV-000042`` or ``42``."""
    return {"id": reference} if UUID_PATTERN.match(reference) else {"number": reference}


@router.get("/invoices/{reference}/lines/{position}")
async def invoice_line_page(request: Request, context: ContextDep, reference: str, position: int) -> Response:
    """Why a line has its amount. The invoice page expands it in place with htmx (the block
    alone); without JavaScript the link opens it as a page of its own."""
    found = (
        await query(request, "ConsoleInvoiceLine", {**invoice_reference(reference), "position": position}, context)
    )["invoice"]
    if found is None or found["line"] is None:
        return render(request, "not_found.html", {"what": "invoice line"}, status_code=404)
    return render(request, "invoice_line.html", {"invoice": found, "line": found["line"]}, block="provenance")
