"""The email outbox's one table: what to send, to whom, and how delivery went.

A row is written in the transaction of the event it tells of (an invoice issued, a payment
failed or received), keyed by ``message_key``, so a retried event writes nothing twice and a
rolled-back one leaves nothing to send. The sender works it (``notifications.sender``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Column, DateTime, ForeignKey, Index, Integer, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlmodel import Field, SQLModel

EMAIL_KINDS = ("invoice_issued", "payment_failed", "payment_receipt", "credit_note", "usage_alert")
EMAIL_STATUSES = ("pending", "sending", "sent", "failed", "skipped")


class EmailMessage(SQLModel, table=True):
    """One message. ``content`` holds the facts its templates render (amounts in minor units,
    dates as ISO strings), fixed when the event happened, so rendering it again says the same;
    ``refs`` names what it is about (``invoice_id``…) for the attachments and the console.
    ``smtp_message_id`` is the Message-ID the server accepted, recorded when sent; it derives from
    the key (``notifications.sender.message_id``), so every try of one message carries the same."""

    __tablename__ = "email_messages"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('invoice_issued', 'payment_failed', 'payment_receipt', 'credit_note', 'usage_alert')"
        ),
        CheckConstraint("status IN ('pending', 'sending', 'sent', 'failed', 'skipped')"),
        Index("email_messages_due", "next_attempt_at", postgresql_where=text("status IN ('pending', 'sending')")),
        Index("email_messages_customer", "customer_id", "created_at"),
        Index("email_messages_failed", "created_at", postgresql_where=text("status = 'failed'")),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    message_key: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    kind: str = Field(sa_column=Column(Text, nullable=False))
    customer_id: uuid.UUID = Field(sa_column=Column(ForeignKey("customers.id"), nullable=False))
    recipients: list[str] = Field(sa_column=Column(ARRAY(Text), nullable=False))
    locale: str = Field(sa_column=Column(Text, nullable=False))
    refs: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    content: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    status: str = Field(sa_column=Column(Text, nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    next_attempt_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    lease_until: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    smtp_message_id: str | None = Field(default=None, sa_column=Column(Text))
    resend_of: uuid.UUID | None = Field(default=None, sa_column=Column(ForeignKey("email_messages.id")))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class WebhookEvent(SQLModel, table=True):
    """One thing that happened, told to the product by outbound webhooks
    (``notifications.webhook_events``). ``data`` holds the resource as the GraphQL type of the same
    name shows it (camelCase fields), fixed when it happened; ``resource_version`` counts the
    resource's events (1, 2…), so a receiver can tell the newest of two that arrive out of order."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        CheckConstraint("resource_version > 0", name="webhook_events_version"),
        Index("webhook_events_waiting", "created_at", postgresql_where=text("fanned_out_at IS NULL")),
        Index("webhook_events_created", "created_at", "id"),
        Index("webhook_events_customer", "customer_id", "created_at"),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    event_key: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    type: str = Field(sa_column=Column(Text, nullable=False))
    api_version: str = Field(sa_column=Column(Text, nullable=False))
    customer_id: uuid.UUID | None = Field(default=None, sa_column=Column(ForeignKey("customers.id")))
    resource_type: str = Field(sa_column=Column(Text, nullable=False))
    resource_id: str = Field(sa_column=Column(Text, nullable=False))
    resource_version: int = Field(sa_column=Column(BigInteger, nullable=False))
    data: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    fanned_out_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class WebhookResourceVersion(SQLModel, table=True):
    """The count of events told of one resource so far: the next event's version is one more."""

    __tablename__ = "webhook_resource_versions"

    resource_type: str = Field(sa_column=Column(Text, primary_key=True))
    resource_id: str = Field(sa_column=Column(Text, primary_key=True))
    version: int = Field(sa_column=Column(BigInteger, nullable=False))
