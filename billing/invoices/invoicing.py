"""Invoices: composed from the plan's phases, the usage and the plan changes of a period, then
issued with their ledger transactions in the caller's database transaction.

What a ``period`` invoice for ``[start, end)`` holds (Stripe's model: fees in advance, usage in
arrears): the usage of the period, each part rated on the plan version of its phase, one line per
charge and dimensions; the base-fee prorations of the plan changes effective in the period (worked
out from its phases and the fee billed in advance, :mod:`billing.invoices.plan_changes`); late usage of
earlier periods (events that arrived after those periods were invoiced, rated on their own
period's versions, billed as the difference); and the base fee of the next period. An
``opening`` invoice bills the first period's base fee when the subscription starts.

Each line is rounded once (:func:`ledger.money.round_to_minor`) from its exact amount, which the
line keeps; the invoice total is the sum of the rounded lines. Credits are drawn through the
ledger's ``consume_credits``; a negative total (a downgrade's credit) becomes a credit grant.

A period invoice also holds the period's minimum spend true-up (:mod:`billing.invoices.minimum_spend`), and
any invoice the customer's pending one-off charges, each claimed by exactly that invoice. A
``one_off`` invoice bills one one-off charge at once, outside the billing periods.

Opening and period invoices end with a ``discount`` line for each of the customer's discounts
that takes something off them (:mod:`billing.discounts.coupons`), before any tax; issuing records which
period of each discount the invoice used.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from billing import emails
from billing.discounts import repository as coupon_repository
from billing.discounts.coupons import InvoiceDiscount, invoice_discounts
from billing.discounts.discounting import Discountable
from billing.invoices import charges_repository, repository
from billing.invoices.advance import (
    AdvanceBill,
    bill_at_start,
    bills_in_period,
    has_advance_charges,
    in_advance,
    line_of,
)
from billing.invoices.minimum_spend import TRUE_UP_DESCRIPTION, period_true_up
from billing.invoices.plan_changes import period_prorations
from billing.invoices.taxation import taxes_of
from billing.models import Invoice, OneOffCharge
from customers import repository as customers_repository
from customers.billing_details import billing_details_of
from customers.calendar import schedule_of
from customers.credits import grant_credits
from customers.lifecycle import ACTIVE, CANCELED, PAUSED, cancel_moment, status_on
from customers.models import Subscription, SubscriptionPhase
from customers.periods import BillingPeriod, BillingSchedule
from customers.price_overrides import overrides_of
from customers.subscriptions import PhasePart, phase_parts, version_on
from ledger.grants import consume_credits
from ledger.money import plain_decimal, round_to_minor
from ledger.service import Entry, post_entry
from metering.events import canonical_json, loads_exact
from metering.usage import ChargeEvents, MeterUsage, charge_event_values, rate_charge, usage
from pricing.models import Meter, PlanCharge
from pricing.overrides import NO_OVERRIDES, OverrideTimeline, overridden_charge
from pricing.proration import prorated_terms, share_of_full_period, share_of_period
from pricing.service import charge_terms, charges_of_version, plan_name_of_version, plan_version
from pricing.tax import TaxLine, allocate, exclusive_tax, inclusive_tax

SUBSCRIPTION_LINE_KINDS = ("base_fee", "proration")
# The revenue account each line kind is posted to; every other kind (usage, late usage, the
# minimum spend true-up, which stands for usage that fell short) is usage revenue.
# Discounts are contra-revenue: debited to ``discounts``, so revenue keeps its list price.
REVENUE_ACCOUNTS = {
    **dict.fromkeys(SUBSCRIPTION_LINE_KINDS, "subscription_revenue"),
    "one_off": "one_off_revenue",
    "discount": "discounts",
}


@dataclass(frozen=True)
class DraftLine:
    kind: str
    description: str
    amount_exact: Decimal
    service_start: datetime
    service_end: datetime
    plan_version_id: uuid.UUID | None = None
    plan_charge_id: uuid.UUID | None = None
    meter_id: uuid.UUID | None = None
    dimensions: dict[str, Any] = field(default_factory=dict)
    quantity: Decimal | None = None
    unit_price: Decimal | None = None
    # The rounded amount, when it is not the exact amount's own rounding: a line billing the rest
    # of a charge that interim invoices billed part of bills the rounded whole less what they
    # billed (net_of_billed), so the invoices of a period add up to the whole to the cent.
    rounded: int | None = None

    def amount(self, currency: str) -> int:
        return self.rounded if self.rounded is not None else round_to_minor(self.amount_exact, currency)


@dataclass(frozen=True)
class DraftInvoice:
    customer_id: uuid.UUID
    currency: str
    kind: str
    period_start: datetime
    period_end: datetime
    lines: list[DraftLine]
    # What was rated, so the next invoices can see late usage: (start, end, event count).
    rated: list[tuple[datetime, datetime, int]] = field(default_factory=list)
    # The pending one-off charges its lines bill: issuing the invoice claims them.
    one_off_charge_ids: tuple[uuid.UUID, ...] = ()
    # What makes it unique when not its (customer, kind, period start): a one-off charge's id.
    reference: str | None = None
    # How its ledger transactions name it; by default the period it closes.
    label: str | None = None
    # What its in-advance charges bill (seats): each keyed when the invoice is issued.
    advance_bills: tuple[AdvanceBill, ...] = ()
    # The subscription whose boundary it bills (None: an invoice outside the periods).
    subscription_id: uuid.UUID | None = None
    # The customer's discounts its ``discount`` lines take, each using one of its periods.
    discounts: tuple[InvoiceDiscount, ...] = ()
    # An interim invoice's number within its period (billing.invoices.threshold_invoicing), else None.
    interim_sequence: int | None = None

    @property
    def subtotal(self) -> int:
        return sum(line.amount(self.currency) for line in self.lines)


def amount_due(total: int, credits_applied: int) -> int:
    """What an invoice asks the customer to pay: its total less the credits drawn, never below
    zero (credits are drawn up to the total). The database checks the same of every invoice."""
    return max(total - credits_applied, 0)


def _fmt(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _dimension_label(dimensions: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(dimensions.items()))


def usage_lines(
    meter_usage: MeterUsage,
    charge: PlanCharge,
    version_id: uuid.UUID | None,
    *,
    share: Decimal,
    start: datetime,
    end: datetime,
    label: str = "",
    events: ChargeEvents | None = None,
) -> list[DraftLine]:
    """One line per dimensions the charge covers (one line for a meter without dimensions), or a
    single line when nothing was used but a minimum applies. Lines of zero are left out.
    ``events`` holds the event values of the charges rated event by event."""
    meter: Meter = meter_usage.meter
    terms = prorated_terms(charge_terms(charge), share)
    rated = rate_charge(meter_usage, charge, terms, (events or {}).get(charge.id))
    unit_price = (
        plain_decimal(charge.unit_price) if charge.model == "per_unit" and charge.unit_price is not None else None
    )
    common = {
        "kind": "usage",
        "service_start": start,
        "service_end": end,
        "plan_version_id": version_id,
        "plan_charge_id": charge.id,
        "meter_id": meter.id,
        "unit_price": unit_price,
    }
    name = f"{meter.name}{label}"
    if meter.group_by and rated.parts:
        lines = []
        for dimensions_text, quantity, amount in rated.parts:
            dimensions = loads_exact(dimensions_text)
            suffix = f" ({_dimension_label(dimensions)})" if dimensions else ""
            lines.append(
                DraftLine(
                    description=f"{name}{suffix}",
                    amount_exact=amount,
                    dimensions=dimensions,
                    quantity=plain_decimal(quantity),
                    **common,  # type: ignore[arg-type]
                )
            )
        return [line for line in lines if line.quantity or line.amount_exact]
    if not rated.quantity and not rated.amount:
        return []
    where = dict(charge.where)
    suffix = f" ({_dimension_label(where)})" if where else ""
    return [
        DraftLine(
            description=f"{name}{suffix}",
            amount_exact=rated.amount,
            dimensions=where,
            quantity=plain_decimal(rated.quantity),
            **common,  # type: ignore[arg-type]
        )
    ]


UsageReader = Callable[[AsyncSession, uuid.UUID, list[Meter], datetime, datetime], Awaitable[list[MeterUsage]]]
EventReader = Callable[
    [AsyncSession, uuid.UUID, list[tuple[PlanCharge, Meter]], datetime, datetime], Awaitable[ChargeEvents]
]


@dataclass(frozen=True)
class UsageTerms:
    """How a period's usage is rated: allowances and minimums are scaled by each part's share of
    the period's full calendar period (a stub, or a period a change of interval cut short, gets
    its share of them); a trial's usage is free when its plan says so."""

    full_start: datetime
    full_end: datetime
    free: bool = False


