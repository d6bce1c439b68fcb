"""GraphQL of paid top-ups and auto-recharge: ``purchaseCredits`` (a customer buys credits, granted
when its invoice is paid), ``setCreditBalanceSettings`` (the low-balance threshold and
auto-recharge), and a customer's ``creditBalance`` and ``creditPurchases``. Staff and the
customer's own token may both buy and set them (``PURCHASE_CREDITS``): it is the customer's card
that pays."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import strawberry
from strawberry.types import Info

from app.api.billing import Invoice
from app.api.common import (
    Connection,
    Money,
    UserError,
    connection,
    decode_time_cursor,
    money,
    not_a_cursor,
    page_size,
    run_mutation,
    time_cursor,
)
from app.api.permissions import requires
from app.api.scope import customer_of
from app.auth import Capability
from app.telemetry import current_trace_id
from billing.credits import balance as credit_balance
from billing.credits import repository as topup_repository
from billing.credits import spend_authorizations, topups
from billing.invoices import service as billing
from billing.models import CreditBalanceSettings
from billing.models import CreditPurchase as PurchaseRow
from billing.models import Invoice as InvoiceRow
from ledger.service import balances


@strawberry.enum
class CreditPurchaseStatus(Enum):
    AWAITING_PAYMENT = "awaiting_payment"
    PAID = "paid"
    FAILED = "failed"


@strawberry.enum
class CreditPurchaseOrigin(Enum):
    REQUEST = "request"
    AUTO_RECHARGE = "auto_recharge"


@strawberry.type(description="Credits bought: invoiced at once, granted when the invoice is paid.")
class CreditPurchase:
    id: strawberry.ID
    amount: Money = strawberry.field(description="What the invoice bills and the credits granted once paid.")
    status: CreditPurchaseStatus
    origin: CreditPurchaseOrigin = strawberry.field(description="REQUEST (someone bought) or AUTO_RECHARGE.")
    priority: int = strawberry.field(description="Of the granted credits: lower is drawn first.")
    expires_in_days: int | None = strawberry.field(description="The credits expire this long after payment.")
    invoice: Invoice | None = strawberry.field(description="Its credit_purchase invoice (null for a dry run).")
    grant_id: strawberry.ID | None = strawberry.field(description="The credit grant, once paid.")
    failure: str | None = strawberry.field(description="Why it failed: nothing was granted.")
    created_at: datetime
    settled_at: datetime | None = strawberry.field(description="When it was paid or failed.")

    @classmethod
    def from_model(cls, row: PurchaseRow, invoice: InvoiceRow | None) -> CreditPurchase:
        return cls(
            id=strawberry.ID(str(row.id)),
            amount=money(row.amount, row.currency),
            status=CreditPurchaseStatus(row.status),
            origin=CreditPurchaseOrigin(row.origin),
            priority=row.priority,
            expires_in_days=row.expires_in_days,
            invoice=Invoice.from_model(invoice) if invoice else None,
            grant_id=strawberry.ID(str(row.grant_id)) if row.grant_id else None,
            failure=row.failure,
            created_at=row.created_at,
            settled_at=row.settled_at,
        )


@strawberry.type(description="Buys credits when the balance falls below a threshold, at most once in flight.")
class AutoRecharge:
    enabled: bool
    threshold: Money | None = strawberry.field(description="A recharge is bought when credits fall below it.")
    amount: Money | None = strawberry.field(description="What each recharge buys.")
    monthly_cap: Money | None = strawberry.field(description="The most recharges buy in a UTC calendar month.")
    priority: int = strawberry.field(description="Of the credits it grants.")
    expires_in_days: int | None = strawberry.field(description="The credits it grants expire this long after payment.")
    recharged_this_month: Money = strawberry.field(description="This month's recharges, failed ones left out.")


@strawberry.type(
    description="A customer's credit balance and what watches it. The credits.balance_low webhook event's data "
    "holds these fields (amounts in minor units)."
)
class CreditBalance:
    customer_id: strawberry.ID
    currency: str
    credits: Money = strawberry.field(description="The ledger's credits balance (Balance.credits).")
    low_balance_threshold: Money | None = strawberry.field(
        description="credits.balance_low fires once each time credits fall below it: its own, else the "
        "auto-recharge threshold while auto-recharge is enabled."
    )
    balance_low: bool = strawberry.field(description="Below the threshold, and told (re-armed once above it).")
    auto_recharge_enabled: bool
    as_of: datetime
    auto_recharge: AutoRecharge | None = strawberry.field(description="Null when never set.")
    spend_cap: Money | None = strawberry.field(
        default=None,
        description="The most a billing period may charge beyond the credits: `authorizeSpend` holds money within "
        "it (without a cap, within the credits). Null: no cap.",
    )


async def credit_balance_of(session: Any, customer_id: uuid.UUID, currency: str, *, as_of: datetime) -> CreditBalance:
    settings = await topup_repository.settings_of(session, customer_id)
    credits = (await balances(session, customer_id, currency)).credits
    if settings is None:
        return CreditBalance(
            customer_id=strawberry.ID(str(customer_id)),
            currency=currency,
            credits=money(credits, currency),
            low_balance_threshold=None,
            balance_low=False,
            auto_recharge_enabled=False,
            as_of=as_of,
            auto_recharge=None,
        )
    return _credit_balance(settings, credits, await _recharged(session, settings, as_of), as_of=as_of)


async def _recharged(session: Any, settings: CreditBalanceSettings, as_of: datetime) -> int:
    return await topup_repository.recharged_since(session, settings.customer_id, credit_balance.month_start(as_of))


def _money_or_none(amount: int | None, currency: str) -> Money | None:
    return money(amount, currency) if amount is not None else None


def _credit_balance(settings: CreditBalanceSettings, credits: int, recharged: int, *, as_of: datetime) -> CreditBalance:
    currency = settings.currency
    return CreditBalance(
        customer_id=strawberry.ID(str(settings.customer_id)),
        currency=currency,
        credits=money(credits, currency),
        low_balance_threshold=_money_or_none(credit_balance.alert_threshold(settings), currency),
        balance_low=settings.balance_low,
        auto_recharge_enabled=settings.recharge_enabled,
        as_of=as_of,
        auto_recharge=AutoRecharge(
            enabled=settings.recharge_enabled,
            threshold=_money_or_none(settings.recharge_threshold, currency),
            amount=_money_or_none(settings.recharge_amount, currency),
            monthly_cap=_money_or_none(settings.recharge_monthly_cap, currency),
            priority=settings.recharge_priority,
            expires_in_days=settings.recharge_expires_in_days,
            recharged_this_month=money(recharged, currency),
        ),
        spend_cap=_money_or_none(settings.spend_cap, currency),
    )


async def resolve_credit_balance(root: strawberry.Parent[Any], info: Info) -> CreditBalance:
    return await credit_balance_of(info.context.session, root.row_id, root.currency, as_of=info.context.now())


def _after(after: str | None) -> tuple[datetime, str] | None:
    position = decode_time_cursor(after)
    if position is not None:
        try:
            uuid.UUID(position[1])
        except ValueError:
            raise not_a_cursor() from None
    return position


async def resolve_credit_purchases(
    root: strawberry.Parent[Any],
    info: Info,
    origin: CreditPurchaseOrigin | None = None,
    first: int | None = None,
    after: str | None = None,
) -> Connection[CreditPurchase]:
    session = info.context.session
    limit = page_size(first, default=25, maximum=info.context.settings.page_size_max)
    rows = await topups.purchases(
        session, root.row_id, origin=origin.value if origin else None, after=_after(after), limit=limit + 1
    )
    invoices = await billing.invoices_by_id(session, [row.invoice_id for row in rows if row.invoice_id])
    return connection(
        rows,
        limit,
        lambda row: CreditPurchase.from_model(row, invoices.get(row.invoice_id) if row.invoice_id else None),
        lambda row: time_cursor(row.created_at, row.id),
    )


@strawberry.input
class PurchaseCreditsInput:
    customer_id: strawberry.ID
    amount: Decimal = strawberry.field(description="In major units; greater than 0, at most 999,999.99 (cents).")
    currency: str = strawberry.field(description="Must be the customer's currency.")
    idempotency_key: str = strawberry.field(description="At most 255 characters; the same key buys once.")
    priority: int | None = strawberry.field(default=None, description="Of the credits: lower is drawn first; 100.")
    expires_in_days: int | None = strawberry.field(
        default=None, description="The credits expire this many days after payment (1 to 3660); never by default."
    )
    dry_run: bool = strawberry.field(default=False, description="Check it and write nothing.")


@strawberry.type
class PurchaseCreditsPayload:
    purchase: CreditPurchase | None
    invoice: Invoice | None = strawberry.field(description="The invoice Stripe collects (null for a dry run).")
    user_errors: list[UserError]


@strawberry.input
class AutoRechargeInput:
    enabled: bool
    threshold: Decimal | None = strawberry.field(default=None, description="Required when enabled.")
    amount: Decimal | None = strawberry.field(default=None, description="Required when enabled.")
    monthly_cap: Decimal | None = strawberry.field(
        default=None, description="Required when enabled; at least one recharge."
    )
    priority: int | None = strawberry.field(default=None, description="Of the credits it grants; 100.")
    expires_in_days: int | None = strawberry.field(default=None, description="1 to 3660; never by default.")


@strawberry.input
class SetCreditBalanceSettingsInput:
    customer_id: strawberry.ID
    currency: str = strawberry.field(description="Must be the customer's currency.")
    low_balance_threshold: Decimal | None = strawberry.field(
        default=None, description="Fire credits.balance_low below it; null: the auto-recharge threshold."
    )
    auto_recharge: AutoRechargeInput | None = strawberry.field(default=None, description="Null: disabled.")


@strawberry.type
class SetCreditBalanceSettingsPayload:
    credit_balance: CreditBalance | None
    recharge: CreditPurchase | None = strawberry.field(description="An auto-recharge the new settings bought.")
    user_errors: list[UserError]


@strawberry.input
class SetSpendCapInput:
    customer_id: strawberry.ID
    currency: str = strawberry.field(description="Must be the customer's currency.")
    amount: Decimal | None = strawberry.field(description="In major units, above 0; null removes the cap.")


@strawberry.type
class SetSpendCapPayload:
    credit_balance: CreditBalance | None
    user_errors: list[UserError]


@strawberry.type
class TopUpsMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.PURCHASE_CREDITS)],
        description="Buy credits: an invoice collected like any other; the credits are granted when it is paid.",
    )
    async def purchase_credits(self, info: Info, input: PurchaseCreditsInput) -> PurchaseCreditsPayload:
        context = info.context

        async def buy() -> PurchaseCreditsPayload:
            customer = await customer_of(info, str(input.customer_id))
            outcome = await topups.purchase_credits(
                context.session,
                topups.PurchaseRequest(
                    customer_id=customer.id,
                    amount=input.amount,
                    currency=input.currency,
                    idempotency_key=input.idempotency_key,
                    actor=context.viewer.actor,
                    priority=input.priority,
                    expires_in_days=input.expires_in_days,
                ),
                as_of=context.now(),
                dry_run=input.dry_run,
                trace_id=current_trace_id(),
            )
            return PurchaseCreditsPayload(
                purchase=CreditPurchase.from_model(outcome.purchase, outcome.invoice),
                invoice=Invoice.from_model(outcome.invoice) if outcome.invoice else None,
                user_errors=[],
            )

        payload, errors = await run_mutation(info, buy, commit=not input.dry_run)
        return payload or PurchaseCreditsPayload(purchase=None, invoice=None, user_errors=errors)

    @strawberry.mutation(
        permission_classes=[requires(Capability.PURCHASE_CREDITS)],
        description="Set the customer's low-balance threshold and auto-recharge; the balance is checked at once.",
    )
    async def set_credit_balance_settings(
        self, info: Info, input: SetCreditBalanceSettingsInput
    ) -> SetCreditBalanceSettingsPayload:
        context = info.context
        recharge = input.auto_recharge or AutoRechargeInput(enabled=False)

        async def save() -> SetCreditBalanceSettingsPayload:
            customer = await customer_of(info, str(input.customer_id))
            _, check = await credit_balance.set_balance_settings(
                context.session,
                credit_balance.BalanceSettingsRequest(
                    customer_id=customer.id,
                    currency=input.currency,
                    actor=context.viewer.actor,
                    low_balance_threshold=input.low_balance_threshold,
                    recharge_enabled=recharge.enabled,
                    recharge_threshold=recharge.threshold,
                    recharge_amount=recharge.amount,
                    recharge_monthly_cap=recharge.monthly_cap,
                    recharge_priority=recharge.priority,
                    recharge_expires_in_days=recharge.expires_in_days,
                ),
                as_of=context.now(),
            )
            bought = None
            if check is not None and check.recharge is not None:
                row = check.recharge
                invoices = await billing.invoices_by_id(context.session, [row.invoice_id] if row.invoice_id else [])
                bought = CreditPurchase.from_model(row, invoices.get(row.invoice_id) if row.invoice_id else None)
            balance = await credit_balance_of(context.session, customer.id, customer.currency, as_of=context.now())
            return SetCreditBalanceSettingsPayload(credit_balance=balance, recharge=bought, user_errors=[])

        payload, errors = await run_mutation(info, save)
        return payload or SetCreditBalanceSettingsPayload(credit_balance=None, recharge=None, user_errors=errors)

    @strawberry.mutation(
        permission_classes=[requires(Capability.PURCHASE_CREDITS)],
        description="Set the most a billing period of the customer may charge beyond their credits (spend "
        "authorizations hold money within it); null removes it.",
    )
    async def set_spend_cap(self, info: Info, input: SetSpendCapInput) -> SetSpendCapPayload:
        context = info.context

        async def save() -> SetSpendCapPayload:
            customer = await customer_of(info, str(input.customer_id))
            await spend_authorizations.set_spend_cap(
                context.session,
                customer.id,
                input.currency,
                input.amount,
                actor=context.viewer.actor,
                as_of=context.now(),
            )
            balance = await credit_balance_of(context.session, customer.id, customer.currency, as_of=context.now())
            return SetSpendCapPayload(credit_balance=balance, user_errors=[])

        payload, errors = await run_mutation(info, save)
        return payload or SetSpendCapPayload(credit_balance=None, user_errors=errors)
