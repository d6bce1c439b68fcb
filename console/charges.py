"""Console pages for one-off charges and commitments: a customer's "Charges & commitments" page
(its pending and billed one-off charges, prepaid commitments and minimum spend), the one-off
charge and commitment forms with a review step showing the amounts the dry run answers, the
cancel of a pending charge, and the minimum spend form. The customer page shows a summary of it
(the page's ``summary`` block, fetched by htmx; a plain link without JavaScript)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from app.api.context import TallyContext
from console.forms import field_errors, mutate
from console.pages import ContextDep, query, render

router = APIRouter(prefix="/console", include_in_schema=False)

CHARGE_FIELDS = ("description", "quantity", "unit_price", "when", "idempotency_key")
COMMITMENT_FIELDS = ("amount", "starts_at", "ends_at", "priority", "idempotency_key")
MINIMUM_FIELDS = ("amount", "effective_at", "reason", "idempotency_key")
WHEN = {"NOW": "Now, on its own invoice", "NEXT_INVOICE": "On the next invoice"}


def _moment(day: str) -> str | None:
    """A date input (YYYY-MM-DD) as midnight UTC; a full timestamp as it is; empty as None."""
    if not day:
        return None
    return f"{day}T00:00:00Z" if len(day) == 10 else day


async def _form(request: Request, names: tuple[str, ...]) -> dict[str, str]:
    submitted = await request.form()
    return {name: str(submitted.get(name, "")).strip() for name in names}


async def _page(
    request: Request,
    context: TallyContext,
    customer_id: str,
    *,
    notice: str | None = None,
    errors: dict[str, dict[str, str]] | None = None,
    forms: dict[str, dict[str, str]] | None = None,
    status_code: int = 200,
) -> Response:
    customer = (await query(request, "ConsoleCustomerExtras", {"id": customer_id}, context))["customer"]
    if customer is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    charges = [edge["node"] for edge in customer["oneOffCharges"]["edges"]]
    return render(
        request,
        "charges.html",
        {
            "customer": customer,
            "charges": charges,
            "pending": [charge for charge in charges if charge["status"] == "PENDING"],
            "commitments": [edge["node"] for edge in customer["prepaidCommitments"]["edges"]],
            "minimum": customer["minimumSpend"],
            "notice": notice,
            "errors": errors or {},
            "forms": forms or {},
            "when": WHEN,
            "new_key": str(uuid.uuid4()),
        },
        block="summary",
        status_code=status_code,
    )


async def _refused(
    request: Request,
    context: TallyContext,
    customer_id: str,
    kind: str,
    user_errors: list[dict[str, Any]],
    form: dict[str, str] | None = None,
) -> Response:
    """The page again (422) with the API's field errors beside the form ``kind``, as it was filled."""
    forms = {kind: form} if form is not None else None
    return await _page(
        request, context, customer_id, errors={kind: field_errors(user_errors)}, forms=forms, status_code=422
    )


@router.get("/customers/{customer_id}/charges")
async def charges_page(request: Request, context: ContextDep, customer_id: str, notice: str | None = None) -> Response:
    return await _page(request, context, customer_id, notice=notice)


def _charge_input(customer: dict[str, Any], form: dict[str, str], *, dry_run: bool) -> dict[str, Any]:
    return {
        "input": {
            "customerId": customer["id"],
            "description": form["description"],
            "quantity": form["quantity"] or "0",
            "unitPrice": form["unit_price"] or "0",
            "currency": customer["currency"],
            "when": form["when"] if form["when"] in WHEN else "NOW",
            "idempotencyKey": form["idempotency_key"],
            "dryRun": dry_run,
        }
    }


