"""Outbound webhook endpoints: what the API, the console and the CLI call to register, change,
switch off, rotate the secret of, and delete an endpoint, and to send its deliveries again.

Every input is checked here, once, with the field it came from: a URL (http or https, a host, at
most 2,048 characters, no spaces or control characters), event types (each one of
``EVENT_TYPES``, or None for every type), a description (at most 500 characters). Secrets are in
Standard Webhooks form: ``whsec_`` and the base64 of 24 random bytes.

Rotation keeps the old secret signing beside the new one for an overlap (at most a week), so a
receiver can switch at its own pace: during it every delivery carries both signatures, after it
only the new one; a second rotation during it is refused (a retried request must not drop the
secret the receiver uses) unless it ends every old secret at once. Services never commit.
"""

from __future__ import annotations

import base64
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlmodel.ext.asyncio.session import AsyncSession

from ledger.errors import IdempotencyKeyReused, InvalidInput, LimitExceeded, NotFound, TooLong
from notifications import webhook_repository as repository
from notifications.errors import OutOfRange, RotationInProgress, TooMany, UnknownEventType, UnsupportedScheme
from notifications.models import (
    WEBHOOK_DELIVERY_STATUSES,
    WebhookDelivery,
    WebhookDeliveryAttempt,
    WebhookEndpoint,
    WebhookEvent,
)
from notifications.webhook_events import EVENT_TYPES

