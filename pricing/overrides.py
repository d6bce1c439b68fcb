"""Per-customer prices: what an override changes in a plan charge, and which override is in effect
when. Pure: no clock, no I/O, Decimal throughout.

The rules, written down once:
- An override replaces some of a charge's terms (unit price, tiers, package size and price,
  allowance, minimum, limit) and keeps the rest of the plan's; its model, meter and ``where``
  never change. Terms are kept as the plan charge keeps them: exact decimal text.
- Overrides of a charge form a history of steps, each in effect from its ``effective_at`` until
  the next step's (a ``remove`` step brings back the plan's terms). Steps at the same moment are
  ordered by when they were recorded, the last one wins.
- A step that a plan change wrote (a drop) also voids the steps recorded before it that were
  scheduled for its moment or later: they belonged to the plan the customer left.
- A period's usage of a charge is rated in segments, one for each override in effect during it
  (a plan change splits usage the same way, :mod:`pricing.proration`); allowance and minimum are
  scaled by each segment's share of the period.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from itertools import pairwise
from typing import Any

from ledger.errors import InvalidInput
from ledger.money import MAX_PRICE_PLACES, decimal_places, fits_minor_unit
from pricing.models import PlanCharge

#: What an override may change, as the plan charge stores it (``limit`` is the ``usage_limit`` column).
OVERRIDABLE = ("unit_price", "tiers", "package_size", "package_price", "included", "minimum", "limit")
#: The input fields of the API, by stored name.
API_FIELDS = {
    "unit_price": "unitPrice",
    "tiers": "tiers",
    "package_size": "packageSize",
    "package_price": "packagePrice",
    "included": "included",
    "minimum": "minimum",
    "limit": "limit",
}
#: Which models use which of the terms (allowance, minimum and limit apply to every model).
MODEL_TERMS = {
    "per_unit": {"unit_price"},
    "graduated": {"tiers"},
    "volume": {"tiers"},
    "package": {"package_size", "package_price"},
}
#: The plan charge's NUMERIC(30, 12): at most 18 digits before the point.
MAX_MAGNITUDE = Decimal(10) ** 18

Terms = dict[str, Any]


def _text(value: Decimal | None) -> str | None:
    """Exact decimal text without trailing zeros, as the catalog stores a charge's tiers."""
    if value is None:
        return None
    normalized = value.normalize()
    return format(normalized, "f") if normalized != 0 else "0"


def plan_terms(charge: PlanCharge) -> Terms:
    """The overridable terms of a charge, as an override stores them (for the audit's before/after)."""
    return {
        "unit_price": _text(charge.unit_price),
        "tiers": [dict(tier) for tier in charge.tiers],
        "package_size": _text(charge.package_size),
        "package_price": _text(charge.package_price),
        "included": _text(charge.included),
        "minimum": _text(charge.minimum),
        "limit": _text(charge.usage_limit),
    }


def overridden_charge(charge: PlanCharge, terms: Mapping[str, Any] | None) -> PlanCharge:
    """The charge as the customer pays it: the same row (same id, meter and model), its terms
    replaced by those the override sets. Without an override, the charge itself."""
    if not terms:
        return charge
    values = charge.model_dump()
    for name, value in terms.items():
        if name == "tiers":
            values["tiers"] = [dict(tier) for tier in value]
        elif name == "limit":
            values["usage_limit"] = Decimal(value) if value is not None else None
        elif name == "included":
            values["included"] = Decimal(value)
        else:
            values[name] = Decimal(value) if value is not None else None
    return PlanCharge(**values)


@dataclass(frozen=True)
class TierInput:
    up_to: Decimal | None  # None: the last tier, with no upper bound
    unit_price: Decimal


@dataclass(frozen=True)
class OverrideFields:
    """What a caller asks to override; None leaves the plan's term (``unlimited`` lifts the limit)."""

    unit_price: Decimal | None = None
    tiers: Sequence[TierInput] | None = None
    package_size: Decimal | None = None
    package_price: Decimal | None = None
    included: Decimal | None = None
    minimum: Decimal | None = None
    limit: Decimal | None = None
    unlimited: bool = False


def _amount(value: Decimal, name: str, *, places: int = MAX_PRICE_PLACES, positive: bool = False) -> str:
    api = API_FIELDS.get(name, name)
    if value < 0 or (positive and value == 0):
        raise InvalidInput("must be greater than zero" if positive else "must not be negative", field=api)
    if decimal_places(value) > places:
        raise InvalidInput(f"at most {places} decimal places", field=api)
    if value >= MAX_MAGNITUDE:
        raise InvalidInput("is too large (at most 18 digits before the decimal point)", field=api)
    text = _text(value)
    assert text is not None
    return text


def _tiers(tiers: Sequence[TierInput]) -> list[dict[str, str]]:
    if not tiers:
        raise InvalidInput("must list at least one tier", field="tiers")
    stored: list[dict[str, str]] = []
    previous: Decimal | None = None
    for index, tier in enumerate(tiers):
        last = index == len(tiers) - 1
        price = _amount(tier.unit_price, "tiers")
        if tier.up_to is None:
            if not last:
                raise InvalidInput("only the last tier may have no upper bound (upTo null)", field="tiers")
            stored.append({"up_to": "inf", "unit_price": price})
            continue
        if last:
            raise InvalidInput(
                "the last tier must have no upper bound (upTo null) so every quantity is priced", field="tiers"
            )
        up_to = _amount(tier.up_to, "tiers", positive=True)
        if previous is not None and tier.up_to <= previous:
            raise InvalidInput("upTo must increase from tier to tier", field="tiers")
        previous = tier.up_to
        stored.append({"up_to": up_to, "unit_price": price})
    return stored


