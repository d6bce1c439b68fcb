"""Email delivery as the settings describe it, and the sender `tally serve` runs and
`tally email send` runs once.

Email is off when ``TALLY_SMTP_HOST`` is unset: events still queue their messages (the outbox
is the record of what Tally would have sent, visible in the console and `tally email list`), and
nothing is sent. Once a host is set, the sender sends what is due, skipping pending messages
older than ``TALLY_EMAIL_MAX_AGE_HOURS`` (a month-old invoice email would confuse more than help;
the console can still resend one).

Documents attached to emails come through ``attachments_for`` (``notifications.sender``'s seam):
by default :func:`documents_for`, the invoice's PDF on an issued invoice's email and on its receipt,
the credit note's PDF on a credit note's, in the message's locale (the stored documents, rendered
and stored on first use).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.invoice_documents import seller_of
from app.settings import Settings
from billing.documents import service as documents
from notifications.models import EmailMessage
from notifications.sender import Attachment, AttachmentsFor, Delivery, SmtpServer, claim_due, deliver

# The emails that carry the invoice's PDF; a credit note's carries its own.
INVOICE_PDF_KINDS = ("invoice_issued", "payment_receipt")


def documents_for(settings: Settings) -> AttachmentsFor:
    """The PDFs an email carries, in the message's locale, with the seller the settings name."""
    seller = seller_of(settings)

    async def attachments(session: AsyncSession, message: EmailMessage) -> list[Attachment]:
        now = datetime.now(UTC)
        invoice_id, note_id = message.refs.get("invoice_id"), message.refs.get("credit_note_id")
        if message.kind == "credit_note" and note_id:
            pdf = await documents.credit_note_pdf(
                session, uuid.UUID(str(note_id)), seller=seller, as_of=now, locale=message.locale
            )
        elif message.kind in INVOICE_PDF_KINDS and invoice_id:
            pdf = await documents.invoice_pdf(
                session, uuid.UUID(str(invoice_id)), seller=seller, as_of=now, locale=message.locale
            )
        else:
            return []
        return [Attachment(f"{pdf.number}.pdf", "application/pdf", pdf.pdf)]

    return attachments


logger = logging.getLogger("tally.email")


def email_delivery(settings: Settings, attachments_for: AttachmentsFor | None = None) -> Delivery | None:
    """How emails are sent, or None when email is off (no SMTP host); documents attached as
    :func:`documents_for` says unless ``attachments_for`` is given."""
    if not settings.smtp_host or not settings.email_from:
        return None
    return Delivery(
        server=SmtpServer(
            host=settings.smtp_host,
            port=settings.smtp_port,
            tls=settings.smtp_tls,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            timeout_seconds=settings.smtp_timeout_seconds,
        ),
        from_address=settings.email_from,
        attachments_for=attachments_for or documents_for(settings),
        retry_first=timedelta(minutes=settings.email_retry_minutes),
        retry_longest=timedelta(hours=settings.email_retry_max_hours),
        max_attempts=settings.email_max_attempts,
        max_age=timedelta(hours=settings.email_max_age_hours),
    )


@dataclass
class SendReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


async def send_emails(
    sessions: async_sessionmaker[AsyncSession], delivery: Delivery, *, as_of: datetime, batch: int = 20
) -> SendReport:
    """Send every message due by ``as_of``: claim a batch (committed: the lease), then send and
    record each in a committed transaction of its own, until nothing is due."""
    report = SendReport()
    async with sessions() as session:
        while True:
            claimed = await claim_due(session, delivery, as_of=as_of, limit=batch)
            await session.commit()
            if not claimed:
                return report
            for message in claimed:
                outcome = await deliver(session, delivery, message, as_of=as_of)
                await session.commit()
                if outcome.status == "sent":
                    report.sent += 1
                elif outcome.status == "pending":
                    report.retrying += 1
                else:
                    report.failed += 1
                if outcome.status != "sent" and outcome.error:
                    report.errors.append(outcome.error)
                    logger.warning("email %s (%s): %s", message.id, outcome.status, outcome.error)