URL_CHARS = 2048
DESCRIPTION_CHARS = 500
KEY_CHARS = 200
SECRET_BYTES = 24
LONGEST_OVERLAP = timedelta(days=7)
# A replay re-queues at most this many events, from at most this far back: the console's
# "replay since" is for an outage of hours or days, not a re-send of the whole history.
REPLAY_LIMIT = 10_000
MAX_ENDPOINTS = 100
REPLAY_LOOKBACK = timedelta(days=30)
NO_SUCH_ENDPOINT = "no such webhook endpoint"
NO_SUCH_DELIVERY = "no such webhook delivery"
CONTROL = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True)
class EndpointInput:
    """An endpoint as asked for; ``event_types`` None subscribes to every type."""

    url: str
    event_types: tuple[str, ...] | None = None
    description: str = ""


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def check_url(url: str) -> str:
    url = url.strip()
    if len(url) > URL_CHARS:
        raise TooLong(f"at most {URL_CHARS} characters", field="url")
    if CONTROL.search(url):
        raise InvalidInput("no spaces or control characters", field="url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidInput("not a URL", field="url") from None
    if parts.scheme not in ("http", "https"):
        raise UnsupportedScheme("use an http:// or https:// URL", field="url")
    if not parts.hostname or port == 0:
        raise InvalidInput("give a host, e.g. https://example.com/webhooks", field="url")
    return url


def check_event_types(event_types: tuple[str, ...] | list[str] | None) -> list[str] | None:
    """The subscribed types, sorted and without repeats; None for every type."""
    if event_types is None:
        return None
    if len(event_types) > len(EVENT_TYPES):
        raise TooMany(f"at most {len(EVENT_TYPES)} types", field="eventTypes")
    unknown = [name for name in event_types if name not in EVENT_TYPES]
    if unknown:
        raise UnknownEventType(
            f"unknown event type {unknown[0][:64]!r}: see webhookEventTypes",
            field="eventTypes",
        )
    if not event_types:
        raise InvalidInput("choose at least one type, or every type", field="eventTypes")
    return sorted(set(event_types))


def check_description(description: str) -> str:
    description = description.strip()
    if len(description) > DESCRIPTION_CHARS:
        raise TooLong(f"at most {DESCRIPTION_CHARS} characters", field="description")
    if "\x00" in description:
        raise InvalidInput("no NUL characters", field="description")
    return description


async def create_endpoint(
    session: AsyncSession, new: EndpointInput, *, idempotency_key: str | None = None, as_of: datetime
) -> WebhookEndpoint:
    """Register an endpoint, enabled, with a new secret. A retried create with the same key
    returns the endpoint the first made (the key is unique in the table, so two racing creates
    make one); the same key with another URL, types or description is refused."""
    url, event_types = check_url(new.url), check_event_types(new.event_types)
    description = check_description(new.description)
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= KEY_CHARS:
        raise InvalidInput(f"1 to {KEY_CHARS} characters", field="idempotencyKey")
    known = idempotency_key is not None and await repository.endpoint_by_key(session, idempotency_key) is not None
    if not known and await repository.endpoint_count(session) >= MAX_ENDPOINTS:
        raise LimitExceeded(f"at most {MAX_ENDPOINTS} endpoints: delete one first", field="url")
    created = await repository.insert_endpoint(
        session,
        {
            "id": uuid.uuid4(),
            "url": url,
            "description": description,
            "event_types": event_types,
            "secret": new_secret(),
            "idempotency_key": idempotency_key,
            "as_of": as_of,
        },
    )
    if created is None:
        assert idempotency_key is not None
        found = await repository.endpoint_by_key(session, idempotency_key)
        assert found is not None
        if (found.url, found.event_types, found.description) != (url, event_types, description):
            raise IdempotencyKeyReused()
        return found
    return await endpoint(session, created)


async def endpoint(
    session: AsyncSession, endpoint_id: uuid.UUID, *, lock: bool = False, field: str = "id"
) -> WebhookEndpoint:
    found = await repository.endpoint(session, endpoint_id, lock=lock)
    if found is None:
        raise NotFound(NO_SUCH_ENDPOINT, field=field)
    return found


async def endpoint_or_none(session: AsyncSession, endpoint_id: uuid.UUID) -> WebhookEndpoint | None:
    return await repository.endpoint(session, endpoint_id)


async def endpoints(session: AsyncSession) -> list[WebhookEndpoint]:
    """Every endpoint, oldest first."""
    return await repository.endpoints(session)


async def update_endpoint(
    session: AsyncSession,
    endpoint_id: uuid.UUID,
    *,
    url: str | None = None,
    event_types: tuple[str, ...] | None = None,
    every_event_type: bool = False,
    description: str | None = None,
    as_of: datetime,
) -> WebhookEndpoint:
    """Change what is given; ``every_event_type`` subscribes to every type (then ``event_types``
    must be absent). Deliveries already queued keep going."""
    await endpoint(session, endpoint_id, lock=True)
    values: dict[str, object] = {"updated_at": as_of}
    if url is not None:
        values["url"] = check_url(url)
    if every_event_type and event_types is not None:
        raise InvalidInput("give event types or every type, not both", field="eventTypes")
    if every_event_type:
        values["event_types"] = None
    elif event_types is not None:
        values["event_types"] = check_event_types(event_types)
    if description is not None:
        values["description"] = check_description(description)
    await repository.update_endpoint(session, endpoint_id, values)
    return await endpoint(session, endpoint_id)


async def set_enabled(
    session: AsyncSession, endpoint_id: uuid.UUID, enabled: bool, *, as_of: datetime, reason: str | None = None
) -> WebhookEndpoint:
    """Switch an endpoint on or off. Switched on, its run of failures starts again from nothing
    and the deliveries that waited go at once; switched off, nothing is claimed for it and events
    of that time are not queued for it (replay them once it is on)."""
    found = await endpoint(session, endpoint_id, lock=True)
    if found.enabled == enabled:
        return found
    values: dict[str, object] = {"enabled": enabled, "updated_at": as_of}
    if enabled:
        values |= {"disabled_reason": None, "consecutive_failures": 0, "failing_since": None}
        await repository.make_waiting_due(session, endpoint_id, as_of=as_of)
    else:
        values["disabled_reason"] = (reason or "disabled by staff")[:DESCRIPTION_CHARS]
    await repository.update_endpoint(session, endpoint_id, values)
    return await endpoint(session, endpoint_id)


async def rotate_secret(
    session: AsyncSession, endpoint_id: uuid.UUID, *, overlap: timedelta, as_of: datetime
) -> WebhookEndpoint:
    """A new secret; the current one keeps signing beside it for ``overlap`` (0: stops at once).

    While an overlap runs, another rotation is refused unless its overlap is 0: a retried request
    would otherwise drop the secret the receiver still verifies with. An overlap of 0 (a leaked
    secret) always rotates, and ends every old secret at once."""
    if not timedelta(0) <= overlap <= LONGEST_OVERLAP:
        raise OutOfRange("between 0 and 168 hours", field="overlapHours")
    found = await endpoint(session, endpoint_id, lock=True)
    overlapping = overlap > timedelta(0)
    if overlapping and len(signing_secrets(found, as_of=as_of)) > 1:
        assert found.previous_secret_until is not None
        raise RotationInProgress(
            f"the last rotation's overlap runs until {found.previous_secret_until:%Y-%m-%d %H:%M} UTC: rotate after "
            "it, or with an overlap of 0 to end every old secret now",
            field="overlapHours",
        )
    await repository.update_endpoint(
        session,
        endpoint_id,
        {
            "secret": new_secret(),
            "previous_secret": found.secret if overlapping else None,
            "previous_secret_until": as_of + overlap if overlapping else None,
            "updated_at": as_of,
        },
    )
    return await endpoint(session, endpoint_id)


def signing_secrets(found: WebhookEndpoint, *, as_of: datetime) -> list[str]:
    """The secrets that sign a delivery at ``as_of``: the current one, and the previous one while
    its overlap lasts."""
    keys = [found.secret]
    if found.previous_secret and found.previous_secret_until and as_of < found.previous_secret_until:
        keys.append(found.previous_secret)
    return keys


async def delete_endpoint(session: AsyncSession, endpoint_id: uuid.UUID) -> None:
    """Remove an endpoint with its deliveries and their attempts (disable it to keep the history)."""
    if not await repository.delete_endpoint(session, endpoint_id):
        raise NotFound(NO_SUCH_ENDPOINT, field="id")


async def resend_delivery(session: AsyncSession, delivery_id: uuid.UUID, *, as_of: datetime) -> WebhookDelivery:
    """Send a delivery again now, from a fresh count of attempts; one still waiting is left as it
    is (a double click sends once). Its earlier attempts stay recorded."""
    found = await repository.delivery_for_update(session, delivery_id)
    if found is None:
        raise NotFound(NO_SUCH_DELIVERY, field="id")
    if found.status in ("delivered", "failed"):
        await repository.requeue(session, delivery_id, as_of=as_of)
        found = await repository.delivery_for_update(session, delivery_id)
        assert found is not None
    return found


async def replay_since(session: AsyncSession, endpoint_id: uuid.UUID, *, since: datetime, as_of: datetime) -> int:
    """Queue again every event of the endpoint's types since ``since``: those never queued for it
    (it was off, or subscribed later) and those delivered or failed; those still waiting stay as
    they are. How many events matched. At most ``REPLAY_LIMIT`` events, ``REPLAY_LOOKBACK`` back."""
    await endpoint(session, endpoint_id, lock=True, field="endpointId")
    if since.tzinfo is None:
        raise InvalidInput("give a time zone offset, e.g. 2026-12-01T00:00:00Z", field="since")
    if since > as_of:
        raise InvalidInput("give a time in the past", field="since")
    if since < as_of - REPLAY_LOOKBACK:
        raise OutOfRange(f"at most {REPLAY_LOOKBACK.days} days back", field="since")
    values = {"endpoint_id": endpoint_id, "since": since, "as_of": as_of}
    matched = await repository.count_replay(session, values)
    if matched > REPLAY_LIMIT:
        raise LimitExceeded(
            f"{matched} events match, at most {REPLAY_LIMIT} a replay: give a later time", field="since"
        )
    await repository.replay(session, values)
    return matched


def check_status(status: str | None) -> str | None:
    if status is not None and status not in WEBHOOK_DELIVERY_STATUSES:
        raise InvalidInput(f"must be one of {', '.join(WEBHOOK_DELIVERY_STATUSES)}", field="status")
    return status


@dataclass(frozen=True)
class DeliveryView:
    """A delivery with its event and its attempts, newest first."""

    delivery: WebhookDelivery
    event: WebhookEvent
    attempts: list[WebhookDeliveryAttempt]


async def deliveries(
    session: AsyncSession,
    endpoint_id: uuid.UUID,
    *,
    status: str | None = None,
    before: tuple[datetime, uuid.UUID] | None = None,
    limit: int = 50,
) -> list[DeliveryView]:
    """An endpoint's deliveries, newest first, in one status or any (three queries a page)."""
    found = await repository.deliveries(
        session, endpoint_id=endpoint_id, status=check_status(status), before=before, limit=limit
    )
    attempts = await repository.attempts_of(session, [delivery.id for delivery, _ in found])
    return [DeliveryView(delivery, event, attempts[delivery.id]) for delivery, event in found]


async def delivery_counts(session: AsyncSession, endpoint_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    return await repository.delivery_counts(session, endpoint_ids)


async def delivery_view(session: AsyncSession, delivery_id: uuid.UUID) -> DeliveryView:
    found = await repository.delivery_with_event(session, delivery_id)
    if found is None:
        raise NotFound(NO_SUCH_DELIVERY, field="id")
    attempts = await repository.attempts_of(session, [delivery_id])
    return DeliveryView(found[0], found[1], attempts[delivery_id])