async def usage_terms(
    session: AsyncSession, subscription: Subscription, phases: list[SubscriptionPhase], start: datetime
) -> UsageTerms:
    """The usage terms of the period starting at ``start``."""
    return await _usage_terms_in(session, await schedule_of(session, subscription, phases), phases, start)


async def _usage_terms_in(
    session: AsyncSession, schedule: BillingSchedule, phases: list[SubscriptionPhase], start: datetime
) -> UsageTerms:
    period = schedule.period_containing(start)
    free = period.trial and (await plan_version(session, version_on(phases, start))).trial_usage == "free"
    return UsageTerms(period.full_start, period.full_end, free)


async def rated_usage(
    session: AsyncSession,
    customer_id: uuid.UUID,
    phases: list[SubscriptionPhase],
    start: datetime,
    end: datetime,
    *,
    read_usage: UsageReader = usage,
    read_events: EventReader = charge_event_values,
    overrides: OverrideTimeline = NO_OVERRIDES,
    terms: UsageTerms | None = None,
    charge_minimums: bool = True,
) -> list[DraftLine]:
    """The usage of ``[start, end)``, each phase's part on its own plan version, allowances and
    minimums scaled by the part's share of the period (of its full period, with ``terms``), in the
    version's proration convention. A free trial's usage is not rated at all. ``read_usage`` is
    the rollups' reading and ``read_events`` the events of charges rated event by event; the
    invoice accuracy check passes readers of the raw events received by its issue. A charge with
    a customer's price ``overrides`` is rated on the price in effect in each segment of its part,
    as a plan change splits usage (its usage is read again for each segment: only such charges
    pay it). Without ``charge_minimums`` the charges' minimums are left out: an interim invoice
    bills the usage so far, and a minimum is owed only by the whole period."""
    if terms is not None and terms.free:
        return []
    full_start, full_end = (terms.full_start, terms.full_end) if terms is not None else (start, end)
    parts = phase_parts(phases, start, end)
    lines: list[DraftLine] = []
    for part in parts:
        part_start, part_end, version_id = part.start, part.end, part.version_id
        if not await _bills_usage(session, part):
            continue
        # In-advance charges are billed at the period's start and topped up (billing.invoices.advance).
        charges = [(c, meter) for c, meter in await charges_of_version(session, version_id) if not in_advance(c)]
        meters = list({meter.id: meter for _, meter in charges}.values())
        usages = {u.meter.id: u for u in await read_usage(session, customer_id, meters, part_start, part_end)}
        events = await read_events(session, customer_id, charges, part_start, part_end)
        version = await plan_version(session, version_id)
        for charge, meter in charges:
            segments = overrides.segments(charge.id, part_start, part_end)
            for segment_start, segment_end, price in segments:
                meter_usage, segment_events = usages[meter.id], events
                if len(segments) > 1:
                    [meter_usage] = await read_usage(session, customer_id, [meter], segment_start, segment_end)
                    segment_events = await read_events(
                        session, customer_id, [(charge, meter)], segment_start, segment_end
                    )
                label = f" from {_fmt(segment_start)} to {_fmt(segment_end)}" if len(parts) + len(segments) > 2 else ""
                priced = overridden_charge(charge, price)
                if not charge_minimums and priced.minimum is not None:
                    priced = PlanCharge(**(priced.model_dump() | {"minimum": None}))
                lines += usage_lines(
                    meter_usage,
                    priced,
                    version_id,
                    share=share_of_period(segment_start, segment_end, full_start, full_end, version.proration),
                    start=segment_start,
                    end=segment_end,
                    label=label,
                    events=segment_events,
                )
    return lines


