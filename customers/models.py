"""Customers and their subscriptions to plan versions."""

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
    Identity,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    false,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlmodel import Field, SQLModel

CUSTOMER_STATUSES = ("ACTIVE", "PAST_DUE", "SUSPENDED")
#: What a phase of a subscription is: billed (ACTIVE), paused (no base fee) or over (CANCELED).
PHASE_STATUSES = ("ACTIVE", "PAUSED", "CANCELED")


class Customer(SQLModel, table=True):
    __tablename__ = "customers"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    external_id: str = Field(sa_column=Column(String, nullable=False, unique=True))
    name: str
    email: str | None = None
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    status: str = Field(default="ACTIVE")
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    # Billing details: who the invoices are addressed to (see customers.billing_details).
    legal_name: str | None = Field(default=None, sa_column=Column(Text))
    address_line1: str | None = Field(default=None, sa_column=Column(Text))
    address_line2: str | None = Field(default=None, sa_column=Column(Text))
    city: str | None = Field(default=None, sa_column=Column(Text))
    postal_code: str | None = Field(default=None, sa_column=Column(Text))
    region: str | None = Field(default=None, sa_column=Column(Text))  # state or province, e.g. "CA"
    country: str | None = Field(default=None, sa_column=Column(String(2)))  # ISO 3166-1 alpha-2
    tax_id: str | None = Field(default=None, sa_column=Column(Text))  # e.g. a VAT number "FR40303265045"
    tax_exemption: str = Field(default="none", sa_column=Column(Text, nullable=False, server_default="none"))
    invoice_emails: list[str] = Field(
        default_factory=list, sa_column=Column(ARRAY(Text), nullable=False, server_default="{}")
    )
    locale: str = Field(default="en", sa_column=Column(Text, nullable=False, server_default="en"))


class Subscription(SQLModel, table=True):
    """A customer's plan version and billing calendar.

    Periods follow :class:`customers.periods.BillingSchedule`: a trial ``[started_at,
    trial_ends_at)`` when there is one, then periods from ``billing_anchor`` (the start of the
    calendar in effect: ``started_at``, the trial's end, or the last change of billing interval),
    anchored on it, or on the calendar day ``billing_anchor_day`` when set (then the first period
    is a prorated stub). Each calendar's start is kept on the phase it began with, so past periods
    can be worked out; the row keeps the one in effect (and ``pending_billing_anchor``, the one a
    scheduled change of interval will start) for the hot paths.

    The full history of versions lives in :class:`SubscriptionPhase`; this row keeps what the
    hot paths need in one read: the version in effect and a change scheduled for a period end.
    ``invoiced_through`` is the billing run's cursor: the boundary up to which invoices exist
    (NULL until the opening invoice is issued).
    """

    __tablename__ = "subscriptions"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    customer_id: uuid.UUID = Field(sa_column=Column(ForeignKey("customers.id"), nullable=False, index=True))
    plan_version_id: uuid.UUID = Field(sa_column=Column(ForeignKey("plan_versions.id"), nullable=False))
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    pending_plan_version_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(ForeignKey("plan_versions.id"), nullable=True)
    )
    pending_change_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    invoiced_through: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    # The lifecycle in one read for the hot paths (ingestion, entitlements, the billing run's
    # selection); the phases and ``subscription_events`` are the history. ``cancel_at``: when the
    # subscription ends (past or scheduled), ``canceled_at``: when that was asked for.
    cancel_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    canceled_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    cancel_reason: str | None = Field(default=None, sa_column=Column(Text))
    paused_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    # Set by the first price override, never cleared: without it no override is ever read.
    has_price_overrides: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))
    billing_anchor: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    billing_anchor_day: int | None = Field(default=None, sa_column=Column(SmallInteger))
    trial_ends_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    pending_billing_anchor: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    # The earliest moment the period after ``invoiced_through`` can close (the billing run's filter).
    period_closes_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    # A subscription added to a customer (not made with them): its request's key and hash, so a
    # retried request adds it once.
    idempotency_key: str | None = Field(default=None, sa_column=Column(Text, unique=True))
    request_hash: str | None = None

    def in_trial(self, as_of: datetime) -> bool:
        return self.trial_ends_at is not None and self.started_at <= as_of < self.trial_ends_at

    def status_at(self, as_of: datetime) -> str:
        """ACTIVE, PAUSED or CANCELED at ``as_of``, from the row alone."""
        if self.cancel_at is not None and self.cancel_at <= as_of:
            return "CANCELED"
        if self.paused_at is not None and self.paused_at <= as_of:
            return "PAUSED"
        return "ACTIVE"

    def billing_anchor_at(self, as_of: datetime) -> datetime:
        """The start of the calendar in effect at ``as_of``: a scheduled change of interval
        starts its own from its moment on."""
        moment, pending = self.pending_change_at, self.pending_billing_anchor
        if pending is not None and moment is not None and as_of >= moment:
            return pending
        return self.billing_anchor

    def version_at(self, as_of: datetime) -> uuid.UUID:
        """The plan version pricing ``as_of``: a scheduled change counts from its moment on."""
        pending, moment = self.pending_plan_version_id, self.pending_change_at
        if pending is not None and moment is not None and as_of >= moment:
            return pending
        return self.plan_version_id


