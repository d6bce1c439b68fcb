"""Proration of a mid-period plan change. Pure: no clock, no I/O, Decimal throughout.

The rules, written down once:
- Time is measured to the microsecond, as the share of the period ``[start, end)`` that a part of
  it covers (``covered / whole``), exactly, as a Decimal: the ``exact`` convention (Stripe's).
  A plan may choose the ``day`` convention instead (Lago's, Chargebee's, Kill Bill's): whole days
  counted from the period's start, the day a change happens counted as used under the plan in
  effect when the day began (a moment inside a day moves to that day's end), ``days covered /
  days in the period``. Both conventions cut a period at the same points, so the shares of its
  parts still add up to one.
- Base fees (billed in advance): a period costs the sum over its phases of ``fee × share``. The
  period's prorations are worked out from the phases as they stand and from the fee that was
  actually billed in advance for it, never from what a change assumed when it was made: at each
  change at ``at`` the unused part of the fee before it is credited, ``-old_fee × (end - at) /
  (end - start)``, and the rest of the period is charged at the new fee, ``new_fee × (end - at) /
  (end - start)``, both shares in the convention of the plan being left; and when the fee billed
  in advance is not the first phase's (a change exactly at the period's start, recorded after that
  fee was billed), the billed fee is credited whole and the first phase's charged whole. The lines
  telescope to ``Σ fee × share − billed``, whatever the order in which changes and invoices
  happened. Each line is rounded once, on the invoice.
- Lifecycle: a paused or canceled part of a period is a phase whose fee is 0, so a pause credits
  ``-fee × (end - at) / (end - start)`` and an unpause charges the rest of the period again.
- Usage: events before ``at`` are rated on the old version, events from ``at`` on the new one,
  each on its own. A charge's ``included`` allowance and its ``minimum`` are scaled by the share of
  the period its version covered; tier bounds are not (a tier is a volume, not a rate per day).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from pricing.rating import ChargeTerms


def _microseconds(start: datetime, end: datetime) -> int:
    delta = end - start
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


PRORATION_CONVENTIONS = ("exact", "day")
DAY_MICROSECONDS = 86_400 * 1_000_000


def share_of_period(
    part_start: datetime, part_end: datetime, start: datetime, end: datetime, convention: str = "exact"
) -> Decimal:
    """The share of ``[start, end)`` covered by ``[part_start, part_end)`` (clipped to it), exact
    to the microsecond, or in whole days under the ``day`` convention."""
    whole = _microseconds(start, end)
    if whole <= 0:
        raise ValueError("a period must end after it starts")
    if convention == "day":
        days = _days_into(end, start, end)
        covered_days = _days_into(part_end, start, end) - _days_into(part_start, start, end)
        return Decimal(max(covered_days, 0)) / Decimal(days)
    if convention != "exact":
        raise ValueError(f"unknown proration convention {convention!r}")
    covered = _microseconds(max(part_start, start), min(part_end, end))
    return Decimal(max(covered, 0)) / Decimal(whole)


def _days_into(moment: datetime, start: datetime, end: datetime) -> int:
    """Whole days from ``start`` to ``moment`` (clipped to the period), a started day counted
    whole: the day of a change is used under the plan it began with."""
    elapsed = _microseconds(start, min(max(moment, start), end))
    return -(-elapsed // DAY_MICROSECONDS)


def prorated_terms(terms: ChargeTerms, share: Decimal) -> ChargeTerms:
    """A charge's terms for a part of a period: allowance and minimum scaled by its share."""
    if share == 1:
        return terms
    return replace(
        terms,
        included=terms.included * share,
        minimum=terms.minimum * share if terms.minimum is not None else None,
    )


@dataclass(frozen=True)
class Proration:
    kind: str  # "credit_unused" or "charge_remaining"
    description: str
    amount: Decimal  # exact, in major units; a credit is negative
    starts_at: datetime | None = None  # the line covers [starts_at, period end)
    plan_version_id: uuid.UUID | None = None  # the version whose fee the line credits or charges


@dataclass(frozen=True)
class FeePhase:
    """From ``starts_at`` on, ``plan`` (its version ``version_id``) prices the period at ``fee``.
    A paused or canceled part is priced at a fee of 0 (its ``status`` tells it from the active part
    of the same version, so a pause from the period's start credits the fee billed in advance)."""

    starts_at: datetime
    version_id: uuid.UUID | None
    plan: str
    fee: Decimal
    status: str = "ACTIVE"
    proration: str = "exact"  # the version's convention (see share_of_period)


def period_fee_prorations(
    *, billed: FeePhase | None, phases: list[FeePhase], period_start: datetime, period_end: datetime
) -> list[Proration]:
    """The base-fee prorations of ``[period_start, period_end)``.

    ``billed`` is the fee billed in advance for the period (None: nothing was, or it will be billed
    at the first phase's fee); ``phases`` are the phases in effect during the period, oldest first,
    the first one in effect at its start. Lines of a zero fee are left out.
    """
    if not phases or phases[0].starts_at > period_start:
        raise ValueError("the phases must cover the period from its start")
    until = period_end.strftime("%Y-%m-%d %H:%M UTC")
    prorations: list[Proration] = []
    previous = billed if billed is not None else phases[0]
    for index, phase in enumerate(phases):
        at = max(phase.starts_at, period_start)
        if not at < period_end:
            raise ValueError("a phase must start inside the period it prorates")
        if index == 0 and (previous.version_id, previous.status) == (phase.version_id, phase.status):
            continue
        # The plan being left decides what a used day is: its fee was billed for the period.
        remaining = share_of_period(at, period_end, period_start, period_end, previous.proration)
        since = at.strftime("%Y-%m-%d %H:%M UTC")
        if previous.fee:
            prorations.append(
                Proration(
                    "credit_unused",
                    f"Unused time on {previous.plan} ({since} to {until})",
                    -previous.fee * remaining,
                    at,
                    previous.version_id,
                )
            )
        if phase.fee:
            prorations.append(
                Proration(
                    "charge_remaining",
                    f"Remaining time on {phase.plan} ({since} to {until})",
                    phase.fee * remaining,
                    at,
                    phase.version_id,
                )
            )
        previous = phase
    return prorations
