"""The anomaly detectors: each reads what it judges as of ``as_of`` and returns findings, which
:func:`billing.anomalies.scan` stores once per (kind, customer, window).

A detector's window is chosen so that scanning again finds the same window: whole UTC days and
hours, billing periods, an invoice's period, a stuck watermark. Findings carry their numbers in
``numbers``: amounts as integers in minor units beside their currency, quantities and ratios as
decimal strings.
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from billing import anomaly_repository as repository
from billing.anomalies import Finding, raise_anomaly
from customers.periods import periods_ending_within
from ledger.money import plain_decimal, round_to_minor, to_major
from ledger.verify import verify

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
SPIKE_HISTORY_DAYS = 14
SPIKE_MIN_HISTORY_DAYS = 7
DUPLICATE_BASELINE = timedelta(days=7)
# A quiet week without retries would make any retry a jump: the baseline share is at least this.
DUPLICATE_BASELINE_FLOOR = Decimal("0.005")
INVOICE_DELTA_SHARE = Decimal("0.5")
QUARANTINE_WAIT = timedelta(hours=1)


@dataclass(frozen=True)
class Thresholds:
    """The detectors' settings (``TALLY_ANOMALY_*``), as plain values for the billing layer."""

    spike_factor: Decimal = Decimal(3)
    duplicate_factor: Decimal = Decimal(3)
    duplicate_min_events: int = 100
    metering_lag: timedelta = timedelta(hours=1)
    late_usage_share: Decimal = Decimal("0.10")
    lookback: timedelta = timedelta(days=7)
    grace: timedelta = timedelta(hours=1)


Detector = Callable[[AsyncSession, datetime, Thresholds], Awaitable[list[Finding]]]


def _day_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _hour_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _ratio(numerator: Decimal, denominator: Decimal) -> str:
    return str(plain_decimal((numerator / denominator).quantize(Decimal("0.01"))))


def _percent(share: Decimal) -> str:
    return f"{_ratio(share * 100, Decimal(1))}%"


async def usage_spikes(session: AsyncSession, as_of: datetime, thresholds: Thresholds) -> list[Finding]:
    """USAGE_SPIKE: a UTC day's usage of a meter above k × the median of the customer's daily
    usage over the 14 days before it. The days judged are yesterday and today so far (a spike is
    worth knowing before the day ends).

    The median is taken over the days that had usage; with fewer than 7 such days there is no
    history to judge by, and a median of 0 makes every ratio infinite: both are ignored. Only
    additive or peak meters (count, sum, max) are judged: a distinct count or a latest value is
    not a daily quantity. Several meters spiking on one day are one finding (the key is the
    customer and the day), led by the largest ratio.
    """
    today = _day_start(as_of)
    days = [today - DAY, today]
    rows = await repository.daily_usage(session, days[0] - DAY * SPIKE_HISTORY_DAYS, as_of)
    series: dict[tuple[uuid.UUID, uuid.UUID], dict[datetime, Decimal]] = {}
    meters: dict[uuid.UUID, tuple[str, str]] = {}
    for row in rows:
        series.setdefault((row["customer_id"], row["meter_id"]), {})[row["day"]] = Decimal(row["quantity"] or 0)
        meters[row["meter_id"]] = (row["meter_key"], row["unit"])
    spikes: dict[tuple[uuid.UUID, datetime], list[dict[str, Any]]] = {}
    for (customer_id, meter_id), by_day in series.items():
        for day in days:
            quantity = by_day.get(day)
            history = [q for d, q in by_day.items() if day - DAY * SPIKE_HISTORY_DAYS <= d < day]
            if quantity is None or len(history) < SPIKE_MIN_HISTORY_DAYS:
                continue
            median = Decimal(statistics.median(history))
            if median <= 0 or quantity <= thresholds.spike_factor * median:
                continue
            key, unit = meters[meter_id]
            spikes.setdefault((customer_id, day), []).append(
                {
                    "meter": key,
                    "unit": unit,
                    "quantity": str(plain_decimal(quantity)),
                    "median": str(plain_decimal(median)),
                    "ratio": _ratio(quantity, median),
                    "historyDays": len(history),
                }
            )
    findings = []
    for (customer_id, day), found in spikes.items():
        found.sort(key=lambda spike: Decimal(spike["ratio"]), reverse=True)
        top = found[0]
        more = f" (and {len(found) - 1} more meter(s))" if len(found) > 1 else ""
        partial = " so far" if day == today else ""
        findings.append(
            Finding(
                kind="USAGE_SPIKE",
                customer_id=customer_id,
                window_start=day,
                window_end=day + DAY,
                severity="high" if Decimal(top["ratio"]) >= 10 else "medium",
                summary=(
                    f"{top['meter']} on {day:%Y-%m-%d}{partial}: {top['quantity']} {top['unit']}, "
                    f"{top['ratio']}x the 14-day median of {top['median']}{more}"
                ),
                numbers={"day": day.date().isoformat(), "factor": str(thresholds.spike_factor), "meters": found},
            )
        )
    return findings


