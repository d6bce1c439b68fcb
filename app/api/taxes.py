"""GraphQL of tax: the catalog's tax rates and the rates assigned to a customer."""

from __future__ import annotations

from decimal import Decimal

import strawberry
from strawberry.types import Info

from app.api.common import UserError, run_mutation
from app.api.permissions import requires
from app.api.scope import customer_of
from app.auth import Capability
from customers.tax_rates import assign_tax_rates
from ledger.money import plain_decimal
from pricing.models import TaxRate as TaxRateRow
from pricing.repository import current_tax_rates


@strawberry.type(description="A tax rate of the catalog, in its current version.")
class TaxRate:
    key: str
    name: str
    rate: Decimal = strawberry.field(description="A percent: 20 is 20 %.")
    inclusive: bool = strawberry.field(description="Inside the prices, or added on top of them.")
    country: str = strawberry.field(description="ISO 3166-1 alpha-2.")
    region: str | None = strawberry.field(description="A state or province; null: the whole country.")
    version: int = strawberry.field(description="A changed rate is a new version; issued invoices keep theirs.")

    @classmethod
    def from_model(cls, row: TaxRateRow) -> TaxRate:
        return cls(
            key=row.key,
            name=row.name,
            rate=plain_decimal(row.rate),
            inclusive=row.inclusive,
            country=row.country,
            region=row.region,
            version=row.version,
        )


@strawberry.input
class AssignTaxRatesInput:
    customer_id: strawberry.ID
    tax_rate_keys: list[str] = strawberry.field(
        description="The catalog's tax rate keys, in order; empty: back to the rates of the customer's address."
    )
    dry_run: bool = False


@strawberry.type
class AssignTaxRatesPayload:
    tax_rate_keys: list[str] | None
    user_errors: list[UserError]


@strawberry.type
class TaxesQuery:
    @strawberry.field(permission_classes=[requires(Capability.READ_CATALOG)])
    async def tax_rates(self, info: Info) -> list[TaxRate]:
        return [TaxRate.from_model(row) for row in await current_tax_rates(info.context.session)]


@strawberry.type
class TaxesMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.WRITE_CUSTOMERS)],
        description="Tax a customer at these rates instead of their address's (exempt and reverse-charge "
        "customers still pay none). Replaces the customer's assigned rates; a retry changes nothing.",
    )
    async def assign_tax_rates(self, info: Info, input: AssignTaxRatesInput) -> AssignTaxRatesPayload:
        async def act() -> list[str]:
            customer = await customer_of(info, input.customer_id)
            return await assign_tax_rates(
                info.context.session, customer.id, input.tax_rate_keys, as_of=info.context.now(), dry_run=input.dry_run
            )

        keys, errors = await run_mutation(info, act, commit=not input.dry_run)
        return AssignTaxRatesPayload(tax_rate_keys=keys, user_errors=errors)