async def _bills_usage(session: AsyncSession, part: PhasePart) -> bool:
    """A canceled part bills nothing; a paused one its usage unless its version refuses usage
    while paused (``paused_usage = "refuse"``: its events were refused at ingestion, and any
    that arrived before the pause was recorded are not billed either)."""
    if part.status == CANCELED:
        return False
    return part.status != PAUSED or (await plan_version(session, part.version_id)).paused_usage != "refuse"


async def _event_types(session: AsyncSession, phases: list[SubscriptionPhase]) -> list[str]:
    types: set[str] = set()
    for version_id in {phase.plan_version_id for phase in phases}:
        types |= {meter.event_type for _, meter in await charges_of_version(session, version_id)}
    return sorted(types)


async def _base_fee_line(
    session: AsyncSession,
    subscription: Subscription,
    phases: list[SubscriptionPhase],
    schedule: BillingSchedule,
    period_start: datetime,
) -> list[DraftLine]:
    """The base fee of the period starting at ``period_start``, billed in advance: none for a
    trial, or for a period that starts paused (an unpause charges the rest of it) or canceled; a
    stub's share of the fee for a stub. The fee is for the period as its calendar has it; a later
    change of interval that cuts it short credits the rest."""
    period = schedule.period_containing(period_start)
    if period.trial or status_on(phases, period_start) != ACTIVE:
        return []
    version_id = version_on(phases, period_start)
    version = await plan_version(session, version_id)
    if not version.base_fee:
        return []
    start, end = period.start, period.natural_end
    plan_name = await plan_name_of_version(session, version_id)
    share = share_of_full_period(start, end, period.full_start, period.full_end, version.proration)
    if share == 1:
        description, quantity = f"{plan_name} base fee, {_fmt(start)} to {_fmt(end)}", Decimal(1)
    else:
        description = (
            f"{plan_name} base fee, {_fmt(start)} to {_fmt(end)} "
            f"(prorated: part of {_fmt(period.full_start)} to {_fmt(period.full_end)})"
        )
        quantity = plain_decimal(round(share, 12))
    return [
        DraftLine(
            kind="base_fee",
            description=description,
            amount_exact=version.base_fee * share,
            service_start=start,
            service_end=end,
            plan_version_id=version_id,
            quantity=quantity,
            unit_price=plain_decimal(version.base_fee),
        )
    ]


