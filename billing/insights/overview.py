"""The finance overview: what the console's landing page shows, each figure defined once here.

Amounts are per currency, never summed across currencies: ledger amounts in minor units,
monthly recurring revenue as an exact ``Decimal`` in major units (a yearly fee divided by twelve
is not a whole number of cents), rounded for display by the API with ``ledger.money``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.insights import overview_repository as repository
from billing.insights.gauges import gauge_snapshot

# How often a fee of each interval is billed in a year: a month's worth is fee × this / 12
# (multiplied first, so a weekly fee's month is exact).
BILLED_PER_YEAR = {"week": 52, "month": 12, "quarter": 4, "year": 1}
# Aging buckets of what is past due: (label, first day, last day or None for no end).
AGING_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("1–30 days", 1, 30),
    ("31–60 days", 31, 60),
    ("61–90 days", 61, 90),
    ("over 90 days", 91, None),
)
CURRENT_BUCKET = "current"
REVENUE_MONTHS = 12
USAGE_DAYS = 30
TOP_METERS = 3


def monthly_amount(base_fee: Decimal, interval: str) -> Decimal:
    """A recurring fee as its monthly worth: a yearly fee of 1,200 is 100 a month."""
    return base_fee * BILLED_PER_YEAR[interval] / 12


@dataclass(frozen=True)
class MrrMovement:
    """One currency's monthly recurring revenue at the start of the month and now, and what moved
    it, by customer: ``new`` (none at the start), ``churned`` (none now), ``expansion`` and
    ``contraction`` (more or less than at the start). ``start + new + expansion − contraction −
    churned = now``, exactly."""

    currency: str
    start: Decimal = Decimal(0)
    now: Decimal = Decimal(0)
    new: Decimal = Decimal(0)
    expansion: Decimal = Decimal(0)
    contraction: Decimal = Decimal(0)
    churned: Decimal = Decimal(0)
    customers: int = 0  # paying a recurring fee now


def mrr_movements(
    at_start: dict[tuple[Any, str], Decimal], at_now: dict[tuple[Any, str], Decimal]
) -> list[MrrMovement]:
    """Per currency, from each (customer, currency)'s monthly recurring revenue at both moments.
    Pure: the arithmetic is tested without a database."""
    totals: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(Decimal))
    for key in at_start.keys() | at_now.keys():
        currency = key[1]
        before, after = at_start.get(key, Decimal(0)), at_now.get(key, Decimal(0))
        figures = totals[currency]
        figures["start"] += before
        figures["now"] += after
        if after > 0:
            figures["customers"] += 1
        if before == 0 and after > 0:
            figures["new"] += after
        elif before > 0 and after == 0:
            figures["churned"] += before
        elif after > before:
            figures["expansion"] += after - before
        elif after < before:
            figures["contraction"] += before - after
    return [
        MrrMovement(
            currency=currency,
            **{name: Decimal(value) for name, value in figures.items() if name != "customers"},
            customers=int(figures["customers"]),
        )
        for currency, figures in sorted(totals.items())
    ]


def _mrr_by_customer(rows: Iterable[Any]) -> dict[tuple[Any, str], Decimal]:
    by_customer: dict[tuple[Any, str], Decimal] = defaultdict(Decimal)
    for row in rows:
        by_customer[(row["customer_id"], row["currency"])] += monthly_amount(row["base_fee"], row["interval"])
    return dict(by_customer)


def month_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def months_back(start: datetime, months: int) -> datetime:
    year, month = divmod(start.year * 12 + start.month - 1 - months, 12)
    return start.replace(year=year, month=month + 1)


async def mrr(session: AsyncSession, *, as_of: datetime) -> list[MrrMovement]:
    """Monthly recurring revenue: the base fees of subscriptions active at the moment (paused,
    canceled and trial-free parts excluded as their phases say), each as its monthly worth;
    usage charges are not recurring and not in it. Price overrides of base fees are not read."""
    start = month_start(as_of)
    at_start = _mrr_by_customer(await repository.recurring_fees_at(session, start))
    at_now = _mrr_by_customer(await repository.recurring_fees_at(session, as_of))
    return mrr_movements(at_start, at_now)


@dataclass(frozen=True)
class MonthRevenue:
    month: datetime
    currency: str
    billed: int  # minor units


async def revenue_by_month(
    session: AsyncSession, *, as_of: datetime, months: int = REVENUE_MONTHS
) -> list[MonthRevenue]:
    """Billed revenue per calendar month (UTC) and currency, the last ``months`` months with the
    current one: subtotals (before tax and before credits) of the invoices issued in the month,
    void invoices excluded, credit purchases and prepaid commitments excluded (prepayments). A
    month without invoices is a zero, so a chart shows the gap."""
    until = months_back(month_start(as_of), -1)
    since = months_back(until, months)
    rows = await repository.revenue_by_month(session, since=since, until=until)
    billed = {(row["month"].astimezone(UTC), row["currency"]): int(row["billed"]) for row in rows}
    currencies = sorted({currency for _, currency in billed})
    return [
        MonthRevenue(month, currency, billed.get((month, currency), 0))
        for month in (months_back(since, -n) for n in range(months))
        for currency in currencies
    ]


@dataclass
class Receivables:
    """One currency's unpaid invoices: ``outstanding`` is what they still ask for, ``overdue``
    the part past its due date; ``buckets`` split the outstanding amount by days past due
    (``current`` is not due yet). Minor units."""

    currency: str
    outstanding: int = 0
    overdue: int = 0
    invoices: int = 0
    overdue_invoices: int = 0
    buckets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(aging_labels(), 0))


def aging_labels() -> list[str]:
    return [CURRENT_BUCKET, *(label for label, _, _ in AGING_BUCKETS)]


def aging_bucket(days_overdue: int, past_due: bool) -> str:
    """The bucket of an unpaid invoice: due today counts as 1 day overdue once its due time passed."""
    if not past_due:
        return CURRENT_BUCKET
    days = max(days_overdue, 1)
    return next(label for label, first, last in AGING_BUCKETS if days >= first and (last is None or days <= last))


async def receivables(session: AsyncSession, *, as_of: datetime) -> list[Receivables]:
    by_currency: dict[str, Receivables] = {}
    for row in await repository.open_receivables(session, as_of=as_of):
        still_due = int(row["still_due"])
        if still_due <= 0:
            continue
        found = by_currency.setdefault(row["currency"], Receivables(row["currency"]))
        found.outstanding += still_due
        found.invoices += 1
        bucket = aging_bucket(row["days_overdue"], row["past_due"])
        found.buckets[bucket] += still_due
        if bucket != CURRENT_BUCKET:
            found.overdue += still_due
            found.overdue_invoices += 1
    return [by_currency[currency] for currency in sorted(by_currency)]


@dataclass(frozen=True)
class CreditsOutstanding:
    """Credit customers hold and may still spend (the remaining amount of active grants): a
    liability until consumed or expired. Minor units."""

    currency: str
    remaining: int
    customers: int


async def credits_outstanding(session: AsyncSession) -> list[CreditsOutstanding]:
    rows = await repository.credits_outstanding(session)
    return [CreditsOutstanding(row["currency"], int(row["remaining"]), int(row["customers"])) for row in rows]


@dataclass(frozen=True)
class MeterTrend:
    key: str
    name: str
    events: int  # over the whole window
    daily: list[tuple[datetime, int]]  # events counted each UTC day, oldest first, zeros included


async def usage_trend(
    session: AsyncSession, *, as_of: datetime, days: int = USAGE_DAYS, meters: int = TOP_METERS
) -> list[MeterTrend]:
    """The ``meters`` meters with the most events over the last ``days`` whole UTC days (today,
    not over yet, would read as a drop), and their events per day across all customers. Events,
    not quantities: a count of events adds up across meters of any aggregation and unit."""
    until = as_of.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since = until - timedelta(days=days)
    top = await repository.top_meters(session, since=since, until=until, limit=meters)
    if not top:
        return []
    counted = {
        (row["key"], row["day"].astimezone(UTC)): int(row["events"])
        for row in await repository.events_per_day(session, [row["key"] for row in top], since=since, until=until)
    }
    window = [since + timedelta(days=n) for n in range(days)]
    return [
        MeterTrend(
            row["key"], row["name"], int(row["events"]), [(day, counted.get((row["key"], day), 0)) for day in window]
        )
        for row in top
    ]


@dataclass(frozen=True)
class Operations:
    """What needs a person now: open anomalies and reconciliation discrepancies, and how far
    behind metering is (seconds; None when nothing waits or nothing was ever counted)."""

    anomalies_open: int
    discrepancies_open: int
    rollup_lag_seconds: float | None  # how long the oldest measurement has waited to be rolled up
    watermark_age_seconds: float | None  # the customer whose usage is least complete


async def operations(session: AsyncSession, *, as_of: datetime) -> Operations:
    snapshot = await gauge_snapshot(session, as_of=as_of)
    return Operations(
        anomalies_open=sum(snapshot.anomalies_open.values()),
        discrepancies_open=snapshot.discrepancies_open,
        rollup_lag_seconds=snapshot.rollup_oldest_wait_seconds,
        watermark_age_seconds=snapshot.watermark_age_seconds,
    )
