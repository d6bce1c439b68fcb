"""Watching a customer's credit balance: the low-balance alert (``credits.balance_low``) and
auto-recharge (a top-up bought by Tally when the balance falls below a threshold).

What "balance" means: the ledger's credits balance in the customer's currency, the same figure as
``Customer.balance.credits`` (what is left of the grants). Credits are drawn when invoices are
issued, so the balance moves when an invoice is issued, a grant expires or is voided, credits are
granted (a top-up paid), or a balance is adjusted; it does not move with usage not invoiced yet
(that is ``Balance.unbilled``, shown beside it). A top-up awaiting payment is not in it.

When it is checked (:func:`check_balance`): right after a top-up is paid and after the settings
change, in that transaction; and for every watched customer each tick of the job runner, after
the billing run and the credit expiry (``app.credit_balances``), so after credits are consumed
and after grants expire or are voided.

Each check locks the customer's settings row, so checks of one customer run one at a time:

- The alert fires once per crossing: below the threshold with the alert armed, one event (keyed
  by the crossing's number) and the alert disarmed; at or above it, re-armed.
- Auto-recharge buys ``recharge_amount`` when the balance is below ``recharge_threshold``, unless
  an auto-recharge already awaits payment (at most one in flight: also a partial unique index, so
  even checks that do not lock cannot make two) or the month's recharges (UTC calendar month,
  failed ones left out) plus this one would pass ``recharge_monthly_cap``, or one failed less than
  a day ago (a declined card is not tried again every tick).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.credits import repository as topup_repository
from billing.credits import topups
from billing.models import CreditBalanceSettings, CreditPurchase
from billing.tracing import trace_id_of, tracer
from ledger.errors import InvalidInput
from ledger.money import to_major, to_minor_exact
from ledger.service import balances
from notifications.webhook_events import Event, emit

RECHARGE_ACTOR = "auto-recharge"
#: After a failed auto-recharge, how long until the next: a declined card is not tried every tick.
RETRY_AFTER_FAILURE = timedelta(days=1)


@dataclass(frozen=True)
class BalanceSettingsRequest:
    """Amounts in major units of ``currency`` (the customer's), as the caller wrote them."""

    customer_id: uuid.UUID
    currency: str
    actor: str
    low_balance_threshold: Decimal | None = None
    recharge_enabled: bool = False
    recharge_threshold: Decimal | None = None
    recharge_amount: Decimal | None = None
    recharge_monthly_cap: Decimal | None = None
    recharge_priority: int | None = None
    recharge_expires_in_days: int | None = None


def _threshold(value: Decimal | None, currency: str, field: str) -> int | None:
    if value is None:
        return None
    if not value.is_finite():
        raise InvalidInput("must be a finite amount", field=field)
    minor = to_minor_exact(value, currency, field=field)
    if minor < 0:
        raise InvalidInput("must not be negative", field=field)
    if minor > topups.MAX_PURCHASE:
        raise InvalidInput(f"must be at most {to_major(topups.MAX_PURCHASE, currency)}", field=field)
    return minor


async def set_balance_settings(
    session: AsyncSession, request: BalanceSettingsRequest, *, as_of: datetime
) -> tuple[CreditBalanceSettings, BalanceCheck | None]:
    """Replace the customer's low-balance threshold and auto-recharge (a setting, so a retry sets
    the same again), then check the balance against them at once (what the check did is
    returned). An enabled auto-recharge needs a threshold, an amount and a monthly cap of at least
    one recharge; a disabled one keeps its figures for the next time it is enabled."""
    customer = await topups.customer_in(session, request.customer_id, request.currency)
    currency = customer.currency
    low = _threshold(request.low_balance_threshold, currency, "lowBalanceThreshold")
    threshold = _threshold(request.recharge_threshold, currency, "rechargeThreshold")
    amount = cap = None
    if request.recharge_amount is not None:
        amount = topups.check_amount(request.recharge_amount, currency, field="rechargeAmount")
    if request.recharge_monthly_cap is not None:
        if not request.recharge_monthly_cap.is_finite():
            raise InvalidInput("must be a finite amount", field="rechargeMonthlyCap")
        cap = to_minor_exact(request.recharge_monthly_cap, currency, field="rechargeMonthlyCap")
        if cap <= 0:
            raise InvalidInput("must be greater than zero", field="rechargeMonthlyCap")
    if request.recharge_enabled:
        for value, field in ((threshold, "rechargeThreshold"), (amount, "rechargeAmount"), (cap, "rechargeMonthlyCap")):
            if value is None:
                raise InvalidInput("is required to enable auto-recharge", field=field)
    if amount is not None and cap is not None and cap < amount:
        raise InvalidInput("must be at least one recharge (rechargeAmount)", field="rechargeMonthlyCap")
    priority = topups.check_priority(request.recharge_priority, field="rechargePriority")
    validity = topups.check_validity(request.recharge_expires_in_days, field="rechargeExpiresInDays")
    await topup_repository.settings_of(session, customer.id, lock=True)  # one writer or check at a time
    saved = await topup_repository.save_settings(
        session,
        CreditBalanceSettings(
            customer_id=customer.id,
            currency=currency,
            low_balance_threshold=low,
            recharge_enabled=request.recharge_enabled,
            recharge_threshold=threshold,
            recharge_amount=amount,
            recharge_monthly_cap=cap,
            recharge_priority=priority,
            recharge_expires_in_days=validity,
            balance_low=False,
            balance_low_crossings=0,
            updated_by=request.actor,
            updated_at=as_of,
        ),
    )
    check = await check_balance(session, customer.id, as_of=as_of)
    return await topup_repository.settings_of(session, customer.id) or saved, check


def alert_threshold(settings: CreditBalanceSettings) -> int | None:
    """The low-balance threshold: its own, else the auto-recharge's while that is enabled."""
    if settings.low_balance_threshold is not None:
        return settings.low_balance_threshold
    return settings.recharge_threshold if settings.recharge_enabled else None


def month_start(as_of: datetime) -> datetime:
    moment = as_of.astimezone(UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class BalanceCheck:
    balance: int
    alerted: bool  # this check emitted credits.balance_low
    recharge: CreditPurchase | None  # the auto-recharge this check bought
    held_back: str | None  # why a recharge was due and not bought (in flight, the monthly cap)


async def check_balance(session: AsyncSession, customer_id: uuid.UUID, *, as_of: datetime) -> BalanceCheck | None:
    """Check the customer's balance against their settings (none: nothing to do, None) in the
    caller's transaction; see the module for what happens."""
    settings = await topup_repository.settings_of(session, customer_id, lock=True)
    if settings is None:
        return None
    balance = (await balances(session, customer_id, settings.currency)).credits
    alerted = await _alert(session, settings, balance, as_of=as_of)
    recharge, held_back = None, None
    if settings.recharge_enabled and settings.recharge_threshold is not None and balance < settings.recharge_threshold:
        recharge, held_back = await _recharge(session, settings, as_of=as_of)
    return BalanceCheck(balance, alerted, recharge, held_back)


async def _alert(session: AsyncSession, settings: CreditBalanceSettings, balance: int, *, as_of: datetime) -> bool:
    threshold = alert_threshold(settings)
    if threshold is None or (balance < threshold) == settings.balance_low:
        return False
    if balance >= threshold:  # back above: re-armed for the next crossing
        await topup_repository.set_alert_state(
            session, settings.customer_id, low=False, crossings=settings.balance_low_crossings
        )
        return False
    crossing = settings.balance_low_crossings + 1
    await topup_repository.set_alert_state(session, settings.customer_id, low=True, crossings=crossing)
    await emit(
        session,
        Event(
            key=f"credits.balance_low:{settings.customer_id}:{crossing}",
            type="credits.balance_low",
            resource_type="CreditBalance",
            resource_id=str(settings.customer_id),
            data=balance_data(settings, balance, low=True, as_of=as_of),
            customer_id=settings.customer_id,
        ),
        as_of=as_of,
    )
    return True


def balance_data(settings: CreditBalanceSettings, balance: int, *, low: bool, as_of: datetime) -> dict[str, object]:
    """The ``CreditBalance`` GraphQL type's fields, amounts in minor units (the event's ``data``)."""
    threshold = alert_threshold(settings)
    return {
        "customerId": str(settings.customer_id),
        "currency": settings.currency,
        "credits": balance,
        "lowBalanceThreshold": threshold,
        "balanceLow": low,
        "autoRechargeEnabled": settings.recharge_enabled,
        "spendCap": settings.spend_cap,
        "asOf": as_of.isoformat(),
    }


async def _recharge(
    session: AsyncSession, settings: CreditBalanceSettings, *, as_of: datetime
) -> tuple[CreditPurchase | None, str | None]:
    assert settings.recharge_amount is not None and settings.recharge_monthly_cap is not None
    customer_id = settings.customer_id
    recharged = await topup_repository.recharged_since(session, customer_id, month_start(as_of))
    in_flight = await topup_repository.recharge_in_flight(session, customer_id)
    if in_flight:
        return None, "an auto-recharge already awaits payment"
    failed_at = await topup_repository.last_recharge_failure(session, customer_id)
    if failed_at is not None and as_of < failed_at + RETRY_AFTER_FAILURE:
        next_try = failed_at + RETRY_AFTER_FAILURE
        return None, f"the last auto-recharge failed: the next is tried from {next_try:%Y-%m-%d %H:%M} UTC"
    if recharged + settings.recharge_amount > settings.recharge_monthly_cap:
        return None, (
            f"the monthly cap of {to_major(settings.recharge_monthly_cap, settings.currency)} {settings.currency} "
            f"would be passed ({to_major(recharged, settings.currency)} recharged this month)"
        )
    number = await topup_repository.recharge_count(session, customer_id) + 1
    with tracer.start_as_current_span(
        "billing.credits.auto_recharge", attributes={"tally.customer_id": str(customer_id)}
    ) as span:
        outcome = await _buy_recharge(
            session, settings, number, settings.recharge_amount, as_of=as_of, trace_id=trace_id_of(span)
        )
    return outcome.purchase, None


async def _buy_recharge(
    session: AsyncSession,
    settings: CreditBalanceSettings,
    number: int,
    amount: int,
    *,
    as_of: datetime,
    trace_id: str | None,
) -> topups.PurchaseOutcome:
    """The auto-recharge's purchase, its invoice carrying the recharge's own trace."""
    customer_id = settings.customer_id
    return await topups.purchase_credits(
        session,
        topups.PurchaseRequest(
            customer_id=customer_id,
            amount=to_major(amount, settings.currency),
            currency=settings.currency,
            idempotency_key=f"auto-recharge:{customer_id}:{number}",
            actor=RECHARGE_ACTOR,
            priority=settings.recharge_priority,
            expires_in_days=settings.recharge_expires_in_days,
        ),
        as_of=as_of,
        origin="auto_recharge",
        trace_id=trace_id,
    )


async def watched_customers(session: AsyncSession, *, after: uuid.UUID | None, limit: int) -> list[uuid.UUID]:
    """Customers with a low-balance threshold or an auto-recharge, in id order from ``after``."""
    return await topup_repository.watched_customers(session, after=after, limit=limit)
