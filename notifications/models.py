"""The email outbox's one table: what to send, to whom, and how delivery went.

A row is written in the transaction of the event it tells of (an invoice issued, a payment
failed or received), keyed by ``message_key``, so a retried event writes nothing twice and a
rolled-back one leaves nothing to send. The sender works it (``notifications.sender``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    text,
)
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


WEBHOOK_DELIVERY_STATUSES = ("pending", "sending", "delivered", "failed")


class WebhookEndpoint(SQLModel, table=True):
    """Where events go. ``event_types`` None means every type. ``secret`` signs every delivery;
    after a rotation ``previous_secret`` signs too, beside it, until ``previous_secret_until``.
    ``consecutive_failures`` and ``failing_since`` count the attempts failed since the last
    success (the auto-disable rule, ``notifications.webhook_delivery``)."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        CheckConstraint("url ~ '^https?://' AND length(url) <= 2048", name="webhook_endpoints_url"),
        CheckConstraint("length(description) <= 500", name="webhook_endpoints_description"),
        CheckConstraint("secret LIKE 'whsec_%'", name="webhook_endpoints_secret"),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    url: str = Field(sa_column=Column(Text, nullable=False))
    description: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    event_types: list[str] | None = Field(default=None, sa_column=Column(ARRAY(Text)))
    enabled: bool = Field(sa_column=Column(Boolean, nullable=False))
    disabled_reason: str | None = Field(default=None, sa_column=Column(Text))
    secret: str = Field(sa_column=Column(Text, nullable=False), repr=False)
    previous_secret: str | None = Field(default=None, sa_column=Column(Text), repr=False)
    previous_secret_until: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    consecutive_failures: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    failing_since: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    idempotency_key: str | None = Field(default=None, sa_column=Column(Text, unique=True))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class WebhookDelivery(SQLModel, table=True):
    """One event to one endpoint, once (unique): fan-out twice queues nothing more. A resend or a
    replay puts the row back to ``pending`` (its attempts stay in ``webhook_delivery_attempts``)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id", name="webhook_deliveries_once"),
        CheckConstraint("status IN ('pending', 'sending', 'delivered', 'failed')", name="webhook_deliveries_status"),
        Index("webhook_deliveries_due", "next_attempt_at", postgresql_where=text("status IN ('pending', 'sending')")),
        Index("webhook_deliveries_endpoint", "endpoint_id", "created_at", "id"),
        Index(
            "webhook_deliveries_finished",
            text("coalesce(last_attempt_at, created_at)"),
            postgresql_where=text("status IN ('delivered', 'failed')"),
        ),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    endpoint_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False)
    )
    event_id: uuid.UUID = Field(sa_column=Column(ForeignKey("webhook_events.id"), nullable=False))
    status: str = Field(sa_column=Column(Text, nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    next_attempt_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    lease_until: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    last_attempt_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    last_response_status: int | None = Field(default=None, sa_column=Column(Integer))
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    delivered_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class WebhookDeliveryAttempt(SQLModel, table=True):
    """One POST: the answer's status or the error, how long it took, the start of the body."""

    __tablename__ = "webhook_delivery_attempts"
    __table_args__ = (
        CheckConstraint("length(response_excerpt) <= 1024", name="webhook_delivery_attempts_excerpt"),
        Index("webhook_delivery_attempts_delivery", "delivery_id", "attempted_at"),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    delivery_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False)
    )
    attempted_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    response_status: int | None = Field(default=None, sa_column=Column(Integer))
    error: str | None = Field(default=None, sa_column=Column(Text))
    latency_ms: int = Field(sa_column=Column(Integer, nullable=False))
    response_excerpt: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
