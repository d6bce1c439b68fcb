"""Console pages for outbound webhooks (admin only): the Webhooks page (every endpoint, its state
and counts, and a form to register one) and an endpoint's page (its secret, enable/disable,
rotate, delete; its deliveries with status, latency and the start of each answer, a Resend
button on each, "Replay since" with a review step, and the table as CSV)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from app.api.context import TallyContext
from app.auth import Capability
from console.forms import field_errors
from console.pages import CSV_ROW_LIMIT, ContextDep, csv_download, query, render

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE = 50
STATUSES = ("all", "failed", "pending", "sending", "delivered")
FORBIDDEN = "Only an admin may see or change webhook endpoints"


def _forbidden(request: Request) -> Response:
    return render(request, "error.html", {"messages": [FORBIDDEN]}, status_code=403)


async def _endpoints_page(
    request: Request,
    context: TallyContext,
    *,
    form: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> Response:
    found = await query(request, "ConsoleWebhookEndpoints", {}, context)
    return render(
        request,
        "webhooks.html",
        {
            "endpoints": found["webhookEndpoints"],
            "event_types": found["webhookEventTypes"],
            "form": form or {"every": True, "types": []},
            "errors": errors or {},
            "notice": notice,
        },
        status_code=status_code,
    )


@router.get("/webhooks")
async def webhooks_page(request: Request, context: ContextDep, notice: str | None = None) -> Response:
    if not context.viewer.can(Capability.MANAGE_WEBHOOKS):
        return _forbidden(request)
    return await _endpoints_page(request, context, notice=notice)


@router.post("/webhooks")
async def create_endpoint(request: Request, context: ContextDep) -> Response:
    if not context.viewer.can(Capability.MANAGE_WEBHOOKS):
        return _forbidden(request)
    submitted = await request.form()
    every = submitted.get("every") == "on"
    types = [str(value) for value in submitted.getlist("event_types")]
    form = {
        "url": str(submitted.get("url", "")),
        "description": str(submitted.get("description", "")),
        "every": every,
        "types": types,
    }
    variables = {
        "url": form["url"],
        "description": form["description"],
        "eventTypes": None if every else types,
        "idempotencyKey": str(submitted.get("idempotency_key", "")) or None,
    }
    payload = (await query(request, "ConsoleCreateWebhookEndpoint", {"input": variables}, context))[
        "createWebhookEndpoint"
    ]
    if payload["userErrors"]:
        errors = field_errors(payload["userErrors"])
        return await _endpoints_page(request, context, form=form, errors=errors, status_code=422)
    notice = "Endpoint registered: give its secret to the receiver to verify signatures"
    return RedirectResponse(
        f"/console/webhooks/{payload['endpoint']['id']}?{urlencode({'notice': notice})}", status_code=303
    )


async def _endpoint_page(
    request: Request,
    context: TallyContext,
    endpoint_id: str,
    *,
    status: str = "all",
    after: str | None = None,
    notice: str | None = None,
    error: str | None = None,
    replay: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    status = status if status in STATUSES else "all"
    variables = {
        "id": endpoint_id,
        "status": None if status == "all" else status.upper(),
        "first": PAGE,
        "after": after,
    }
    endpoint = (await query(request, "ConsoleWebhookEndpoint", variables, context))["webhookEndpoint"]
    if endpoint is None:
        return render(request, "not_found.html", {"what": "webhook endpoint"}, status_code=404)
    deliveries = endpoint["deliveries"]
    return render(
        request,
        "webhook_endpoint.html",
        {
            "endpoint": endpoint,
            "deliveries": [edge["node"] for edge in deliveries["edges"]],
            "page_info": deliveries["pageInfo"],
            "status": status,
            "statuses": STATUSES,
            "notice": notice,
            "error": error,
            "replay": replay or {},
        },
        block="deliveries" if after else None,
        status_code=status_code,
    )


@router.get("/webhooks/{endpoint_id}")
async def endpoint_page(
    request: Request,
    context: ContextDep,
    endpoint_id: str,
    status: str = "all",
    after: str | None = None,
    notice: str | None = None,
    error: str | None = None,
) -> Response:
    if not context.viewer.can(Capability.MANAGE_WEBHOOKS):
        return _forbidden(request)
    return await _endpoint_page(request, context, endpoint_id, status=status, after=after, notice=notice, error=error)


@router.get("/webhooks/{endpoint_id}/deliveries.csv")
async def deliveries_csv(request: Request, context: ContextDep, endpoint_id: str, status: str = "all") -> Response:
    """The deliveries table, in the page's order, paged through the same GraphQL query."""
    if not context.viewer.can(Capability.MANAGE_WEBHOOKS):
        return _forbidden(request)
    status = status if status in STATUSES else "all"
    header = [
        "queued_at",
        "event_type",
        "event_id",
        "resource_type",
        "resource_id",
        "resource_version",
        "status",
        "attempts",
        "last_attempt_at",
        "last_response_status",
        "last_error",
        "last_latency_ms",
        "last_response_excerpt",
        "next_attempt_at",
        "delivered_at",
    ]
    rows: list[list[Any]] = []
    after = None
    while len(rows) < CSV_ROW_LIMIT:
        variables = {
            "id": endpoint_id,
            "status": None if status == "all" else status.upper(),
            "first": 100,
            "after": after,
        }
        endpoint = (await query(request, "ConsoleWebhookEndpoint", variables, context))["webhookEndpoint"]
        if endpoint is None:
            return render(request, "not_found.html", {"what": "webhook endpoint"}, status_code=404)
        page = endpoint["deliveries"]
        for edge in page["edges"]:
            row = edge["node"]
            rows.append(
                [
                    row["createdAt"],
                    row["eventType"],
                    row["eventId"],
                    row["resourceType"],
                    row["resourceId"],
                    row["resourceVersion"],
                    row["status"].lower(),
                    row["attempts"],
                    row["lastAttemptAt"] or "",
                    row["lastResponseStatus"] if row["lastResponseStatus"] is not None else "",
                    row["lastError"] or "",
                    row["lastLatencyMs"] if row["lastLatencyMs"] is not None else "",
                    row["lastResponseExcerpt"] or "",
                    row["nextAttemptAt"] or "",
                    row["deliveredAt"] or "",
                ]
            )
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    return csv_download(f"webhook-deliveries-{endpoint_id}.csv", header, rows[:CSV_ROW_LIMIT])


