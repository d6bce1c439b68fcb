"""The console's coupons: the list and the new-coupon form on the Promotions page (with archive),
and a customer's Discounts tab, where applying a code or removing a discount is reviewed first
(a dry run showing the upcoming invoice as it would be) and then confirmed with the same key."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from app.api.context import TallyContext
from console.forms import field_errors, mutate
from console.pages import ContextDep, query, render

router = APIRouter(prefix="/console", include_in_schema=False)

COUPON_FIELDS = (
    "code",
    "name",
    "kind",
    "off",
    "currency",
    "applies_to",
    "duration",
    "duration_periods",
    "max_redemptions",
    "redeem_by",
)


async def promotions_view(
    request: Request,
    context: TallyContext,
    *,
    notice: str | None = None,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    coupon_errors: dict[str, str] | None = None,
    coupon_form: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    """The Promotions page: promotions and coupons, each with its new-one form."""
    promotions = (await query(request, "ConsolePromotions", {}, context))["promotions"]
    coupons = (await query(request, "ConsoleCoupons", {}, context))["coupons"]
    return render(
        request,
        "promotions.html",
        {
            "promotions": promotions,
            "errors": errors or {},
            "form": form or {},
            "notice": notice,
            "coupons": coupons,
            "coupon_errors": coupon_errors or {},
            "coupon_form": coupon_form or {"kind": "percent", "duration": "once"},
        },
        status_code=status_code,
    )


def _whole_number(text: str, field: str, errors: dict[str, str]) -> int | None:
    if not text:
        return None
    if not text.isdigit() or len(text) > 9:
        errors[field] = "must be a whole number"
        return None
    return int(text)


def coupon_input(form: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The createCoupon input for the form, and the errors found before asking the API."""
    errors: dict[str, str] = {}
    percent = form["kind"] != "amount"
    redeem_by = None
    if form["redeem_by"]:
        try:
            redeem_by = datetime.combine(date.fromisoformat(form["redeem_by"]), time(), tzinfo=UTC).isoformat()
        except ValueError:
            errors["redeemBy"] = "must be a date (YYYY-MM-DD)"
    duration = form["duration"].upper() if form["duration"] in ("once", "repeating", "forever") else "ONCE"
    variables = {
        "code": form["code"],
        "name": form["name"],
        "duration": duration,
        "percentOff": (form["off"] or "0") if percent else None,
        "amountOff": None if percent else (form["off"] or "0"),
        "currency": None if percent else (form["currency"] or None),
        "appliesTo": [key.strip() for key in form["applies_to"].split(",") if key.strip()],
        "durationPeriods": _whole_number(form["duration_periods"], "durationPeriods", errors),
        "maxRedemptions": _whole_number(form["max_redemptions"], "maxRedemptions", errors),
        "redeemBy": redeem_by,
    }
    return variables, errors


@router.post("/coupons")
async def create_coupon(request: Request, context: ContextDep) -> Response:
    submitted = await request.form()
    form = {name: str(submitted.get(name, "")).strip() for name in COUPON_FIELDS}
    variables, errors = coupon_input(form)
    if not errors:
        payload = await mutate(request, "ConsoleCreateCoupon", {"input": variables}, context)
        errors = field_errors(payload["userErrors"])
        if not errors:
            return RedirectResponse(f"/console/promotions?notice=Coupon {payload['coupon']['code']} created", 303)
    # The percentage and the amount share one input: an error about either is shown beside it.
    for name in ("percentOff", "amountOff"):
        if name in errors:
            errors["off"] = errors.pop(name)
    return await promotions_view(request, context, coupon_form=form, coupon_errors=errors, status_code=422)


@router.post("/coupons/{coupon_id}/archive")
async def archive_coupon(request: Request, context: ContextDep, coupon_id: str) -> Response:
    payload = await mutate(request, "ConsoleArchiveCoupon", {"input": {"couponId": coupon_id}}, context)
    if payload["userErrors"]:
        return RedirectResponse(f"/console/promotions?notice={payload['userErrors'][0]['message']}", 303)
    return RedirectResponse(f"/console/promotions?notice=Coupon {payload['coupon']['code']} archived", 303)


