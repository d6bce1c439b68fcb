"""Usage charged in advance (seats). Pure: no clock, no I/O, Decimal throughout.

A charge declared ``billed = "in_advance"`` prices a level (a ``latest`` or ``max`` meter's
value: seats), not a volume, and is billed like the base fee:
- at the period's start, on the invoice that bills the base fee in advance, for the value known
  then (the last value the meter read before the start), for the whole period: ``rate(terms,
  value) × scale``, ``scale`` being the stub's share of its full period (1 for a whole period);
- when the value rises above what was billed for the period, a top-up of the difference for the
  rest of the period: ``(rate(new) − rate(billed)) × scale × share(at, end)``, the share measured
  in the plan's proration convention with the function the base fee's prorations use
  (:func:`pricing.proration.share_of_period`). A fall is not credited: the next period bills the
  lower value (Stripe's and Lago's default);
- where the subscription's phases change inside the period, the charge follows its status like the
  base fee: a pause, a cancel or a plan change that leaves the charge credits the unused rest of
  what it billed, ``−rate(billed) × scale × share(at, end)``; an unpause or a plan change that
  brings an in-advance charge charges the rest at the value known then. Shares of a change are
  measured in the convention of the plan being left, as the base fee's are.
Nothing is rounded here: each amount becomes one invoice line, rounded once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext

from pricing.proration import share_of_period
from pricing.rating import RATING_PRECISION, ChargeTerms, rate

ZERO = Decimal(0)
ADVANCE, TOP_UP, CREDIT, CHARGE = "advance", "top_up", "credit", "charge"


@dataclass(frozen=True)
class AdvanceCharge:
    """An in-advance charge of a plan version, with the terms the customer pays it at."""

    charge_id: uuid.UUID
    version_id: uuid.UUID
    source: str  # what it reads the level of: its meter and ``where`` (see Reading)
    terms: ChargeTerms


@dataclass(frozen=True)
class AdvancePhase:
    """From ``starts_at`` on, these in-advance charges are billed (none while paused, canceled or
    past the period a change of interval cut short); ``proration`` is the plan's convention."""

    starts_at: datetime
    charges: tuple[AdvanceCharge, ...]
    proration: str = "exact"


@dataclass(frozen=True)
class Reading:
    """A value read at ``at`` (an event's) from ``source``: a meter, and the events its charge's
    ``where`` selects (two charges of one meter may read different levels)."""

    at: datetime
    source: str
    value: Decimal


@dataclass(frozen=True)
class AdvanceAmount:
    """One amount an in-advance charge bills for a period: its kind (advance, top_up, credit or
    charge), from when, the level before and after, the share of the period it is for, exactly."""

    kind: str
    charge: AdvanceCharge
    at: datetime
    previous: Decimal
    quantity: Decimal
    share: Decimal
    amount: Decimal


def advance_amount(charge: AdvanceCharge, quantity: Decimal, *, at: datetime, scale: Decimal) -> AdvanceAmount:
    """The bill at a period's start: ``quantity`` for the whole period (``scale`` of it for a stub)."""
    with localcontext(prec=RATING_PRECISION):
        return AdvanceAmount(ADVANCE, charge, at, ZERO, quantity, scale, rate(charge.terms, quantity) * scale)


def period_adjustments(
    *,
    billed: Sequence[tuple[AdvanceCharge, Decimal]],
    phases: Sequence[AdvancePhase],
    levels_at_start: dict[str, Decimal],
    readings: Iterable[Reading],
    period_start: datetime,
    period_end: datetime,
    scale: Decimal = Decimal(1),
) -> list[AdvanceAmount]:
    """What the in-advance charges of ``[period_start, period_end)`` bill beyond the bill at its
    start: ``billed`` is that bill (each charge with the quantity it billed); ``phases`` cover the
    period from its start, oldest first; ``levels_at_start`` is each meter's value known at the
    start; ``readings`` are the meters' values inside the period, in the order they happened.
    Readings at one moment count as one: the highest may top up, the last is the value after it.
    Amounts of zero are left out."""
    if not phases or phases[0].starts_at > period_start:
        raise ValueError("the phases must cover the period from its start")
    level = dict(levels_at_start)
    state: dict[uuid.UUID, tuple[AdvanceCharge, Decimal]] = {c.charge_id: (c, q) for c, q in billed}
    convention = phases[0].proration
    amounts: list[AdvanceAmount] = []

    def share(at: datetime, convention: str) -> Decimal:
        return share_of_period(at, period_end, period_start, period_end, convention) * scale

    def phase_change(phase: AdvancePhase, at: datetime) -> None:
        nonlocal convention
        leaving = convention  # the plan being left decides what a used day is, as for the base fee
        wanted = {c.charge_id: c for c in phase.charges}
        for charge_id, (charge, quantity) in list(state.items()):
            if wanted.get(charge_id) != charge:
                part = share(at, leaving)
                amounts.append(
                    AdvanceAmount(CREDIT, charge, at, quantity, ZERO, part, -rate(charge.terms, quantity) * part)
                )
                del state[charge_id]
        for charge_id, charge in wanted.items():
            if charge_id not in state:
                quantity, part = level.get(charge.source, ZERO), share(at, leaving)
                amounts.append(
                    AdvanceAmount(CHARGE, charge, at, ZERO, quantity, part, rate(charge.terms, quantity) * part)
                )
                state[charge_id] = (charge, quantity)
        convention = phase.proration

    def rise(at: datetime, source: str, highest: Decimal) -> None:
        for charge_id, (charge, quantity) in list(state.items()):
            if charge.source != source or highest <= quantity:
                continue
            part = share(at, convention)
            amount = (rate(charge.terms, highest) - rate(charge.terms, quantity)) * part
            amounts.append(AdvanceAmount(TOP_UP, charge, at, quantity, highest, part, amount))
            state[charge_id] = (charge, highest)

    with localcontext(prec=RATING_PRECISION):
        pending = [p for p in phases[1:] if period_start < p.starts_at < period_end]
        phase_change(phases[0], period_start)
        moments: dict[tuple[datetime, str], list[Decimal]] = {}
        for reading in readings:
            if period_start <= reading.at < period_end:
                moments.setdefault((reading.at, reading.source), []).append(reading.value)
        for at, source in sorted(moments):
            while pending and pending[0].starts_at <= at:
                phase = pending.pop(0)
                phase_change(phase, phase.starts_at)
            values = moments[(at, source)]
            rise(at, source, max(values))
            level[source] = values[-1]
        for phase in pending:
            phase_change(phase, phase.starts_at)
    return [amount for amount in amounts if amount.amount or amount.quantity != amount.previous]