async def _advance_lines(session: AsyncSession, bills: list[AdvanceBill], period: BillingPeriod) -> list[DraftLine]:
    """The invoice lines of in-advance charges' amounts (:mod:`billing.invoices.advance`)."""
    lines = []
    for bill in bills:
        shown = await line_of(session, bill, period)
        lines.append(
            DraftLine(
                kind=shown.kind,
                description=shown.description,
                amount_exact=bill.amount.amount,
                service_start=shown.service_start,
                service_end=shown.service_end,
                plan_version_id=bill.amount.charge.version_id,
                plan_charge_id=bill.amount.charge.charge_id,
                meter_id=shown.meter_id,
                dimensions=shown.where,
                quantity=shown.quantity,
                unit_price=shown.unit_price,
            )
        )
    return lines


async def compose_opening(
    session: AsyncSession, subscription: Subscription, phases: list[SubscriptionPhase], currency: str
) -> DraftInvoice:
    schedule = await schedule_of(session, subscription, phases)
    period = schedule.period_containing(subscription.started_at)
    lines = await _base_fee_line(session, subscription, phases, schedule, subscription.started_at)
    # Prices of charges billed in advance; a plan without any reads no override.
    overrides = NO_OVERRIDES
    if await has_advance_charges(session, phases):
        overrides = await overrides_of(session, subscription)
    advance = await bill_at_start(session, subscription.customer_id, phases, period, overrides)
    lines += await _advance_lines(session, advance, period)
    charges = await charges_repository.pending_one_off_charges(
        session, subscription.customer_id, subscription.id, lock=True
    )
    lines += [one_off_line(charge) for charge in charges]
    lines, discounts = await _discounted(session, subscription.customer_id, currency, lines, period, lock=True)
    return DraftInvoice(
        subscription.customer_id,
        currency,
        "opening",
        period.start,
        period.end,
        lines,
        one_off_charge_ids=tuple(charge.id for charge in charges),
        advance_bills=tuple(advance),
        subscription_id=subscription.id,
        discounts=discounts,
    )


async def _discounted(
    session: AsyncSession,
    customer_id: uuid.UUID,
    currency: str,
    lines: list[DraftLine],
    period: BillingPeriod,
    *,
    lock: bool,
) -> tuple[list[DraftLine], tuple[InvoiceDiscount, ...]]:
    """The lines and, after them, a ``discount`` line for each of the customer's discounts that
    takes something off them (:mod:`billing.discounts.coupons`), before any tax. A discount line's service
    time is the invoice's period."""
    discountable = [Discountable(line.amount(currency), line.meter_id) for line in lines]
    found = await invoice_discounts(session, customer_id, currency, discountable, lock=lock)
    discount_lines = [
        DraftLine(
            kind="discount",
            description=discount.taken.description,
            amount_exact=discount.taken.line_amount_exact(),
            service_start=period.start,
            service_end=period.end,
        )
        for discount in found
    ]
    return [*lines, *discount_lines], tuple(found)


