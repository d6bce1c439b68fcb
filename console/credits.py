"""Console pages for credits and promotions: a customer's balances, grants and ledger, the grant
form (reviewed by a dry run of the very mutation that grants, so the review refuses what the
grant would), voiding a grant (reviewed too), redemptions, top-ups and auto-recharge (their forms:
``console.topups``), and the promotions list with its edit and deactivate forms."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.api.context import TallyContext
from console.coupons import promotions_view
from console.forms import field_errors, mutate
from console.pages import ContextDep, query, render
from console.views import grouped_amount

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


def _grant_input(customer_id: str, form: dict[str, str], *, dry_run: bool) -> dict[str, Any]:
    expires_at = None
    if form["expires_at"]:
        expires_at = f"{form['expires_at']}T00:00:00Z" if len(form["expires_at"]) == 10 else form["expires_at"]
    return {
        "input": {
            "customerId": customer_id,
            "amount": form["amount"] or "0",
            "reason": form["reason"],
            "idempotencyKey": form["idempotency_key"],
            "expiresAt": expires_at,
            "priority": int(form["priority"]) if form["priority"].isdigit() else None,
            "dryRun": dry_run,
        }
    }


@router.post("/customers/{customer_id}/grants/confirm")
async def confirm_grant(request: Request, context: ContextDep, customer_id: str) -> Response:
    """The review step: a dry run of the grant, so what the grant would refuse (a negative
    amount, "ten dollars", more than the role may grant) is shown beside the form instead; the
    key travels on, so a double submit of the confirmation grants once."""
    submitted = await request.form()
    form = {name: str(submitted.get(name, "")).strip() for name in GRANT_FIELDS}
    payload = await mutate(request, "ConsoleGrantCredits", _grant_input(customer_id, form, dry_run=True), context)
    if payload["userErrors"]:
        errors = field_errors(payload["userErrors"])
        return await credits_page(request, context, customer_id, errors=errors, form=form, status_code=422)
    customer = (await query(request, "ConsoleCustomer", {"id": customer_id}, context))["customer"]
    if customer is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    amount = payload["grant"]["amount"]
    return render(
        request,
        "grant_confirm.html",
        {
            "customer": customer,
            "form": form,
            "grant": payload["grant"],
            "amount": grouped_amount(amount["amount"]),
        },
    )


@router.post("/customers/{customer_id}/grants")
async def grant_credits(request: Request, context: ContextDep, customer_id: str) -> Response:
    submitted = await request.form()
    form = {name: str(submitted.get(name, "")).strip() for name in GRANT_FIELDS}
    payload = await mutate(request, "ConsoleGrantCredits", _grant_input(customer_id, form, dry_run=False), context)
    if payload["userErrors"]:
        errors = field_errors(payload["userErrors"])
        return await credits_page(request, context, customer_id, errors=errors, form=form, status_code=422)
    amount = payload["grant"]["amount"]
    return RedirectResponse(
        f"/console/customers/{customer_id}/credits?notice=Granted {grouped_amount(amount['amount'])} "
        f"{amount['currency']}",
        status_code=303,
    )


VOID_FIELDS = ("reason", "idempotency_key")


def _void_input(customer_id: str, grant_id: str, form: dict[str, str], *, dry_run: bool) -> dict[str, Any]:
    return {
        "input": {
            "customerId": customer_id,
            "grantId": grant_id,
            "reason": form["reason"],
            "idempotencyKey": form["idempotency_key"],
            "dryRun": dry_run,
        }
    }


@router.post("/customers/{customer_id}/grants/{grant_id}/void/review")
async def review_void(request: Request, context: ContextDep, customer_id: str, grant_id: str) -> Response:
    """What voiding the grant would take back (a dry run), before anyone confirms it."""
    submitted = await request.form()
    form = {name: str(submitted.get(name, "")).strip() for name in VOID_FIELDS}
    form["idempotency_key"] = form["idempotency_key"] or str(uuid.uuid4())
    payload = await mutate(
        request, "ConsoleVoidCreditGrant", _void_input(customer_id, grant_id, form, dry_run=True), context
    )
    if payload["userErrors"]:
        errors = {f"void_{name}": message for name, message in field_errors(payload["userErrors"]).items()}
        form = {"void_grant": grant_id, "void_reason": form["reason"]}
        return await credits_page(request, context, customer_id, errors=errors, form=form, status_code=422)
    customer = (await query(request, "ConsoleCustomer", {"id": customer_id}, context))["customer"]
    if customer is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    return render(
        request,
        "grant_void_review.html",
        {"customer": customer, "form": form, "grant": payload["grant"], "voided": payload["voided"]},
    )


@router.post("/customers/{customer_id}/grants/{grant_id}/void")
async def void_grant(request: Request, context: ContextDep, customer_id: str, grant_id: str) -> Response:
    submitted = await request.form()
    form = {name: str(submitted.get(name, "")).strip() for name in VOID_FIELDS}
    payload = await mutate(
        request, "ConsoleVoidCreditGrant", _void_input(customer_id, grant_id, form, dry_run=False), context
    )
    if payload["userErrors"]:
        errors = {"void_form": "; ".join(field_errors(payload["userErrors"]).values())}  # above the grants
        return await credits_page(request, context, customer_id, errors=errors, status_code=422)
    voided = payload["voided"]
    return RedirectResponse(
        f"/console/customers/{customer_id}/credits?notice=Voided the grant: {grouped_amount(voided['amount'])} "
        f"{voided['currency']} taken back",
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
    payload = await mutate(
        request,
        "ConsoleRedeemPromotion",
        {"input": {"customerId": customer_id, "code": code, "idempotencyKey": idempotency_key}},
        context,
    )
    if payload["userErrors"]:
        errors = {"code": "; ".join(field_errors(payload["userErrors"]).values())}  # the form's one input
        return await credits_page(request, context, customer_id, errors=errors, status_code=422)
    amount = payload["grant"]["amount"]
    return RedirectResponse(
        f"/console/customers/{customer_id}/credits?notice=Redeemed {code}: {grouped_amount(amount['amount'])} "
        f"{amount['currency']}",
        status_code=303,
    )


@router.get("/promotions")
async def promotions_page(request: Request, context: ContextDep, notice: str | None = None) -> Response:
    return await promotions_view(request, context, notice=notice)


def _whole(text: str) -> int | str | None:
    """A count typed in a form: a whole number, None when empty; anything else is passed on as
    typed, for the API to refuse beside the field."""
    return int(text) if text.isdigit() and len(text) < 10 else (text or None)


@router.post("/promotions")
async def create_promotion(request: Request, context: ContextDep) -> Response:
    submitted = await request.form()
    form = {
        name: str(submitted.get(name, "")).strip()
        for name in ("code", "description", "credit_amount", "currency", "credit_expires_in_days", "max_redemptions")
    }
    payload = await mutate(
        request,
        "ConsoleCreatePromotion",
        {
            "input": {
                "code": form["code"],
                "description": form["description"],
                "creditAmount": form["credit_amount"] or "0",
                "currency": form["currency"] or "USD",
                "creditExpiresInDays": _whole(form["credit_expires_in_days"]),
                "maxRedemptions": _whole(form["max_redemptions"]),
            }
        },
        context,
    )
    if payload["userErrors"]:
        return await promotions_view(
            request, context, errors=field_errors(payload["userErrors"]), form=form, status_code=422
        )
    return RedirectResponse("/console/promotions", status_code=303)


PROMOTION_EDIT_FIELDS = ("description", "credit_expires_in_days", "max_redemptions", "expires_at")


@router.get("/promotions/{promotion_id}")
async def promotion_page(request: Request, context: ContextDep, promotion_id: str) -> Response:
    return await promotion_view(request, context, promotion_id)


async def promotion_view(
    request: Request,
    context: TallyContext,
    promotion_id: str,
    *,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    promotions = (await query(request, "ConsolePromotions", {}, context))["promotions"]
    promotion = next((p for p in promotions if p["id"] == promotion_id), None)
    if promotion is None:
        return render(request, "not_found.html", {"what": "promotion"}, status_code=404)
    current = {
        "description": promotion["description"],
        "credit_expires_in_days": str(promotion["creditExpiresInDays"] or ""),
        "max_redemptions": str(promotion["maxRedemptions"] or ""),
        "expires_at": (promotion["expiresAt"] or "")[:10],
    }
    return render(
        request,
        "promotion.html",
        {"promotion": promotion, "form": form or current, "errors": errors or {}},
        status_code=status_code,
    )


def _end_of_day(text: str) -> str | None:
    """A date typed in the form as the end of that day, UTC (the code works all that day)."""
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return text  # refused by the API, beside the field
    return datetime.combine(day, time.max, tzinfo=UTC).isoformat()


@router.post("/promotions/{promotion_id}")
async def update_promotion(request: Request, context: ContextDep, promotion_id: str) -> Response:
    submitted = await request.form()
    form = {name: str(submitted.get(name, "")).strip() for name in PROMOTION_EDIT_FIELDS}
    payload = await mutate(
        request,
        "ConsoleUpdatePromotion",
        {
            "input": {
                "promotionId": promotion_id,
                "description": form["description"],
                "creditExpiresInDays": _whole(form["credit_expires_in_days"]),
                "maxRedemptions": _whole(form["max_redemptions"]),
                "expiresAt": _end_of_day(form["expires_at"]),
            }
        },
        context,
    )
    if payload["userErrors"]:
        errors = field_errors(payload["userErrors"])
        return await promotion_view(request, context, promotion_id, errors=errors, form=form, status_code=422)
    code = payload["promotion"]["code"]
    return RedirectResponse(f"/console/promotions?notice=Saved promotion {code}", status_code=303)


@router.post("/promotions/{promotion_id}/active")
async def set_promotion_active(
    request: Request, context: ContextDep, promotion_id: str, active: Annotated[str, Form()] = "false"
) -> Response:
    """Deactivate (no new redemption; credit already granted stays) or reactivate a promotion."""
    payload = await mutate(
        request,
        "ConsoleUpdatePromotion",
        {"input": {"promotionId": promotion_id, "active": active == "true"}},
        context,
    )
    if payload["userErrors"]:
        errors = field_errors(payload["userErrors"])
        return await promotion_view(request, context, promotion_id, errors=errors, status_code=422)
    promotion = payload["promotion"]
    state = "active again" if promotion["active"] else "deactivated: no new redemptions"
    return RedirectResponse(f"/console/promotions?notice=Promotion {promotion['code']} is {state}", status_code=303)
