"""Console pages for credits and promotions: a customer's balances, grants and ledger, the
confirmed grant form, redemptions, top-ups and auto-recharge (their forms: ``console.topups``),
and the promotions list."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.api.context import TallyContext
from console.coupons import promotions_view
from console.routes import ContextDep, query, render

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/customers/{customer_id}/credits")
async def customer_credits(
    request: Request, context: ContextDep, customer_id: str, notice: str | None = None
) -> Response:
    return await credits_page(request, context, customer_id, notice=notice)


async def credits_page(
    request: Request,
    context: TallyContext,
    customer_id: str,
    *,
    notice: str | None = None,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    customer = (await query(request, "ConsoleCustomer", {"id": customer_id}, context))["customer"]
    if customer is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    credits = (await query(request, "ConsoleCustomerCredits", {"id": customer_id}, context))["customer"]
    ledger = (await query(request, "ConsoleCustomerLedger", {"id": customer_id}, context))["customer"]
    topups = (await query(request, "ConsoleCustomerTopUps", {"id": customer_id}, context))["customer"]
    return render(
        request,
        "credits.html",
        {
            "customer": customer,
            "credits": credits,
            "ledger": ledger,
            "topups": topups,
            "notice": notice,
            "errors": errors or {},
            "form": form or {},
            "new_key": str(uuid.uuid4()),
        },
        status_code=status_code,
    )


GRANT_FIELDS = ("amount", "reason", "expires_at", "priority", "idempotency_key")


@router.post("/customers/{customer_id}/grants/confirm")
async def confirm_grant(request: Request, context: ContextDep, customer_id: str) -> Response:
    """The confirmation step: shows what will be granted; the key travels on, so a double
    submit of the confirmation grants once."""
    submitted = await request.form()
    form = {name: str(submitted.get(name, "")).strip() for name in GRANT_FIELDS}
    customer = (await query(request, "ConsoleCustomer", {"id": customer_id}, context))["customer"]
    if customer is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    return render(request, "grant_confirm.html", {"customer": customer, "form": form})


@router.post("/customers/{customer_id}/grants")
async def grant_credits(request: Request, context: ContextDep, customer_id: str) -> Response:
    submitted = await request.form()
    form = {name: str(submitted.get(name, "")).strip() for name in GRANT_FIELDS}
    expires_at = None
    if form["expires_at"]:
        expires_at = f"{form['expires_at']}T00:00:00Z" if len(form["expires_at"]) == 10 else form["expires_at"]
    variables = {
        "input": {
            "customerId": customer_id,
            "amount": form["amount"] or "0",
            "reason": form["reason"],
            "idempotencyKey": form["idempotency_key"],
            "expiresAt": expires_at,
            "priority": int(form["priority"]) if form["priority"].isdigit() else None,
        }
    }
    payload = (await query(request, "ConsoleGrantCredits", variables, context))["grantCredits"]
    if payload["userErrors"]:
        errors = {(e["field"] or ["form"])[-1]: e["message"] for e in payload["userErrors"]}
        return await credits_page(request, context, customer_id, errors=errors, form=form, status_code=422)
    amount = payload["grant"]["amount"]
    return RedirectResponse(
        f"/console/customers/{customer_id}/credits?notice=Granted {amount['amount']} {amount['currency']}",
        status_code=303,
    )


@router.post("/customers/{customer_id}/redemptions")
async def redeem_promotion(
    request: Request,
    context: ContextDep,
    customer_id: str,
    code: Annotated[str, Form()] = "",
    idempotency_key: Annotated[str, Form()] = "",
) -> Response:
    payload = (
        await query(
            request,
            "ConsoleRedeemPromotion",
            {"input": {"customerId": customer_id, "code": code, "idempotencyKey": idempotency_key}},
            context,
        )
    )["redeemPromotion"]
    if payload["userErrors"]:
        errors = {"code": payload["userErrors"][0]["message"]}
        return await credits_page(request, context, customer_id, errors=errors, status_code=422)
    amount = payload["grant"]["amount"]
    return RedirectResponse(
        f"/console/customers/{customer_id}/credits?notice=Redeemed {code}: {amount['amount']} {amount['currency']}",
        status_code=303,
    )


@router.get("/promotions")
async def promotions_page(request: Request, context: ContextDep, notice: str | None = None) -> Response:
    return await promotions_view(request, context, notice=notice)


@router.post("/promotions")
async def create_promotion(request: Request, context: ContextDep) -> Response:
    submitted = await request.form()
    form = {
        name: str(submitted.get(name, "")).strip()
        for name in ("code", "description", "credit_amount", "currency", "credit_expires_in_days", "max_redemptions")
    }
    payload = (
        await query(
            request,
            "ConsoleCreatePromotion",
            {
                "input": {
                    "code": form["code"],
                    "description": form["description"],
                    "creditAmount": form["credit_amount"] or "0",
                    "currency": form["currency"] or "USD",
                    "creditExpiresInDays": int(form["credit_expires_in_days"])
                    if form["credit_expires_in_days"].isdigit()
                    else None,
                    "maxRedemptions": int(form["max_redemptions"]) if form["max_redemptions"].isdigit() else None,
                }
            },
            context,
        )
    )["createPromotion"]
    if payload["userErrors"]:
        errors = {(e["field"] or ["form"])[-1]: e["message"] for e in payload["userErrors"]}
        return await promotions_view(request, context, errors=errors, form=form, status_code=422)
    return RedirectResponse("/console/promotions", status_code=303)
