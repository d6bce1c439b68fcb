"""The console's Prices page of a customer: each charge of their plan with the plan's price beside
the customer's own, the history of their overrides, and (finance, admin) a form to set or remove
an override: a review step showing the dry run's amounts, then the confirmation."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from app.api.context import TallyContext
from console.forms import field_errors
from console.pages import ContextDep, query, render

router = APIRouter(prefix="/console", include_in_schema=False)

DECIMAL_FIELDS = ("unit_price", "package_size", "package_price", "included", "minimum", "limit")
FORM_FIELDS = (
    "action",
    "charge_id",
    *DECIMAL_FIELDS,
    "tiers",
    "unlimited",
    "effective_at",
    "reason",
    "idempotency_key",
)
API_NAMES = {
    "unit_price": "unitPrice",
    "package_size": "packageSize",
    "package_price": "packagePrice",
    "included": "included",
    "minimum": "minimum",
    "limit": "limit",
}


async def price_form(request: Request) -> dict[str, str]:
    submitted = await request.form()
    form = {name: str(submitted.get(name, "")).strip() for name in FORM_FIELDS}
    form["action"] = "remove" if form["action"] == "remove" else "set"
    form["unlimited"] = "on" if form["unlimited"] else ""
    return form


def _tiers(text: str, errors: dict[str, str]) -> list[dict[str, str | None]] | None:
    """Tiers as typed, one a line: ``UP_TO: PRICE``, the last one ``inf: PRICE``."""
    tiers: list[dict[str, str | None]] = []
    for line in [line.strip() for line in text.splitlines() if line.strip()]:
        up_to, separator, price = line.partition(":")
        if (
            not separator
            or not _is_decimal(price.strip())
            or not (up_to.strip() == "inf" or _is_decimal(up_to.strip()))
        ):
            errors["tiers"] = f"{line!r}: write each tier as UP_TO: PRICE, the last as inf: PRICE"
            return None
        tiers.append({"upTo": None if up_to == "inf" else up_to, "unitPrice": price})
    return tiers or None


def _is_decimal(text: str) -> bool:
    try:
        return Decimal(text).is_finite()
    except InvalidOperation:
        return False


def _moment(text: str, errors: dict[str, str]) -> str | None:
    """A date (midnight UTC) or an ISO 8601 time with its offset."""
    if not text:
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC).isoformat()
        moment = datetime.fromisoformat(text)
    except ValueError:
        errors["effectiveAt"] = "must be a date (YYYY-MM-DD) or a time with its offset"
        return None
    if moment.tzinfo is None:
        errors["effectiveAt"] = "give a time zone offset, e.g. 2026-12-01T00:00:00Z"
        return None
    return moment.isoformat()


def override_input(
    customer_id: str, form: dict[str, str], *, dry_run: bool
) -> tuple[str, dict[str, Any], dict[str, str]]:
    """The operation and its input for the form, and the errors found before asking the API."""
    errors: dict[str, str] = {}
    variables: dict[str, Any] = {
        "customerId": customer_id,
        "charge": {"id": form["charge_id"]},
        "reason": form["reason"],
        "idempotencyKey": form["idempotency_key"],
        "effectiveAt": _moment(form["effective_at"], errors),
        "dryRun": dry_run,
    }
    if not form["charge_id"]:
        errors["charge"] = "choose a charge"
    if form["action"] == "remove":
        return "ConsoleRemovePriceOverride", variables, errors
    for name in DECIMAL_FIELDS:
        if form[name]:
            if _is_decimal(form[name]):
                variables[API_NAMES[name]] = form[name]
            else:
                errors[API_NAMES[name]] = "must be a decimal number"
    if form["tiers"]:
        variables["tiers"] = _tiers(form["tiers"], errors)
    variables["unlimited"] = form["unlimited"] == "on"
    return "ConsoleSetPriceOverride", variables, errors


def _payload(data: dict[str, Any]) -> dict[str, Any]:
    return data.get("setPriceOverride") or data["removePriceOverride"]


async def _page(
    request: Request,
    context: TallyContext,
    customer_id: str,
    *,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> Response:
    customer = (await query(request, "ConsoleCustomerPrices", {"id": customer_id}, context))["customer"]
    if customer is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    charges = (customer["subscription"] or {}).get("charges") or []
    fresh = {name: "" for name in FORM_FIELDS} | {"action": "set", "idempotency_key": str(uuid.uuid4())}
    if charges:
        fresh["charge_id"] = charges[0]["id"]
    return render(
        request,
        "customer_prices.html",
        {
            "customer": customer,
            "charges": charges,
            "form": form or fresh,
            "errors": errors or {},
            "notice": notice,
        },
        status_code=status_code,
    )


@router.get("/customers/{customer_id}/prices")
async def customer_prices(
    request: Request, context: ContextDep, customer_id: str, notice: str | None = None
) -> Response:
    return await _page(request, context, customer_id, notice=notice)


@router.post("/customers/{customer_id}/prices/review")
async def review_price_override(request: Request, context: ContextDep, customer_id: str) -> Response:
    """The dry run: the charge's terms before and after, and the current period's amounts; the
    confirmation carries the same key and moment, so what is confirmed is what was reviewed."""
    form = await price_form(request)
    form["idempotency_key"] = form["idempotency_key"] or str(uuid.uuid4())
    if not form["effective_at"]:
        form["effective_at"] = datetime.now(UTC).replace(microsecond=0).isoformat()
    operation, variables, errors = override_input(customer_id, form, dry_run=True)
    if errors:
        return await _page(request, context, customer_id, form=form, errors=errors, status_code=422)
    payload = _payload(await query(request, operation, {"input": variables}, context))
    if payload["userErrors"]:
        errors = field_errors(payload["userErrors"])
        return await _page(request, context, customer_id, form=form, errors=errors, status_code=422)
    customer = (await query(request, "ConsoleCustomerPrices", {"id": customer_id}, context))["customer"]
    return render(request, "price_override_review.html", {"customer": customer, "form": form, "review": payload})


@router.post("/customers/{customer_id}/prices")
async def confirm_price_override(request: Request, context: ContextDep, customer_id: str) -> Response:
    form = await price_form(request)
    operation, variables, errors = override_input(customer_id, form, dry_run=False)
    if errors:
        return await _page(request, context, customer_id, form=form, errors=errors, status_code=422)
    payload = _payload(await query(request, operation, {"input": variables}, context))
    if payload["userErrors"]:
        errors = field_errors(payload["userErrors"])
        return await _page(request, context, customer_id, form=form, errors=errors, status_code=422)
    charge = payload["charge"]
    what = "removed: the plan's price again" if form["action"] == "remove" else "set"
    notice = f"Price of {charge['meter']['name']} {what} from {payload['priceOverride']['effectiveAt'][:16]} UTC"
    return RedirectResponse(f"/console/customers/{customer_id}/prices?notice={notice}", status_code=303)
