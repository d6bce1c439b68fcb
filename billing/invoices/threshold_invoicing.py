"""Threshold (progressive) invoicing: a plan version with an ``invoice_threshold`` has Tally bill
a period's usage before the period closes, in ``interim`` invoices, each once what it has not
billed yet reaches the threshold; the period invoice then bills only the rest.

What counts toward the threshold: the period's usage charges billed in arrears, rated on the
cumulative usage of the period so far (tiers, allowances and packages apply to the cumulative
quantity, as the period invoice will), without the charges' minimums, less what the period's
interim invoices billed of each charge (:func:`billing.invoices.invoicing.net_of_billed`). The base fee
(billed in advance), charges billed in advance, charge minimums, the minimum spend true-up,
one-off charges and discounts stay on the period invoice: they are owed by the period, not by the
usage so far. A free trial's usage counts for nothing.

Exactly once: the check locks the subscription row as the billing run does (``FOR UPDATE SKIP
LOCKED``: a check that finds it held issues nothing, a later one sees what the holder issued), and
an interim invoice is keyed by (subscription, period start, ``interim_sequence``) in a unique index
and by the same reference in the ledger's idempotency keys; so two roller passes at once, or a
check racing the period's close, issue one.

The threshold is the plan version's in the customer's currency (each currency option has its own),
the version in effect at the check. The open period is the one the next period invoice closes;
it may have ended, in the billing run's grace, and still takes interim invoices until it is billed.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.invoices import repository
from billing.invoices.invoicing import (
    DEFAULT_PAYMENT_TERMS,
    DraftInvoice,
    DraftLine,
    issue,
    net_of_billed,
    rated_usage,
    usage_terms,
)
from billing.models import Invoice
from customers.calendar import schedule_of
from customers.lifecycle import CANCELED, status_on
from customers.models import Subscription
from customers.price_overrides import overrides_of
from customers.subscriptions import phases_of, version_on
from ledger.money import round_to_minor
from pricing.service import plan_version

INTERIM = "interim"


@dataclass(frozen=True)
class UnbilledUsage:
    """Where a subscription stands against its threshold: the open period, the threshold and the
    usage not billed yet (in minor units), and the lines an interim invoice would bill."""

    subscription: Subscription
    currency: str
    period_start: datetime
    period_end: datetime
    threshold: int
    lines: list[DraftLine]

    @property
    def unbilled(self) -> int:
        return sum(line.amount(self.currency) for line in self.lines)

    @property
    def reached(self) -> bool:
        return self.unbilled >= self.threshold


async def unbilled_usage(session: AsyncSession, subscription: Subscription, *, as_of: datetime) -> UnbilledUsage | None:
    """The subscription's usage not billed yet in its open period, against the threshold of the
    plan version in effect; None when it has none, has not opened yet, or ended."""
    if subscription.invoiced_through is None:
        return None
    phases = await phases_of(session, subscription.id)
    start = subscription.invoiced_through
    if status_on(phases, start) == CANCELED:
        return None
    period = (await schedule_of(session, subscription, phases)).period_containing(start)
    moment = min(max(as_of, period.start), period.end - timedelta(microseconds=1))
    version = await plan_version(session, version_on(phases, moment))
    if version.invoice_threshold is None:
        return None
    rated = await rated_usage(
        session,
        subscription.customer_id,
        phases,
        period.start,
        period.end,
        overrides=await overrides_of(session, subscription),
        terms=await usage_terms(session, subscription, phases, period.start),
        charge_minimums=False,
    )
    billed = await repository.interim_billed(session, subscription, period.start)
    return UnbilledUsage(
        subscription,
        version.currency,
        period.start,
        period.end,
        round_to_minor(version.invoice_threshold, version.currency),
        net_of_billed(rated, billed, version.currency, note=""),
    )


async def issue_interim_invoice(
    session: AsyncSession,
    customer_id: uuid.UUID,
    subscription_id: uuid.UUID,
    *,
    as_of: datetime,
    trace_id: str | None = None,
    payment_terms: timedelta = DEFAULT_PAYMENT_TERMS,
) -> Invoice | None:
    """Issue the subscription's next interim invoice if its unbilled usage reached the threshold
    (None otherwise, or when another check or billing run holds the subscription right now). The
    invoice is issued as any other (numbering, ledger, credits, tax, collection, email) and moves
    no billing cursor; the caller commits."""
    locked = await repository.subscriptions_to_bill(session, customer_id, subscription_id)
    if not locked:
        return None
    [subscription] = locked
    standing = await unbilled_usage(session, subscription, as_of=as_of)
    if standing is None or not standing.reached:
        return None
    sequence = await repository.interim_invoices_issued(session, subscription, standing.period_start) + 1
    period = f"{standing.period_start:%Y-%m-%d} to {standing.period_end:%Y-%m-%d}"
    draft = DraftInvoice(
        customer_id,
        standing.currency,
        INTERIM,
        standing.period_start,
        standing.period_end,
        standing.lines,
        reference=f"interim:{subscription.id}:{standing.period_start.isoformat()}:{sequence}",
        label=f"interim invoice {sequence} for {period}",
        subscription_id=subscription.id,
        interim_sequence=sequence,
    )
    return await issue(
        session, draft, as_of=as_of, invoiced_through=None, trace_id=trace_id, payment_terms=payment_terms
    )


async def threshold_subscriptions(
    session: AsyncSession, customer_ids: Collection[uuid.UUID] | None = None
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(customer, subscription) of every subscription with a phase on a plan version that has a
    threshold (of the customers named, when they are)."""
    return await repository.threshold_subscriptions(session, None if customer_ids is None else list(customer_ids))