async def invoice_deltas(session: AsyncSession, as_of: datetime, thresholds: Thresholds) -> list[Finding]:
    """INVOICE_DELTA: a period invoice issued in the lookback whose total is outside ±50% of the
    median of the customer's three period invoices before it.

    With fewer than three earlier invoices there is no trailing median yet, and a median of 0
    gives no scale: both are ignored. Void invoices count for neither side.
    """
    findings = []
    for row in await repository.invoices_with_previous(session, as_of - thresholds.lookback, as_of):
        previous = list(row["previous_totals"])
        if len(previous) < 3:
            continue
        median = int(statistics.median(previous))
        total = int(row["total"])
        if median <= 0 or abs(total - median) <= INVOICE_DELTA_SHARE * median:
            continue
        currency = row["currency"]
        change = Decimal(total - median) / median * 100
        findings.append(
            Finding(
                kind="INVOICE_DELTA",
                customer_id=row["customer_id"],
                window_start=row["period_start"],
                window_end=row["period_end"],
                severity="high" if abs(change) >= 100 else "medium",
                summary=(
                    f"Invoice INV-{row['number']:06d} total {to_major(total, currency)} {currency} is "
                    f"{change.quantize(Decimal(1)):+}% against the median {to_major(median, currency)} {currency} "
                    f"of the 3 before it"
                ),
                numbers={
                    "invoiceId": str(row["id"]),
                    "invoiceNumber": row["number"],
                    "currency": currency,
                    "total": total,
                    "median": median,
                    "previousTotals": previous,
                    "changePercent": str(change.quantize(Decimal("0.1"))),
                },
            )
        )
    return findings


async def zero_usage_active(session: AsyncSession, as_of: datetime, thresholds: Thresholds) -> list[Finding]:
    """ZERO_USAGE_ACTIVE: an active customer on a paying plan (a base fee or usage charges) who
    sent no usage event at all in a whole billing period that closed in the lookback.

    A period counts as closed once its grace for late events has passed; a period the
    subscription started inside of is not whole and is not judged. The plan is the one in effect
    now (a plan changed during the period is judged on its newest version).
    """
    closed_by = as_of - thresholds.grace
    candidates: dict[tuple[uuid.UUID, datetime, datetime], dict[str, object]] = {}
    for row in await repository.paying_subscriptions(session):
        periods = periods_ending_within(row["started_at"], row["interval"], closed_by - thresholds.lookback, closed_by)
        for start, end in periods:
            if start >= row["started_at"]:
                candidates[(row["customer_id"], start, end)] = dict(row)
    with_usage = await repository.ranges_with_events(session, list(candidates))
    findings = []
    for (customer_id, start, end), row in candidates.items():
        if (customer_id, start) in with_usage:
            continue
        currency = str(row["currency"])
        base_fee = round_to_minor(Decimal(str(row["base_fee"])), currency)
        findings.append(
            Finding(
                kind="ZERO_USAGE_ACTIVE",
                customer_id=customer_id,
                window_start=start,
                window_end=end,
                severity="medium",
                summary=(
                    f"No usage at all from {start:%Y-%m-%d} to {end:%Y-%m-%d} on the paying plan {row['plan_key']} "
                    f"(base fee {to_major(base_fee, currency)} {currency}, {row['charges']} usage charge(s))"
                ),
                numbers={
                    "plan": row["plan_key"],
                    "currency": currency,
                    "baseFee": base_fee,
                    "charges": row["charges"],
                    "events": 0,
                },
            )
        )
    return findings


