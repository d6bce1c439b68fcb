"""GraphQL of customers' billing details: ``Customer.billingDetails`` and its history;
``updateCustomer``, whose payload names the customer, sits above the customer types in
:mod:`app.api.customer_updates`.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from app.api.common import page_size
from app.api.scope import STAFF_ONLY, staff_only
from customers.billing_detail_changes import (
    API_FIELDS,
    StoredDetails,
    history,
)
from customers.models import BillingDetailChange


@strawberry.enum(description="How tax applies to the customer's invoices.")
class TaxExemption(Enum):
    NONE = "none"
    EXEMPT = "exempt"
    REVERSE_CHARGE = "reverse_charge"


@strawberry.type(description="Where the customer's invoices are addressed.")
class Address:
    line1: str | None
    line2: str | None
    city: str | None
    postal_code: str | None
    region: str | None = strawberry.field(description="State or province, e.g. CA.")
    country: str | None = strawberry.field(description="ISO 3166-1 alpha-2, in capitals.")


@strawberry.type(description="What the customer's invoices, credit notes and emails say of them as buyer.")
class BillingDetails:
    name: str
    email: str | None
    legal_name: str | None
    address: Address
    tax_id: str | None = strawberry.field(
        description="Spaces removed, in capitals; an EU VAT number starts with its country's code (EL for GR)."
    )
    tax_exemption: TaxExemption
    invoice_emails: list[str] = strawberry.field(
        description="Where invoices are sent, as set (at most 10); empty: the customer's email."
    )
    recipients: list[str] = strawberry.field(
        description="Where invoices are sent now: invoiceEmails, else the customer's email."
    )
    locale: str = strawberry.field(description="The language of documents and emails: en, fr, de or es.")
    addressee: str = strawberry.field(description="The name documents are addressed to: the legal name, else the name.")

    @classmethod
    def of(cls, details: StoredDetails) -> BillingDetails:
        return cls(
            name=details.name,
            email=details.email,
            legal_name=details.legal_name,
            address=Address(
                line1=details.address_line1,
                line2=details.address_line2,
                city=details.city,
                postal_code=details.postal_code,
                region=details.region,
                country=details.country,
            ),
            tax_id=details.tax_id,
            tax_exemption=TaxExemption(details.tax_exemption),
            invoice_emails=list(details.invoice_emails),
            recipients=list(details.invoice_emails or ((details.email,) if details.email else ())),
            locale=details.locale,
            addressee=details.legal_name or details.name,
        )


def by_api_field(values: dict[str, Any]) -> JSON:
    return cast(JSON, {API_FIELDS[name]: value for name, value in values.items()})


@strawberry.type(description="One change of a customer's billing details: the fields that changed, before and after.")
class BillingDetailsChange:
    sequence: int | None = strawberry.field(
        description="The change's place in the customer's history (increasing); null for a dry run's."
    )
    changed_at: datetime
    fields: list[str] = strawberry.field(description="The fields that changed, named as in UpdateCustomerInput.")
    before: JSON = strawberry.field(description="Each changed field's value before, by its name in `fields`.")
    after: JSON = strawberry.field(description="Each changed field's value after, by its name in `fields`.")
    actor: str | None = staff_only("Who changed them. " + STAFF_ONLY)

    @classmethod
    def from_model(cls, row: BillingDetailChange) -> BillingDetailsChange:
        return cls(
            sequence=row.id,
            changed_at=row.changed_at,
            fields=[api for name, api in API_FIELDS.items() if name in row.after],  # JSONB keeps no order
            before=by_api_field(row.before),
            after=by_api_field(row.after),
            actor=row.actor,
        )


async def resolve_billing_details(root: strawberry.Parent[Any]) -> BillingDetails:
    return BillingDetails.of(root.details)


async def resolve_billing_details_history(
    root: strawberry.Parent[Any], info: Info, first: int | None = None
) -> list[BillingDetailsChange]:
    limit = page_size(first, default=50, maximum=200)
    return [
        BillingDetailsChange.from_model(row) for row in await history(info.context.session, root.row_id, limit=limit)
    ]
