"""GraphQL of the email outbox (staff only): the messages of a customer or of everyone, by
status, and resending one."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum

import strawberry
from jinja2 import TemplateError
from strawberry.types import Info

from app.api.common import Connection, UserError, connection, decode_time_cursor, page_size, run_mutation, time_cursor
from app.api.customers import Customer
from app.api.permissions import requires
from app.api.scope import load_visible_customer
from app.auth import Capability
from billing import emails
from ledger.errors import NotFound
from notifications import service as notifications
from notifications.models import EmailMessage
from notifications.rendering import render
from notifications.service import NO_SUCH_MESSAGE


@strawberry.enum
class EmailStatus(Enum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


@strawberry.enum
class EmailKind(Enum):
    INVOICE_ISSUED = "invoice_issued"
    PAYMENT_FAILED = "payment_failed"
    PAYMENT_RECEIPT = "payment_receipt"
    CREDIT_NOTE = "credit_note"


@strawberry.type
class EmailMessageRow:
    id: strawberry.ID
    message_key: str = strawberry.field(description="The exactly-once key, e.g. invoice-issued:<invoice id>.")
    kind: EmailKind
    customer_id: strawberry.ID
    recipients: list[str]
    locale: str
    subject: str = strawberry.field(description="As rendered in the message's locale.")
    invoice_id: strawberry.ID | None
    status: EmailStatus = strawberry.field(
        description="pending, sending (claimed by a sender), sent, failed (after the last try, or rejected by the "
        "server) or skipped (no recipients, or not sent in time)."
    )
    attempts: int
    next_attempt_at: datetime | None = strawberry.field(description="When it is tried next; null once settled.")
    last_error: str | None = strawberry.field(description="The server's last answer or why it was skipped.")
    smtp_message_id: str | None = strawberry.field(description="The Message-ID the server accepted.")
    resend_of_id: strawberry.ID | None = strawberry.field(description="The message this one sends again.")
    created_at: datetime
    sent_at: datetime | None

    @strawberry.field(description="The customer it was sent to.")
    async def customer(self, info: Info) -> Customer | None:
        row = await load_visible_customer(info, uuid.UUID(str(self.customer_id)))
        return Customer.from_model(row) if row else None

    @classmethod
    def from_model(cls, row: EmailMessage) -> EmailMessageRow:
        invoice_id = row.refs.get("invoice_id")
        return cls(
            id=strawberry.ID(str(row.id)),
            message_key=row.message_key,
            kind=EmailKind(row.kind),
            customer_id=strawberry.ID(str(row.customer_id)),
            recipients=list(row.recipients),
            locale=row.locale,
            subject=_subject(row),
            invoice_id=strawberry.ID(invoice_id) if invoice_id else None,
            status=EmailStatus(row.status),
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at if row.status in ("pending", "sending") else None,
            last_error=row.last_error,
            smtp_message_id=row.smtp_message_id,
            resend_of_id=strawberry.ID(str(row.resend_of)) if row.resend_of else None,
            created_at=row.created_at,
            sent_at=row.sent_at,
        )


def _subject(row: EmailMessage) -> str:
    """The subject as sent; a message whose content its template cannot render (it would fail to
    send too, and says why in ``lastError``) still lists, rather than failing the whole list."""
    try:
        return render(row.kind, row.locale, row.content).subject
    except (TemplateError, ValueError, TypeError) as error:
        return f"(cannot be rendered: {error})"


def _message_id(value: strawberry.ID, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound(NO_SUCH_MESSAGE, field=field) from None


@strawberry.type
class NotificationsQuery:
    @strawberry.field(
        permission_classes=[requires(Capability.READ_EMAILS)],
        description="Emails, newest first: one customer's (customerId) or everyone's, in one status or any.",
    )
    async def email_messages(
        self,
        info: Info,
        customer_id: strawberry.ID | None = None,
        status: EmailStatus | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[EmailMessageRow]:
        limit = page_size(first, default=50, maximum=info.context.settings.page_size_max)
        position = decode_time_cursor(after)
        before = None
        if position is not None:
            try:
                before = (position[0], uuid.UUID(position[1]))
            except ValueError:
                before = None
        customer = None
        if customer_id is not None:
            try:
                customer = uuid.UUID(str(customer_id))
            except ValueError:
                return connection([], limit, EmailMessageRow.from_model, lambda row: "")
        rows = await notifications.messages(
            info.context.session,
            customer_id=customer,
            status=status.value if status else None,
            before=before,
            limit=limit + 1,
        )
        return connection(rows, limit, EmailMessageRow.from_model, lambda row: time_cursor(row.created_at, row.id))


@strawberry.input
class ResendEmailInput:
    id: strawberry.ID


@strawberry.type
class ResendEmailPayload:
    message: EmailMessageRow | None = strawberry.field(description="The new message (or the resend still waiting).")
    user_errors: list[UserError]


@strawberry.type
class NotificationsMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.RESEND_EMAILS)],
        description="Send an email again, as a new message (key <key>:resend:<n>) to the customer's invoice emails "
        "as they are now; a resend not yet sent is returned instead of a second one.",
    )
    async def resend_email(self, info: Info, input: ResendEmailInput) -> ResendEmailPayload:
        context = info.context

        async def resend() -> EmailMessage:
            return await emails.resend(context.session, _message_id(input.id, "id"), as_of=context.now())

        row, errors = await run_mutation(info, resend)
        return ResendEmailPayload(message=EmailMessageRow.from_model(row) if row else None, user_errors=errors)