async def _discounts_page(
    request: Request,
    context: TallyContext,
    customer_id: str,
    *,
    notice: str | None = None,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    customer = (await query(request, "ConsoleCustomerDiscounts", {"id": customer_id}, context))["customer"]
    if customer is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    return render(
        request,
        "customer_discounts.html",
        {
            "customer": customer,
            "notice": notice,
            "errors": errors or {},
            "form": form or {"code": "", "idempotency_key": str(uuid.uuid4())},
        },
        status_code=status_code,
    )


@router.get("/customers/{customer_id}/discounts")
async def customer_discounts(
    request: Request, context: ContextDep, customer_id: str, notice: str | None = None
) -> Response:
    return await _discounts_page(request, context, customer_id, notice=notice)


async def _apply(request: Request, context: TallyContext, customer_id: str, *, dry_run: bool) -> Response:
    submitted = await request.form()
    form = {name: str(submitted.get(name, "")).strip() for name in ("code", "idempotency_key")}
    form["idempotency_key"] = form["idempotency_key"] or str(uuid.uuid4())
    variables = {"customerId": customer_id, "code": form["code"], "idempotencyKey": form["idempotency_key"]}
    payload = await mutate(request, "ConsoleApplyCoupon", {"input": variables | {"dryRun": dry_run}}, context)
    if payload["userErrors"]:
        errors = field_errors(payload["userErrors"])
        return await _discounts_page(request, context, customer_id, errors=errors, form=form, status_code=422)
    if not dry_run:
        notice = f"Coupon {payload['discount']['coupon']['code']} applied"
        return RedirectResponse(f"/console/customers/{customer_id}/discounts?notice={notice}", status_code=303)
    customer = (await query(request, "ConsoleCustomerDiscounts", {"id": customer_id}, context))["customer"]
    return render(
        request,
        "discount_review.html",
        {"customer": customer, "review": payload, "form": form, "action": "apply"},
    )


@router.post("/customers/{customer_id}/discounts/review")
async def review_apply(request: Request, context: ContextDep, customer_id: str) -> Response:
    """The dry run: the discount and the upcoming invoice with it; confirming sends the same key."""
    return await _apply(request, context, customer_id, dry_run=True)


@router.post("/customers/{customer_id}/discounts")
async def confirm_apply(request: Request, context: ContextDep, customer_id: str) -> Response:
    return await _apply(request, context, customer_id, dry_run=False)


async def _remove(
    request: Request, context: TallyContext, customer_id: str, discount_id: str, *, dry_run: bool
) -> Response:
    variables = {"customerId": customer_id, "discountId": discount_id, "dryRun": dry_run}
    payload = await mutate(request, "ConsoleRemoveDiscount", {"input": variables}, context)
    if payload["userErrors"]:
        errors = field_errors(payload["userErrors"])
        return await _discounts_page(request, context, customer_id, errors=errors, status_code=422)
    if not dry_run:
        notice = f"Discount {payload['discount']['coupon']['code']} removed"
        return RedirectResponse(f"/console/customers/{customer_id}/discounts?notice={notice}", status_code=303)
    customer = (await query(request, "ConsoleCustomerDiscounts", {"id": customer_id}, context))["customer"]
    return render(
        request,
        "discount_review.html",
        {"customer": customer, "review": payload, "form": {"discount_id": discount_id}, "action": "remove"},
    )


@router.post("/customers/{customer_id}/discounts/{discount_id}/remove/review")
async def review_remove(request: Request, context: ContextDep, customer_id: str, discount_id: str) -> Response:
    return await _remove(request, context, customer_id, discount_id, dry_run=True)


@router.post("/customers/{customer_id}/discounts/{discount_id}/remove")
async def confirm_remove(request: Request, context: ContextDep, customer_id: str, discount_id: str) -> Response:
    return await _remove(request, context, customer_id, discount_id, dry_run=False)
