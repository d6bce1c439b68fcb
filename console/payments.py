"""Console pages for collection: a customer's Payments tab (Stripe customer, dunning, attempts,
payments, disputes, finance's confirmed actions on an unpaid invoice, attempts as CSV) and the
Reconciliation page (runs, discrepancies with both sides compared key by key, resolve with a note)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from app.api.context import TallyContext
from app.auth import Capability
from console.billing import refusal_status
from console.forms import field_errors
from console.pages import CSV_ROW_LIMIT, ContextDep, csv_download, query, render
from console.views import utc_minute

router = APIRouter(prefix="/console", include_in_schema=False)

# Each finance action: its label, its console operation and the mutation field it answers in.
ACTIONS = {
    "retry": ("Retry now", "ConsoleRetryPayment", "retryPayment"),
    "write_off": ("Mark uncollectible", "ConsoleMarkInvoiceUncollectible", "markInvoiceUncollectible"),
    "void": ("Void", "ConsoleVoidInvoice", "voidInvoice"),
}
CLOSING_ACTIONS = ("write_off", "void")
STATUS_FILTERS = ("open", "resolved", "all")
DISCREPANCIES_SHOWN = 500
# The collection statuses in which a customer is being dunned: failed once, still tried.
DUNNING = ("pending", "in_flight", "action_required", "processing")


# --- The Payments tab -------------------------------------------------------------------------


@router.get("/customers/{customer_id}/payments")
async def customer_payments(
    request: Request, context: ContextDep, customer_id: str, notice: str | None = None
) -> Response:
    return await _payments_tab(request, context, customer_id, notice=notice)


async def _payments_tab(
    request: Request,
    context: TallyContext,
    customer_id: str,
    *,
    notice: str | None = None,
    invoice_errors: dict[str, dict[str, str]] | None = None,
    forms: dict[str, dict[str, str]] | None = None,
    status_code: int = 200,
) -> Response:
    """The whole tab; a refused action brings its form back with the error beside the field."""
    customer = (await query(request, "ConsoleCustomerHeader", {"id": customer_id}, context))["customer"]
    collection = (await query(request, "ConsoleCustomerCollection", {"id": customer_id}, context))["customerCollection"]
    if customer is None or collection is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    forms = forms or {}
    return render(
        request,
        "customer_payments.html",
        {
            "customer": customer,
            "collection": collection,
            "dunning": [i for i in collection["invoices"] if i["firstFailedAt"] and i["status"] in DUNNING],
            "attempts": attempts_of(collection),
            "notice": notice,
            "invoice_errors": invoice_errors or {},
            "forms": {i["invoiceId"]: forms.get(i["invoiceId"]) or new_action_form() for i in collection["invoices"]},
            "actions": ACTIONS,
        },
        status_code=status_code,
    )


def attempts_of(collection: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every attempt with its invoice: newest invoice first, each invoice's attempts in order."""
    return [(invoice, attempt) for invoice in collection["invoices"] for attempt in invoice["attempts"]]


def new_action_form() -> dict[str, str]:
    """A key made with the form, so that submitting the confirmation twice acts once."""
    return {"reason": "", "idempotency_key": str(uuid.uuid4())}


@router.get("/customers/{customer_id}/payments.csv")
async def customer_attempts_csv(request: Request, context: ContextDep, customer_id: str) -> Response:
    """Every payment attempt of the customer's invoices, newest invoice first, in attempt order."""
    customer = (await query(request, "ConsoleCustomerHeader", {"id": customer_id}, context))["customer"]
    collection = (await query(request, "ConsoleCustomerCollection", {"id": customer_id}, context))["customerCollection"]
    if customer is None or collection is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    header = [
        "invoice",
        "amount_due",
        "currency",
        "collection_status",
        "attempt",
        "payment_intent",
        "status",
        "error",
        "at",
    ]
    rows: list[list[Any]] = []
    for invoice, attempt in attempts_of(collection)[:CSV_ROW_LIMIT]:
        rows.append(
            [
                invoice["invoiceNumber"],
                invoice["amountDue"]["amount"],
                invoice["amountDue"]["currency"],
                invoice["status"],
                attempt["number"],
                attempt["paymentIntentId"] or "",
                attempt["status"],
                attempt["error"] or "",
                attempt["attemptedAt"],
            ]
        )
    return csv_download(f"payment-attempts-{customer['externalId']}.csv", header, rows)


