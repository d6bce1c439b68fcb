"""``updateCustomer`` (partial: only the fields given change; an explicit null clears an optional
one). Its payload names the customer and its billing details, so it sits above
:mod:`app.api.customers` and :mod:`app.api.billing_details`, and neither imports the other back.

Who may change them: staff who write customers (admin, finance, support) and a customer token,
for its own customer only (a self-serve billing page), but not its tax exemption: that decides
what tax the customer is charged, so staff set it. A viewer may not change them.
"""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.types import Info

from app.api.billing_details import BillingDetails, BillingDetailsChange, TaxExemption, by_api_field
from app.api.common import UserError, run_mutation
from app.api.customers import Customer
from app.api.permissions import requires
from app.api.scope import customer_of
from app.auth import Capability
from customers.billing_detail_changes import API_FIELDS, UNSET, BillingDetailsPatch, update_billing_details


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
    customer: Customer | None
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
                    before=by_api_field(outcome.before.as_json(outcome.changed)),
                    after=by_api_field(outcome.after.as_json(outcome.changed)),
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
