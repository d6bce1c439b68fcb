"""Outbound webhook delivery: fan each event out to the endpoints subscribed to its type, POST
each delivery signed per the Standard Webhooks specification, record every attempt, retry with
backoff, and count each endpoint's run of failures.

**At least once.** A claim (status ``sending``, ``attempts`` + 1, a lease) is committed before the
POST; a sender that dies during or after it leaves the delivery ``sending``, and once the lease
runs out it is claimed and POSTed again. The ``webhook-id`` header is the event's id on every
try, so a receiver can drop a repeat. **No promised order**: deliveries are concurrent and
retried independently; each body carries ``resource.version`` so the receiver keeps the newest.

**Retries.** A 2xx answer delivers; anything else (another status, a timeout, no connection) is
retried after ``Sending.retry_schedule[n]`` with ±``jitter`` (by default 5 s, 30 s, 2 min,
10 min, 1 h, 4 h, 12 h, 24 h and 30 h: ten tries over about three days), then ``failed``.

**Auto-disable.** An endpoint whose last ``disable_after_failures`` attempts all failed, the
first of them at least ``disable_after`` ago (by default 20 attempts over 24 hours: one
unreachable receiver, not one bad minute), is disabled in the transaction that records the
failure, and the outcome says so (the app raises an anomaly). Its waiting deliveries wait.

The sender reads the outbox only after the business transaction committed: nothing here can
hold up or fail a change.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlmodel.ext.asyncio.session import AsyncSession
from standardwebhooks import Webhook

from notifications import webhook_repository as repository
from notifications.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from notifications.webhook_endpoints import signing_secrets

EXCERPT_CHARS = 1024
ERROR_CHARS = 500
USER_AGENT = "Tally-Webhooks/1"
RETRY_SCHEDULE = tuple(
    timedelta(seconds=seconds) for seconds in (5, 30, 120, 600, 3600, 4 * 3600, 12 * 3600, 24 * 3600, 30 * 3600)
)


@dataclass(frozen=True)
class Sending:
    """How the sender works: the waits between tries (one fewer than the tries), their jitter, the
    POST's timeout, the lease of a claim, and the auto-disable rule."""

    retry_schedule: tuple[timedelta, ...] = RETRY_SCHEDULE
    jitter: float = 0.1
    timeout_seconds: float = 10.0
    lease: timedelta = timedelta(minutes=2)
    disable_after_failures: int = 20
    disable_after: timedelta = timedelta(hours=24)
    concurrency: int = 16

    @property
    def max_attempts(self) -> int:
        return len(self.retry_schedule) + 1

    def retry_delay(self, attempts: int) -> timedelta:
        """The wait after the ``attempts``-th failed try."""
        base = self.retry_schedule[min(attempts, len(self.retry_schedule)) - 1]
        return base * (1 + random.uniform(-self.jitter, self.jitter))


@dataclass(frozen=True)
class Claimed:
    delivery: WebhookDelivery
    endpoint: WebhookEndpoint
    event: WebhookEvent


@dataclass(frozen=True)
class Answer:
    """What one POST got: a status (None when there was no answer), an error, the latency."""

    status: int | None
    error: str | None
    latency_ms: int
    excerpt: str

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class Disabled:
    """An endpoint this attempt's failure disabled."""

    endpoint_id: uuid.UUID
    url: str
    failures: int
    failing_since: datetime
    last_error: str


@dataclass(frozen=True)
class Outcome:
    status: str  # delivered, pending (to retry) or failed
    answer: Answer
    disabled: Disabled | None = None


def body_of(event: WebhookEvent) -> bytes:
    """The JSON body: the same bytes on every try of the event, to every endpoint."""
    document: dict[str, Any] = {
        "type": event.type,
        "api_version": event.api_version,
        "id": str(event.id),
        "created_at": event.created_at.isoformat(),
        "data": event.data,
        "resource": {"type": event.resource_type, "id": event.resource_id, "version": event.resource_version},
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def headers_of(endpoint: WebhookEndpoint, event: WebhookEvent, body: bytes, *, as_of: datetime) -> dict[str, str]:
    """The Standard Webhooks headers: one ``v1,`` signature per secret in use, space-separated."""
    signatures = " ".join(
        Webhook(secret).sign(str(event.id), as_of, body) for secret in signing_secrets(endpoint, as_of=as_of)
    )
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": str(event.id),
        "webhook-timestamp": str(int(as_of.timestamp())),
        "webhook-signature": signatures,
    }