async def _action_form(request: Request) -> tuple[str, dict[str, str]]:
    submitted = await request.form()
    action = str(submitted.get("action", ""))
    form = {name: str(submitted.get(name, "")).strip() for name in ("reason", "idempotency_key")}
    return action, form


def consequence(action: str, invoice: dict[str, Any], default_payment_method: str | None) -> str:
    """What confirming will do, in the words finance uses, with the amount and the invoice."""
    due = f"{invoice['amountDue']['amount']} {invoice['amountDue']['currency']}"
    number = invoice["invoiceNumber"]
    if action == "write_off":
        return f"Write off {due} of {number} to bad debt"
    if action == "void":
        return f"Void {number}: its {due} and the credits it drew are reversed in the ledger"
    source = f"payment method {default_payment_method}" if default_payment_method else "the customer's saved card"
    return f"Charge {due} for {number} now, from {source}"


@router.post("/customers/{customer_id}/payments/{invoice_id}/confirm")
async def confirm_action(request: Request, context: ContextDep, customer_id: str, invoice_id: str) -> Response:
    """The confirmation step: says exactly what will happen. A write-off or void without a reason
    goes back to the tab with the error beside the field, before anything is asked of Tally."""
    action, form = await _action_form(request)
    customer = (await query(request, "ConsoleCustomerHeader", {"id": customer_id}, context))["customer"]
    collection = (await query(request, "ConsoleCustomerCollection", {"id": customer_id}, context))["customerCollection"]
    invoice = next((i for i in (collection or {}).get("invoices", []) if i["invoiceId"] == invoice_id), None)
    if customer is None or invoice is None or action not in ACTIONS:
        return render(request, "not_found.html", {"what": "invoice"}, status_code=404)
    if action in CLOSING_ACTIONS and not form["reason"]:
        errors = {invoice_id: {"reason": "say why: a reason is required"}}
        return await _payments_tab(
            request, context, customer_id, invoice_errors=errors, forms={invoice_id: form}, status_code=422
        )
    return render(
        request,
        "collection_confirm.html",
        {
            "customer": customer,
            "invoice": invoice,
            "action": action,
            "label": ACTIONS[action][0],
            "consequence": consequence(action, invoice, collection["defaultPaymentMethod"]),
            "form": form,
        },
    )


@router.post("/customers/{customer_id}/payments/{invoice_id}/{action}")
async def collection_action(
    request: Request, context: ContextDep, customer_id: str, invoice_id: str, action: str
) -> Response:
    """Retry, write off or void, as confirmed; the form's key makes a second submission harmless."""
    if action not in ACTIONS:
        return render(request, "not_found.html", {"what": "page"}, status_code=404)
    _, form = await _action_form(request)
    label, operation, field = ACTIONS[action]
    variables: dict[str, Any] = {"invoiceId": invoice_id}
    if action in CLOSING_ACTIONS:
        variables |= {"reason": form["reason"], "idempotencyKey": form["idempotency_key"] or str(uuid.uuid4())}
    payload = (await query(request, operation, {"input": variables}, context))[field]
    if payload["userErrors"]:
        errors = {invoice_id: field_errors(payload["userErrors"])}
        return await _payments_tab(
            request, context, customer_id, invoice_errors=errors, forms={invoice_id: form}, status_code=422
        )
    invoice = payload["invoice"]
    notice = f"{label}: {invoice['number']} is {invoice['status'].lower()}"
    return RedirectResponse(
        f"/console/customers/{customer_id}/payments?{urlencode({'notice': notice})}", status_code=303
    )


# --- The Reconciliation page ------------------------------------------------------------------


@dataclass(frozen=True)
class SideBySide:
    """One key of a discrepancy's two objects: Tally's value, Stripe's, and whether they differ."""

    key: str
    tally: str
    stripe: str
    differs: bool


