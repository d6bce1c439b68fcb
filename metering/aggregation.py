"""Partial aggregates that merge exactly: hourly rollups, raw events at a period's edges, and
dimensions all combine into the quantity a meter reports. Pure, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal


@dataclass
class Partial:
    """Everything any aggregation needs of a set of events, closed under merging."""

    count: int = 0
    total: Decimal | None = None
    maximum: Decimal | None = None
    latest: tuple[datetime, str, Decimal | None] | None = None  # (event time, event id, value)
    uniques: set[str] = field(default_factory=set)

    def merge(self, other: Partial) -> Partial:
        return Partial(
            count=self.count + other.count,
            total=_add(self.total, other.total),
            maximum=_greatest(self.maximum, other.maximum),
            latest=max((x for x in (self.latest, other.latest) if x is not None), default=None, key=lambda x: x[:2]),
            uniques=self.uniques | other.uniques,
        )

    def add_event(self, occurred_at: datetime, event_id: str, value: Decimal | None, unique_value: str | None) -> None:
        self.count += 1
        if value is not None:
            self.total = _add(self.total, value)
            self.maximum = _greatest(self.maximum, value)
        if self.latest is None or (occurred_at, event_id) > self.latest[:2]:
            self.latest = (occurred_at, event_id, value)
        if unique_value is not None:
            self.uniques.add(unique_value)

    def quantity(self, aggregation: str) -> Decimal:
        """The meter's quantity; a meter that saw nothing reports zero."""
        if aggregation == "count":
            return Decimal(self.count)
        if aggregation == "sum":
            return self.total if self.total is not None else Decimal(0)
        if aggregation == "max":
            return self.maximum if self.maximum is not None else Decimal(0)
        if aggregation == "latest":
            return self.latest[2] if self.latest is not None and self.latest[2] is not None else Decimal(0)
        if aggregation == "unique_count":
            return Decimal(len(self.uniques))
        raise ValueError(f"unknown aggregation {aggregation!r}")


def _add(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    if a is None:
        return b
    return a if b is None else a + b


def _greatest(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def merge_all(partials: list[Partial]) -> Partial:
    result = Partial()
    for partial in partials:
        result = result.merge(partial)
    return result
