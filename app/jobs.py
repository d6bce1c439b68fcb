"""Periodic jobs run inside `tally serve`. Each job commits its own work; a failure is logged
and retried at the next tick rather than stopping the server."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from opentelemetry import trace
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app import trace_store
from app.anomaly_scan import scan_anomalies
from app.billing_run import billing_window, run_billing
from app.collection import stripe_gateway
from app.credit_balances import check_credit_balances
from app.email import email_delivery, send_emails
from app.metrics import INVOICE_ACCURACY_DIFFERENCES, STRIPE_EVENT_FAILURES, refresh_gauges, refresh_log_gauges
from app.settings import Settings
from app.telemetry import IDLE_ATTRIBUTE, JOB_ATTRIBUTE
from app.threshold_run import invoice_thresholds
from app.usage_ingest import log_config
from app.webhook_sender import send_webhooks, webhook_sending
from billing.collection.outbox import claim_next, collect, payer_of
from billing.collection.refunds import claim_next_refund, send_refund
from billing.collection.webhooks import Processing, process_next
from billing.insights import alerts
from billing.insights.accuracy import AccuracyReport, verify_invoices
from billing.invoices.failures import Backoff
from billing.invoices.service import BillingWindow
from billing.reconciliation.service import last_reconciled_at, reconcile
from customers.credits import expire_grants
from customers.trials import announce_trial_endings
from metering import authorizations
from metering.event_log import EventLog
from metering.service import ROLL_UP_LIMIT, roll_up_touching, take_snapshot
from notifications import webhook_delivery

logger = logging.getLogger("tally.jobs")
tracer = trace.get_tracer("tally.jobs")
TICK_SECONDS = 300
PRUNE_BATCH = 10_000  # rows deleted a transaction, so a large backlog never holds one long transaction
Result = TypeVar("Result")


def found_work(result: object) -> bool:
    """What a job's result says about whether it did anything: a count above zero."""
    return bool(result)


async def traced(
    name: str, job: Callable[[], Awaitable[Result]], *, worked: Callable[[Result], bool] = found_work
) -> Result:
    """Run one go of a background job in a trace of its own (``job: <name>``). A go for which
    ``worked`` says no is marked idle, and app.telemetry drops its whole trace: the Traces page
    shows what the jobs did, not every time they looked and found nothing. A job that fails is
    always kept."""
    with tracer.start_as_current_span(f"job: {name}", attributes={JOB_ATTRIBUTE: name}) as span:
        result = await job()
        if not worked(result):
            span.set_attribute(IDLE_ATTRIBUTE, True)
    return result


async def prune_spans(sessions: async_sessionmaker[AsyncSession], settings: Settings, *, as_of: datetime) -> int:
    """Keep the span store bounded to ``TALLY_SPAN_RETENTION_HOURS``."""
    async with sessions() as session:
        removed = await trace_store.prune_spans(
            session, older_than=as_of - timedelta(hours=settings.span_retention_hours)
        )
        await session.commit()
    return removed


async def prune_usage_authorizations(sessions: async_sessionmaker[AsyncSession], *, as_of: datetime) -> int:
    """Delete authorizations long expired: they hold nothing since they expired (a comparison at
    read time), so this only bounds the table; their keys stop answering retries then."""
    removed = 0
    while True:
        async with sessions() as session:
            batch = await authorizations.prune(session, as_of=as_of, limit=PRUNE_BATCH)
            await session.commit()
        removed += batch
        if batch < PRUNE_BATCH:
            return removed


async def prune_webhook_deliveries(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, *, as_of: datetime
) -> int:
    """Keep finished webhook deliveries and their attempts for ``TALLY_WEBHOOK_RETENTION_DAYS``."""
    removed = 0
    while True:
        async with sessions() as session:
            batch = await webhook_delivery.prune(
                session, as_of=as_of, retention=timedelta(days=settings.webhook_retention_days), limit=PRUNE_BATCH
            )
            await session.commit()
        removed += batch
        if batch < PRUNE_BATCH:
            return removed


async def expire_credit_grants(sessions: async_sessionmaker[AsyncSession], *, as_of: datetime) -> int:
    async with sessions() as session:
        expired = await expire_grants(session, as_of=as_of)
        await session.commit()
    return expired


async def tell_trial_endings(sessions: async_sessionmaker[AsyncSession], *, as_of: datetime) -> int:
    """``subscription.trial_ending`` for each trial ending within three days (once per trial end)."""
    async with sessions() as session:
        told = await announce_trial_endings(session, as_of=as_of)
        await session.commit()
    return told


def dunning_schedule(settings: Settings) -> tuple[timedelta, ...]:
    return tuple(timedelta(days=days) for days in settings.dunning_retry_days)


def stripe_event_processing(settings: Settings) -> Processing:
    return Processing(
        stripe_gateway(settings),
        dunning_schedule(settings),
        backoff=Backoff(first=timedelta(minutes=settings.stripe_event_retry_minutes), longest=timedelta(hours=24)),
        max_attempts=settings.stripe_event_max_attempts,
    )


