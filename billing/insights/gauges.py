"""What the operational gauges read from the database, in one query: the collection outbox, failed
Stripe webhooks, customers whose billing fails, open reconciliation discrepancies, open anomalies,
the oldest watermark and the usage waiting for the roller."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.insights import gauge_repository as repository

OUTBOX_WAITING = ("pending", "in_flight", "action_required")


@dataclass(frozen=True)
class GaugeSnapshot:
    """The gauges as of ``as_of``. An outbox status with nothing waiting is 0, with no age."""

    as_of: datetime
    outbox_depth: dict[str, int] = field(default_factory=dict)
    outbox_oldest_age_seconds: dict[str, float] = field(default_factory=dict)
    webhooks_failed: int = 0
    customers_failing: int = 0  # whose invoice could not be issued (billing_failures)
    discrepancies_open: int = 0
    anomalies_open: dict[str, int] = field(default_factory=dict)
    watermark_age_seconds: float | None = None  # the customer whose usage is least complete
    rollup_waiting: int = 0  # counted measurements the roller has not folded yet
    rollup_oldest_wait_seconds: float | None = None  # how long the oldest of them has waited


async def gauge_snapshot(session: AsyncSession, *, as_of: datetime) -> GaugeSnapshot:
    rows = await repository.gauge_readings(session, as_of=as_of)
    single = {family: value for family, _, value, _ in rows if family not in ("outbox", "anomalies_open")}
    oldest_wait = next(age for family, _, _, age in rows if family == "rollup_waiting")
    outbox = [(status, value, age) for family, status, value, age in rows if family == "outbox"]
    return GaugeSnapshot(
        as_of=as_of,
        outbox_depth=dict.fromkeys(OUTBOX_WAITING, 0) | {status: int(value) for status, value, _ in outbox},
        outbox_oldest_age_seconds={status: max(age, 0.0) for status, _, age in outbox},
        webhooks_failed=int(single["webhooks_failed"]),
        customers_failing=int(single["customers_failing"]),
        discrepancies_open=int(single["discrepancies_open"]),
        anomalies_open={kind: int(value) for family, kind, value, _ in rows if family == "anomalies_open"},
        watermark_age_seconds=None if single["watermark_age"] is None else max(single["watermark_age"], 0.0),
        rollup_waiting=int(single["rollup_waiting"]),
        rollup_oldest_wait_seconds=None if oldest_wait is None else max(oldest_wait, 0.0),
    )
