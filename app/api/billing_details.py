"""GraphQL of customers' billing details: ``Customer.billingDetails``, its history, and
``updateCustomer`` (partial: only the fields given change; an explicit null clears an optional one).

Who may change them: staff who write customers (admin, finance, support) and a customer token,
for its own customer only (a self-serve billing page), but not its tax exemption: that decides
what tax the customer is charged, so staff set it. A viewer may not change them.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from app.api.common import UserError, page_size, run_mutation
from app.api.permissions import requires
from app.api.scope import STAFF_ONLY, customer_of, staff_only
from app.auth import Capability
from customers.billing_detail_changes import (
    API_FIELDS,
    UNSET,
    BillingDetailsPatch,
    StoredDetails,
    history,
    update_billing_details,
)
from customers.models import BillingDetailChange

if TYPE_CHECKING:
    from app.api.customers import Customer


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


def _by_api_field(values: dict[str, Any]) -> JSON:
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
            before=_by_api_field(row.before),
            after=_by_api_field(row.after),
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


@strawberry.input(description="Only the fields given change; an explicit null clears an optional one.")
class AddressInput:
    line1: str | None = strawberry.field(default=strawberry.UNSET, description="At most 200 characters.")
    line2: str | None = strawberry.field(default=strawberry.UNSET, description="At most 200 characters.")
    city: str | None = strawberry.field(default=strawberry.UNSET, description="At most 100 characters.")
    postal_code: str | None = strawberry.field(default=strawberry.UNSET, description="At most 20 characters.")
    region: str | None = strawberry.field(
        default=strawberry.UNSET, description="State or province; at most 100 characters."
    )
    country: str | None = strawberry.field(
        default=strawberry.UNSET, description="ISO 3166-1 alpha-2 (any case; kept in capitals), else UNKNOWN_COUNTRY."
    )


@strawberry.input(
    description="A change of a customer's name, email and billing details. Only the fields given change; an "
    "explicit null clears an optional one (address: null clears the whole address). Every refused field is a "
    "userError naming it (address.country, invoiceEmails[1]); nothing is written then. A change of nothing "
    "writes nothing, so a retry is harmless."
)
class UpdateCustomerInput:
    customer_id: strawberry.ID
    name: str | None = strawberry.field(default=strawberry.UNSET, description="Not empty; at most 200 characters.")
    email: str | None = strawberry.UNSET
    legal_name: str | None = strawberry.field(
        default=strawberry.UNSET, description="The registered name invoices are addressed to; at most 200 characters."
    )
    address: AddressInput | None = strawberry.UNSET
    tax_id: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="Spaces removed, kept in capitals. In an EU country it must start with the country's VAT code "
        "(EL for GR), else TAX_ID_COUNTRY_MISMATCH.",
    )
    tax_exemption: TaxExemption | None = strawberry.field(
        default=strawberry.UNSET, description="Staff only. REVERSE_CHARGE needs a tax id (TAX_ID_REQUIRED)."
    )
    invoice_emails: list[str] | None = strawberry.field(
        default=strawberry.UNSET,
        description="Where invoices are sent: at most 10, each checked, duplicates dropped; empty or null: the "
        "customer's email.",
    )
    locale: str | None = strawberry.field(
        default=strawberry.UNSET, description="en, fr, de or es, else UNKNOWN_LOCALE."
    )
    dry_run: bool = strawberry.field(
        default=False, description="Check and show what would change (change, billingDetails); write nothing."
    )

    def patch(self) -> BillingDetailsPatch:
        address: Any = self.address
        exemption: Any = self.tax_exemption
        values: dict[str, Any] = {
            "name": self.name,
            "email": self.email,
            "legal_name": self.legal_name,
            "tax_id": self.tax_id,
            "tax_exemption": exemption.value if isinstance(exemption, TaxExemption) else exemption,
            "invoice_emails": self.invoice_emails,
            "locale": self.locale,
        }
        parts = {
            "address_line1": "line1",
            "address_line2": "line2",
            "city": "city",
            "postal_code": "postal_code",
            "region": "region",
            "country": "country",
        }
        for name, part in parts.items():
            values[name] = address if address is None or address is strawberry.UNSET else getattr(address, part)
        return BillingDetailsPatch(
            **{name: UNSET if value is strawberry.UNSET else value for name, value in values.items()}
        )


@strawberry.type
class UpdateCustomerPayload:
    customer: Annotated[Customer, strawberry.lazy("app.api.customers")] | None
    billing_details: BillingDetails | None = strawberry.field(
        description="The billing details after the change (for a dry run, as they would be)."
    )
    change: BillingDetailsChange | None = strawberry.field(
        description="What changed (for a dry run, what would); null when the input changes nothing."
    )
    dry_run: bool
    user_errors: list[UserError]


@strawberry.type
class BillingDetailsMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.UPDATE_BILLING_DETAILS)],
        description="Change a customer's name, email or billing details (legal name, address, tax id, tax "
        "exemption, invoice emails, locale); each change is kept in billingDetailsHistory. A customer token changes "
        "its own customer's, except the tax exemption.",
    )
    async def update_customer(self, info: Info, input: UpdateCustomerInput) -> UpdateCustomerPayload:
        from app.api.customers import Customer

        context = info.context
        patch = input.patch()

        async def update() -> UpdateCustomerPayload:
            customer = await customer_of(info, input.customer_id)
            outcome = await update_billing_details(
                context.session,
                customer.id,
                patch,
                actor=context.viewer.actor,
                as_of=context.now(),
                dry_run=input.dry_run,
                may_set_tax_exemption=context.viewer.is_staff,
            )
            change = None
            if outcome.changed:
                change = BillingDetailsChange(
                    sequence=outcome.change.id if outcome.change else None,
                    changed_at=outcome.change.changed_at if outcome.change else context.now(),
                    fields=[API_FIELDS[name] for name in outcome.changed],
                    before=_by_api_field(outcome.before.as_json(outcome.changed)),
                    after=_by_api_field(outcome.after.as_json(outcome.changed)),
                    actor=context.viewer.actor,
                )
            # Built before the transaction ends: a dry run's rollback expires the customer's row.
            return UpdateCustomerPayload(
                customer=Customer.from_model(outcome.customer),
                billing_details=BillingDetails.of(outcome.after),
                change=change,
                dry_run=input.dry_run,
                user_errors=[],
            )

        payload, errors = await run_mutation(info, update, commit=not input.dry_run)
        return payload or UpdateCustomerPayload(
            customer=None, billing_details=None, change=None, dry_run=input.dry_run, user_errors=errors
        )