async def duplicate_rate(session: AsyncSession, as_of: datetime, thresholds: Thresholds) -> list[Finding]:
    """DUPLICATE_RATE: the share of duplicates among the events the edge sent in the last whole
    hour, above ``factor`` × that share over the 7 days before it (the edge retrying more than it
    used to: a flaky network, a producer stuck in a loop). Duplicates are the ones ingestion
    answered as such (``ingest_batches.duplicates``); quiet hours are not judged."""
    end = _hour_start(as_of)
    start = end - HOUR
    accepted, duplicates = await repository.edge_counts(session, start, end)
    sent = accepted + duplicates
    if sent < thresholds.duplicate_min_events or duplicates == 0:
        return []
    base_accepted, base_duplicates = await repository.edge_counts(session, start - DUPLICATE_BASELINE, start)
    base_sent = base_accepted + base_duplicates
    share = Decimal(duplicates) / sent
    baseline = Decimal(base_duplicates) / base_sent if base_sent else Decimal(0)
    if share <= thresholds.duplicate_factor * max(baseline, DUPLICATE_BASELINE_FLOOR):
        return []
    return [
        Finding(
            kind="DUPLICATE_RATE",
            customer_id=None,
            window_start=start,
            window_end=end,
            severity="high" if share >= Decimal("0.5") else "medium",
            summary=(
                f"{duplicates} of {sent} events from the edge were duplicates from {start:%H:%M} to {end:%H:%M} UTC "
                f"({_percent(share)}), against {_percent(baseline)} over the 7 days before"
            ),
            numbers={
                "events": sent,
                "duplicates": duplicates,
                "share": str(share.quantize(Decimal("0.0001"))),
                "baselineEvents": base_sent,
                "baselineDuplicates": base_duplicates,
                "baselineShare": str(baseline.quantize(Decimal("0.0001"))),
                "factor": str(thresholds.duplicate_factor),
            },
        )
    ]


async def quarantine(session: AsyncSession, as_of: datetime, thresholds: Thresholds) -> list[Finding]:
    """QUARANTINE: events waiting in quarantine (unknown customer or event type) for more than an
    hour: usage that will not be billed until someone creates the customer or meter. The window
    starts at the oldest waiting event's hour, so the same backlog is one finding."""
    rows = await repository.quarantine_waiting(session, as_of - QUARANTINE_WAIT)
    if not rows:
        return []
    waiting = sum(int(row["waiting"]) for row in rows)
    oldest = min(row["oldest"] for row in rows)
    hours = Decimal((as_of - oldest).total_seconds()) / 3600
    by_code = {row["code"]: int(row["waiting"]) for row in rows}
    return [
        Finding(
            kind="QUARANTINE",
            customer_id=None,
            window_start=_hour_start(oldest),
            window_end=_hour_start(as_of) + HOUR,
            severity="high" if hours >= 24 else "medium",
            summary=(
                f"{waiting} event(s) waiting in quarantine for over an hour, "
                f"the oldest for {_ratio(hours, Decimal(1))} h "
                f"({', '.join(f'{code}: {count}' for code, count in by_code.items())})"
            ),
            numbers={"waiting": waiting, "oldestReceivedAt": oldest.isoformat(), "byCode": by_code},
        )
    ]