class SubscriptionPhase(SQLModel, table=True):
    """From ``starts_at`` until the next phase starts, ``plan_version_id`` prices the customer.

    Billing reads the phases overlapping a period to rate each part on its own version. A PAUSED
    part bills no base fee (usage as its version's ``paused_usage`` says); a CANCELED part bills
    nothing. A phase started by a plan change names it; one started by a lifecycle event, that.
    """

    __tablename__ = "subscription_phases"
    __table_args__ = (Index("subscription_phases_by_customer", "customer_id", "starts_at"),)

    subscription_id: uuid.UUID = Field(sa_column=Column(ForeignKey("subscriptions.id"), primary_key=True))
    customer_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    starts_at: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True))
    plan_version_id: uuid.UUID = Field(sa_column=Column(ForeignKey("plan_versions.id"), nullable=False))
    plan_change_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    status: str = Field(
        default="ACTIVE",
        sa_column=Column(
            String,
            CheckConstraint("status IN ('ACTIVE', 'PAUSED', 'CANCELED')", name="subscription_phases_status_known"),
            nullable=False,
            server_default="ACTIVE",
        ),
    )
    lifecycle_event_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    # Set when a billing calendar starts with this phase (the subscription's start, a change of
    # billing interval): periods from here on are anchored on it.
    billing_anchor: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class PlanChange(SQLModel, table=True):
    """An audited plan change: who moved the customer, from what to what, when, with which
    prorations. Its idempotency key makes a retried change harmless."""

    __tablename__ = "plan_changes"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    customer_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False, index=True))
    subscription_id: uuid.UUID = Field(sa_column=Column(ForeignKey("subscriptions.id"), nullable=False, index=True))
    from_plan_version_id: uuid.UUID = Field(sa_column=Column(ForeignKey("plan_versions.id"), nullable=False))
    to_plan_version_id: uuid.UUID = Field(sa_column=Column(ForeignKey("plan_versions.id"), nullable=False))
    timing: str
    effective_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    period_start: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    period_end: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    prorations: list[dict[str, Any]] = Field(sa_column=Column(JSONB, nullable=False))
    status: str
    actor: str
    idempotency_key: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    request_hash: str
    requested_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class SubscriptionEvent(SQLModel, table=True):
    """An audited lifecycle request: a cancel (now or at the period's end), the resume of a
    scheduled cancel, a pause or an unpause; who asked, why, when it takes effect, what it
    prorated and which invoices it issued. Its idempotency key makes a retry harmless."""

    __tablename__ = "subscription_events"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    customer_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False, index=True))
    subscription_id: uuid.UUID = Field(sa_column=Column(ForeignKey("subscriptions.id"), nullable=False, index=True))
    kind: str  # CANCEL, RESUME, PAUSE, UNPAUSE
    timing: str | None = None  # a cancel's: IMMEDIATELY or PERIOD_END
    effective_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(Text))
    status: str  # applied, scheduled (a cancel at the period's end), revoked (resumed before it)
    prorations: list[dict[str, Any]] = Field(sa_column=Column(JSONB, nullable=False))
    invoice_ids: list[str] = Field(sa_column=Column(JSONB, nullable=False))
    actor: str
    idempotency_key: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    request_hash: str
    requested_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class TrialChange(SQLModel, table=True):
    """An audited end or extension of a trial; its idempotency key makes a retry harmless."""

    __tablename__ = "trial_changes"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    customer_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False, index=True))
    subscription_id: uuid.UUID = Field(sa_column=Column(ForeignKey("subscriptions.id"), nullable=False, index=True))
    kind: str  # "end" or "extend"
    trial_ends_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    previous_trial_ends_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    actor: str
    idempotency_key: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    request_hash: str
    requested_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class PriceOverride(SQLModel, table=True):
    """One change of a customer's price for one charge of their plan version: a ``set`` (the
    ``terms`` it overrides, in the plan charge's own stored form) or a ``remove``, in effect from
    ``effective_at``. Never updated: each change is a new row, the audit of who, why, and the
    charge's terms ``before`` and ``after``. A ``remove`` written by a plan change names it."""

    __tablename__ = "price_overrides"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    customer_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False, index=True))
    # The order in which changes were recorded (a plan change's drop voids overrides scheduled before it).
    seq: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), nullable=False, unique=True)
    )
    subscription_id: uuid.UUID = Field(sa_column=Column(ForeignKey("subscriptions.id"), nullable=False))
    plan_version_id: uuid.UUID = Field(sa_column=Column(ForeignKey("plan_versions.id"), nullable=False))
    plan_charge_id: uuid.UUID = Field(sa_column=Column(ForeignKey("plan_charges.id"), nullable=False))
    action: str
    terms: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    before: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    after: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    effective_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    reason: str = Field(sa_column=Column(Text, nullable=False))
    actor: str
    plan_change_id: uuid.UUID | None = Field(default=None, sa_column=Column(ForeignKey("plan_changes.id")))
    idempotency_key: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    request_hash: str
    recorded_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class BillingDetailChange(SQLModel, table=True):
    """One change of a customer's billing details: who, when, and the fields that changed, each
    with its value ``before`` and ``after`` (keys are the columns of :class:`Customer`). Written in
    the transaction that changes the customer, never updated; ``id`` orders a customer's changes,
    so each row's ``before`` is what the previous row's ``after`` left (the customer row is locked
    while the change is worked out)."""

    __tablename__ = "customer_billing_detail_changes"
    __table_args__ = (Index("customer_billing_detail_changes_by_customer", "customer_id", "id"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True))
    customer_id: uuid.UUID = Field(sa_column=Column(ForeignKey("customers.id"), nullable=False))
    changed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    actor: str = Field(sa_column=Column(Text, nullable=False))
    before: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    after: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))


class CustomerTaxRate(SQLModel, table=True):
    """A tax rate assigned to a customer explicitly: when a customer has any, they apply instead
    of the rates of their address (``pricing.tax``), in ``position`` order."""

    __tablename__ = "customer_tax_rates"

    customer_id: uuid.UUID = Field(sa_column=Column(ForeignKey("customers.id"), primary_key=True))
    tax_rate_key: str = Field(sa_column=Column(Text, primary_key=True))
    position: int = Field(sa_column=Column(Integer, nullable=False))
    assigned_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
