"""Metering tables: raw events (the dedup key), usage waiting to be rolled up, hourly and daily
rollups, distinct values, quarantine, watermarks, per-batch ingestion statistics and the
authorizations that hold usage before it happens.
``customer_id`` leads every high-volume key."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
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
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlmodel import Field, SQLModel


class UsageEvent(SQLModel, table=True):
    """A raw event, stored once: its id is the producer's idempotency key."""

    __tablename__ = "events"

    event_id: str = Field(sa_column=Column(Text, primary_key=True))
    customer_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    event_type: str = Field(sa_column=Column(Text, nullable=False))
    occurred_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    properties: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    trace_id: str | None = Field(default=None, sa_column=Column(String(32)))


# The measurements of counted events until the roller folds them into the rollups. Written and
# read only by statements (no key to load a row by: rows are appended, then deleted in bulk).
usage_pending = Table(
    "usage_pending",
    SQLModel.metadata,
    Column("customer_id", UUID(as_uuid=True), nullable=False),
    Column("meter_id", UUID(as_uuid=True), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("dimensions", JSONB, nullable=False),
    Column("value", Numeric),
    Column("unique_value", Text),
    Column("event_id", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),  # the event's first arrival
    Column("counted_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),  # a replay's is later
    Index("usage_pending_customer", "customer_id"),
)


class UsageRollup(SQLModel, table=True):
    """What every meter needs of one (customer, meter, hour, dimensions), kept exact."""

    __tablename__ = "usage_rollups"

    customer_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    meter_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    hour: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True))
    dimensions: dict[str, Any] = Field(sa_column=Column(JSONB, primary_key=True))
    event_count: int = Field(sa_column=Column(BigInteger, nullable=False))
    value_sum: Decimal | None = Field(default=None, sa_column=Column(Numeric))
    value_max: Decimal | None = Field(default=None, sa_column=Column(Numeric))
    latest_value: Decimal | None = Field(default=None, sa_column=Column(Numeric))
    latest_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    latest_event_id: str = Field(sa_column=Column(Text, nullable=False))


class UsageUniqueValue(SQLModel, table=True):
    """Distinct values a unique_count meter saw in an hour, so a period's count stays exact."""

    __tablename__ = "usage_unique_values"

    customer_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    meter_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    hour: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True))
    dimensions: dict[str, Any] = Field(sa_column=Column(JSONB, primary_key=True))
    value: str = Field(sa_column=Column(Text, primary_key=True))


class UsageDailyRollup(SQLModel, table=True):
    """The same aggregate as :class:`UsageRollup` over one UTC day: a period reads a row a day."""

    __tablename__ = "usage_daily_rollups"

    customer_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    meter_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    day: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True))
    dimensions: dict[str, Any] = Field(sa_column=Column(JSONB, primary_key=True))
    event_count: int = Field(sa_column=Column(BigInteger, nullable=False))
    value_sum: Decimal | None = Field(default=None, sa_column=Column(Numeric))
    value_max: Decimal | None = Field(default=None, sa_column=Column(Numeric))
    latest_value: Decimal | None = Field(default=None, sa_column=Column(Numeric))
    latest_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    latest_event_id: str = Field(sa_column=Column(Text, nullable=False))


class UsageDailyUniqueValue(SQLModel, table=True):
    """Distinct values a unique_count meter saw in a UTC day."""

    __tablename__ = "usage_daily_unique_values"

    customer_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    meter_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    day: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True))
    dimensions: dict[str, Any] = Field(sa_column=Column(JSONB, primary_key=True))
    value: str = Field(sa_column=Column(Text, primary_key=True))


class QuarantinedEvent(SQLModel, table=True):
    """An event refused for an unknown customer or event type, kept to be replayed."""

    __tablename__ = "quarantined_events"

    event_id: str = Field(sa_column=Column(Text, primary_key=True))
    code: str
    message: str
    payload: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    replayed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    replay_outcome: str | None = None