def one_off_line(charge: OneOffCharge) -> DraftLine:
    """A one-off charge as an invoice line; its service time is the moment it was charged."""
    return DraftLine(
        kind="one_off",
        description=charge.description,
        amount_exact=charge.amount_exact,
        service_start=charge.created_at,
        service_end=charge.created_at,
        quantity=plain_decimal(charge.quantity),
        unit_price=plain_decimal(charge.unit_price),
    )


async def compose_period(
    session: AsyncSession,
    subscription: Subscription,
    phases: list[SubscriptionPhase],
    currency: str,
    start: datetime,
    end: datetime,
    *,
    late_since: datetime | None,
    count_events: bool = True,
    overrides: OverrideTimeline | None = None,
) -> DraftInvoice:
    """The invoice closing ``[start, end)``. With ``late_since``, earlier periods that ended after
    it are checked for late usage. Events are counted before usage is read, so an event that
    commits in between is seen as late by the next invoice rather than missed. The customer's
    price ``overrides`` are read unless given (a dry run passes the overrides it tries)."""
    customer_id = subscription.customer_id
    if overrides is None:
        overrides = await overrides_of(session, subscription)
    schedule = await schedule_of(session, subscription, phases)
    period = schedule.period_containing(start)
    event_types = await _event_types(session, phases)
    rated = []
    if count_events:
        rated.append((start, end, await repository.event_count(session, customer_id, event_types, start, end)))
    late_lines: list[DraftLine] = []
    if late_since is not None:
        for rated_period in await repository.rated_periods_since(session, subscription.id, late_since):
            if rated_period.period_start >= start:
                continue
            count = await repository.event_count(
                session, customer_id, event_types, rated_period.period_start, rated_period.period_end
            )
            if count > rated_period.event_count:
                late_lines += await _late_usage(
                    session,
                    subscription,
                    phases,
                    schedule,
                    rated_period.period_start,
                    rated_period.period_end,
                    overrides,
                )
                rated.append((rated_period.period_start, rated_period.period_end, count))
    terms = await _usage_terms_in(session, schedule, phases, start)
    lines = await rated_usage(session, customer_id, phases, start, end, overrides=overrides, terms=terms)
    # Interim invoices (billing.invoices.threshold_invoicing) billed part of the usage: the period bills the rest.
    interim = await repository.interim_billed(session, subscription, start)
    lines = net_of_billed(lines, interim, currency, note=INTERIM_NOTE)
    interim_usage = [("usage", billed.amount_exact) for billed in interim.values()]
    # Prorations come from immediate changes and lifecycle events (each starts a phase) and from a
    # change of interval cutting the period short: none of them, no query.
    if period.cut_short or any(
        start <= phase.starts_at < end and (phase.plan_change_id or phase.lifecycle_event_id) for phase in phases
    ):
        lines += [
            DraftLine(
                kind="proration",
                description=proration.description,
                amount_exact=proration.amount,
                service_start=proration.starts_at or start,
                service_end=end,
                plan_version_id=proration.plan_version_id,
            )
            for proration in await period_prorations(session, subscription, phases, start, end, period=period)
        ]
    advance = await bills_in_period(session, subscription, phases, period, overrides)
    lines += await _advance_lines(session, advance, period)
    shortfall = await period_true_up(
        session,
        subscription,
        phases,
        period,
        end,
        [*((line.kind, line.amount_exact) for line in lines), *interim_usage],
    )
    if round_to_minor(shortfall, currency):  # a shortfall within the ratios' last digits bills nothing
        lines.append(
            DraftLine(
                kind="minimum_spend",
                description=TRUE_UP_DESCRIPTION,
                amount_exact=shortfall,
                service_start=start,
                service_end=end,
            )
        )
    lines += late_lines
    # Issuing locks the pending charges it bills (a cancel waits); a preview only reads them.
    charges = await charges_repository.pending_one_off_charges(session, customer_id, subscription.id, lock=count_events)
    lines += [one_off_line(charge) for charge in charges]
    lines += await _base_fee_line(session, subscription, phases, schedule, end)
    following = schedule.period_containing(end)
    in_advance_next = await bill_at_start(session, customer_id, phases, following, overrides)
    lines += await _advance_lines(session, in_advance_next, following)
    lines, discounts = await _discounted(session, customer_id, currency, lines, period, lock=count_events)
    return DraftInvoice(
        customer_id,
        currency,
        "period",
        start,
        end,
        lines,
        rated,
        one_off_charge_ids=tuple(c.id for c in charges),
        advance_bills=(*advance, *in_advance_next),
        subscription_id=subscription.id,
        discounts=discounts,
    )


