"""The consumer of the event log (edge mode, ``TALLY_NATS_URL``): `tally consume` runs it, and so
does `tally serve` with its jobs on. Each batch of messages is counted in one transaction and
acknowledged after the commit; a batch whose transaction failed is delivered again after a pause
(``nak`` with a delay), which the event ids make harmless. A message in a format this consumer
does not read (a newer edge's) is left in the log, never acknowledged, for a consumer that does."""

from __future__ import annotations

import asyncio
import functools
import logging

from nats.aio.msg import Msg
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.database import in_transaction
from app.jobs import traced
from app.settings import Settings
from app.usage_ingest import ingest_limits, log_config
from metering.event_log import EventLog
from metering.events import IngestLimits
from metering.log_consumer import (
    LoggedBatch,
    UnknownFormat,
    UnreadableMessage,
    count_logged,
    read_message,
    subscribe,
    take,
)
from metering.service import IngestResult

logger = logging.getLogger("tally.consume")
#: How long a consumer waits for a message before looking again (and noticing it should stop).
FETCH_WAIT_SECONDS = 1.0
#: How long a batch whose transaction failed waits before it is delivered again, and how long a
#: consumer that lost the log or the database waits before trying again.
RETRY_DELAY_SECONDS = 2.0
#: How long a message in a format this consumer does not read waits before it is offered again
#: (to any consumer: one that reads it counts it).
UNKNOWN_FORMAT_DELAY_SECONDS = 30.0


async def count_and_acknowledge(
    sessions: async_sessionmaker[AsyncSession], messages: list[Msg], limits: IngestLimits
) -> int:
    """Count ``messages`` in one transaction, then acknowledge them; the events counted as new.
    A message no edge wrote is terminated (never delivered again) and logged; one in a format
    this consumer does not read is logged and left in the log (``nak`` with a delay)."""
    readable: list[tuple[Msg, LoggedBatch]] = []
    for message in messages:
        try:
            readable.append((message, read_message(message.data, message.headers)))
        except UnknownFormat as problem:
            logger.error("event log message %s is in %s", message.reply, problem)
            await message.nak(delay=UNKNOWN_FORMAT_DELAY_SECONDS)
        except UnreadableMessage as problem:
            logger.error("event log message %s is not a batch of events (%s): dropped", message.reply, problem)
            await message.term()
    if not readable:
        return 0
    batches = [batch for _, batch in readable]
    try:
        async with sessions() as session:
            results: list[IngestResult] = await in_transaction(
                session, lambda: count_logged(session, batches, limits=limits)
            )
    except Exception:
        logger.exception("counting %d messages of the event log failed; they will be delivered again", len(readable))
        for message, _ in readable:
            await message.nak(delay=RETRY_DELAY_SECONDS)
        raise
    for message, _ in readable:
        await message.ack()
    for result in results:
        result.observe()
    return sum(result.accepted for result in results)


async def consume_log(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    """Take batches from the log and count them until cancelled; a lost log or database is waited
    out (the messages stay in the log meanwhile)."""
    event_log = EventLog(log_config(settings))
    limits = ingest_limits(settings)
    try:
        while True:
            try:
                _, jetstream = await event_log.jetstream()
                subscription = await subscribe(jetstream, event_log.config)
                while True:
                    messages = await take(
                        subscription,
                        settings.nats_consume_batch,
                        wait_seconds=FETCH_WAIT_SECONDS,
                        linger_seconds=settings.nats_consume_linger_ms / 1000,
                    )
                    if messages:
                        await traced("event log", functools.partial(count_and_acknowledge, sessions, messages, limits))
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("consuming the event log failed; trying again in %s s", RETRY_DELAY_SECONDS)
                await asyncio.sleep(RETRY_DELAY_SECONDS)
    finally:
        await event_log.close()
