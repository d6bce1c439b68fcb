"""Usage charged in advance (seats) as invoices bill it (the arithmetic: :mod:`pricing.advance`).

- The invoice that bills a period's base fee in advance (the ``opening`` invoice, or the ``period``
  invoice closing the period before) bills each in-advance charge of the plan in effect at the
  period's start for the value its meter knew then, for the whole period (an ``advance`` line),
  under the same condition as the base fee: not in a trial, not while paused or canceled.
- The invoice closing the period bills what happened to that value inside it: each rise above
  what was billed, for the rest of the period (a ``top_up``), and the credits and charges of the
  pauses, unpauses, cancels and plan changes in it (``advance_proration`` lines), Stripe's default
  ``proration_behavior`` (``create_prorations``: prorations wait for the next invoice) rather
  than an invoice per added seat. That invoice does not rate the charge again in arrears.
- Each amount is a row of ``advance_charge_bills``, keyed by (customer, charge, period start,
  moment, kind) and written in the invoice's own transaction: a retried run never bills twice.
- The price is the one in effect at the period's start (a customer's price override set inside
  the period applies from the next one), as the base fee's is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.invoices import repository
from customers.calendar import schedule_of
from customers.lifecycle import ACTIVE, status_on
from customers.models import Subscription, SubscriptionPhase
from customers.periods import BillingPeriod
from customers.price_overrides import overrides_of
from customers.subscriptions import phase_parts, version_on
from ledger.money import plain_decimal
from metering.usage import LevelSource, level_source, levels
from pricing.advance import (
    ADVANCE,
    CHARGE,
    CREDIT,
    AdvanceAmount,
    AdvanceCharge,
    AdvancePhase,
    Reading,
    advance_amount,
    period_adjustments,
)
from pricing.models import Meter, PlanCharge
from pricing.overrides import OverrideTimeline, overridden_charge
from pricing.proration import Proration, share_of_full_period
from pricing.service import charge_terms, charges_of_version, plan_version

IN_ADVANCE = "in_advance"


def in_advance(charge: PlanCharge) -> bool:
    return charge.billed == IN_ADVANCE


@dataclass(frozen=True)
class AdvanceBill:
    """An amount to bill and key: which period it belongs to, and the amount itself."""

    period_start: datetime
    amount: AdvanceAmount


@dataclass(frozen=True)
class _Priced:
    charge: AdvanceCharge
    row: PlanCharge
    meter: Meter
    source: LevelSource


async def _advance_charges(
    session: AsyncSession, version_id: uuid.UUID, overrides: OverrideTimeline, moment: datetime
) -> list[_Priced]:
    """The version's in-advance charges at the prices in effect at ``moment``."""
    priced = []
    for row, meter in await charges_of_version(session, version_id):
        if not in_advance(row):
            continue
        paid = overridden_charge(row, overrides.in_effect(row.id, moment))
        source = level_source(meter, dict(row.where))
        priced.append(_Priced(AdvanceCharge(row.id, version_id, source.key, charge_terms(paid)), paid, meter, source))
    return priced


async def has_advance_charges(session: AsyncSession, phases: list[SubscriptionPhase]) -> bool:
    """Whether any plan version of the phases has an in-advance charge (cached: no query)."""
    for version_id in {phase.plan_version_id for phase in phases}:
        if any(in_advance(row) for row, _ in await charges_of_version(session, version_id)):
            return True
    return False


def _scale(period: BillingPeriod, proration: str) -> Decimal:
    return share_of_full_period(period.start, period.natural_end, period.full_start, period.full_end, proration)


