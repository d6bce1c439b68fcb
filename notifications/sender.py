"""The email sender: claims due messages from the outbox, renders them, sends them by SMTP
(aiosmtplib) and records what happened.

Delivery is exactly once per message key except in one window. A claim is committed before
anything is sent (status ``sending``, ``attempts`` + 1, a lease); a sender that dies after the
claim, whether before rendering, between rendering and sending or while connecting, leaves a
message that no server accepted, and once the lease runs out it is claimed and sent again:
sent once. A sender that dies **after the server accepted the message but before the outcome
was committed** leaves it ``sending`` too, and it is sent a second time when the lease runs
out: that is the only at-least-once window. Every try of a message carries the same
Message-ID (derived from its key, :func:`message_id`), so the copy can be recognised (and
many receiving servers drop a repeated Message-ID).

SMTP errors are sorted: a permanent rejection of the message (a 5xx answer to MAIL FROM, RCPT
TO or DATA: an unknown mailbox, a message refused, like a bounce) fails it at once, with the
server's answer recorded; anything else (no connection, a timeout, a 4xx answer, a failed
sign-in: the server's or our configuration's trouble, not the message's) is retried with
exponential backoff and fails after ``max_attempts`` tries. When some recipients are refused and
others accepted, the message is sent, with the refusals recorded in ``last_error``.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage as MimeMessage
from email.utils import format_datetime, parseaddr
from typing import Literal

import aiosmtplib
from sqlmodel.ext.asyncio.session import AsyncSession

from notifications import repository
from notifications.models import EmailMessage
from notifications.rendering import render

ERROR_CHARS = 500


@dataclass(frozen=True)
class Attachment:
    filename: str
    mime_type: str  # e.g. application/pdf
    content: bytes


# The seam for documents: app/ passes a function giving a message's attachments (e.g. the
# invoice's PDF for ``invoice_issued``, by ``message.refs["invoice_id"]``).
AttachmentsFor = Callable[[AsyncSession, EmailMessage], Awaitable[list[Attachment]]]


async def no_attachments(session: AsyncSession, message: EmailMessage) -> list[Attachment]:
    """No documents: a delivery built without the app's documents (app.email.documents_for)."""
    return []


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    tls: Literal["none", "starttls", "tls"]
    username: str | None
    password: str | None = field(repr=False)  # never in a repr, a log or a trace
    timeout_seconds: float = 30.0
    tls_context: ssl.SSLContext | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Delivery:
    """How the sender works: the server, the From address, the attachments seam, and the
    retry policy (``retry_first`` after the first failure, doubling up to ``retry_longest``;
    ``failed`` after ``max_attempts``), the lease of a claim, and the age past which a pending
    message is skipped rather than sent."""

    server: SmtpServer
    from_address: str
    attachments_for: AttachmentsFor = no_attachments
    retry_first: timedelta = timedelta(minutes=1)
    retry_longest: timedelta = timedelta(hours=6)
    max_attempts: int = 8
    lease: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(hours=72)

    def retry_delay(self, attempts: int) -> timedelta:
        return min(self.retry_first * 2 ** min(max(attempts - 1, 0), 32), self.retry_longest)


@dataclass(frozen=True)
class Outcome:
    status: Literal["sent", "pending", "failed"]
    error: str | None


def message_id(key: str, from_address: str) -> str:
    """The Message-ID of every try of the message keyed ``key``: a hash of the key, at the
    From address's domain."""
    domain = parseaddr(from_address)[1].rpartition("@")[2] or "tally.localhost"
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:40]}@{domain}>"


async def claim_due(
    session: AsyncSession, delivery: Delivery, *, as_of: datetime, limit: int = 20
) -> list[EmailMessage]:
    """Lease up to ``limit`` due messages to this sender (SKIP LOCKED: concurrent senders claim
    different ones), after skipping pending ones past ``max_age``; the caller commits the claim
    before sending."""
    await repository.skip_stale(session, as_of=as_of, max_age=delivery.max_age)
    return await repository.claim(session, as_of=as_of, lease=delivery.lease, limit=limit)


