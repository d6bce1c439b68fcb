"""What the rest of Tally calls to send an email: :func:`enqueue` in the transaction of the event
the message tells of, :func:`resend` from the console, and the reads.

Exactly once per ``key``: the key is unique in ``email_messages`` and written with the event,
so a retried event (a billing run re-run after a crash, a webhook delivered twice) queues
nothing more, and a rolled-back one queues nothing. A customer without an invoice email gets a
``skipped`` row instead of nothing, so the console can say why no email went out; resending it
once an address is on file sends it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from ledger.errors import InvalidInput, NotFound
from notifications import repository
from notifications.models import EMAIL_KINDS, EMAIL_STATUSES, EmailMessage

NO_RECIPIENTS = "the customer has no invoice email"
NO_SUCH_MESSAGE = "no such email"


@dataclass(frozen=True)
class Email:
    """A message an event asks for: ``key`` its exactly-once key, ``refs`` the ids it is about
    (e.g. ``{"invoice_id": …}``), ``content`` the facts its templates render (JSON: amounts in
    minor units, moments as ISO strings)."""

    key: str
    kind: str
    customer_id: uuid.UUID
    refs: dict[str, Any]
    content: dict[str, Any]


@dataclass(frozen=True)
class Addressee:
    """Whom a customer's messages go to, as the caller read it from the customer: their invoice
    emails, their locale (one of ``rendering.TEMPLATE_LOCALES``) and the name a message greets."""

    recipients: tuple[str, ...]
    locale: str
    name: str


async def enqueue(session: AsyncSession, email: Email, addressee: Addressee, *, as_of: datetime) -> uuid.UUID | None:
    """Queue ``email`` to ``addressee``, in the caller's transaction; its id, or None when its key
    was queued before. The caller commits."""
    return await repository.insert(session, prepare(email, addressee, as_of=as_of))


def prepare(
    email: Email, addressee: Addressee, *, as_of: datetime, resend_of: uuid.UUID | None = None
) -> dict[str, Any]:
    """The outbox row of ``email`` (``refs`` and ``content`` as JSON text), addressed to
    ``addressee``, for a caller that writes it in a statement of its own (the invoice's, which adds
    the invoice number)."""
    if email.kind not in EMAIL_KINDS:
        raise ValueError(f"unknown email kind {email.kind!r}")
    recipients = list(addressee.recipients)
    return {
        "id": uuid.uuid4(),
        "message_key": email.key,
        "kind": email.kind,
        "customer_id": email.customer_id,
        "recipients": recipients,
        "locale": addressee.locale,
        "refs": json.dumps(email.refs),
        "content": json.dumps({"customer_name": addressee.name, **email.content}),
        "status": "pending" if recipients else "skipped",
        "last_error": None if recipients else NO_RECIPIENTS,
        "resend_of": resend_of,
        "created_at": as_of,
    }


async def resend(
    session: AsyncSession, message_id: uuid.UUID, addressee: Addressee, *, as_of: datetime
) -> EmailMessage:
    """Send a message again as a new message (key ``<key>:resend:<n>``) to ``addressee``: the
    customer's invoice emails and locale as they are now (the usual reason to resend is a corrected
    address), with the same content. The original stays as it was: its history is kept. A resend still waiting to be
    sent is returned instead of queuing another, so a double click sends one. The caller commits."""
    original = await repository.message_for_update(session, message_id)
    if original is None:
        raise NotFound(NO_SUCH_MESSAGE, field="id")
    root_id = original.resend_of or original.id
    root = original if root_id == original.id else await repository.message_for_update(session, root_id)
    assert root is not None
    waiting = await repository.waiting_resend(session, root.id)
    if waiting is not None:
        return waiting
    number = await repository.resend_count(session, root.id) + 1
    email = Email(f"{root.message_key}:resend:{number}", root.kind, root.customer_id, root.refs, root.content)
    created = await repository.insert(session, prepare(email, addressee, as_of=as_of, resend_of=root.id))
    assert created is not None  # the root's lock makes the number this transaction's own
    [message] = await repository.by_ids(session, [created])
    return message


def check_status(status: str | None) -> str | None:
    if status is not None and status not in EMAIL_STATUSES:
        raise InvalidInput(f"must be one of {', '.join(EMAIL_STATUSES)}", field="status")
    return status


async def messages(
    session: AsyncSession,
    *,
    customer_id: uuid.UUID | None = None,
    status: str | None = None,
    before: tuple[datetime, uuid.UUID] | None = None,
    limit: int = 50,
) -> list[EmailMessage]:
    """Messages newest first, of one customer or all, in one status or any."""
    return await repository.messages(
        session, customer_id=customer_id, status=check_status(status), before=before, limit=limit
    )
