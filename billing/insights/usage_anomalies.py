"""Anomalies of usage and metering: spikes, paying customers with no usage, the edge retrying
more than it used to, events stuck in quarantine, and customers whose counted usage lags."""

from __future__ import annotations

import statistics
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.findings import Finding
from billing.insights import anomaly_repository as repository
from billing.insights.anomalies import DAY, HOUR, Thresholds, day_start, hour_start, percent, ratio
from customers.periods import periods_ending_within
from ledger.money import plain_decimal, round_to_minor, to_major
from metering import repository as metering_repository
from metering.log_backlog import LogBacklog

SPIKE_HISTORY_DAYS = 14
SPIKE_MIN_HISTORY_DAYS = 7
DUPLICATE_BASELINE = timedelta(days=7)
# A quiet week without retries would make any retry a jump: the baseline share is at least this.
DUPLICATE_BASELINE_FLOOR = Decimal("0.005")
QUARANTINE_WAIT = timedelta(hours=1)


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
    today = day_start(as_of)
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
                    "ratio": ratio(quantity, median),
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
    end = hour_start(as_of)
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
                f"({percent(share)}), against {percent(baseline)} over the 7 days before"
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
            window_start=hour_start(oldest),
            window_end=hour_start(as_of) + HOUR,
            severity="high" if hours >= 24 else "medium",
            summary=(
                f"{waiting} event(s) waiting in quarantine for over an hour, "
                f"the oldest for {ratio(hours, Decimal(1))} h "
                f"({', '.join(f'{code}: {count}' for code, count in by_code.items())})"
            ),
            numbers={"waiting": waiting, "oldestReceivedAt": oldest.isoformat(), "byCode": by_code},
        )
    ]


async def metering_lag(
    session: AsyncSession, as_of: datetime, thresholds: Thresholds, *, log_backlog: LogBacklog | None = None
) -> list[Finding]:
    """METERING_LAG: a customer the edge is sending events to now (within the threshold) whose
    counted usage (the watermark: the latest event time counted) trails that receipt by more than
    the threshold: their events arrive late, so their usage and entitlements are behind.

    Measured against the latest receipt rather than the clock: a customer who sends nothing (a
    quiet hobby account, a weekend) is not lagging, and a day's backfill long ago is not lag now.
    The cost: an edge that stops sending altogether looks quiet here (a paying customer silent
    for a whole period is ZERO_USAGE_ACTIVE). The window starts at the stuck watermark, so one
    stall is one finding.

    In edge mode the events waiting in the event log (``log_backlog``) are not in PostgreSQL at
    all, so no watermark can show them: :func:`event_log_lag` judges them.
    """
    findings = await event_log_lag(session, as_of, thresholds, log_backlog) if log_backlog is not None else []
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


async def event_log_lag(
    session: AsyncSession, as_of: datetime, thresholds: Thresholds, log_backlog: LogBacklog
) -> list[Finding]:
    """METERING_LAG of the whole edge (no customer): the lag a user sees is how long the oldest
    message has waited in the event log plus how long the oldest counted measurement has waited
    for the roller, judged against the threshold. The window starts at the hour of the log's
    oldest message, so one stall is one finding while it lasts."""
    oldest_logged = log_backlog.oldest_pending_at
    if oldest_logged is None:
        return []
    in_log = max(as_of - oldest_logged, timedelta(0))
    oldest_counted = (await metering_repository.rollup_backlog(session))["oldest"]
    in_roll_up = timedelta(0) if oldest_counted is None else max(as_of - oldest_counted, timedelta(0))
    behind = in_log + in_roll_up
    if behind <= thresholds.metering_lag:
        return []
    busiest = max(log_backlog.partitions, key=lambda partition: partition.pending)
    minutes = int(behind.total_seconds() // 60)
    return [
        Finding(
            kind="METERING_LAG",
            customer_id=None,
            window_start=hour_start(oldest_logged),
            window_end=hour_start(as_of) + HOUR,
            severity="high" if behind >= DAY else "medium",
            summary=(
                f"Usage is {minutes} min behind the edge: {log_backlog.pending} message(s) wait in the event log, "
                f"the oldest stored {oldest_logged:%Y-%m-%d %H:%M} UTC ({int(in_log.total_seconds() // 60)} min), "
                f"and the roller is {int(in_roll_up.total_seconds() // 60)} min behind"
            ),
            numbers={
                "lagMinutes": minutes,
                "logOldestPendingSeconds": int(in_log.total_seconds()),
                "logPending": log_backlog.pending,
                "logBusiestPartition": busiest.partition,
                "rollUpWaitSeconds": int(in_roll_up.total_seconds()),
                "thresholdMinutes": int(thresholds.metering_lag.total_seconds() // 60),
            },
        )
    ]