async def compose(session: AsyncSession, delivery: Delivery, message: EmailMessage, *, as_of: datetime) -> MimeMessage:
    """The MIME message: subject, text and HTML bodies in the message's locale, its attachments."""
    rendered = render(message.kind, message.locale, message.content)
    mime = MimeMessage()
    mime["From"] = delivery.from_address
    mime["To"] = ", ".join(message.recipients)
    mime["Subject"] = rendered.subject
    mime["Date"] = format_datetime(as_of)
    mime["Message-ID"] = message_id(message.message_key, delivery.from_address)
    mime["Content-Language"] = message.locale
    mime.set_content(rendered.text)
    mime.add_alternative(rendered.html, subtype="html")
    for attachment in await delivery.attachments_for(session, message):
        maintype, _, subtype = attachment.mime_type.partition("/")
        mime.add_attachment(attachment.content, maintype=maintype, subtype=subtype, filename=attachment.filename)
    return mime


async def transmit(server: SmtpServer, mime: MimeMessage, recipients: list[str]) -> dict[str, str]:
    """Hand the message to the server; the recipients it refused (address → its answer)."""
    refused, _ = await aiosmtplib.send(
        mime,
        recipients=recipients,
        hostname=server.host,
        port=server.port,
        username=server.username,
        password=server.password,
        use_tls=server.tls == "tls",
        start_tls=server.tls == "starttls",
        timeout=server.timeout_seconds,
        tls_context=server.tls_context,
    )
    return {address: f"{answer.code} {answer.message}" for address, answer in refused.items()}


def judge(error: Exception) -> Literal["permanent", "transient"]:
    """A 5xx answer to the message itself is permanent; everything else may pass."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        return "permanent" if all(r.code >= 500 for r in error.recipients) else "transient"
    if isinstance(error, aiosmtplib.SMTPAuthenticationError):
        return "transient"  # our credentials, not the message: every message would fail alike
    if isinstance(error, aiosmtplib.SMTPResponseException) and error.code >= 500:
        return "permanent"
    return "transient"


def describe(error: BaseException) -> str:
    """The error on one line, short enough for a table cell."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in error.recipients)
    elif isinstance(error, aiosmtplib.SMTPResponseException):
        text = f"{error.code} {error.message}"
    else:
        text = str(error) or type(error).__name__
    text = f"{type(error).__name__}: {' '.join(text.split())}".replace("\x00", "")
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


async def deliver(session: AsyncSession, delivery: Delivery, message: EmailMessage, *, as_of: datetime) -> Outcome:
    """Render, send and record one claimed message (see the module's docstring for what a crash
    at each step does); the caller commits. A message that cannot be rendered (a template or the
    attachments seam raising: perhaps the database, perhaps a document not ready) is retried like
    an unreachable server."""
    last_try = message.attempts >= delivery.max_attempts
    try:
        mime = await compose(session, delivery, message, as_of=as_of)
    except Exception as error:
        outcome = Outcome("failed" if last_try else "pending", f"could not render: {describe(error)}")
        return await _record(session, message, outcome, as_of=as_of, delivery=delivery)
    try:
        refused = await transmit(delivery.server, mime, list(message.recipients))
    except (aiosmtplib.SMTPException, OSError) as error:
        permanent = isinstance(error, aiosmtplib.SMTPException) and judge(error) == "permanent"
        outcome = Outcome("failed" if permanent or last_try else "pending", describe(error))
        return await _record(session, message, outcome, as_of=as_of, delivery=delivery)
    note = "; ".join(f"{address} refused: {answer}" for address, answer in refused.items()) or None
    return await _record(
        session,
        message,
        Outcome("sent", note),
        as_of=as_of,
        sent_id=message_id(message.message_key, delivery.from_address),
    )


async def _record(
    session: AsyncSession,
    message: EmailMessage,
    outcome: Outcome,
    *,
    as_of: datetime,
    delivery: Delivery | None = None,
    sent_id: str | None = None,
) -> Outcome:
    values: dict[str, object] = {"status": outcome.status, "last_error": outcome.error, "next_attempt_at": as_of}
    if outcome.status == "sent":
        values |= {"sent_at": as_of, "smtp_message_id": sent_id}
    elif outcome.status == "pending" and delivery is not None:
        values["next_attempt_at"] = as_of + delivery.retry_delay(message.attempts)
    await repository.record_outcome(session, message, values)
    return outcome
