"""How much each of a customer's discounts takes off an invoice: pure arithmetic, no I/O.

A discount is worked out on the lines it applies to as the invoice shows them (each already
rounded once to the minor unit), so a customer can check it by hand: 20% of lines showing 12.35
is 2.47 exactly (2.470), and 10% of 0.05 is 0.005, shown as 0.01 (rounded once, half away from
zero, by :func:`ledger.money.round_to_minor`). The exact amount is kept beside the rounded one.

Invariants:
- a discount never takes more than what is left of the lines it applies to: a fixed amount
  larger than them leaves zero, never a credit; a percentage is at most 100;
- several discounts stack in the order they were applied, each on what the earlier ones left;
- lines below zero (a downgrade's credit) lower the amount a discount applies to; when the lines
  it applies to sum to zero or less, it takes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal, localcontext

from ledger.money import round_to_minor, to_major


@dataclass(frozen=True)
class Discountable:
    """An invoice line as a discount sees it: its rounded amount and the meter it bills, if any."""

    amount: int
    meter_id: uuid.UUID | None


@dataclass(frozen=True)
class DiscountTerms:
    discount_id: uuid.UUID
    description: str
    percent_off: Decimal | None
    amount_off: int | None
    # The meters whose lines it applies to; None: every line of the invoice.
    meter_ids: frozenset[uuid.UUID] | None


@dataclass(frozen=True)
class DiscountTaken:
    discount_id: uuid.UUID
    description: str
    amount_exact: Decimal  # taken off, in major units (positive)
    amount: int  # taken off, in minor units: amount_exact rounded once

    def line_amount_exact(self) -> Decimal:
        """What the invoice line shows: the discount as a negative amount."""
        return -self.amount_exact


def _applies(terms: DiscountTerms, line: Discountable) -> bool:
    return terms.meter_ids is None or line.meter_id in terms.meter_ids


def discounts_taken(lines: list[Discountable], discounts: list[DiscountTerms], currency: str) -> list[DiscountTaken]:
    """What each discount takes off ``lines``, in order; discounts that take nothing are left out."""
    left = [line.amount for line in lines]
    taken = []
    for terms in discounts:
        applicable = [i for i, line in enumerate(lines) if _applies(terms, line)]
        base = sum(left[i] for i in applicable)
        if base <= 0:
            continue
        if terms.percent_off is not None:
            with localcontext(prec=80):  # exact: a bounded amount times a bounded percentage
                exact = to_major(base, currency) * terms.percent_off / 100
            amount = min(round_to_minor(exact, currency), base)
        else:
            assert terms.amount_off is not None
            amount = min(terms.amount_off, base)
            exact = to_major(amount, currency)
        if amount <= 0:
            continue
        owed = amount
        for i in applicable:  # lines above zero absorb it in order; the sum over them covers it
            share = min(max(left[i], 0), owed)
            left[i] -= share
            owed -= share
        taken.append(DiscountTaken(terms.discount_id, terms.description, exact, amount))
    return taken
