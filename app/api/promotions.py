"""GraphQL of promotions: create, list, redeem."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

import strawberry
from strawberry.types import Info

from app.api.common import Money, UserError, run_mutation
from app.api.ledger import CreditGrant, grant_limit_minor
from app.api.permissions import requires
from app.api.scope import customer_of, only_visible
from app.auth import Capability
from customers import credits
from customers import service as customers
from ledger import promotions
from ledger.errors import NotFound
from ledger.models import CreditGrant as GrantRow
from ledger.models import Promotion as PromotionRow
from ledger.money import normalize_currency, to_major, to_minor_exact


@strawberry.type
class Redemption:
    customer_id: strawberry.ID
    customer_external_id: str
    redeemed_at: datetime


@strawberry.type(description="A code customers redeem for credits.")
class Promotion:
    id: strawberry.ID = strawberry.field(description="Tally's id for the promotion.")
    code: str = strawberry.field(description="What customers type, e.g. WELCOME25; unique.")
    description: str
    credit: Money = strawberry.field(description="What each redemption grants.")
    credit_expires_in_days: int | None
    max_redemptions: int | None = strawberry.field(description="How many times it may be redeemed; null: no limit.")
    redemptions: int = strawberry.field(description="How many times it was redeemed.")
    expires_at: datetime | None = strawberry.field(description="After this it cannot be redeemed; null: never.")
    active: bool
    created_at: datetime
    row_id: strawberry.Private[uuid.UUID]

    @strawberry.field(description="Who redeemed it, newest first.")
    async def redeemed_by(self, info: Info) -> list[Redemption]:
        rows = await promotions.redemptions_of(info.context.session, [self.row_id])
        rows = only_visible(info.context.viewer, rows, lambda r: r.customer_id)
        found = await customers.customers_by_ids(info.context.session, [r.customer_id for r in rows])
        return [
            Redemption(
                customer_id=strawberry.ID(str(r.customer_id)),
                customer_external_id=found[r.customer_id].external_id if r.customer_id in found else "",
                redeemed_at=r.redeemed_at,
            )
            for r in rows
        ]

    @classmethod
    def from_model(cls, row: PromotionRow) -> Promotion:
        return cls(
            id=strawberry.ID(str(row.id)),
            code=row.code,
            description=row.description,
            credit=Money(amount=to_major(row.credit_amount, row.currency), currency=row.currency),
            credit_expires_in_days=row.credit_expires_in_days,
            max_redemptions=row.max_redemptions,
            redemptions=row.redemptions,
            expires_at=row.expires_at,
            active=row.active,
            created_at=row.created_at,
            row_id=row.id,
        )


@strawberry.input
class CreatePromotionInput:
    code: str = strawberry.field(description="Case-insensitive and unique.")
    description: str
    credit_amount: Decimal
    currency: str
    credit_expires_in_days: int | None = None
    max_redemptions: int | None = None
    expires_at: datetime | None = None


@strawberry.type(description="The promotion created, or why not.")
class CreatePromotionPayload:
    promotion: Promotion | None = strawberry.field(description="The new promotion; null when refused.")
    user_errors: list[UserError] = strawberry.field(description="Why it was refused; empty when it was created.")


@strawberry.input(description="Only the fields given change; null clears a limit. The code and the credit stay.")
class UpdatePromotionInput:
    promotion_id: strawberry.ID
    description: str | None = strawberry.UNSET
    credit_expires_in_days: int | None = strawberry.UNSET
    max_redemptions: int | None = strawberry.field(
        default=strawberry.UNSET, description="At least the redemptions already made; null: no limit."
    )
    expires_at: datetime | None = strawberry.UNSET
    active: bool | None = strawberry.field(
        default=strawberry.UNSET,
        description="false deactivates it: no new redemption; the credit already granted stays.",
    )

    def changes(self) -> promotions.PromotionChanges:
        def given(value: object) -> object:
            return promotions.KEEP if value is strawberry.UNSET else value

        return promotions.PromotionChanges(
            description=given(self.description),
            credit_expires_in_days=given(self.credit_expires_in_days),
            max_redemptions=given(self.max_redemptions),
            expires_at=given(self.expires_at),
            active=promotions.KEEP if self.active in (None, strawberry.UNSET) else self.active,
        )


@strawberry.type
class UpdatePromotionPayload:
    promotion: Promotion | None
    user_errors: list[UserError]


@strawberry.input
class RedeemPromotionInput:
    customer_id: strawberry.ID
    code: str
    idempotency_key: str


@strawberry.type(description="The credits a redemption granted, or why not.")
class RedeemPromotionPayload:
    grant: CreditGrant | None = strawberry.field(description="The grant it made; null when refused.")
    user_errors: list[UserError] = strawberry.field(description="Why it was refused; empty when it was redeemed.")


@strawberry.type
class PromotionsQuery:
    @strawberry.field(permission_classes=[requires(Capability.READ_PROMOTIONS)])
    async def promotions(self, info: Info) -> list[Promotion]:
        """Every promotion, newest first, with how often it was redeemed (staff: codes are secrets
        that customers are given, and redemptions name customers)."""
        return [Promotion.from_model(row) for row in await promotions.promotions(info.context.session)]


@strawberry.type
class PromotionsMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.MANAGE_PROMOTIONS)],
        description="Create a promotion code worth credits, with an optional redemption limit and expiry.",
    )
    async def create_promotion(self, info: Info, input: CreatePromotionInput) -> CreatePromotionPayload:
        context = info.context

        async def create() -> PromotionRow:
            currency = normalize_currency(input.currency)
            return await promotions.create_promotion(
                context.session,
                code=input.code,
                description=input.description,
                credit_amount=to_minor_exact(input.credit_amount, currency, field="creditAmount"),
                currency=currency,
                actor=context.viewer.actor,
                as_of=context.now(),
                credit_expires_in_days=input.credit_expires_in_days,
                max_redemptions=input.max_redemptions,
                expires_at=input.expires_at,
            )

        row, errors = await run_mutation(info, create)
        return CreatePromotionPayload(promotion=Promotion.from_model(row) if row else None, user_errors=errors)

    @strawberry.mutation(
        permission_classes=[requires(Capability.MANAGE_PROMOTIONS)],
        description="Edit a promotion's terms, or deactivate (or reactivate) it; each change is in the audit log.",
    )
    async def update_promotion(self, info: Info, input: UpdatePromotionInput) -> UpdatePromotionPayload:
        context = info.context

        async def update() -> Promotion:
            try:
                promotion_id = uuid.UUID(str(input.promotion_id))
            except ValueError:
                raise NotFound("no such promotion", field="promotionId") from None
            row = await promotions.update_promotion(
                context.session,
                promotion_id=promotion_id,
                changes=input.changes(),
                actor=context.viewer.actor,
                as_of=context.now(),
            )
            return Promotion.from_model(row)

        promotion, errors = await run_mutation(info, update)
        return UpdatePromotionPayload(promotion=promotion, user_errors=errors)

    @strawberry.mutation(
        permission_classes=[requires(Capability.REDEEM_PROMOTIONS)],
        description="Redeem a code for a customer: it grants the promotion's credits, once per customer.",
    )
    async def redeem_promotion(self, info: Info, input: RedeemPromotionInput) -> RedeemPromotionPayload:
        """Redeem a code for a customer: once per customer; a retry with the same key is harmless."""
        context = info.context

        async def redeem() -> GrantRow:
            customer = await customer_of(info, str(input.customer_id))
            return await credits.redeem_promotion(
                context.session,
                code=input.code,
                customer_id=customer.id,
                currency=customer.currency,
                actor=context.viewer.actor,
                idempotency_key=input.idempotency_key,
                as_of=context.now(),
                max_amount=grant_limit_minor(context, customer.currency),
            )

        grant, errors = await run_mutation(info, redeem)
        return RedeemPromotionPayload(grant=CreditGrant.from_model(grant) if grant else None, user_errors=errors)
