"""Console pages for trials: end one (a review step showing the invoices its dry run would issue,
then confirm) or extend it, from the customer page's subscription card (``_trial.html``)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from app.api.context import TallyContext
from console.forms import field_errors
from console.pages import ContextDep, query, render

router = APIRouter(prefix="/console", include_in_schema=False)


async def _review(
    request: Request, context: TallyContext, customer_id: str, key: str, errors: dict[str, str] | None = None
) -> Response:
    customer = (await query(request, "ConsoleCustomer", {"id": customer_id}, context))["customer"]
    if customer is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    variables = {"input": {"customerId": customer_id, "idempotencyKey": key, "dryRun": True}}
    preview = (await query(request, "ConsoleEndTrial", variables, context))["endTrial"]
    return render(
        request,
        "trial_review.html",
        {
            "customer": customer,
            "invoices": preview["invoices"],
            "idempotency_key": key,
            "errors": errors or field_errors(preview["userErrors"]),
        },
        status_code=422 if errors or preview["userErrors"] else 200,
    )


@router.post("/customers/{customer_id}/trial/end/review")
async def review_end_trial(request: Request, context: ContextDep, customer_id: str) -> Response:
    """The review step: the invoices ending the trial now would issue, from a dry run; the
    idempotency key travels on to the confirmation."""
    return await _review(request, context, customer_id, str(uuid.uuid4()))


@router.post("/customers/{customer_id}/trial/end")
async def end_trial(request: Request, context: ContextDep, customer_id: str) -> Response:
    key = str((await request.form()).get("idempotency_key", "")).strip()
    variables = {"input": {"customerId": customer_id, "idempotencyKey": key}}
    payload = (await query(request, "ConsoleEndTrial", variables, context))["endTrial"]
    if payload["userErrors"]:
        return await _review(request, context, customer_id, key, field_errors(payload["userErrors"]))
    numbers = ", ".join(invoice["number"] for invoice in payload["invoices"]) or "no invoice"
    return RedirectResponse(f"/console/customers/{customer_id}/invoices?notice=Trial ended: {numbers}", status_code=303)


@router.post("/customers/{customer_id}/trial/extend")
async def extend_trial(request: Request, context: ContextDep, customer_id: str) -> Response:
    until = str((await request.form()).get("until", "")).strip()
    moment = f"{until}T00:00:00Z" if len(until) == 10 else until
    # One key per customer and new end: submitting the form twice extends once.
    variables = {
        "input": {"customerId": customer_id, "until": moment, "idempotencyKey": f"console:{customer_id}:{moment}"}
    }
    payload = (await query(request, "ConsoleExtendTrial", variables, context))["extendTrial"]
    if payload["userErrors"]:
        messages = "; ".join(field_errors(payload["userErrors"]).values())
        return render(request, "error.html", {"messages": [messages]}, status_code=422)
    return RedirectResponse(f"/console/customers/{customer_id}", status_code=303)