def _back(endpoint_id: str, *, notice: str | None = None, error: str | None = None) -> RedirectResponse:
    message = {"notice": notice} if notice else {"error": error or ""}
    return RedirectResponse(f"/console/webhooks/{endpoint_id}?{urlencode(message)}", status_code=303)


async def _endpoint_action(
    request: Request,
    context: TallyContext,
    endpoint_id: str,
    operation: str,
    field: str,
    variables: dict[str, Any],
    done: str,
) -> Response:
    if not context.viewer.can(Capability.MANAGE_WEBHOOKS):
        return _forbidden(request)
    payload = (await query(request, operation, {"input": variables}, context))[field]
    if payload["userErrors"]:
        return _back(endpoint_id, error="; ".join(e["message"] for e in payload["userErrors"]))
    return _back(endpoint_id, notice=done)


@router.post("/webhooks/{endpoint_id}/enable")
async def enable(request: Request, context: ContextDep, endpoint_id: str) -> Response:
    return await _endpoint_action(
        request,
        context,
        endpoint_id,
        "ConsoleEnableWebhookEndpoint",
        "enableWebhookEndpoint",
        {"id": endpoint_id},
        "Enabled: the deliveries that waited go now; replay what it missed while off",
    )


@router.post("/webhooks/{endpoint_id}/disable")
async def disable(request: Request, context: ContextDep, endpoint_id: str) -> Response:
    return await _endpoint_action(
        request,
        context,
        endpoint_id,
        "ConsoleDisableWebhookEndpoint",
        "disableWebhookEndpoint",
        {"id": endpoint_id},
        "Disabled: nothing is sent or queued for it until it is enabled",
    )


@router.post("/webhooks/{endpoint_id}/rotate")
async def rotate(request: Request, context: ContextDep, endpoint_id: str) -> Response:
    form = await request.form()
    try:
        hours = int(str(form.get("overlap_hours", "24")))
    except ValueError:
        return _back(endpoint_id, error="Overlap: give a whole number of hours")
    if not 0 <= hours <= 168:  # checked here too: GraphQL's Int refuses what a form can hold
        return _back(endpoint_id, error="Overlap: between 0 and 168 hours")
    return await _endpoint_action(
        request,
        context,
        endpoint_id,
        "ConsoleRotateWebhookSecret",
        "rotateWebhookEndpointSecret",
        {"id": endpoint_id, "overlapHours": hours},
        f"New secret: the old one signs beside it for {hours} hours" if hours else "New secret, in use alone now",
    )


@router.post("/webhooks/{endpoint_id}/delete")
async def delete(request: Request, context: ContextDep, endpoint_id: str) -> Response:
    if not context.viewer.can(Capability.MANAGE_WEBHOOKS):
        return _forbidden(request)
    payload = (await query(request, "ConsoleDeleteWebhookEndpoint", {"input": {"id": endpoint_id}}, context))[
        "deleteWebhookEndpoint"
    ]
    if payload["userErrors"]:
        return _back(endpoint_id, error="; ".join(e["message"] for e in payload["userErrors"]))
    return RedirectResponse(f"/console/webhooks?{urlencode({'notice': 'Endpoint deleted'})}", status_code=303)


@router.post("/webhooks/{endpoint_id}/deliveries/{delivery_id}/resend")
async def resend(request: Request, context: ContextDep, endpoint_id: str, delivery_id: str) -> Response:
    return await _endpoint_action(
        request,
        context,
        endpoint_id,
        "ConsoleResendWebhookDelivery",
        "resendWebhookDelivery",
        {"id": delivery_id},
        "Queued again: the sender sends it within seconds",
    )


@router.post("/webhooks/{endpoint_id}/replay")
async def replay(request: Request, context: ContextDep, endpoint_id: str) -> Response:
    """Replay since a time (UTC, from the form's date and time): first a dry run that says how
    many events it would queue, then, confirmed, the replay."""
    if not context.viewer.can(Capability.MANAGE_WEBHOOKS):
        return _forbidden(request)
    form = await request.form()
    text = str(form.get("since", "")).strip()
    try:
        since = datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        return await _endpoint_page(
            request,
            context,
            endpoint_id,
            replay={"since": text, "error": "Give a date and time (UTC)"},
            status_code=422,
        )
    confirmed = form.get("confirm") == "yes"
    variables = {"endpointId": endpoint_id, "since": since.isoformat(), "dryRun": not confirmed}
    payload = (await query(request, "ConsoleReplayWebhookEvents", {"input": variables}, context))["replayWebhookEvents"]
    if payload["userErrors"]:
        error = "; ".join(e["message"] for e in payload["userErrors"])
        return await _endpoint_page(
            request, context, endpoint_id, replay={"since": text, "error": error}, status_code=422
        )
    if not confirmed:
        return await _endpoint_page(request, context, endpoint_id, replay={"since": text, "events": payload["events"]})
    return _back(endpoint_id, notice=f"{payload['events']} events queued again since {since:%Y-%m-%d %H:%M} UTC")
