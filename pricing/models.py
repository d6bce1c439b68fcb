"""Catalog tables: meters, plans and their immutable versions with charges."""

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
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel


class Meter(SQLModel, table=True):
    """A declared way to turn raw events into a quantity. What it counts never changes;
    only its display name and unit may."""

    __tablename__ = "meters"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    key: str = Field(sa_column=Column(String, nullable=False, unique=True))
    name: str
    unit: str
    event_type: str = Field(sa_column=Column(String, nullable=False, index=True))
    aggregation: str
    value_property: str | None = None
    group_by: list[str] = Field(sa_column=Column(JSONB, nullable=False))
    # Whether a value the meter reads may be negative (refused by default: usage is not a credit).
    allow_negative: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class Plan(SQLModel, table=True):
    __tablename__ = "plans"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    key: str = Field(sa_column=Column(String, nullable=False, unique=True))
    name: str
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class PlanVersion(SQLModel, table=True):
    """One immutable pricing of a plan. Subscriptions point at a version, never at the plan,
    so a price change applies to nobody until they are moved."""

    __tablename__ = "plan_versions"
    __table_args__ = (UniqueConstraint("plan_id", "version", "currency"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    plan_id: uuid.UUID = Field(sa_column=Column(ForeignKey("plans.id"), nullable=False))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    # A plan priced in several currencies has one version per currency with the same number; the
    # plan's own currency (``currency`` in the catalog) is the primary one, the others its options.
    primary_currency: bool = Field(default=True, sa_column=Column(Boolean, nullable=False, server_default=true()))
    interval: str
    base_fee: Decimal = Field(sa_column=Column(Numeric(30, 12), nullable=False))
    # The billing calendar and trial a new subscription gets (a subscription may override them).
    billing_anchor: str = Field(default="anniversary", sa_column=Column(String, nullable=False))
    trial_days: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    trial_usage: str = Field(default="free", sa_column=Column(String, nullable=False))
    trial_requires_payment_method: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    pricing_hash: str
    # The least a period bills (base fee and usage, before credits); a true-up line makes up the rest.
    minimum_spend: Decimal | None = Field(default=None, sa_column=Column(Numeric(30, 12)))
    # Threshold invoicing: once the period's usage not yet billed reaches this amount, an interim
    # invoice bills it (billing.invoices.threshold_invoicing). None: usage waits for the period's close.
    invoice_threshold: Decimal | None = Field(default=None, sa_column=Column(Numeric(30, 12)))
    # How a part of a period is measured: "exact" (to the microsecond) or "day" (whole days).
    proration: str = Field(default="exact", sa_column=Column(String, nullable=False, server_default="exact"))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    # While a subscription is paused: "meter" rates its usage as the plan says, "refuse" refuses
    # its events at ingestion (SUBSCRIPTION_PAUSED) and bills none of the paused part's usage.
    paused_usage: str = Field(
        default="meter",
        sa_column=Column(
            String,
            CheckConstraint("paused_usage IN ('meter', 'refuse')", name="plan_versions_paused_usage_known"),
            nullable=False,
            server_default="meter",
        ),
    )


class PlanCharge(SQLModel, table=True):
    """A usage charge of a plan version; decimals stay exact (NUMERIC, tiers as strings)."""

    __tablename__ = "plan_charges"
    __table_args__ = (UniqueConstraint("plan_version_id", "position"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    plan_version_id: uuid.UUID = Field(sa_column=Column(ForeignKey("plan_versions.id"), nullable=False))
    position: int
    meter_id: uuid.UUID = Field(sa_column=Column(ForeignKey("meters.id"), nullable=False))
    model: str
    unit_price: Decimal | None = Field(default=None, sa_column=Column(Numeric(30, 12)))
    tiers: list[dict[str, Any]] = Field(sa_column=Column(JSONB, nullable=False))
    package_size: Decimal | None = Field(default=None, sa_column=Column(Numeric(30, 0)))
    package_price: Decimal | None = Field(default=None, sa_column=Column(Numeric(30, 12)))
    included: Decimal = Field(sa_column=Column(Numeric(30, 12), nullable=False))
    minimum: Decimal | None = Field(default=None, sa_column=Column(Numeric(30, 12)))
    usage_limit: Decimal | None = Field(default=None, sa_column=Column("limit", Numeric(30, 12)))
    where: dict[str, str] = Field(sa_column=Column(JSONB, nullable=False))
    # Package: "up" (a started package costs a whole one) or "down" (a partial package is free).
    rounding: str = Field(default="up", sa_column=Column(String, nullable=False, server_default="up"))
    # Percentage: percent of the value, a fee per event, free events, and per-event bounds.
    percentage_rate: Decimal | None = Field(default=None, sa_column=Column(Numeric(30, 12)))
    fixed_fee: Decimal | None = Field(default=None, sa_column=Column(Numeric(30, 12)))
    free_events: int | None = Field(default=None, sa_column=Column(BigInteger))
    per_event_minimum: Decimal | None = Field(default=None, sa_column=Column(Numeric(30, 12)))
    per_event_maximum: Decimal | None = Field(default=None, sa_column=Column(Numeric(30, 12)))
    # "in_arrears" (rated on the period's usage at its close) or "in_advance" (a latest or max
    # meter's value billed at the period's start, topped up when it rises: billing.invoices.advance).
    billed: str = Field(
        default="in_arrears",
        sa_column=Column(
            String,
            CheckConstraint("billed IN ('in_arrears', 'in_advance')", name="plan_charges_billed_known"),
            nullable=False,
            server_default="in_arrears",
        ),
    )


class TaxRate(SQLModel, table=True):
    """One immutable version of a catalog tax rate (``rate`` a percent, 0 <= rate < 100). A
    changed rate is a new version; issued invoices keep what they applied in their tax lines."""

    __tablename__ = "tax_rates"
    __table_args__ = (UniqueConstraint("key", "version"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    key: str = Field(sa_column=Column(Text, nullable=False))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    name: str = Field(sa_column=Column(Text, nullable=False))
    rate: Decimal = Field(sa_column=Column(Numeric(8, 4), nullable=False))
    inclusive: bool = Field(sa_column=Column(Boolean, nullable=False))
    country: str = Field(sa_column=Column(String(2), nullable=False))
    region: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