def override_terms(charge: PlanCharge, fields: OverrideFields, currency: str) -> Terms:
    """The terms an override of ``charge`` stores, checked as the catalog checks a plan's: only
    terms the charge's model uses, no negative amount, at most 12 decimal places, tiers in order
    and ending unbounded, a minimum payable in the currency. :class:`InvalidInput` names the field."""
    given = {
        name: getattr(fields, name)
        for name in OVERRIDABLE
        if getattr(fields, name) is not None and not (name == "tiers" and fields.tiers is None)
    }
    if fields.unlimited and fields.limit is not None:
        raise InvalidInput("give a limit or unlimited, not both", field="limit")
    if not given and not fields.unlimited:
        raise InvalidInput(
            "nothing to override: give unitPrice, tiers, packageSize, packagePrice, included, minimum, limit "
            "or unlimited",
            field="charge",
        )
    used = MODEL_TERMS.get(charge.model, set())
    for name in given:
        if name in ("unit_price", "tiers", "package_size", "package_price") and name not in used:
            raise InvalidInput(
                f"is not used by a {charge.model} charge (it uses {', '.join(API_FIELDS[n] for n in sorted(used))})",
                field=API_FIELDS[name],
            )
    terms: Terms = {}
    for name, value in given.items():
        if name == "tiers":
            terms["tiers"] = _tiers(value)
        elif name == "package_size":
            terms[name] = _amount(value, name, places=0, positive=True)
        else:
            terms[name] = _amount(value, name)
    if "minimum" in terms and not fits_minor_unit(Decimal(terms["minimum"]), currency):
        raise InvalidInput(f"{terms['minimum']} is not payable in {currency}: too many decimal places", field="minimum")
    if fields.unlimited:
        terms["limit"] = None
    return terms


@dataclass(frozen=True)
class OverrideStep:
    """One recorded change of a charge's price: ``terms`` from ``effective_at`` on (None: the
    plan's terms again). ``seq`` orders the recording; ``drop`` marks a plan change's removal."""

    plan_charge_id: uuid.UUID
    effective_at: datetime
    seq: int
    terms: Terms | None
    drop: bool = False


@dataclass(frozen=True)
class OverrideTimeline:
    """A subscription's overrides, by charge. Empty for nearly every customer: then every
    question is answered without looking anything up."""

    steps: tuple[OverrideStep, ...] = ()
    _by_charge: dict[uuid.UUID, list[OverrideStep]] = field(default_factory=dict, init=False, compare=False)

    def __post_init__(self) -> None:
        for step in sorted(self.steps, key=lambda s: (s.effective_at, s.seq)):
            self._by_charge.setdefault(step.plan_charge_id, []).append(step)
        for charge_id, steps in self._by_charge.items():
            drops = [s for s in steps if s.drop]
            self._by_charge[charge_id] = [
                s for s in steps if not any(d.seq > s.seq and d.effective_at <= s.effective_at for d in drops)
            ]

    def __bool__(self) -> bool:
        return bool(self.steps)

    def with_step(self, step: OverrideStep) -> OverrideTimeline:
        return OverrideTimeline((*self.steps, step))

    def without(self, seq: int) -> OverrideTimeline:
        return OverrideTimeline(tuple(s for s in self.steps if s.seq != seq))

    def step_in_effect(self, charge_id: uuid.UUID, moment: datetime) -> OverrideStep | None:
        """The last step of the charge at or before ``moment`` (a set or a remove), if any."""
        current = None
        for step in self._by_charge.get(charge_id, ()):
            if step.effective_at > moment:
                break
            current = step
        return current

    def in_effect(self, charge_id: uuid.UUID, moment: datetime) -> Terms | None:
        """The override of the charge in effect at ``moment``, or None (the plan's terms)."""
        step = self.step_in_effect(charge_id, moment)
        return step.terms if step is not None else None

    def changes_after(self, charge_id: uuid.UUID, moment: datetime) -> bool:
        return any(s.effective_at > moment for s in self._by_charge.get(charge_id, ()))

    def charge_at(self, charge: PlanCharge, moment: datetime) -> PlanCharge:
        return overridden_charge(charge, self.in_effect(charge.id, moment)) if self.steps else charge

    def segments(
        self, charge_id: uuid.UUID, start: datetime, end: datetime
    ) -> list[tuple[datetime, datetime, Terms | None]]:
        """``[start, end)`` cut where the charge's override changes, each part with its terms;
        a part whose terms equal the previous part's is merged into it."""
        steps = self._by_charge.get(charge_id)
        if not steps:
            return [(start, end, None)]
        cuts = [step.effective_at for step in steps if start < step.effective_at < end]
        bounds = [start, *cuts, end]
        parts: list[tuple[datetime, datetime, Terms | None]] = []
        for part_start, part_end in pairwise(bounds):
            terms = self.in_effect(charge_id, part_start)
            if parts and parts[-1][2] == terms:
                parts[-1] = (parts[-1][0], part_end, terms)
            else:
                parts.append((part_start, part_end, terms))
        return parts

    def in_effect_now(self, moment: datetime) -> dict[uuid.UUID, Terms]:
        """Every charge overridden at ``moment``, with its override."""
        found = {charge_id: self.in_effect(charge_id, moment) for charge_id in self._by_charge}
        return {charge_id: terms for charge_id, terms in found.items() if terms is not None}


NO_OVERRIDES = OverrideTimeline()


def carried_over(terms: Mapping[str, Any], charge: PlanCharge) -> Terms:
    """The part of an override that applies to another charge (a draft plan's, in a simulation):
    allowance, minimum and limit always; prices only where the other charge's model uses them."""
    used = MODEL_TERMS.get(charge.model, set()) | {"included", "minimum", "limit"}
    return {name: value for name, value in terms.items() if name in used}