def side_by_side(tally_side: dict[str, Any] | None, stripe_side: dict[str, Any] | None) -> list[SideBySide]:
    """Every key of either object, Tally's order first; a key one side lacks shows as "—" and differs."""
    tally_side, stripe_side = tally_side or {}, stripe_side or {}
    keys = list(tally_side) + [key for key in stripe_side if key not in tally_side]
    missing = object()

    def shown(value: object) -> str:
        if value is missing:
            return "—"
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)

    rows = []
    for key in keys:
        tally, stripe = tally_side.get(key, missing), stripe_side.get(key, missing)
        rows.append(SideBySide(key, shown(tally), shown(stripe), tally != stripe))
    return rows


def status_filter(status: str) -> str:
    return status if status in STATUS_FILTERS else "open"


async def _discrepancies(request: Request, context: TallyContext, status: str) -> list[dict[str, Any]]:
    variables = {"status": None if status == "all" else status, "first": DISCREPANCIES_SHOWN}
    return list((await query(request, "ConsoleDiscrepancies", variables, context))["reconciliationDiscrepancies"])


def _forbidden(request: Request) -> Response:
    return render(request, "reconciliation.html", {"forbidden": True}, status_code=403)


@router.get("/reconciliation")
async def reconciliation_page(
    request: Request, context: ContextDep, status: str = "open", notice: str | None = None
) -> Response:
    """Runs and discrepancies; the status filter is a GET form that htmx only speeds up."""
    if not context.viewer.can(Capability.MANAGE_COLLECTION):
        return _forbidden(request)
    return await _reconciliation(request, context, status_filter(status), notice=notice)


