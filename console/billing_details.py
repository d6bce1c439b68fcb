"""The console's Billing details page of a customer: what their invoices say of them (legal name,
address, tax id, tax exemption, invoice emails, locale), the history of changes, and, for roles
that may change them (admin, finance, support), a form whose review step shows each field before
and after (updateCustomer's dry run) before the change is confirmed. htmx swaps the review in;
without JavaScript the same forms post and the whole page comes back."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from app.api.context import TallyContext
from console.billing import refusal_status
from console.forms import field_errors
from console.pages import ContextDep, query, render

router = APIRouter(prefix="/console", include_in_schema=False)

ADDRESS_FIELDS = {"line1": "line1", "line2": "line2", "city": "city", "postal_code": "postalCode", "region": "region"}
FORM_FIELDS = (
    "name",
    "email",
    "legal_name",
    *ADDRESS_FIELDS,
    "country",
    "tax_id",
    "tax_exemption",
    "invoice_emails",
    "locale",
)
# The form's input beside which each of updateCustomer's fields shows its error.
INPUT_OF_FIELD = {
    "name": "name",
    "email": "email",
    "legalName": "legal_name",
    **{f"address.{api}": name for name, api in ADDRESS_FIELDS.items()},
    "address.country": "country",
    "taxId": "tax_id",
    "taxExemption": "tax_exemption",
    "invoiceEmails": "invoice_emails",
    "locale": "locale",
}
EXEMPTIONS = {"NONE": "None: the rates of their address", "EXEMPT": "Exempt", "REVERSE_CHARGE": "Reverse charge"}
LOCALES = {"en": "English", "fr": "Français", "de": "Deutsch", "es": "Español"}
INVOICE_EMAIL_POSITION = re.compile(r"^invoiceEmails\[(\d+)\]$")


def form_of(details: dict[str, Any]) -> dict[str, str]:
    """The form filled with the details as they stand."""
    address = details["address"]
    return {
        "name": details["name"],
        "email": details["email"] or "",
        "legal_name": details["legalName"] or "",
        **{name: address[api] or "" for name, api in ADDRESS_FIELDS.items()},
        "country": address["country"] or "",
        "tax_id": details["taxId"] or "",
        "tax_exemption": details["taxExemption"],
        "invoice_emails": "\n".join(details["invoiceEmails"]),
        "locale": details["locale"],
    }


async def submitted_form(request: Request) -> dict[str, str]:
    submitted = await request.form()
    return {name: str(submitted.get(name, "")).strip() for name in FORM_FIELDS}


def update_input(customer_id: str, form: dict[str, str], *, dry_run: bool) -> dict[str, Any]:
    """Every field of the form: an empty one clears it (the name refuses that), an unchanged one
    is no change. Invoice emails are one a line (or separated by commas)."""

    def optional(name: str) -> str | None:
        return form[name] or None

    return {
        "customerId": customer_id,
        "name": form["name"],
        "email": optional("email"),
        "legalName": optional("legal_name"),
        "address": {
            **{api: optional(name) for name, api in ADDRESS_FIELDS.items()},
            "country": optional("country"),
        },
        "taxId": optional("tax_id"),
        "taxExemption": form["tax_exemption"] if form["tax_exemption"] in EXEMPTIONS else "NONE",
        "invoiceEmails": [e.strip() for e in re.split(r"[\n,;]", form["invoice_emails"]) if e.strip()],
        "locale": form["locale"],
        "dryRun": dry_run,
    }


def errors_beside_inputs(user_errors: list[dict[str, Any]]) -> dict[str, str]:
    """Each refusal beside the input it is about; an invoice email's names its line."""
    errors: dict[str, str] = {}
    for field, message in field_errors(user_errors).items():
        position = INVOICE_EMAIL_POSITION.match(field)
        if position:
            line = f"line {int(position.group(1)) + 1}: {message}"
            errors["invoice_emails"] = f"{errors['invoice_emails']}; {line}" if "invoice_emails" in errors else line
        else:
            errors[INPUT_OF_FIELD.get(field, "form")] = message
    return errors


async def _page(
    request: Request,
    context: TallyContext,
    customer_id: str,
    *,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    review: dict[str, Any] | None = None,
    notice: str | None = None,
    editing: bool = False,
    status_code: int = 200,
) -> Response:
    customer = (await query(request, "ConsoleCustomerBillingDetails", {"id": customer_id}, context))["customer"]
    if customer is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    return render(
        request,
        "customer_billing_details.html",
        {
            "customer": customer,
            "details": customer["billingDetails"],
            "history": customer["billingDetailsHistory"],
            "form": form or form_of(customer["billingDetails"]),
            "errors": errors or {},
            "review": review,
            "notice": notice,
            "exemptions": EXEMPTIONS,
            "locales": LOCALES,
        },
        block="billing_editor" if editing else None,
        status_code=status_code,
    )


@router.get("/customers/{customer_id}/billing-details")
async def billing_details_page(
    request: Request, context: ContextDep, customer_id: str, notice: str | None = None
) -> Response:
    return await _page(request, context, customer_id, notice=notice)


@router.post("/customers/{customer_id}/billing-details/review")
async def review_billing_details(request: Request, context: ContextDep, customer_id: str) -> Response:
    """The dry run: each field that would change, before and after; confirming posts the same form."""
    form = await submitted_form(request)
    variables = {"input": update_input(customer_id, form, dry_run=True)}
    payload = (await query(request, "ConsoleUpdateCustomer", variables, context))["updateCustomer"]
    if payload["userErrors"]:
        errors = errors_beside_inputs(payload["userErrors"])
        return await _page(
            request, context, customer_id, form=form, errors=errors, editing=True, status_code=refusal_status(request)
        )
    return await _page(request, context, customer_id, form=form, review=payload, editing=True)


@router.post("/customers/{customer_id}/billing-details")
async def update_billing_details(request: Request, context: ContextDep, customer_id: str) -> Response:
    form = await submitted_form(request)
    variables = {"input": update_input(customer_id, form, dry_run=False)}
    payload = (await query(request, "ConsoleUpdateCustomer", variables, context))["updateCustomer"]
    if payload["userErrors"]:
        errors = errors_beside_inputs(payload["userErrors"])
        return await _page(request, context, customer_id, form=form, errors=errors, status_code=422)
    change = payload["change"]
    notice = f"Billing details changed: {', '.join(change['fields'])}" if change else "Nothing changed"
    return RedirectResponse(f"/console/customers/{customer_id}/billing-details?notice={notice}", status_code=303)