async def metering_lag(session: AsyncSession, as_of: datetime, thresholds: Thresholds) -> list[Finding]:
    """METERING_LAG: a customer the edge is sending events to now (within the threshold) whose
    counted usage (the watermark: the latest event time counted) trails that receipt by more than
    the threshold: their events arrive late, so their usage and entitlements are behind.

    Measured against the latest receipt rather than the clock: a customer who sends nothing (a
    quiet hobby account, a weekend) is not lagging, and a day's backfill long ago is not lag now.
    The cost: an edge that stops sending altogether looks quiet here (a paying customer silent
    for a whole period is ZERO_USAGE_ACTIVE). The window starts at the stuck watermark, so one
    stall is one finding.
    """
    findings = []
    for row in await repository.lagging_watermarks(session, thresholds.metering_lag, as_of):
        behind = row["last_received_at"] - row["watermark"]
        minutes = int(behind.total_seconds() // 60)
        findings.append(
            Finding(
                kind="METERING_LAG",
                customer_id=row["customer_id"],
                window_start=row["watermark"],
                window_end=row["last_received_at"],
                severity="high" if behind >= DAY else "medium",
                summary=(
                    f"Usage counted through {row['watermark']:%Y-%m-%d %H:%M} UTC, {minutes} min behind the events "
                    f"last received at {row['last_received_at']:%Y-%m-%d %H:%M} UTC"
                ),
                numbers={
                    "watermark": row["watermark"].isoformat(),
                    "lastReceivedAt": row["last_received_at"].isoformat(),
                    "lagMinutes": minutes,
                    "thresholdMinutes": int(thresholds.metering_lag.total_seconds() // 60),
                },
            )
        )
    return findings


async def late_usage(session: AsyncSession, as_of: datetime, thresholds: Thresholds) -> list[Finding]:
    """LATE_USAGE: an invoice issued in the lookback whose late-usage lines (events that arrived
    after their period was invoiced) are above the threshold share of its subtotal: the edge or
    the grace period is too slow for the billing run. Invoices with no positive subtotal give no
    share and are not judged."""
    findings = []
    for row in await repository.late_usage_shares(session, as_of - thresholds.lookback, as_of):
        subtotal, late = int(row["subtotal"]), int(row["late_amount"])
        if subtotal <= 0 or abs(late) <= thresholds.late_usage_share * subtotal:
            continue
        currency = row["currency"]
        share = Decimal(late) / subtotal
        findings.append(
            Finding(
                kind="LATE_USAGE",
                customer_id=row["customer_id"],
                window_start=row["period_start"],
                window_end=row["period_end"],
                severity="high" if abs(share) >= Decimal("0.5") else "medium",
                summary=(
                    f"Late usage is {to_major(late, currency)} {currency} of invoice INV-{row['number']:06d}'s "
                    f"subtotal {to_major(subtotal, currency)} {currency} ({_percent(share)})"
                ),
                numbers={
                    "invoiceId": str(row["id"]),
                    "invoiceNumber": row["number"],
                    "currency": currency,
                    "lateAmount": late,
                    "subtotal": subtotal,
                    "lateLines": int(row["late_lines"]),
                    "share": str(share.quantize(Decimal("0.0001"))),
                    "threshold": str(thresholds.late_usage_share),
                },
            )
        )
    return findings


async def unreconciled(session: AsyncSession, as_of: datetime, thresholds: Thresholds) -> list[Finding]:
    """UNRECONCILED: open differences between the ledger and Stripe, one finding per customer and
    UTC day the reconciliation first saw them."""
    grouped: dict[tuple[uuid.UUID | None, datetime], list[dict[str, str | None]]] = {}
    for row in await repository.open_discrepancies(session, as_of):
        grouped.setdefault((row["customer_id"], _day_start(row["detected_at"])), []).append(
            {
                "discrepancyId": str(row["id"]),
                "kind": row["kind"],
                "objectId": row["object_id"],
                "invoiceId": str(row["invoice_id"]) if row["invoice_id"] else None,
                "summary": row["summary"],
            }
        )
    findings = []
    for (customer_id, day), discrepancies in grouped.items():
        first = discrepancies[0]
        more = f" (and {len(discrepancies) - 1} more)" if len(discrepancies) > 1 else ""
        findings.append(
            Finding(
                kind="UNRECONCILED",
                customer_id=customer_id,
                window_start=day,
                window_end=day + DAY,
                severity="high",
                summary=(
                    f"{len(discrepancies)} open difference(s) with Stripe: {first['kind']} {first['summary']}{more}"
                ),
                numbers={"discrepancies": discrepancies},
            )
        )
    return findings


async def ledger_invariants(session: AsyncSession, as_of: datetime, thresholds: Thresholds) -> list[Finding]:
    """LEDGER_INVARIANT: anything `tally ledger verify` reports. It must never fire; when it does,
    it is critical and listed before everything else. One finding a UTC day while it lasts."""
    violations = await verify(session)
    if not violations:
        return []
    day = _day_start(as_of)
    return [
        Finding(
            kind="LEDGER_INVARIANT",
            customer_id=None,
            window_start=day,
            window_end=day + DAY,
            severity="critical",
            summary=f"{len(violations)} ledger invariant violation(s): {violations[0]}",
            numbers={
                "violations": [{"check": v.check, "subject": v.subject, "detail": v.detail} for v in violations],
            },
        )
    ]


# Cheapest first; the ledger check reads every posting.
DETECTORS: dict[str, Detector] = {
    "QUARANTINE": quarantine,
    "DUPLICATE_RATE": duplicate_rate,
    "METERING_LAG": metering_lag,
    "UNRECONCILED": unreconciled,
    "INVOICE_DELTA": invoice_deltas,
    "LATE_USAGE": late_usage,
    "ZERO_USAGE_ACTIVE": zero_usage_active,
    "USAGE_SPIKE": usage_spikes,
    "LEDGER_INVARIANT": ledger_invariants,
}


@dataclass(frozen=True)
class ScanReport:
    """What one scan found, by kind: everything it found, and how much of that was new."""

    found: dict[str, int]
    new: dict[str, int]


async def scan(
    session: AsyncSession,
    *,
    as_of: datetime,
    thresholds: Thresholds,
    on_detector: Callable[[str], None] = lambda kind: None,
) -> ScanReport:
    """Run every detector and store what it finds, in the caller's transaction. Findings already
    stored (same kind, customer and window) change nothing, so scanning again is harmless."""
    found: dict[str, int] = {}
    new: dict[str, int] = {}
    for kind, detect in DETECTORS.items():
        findings = await detect(session, as_of, thresholds)
        found[kind] = len(findings)
        new[kind] = sum([await raise_anomaly(session, finding, as_of=as_of) for finding in findings])
        on_detector(kind)
    return ScanReport(found=found, new=new)