async def _late_usage(
    session: AsyncSession,
    subscription: Subscription,
    phases: list[SubscriptionPhase],
    schedule: BillingSchedule,
    start: datetime,
    end: datetime,
    overrides: OverrideTimeline,
) -> list[DraftLine]:
    """Re-rate an invoiced period on its own versions and prices and bill what changed since it
    was billed, part by part (a charge split by a price override has a part for each price)."""
    billed = {
        (charge_id, canonical_json(loads_exact(dimensions)), service_start): totals
        for (charge_id, dimensions, service_start), totals in (
            await repository.billed_usage(session, subscription, start, end)
        ).items()
    }
    late = []
    terms = await _usage_terms_in(session, schedule, phases, start)
    for line in await rated_usage(
        session, subscription.customer_id, phases, start, end, overrides=overrides, terms=terms
    ):
        key = (line.plan_charge_id, canonical_json(line.dimensions), line.service_start)
        billed_quantity, billed_amount = billed.get(key, (0, 0))
        quantity = (line.quantity or Decimal(0)) - billed_quantity
        amount = line.amount_exact - billed_amount
        if quantity or amount:
            late.append(
                DraftLine(
                    kind="late_usage",
                    description=f"Late usage for {_fmt(start)} to {_fmt(end)}: {line.description}",
                    amount_exact=amount,
                    service_start=line.service_start,
                    service_end=line.service_end,
                    plan_version_id=line.plan_version_id,
                    plan_charge_id=line.plan_charge_id,
                    meter_id=line.meter_id,
                    dimensions=line.dimensions,
                    quantity=plain_decimal(quantity),
                    unit_price=line.unit_price,
                )
            )
    return late


INTERIM_NOTE = ", less interim invoices"


def net_of_billed(
    lines: list[DraftLine], billed: dict[repository.LineKey, repository.BilledUsage], currency: str, *, note: str
) -> list[DraftLine]:
    """The usage ``lines`` (each rated on the cumulative usage of its part of the period) less
    what was ``billed`` of the same charge, dimensions and part already: the difference of the
    quantities, of the exact amounts, and of the rounded amounts, so tiers, allowances and
    packages apply to the cumulative quantity once and the invoices of a period add up, to the
    cent, to what one invoice of the whole would charge. A line whose usage was billed in full
    is left out; a billed line no longer rated (usage that went back to nothing) is reversed.
    ``note`` is appended to the description of each line netted."""
    if not billed:
        return lines
    remaining = dict(billed)
    netted = []
    for line in lines:
        before = remaining.pop((line.plan_charge_id, canonical_json(line.dimensions), line.service_start), None)
        if before is None:
            netted.append(line)
            continue
        quantity = (line.quantity or Decimal(0)) - before.quantity
        amount_exact = line.amount_exact - before.amount_exact
        rounded = line.amount(currency) - before.amount
        if quantity or amount_exact or rounded:
            netted.append(
                replace(
                    line,
                    description=f"{line.description}{note}",
                    quantity=plain_decimal(quantity),
                    amount_exact=amount_exact,
                    rounded=rounded,
                )
            )
    for (charge_id, dimensions, service_start), before in remaining.items():
        netted.append(
            DraftLine(
                kind="usage",
                description=f"{before.description}{note}",
                amount_exact=-before.amount_exact,
                rounded=-before.amount,
                service_start=service_start,
                service_end=before.service_end,
                plan_version_id=before.plan_version_id,
                plan_charge_id=charge_id,
                meter_id=before.meter_id,
                dimensions=loads_exact(dimensions),
                quantity=plain_decimal(-before.quantity),
            )
        )
    return netted


# How long after issue an invoice falls due, unless the caller passes the configured terms.
DEFAULT_PAYMENT_TERMS = timedelta(days=14)


def _idempotency_key(draft: DraftInvoice, purpose: str) -> str:
    """The invoice's unique key: its reference, else its subscription, kind and period start."""
    if draft.reference is not None:
        return f"{purpose}:{draft.reference}"
    return f"{purpose}:{draft.subscription_id}:{draft.kind}:{draft.period_start.isoformat()}"


