"""Proration of a mid-period plan change. Pure: no clock, no I/O, Decimal throughout.

The rules, written down once:
- Time is measured to the microsecond, as the share of the period ``[start, end)`` that a part of
  it covers (``covered / whole``), exactly, as a Decimal.
- Base fees (billed in advance): an immediate change at ``at`` credits the unused part of the old
  fee, ``-old_fee × (end - at) / (end - start)``, and charges the rest of the period at the new
  fee, ``new_fee × (end - at) / (end - start)``. Both lines are rounded once, on the invoice.
- Usage: events before ``at`` are rated on the old version, events from ``at`` on the new one,
  each on its own. A charge's ``included`` allowance and its ``minimum`` are scaled by the share of
  the period its version covered; tier bounds are not (a tier is a volume, not a rate per day).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from pricing.rating import ChargeTerms


def _microseconds(start: datetime, end: datetime) -> int:
    delta = end - start
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def share_of_period(part_start: datetime, part_end: datetime, start: datetime, end: datetime) -> Decimal:
    """The exact share of ``[start, end)`` covered by ``[part_start, part_end)`` (clipped to it)."""
    whole = _microseconds(start, end)
    if whole <= 0:
        raise ValueError("a period must end after it starts")
    covered = _microseconds(max(part_start, start), min(part_end, end))
    return Decimal(max(covered, 0)) / Decimal(whole)


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


def base_fee_prorations(
    *,
    old_plan: str,
    old_fee: Decimal,
    new_plan: str,
    new_fee: Decimal,
    period_start: datetime,
    period_end: datetime,
    at: datetime,
) -> list[Proration]:
    """What an immediate change at ``at`` costs in base fees; nothing for a zero fee."""
    if not period_start <= at < period_end:
        raise ValueError("a change must happen inside the period it prorates")
    remaining = share_of_period(at, period_end, period_start, period_end)
    until = period_end.strftime("%Y-%m-%d %H:%M UTC")
    since = at.strftime("%Y-%m-%d %H:%M UTC")
    prorations = []
    if old_fee:
        prorations.append(
            Proration("credit_unused", f"Unused time on {old_plan} ({since} to {until})", -old_fee * remaining)
        )
    if new_fee:
        prorations.append(
            Proration("charge_remaining", f"Remaining time on {new_plan} ({since} to {until})", new_fee * remaining)
        )
    return prorations