class CustomerWatermark(SQLModel, table=True):
    """Usage is complete through ``watermark``: the latest event time counted for the customer."""

    __tablename__ = "customer_watermarks"

    customer_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    watermark: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    last_received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class IngestBatch(SQLModel, table=True):
    """One accepted request of events: counts and lags behind the Metering page."""

    __tablename__ = "ingest_batches"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    accepted: int = Field(sa_column=Column(Integer, nullable=False))
    duplicates: int = Field(sa_column=Column(Integer, nullable=False))
    rejected: dict[str, int] = Field(sa_column=Column(JSONB, nullable=False))
    ingest_lag_p50_ms: int | None = Field(default=None, sa_column=Column(BigInteger))
    ingest_lag_max_ms: int | None = Field(default=None, sa_column=Column(BigInteger))
    processing_ms: int = Field(sa_column=Column(Integer, nullable=False))
    trace_id: str | None = Field(default=None, sa_column=Column(String(32)))


class MeteringSnapshot(SQLModel, table=True):
    """How complete usage was at a moment, taken by a job every few minutes: the watermarks of the
    customers who sent events in the hour before, and the quarantine's depth. Kept so the console
    can chart them over time (batches already record volumes and lags)."""

    __tablename__ = "metering_snapshots"

    taken_at: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True))
    active_customers: int = Field(sa_column=Column(Integer, nullable=False))
    watermark_age_p50_ms: int | None = Field(default=None, sa_column=Column(BigInteger))
    watermark_age_max_ms: int | None = Field(default=None, sa_column=Column(BigInteger))
    quarantined: int = Field(sa_column=Column(Integer, nullable=False))


class UsageAuthorization(SQLModel, table=True):
    """A quantity of a meter held for a customer before it is used (``allowed``), or the refusal to
    hold it, recorded either way so that a retry with the same key gets the same answer. It counts
    against the limit while ``allowed``, unsettled and ``expires_at`` is ahead: no job has to
    release it for the count to be right. ``settled_by_event`` is the event that used it.

    Or an amount of money held against the customer's credits and spend cap
    (:mod:`billing.credits.spend_authorizations`): no meter and no quantity, but ``amount`` and
    ``currency``; its ``used``, ``usage_limit``, ``remaining`` and ``reserved`` are then minor
    units (spent so far, the spend cap, what remains, what money holds held)."""

    __tablename__ = "usage_authorizations"
    __table_args__ = (
        UniqueConstraint("customer_id", "idempotency_key", name="usage_authorizations_key"),
        CheckConstraint("quantity > 0", name="usage_authorizations_quantity"),
        CheckConstraint(
            "(meter_id IS NOT NULL AND quantity IS NOT NULL AND used IS NOT NULL AND reserved IS NOT NULL "
            "AND amount IS NULL AND currency IS NULL) OR "
            "(meter_id IS NULL AND quantity IS NULL AND amount > 0 AND currency IS NOT NULL "
            "AND used IS NOT NULL AND reserved IS NOT NULL AND credits_available IS NOT NULL)",
            name="usage_authorizations_holds_one_thing",
        ),
        Index(
            "usage_authorizations_live_spend",
            "customer_id",
            "expires_at",
            postgresql_where=text("allowed AND settled_at IS NULL AND meter_id IS NULL"),
        ),
        Index(
            "usage_authorizations_live",
            "customer_id",
            "meter_id",
            "expires_at",
            postgresql_where=text("allowed AND settled_at IS NULL"),
        ),
        Index("usage_authorizations_expiry", "expires_at"),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    customer_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), ForeignKey("customers.id"), nullable=False))
    meter_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True), ForeignKey("meters.id")))
    idempotency_key: str = Field(sa_column=Column(Text, nullable=False))
    quantity: Decimal | None = Field(default=None, sa_column=Column(Numeric))
    amount: int | None = Field(default=None, sa_column=Column(BigInteger))
    currency: str | None = Field(default=None, sa_column=Column(String(3)))
    credits_available: int | None = Field(default=None, sa_column=Column(BigInteger))
    ttl_seconds: int = Field(sa_column=Column(Integer, nullable=False))
    allowed: bool = Field(sa_column=Column(Boolean, nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(Text))
    used: Decimal = Field(sa_column=Column(Numeric))
    usage_limit: Decimal | None = Field(default=None, sa_column=Column(Numeric))
    remaining: Decimal | None = Field(default=None, sa_column=Column(Numeric))
    reserved: Decimal = Field(sa_column=Column(Numeric))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    settled_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    settled_by_event: str | None = Field(default=None, sa_column=Column(Text))
