"""What a price change does to customers: totals, the distribution of changes, the biggest
movers. Pure: the caller rates each customer's periods under the current and the draft pricing."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

# Relative change buckets (percent), as finance reads them: who pays a lot less, about the same,
# or a lot more.
BUCKETS: tuple[tuple[str, Decimal | None, Decimal | None], ...] = (
    ("below -20%", None, Decimal(-20)),
    ("-20% to -5%", Decimal(-20), Decimal(-5)),
    ("-5% to +5%", Decimal(-5), Decimal(5)),
    ("+5% to +20%", Decimal(5), Decimal(20)),
    ("above +20%", Decimal(20), None),
)


@dataclass(frozen=True)
class CustomerOutcome:
    customer_key: str
    name: str
    plan_key: str
    currency: str
    periods: int
    current: int  # minor units, over all simulated periods
    simulated: int

    @property
    def difference(self) -> int:
        return self.simulated - self.current

    @property
    def change_percent(self) -> Decimal | None:
        """None when the customer paid nothing before (any change is infinite)."""
        if self.current == 0:
            return None
        return (Decimal(self.difference) * 100 / Decimal(abs(self.current))).quantize(Decimal("0.1"))


def bucket_of(outcome: CustomerOutcome) -> str:
    percent = outcome.change_percent
    if percent is None:
        return "new revenue" if outcome.difference > 0 else "-5% to +5%" if outcome.difference == 0 else "below -20%"
    for label, low, high in BUCKETS:
        if (low is None or percent >= low) and (high is None or percent < high):
            return label
    raise AssertionError("buckets cover every change")


@dataclass(frozen=True)
class SimulationSummary:
    outcomes: list[CustomerOutcome]
    current_by_currency: dict[str, int] = field(default_factory=dict)
    simulated_by_currency: dict[str, int] = field(default_factory=dict)
    distribution: dict[str, int] = field(default_factory=dict)
    biggest_movers: list[CustomerOutcome] = field(default_factory=list)


def summarize(outcomes: list[CustomerOutcome], *, movers: int = 10) -> SimulationSummary:
    current: Counter[str] = Counter()
    simulated: Counter[str] = Counter()
    for outcome in outcomes:
        current[outcome.currency] += outcome.current
        simulated[outcome.currency] += outcome.simulated
    labels = [label for label, _, _ in BUCKETS] + ["new revenue"]
    counts = Counter(bucket_of(outcome) for outcome in outcomes)
    return SimulationSummary(
        outcomes=outcomes,
        current_by_currency=dict(current),
        simulated_by_currency=dict(simulated),
        distribution={label: counts[label] for label in labels},
        biggest_movers=sorted(outcomes, key=lambda o: (-abs(o.difference), o.customer_key))[:movers],
    )
