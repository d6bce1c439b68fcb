"""Minimum spend per billing period: what a period must bill at least, and the true-up when it
falls short.

What counts toward the minimum (Orb's and Metronome's rule): the period's own charges before
credits — the base fee billed for the period, its prorations and its usage (usage charged in
advance counts like the base fee: its bill at the period's start and its top-ups and credits). Late usage of earlier
periods, one-off charges and the next period's fee in advance do not count; credits apply after
the true-up, to the invoice's total.

The minimum in effect can change inside a period: a plan change moves the subscription to a version
with another plan-level minimum, and a subscription-level minimum (``setMinimumSpend``) takes
effect at its own moment. Each part of the period then owes its minimum times its share of the
period (measured in its plan version's proration convention, as base-fee prorations are: exact,
or whole days), and the period's minimum is their sum. A subscription-level setting overrides the
plan's from its moment on; one with no amount goes back to the plan's.

A minimum is owed for the time the subscription is active only, like the base fee: a paused part
owes none (the pause's proration credited its fee; usage metered while paused still counts
toward the spend), nor does the part after a cancel, so the final invoice of a subscription
canceled mid-period owes the minimum of the time before the cancel. Shares are of the *full*
period, as the base fee's are: a calendar stub (or the first paid period after a trial on a
calendar anchor) owes its share of the minimum, a period cut short by a change of interval the
share it lasted; a trial owes none (it bills no fee, and its end starts the first paid period).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from itertools import pairwise
from typing import NamedTuple

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.invoices import charges_repository, repository
from billing.models import MinimumSpend
from customers.lifecycle import ACTIVE, status_on
from customers.models import Subscription, SubscriptionPhase
from customers.periods import BillingPeriod
from customers.subscriptions import version_on
from pricing.proration import share_of_period
from pricing.service import plan_version

TRUE_UP_DESCRIPTION = "Minimum spend true-up"
# Line kinds of a period invoice that are the period's own charges (see the module's docstring).
COUNTED_LINE_KINDS = ("usage", "proration", "advance_proration")


class MinimumPart(NamedTuple):
    """A part of a period with the minimum in effect over it (None: no minimum) and the proration
    convention its share of the period is measured in."""

    start: datetime
    end: datetime
    minimum: Decimal | None
    proration: str = "exact"


def period_minimum(parts: Iterable[MinimumPart], start: datetime, end: datetime) -> Decimal | None:
    """The minimum of ``[start, end)`` from its parts: each part's minimum times its share of the
    period, summed exactly; None when no part has a minimum."""
    total, any_minimum = Decimal(0), False
    for part in parts:
        if part.minimum is None:
            continue
        any_minimum = True
        total += part.minimum * share_of_period(part.start, part.end, start, end, part.proration)
    return total if any_minimum else None


def true_up(minimum: Decimal | None, spend: Decimal) -> Decimal:
    """What a period that spent ``spend`` owes to reach ``minimum`` (0 when it is not short)."""
    if minimum is None or spend >= minimum:
        return Decimal(0)
    return minimum - spend


def setting_at(settings: list[MinimumSpend], moment: datetime) -> MinimumSpend | None:
    """The subscription-level setting in effect at ``moment`` (settings in the order they apply)."""
    current = None
    for setting in settings:
        if setting.effective_at <= moment:
            current = setting
    return current


async def minimum_parts(
    session: AsyncSession, subscription: Subscription, phases: list[SubscriptionPhase], start: datetime, end: datetime
) -> list[MinimumPart]:
    """``[start, end)`` cut where the plan version, the subscription's status or its own minimum
    changes, each part with the minimum in effect over it (none while paused or canceled)."""
    settings = await charges_repository.minimum_spends_of(
        session, subscription.customer_id, subscription.id, before=end
    )
    cuts = {start, end}
    cuts |= {phase.starts_at for phase in phases if start < phase.starts_at < end}
    cuts |= {setting.effective_at for setting in settings if start < setting.effective_at < end}
    moments = sorted(cuts)
    parts = []
    for part_start, part_end in pairwise(moments):
        version = await plan_version(session, version_on(phases, part_start))
        own = setting_at(settings, part_start)
        minimum: Decimal | None
        if status_on(phases, part_start) != ACTIVE:
            minimum = None
        elif own is not None and own.amount is not None:
            minimum = own.amount
        else:
            minimum = version.minimum_spend
        parts.append(MinimumPart(part_start, part_end, minimum, version.proration))
    return parts


async def period_true_up(
    session: AsyncSession,
    subscription: Subscription,
    phases: list[SubscriptionPhase],
    period: BillingPeriod,
    end: datetime,
    period_lines: Iterable[tuple[str, Decimal]],
) -> Decimal:
    """The true-up the period ``[period.start, end)`` owes, given the (kind, exact amount) of the
    lines its invoice holds so far. The base fee of the period was billed in advance, on the
    invoice before: it is read from there."""
    if period.trial:
        return Decimal(0)
    start = period.start
    parts = await minimum_parts(session, subscription, phases, start, end)
    minimum = period_minimum(parts, period.full_start, period.full_end)
    if minimum is None:
        return Decimal(0)
    _, base_fee = await repository.base_fee_billed(session, subscription, start)
    base_fee += await repository.advance_amount_billed(session, subscription, start)  # seats in advance
    spend = base_fee + sum((amount for kind, amount in period_lines if kind in COUNTED_LINE_KINDS), Decimal(0))
    return true_up(minimum, spend)