async def fan_out(session: AsyncSession, *, as_of: datetime, limit: int = 500) -> int:
    """Queue one delivery per subscribed, enabled endpoint for up to ``limit`` waiting events;
    how many events were fanned out. The caller commits."""
    return await repository.fan_out(session, as_of=as_of, limit=limit)


async def claim_due(session: AsyncSession, sending: Sending, *, as_of: datetime, limit: int = 50) -> list[Claimed]:
    """Lease up to ``limit`` due deliveries (SKIP LOCKED: concurrent senders claim different
    ones); the caller commits the claim before POSTing."""
    found = await repository.claim(session, as_of=as_of, lease_until=as_of + sending.lease, limit=limit)
    return [Claimed(delivery, endpoint, event) for delivery, endpoint, event in found]


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {' '.join(str(error).split())}".rstrip(": ")
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


async def post(client: httpx.AsyncClient, sending: Sending, claimed: Claimed, *, as_of: datetime) -> Answer:
    """POST the delivery once, reading at most ``EXCERPT_CHARS`` of the answer, within the timeout
    as a whole (a receiver that trickles its answer is cut off too)."""
    body = body_of(claimed.event)
    headers = headers_of(claimed.endpoint, claimed.event, body, as_of=as_of)
    started = time.perf_counter()
    status: int | None = None
    excerpt = b""
    try:
        async with asyncio.timeout(sending.timeout_seconds):
            async with client.stream("POST", claimed.endpoint.url, content=body, headers=headers) as response:
                status = response.status_code
                async for chunk in response.aiter_bytes():
                    excerpt += chunk
                    if len(excerpt) >= EXCERPT_CHARS:
                        break
    except (httpx.HTTPError, OSError, TimeoutError) as error:
        latency = round((time.perf_counter() - started) * 1000)
        reason = "TimeoutError: no answer within the timeout" if isinstance(error, TimeoutError) else _describe(error)
        return Answer(status, reason, latency, _excerpt(excerpt))
    latency = round((time.perf_counter() - started) * 1000)
    refused = None if 200 <= status < 300 else f"HTTP {status}"
    return Answer(status, refused, latency, _excerpt(excerpt))


def _excerpt(raw: bytes) -> str:
    text = raw[:EXCERPT_CHARS].decode("utf-8", errors="replace").replace("\x00", "")
    return text[:EXCERPT_CHARS]


async def record(
    session: AsyncSession, sending: Sending, claimed: Claimed, answer: Answer, *, as_of: datetime
) -> Outcome | None:
    """Record one attempt, the delivery's new state and the endpoint's run of failures; None when
    another sender claimed the delivery since (this try's lease ran out). The caller commits."""
    attempts = claimed.delivery.attempts
    if answer.delivered:
        status, next_at = "delivered", as_of
    elif attempts >= sending.max_attempts:
        status, next_at = "failed", as_of
    else:
        status, next_at = "pending", as_of + sending.retry_delay(attempts)
    recorded = await repository.record_attempt(
        session,
        {
            "attempt_id": uuid.uuid4(),
            "delivery_id": claimed.delivery.id,
            "attempts": attempts,
            "status": status,
            "next_attempt_at": next_at,
            "as_of": as_of,
            "response_status": answer.status,
            "error": answer.error,
            "latency_ms": answer.latency_ms,
            "excerpt": answer.excerpt,
        },
    )
    if not recorded:
        return None
    if answer.delivered:
        await repository.endpoint_succeeded(session, claimed.endpoint.id)
        return Outcome(status, answer)
    run = await repository.endpoint_failed(
        session,
        {
            "id": claimed.endpoint.id,
            "as_of": as_of,
            "failures": sending.disable_after_failures,
            "failing_before": as_of - sending.disable_after,
            "reason": f"disabled after {sending.disable_after_failures} failed attempts in a row: {answer.error}",
        },
    )
    disabled = None
    if run is not None and run[0]:
        disabled = Disabled(claimed.endpoint.id, claimed.endpoint.url, run[1], run[2], answer.error or "")
    return Outcome(status, answer, disabled)


async def prune(session: AsyncSession, *, as_of: datetime, retention: timedelta, limit: int = 10_000) -> int:
    """Delete at most ``limit`` deliveries delivered or failed with no attempt for ``retention``,
    and their attempts; how many. The events stay: a replay since an older moment queues their
    deliveries again."""
    return await repository.prune_finished(session, before=as_of - retention, limit=limit)