async def process_stripe_events(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, *, as_of: datetime
) -> int:
    """Act on every stored Stripe event a handler exists for (and every failed one whose retry is
    due), one committed transaction each; an event that fails is parked and counted, never in the
    way of the next. How many were acted on."""
    processing = stripe_event_processing(settings)
    processed = 0
    async with sessions() as session:
        while (event := await process_next(session, processing, as_of=as_of)) is not None:
            await session.commit()
            processed += 1
            if event.status == "failed":
                STRIPE_EVENT_FAILURES.add(1, {"type": event.type})
                logger.warning("Stripe event %s (%s) failed, attempt %d", event.id, event.type, event.attempts)
        await session.commit()
    return processed


async def collect_invoices(sessions: async_sessionmaker[AsyncSession], settings: Settings, *, as_of: datetime) -> int:
    """Work the collection outbox until no invoice is due, then the refund outbox (credit notes paid
    back to the card); how many were attempted, 0 when collection is off (no key)."""
    gateway = stripe_gateway(settings)
    if gateway is None:
        return 0
    attempted = 0
    async with sessions() as session:
        while (claimed := await claim_next(session, as_of=as_of)) is not None:
            await session.commit()  # the attempt number is durable before Stripe hears of it
            payer = await payer_of(session, gateway, claimed, as_of=as_of)
            await session.commit()  # a Stripe customer just made is kept before it is charged
            if payer is not None:
                await collect(session, gateway, claimed, payer, as_of=as_of, retry_after=dunning_schedule(settings))
                await session.commit()
            attempted += 1
        while (refund := await claim_next_refund(session, as_of=as_of)) is not None:
            await session.commit()  # the claim is durable before Stripe hears of the refund
            await send_refund(session, gateway, refund, as_of=as_of)
            await session.commit()
            attempted += 1
    return attempted


async def reconcile_daily(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, *, as_of: datetime
) -> int | None:
    """Reconcile with Stripe when the last run is a day old; the number of discrepancies found,
    None when no reconciliation was due (or collection is off)."""
    gateway = stripe_gateway(settings)
    if gateway is None:
        return None
    async with sessions() as session:
        if await last_reconciled_at(session) > as_of - timedelta(days=1):
            return None
        report = await reconcile(session, gateway, as_of=as_of)
        await session.commit()
    return len(report.discrepancies)


async def snapshot_metering(sessions: async_sessionmaker[AsyncSession], *, as_of: datetime) -> None:
    async with sessions() as session:
        await take_snapshot(session, as_of=as_of)
        await session.commit()


async def snapshot_gauges(sessions: async_sessionmaker[AsyncSession], settings: Settings, *, as_of: datetime) -> None:
    """Refresh the event log's gauges and the database's for the OTLP export (a Prometheus scrape
    refreshes them itself). The log is read over a connection of its own, made for the occasion."""
    event_log = EventLog(log_config(settings)) if settings.nats_servers else None
    try:
        await refresh_log_gauges(event_log, as_of=as_of, wait_seconds=settings.nats_publish_timeout_seconds)
    finally:
        if event_log is not None:
            await event_log.close()
    async with sessions() as session:
        await refresh_gauges(session, as_of=as_of)


async def verify_invoice_accuracy(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, *, as_of: datetime, sample: int | None = None
) -> AccuracyReport:
    """Re-rate a sample of issued invoices from raw events; commit the anomalies it raises and
    report the differing lines as ``tally_invoice_accuracy_differences`` (target: 0)."""
    async with sessions() as session:
        report = await verify_invoices(session, sample=sample or settings.invoice_accuracy_sample, as_of=as_of)
        await session.commit()
    INVOICE_ACCURACY_DIFFERENCES.set(report.differences)
    return report


async def roll_up_usage(
    sessions: async_sessionmaker[AsyncSession], *, limit: int = ROLL_UP_LIMIT, settings: Settings | None = None
) -> int:
    """Fold what waits into the rollups, a committed transaction of at most ``limit`` measurements
    per go, until nothing is left (or another process has the turn); how many were folded. After
    each go commits, the alerts of the customers it touched are evaluated (billing.insights.alerts) and
    their interim invoices issued where usage reached a plan's threshold (app.threshold_run), in
    transactions of their own: a failing evaluation never holds the rollups back."""
    settings = settings or Settings()
    window = billing_window(settings)
    folded_in_all = 0
    while True:
        async with sessions() as session:
            rolled = await roll_up_touching(session, limit=limit)
            await session.commit()
        if rolled is not None and rolled.customer_ids:
            await evaluate_alerts(sessions, rolled.customer_ids, window=window)
            await invoice_thresholds(sessions, settings, as_of=datetime.now(UTC), customer_ids=rolled.customer_ids)
        folded = None if rolled is None else rolled.folded
        folded_in_all += folded or 0
        if folded is None or folded < limit:
            return folded_in_all