async def issue(
    session: AsyncSession,
    draft: DraftInvoice,
    *,
    as_of: datetime,
    invoiced_through: datetime | None,
    closes_at: datetime | None = None,
    trace_id: str | None = None,
    payment_terms: timedelta = DEFAULT_PAYMENT_TERMS,
) -> Invoice:
    """Write the invoice, its lines and its ledger transactions, claim the pending one-off charges
    it bills, and move the subscription's billing cursor to ``invoiced_through`` (None: an invoice
    outside the periods, which moves nothing); the caller commits. The ledger keys derive from the
    customer, kind and period, like the invoice's own unique key (or from the draft's
    ``reference``), so a crashed and re-run billing can never post an invoice twice. The buyer's
    billing details are kept on the invoice as they stand now, and it falls due ``payment_terms``
    after issue. The email telling the customer is queued in the same transaction."""
    currency, customer_id = draft.currency, draft.customer_id
    buyer = (await customers_repository.get_by_ids(session, [customer_id]))[customer_id]
    invoice_id = uuid.uuid4()
    if draft.one_off_charge_ids:
        claimed = await charges_repository.claim_one_off_charges(session, draft.one_off_charge_ids, invoice_id)
        if claimed != len(draft.one_off_charge_ids):
            raise RuntimeError("a pending one-off charge was invoiced or canceled meanwhile; bill the customer again")
    amounts = [line.amount(currency) for line in draft.lines]
    subtotal = sum(amounts)
    taxes = await taxes_of(session, customer_id, currency, amounts)
    tax_amount = sum(line.tax for line in taxes)
    total = subtotal + exclusive_tax(taxes)
    revenues: dict[str, int] = {"subscription_revenue": 0, "usage_revenue": 0}
    for amount, line in zip(amounts, draft.lines, strict=True):
        account = REVENUE_ACCOUNTS.get(line.kind, "usage_revenue")
        revenues[account] = revenues.get(account, 0) + amount
    # Revenue is what the customer pays net of tax: inclusive tax comes out of each revenue
    # account in proportion to it, to the unit (pricing.tax.allocate), and goes to tax_payable.
    for account, share in zip(revenues, allocate(inclusive_tax(taxes), list(revenues.values())), strict=True):
        revenues[account] -= share
    subscription_revenue, usage_revenue = revenues["subscription_revenue"], revenues["usage_revenue"]
    reason = draft.label or f"invoice for {_fmt(draft.period_start)} to {_fmt(draft.period_end)}"
    ledger_transaction_id = None
    legs = [
        (customer_id, "receivable", total),
        *((None, account, -amount) for account, amount in revenues.items()),
        (None, "tax_payable", -tax_amount),
    ]
    request = {"total": total, "subscription": subscription_revenue, "usage": usage_revenue}
    if revenues.get("one_off_revenue"):
        request["one_off"] = revenues["one_off_revenue"]
    if tax_amount:  # absent without tax, so the keys of invoices without it keep their request
        request["tax"] = tax_amount
    if revenues.get("discounts"):
        request["discounts"] = revenues["discounts"]
    if any(amount for _, _, amount in legs):  # lines that cancel out within a kind move nothing
        entry = Entry(
            kind="invoice",
            currency=currency,
            customer_id=customer_id,
            effective_at=as_of,
            actor="billing",
            reason=reason,
            idempotency_key=_idempotency_key(draft, "invoice"),
            request=request,
            trace_id=trace_id,
        )
        ledger_transaction_id = await post_entry(session, entry, legs, as_of=as_of)
    credits_applied, credits_transaction_id = 0, None
    if total > 0:
        consumption = await consume_credits(
            session,
            customer_id=customer_id,
            currency=currency,
            amount=total,
            reason=f"credits applied to the {reason}",
            actor="billing",
            idempotency_key=_idempotency_key(draft, "invoice-credits"),
            as_of=as_of,
            trace_id=trace_id,
        )
        credits_applied, credits_transaction_id = consumption.consumed, consumption.transaction_id
    elif total < 0:
        grant = await grant_credits(
            session,
            customer_id=customer_id,
            currency=currency,
            amount=-total,
            reason=f"credit from the {reason}",
            actor="billing",
            idempotency_key=_idempotency_key(draft, "invoice-credit-note"),
            as_of=as_of,
            source="invoice",
            trace_id=trace_id,
        )
        credits_transaction_id = grant.transaction_id
    due = amount_due(total, credits_applied)
    row: dict[str, Any] = {
        "id": invoice_id,
        "customer_id": customer_id,
        "subscription_id": draft.subscription_id,
        "kind": draft.kind,
        "status": "issued" if due else "paid",
        "currency": currency,
        "period_start": draft.period_start,
        "period_end": draft.period_end,
        "subtotal": subtotal,
        "credits_applied": credits_applied,
        "total": total,
        "amount_due": due,
        "tax_amount": tax_amount,
        "issued_at": as_of,
        "ledger_transaction_id": ledger_transaction_id,
        "credits_transaction_id": credits_transaction_id,
        "trace_id": trace_id,
        "billing_details": billing_details_of(buyer).as_json(),
        "due_at": as_of + payment_terms,
        "interim_sequence": draft.interim_sequence,
    }
    lines = [
        {
            "position": position,
            "kind": line.kind,
            "description": line.description,
            "plan_version_id": line.plan_version_id,
            "plan_charge_id": line.plan_charge_id,
            "meter_id": line.meter_id,
            "dimensions": line.dimensions,
            "quantity": line.quantity,
            "unit_price": line.unit_price,
            "amount_exact": line.amount_exact,
            "amount": amount,
            "service_start": line.service_start,
            "service_end": line.service_end,
        }
        for position, (line, amount) in enumerate(zip(draft.lines, amounts, strict=True))
    ]
    email = await emails.invoice_issued(session, row, as_of=as_of)
    number = await repository.write_invoice(
        session,
        repository.InvoiceToWrite(
            row, lines, draft.rated, invoiced_through, closes_at, [tax_line_row(line) for line in taxes], email
        ),
    )
    await coupon_repository.record_periods(
        session,
        [
            {
                "discount_id": discount.taken.discount_id,
                "period_number": discount.period_number,
                "customer_id": customer_id,
                "invoice_id": invoice_id,
                "amount": discount.taken.amount,
            }
            for discount in draft.discounts
        ],
    )
    await repository.write_advance_bills(
        session,
        [
            {
                "customer_id": customer_id,
                "plan_charge_id": bill.amount.charge.charge_id,
                "period_start": bill.period_start,
                "effective_at": bill.amount.at,
                "kind": bill.amount.kind,
                "plan_version_id": bill.amount.charge.version_id,
                "previous_quantity": bill.amount.previous,
                "quantity": bill.amount.quantity,
                "share": bill.amount.share,
                "amount_exact": bill.amount.amount,
                "invoice_id": invoice_id,
            }
            for bill in draft.advance_bills
        ],
    )
    return Invoice(number=number, **row)


