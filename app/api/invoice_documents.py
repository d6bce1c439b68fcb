"""GraphQL of invoice documents: a signed link to an invoice's hosted page, for the customer."""

from __future__ import annotations

import uuid
from datetime import datetime

import strawberry
from strawberry.types import Info

from app.api.common import UserError, run_mutation
from app.api.permissions import requires
from app.auth import Capability
from app.invoice_documents import create_link, public_url
from billing.documents.links import InvoiceLink
from billing.documents.locales import check_locale
from billing.invoices import service as billing
from ledger.errors import NotFound

NO_SUCH_INVOICE = "no such invoice"


@strawberry.input
class CreateInvoiceLinkInput:
    invoice_id: strawberry.ID
    expires_in_days: int | None = strawberry.field(
        default=None, description="1 to 365; default TALLY_INVOICE_LINK_DAYS (30)."
    )
    locale: str | None = strawberry.field(
        default=None, description="en, fr, de or es; default the customer's locale as invoiced."
    )


@strawberry.type
class CreateInvoiceLinkPayload:
    url: str | None = strawberry.field(
        description="The hosted page, no sign-in needed: absolute when TALLY_PUBLIC_BASE_URL is set, else a path."
    )
    expires_at: datetime | None
    user_errors: list[UserError]


@strawberry.type
class InvoiceDocumentsMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.READ_INVOICES)],
        description="A signed, expiring link to the invoice's hosted page (its PDF and, when collection is on "
        "and something is due, a pay button). Anyone with the link can see the invoice until it expires.",
    )
    async def create_invoice_link(self, info: Info, input: CreateInvoiceLinkInput) -> CreateInvoiceLinkPayload:
        context = info.context

        async def create() -> InvoiceLink:
            if input.locale is not None:
                check_locale(input.locale)
            try:
                invoice_id = uuid.UUID(str(input.invoice_id))
            except ValueError:
                raise NotFound(NO_SUCH_INVOICE, field="invoiceId") from None
            found = (await billing.invoices_by_id(context.session, [invoice_id])).get(invoice_id)
            if found is None or not context.viewer.may_see(found.customer_id):
                raise NotFound(NO_SUCH_INVOICE, field="invoiceId")
            return create_link(context.settings, invoice_id, days=input.expires_in_days, as_of=context.now())

        link, errors = await run_mutation(info, create, commit=False)
        if link is None:
            return CreateInvoiceLinkPayload(url=None, expires_at=None, user_errors=errors)
        query = f"?locale={input.locale}" if input.locale else ""
        url = public_url(context.settings, f"/i/{link.token}{query}")
        return CreateInvoiceLinkPayload(url=url, expires_at=link.expires_at, user_errors=[])