async def evaluate_alerts(
    sessions: async_sessionmaker[AsyncSession], customer_ids: frozenset[uuid.UUID], *, window: BillingWindow
) -> None:
    try:
        async with sessions() as session:
            await alerts.evaluate(session, customer_ids, as_of=datetime.now(UTC), window=window)
            await session.commit()
    except Exception:
        logger.exception("evaluating usage alerts failed; the next roll-up of these customers retries")


async def run_roller(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    """Keep the rollups close behind ingestion, every ``TALLY_ROLLUP_INTERVAL_SECONDS``, and issue
    the interim invoices the usage rolled up made due (threshold invoicing)."""
    while True:
        try:
            await traced("roll-up", lambda: roll_up_usage(sessions, settings=settings))
        except Exception:
            logger.exception("usage roll-up failed; retrying")
        await asyncio.sleep(settings.rollup_interval_seconds)


async def run_email_sender(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    """Send due emails every ``TALLY_EMAIL_INTERVAL_SECONDS`` (nothing while email is off)."""
    delivery = email_delivery(settings)
    if delivery is None:
        logger.info("email is off (TALLY_SMTP_HOST unset): messages stay queued")
        return
    while True:
        try:
            await traced(
                "email sending",
                lambda: send_emails(sessions, delivery, as_of=datetime.now(UTC)),
                worked=lambda report: report.sent + report.retrying + report.failed > 0,
            )
        except Exception:
            logger.exception("sending emails failed; retrying")
        await asyncio.sleep(settings.email_interval_seconds)


async def run_webhook_sender(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    """Fan out new events and POST due webhooks every ``TALLY_WEBHOOK_INTERVAL_SECONDS``."""
    sending = webhook_sending(settings)
    while True:
        try:
            await traced(
                "webhook sending",
                lambda: send_webhooks(sessions, sending, as_of=datetime.now(UTC)),
                worked=lambda report: report.fanned_out + report.delivered + report.retrying + report.failed > 0,
            )
        except Exception:
            logger.exception("sending webhooks failed; retrying")
        await asyncio.sleep(settings.webhook_interval_seconds)


def always(_: object) -> bool:
    return True


def never(_: object) -> bool:
    return False


async def run_periodic(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    """Every tick, the jobs that keep Tally current; the anomaly scan and the invoice accuracy
    check at their own intervals (each first at start). Each job's go is traced only when it did
    something (``traced``): ``worked`` says what counts."""
    due = {"anomaly scan": datetime.now(UTC), "invoice accuracy": datetime.now(UTC)}
    intervals = {
        "anomaly scan": timedelta(minutes=settings.anomaly_scan_minutes),
        "invoice accuracy": timedelta(hours=settings.invoice_accuracy_interval_hours),
    }
    while True:
        jobs: list[tuple[str, Callable[[], Awaitable[Any]], Callable[[Any], bool]]] = [
            ("span pruning", lambda: prune_spans(sessions, settings, as_of=datetime.now(UTC)), found_work),
            ("metering snapshot", lambda: snapshot_metering(sessions, as_of=datetime.now(UTC)), always),
            (
                "authorization pruning",
                lambda: prune_usage_authorizations(sessions, as_of=datetime.now(UTC)),
                found_work,
            ),
            (
                "webhook pruning",
                lambda: prune_webhook_deliveries(sessions, settings, as_of=datetime.now(UTC)),
                found_work,
            ),
            ("credit expiry", lambda: expire_credit_grants(sessions, as_of=datetime.now(UTC)), found_work),
            ("trial endings", lambda: tell_trial_endings(sessions, as_of=datetime.now(UTC)), found_work),
            (
                "billing run",
                lambda: run_billing(sessions, settings, as_of=datetime.now(UTC)),
                lambda report: report.customers_considered > 0,
            ),
            ("credit balances", lambda: check_credit_balances(sessions, as_of=datetime.now(UTC)), found_work),
            ("stripe events", lambda: process_stripe_events(sessions, settings, as_of=datetime.now(UTC)), found_work),
            ("collection", lambda: collect_invoices(sessions, settings, as_of=datetime.now(UTC)), found_work),
            (
                "reconciliation",
                lambda: reconcile_daily(sessions, settings, as_of=datetime.now(UTC)),
                lambda found: found is not None,
            ),
            ("metrics snapshot", lambda: snapshot_gauges(sessions, settings, as_of=datetime.now(UTC)), never),
        ]
        periodic = {
            "anomaly scan": (
                lambda: scan_anomalies(sessions, settings, as_of=datetime.now(UTC)),
                lambda report: sum(report.new.values()) > 0,
            ),
            "invoice accuracy": (
                lambda: verify_invoice_accuracy(sessions, settings, as_of=datetime.now(UTC)),
                lambda report: bool(report.checked),
            ),
        }
        jobs += [(name, job, worked) for name, (job, worked) in periodic.items() if datetime.now(UTC) >= due[name]]
        for name, job, worked in jobs:
            try:
                await traced(name, job, worked=worked)
            except Exception:
                logger.exception("%s failed; retrying at the next tick", name)
            else:
                if name in due:
                    due[name] = datetime.now(UTC) + intervals[name]
        await asyncio.sleep(TICK_SECONDS)
