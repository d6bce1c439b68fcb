"""GraphQL of coupons and the discounts they give customers: create, archive, list, apply,
remove. Applying and removing change the invoices to come: both answer the upcoming invoice as
it would be, and a dry run writes nothing."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import strawberry
from strawberry.types import Info

from app.api.billing import UpcomingInvoice
from app.api.common import Money, UserError, money, run_mutation
from app.api.permissions import requires
from app.api.scope import customer_of
from app.auth import Capability
from app.billing_run import billing_window
from billing.discounts import coupons
from billing.invoices import service as billing
from billing.models import Coupon as CouponRow
from billing.models import CustomerDiscount as DiscountRow
from customers.models import Customer as CustomerRow
from ledger.errors import NotFound


@strawberry.enum
class CouponDuration(Enum):
    ONCE = "once"
    REPEATING = "repeating"
    FOREVER = "forever"


@strawberry.type(description="A percentage or a fixed amount off a customer's invoices, given by its code.")
class Coupon:
    id: strawberry.ID
    code: str = strawberry.field(description="Unique, ignoring case.")
    name: str
    percent_off: Decimal | None = strawberry.field(description="More than 0, at most 100; or null with amountOff.")
    amount_off: Money | None = strawberry.field(description="Never more than the lines it applies to.")
    applies_to: list[str] = strawberry.field(
        description="Meter keys whose lines it discounts; empty: the whole invoice."
    )
    duration: CouponDuration
    duration_periods: int | None = strawberry.field(description="REPEATING: how many invoices it discounts.")
    max_redemptions: int | None
    redemptions: int = strawberry.field(description="Customers it was applied to.")
    redeem_by: datetime | None = strawberry.field(description="It cannot be applied from then on.")
    active: bool = strawberry.field(description="False once archived: no new customer, the discounts given run on.")
    created_at: datetime
    archived_at: datetime | None

    @classmethod
    def from_model(cls, row: CouponRow) -> Coupon:
        return cls(
            id=strawberry.ID(str(row.id)),
            code=row.code,
            name=row.name,
            percent_off=row.percent_off,
            amount_off=money(row.amount_off, row.currency) if row.amount_off and row.currency else None,
            applies_to=list(row.applies_to),
            duration=CouponDuration(row.duration),
            duration_periods=row.duration_periods,
            max_redemptions=row.max_redemptions,
            redemptions=row.redemptions,
            redeem_by=row.redeem_by,
            active=row.active,
            created_at=row.created_at,
            archived_at=row.archived_at,
        )


@strawberry.type(description="A coupon applied to a customer: the discount their invoices take.")
class Discount:
    id: strawberry.ID
    coupon: Coupon
    periods: int | None = strawberry.field(description="Invoices it discounts in all; null: forever.")
    periods_used: int = strawberry.field(description="Invoices it has discounted so far.")
    periods_left: int | None = strawberry.field(description="Invoices it will still discount; null: forever.")
    removed: bool
    applied_at: datetime

    @classmethod
    def from_model(cls, row: DiscountRow, coupon: CouponRow, periods_used: int) -> Discount:
        active = coupons.ActiveDiscount(row, coupon, periods_used)
        return cls(
            id=strawberry.ID(str(row.id)),
            coupon=Coupon.from_model(coupon),
            periods=row.periods,
            periods_used=periods_used,
            periods_left=0 if row.status == "removed" else active.periods_left,
            removed=row.status == "removed",
            applied_at=row.applied_at,
        )


async def resolve_discounts(root: strawberry.Parent[Any], info: Info) -> list[Discount]:
    found = await info.context.loaders.discounts.load(root.row_id)
    return [Discount.from_model(active.discount, active.coupon, active.periods_used) for active in found]


@strawberry.input
class CreateCouponInput:
    code: str = strawberry.field(description="3 to 64 letters, digits, '-' or '_'; unique, ignoring case.")
    name: str = strawberry.field(description="Printed on the invoice's discount line.")
    duration: CouponDuration
    percent_off: Decimal | None = strawberry.field(default=None, description="Give this or amountOff.")
    amount_off: Decimal | None = strawberry.field(default=None, description="In major units, with currency.")
    currency: str | None = None
    applies_to: list[str] = strawberry.field(
        default_factory=list, description="Meter keys; empty (the default) discounts the whole invoice."
    )
    duration_periods: int | None = strawberry.field(default=None, description="REPEATING only.")
    max_redemptions: int | None = None
    redeem_by: datetime | None = None


@strawberry.type
class CouponPayload:
    coupon: Coupon | None
    user_errors: list[UserError]


@strawberry.input
class ArchiveCouponInput:
    coupon_id: strawberry.ID


@strawberry.input
class ApplyCouponInput:
    customer_id: strawberry.ID
    code: str
    idempotency_key: str = strawberry.field(
        description="The same key with the same code returns the first discount; with another code, "
        "IDEMPOTENCY_KEY_REUSED."
    )
    dry_run: bool = strawberry.field(default=False, description="Answer the upcoming invoice; change nothing.")


@strawberry.input
class RemoveDiscountInput:
    customer_id: strawberry.ID
    discount_id: strawberry.ID
    dry_run: bool = strawberry.field(default=False, description="Answer the upcoming invoice; change nothing.")


@strawberry.type
class DiscountPayload:
    discount: Discount | None
    upcoming_invoice: UpcomingInvoice | None = strawberry.field(
        description="The customer's upcoming invoice with the change (null: they have no subscription)."
    )
    user_errors: list[UserError]


def _uuid(value: object, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound("no such id", field=field) from None


@strawberry.type
class CouponsQuery:
    @strawberry.field(permission_classes=[requires(Capability.READ_PROMOTIONS)])
    async def coupons(self, info: Info, include_archived: bool = True) -> list[Coupon]:
        """Every coupon, newest first, with how often it was applied (staff: codes are handed out)."""
        rows = await coupons.coupons(info.context.session, include_archived=include_archived)
        return [Coupon.from_model(row) for row in rows]


@strawberry.type
class CouponsMutation:
    @strawberry.mutation(permission_classes=[requires(Capability.MANAGE_PROMOTIONS)])
    async def create_coupon(self, info: Info, input: CreateCouponInput) -> CouponPayload:
        context = info.context

        async def create() -> Coupon:
            row = await coupons.create_coupon(
                context.session,
                coupons.NewCoupon(
                    code=input.code,
                    name=input.name,
                    duration=input.duration.value,
                    percent_off=input.percent_off,
                    amount_off=input.amount_off,
                    currency=input.currency,
                    applies_to=tuple(input.applies_to),
                    duration_periods=input.duration_periods,
                    max_redemptions=input.max_redemptions,
                    redeem_by=input.redeem_by,
                ),
                actor=context.viewer.actor,
                as_of=context.now(),
            )
            return Coupon.from_model(row)

        coupon, errors = await run_mutation(info, create)
        return CouponPayload(coupon=coupon, user_errors=errors)

    @strawberry.mutation(
        permission_classes=[requires(Capability.MANAGE_PROMOTIONS)],
        description="Stop a coupon being applied; the discounts it gave run on. Archiving twice changes nothing.",
    )
    async def archive_coupon(self, info: Info, input: ArchiveCouponInput) -> CouponPayload:
        context = info.context

        async def archive() -> Coupon:
            coupon_id = _uuid(input.coupon_id, "couponId")
            return Coupon.from_model(await coupons.archive_coupon(context.session, coupon_id, as_of=context.now()))

        coupon, errors = await run_mutation(info, archive)
        return CouponPayload(coupon=coupon, user_errors=errors)

    @strawberry.mutation(
        permission_classes=[requires(Capability.REDEEM_PROMOTIONS)],
        description="Give a customer a coupon's discount: once per customer and coupon, while it is active, "
        "before its redeemBy and under its maxRedemptions.",
    )
    async def apply_coupon(self, info: Info, input: ApplyCouponInput) -> DiscountPayload:
        context = info.context

        async def apply() -> DiscountPayload:
            customer = await customer_of(info, str(input.customer_id))
            row = await coupons.apply_coupon(
                context.session,
                customer_id=customer.id,
                currency=customer.currency,
                code=input.code,
                idempotency_key=input.idempotency_key,
                actor=context.viewer.actor,
                as_of=context.now(),
            )
            return await _payload(info, customer, row)

        payload, errors = await run_mutation(info, apply, commit=not input.dry_run)
        return payload or DiscountPayload(discount=None, upcoming_invoice=None, user_errors=errors)

    @strawberry.mutation(
        permission_classes=[requires(Capability.REDEEM_PROMOTIONS)],
        description="End a customer's discount: invoices issued from now on no longer take it. Removing twice "
        "changes nothing.",
    )
    async def remove_discount(self, info: Info, input: RemoveDiscountInput) -> DiscountPayload:
        context = info.context

        async def remove() -> DiscountPayload:
            customer = await customer_of(info, str(input.customer_id))
            row = await coupons.remove_discount(
                context.session,
                customer_id=customer.id,
                discount_id=_uuid(input.discount_id, "discountId"),
                actor=context.viewer.actor,
                as_of=context.now(),
            )
            return await _payload(info, customer, row)

        payload, errors = await run_mutation(info, remove, commit=not input.dry_run)
        return payload or DiscountPayload(discount=None, upcoming_invoice=None, user_errors=errors)


async def _payload(info: Info, customer: CustomerRow, row: DiscountRow) -> DiscountPayload:
    """Built inside the transaction: a dry run rolls back, which expires the rows."""
    context = info.context
    session = context.session
    coupon = await coupons.coupon_of(session, row.coupon_id)
    used = await coupons.periods_used(session, row.id)
    preview = await billing.upcoming_invoice(
        session, customer.id, as_of=context.now(), window=billing_window(context.settings)
    )
    return DiscountPayload(
        discount=Discount.from_model(row, coupon, used),
        upcoming_invoice=UpcomingInvoice.from_preview(preview) if preview else None,
        user_errors=[],
    )
