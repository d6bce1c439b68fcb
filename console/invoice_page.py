"""The console's invoice page: its lines and totals, its documents (the PDF as the customer gets
it, a signed customer link to copy) and its credit notes.

The "Credit note" form: per line or by amount, a reason and how it is settled, then a review step
stating the amount the dry run answers; confirming sends the same idempotency key, so a double
submit credits once. Refusals come back beside the form's fields (422)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from app.api.context import TallyContext
from app.invoice_documents import CREDIT_NOTE, INVOICE, InvoiceNotFound, pdf_response, viewer_pdf
from console.billing import invoice_reference
from console.forms import field_errors, mutate
from console.pages import ContextDep, query, render

router = APIRouter(prefix="/console", include_in_schema=False)

FIELDS = ("scope", "amount", "method", "reason", "note", "idempotency_key")
METHODS = {
    "CREDIT": "To the customer's credit balance",
    "REDUCE_DUE": "Off what is still due on this invoice",
    "REFUND": "Refund to the card (through Stripe)",
}
REASONS = {
    "DUPLICATE": "Duplicate",
    "PRODUCT_UNSATISFACTORY": "Product unsatisfactory",
    "ORDER_CHANGE": "Order change",
    "FRAUDULENT": "Fraudulent",
    "OTHER": "Other",
}


async def _form(request: Request) -> tuple[dict[str, str], dict[str, str]]:
    """The form's fields, and each line's amount by position (``line_<position>``, empty: none)."""
    submitted = await request.form()
    form = {name: str(submitted.get(name, "")).strip() for name in FIELDS}
    lines = {
        key.removeprefix("line_"): str(value).strip()
        for key, value in submitted.items()
        if key.startswith("line_") and str(value).strip()
    }
    return form, lines


def _input(invoice: dict[str, Any], form: dict[str, str], lines: dict[str, str], *, dry_run: bool) -> dict[str, Any]:
    by_line = form["scope"] == "lines"
    return {
        "input": {
            "invoiceId": invoice["id"],
            "method": form["method"] if form["method"] in METHODS else "CREDIT",
            "reason": form["reason"] if form["reason"] in REASONS else "OTHER",
            "note": form["note"] or None,
            "amount": None if by_line else form["amount"] or "0",
            "lines": [
                {"position": int(position), "amount": amount}
                for position, amount in lines.items()
                if position.isdigit() and len(position) < 10
            ]
            if by_line
            else None,
            "idempotencyKey": form["idempotency_key"],
            "dryRun": dry_run,
        }
    }


async def _invoice_page(
    request: Request,
    context: TallyContext,
    invoice: dict[str, Any],
    *,
    form: dict[str, str] | None = None,
    lines: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    notice: str | None = None,
    link: dict[str, str] | None = None,
    link_days: str | None = None,
    link_errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    customer = (await query(request, "ConsoleCustomerHeader", {"id": invoice["customerId"]}, context))["customer"]
    return render(
        request,
        "invoice.html",
        {
            "invoice": invoice,
            "customer": customer,
            "credit_form": form or {"scope": "amount", "idempotency_key": str(uuid.uuid4())},
            "credit_lines": lines or {},
            "credit_errors": errors or {},
            "credit_methods": METHODS,
            "credit_reasons": REASONS,
            "notice": notice,
            "link": link,
            "link_days": link_days,
            "link_errors": link_errors or {},
        },
        status_code=status_code,
    )


async def _invoice(request: Request, context: TallyContext, reference: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = (await query(request, "ConsoleInvoice", invoice_reference(reference), context))[
        "invoice"
    ]
    return found


@router.get("/invoices/{reference}")
async def invoice_page(request: Request, context: ContextDep, reference: str, notice: str | None = None) -> Response:
    invoice = await _invoice(request, context, reference)
    if invoice is None:
        return render(request, "not_found.html", {"what": "invoice"}, status_code=404)
    return await _invoice_page(request, context, invoice, notice=notice)


@router.post("/invoices/{reference}/credit-notes/review")
async def review_credit_note(request: Request, context: ContextDep, reference: str) -> Response:
    """The review step: what the note would credit, by line, as the dry run answers it."""
    invoice = await _invoice(request, context, reference)
    if invoice is None:
        return render(request, "not_found.html", {"what": "invoice"}, status_code=404)
    form, lines = await _form(request)
    variables = _input(invoice, form, lines, dry_run=True)
    payload = await mutate(request, "ConsoleCreateCreditNote", variables, context)
    if payload["userErrors"]:
        errors = field_errors(payload["userErrors"], whole_path=True)
        return await _invoice_page(request, context, invoice, form=form, lines=lines, errors=errors, status_code=422)
    hidden = {**form, **{f"line_{position}": amount for position, amount in lines.items()}}
    return render(
        request,
        "credit_note_review.html",
        {
            "invoice": invoice,
            "preview": payload["creditNote"],
            "form": hidden,
            "method": METHODS[variables["input"]["method"]],
            "reason": REASONS[variables["input"]["reason"]],
        },
    )


@router.post("/invoices/{reference}/credit-notes")
async def create_credit_note(request: Request, context: ContextDep, reference: str) -> Response:
    invoice = await _invoice(request, context, reference)
    if invoice is None:
        return render(request, "not_found.html", {"what": "invoice"}, status_code=404)
    form, lines = await _form(request)
    variables = _input(invoice, form, lines, dry_run=False)
    payload = await mutate(request, "ConsoleCreateCreditNote", variables, context)
    if payload["userErrors"]:
        errors = field_errors(payload["userErrors"], whole_path=True)
        return await _invoice_page(request, context, invoice, form=form, lines=lines, errors=errors, status_code=422)
    note = payload["creditNote"]
    notice = f"Credit note {note['number']}: {note['amount']['amount']} {note['amount']['currency']} credited"
    return RedirectResponse(f"/console/invoices/{invoice['number']}?notice={notice}", status_code=303)


@router.get("/invoices/{reference}/pdf")
async def invoice_pdf(request: Request, context: ContextDep, reference: str) -> Response:
    """The invoice's PDF in the customer's locale, as the customer receives it (the stored one)."""
    invoice = (await query(request, "ConsoleInvoice", invoice_reference(reference), context))["invoice"]
    if invoice is None or context.viewer is None:
        return render(request, "not_found.html", {"what": "invoice"}, status_code=404)
    try:
        pdf = await viewer_pdf(
            context.session, context.settings, context.viewer, INVOICE, uuid.UUID(invoice["id"]), None
        )
    except InvoiceNotFound:
        return render(request, "not_found.html", {"what": "invoice"}, status_code=404)
    return pdf_response(pdf, download=False)


@router.get("/credit-notes/{note_id}/pdf")
async def credit_note_pdf(context: ContextDep, request: Request, note_id: str) -> Response:
    """A credit note's PDF in the customer's locale, as the customer receives it (the stored one)."""
    try:
        found = uuid.UUID(note_id)
        if context.viewer is None:
            raise InvoiceNotFound("not signed in", field="creditNoteId")
        pdf = await viewer_pdf(context.session, context.settings, context.viewer, CREDIT_NOTE, found, None)
    except (ValueError, InvoiceNotFound):
        return render(request, "not_found.html", {"what": "credit note"}, status_code=404)
    return pdf_response(pdf, download=False)


@router.post("/invoices/{reference}/link")
async def invoice_link(request: Request, context: ContextDep, reference: str) -> Response:
    """A signed link to the invoice's hosted page, shown on the invoice page to copy to the customer."""
    invoice = (await query(request, "ConsoleInvoice", invoice_reference(reference), context))["invoice"]
    if invoice is None:
        return render(request, "not_found.html", {"what": "invoice"}, status_code=404)
    form = await request.form()
    days = str(form.get("expires_in_days", "")).strip()
    variables: dict[str, Any] = {"invoiceId": invoice["id"]}
    if days:
        variables["expiresInDays"] = int(days) if days.isdigit() and len(days) < 10 else -1
    payload = (await query(request, "ConsoleCreateInvoiceLink", {"input": variables}, context))["createInvoiceLink"]
    link = None
    if payload["url"]:
        url = payload["url"]  # a path unless TALLY_PUBLIC_BASE_URL is set: then on the address staff use
        link = {"url": str(request.base_url).rstrip("/") + url if url.startswith("/") else url}
        link["expires_at"] = payload["expiresAt"]
    return await _invoice_page(
        request,
        context,
        invoice,
        link=link,
        link_days=days[:12],
        link_errors=field_errors(payload["userErrors"]),
        status_code=422 if payload["userErrors"] else 200,
    )