def _fmt(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


async def bill_at_start(
    session: AsyncSession,
    customer_id: uuid.UUID,
    phases: list[SubscriptionPhase],
    period: BillingPeriod,
    overrides: OverrideTimeline,
) -> list[AdvanceBill]:
    """What the in-advance charges bill at the start of ``period``: nothing in a trial or when the
    period starts paused or canceled (as for the base fee), else each charge for the value its
    meter knew at the start (0 when it never read one), for the whole period or a stub's share."""
    if period.trial or status_on(phases, period.start) != ACTIVE:
        return []
    version_id = version_on(phases, period.start)
    priced = await _advance_charges(session, version_id, overrides, period.start)
    if not priced:
        return []
    known, _ = await levels(session, customer_id, [p.source for p in priced], period.start, period.start)
    scale = _scale(period, (await plan_version(session, version_id)).proration)
    return [
        AdvanceBill(
            period.start,
            advance_amount(p.charge, known.get(p.source.key, Decimal(0)), at=period.start, scale=scale),
        )
        for p in priced
    ]


async def bills_in_period(
    session: AsyncSession,
    subscription: Subscription,
    phases: list[SubscriptionPhase],
    period: BillingPeriod,
    overrides: OverrideTimeline,
) -> list[AdvanceBill]:
    """What the in-advance charges bill for ``period`` beyond its bill at the start, as of now:
    the rises read so far, pauses, cancels, plan changes.
    Against the bill at the start as it was keyed, or, before it is issued, as it will be."""
    if period.trial or not await has_advance_charges(session, phases):
        return []  # the plans' charges are cached: a subscription without any reads nothing more
    customer_id, start = subscription.customer_id, period.start
    parts = phase_parts(phases, start, period.end)
    priced_of: dict[uuid.UUID, list[_Priced]] = {}
    advance_phases = []
    for part in parts:
        if part.version_id not in priced_of:
            priced_of[part.version_id] = await _advance_charges(session, part.version_id, overrides, start)
        charges = tuple(p.charge for p in priced_of[part.version_id]) if part.status == ACTIVE else ()
        proration = (await plan_version(session, part.version_id)).proration
        advance_phases.append(AdvancePhase(part.start, charges, proration))
    if period.cut_short:
        advance_phases.append(AdvancePhase(period.end, (), advance_phases[-1].proration))
    if subscription.invoiced_through is not None and subscription.invoiced_through >= start:
        keyed = await repository.advance_billed(session, customer_id, start)
        for version_id in {version_id for version_id, _, _ in keyed} - priced_of.keys():
            priced_of[version_id] = await _advance_charges(session, version_id, overrides, start)
        by_id = {p.charge.charge_id: p.charge for priced in priced_of.values() for p in priced}
        billed = [(by_id[charge_id], quantity) for _, charge_id, quantity in keyed]
    else:
        billed = [
            (bill.amount.charge, bill.amount.quantity)
            for bill in await bill_at_start(session, customer_id, phases, period, overrides)
        ]
    if not billed and not any(phase.charges for phase in advance_phases):
        return []
    sources = [p.source for priced in priced_of.values() for p in priced]
    known, readings = await levels(session, customer_id, sources, start, period.end)
    convention = advance_phases[0].proration
    amounts = period_adjustments(
        billed=billed,
        phases=advance_phases,
        levels_at_start=known,
        readings=readings,
        period_start=start,
        period_end=period.natural_end,
        scale=_scale(period, convention),
    )
    return [AdvanceBill(start, amount) for amount in amounts]


@dataclass(frozen=True)
class AdvanceLine:
    """An amount as an invoice line shows it: its kind, words, quantity (the value billed, the
    rise, or the value credited, negative) and unit price (per-unit charges)."""

    kind: str
    description: str
    quantity: Decimal
    unit_price: Decimal | None
    meter_id: uuid.UUID
    where: dict[str, str]
    service_start: datetime
    service_end: datetime


async def line_of(session: AsyncSession, bill: AdvanceBill, period: BillingPeriod) -> AdvanceLine:
    """The words of an amount: what it bills, how many, at what price, for which share."""
    amount = bill.amount
    row, meter = next(
        (row, meter)
        for row, meter in await charges_of_version(session, amount.charge.version_id)
        if row.id == amount.charge.charge_id
    )
    where = dict(row.where)
    label = ", ".join(f"{key}={value}" for key, value in sorted(where.items()))
    name = f"{meter.name} ({label})" if label else meter.name
    unit, until = meter.unit, period.natural_end
    share = f"{plain_decimal(round(amount.share * 100, 4))}% of the period"
    quantity, previous = plain_decimal(amount.quantity), plain_decimal(amount.previous)
    terms = amount.charge.terms
    unit_price = plain_decimal(terms.unit_price) if terms.model == "per_unit" and terms.unit_price is not None else None
    price = f" × {unit_price}" if unit_price is not None else ""
    since = amount.at.strftime("%Y-%m-%d %H:%M UTC")
    kind, shown = "advance_proration", amount.quantity - amount.previous
    if amount.kind == ADVANCE:
        kind, shown = "advance", amount.quantity
        text = f"{name} in advance, {_fmt(bill.period_start)} to {_fmt(until)}: {quantity} {unit}{price}"
        if amount.share != 1:
            text += f" ({share}: part of {_fmt(period.full_start)} to {_fmt(period.full_end)})"
    elif amount.kind == CREDIT:
        shown = -amount.previous
        text = f"Unused {name} billed in advance: {previous} {unit}{price} from {since} to {_fmt(until)} ({share})"
    elif amount.kind == CHARGE:
        text = f"{name} in advance from {since} to {_fmt(until)}: {quantity} {unit}{price} ({share})"
    else:
        text = (
            f"{name} rose from {previous} to {quantity} {unit} on {since}: "
            f"{plain_decimal(amount.quantity - amount.previous)} more{price} for the rest of the period "
            f"to {_fmt(until)} ({share})"
        )
    return AdvanceLine(kind, text, plain_decimal(shown), unit_price, meter.id, where, amount.at, until)


def whole_period_amounts(
    row: PlanCharge,
    meter: Meter,
    known: dict[str, Decimal],
    readings: list[Reading],
    start: datetime,
    end: datetime,
    proration: str,
) -> list[Decimal]:
    """What an in-advance charge bills for a whole active period ``[start, end)`` (the pricing
    simulation's): its bill at the start, then a top-up for each rise, each amount exact."""
    source = level_source(meter, dict(row.where))
    charge = AdvanceCharge(row.id, row.plan_version_id, source.key, charge_terms(row))
    quantity = known.get(source.key, Decimal(0))
    first = advance_amount(charge, quantity, at=start, scale=Decimal(1))
    rest = period_adjustments(
        billed=[(charge, quantity)],
        phases=[AdvancePhase(start, (charge,), proration)],
        levels_at_start=known,
        readings=readings,
        period_start=start,
        period_end=end,
    )
    return [first.amount, *(amount.amount for amount in rest)]


async def seat_prorations(
    session: AsyncSession, subscription: Subscription, phases: list[SubscriptionPhase], start: datetime
) -> list[Proration]:
    """What a pause, unpause, cancel or plan change in the period starting at ``start`` does to
    its charges billed in advance, as the period's invoice will bill it: the unused rest of what
    was billed credited, the rest charged at the value then. For the request's answer and audit,
    beside the base fee's prorations (top-ups are the usage's, not the request's)."""
    if not await has_advance_charges(session, phases):
        return []
    period = (await schedule_of(session, subscription, phases)).period_containing(start)
    overrides = await overrides_of(session, subscription)
    prorations = []
    for bill in await bills_in_period(session, subscription, phases, period, overrides):
        if bill.amount.kind not in (CREDIT, CHARGE):
            continue
        shown = await line_of(session, bill, period)
        kind = "credit_unused" if bill.amount.kind == CREDIT else "charge_remaining"
        prorations.append(
            Proration(kind, shown.description, bill.amount.amount, bill.amount.at, bill.amount.charge.version_id)
        )
    return prorations
