"""Console of paid top-ups and auto-recharge, on the customer's Credits tab: buying credits (a
review step answered by ``purchaseCredits`` with ``dryRun``, then the purchase under the key
the review carried), the low-balance threshold and auto-recharge settings, and the purchases
with the recharge history."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from console.credits import credits_page
from console.forms import field_errors, mutate
from console.pages import ContextDep, query, render

router = APIRouter(prefix="/console", include_in_schema=False)

PURCHASE_FIELDS = ("amount", "priority", "expires_in_days", "idempotency_key")
SETTINGS_FIELDS = (
    "low_balance_threshold",
    "recharge_enabled",
    "recharge_threshold",
    "recharge_amount",
    "recharge_monthly_cap",
    "recharge_priority",
    "recharge_expires_in_days",
)


def _number(value: str) -> int | str | None:
    """A whole number as typed; anything else goes to the API as it is, to be refused there."""
    if not value:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def _purchase_input(customer: dict[str, Any], form: dict[str, str], *, dry_run: bool) -> dict[str, Any]:
    return {
        "input": {
            "customerId": customer["id"],
            "amount": form["amount"] or "0",
            "currency": customer["currency"],
            "idempotencyKey": form["idempotency_key"],
            "priority": _number(form["priority"]),
            "expiresInDays": _number(form["expires_in_days"]),
            "dryRun": dry_run,
        }
    }


def _prefixed(form: dict[str, str]) -> dict[str, str]:
    """The purchase form's fields as the Credits page names them (its grant form has an amount too)."""
    return {f"purchase_{name}": value for name, value in form.items()}


async def _purchase(request: Request, context: ContextDep, customer_id: str, *, dry_run: bool) -> Response:
    submitted = await request.form()
    form = {name: str(submitted.get(name, "")).strip() for name in PURCHASE_FIELDS}
    customer = (await query(request, "ConsoleCustomer", {"id": customer_id}, context))["customer"]
    if customer is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    variables = _purchase_input(customer, form, dry_run=dry_run)
    if not isinstance(variables["input"]["priority"], int | None) or not isinstance(
        variables["input"]["expiresInDays"], int | None
    ):
        errors = {"purchase_form": "priority and validity are whole numbers"}
        return await credits_page(request, context, customer_id, errors=errors, form=_prefixed(form), status_code=422)
    payload = await mutate(request, "ConsolePurchaseCredits", variables, context)
    if payload["userErrors"]:
        return await credits_page(
            request,
            context,
            customer_id,
            errors=field_errors(payload["userErrors"], prefix="purchase_"),
            form=_prefixed(form),
            status_code=422,
        )
    if dry_run:
        return render(
            request, "purchase_review.html", {"customer": customer, "form": form, "purchase": payload["purchase"]}
        )
    amount = payload["purchase"]["amount"]
    invoice = payload["invoice"]["number"] if payload["invoice"] else "?"
    return RedirectResponse(
        f"/console/customers/{customer_id}/credits?notice=Invoice {invoice} issued for {amount['amount']} "
        f"{amount['currency']} of credits, granted when it is paid",
        status_code=303,
    )


@router.post("/customers/{customer_id}/credit-purchases/review")
async def review_purchase(request: Request, context: ContextDep, customer_id: str) -> Response:
    """What would be invoiced and granted (``dryRun``); the key travels on, so a double submit
    of the confirmation buys once."""
    return await _purchase(request, context, customer_id, dry_run=True)


@router.post("/customers/{customer_id}/credit-purchases")
async def purchase_credits(request: Request, context: ContextDep, customer_id: str) -> Response:
    return await _purchase(request, context, customer_id, dry_run=False)


@router.post("/customers/{customer_id}/credit-balance-settings")
async def save_settings(request: Request, context: ContextDep, customer_id: str) -> Response:
    submitted = await request.form()
    form = {name: str(submitted.get(name, "")).strip() for name in SETTINGS_FIELDS}
    customer = (await query(request, "ConsoleCustomer", {"id": customer_id}, context))["customer"]
    if customer is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    priority, validity = _number(form["recharge_priority"]), _number(form["recharge_expires_in_days"])
    if not isinstance(priority, int | None) or not isinstance(validity, int | None):
        errors = {"settings_form": "priority and validity are whole numbers"}
        return await credits_page(request, context, customer_id, errors=errors, form=form, status_code=422)
    variables = {
        "input": {
            "customerId": customer_id,
            "currency": customer["currency"],
            "lowBalanceThreshold": form["low_balance_threshold"] or None,
            "autoRecharge": {
                "enabled": form["recharge_enabled"] == "on",
                "threshold": form["recharge_threshold"] or None,
                "amount": form["recharge_amount"] or None,
                "monthlyCap": form["recharge_monthly_cap"] or None,
                "priority": priority,
                "expiresInDays": validity,
            },
        }
    }
    payload = await mutate(request, "ConsoleSetCreditBalanceSettings", variables, context)
    if payload["userErrors"]:
        return await credits_page(
            request,
            context,
            customer_id,
            errors=field_errors(payload["userErrors"], prefix="settings_"),
            form=form,
            status_code=422,
        )
    notice = "Saved the low-balance alert and auto-recharge"
    if payload["recharge"]:
        amount = payload["recharge"]["amount"]
        notice += f"; below the threshold: a recharge of {amount['amount']} {amount['currency']} is invoiced"
    return RedirectResponse(f"/console/customers/{customer_id}/credits?notice={notice}", status_code=303)