async def _reconciliation(
    request: Request,
    context: TallyContext,
    status: str,
    *,
    notice: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    reconciled = await query(request, "ConsoleReconciliationRuns", {}, context)
    runs = reconciled["reconciliationRuns"]
    webhooks = (await query(request, "ConsoleStripeEvents", {}, context))["stripeEvents"]
    failed_webhooks = (await query(request, "ConsoleFailedStripeEvents", {}, context))["stripeEvents"]
    return render(
        request,
        "reconciliation.html",
        {
            "runs": runs,
            "collection_on": reconciled["collectionOn"],
            "webhooks": webhooks,
            "failed_webhooks": failed_webhooks,
            "rows": await _discrepancies(request, context, status),
            "status": status,
            "statuses": STATUS_FILTERS,
            "notice": notice,
            "error": error,
        },
        block="results",
        status_code=status_code,
    )


@router.get("/reconciliation.csv")
async def reconciliation_csv(request: Request, context: ContextDep, status: str = "open") -> Response:
    """The filtered table, in the page's order, with both sides as JSON."""
    if not context.viewer.can(Capability.MANAGE_COLLECTION):
        return _forbidden(request)
    status = status_filter(status)
    discrepancies = await _discrepancies(request, context, status)
    header = [
        "id",
        "kind",
        "object",
        "invoice_id",
        "customer",
        "summary",
        "detected_at",
        "last_seen_at",
        "status",
        "note",
        "resolved_by",
        "resolved_at",
        "tally_side",
        "stripe_side",
    ]
    rows = [
        [
            row["id"],
            row["kind"],
            row["objectId"],
            row["invoiceId"] or "",
            row["customerExternalId"] or "",
            row["summary"],
            row["detectedAt"],
            row["lastSeenAt"],
            row["status"],
            row["note"] or "",
            row["resolvedBy"] or "",
            row["resolvedAt"] or "",
            json.dumps(row["tallySide"], sort_keys=True) if row["tallySide"] is not None else "",
            json.dumps(row["stripeSide"], sort_keys=True) if row["stripeSide"] is not None else "",
        ]
        for row in discrepancies
    ]
    return csv_download(f"reconciliation-{status}.csv", header, rows)


@router.post("/reconciliation/run")
async def run_reconciliation(request: Request, context: ContextDep) -> Response:
    if not context.viewer.can(Capability.MANAGE_COLLECTION):
        return _forbidden(request)
    payload = (await query(request, "ConsoleRunReconciliation", {}, context))["runReconciliation"]
    if payload["userErrors"]:
        error = "; ".join(e["message"] for e in payload["userErrors"])
        return await _reconciliation(request, context, "open", error=error, status_code=422)
    run = payload["run"]
    notice = (
        f"Reconciled as of {utc_minute(run['asOf'])} UTC: {run['checked']} checked, "
        f"{run['discrepancies']} discrepancies"
    )
    return RedirectResponse(f"/console/reconciliation?{urlencode({'notice': notice})}", status_code=303)


@router.post("/reconciliation/stripe-events/{event_id}/retry")
async def retry_stripe_event(request: Request, context: ContextDep, event_id: str) -> Response:
    """Queue a failed Stripe event again; the next run of the job acts on it."""
    if not context.viewer.can(Capability.MANAGE_COLLECTION):
        return _forbidden(request)
    variables = {"input": {"eventId": event_id}}
    payload = (await query(request, "ConsoleRetryStripeEvent", variables, context))["retryStripeEvent"]
    if payload["userErrors"]:
        error = "; ".join(e["message"] for e in payload["userErrors"])
        return await _reconciliation(request, context, "open", error=error, status_code=422)
    notice = f"Stripe event {event_id} is queued again"
    return RedirectResponse(f"/console/reconciliation?{urlencode({'notice': notice})}#stripe-events", status_code=303)


@router.get("/reconciliation/customers/{external_id}")
async def discrepancy_customer(request: Request, context: ContextDep, external_id: str) -> Response:
    """A discrepancy names its customer by external id; this leads to the customer's Payments tab."""
    found = (await query(request, "ConsoleCustomerByExternalId", {"externalId": external_id}, context))["customer"]
    if found is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    return RedirectResponse(f"/console/customers/{found['id']}/payments", status_code=303)


async def _discrepancy_page(
    request: Request,
    context: TallyContext,
    discrepancy_id: str,
    *,
    back: str,
    errors: dict[str, str] | None = None,
    note: str = "",
    status_code: int = 200,
) -> Response:
    """One discrepancy, both sides key by key; for htmx only the comparison that expands its row."""
    row = (await query(request, "ConsoleDiscrepancy", {"id": discrepancy_id}, context))["reconciliationDiscrepancy"]
    if row is None:
        return render(request, "not_found.html", {"what": "discrepancy"}, status_code=404)
    return render(
        request,
        "reconciliation.html",
        {
            "row": row,
            "comparison": side_by_side(row["tallySide"], row["stripeSide"]),
            "back": status_filter(back),
            "errors": errors or {},
            "note": note,
        },
        block="comparison",
        status_code=status_code,
    )


@router.get("/reconciliation/{discrepancy_id}")
async def discrepancy_page(
    request: Request, context: ContextDep, discrepancy_id: str, status: str = "open"
) -> Response:
    if not context.viewer.can(Capability.MANAGE_COLLECTION):
        return _forbidden(request)
    return await _discrepancy_page(request, context, discrepancy_id, back=status)


@router.post("/reconciliation/{discrepancy_id}/resolve")
async def resolve_discrepancy(request: Request, context: ContextDep, discrepancy_id: str) -> Response:
    """Resolve with a note; a refusal (no note) shows the discrepancy again, the error beside the note."""
    submitted = await request.form()
    note, back = str(submitted.get("note", "")).strip(), status_filter(str(submitted.get("back", "open")))
    variables = {"input": {"discrepancyId": discrepancy_id, "note": note}}
    payload = (await query(request, "ConsoleResolveDiscrepancy", variables, context))["resolveDiscrepancy"]
    if payload["userErrors"]:
        return await _discrepancy_page(
            request,
            context,
            discrepancy_id,
            back=back,
            errors=field_errors(payload["userErrors"]),
            note=note,
            status_code=refusal_status(request),
        )
    return RedirectResponse(
        f"/console/reconciliation?{urlencode({'status': back, 'notice': 'Resolved'})}", status_code=303
    )
