"""Console pages for the email outbox: a customer's Emails tab (each message's status, attempts
and last error, with a Resend button) and the Emails page (every customer's, failed ones first
by default). Resending makes a new message (the original stays in the history); a double
submission finds the resend still waiting and queues nothing more, so no review step is needed."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from app.api.context import TallyContext
from app.auth import Capability
from console.pages import ContextDep, query, render

router = APIRouter(prefix="/console", include_in_schema=False)
SHOWN = 100
STATUSES = ("failed", "pending", "sending", "sent", "skipped", "all")


async def _messages(
    request: Request, context: TallyContext, *, customer_id: str | None, status: str
) -> tuple[list[dict[str, Any]], bool]:
    variables = {"customerId": customer_id, "status": None if status == "all" else status.upper(), "first": SHOWN}
    found = (await query(request, "ConsoleEmailMessages", variables, context))["emailMessages"]
    return [edge["node"] for edge in found["edges"]], found["pageInfo"]["hasNextPage"]


@router.get("/customers/{customer_id}/emails")
async def customer_emails(
    request: Request, context: ContextDep, customer_id: str, notice: str | None = None, error: str | None = None
) -> Response:
    customer = (await query(request, "ConsoleCustomerHeader", {"id": customer_id}, context))["customer"]
    if customer is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    messages, more = await _messages(request, context, customer_id=customer["id"], status="all")
    return render(
        request,
        "customer_emails.html",
        {
            "customer": customer,
            "messages": messages,
            "more": more,
            "notice": notice,
            "error": error,
        },
    )


@router.get("/emails")
async def emails_page(
    request: Request, context: ContextDep, status: str = "failed", notice: str | None = None, error: str | None = None
) -> Response:
    status = status if status in STATUSES else "failed"
    messages, more = await _messages(request, context, customer_id=None, status=status)
    return render(
        request,
        "emails.html",
        {
            "messages": messages,
            "more": more,
            "status": status,
            "statuses": STATUSES,
            "notice": notice,
            "error": error,
        },
    )


@router.post("/emails/{message_id}/resend")
async def resend_email(request: Request, context: ContextDep, message_id: str) -> Response:
    """Queue the message again, then back to where the button was: the customer's tab (named by
    the form's ``customer_id``, a UUID) or the Emails page."""
    form = await request.form()
    back = "/console/emails"
    with contextlib.suppress(ValueError):
        back = f"/console/customers/{uuid.UUID(str(form.get('customer_id', '')))}/emails"
    if not context.viewer.can(Capability.RESEND_EMAILS):
        return RedirectResponse(f"{back}?{urlencode({'error': 'Your role may not resend emails'})}", status_code=303)
    payload = (await query(request, "ConsoleResendEmail", {"input": {"id": message_id}}, context))["resendEmail"]
    if payload["userErrors"]:
        error = "; ".join(e["message"] for e in payload["userErrors"])
        return RedirectResponse(f"{back}?{urlencode({'error': error})}", status_code=303)
    notice = "The email is queued again: the sender sends it within seconds when email is on"
    return RedirectResponse(f"{back}?{urlencode({'notice': notice})}", status_code=303)
