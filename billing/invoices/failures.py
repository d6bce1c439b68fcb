"""One customer's failure never stops billing for the others. When issuing a customer's invoice
raises anything (bad data stored for them, a bug, the database refusing an amount), the billing
run rolls that customer's transaction back, records the failure here in a transaction of its own,
opens a ``BILLING_FAILED`` anomaly for finance (once per run of failures: its window starts at the
first failure), and bills everyone else. Later runs try the customer again with exponential
backoff; the invoice that finally issues deletes the failure and resolves the anomaly."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.findings import Finding, raise_anomaly
from billing.invoices import failure_repository as repository
from billing.models import BillingFailure

ERROR_CHARS = 500
BILLING_FAILED = "BILLING_FAILED"


@dataclass(frozen=True)
class Backoff:
    """``first`` after the first failure, doubling after each one, never longer than ``longest``."""

    first: timedelta
    longest: timedelta

    def delay(self, attempts: int) -> timedelta:
        return min(self.first * 2 ** min(max(attempts - 1, 0), 32), self.longest)


def failure_summary(error: BaseException) -> str:
    """What went wrong, on one line, short enough for a table cell: the exception's type and first
    line. A database error is named by the driver's error, without SQLAlchemy's statement and
    parameters (they may be long and carry a customer's data)."""
    cause = getattr(error, "orig", None) or error
    first_line = (str(cause).replace("\x00", "").strip().splitlines() or [""])[0]  # PostgreSQL text holds no NUL
    text = f"{type(cause).__name__}: {first_line}" if first_line else type(cause).__name__
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


async def record_failure(
    session: AsyncSession,
    customer_id: uuid.UUID,
    error: str,
    *,
    as_of: datetime,
    backoff: Backoff,
    trace_id: str | None = None,
) -> BillingFailure:
    """Count one more failed attempt at the customer's invoice, schedule the next, and make sure
    finance has an open anomaly about it; the caller commits."""
    failure = await repository.failure_for_update(session, customer_id)
    if failure is None:
        failure = BillingFailure(
            customer_id=customer_id,
            attempts=0,
            first_failed_at=as_of,
            last_failed_at=as_of,
            next_attempt_at=as_of,
            error=error,
        )
    failure.attempts += 1
    failure.last_failed_at, failure.error, failure.trace_id = as_of, error, trace_id
    failure.next_attempt_at = as_of + backoff.delay(failure.attempts)
    session.add(failure)
    await session.flush()
    await raise_anomaly(
        session,
        Finding(
            kind=BILLING_FAILED,
            customer_id=customer_id,
            window_start=failure.first_failed_at,
            window_end=failure.first_failed_at,
            severity="high",
            summary=f"the customer's invoice could not be issued and is retried with backoff: {error}",
            numbers={"error": error, "firstFailedAt": failure.first_failed_at.isoformat(), "traceId": trace_id},
        ),
        as_of=as_of,
    )
    return failure


async def clear_failure(session: AsyncSession, customer_id: uuid.UUID, *, as_of: datetime) -> bool:
    """The customer's invoice was issued: forget their failure and resolve its anomaly. False when
    they had none; the caller commits."""
    attempts = await repository.delete_failure(session, customer_id)
    if attempts is None:
        return False
    await repository.resolve_open_anomalies(
        session,
        BILLING_FAILED,
        customer_id,
        note=f"billed after {attempts} failed attempt(s)",
        actor="billing",
        as_of=as_of,
    )
    return True


async def retry_times(session: AsyncSession) -> dict[uuid.UUID, datetime]:
    """When each failing customer may be tried again."""
    return await repository.retry_times(session)


async def failures_of(session: AsyncSession, customer_ids: list[uuid.UUID]) -> dict[uuid.UUID, BillingFailure]:
    return await repository.failures_of(session, customer_ids)
