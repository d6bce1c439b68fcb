"""The outbound webhook sender `tally serve` runs every ``TALLY_WEBHOOK_INTERVAL_SECONDS`` and
`tally webhook send` runs once: fan out the waiting events, then POST every due delivery.

It is an app-level job because an endpoint it disables must raise an anomaly
(``WEBHOOK_ENDPOINT_DISABLED``), which is billing's, and notifications may not import billing.
The anomaly is written in the transaction that records the failure and disables the endpoint.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.metrics import WEBHOOK_DELIVERIES, WEBHOOK_DELIVERY_DURATION
from app.settings import Settings
from billing.findings import Finding, raise_anomaly
from notifications.webhook_delivery import Answer, Claimed, Disabled, Sending, claim_due, fan_out, post, record

logger = logging.getLogger("tally.webhooks.outbound")
ANOMALY_KIND = "WEBHOOK_ENDPOINT_DISABLED"


def webhook_sending(settings: Settings) -> Sending:
    return Sending(
        retry_schedule=tuple(timedelta(seconds=wait) for wait in settings.webhook_retry_schedule_seconds),
        timeout_seconds=settings.webhook_timeout_seconds,
        lease=timedelta(seconds=settings.webhook_lease_seconds),
        disable_after_failures=settings.webhook_disable_after_failures,
        disable_after=timedelta(hours=settings.webhook_disable_after_hours),
    )


@dataclass
class SendReport:
    fanned_out: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    disabled: list[str] = field(default_factory=list)


def disabled_finding(disabled: Disabled, *, as_of: datetime) -> Finding:
    """Once per run of failures: the window starts when the run began."""
    return Finding(
        kind=ANOMALY_KIND,
        customer_id=None,
        window_start=disabled.failing_since,
        window_end=as_of,
        severity="high",
        summary=f"Webhook endpoint {disabled.url[:200]} disabled after {disabled.failures} failed attempts in a row",
        numbers={
            "endpointId": str(disabled.endpoint_id),
            "url": disabled.url,
            "failures": disabled.failures,
            "failingSince": disabled.failing_since.isoformat(),
            "lastError": disabled.last_error,
        },
    )


async def send_webhooks(
    sessions: async_sessionmaker[AsyncSession],
    sending: Sending,
    *,
    as_of: datetime,
    client: httpx.AsyncClient | None = None,
    batch: int = 50,
) -> SendReport:
    """Fan out every waiting event, then POST every delivery due by ``as_of``: claim a batch
    (committed: the lease), POST its deliveries concurrently, record each in a committed
    transaction of its own, until nothing is due."""
    report = SendReport()
    own_client = client is None
    http = client or httpx.AsyncClient(follow_redirects=False)
    limit = asyncio.Semaphore(sending.concurrency)

    async def bounded(one: Claimed) -> Answer:
        async with limit:
            return await post(http, sending, one, as_of=as_of)

    try:
        async with sessions() as session:
            while fanned := await fan_out(session, as_of=as_of):
                await session.commit()
                report.fanned_out += fanned
            await session.commit()
            while True:
                claimed = await claim_due(session, sending, as_of=as_of, limit=batch)
                await session.commit()
                if not claimed:
                    return report
                answers = await asyncio.gather(*(bounded(one) for one in claimed))
                for one, answer in zip(claimed, answers, strict=True):
                    outcome = await record(session, sending, one, answer, as_of=as_of)
                    if outcome is not None and outcome.disabled is not None:
                        await raise_anomaly(session, disabled_finding(outcome.disabled, as_of=as_of), as_of=as_of)
                        report.disabled.append(outcome.disabled.url)
                        logger.warning("webhook endpoint %s disabled", outcome.disabled.endpoint_id)
                    await session.commit()
                    if outcome is None:
                        continue
                    if outcome.status == "delivered":
                        report.delivered += 1
                    elif outcome.status == "pending":
                        report.retrying += 1
                    else:
                        report.failed += 1
                    WEBHOOK_DELIVERIES.add(1, {"outcome": {"pending": "retrying"}.get(outcome.status, outcome.status)})
                    WEBHOOK_DELIVERY_DURATION.record(answer.latency_ms / 1000)
    finally:
        if own_client:
            await http.aclose()
