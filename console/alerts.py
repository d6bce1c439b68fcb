"""The console's usage and spend alerts: a customer's Alerts tab lists the alerts watching them
(their own and their plan's) and what fired; creating or deleting one of theirs is reviewed first
(a dry run showing the alert as it would be) and then confirmed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from app.api.context import TallyContext
from console.forms import field_errors, mutate
from console.pages import ContextDep, query, render

router = APIRouter(prefix="/console", include_in_schema=False)

ALERT_FIELDS = ("name", "metric", "meter_key", "threshold_unit", "thresholds", "spend_base")
BLANK_FORM = {"name": "", "metric": "usage", "meter_key": "", "threshold_unit": "percent", "thresholds": "50, 80, 100",
              "spend_base": ""}  # fmt: skip
MAX_THRESHOLDS_TEXT = 400  # ten thresholds and their separators fit well within it


async def _alerts_page(
    request: Request,
    context: TallyContext,
    customer_id: str,
    *,
    notice: str | None = None,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    found = await query(request, "ConsoleCustomerAlerts", {"id": customer_id}, context)
    if found["customer"] is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    return render(
        request,
        "customer_alerts.html",
        {
            "customer": found["customer"],
            "meters": found["meters"],
            "notice": notice,
            "errors": errors or {},
            "form": form or BLANK_FORM,
        },
        status_code=status_code,
    )


@router.get("/customers/{customer_id}/alerts")
async def customer_alerts(
    request: Request, context: ContextDep, customer_id: str, notice: str | None = None
) -> Response:
    return await _alerts_page(request, context, customer_id, notice=notice)


def alert_input(customer_id: str, currency: str, form: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The createUsageAlert input for the form, and the errors found before asking the API."""
    errors: dict[str, str] = {}
    spend = form["metric"] == "spend"
    thresholds = [part.strip() for part in form["thresholds"].split(",") if part.strip()]
    if len(form["thresholds"]) > MAX_THRESHOLDS_TEXT:
        errors["thresholds"] = "give at most 10 thresholds"
    variables = {
        "customerId": customer_id,
        "name": form["name"],
        "metric": "SPEND" if spend else "USAGE",
        "meterKey": None if spend else (form["meter_key"] or None),
        "currency": currency if spend else None,
        "thresholdUnit": "PERCENT" if form["threshold_unit"] == "percent" else "ABSOLUTE",
        "thresholds": thresholds,
        "spendBase": (form["spend_base"] or None) if spend else None,
    }
    return variables, errors


async def _create(request: Request, context: TallyContext, customer_id: str, *, dry_run: bool) -> Response:
    submitted = await request.form()
    form = {name: str(submitted.get(name, "")).strip() for name in ALERT_FIELDS}
    found = (await query(request, "ConsoleCustomerAlerts", {"id": customer_id}, context))["customer"]
    if found is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    variables, errors = alert_input(customer_id, found["currency"], form)
    if errors:
        return await _alerts_page(request, context, customer_id, errors=errors, form=form, status_code=422)
    payload = await mutate(request, "ConsoleCreateUsageAlert", {"input": variables | {"dryRun": dry_run}}, context)
    if payload["userErrors"]:
        errors = field_errors(payload["userErrors"])
        return await _alerts_page(request, context, customer_id, errors=errors, form=form, status_code=422)
    if not dry_run:
        notice = f"Alert {payload['usageAlert']['name']} created"
        return RedirectResponse(f"/console/customers/{customer_id}/alerts?notice={notice}", status_code=303)
    return render(
        request,
        "alert_review.html",
        {"customer": found, "alert": payload["usageAlert"], "form": form, "action": "create"},
    )


@router.post("/customers/{customer_id}/alerts/review")
async def review_create(request: Request, context: ContextDep, customer_id: str) -> Response:
    """The dry run: the alert as it would be, its thresholds checked; confirming sends the same form."""
    return await _create(request, context, customer_id, dry_run=True)


@router.post("/customers/{customer_id}/alerts")
async def confirm_create(request: Request, context: ContextDep, customer_id: str) -> Response:
    return await _create(request, context, customer_id, dry_run=False)


async def _delete(
    request: Request, context: TallyContext, customer_id: str, alert_id: str, *, dry_run: bool
) -> Response:
    variables = {"alertId": alert_id, "dryRun": dry_run}
    payload = await mutate(request, "ConsoleDeleteUsageAlert", {"input": variables}, context)
    if payload["userErrors"]:
        errors = field_errors(payload["userErrors"])
        return await _alerts_page(request, context, customer_id, errors=errors, status_code=422)
    if not dry_run:
        notice = f"Alert {payload['usageAlert']['name']} deleted"
        return RedirectResponse(f"/console/customers/{customer_id}/alerts?notice={notice}", status_code=303)
    customer = (await query(request, "ConsoleCustomerAlerts", {"id": customer_id}, context))["customer"]
    return render(
        request,
        "alert_review.html",
        {"customer": customer, "alert": payload["usageAlert"], "form": {}, "action": "delete"},
    )


@router.post("/customers/{customer_id}/alerts/{alert_id}/delete/review")
async def review_delete(request: Request, context: ContextDep, customer_id: str, alert_id: str) -> Response:
    return await _delete(request, context, customer_id, alert_id, dry_run=True)


@router.post("/customers/{customer_id}/alerts/{alert_id}/delete")
async def confirm_delete(request: Request, context: ContextDep, customer_id: str, alert_id: str) -> Response:
    return await _delete(request, context, customer_id, alert_id, dry_run=False)