async def _customer(request: Request, context: TallyContext, customer_id: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = (await query(request, "ConsoleCustomerExtras", {"id": customer_id}, context))[
        "customer"
    ]
    return found


@router.post("/customers/{customer_id}/charges/review")
async def review_charge(request: Request, context: ContextDep, customer_id: str) -> Response:
    """The review step: the dry run's amounts; confirming sends the same key, so a double submit
    charges once."""
    form = await _form(request, CHARGE_FIELDS)
    customer = await _customer(request, context, customer_id)
    if customer is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    payload = await mutate(request, "ConsoleCreateOneOffCharge", _charge_input(customer, form, dry_run=True), context)
    if payload["userErrors"]:
        return await _refused(request, context, customer_id, "charge", payload["userErrors"], form)
    return render(
        request, "charges_review.html", {"customer": customer, "form": form, "kind": "charge", "preview": payload}
    )


@router.post("/customers/{customer_id}/charges")
async def create_charge(request: Request, context: ContextDep, customer_id: str) -> Response:
    form = await _form(request, CHARGE_FIELDS)
    customer = await _customer(request, context, customer_id)
    if customer is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    payload = await mutate(request, "ConsoleCreateOneOffCharge", _charge_input(customer, form, dry_run=False), context)
    if payload["userErrors"]:
        return await _refused(request, context, customer_id, "charge", payload["userErrors"], form)
    amount = payload["amount"]
    where = f"on invoice {payload['invoice']['number']}" if payload["invoice"] else "on the next invoice"
    notice = f"Charged {amount['amount']} {amount['currency']} {where}"
    return RedirectResponse(f"/console/customers/{customer_id}/charges?notice={notice}", status_code=303)


@router.post("/customers/{customer_id}/charges/{charge_id}/cancel")
async def cancel_charge(request: Request, context: ContextDep, customer_id: str, charge_id: str) -> Response:
    form = await _form(request, ("reason", "idempotency_key"))
    variables = {"input": {"chargeId": charge_id, "reason": form["reason"], "idempotencyKey": form["idempotency_key"]}}
    payload = await mutate(request, "ConsoleCancelOneOffCharge", variables, context)
    if payload["userErrors"]:
        return await _refused(request, context, customer_id, "cancel", payload["userErrors"])
    notice = f"Canceled {payload['charge']['description']}"
    return RedirectResponse(f"/console/customers/{customer_id}/charges?notice={notice}", status_code=303)


def _commitment_input(customer: dict[str, Any], form: dict[str, str], *, dry_run: bool) -> dict[str, Any]:
    return {
        "input": {
            "customerId": customer["id"],
            "amount": form["amount"] or "0",
            "currency": customer["currency"],
            "startsAt": _moment(form["starts_at"]),
            "endsAt": _moment(form["ends_at"]) or "",
            "priority": int(form["priority"]) if form["priority"].lstrip("-").isdigit() else None,
            "idempotencyKey": form["idempotency_key"],
            "dryRun": dry_run,
        }
    }


async def _commitment(request: Request, context: TallyContext, customer_id: str, *, dry_run: bool) -> Response:
    form = await _form(request, COMMITMENT_FIELDS)
    customer = await _customer(request, context, customer_id)
    if customer is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    if not form["ends_at"]:
        return await _page(
            request,
            context,
            customer_id,
            errors={"commitment": {"endsAt": "is required"}},
            forms={"commitment": form},
            status_code=422,
        )
    variables = _commitment_input(customer, form, dry_run=dry_run)
    payload = await mutate(request, "ConsoleCreatePrepaidCommitment", variables, context)
    if payload["userErrors"]:
        return await _refused(request, context, customer_id, "commitment", payload["userErrors"], form)
    if dry_run:
        return render(
            request,
            "charges_review.html",
            {"customer": customer, "form": form, "kind": "commitment", "preview": payload},
        )
    amount = payload["amount"]
    notice = f"Committed {amount['amount']} {amount['currency']}, invoice {payload['invoice']['number']}"
    return RedirectResponse(f"/console/customers/{customer_id}/charges?notice={notice}", status_code=303)


@router.post("/customers/{customer_id}/commitments/review")
async def review_commitment(request: Request, context: ContextDep, customer_id: str) -> Response:
    return await _commitment(request, context, customer_id, dry_run=True)


@router.post("/customers/{customer_id}/commitments")
async def create_commitment(request: Request, context: ContextDep, customer_id: str) -> Response:
    return await _commitment(request, context, customer_id, dry_run=False)


@router.post("/customers/{customer_id}/minimum-spend")
async def set_minimum_spend(request: Request, context: ContextDep, customer_id: str) -> Response:
    form = await _form(request, MINIMUM_FIELDS)
    variables = {
        "input": {
            "customerId": customer_id,
            "amount": form["amount"] or None,
            "effectiveAt": _moment(form["effective_at"]),
            "reason": form["reason"],
            "idempotencyKey": form["idempotency_key"],
        }
    }
    payload = await mutate(request, "ConsoleSetMinimumSpend", variables, context)
    if payload["userErrors"]:
        return await _refused(request, context, customer_id, "minimum", payload["userErrors"], form)
    amount = payload["setting"]["amount"]
    notice = f"Minimum spend set to {amount['amount']} {amount['currency']}" if amount else "Back to the plan's minimum"
    return RedirectResponse(f"/console/customers/{customer_id}/charges?notice={notice}", status_code=303)
