"""GraphQL of authorizations: hold a quantity of a meter against a customer's limit, or an amount
of money against their credits and spend cap, before using it (the same as
``POST /v1/customers/{id}/authorizations``), and the holds live now."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import strawberry
from strawberry.types import Info

from app.api.common import Money, UserError, money, run_mutation
from app.api.permissions import requires
from app.api.scope import customer_of
from app.auth import Capability
from app.billing_run import billing_window
from app.usage_ingest import ingest_limits
from billing.credits import spend_authorizations
from metering import authorizations
from metering.authorizations import DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS

LIVE_AUTHORIZATIONS_SHOWN = 100


@strawberry.type
class UsageAuthorization:
    id: strawberry.ID
    meter: str = strawberry.field(description="The meter's key.")
    quantity: Decimal
    allowed: bool = strawberry.field(
        description="Whether the quantity is held: a refusal is an answer (with what remains), not an error."
    )
    reason: str | None = strawberry.field(
        description="Why not allowed: LIMIT_REACHED (not enough remains), CUSTOMER_SUSPENDED, "
        "SUBSCRIPTION_CANCELED or SUBSCRIPTION_PAUSED; null when allowed."
    )
    used: Decimal = strawberry.field(description="Usage counted in the current period when this was answered.")
    limit: Decimal | None
    reserved: Decimal = strawberry.field(description="What live authorizations held then, this one included.")
    remaining: Decimal | None = strawberry.field(
        description="What was left to authorize after this one (limit - used - reserved); null without a limit."
    )
    idempotency_key: str
    ttl_seconds: int
    created_at: datetime
    expires_at: datetime = strawberry.field(description="The hold is released then unless an event settled it.")
    settled_at: datetime | None = strawberry.field(description="When a usage event naming it was ingested.")

    @classmethod
    def from_result(cls, found: authorizations.Authorization) -> UsageAuthorization:
        return cls(
            id=strawberry.ID(str(found.id)),
            meter=found.meter_key,
            quantity=found.quantity,
            allowed=found.allowed,
            reason=found.reason,
            used=found.used,
            limit=found.limit,
            reserved=found.reserved,
            remaining=found.remaining,
            idempotency_key=found.idempotency_key,
            ttl_seconds=found.ttl_seconds,
            created_at=found.created_at,
            expires_at=found.expires_at,
            settled_at=found.settled_at,
        )


@strawberry.input
class AuthorizeInput:
    customer_id: strawberry.ID
    meter: str
    quantity: Decimal = strawberry.field(description="Above 0, within the bounds of any usage quantity.")
    idempotency_key: str = strawberry.field(
        description="The same key with the same request returns the first answer and holds nothing more; with "
        "another meter, quantity or TTL, IDEMPOTENCY_KEY_REUSED."
    )
    ttl_seconds: int = strawberry.field(
        default=DEFAULT_TTL_SECONDS, description=f"How long the hold lasts unsettled: 1 to {MAX_TTL_SECONDS}."
    )


@strawberry.type
class AuthorizePayload:
    authorization: UsageAuthorization | None
    created: bool = strawberry.field(description="False when this is the answer already given to the key.")
    user_errors: list[UserError]


@strawberry.type(description="An amount of money held against a customer's credits and spend cap before it is spent.")
class SpendAuthorization:
    id: strawberry.ID
    amount: Money
    allowed: bool = strawberry.field(
        description="Whether the amount is held: a refusal is an answer (with what remains), not an error."
    )
    reason: str | None = strawberry.field(
        description="Why not allowed: INSUFFICIENT_CREDITS (no spend cap, and the credits do not cover it), "
        "SPEND_CAP_REACHED or CUSTOMER_SUSPENDED; null when allowed."
    )
    spent: Money = strawberry.field(
        description="What the period charged beyond the credits when this was answered (base fee and usage, "
        "before tax)."
    )
    credits_available: Money = strawberry.field(
        description="The credit balance less what the period's invoice would draw from it."
    )
    spend_cap: Money | None = strawberry.field(description="The customer's spend cap per period; null: none.")
    reserved: Money = strawberry.field(description="What live money holds held then, this one included.")
    remaining: Money = strawberry.field(
        description="What was left to authorize after this one: credits available + (spend cap - spent) - reserved."
    )
    idempotency_key: str
    ttl_seconds: int
    created_at: datetime
    expires_at: datetime = strawberry.field(description="The hold is released then unless an event settled it.")
    settled_at: datetime | None = strawberry.field(description="When a usage event naming it was ingested.")

    @classmethod
    def from_result(cls, found: spend_authorizations.SpendAuthorization) -> SpendAuthorization:
        currency = found.currency
        return cls(
            id=strawberry.ID(str(found.id)),
            amount=money(found.amount, currency),
            allowed=found.allowed,
            reason=found.reason,
            spent=money(found.spent, currency),
            credits_available=money(found.credits_available, currency),
            spend_cap=money(found.spend_cap, currency) if found.spend_cap is not None else None,
            reserved=money(found.reserved, currency),
            remaining=money(found.remaining, currency),
            idempotency_key=found.idempotency_key,
            ttl_seconds=found.ttl_seconds,
            created_at=found.created_at,
            expires_at=found.expires_at,
            settled_at=found.settled_at,
        )


@strawberry.input
class AuthorizeSpendInput:
    customer_id: strawberry.ID
    amount: Decimal = strawberry.field(description="In major units; above 0, no fraction of the minor unit.")
    currency: str = strawberry.field(description="Must be the customer's currency.")
    idempotency_key: str = strawberry.field(
        description="Shared with `authorize`: the same key with the same request returns the first answer; with "
        "another, IDEMPOTENCY_KEY_REUSED."
    )
    ttl_seconds: int = strawberry.field(
        default=DEFAULT_TTL_SECONDS, description=f"How long the hold lasts unsettled: 1 to {MAX_TTL_SECONDS}."
    )


@strawberry.type
class AuthorizeSpendPayload:
    authorization: SpendAuthorization | None
    created: bool = strawberry.field(description="False when this is the answer already given to the key.")
    user_errors: list[UserError]


@strawberry.type
class AuthorizationsMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.AUTHORIZE_USAGE)],
        description="Hold a quantity of a meter against the customer's limit before using it: allowed only when "
        "used + held + quantity stays within the limit, decided one caller at a time per customer and meter, so "
        "concurrent callers never pass it. Send the usage event with `authorization` set to the id to settle it; "
        "unsettled, it is released at `expiresAt`. For a quick look that holds nothing, read `Customer.entitlement`.",
    )
    async def authorize(self, info: Info, input: AuthorizeInput) -> AuthorizePayload:
        context = info.context
        limits = ingest_limits(context.settings)

        async def hold() -> authorizations.Authorized:
            customer = await customer_of(info, str(input.customer_id))
            request = authorizations.read_request(
                {
                    "meter": input.meter,
                    "quantity": input.quantity,
                    "idempotencyKey": input.idempotency_key,
                    "ttlSeconds": input.ttl_seconds,
                },
                limits,
            )
            async with authorizations.process_turn(customer.external_id, request.meter_key):
                return await authorizations.authorize(
                    context.session,
                    customer.external_id,
                    request,
                    as_of=context.now(),
                    may_see=context.viewer.may_see,
                )

        done, errors = await run_mutation(info, hold)
        if done is None:
            return AuthorizePayload(authorization=None, created=False, user_errors=errors)
        return AuthorizePayload(
            authorization=UsageAuthorization.from_result(done.authorization), created=done.created, user_errors=[]
        )

    @strawberry.mutation(
        permission_classes=[requires(Capability.AUTHORIZE_USAGE)],
        description="Hold an amount of money against the customer's credits (what the period's invoice leaves "
        "of them) and, when they have one, their spend cap: allowed only when every live money hold fits, decided "
        "one caller at a time per customer. Settled by the usage event naming it, or released at `expiresAt`.",
    )
    async def authorize_spend(self, info: Info, input: AuthorizeSpendInput) -> AuthorizeSpendPayload:
        context = info.context

        async def hold() -> spend_authorizations.SpendAuthorized:
            customer = await customer_of(info, str(input.customer_id))
            request = spend_authorizations.read_spend_request(
                {
                    "amount": input.amount,
                    "currency": input.currency,
                    "idempotencyKey": input.idempotency_key,
                    "ttlSeconds": input.ttl_seconds,
                }
            )
            return await spend_authorizations.authorize_spend(
                context.session, customer.id, request, as_of=context.now(), window=billing_window(context.settings)
            )

        done, errors = await run_mutation(info, hold)
        if done is None:
            return AuthorizeSpendPayload(authorization=None, created=False, user_errors=errors)
        return AuthorizeSpendPayload(
            authorization=SpendAuthorization.from_result(done.authorization), created=done.created, user_errors=[]
        )


async def resolve_live_spend_authorizations(root: strawberry.Parent[Any], info: Info) -> list[SpendAuthorization]:
    found = await spend_authorizations.live_spend(
        info.context.session, root.row_id, as_of=info.context.now(), limit=LIVE_AUTHORIZATIONS_SHOWN
    )
    return [SpendAuthorization.from_result(each) for each in found]


async def resolve_live_authorizations(root: strawberry.Parent[Any], info: Info) -> list[UsageAuthorization]:
    found = await authorizations.live(
        info.context.session, root.row_id, as_of=info.context.now(), limit=LIVE_AUTHORIZATIONS_SHOWN
    )
    return [UsageAuthorization.from_result(each) for each in found]
