"""The console's subscription lifecycle page: cancel (now or at the period's end), resume a
scheduled cancel, pause and unpause. Each money-moving form is a preview first (the mutation's
dry run: the final invoice or the prorations), then a confirmation carrying the same key and
moment, so that what is confirmed is exactly what was previewed. A customer with several
subscriptions picks one (``?subscription=ID``; the primary by default), and every form names it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from app.api.context import TallyContext
from console.billing import refusal_status
from console.forms import field_errors
from console.pages import ContextDep, is_htmx, query, render
from console.views import utc_minute

router = APIRouter(prefix="/console", include_in_schema=False)

TIMINGS = {"PERIOD_END": "At the end of the current period (revocable until then)", "IMMEDIATELY": "Immediately"}
MUTATIONS = {
    "cancel": ("ConsoleCancelSubscription", "cancelSubscription"),
    "resume": ("ConsoleResumeSubscription", "resumeSubscription"),
    "pause": ("ConsolePauseSubscription", "pauseSubscription"),
    "unpause": ("ConsoleUnpauseSubscription", "unpauseSubscription"),
}
FORM_FIELDS = ("timing", "reason", "idempotency_key", "at", "subscription_id")


def new_form() -> dict[str, str]:
    """A fresh form, its key made now, so a double submit of the confirmation acts once."""
    return {"timing": "PERIOD_END", "reason": "", "idempotency_key": str(uuid.uuid4()), "at": "", "subscription_id": ""}


def _chosen(customer: dict[str, Any], subscription_id: str | None) -> dict[str, Any] | None:
    """The subscription the page acts on: the one named, else the customer's primary one."""
    named = [sub for sub in customer["subscriptions"] if subscription_id and sub["id"] == subscription_id]
    return named[0] if named else customer["subscription"]


async def _page(
    request: Request,
    context: TallyContext,
    customer_id: str,
    *,
    action: str | None = None,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    preview: dict[str, Any] | None = None,
    notice: str | None = None,
    status_code: int = 200,
    subscription_id: str | None = None,
) -> Response:
    customer = (await query(request, "ConsoleSubscriptionLifecycle", {"id": customer_id}, context))["customer"]
    if customer is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    customer = {**customer, "subscription": _chosen(customer, subscription_id or (form or {}).get("subscription_id"))}
    return render(
        request,
        "customer_lifecycle.html",
        {
            "customer": customer,
            "action": action,
            "form": form or new_form(),
            "errors": errors or {},
            "preview": preview,
            "notice": notice,
            "timings": TIMINGS,
        },
        block="lifecycle_forms" if action else None,
        status_code=status_code,
    )


@router.get("/customers/{customer_id}/lifecycle")
async def lifecycle_page(
    request: Request, context: ContextDep, customer_id: str, notice: str | None = None, subscription: str | None = None
) -> Response:
    return await _page(request, context, customer_id, notice=notice, subscription_id=subscription)


async def _form(request: Request) -> dict[str, str]:
    submitted = await request.form()
    return {name: str(submitted.get(name, "")).strip() for name in FORM_FIELDS}


def _input(action: str, customer_id: str, form: dict[str, str], *, dry_run: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {"customerId": customer_id, "idempotencyKey": form["idempotency_key"] or str(uuid.uuid4())}
    if form["subscription_id"]:
        fields["subscriptionId"] = form["subscription_id"]
    if action == "cancel":
        timing = form["timing"] if form["timing"] in TIMINGS else "PERIOD_END"
        fields |= {"timing": timing, "reason": form["reason"] or None}
    if action != "resume":
        fields["dryRun"] = dry_run
        if form["at"] and not (action == "cancel" and fields["timing"] == "PERIOD_END"):
            fields["at"] = form["at"]
    return {"input": fields}


async def _mutate(
    request: Request, context: TallyContext, action: str, customer_id: str, form: dict[str, str], *, dry_run: bool
) -> dict[str, Any]:
    operation, field = MUTATIONS[action]
    found: dict[str, Any] = (
        await query(request, operation, _input(action, customer_id, form, dry_run=dry_run), context)
    )[field]
    return found


@router.post("/customers/{customer_id}/lifecycle/{action}/preview")
async def preview_lifecycle(request: Request, context: ContextDep, customer_id: str, action: str) -> Response:
    """A dry run of cancel, pause or unpause; its moment is fixed now, and confirmed as previewed."""
    if action not in MUTATIONS or action == "resume":
        return render(request, "not_found.html", {"what": "page"}, status_code=404)
    form = await _form(request)
    if not (action == "cancel" and form["timing"] == "PERIOD_END"):
        form["at"] = datetime.now(UTC).isoformat()
    payload = await _mutate(request, context, action, customer_id, form, dry_run=True)
    errors = field_errors(payload["userErrors"])
    return await _page(
        request,
        context,
        customer_id,
        action=action,
        form=form,
        errors=errors,
        preview=None if errors else payload,
        status_code=refusal_status(request) if errors else 200,
    )


@router.post("/customers/{customer_id}/lifecycle/{action}")
async def confirm_lifecycle(request: Request, context: ContextDep, customer_id: str, action: str) -> Response:
    if action not in MUTATIONS:
        return render(request, "not_found.html", {"what": "page"}, status_code=404)
    form = await _form(request)
    payload = await _mutate(request, context, action, customer_id, form, dry_run=False)
    if payload["userErrors"]:
        errors = field_errors(payload["userErrors"])
        return await _page(request, context, customer_id, action=action, form=form, errors=errors, status_code=422)
    subscription = payload["subscription"]
    notices = {
        "cancel": f"Subscription canceled from {utc_minute(subscription['cancelAt'] or '')} UTC",
        "resume": "Scheduled cancel revoked: the subscription continues",
        "pause": f"Subscription paused from {utc_minute(subscription['pausedAt'] or '')} UTC",
        "unpause": "Subscription unpaused",
    }
    if action == "cancel" and payload.get("issuedInvoices"):
        notices["cancel"] += f"; final invoice {payload['issuedInvoices'][-1]['number']} issued"
    target = f"/console/customers/{customer_id}/lifecycle?notice={notices[action]}"
    if form["subscription_id"]:
        target += f"&subscription={form['subscription_id']}"
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)