def tax_line_row(line: TaxLine) -> dict[str, Any]:
    """A tax line as ``invoice_tax_lines`` keeps it (without the invoice id and position)."""
    return {
        "rate_key": line.rate_key,
        "name": line.name,
        "rate": line.rate,
        "inclusive": line.inclusive,
        "taxable_amount": line.taxable,
        "tax_amount": line.tax,
        "reverse_charge": line.reverse_charge,
    }


@dataclass(frozen=True)
class NextInvoice:
    draft: DraftInvoice
    invoiced_through: datetime
    closes_at: datetime | None = None  # the end of the period after it: when the next one may fall due


async def next_due(
    session: AsyncSession,
    subscription: Subscription,
    phases: list[SubscriptionPhase],
    currency: str,
    *,
    as_of: datetime,
    grace: timedelta,
    late_window: timedelta,
) -> NextInvoice | None:
    """The next invoice the subscription is due, if any: the opening one once it has started,
    then each period that ended ``grace`` before ``as_of`` (late events still trickle in). A
    canceled subscription's last period closes when it is canceled (its final invoice), and
    nothing is due after it: late events of a canceled period are never billed."""
    schedule = await schedule_of(session, subscription, phases)
    ends = cancel_moment(phases)
    if subscription.invoiced_through is None:
        if subscription.started_at > as_of:
            return None
        draft = await compose_opening(session, subscription, phases, currency)
        return NextInvoice(draft, subscription.started_at, _following_close(schedule, subscription.started_at, ends))
    start = subscription.invoiced_through
    if status_on(phases, start) == CANCELED:
        return None
    period = schedule.period_containing(start)
    closes_at = min(period.end, ends) if ends is not None else period.end
    if closes_at + grace > as_of:
        return None
    draft = await compose_period(
        session, subscription, phases, currency, start, period.end, late_since=as_of - late_window
    )
    return NextInvoice(draft, period.end, _following_close(schedule, period.end, ends))


def _following_close(schedule: BillingSchedule, end: datetime, ends: datetime | None) -> datetime | None:
    """When the period after the one ending at ``end`` closes: None when the subscription ends
    with it, earlier than its calendar says when it is canceled before."""
    if ends is not None and end >= ends:
        return None
    following = schedule.period_containing(end).end
    return min(following, ends) if ends is not None else following
