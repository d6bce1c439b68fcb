"""Invoices and their lines, the gapless invoice number, and what each billed period was rated on.

Amounts are integers in the currency's minor unit; each line also keeps its exact amount
(``amount_exact``) so that rounding is always reportable. An issued invoice never changes: a
trigger refuses any update of an invoice other than its collection status, and any update or
delete of a line.
"""

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
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlmodel import Field, SQLModel

INVOICE_KINDS = ("opening", "period", "one_off", "commitment", "interim", "credit_purchase")
INVOICE_STATUSES = ("issued", "paid", "void", "uncollectible")
LINE_KINDS = (
    "base_fee",
    "usage",
    "proration",
    "late_usage",
    "one_off",
    "minimum_spend",
    "commitment",
    "advance",
    "advance_proration",
    "discount",
    "credit_purchase",
)
# What an in-advance charge billed for a period: at its start, a rise, and what a pause, cancel or
# plan change credits (the unused rest) or charges again (the rest, at the value then).
ADVANCE_BILL_KINDS = ("advance", "top_up", "credit", "charge")
# Invoices of these kinds bill no period boundary (several may share a moment): each is made once
# by its one-off charge's, prepaid commitment's or credit purchase's own idempotency key instead.
UNBOUNDED_INVOICE_KINDS = ("one_off", "commitment", "credit_purchase")
_BOUNDED = f"kind NOT IN {UNBOUNDED_INVOICE_KINDS!r}"
# Interim invoices bill a boundary's period too, but several of them: numbered, not one per boundary.
_ONE_PER_BOUNDARY = f"kind NOT IN {(*UNBOUNDED_INVOICE_KINDS, 'interim')!r}"


class Invoice(SQLModel, table=True):
    """One per customer and billing boundary: ``opening`` bills the first period's base fee when
    the subscription starts; ``period`` closes ``[period_start, period_end)`` (usage in arrears)
    and bills the next period's base fee in advance. The unique key makes a re-run harmless.
    A ``one_off`` invoice bills one one-off charge at once; a ``commitment`` invoice bills a
    prepaid commitment (its period is the commitment's). An ``interim`` invoice bills a period's
    usage before it closes, once it reached the plan's threshold (billing.invoices.threshold_invoicing);
    ``interim_sequence`` numbers them within the period. A ``credit_purchase`` invoice bills
    credits bought (:mod:`billing.credits.topups`), granted when it is paid."""

    __tablename__ = "invoices"
    __table_args__ = (
        Index(
            "invoices_one_per_boundary",
            "subscription_id",
            "kind",
            "period_start",
            unique=True,
            postgresql_where=text(_ONE_PER_BOUNDARY),
        ),
        # Interim invoices (threshold invoicing) bill a period before it closes: n-th of the period.
        Index(
            "invoices_one_interim_per_sequence",
            "subscription_id",
            "period_start",
            "interim_sequence",
            unique=True,
            postgresql_where=text("kind = 'interim'"),
        ),
        CheckConstraint(
            "(kind = 'interim') = (interim_sequence IS NOT NULL) "
            "AND (interim_sequence IS NULL OR interim_sequence > 0)",
            name="invoices_interim_sequence_known",
        ),
        CheckConstraint(
            f"subscription_id IS NOT NULL OR NOT ({_BOUNDED})",
            name="invoices_boundary_has_subscription",
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    customer_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    # The subscription whose boundary it bills (an ``opening`` or ``period`` invoice always has one).
    subscription_id: uuid.UUID | None = Field(default=None, sa_column=Column(ForeignKey("subscriptions.id")))
    number: int = Field(sa_column=Column(BigInteger, nullable=False, unique=True))
    kind: str
    status: str
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    period_start: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    period_end: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    subtotal: int = Field(sa_column=Column(BigInteger, nullable=False))
    credits_applied: int = Field(sa_column=Column(BigInteger, nullable=False))
    total: int = Field(sa_column=Column(BigInteger, nullable=False))
    amount_due: int = Field(sa_column=Column(BigInteger, nullable=False))
    # All its tax (billing.invoices.taxation): ``total`` is ``subtotal`` plus the exclusive part of it.
    tax_amount: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    issued_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    ledger_transaction_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    credits_transaction_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    trace_id: str | None = Field(default=None, sa_column=Column(String(32)))
    # The buyer's billing details as they stood at issue (None: issued before they were kept).
    billing_details: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    due_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    interim_sequence: int | None = Field(default=None, sa_column=Column(Integer))


class InvoiceTaxLine(SQLModel, table=True):
    """One rate's tax on an issued invoice, a copy of the rate as applied (a later change of the
    rate never rewrites it); a reverse-charge line carries no tax and the invoice's note."""

    __tablename__ = "invoice_tax_lines"

    invoice_id: uuid.UUID = Field(sa_column=Column(ForeignKey("invoices.id"), primary_key=True))
    position: int = Field(sa_column=Column(Integer, primary_key=True))
    rate_key: str = Field(sa_column=Column(Text, nullable=False))
    name: str = Field(sa_column=Column(Text, nullable=False))
    rate: Decimal = Field(sa_column=Column(Numeric(8, 4), nullable=False))
    inclusive: bool = Field(sa_column=Column(Boolean, nullable=False))
    taxable_amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    tax_amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    reverse_charge: bool = Field(sa_column=Column(Boolean, nullable=False))


class InvoiceLine(SQLModel, table=True):
    """A priced line. ``service_start``/``service_end`` say what time it pays for: the next period
    for a base fee, the original period for late usage."""

    __tablename__ = "invoice_lines"

    invoice_id: uuid.UUID = Field(sa_column=Column(ForeignKey("invoices.id"), primary_key=True))
    position: int = Field(sa_column=Column(Integer, primary_key=True))
    kind: str
    description: str = Field(sa_column=Column(Text, nullable=False))
    plan_version_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    plan_charge_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    meter_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    dimensions: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    quantity: Decimal | None = Field(default=None, sa_column=Column(Numeric))
    unit_price: Decimal | None = Field(default=None, sa_column=Column(Numeric))
    amount_exact: Decimal = Field(sa_column=Column(Numeric, nullable=False))
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    service_start: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    service_end: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class InvoiceNumberCounter(SQLModel, table=True):
    """The last invoice number issued. Taken with ``UPDATE … RETURNING`` in the invoice's own
    transaction, so a rolled-back invoice gives its number back: numbers have no gaps."""

    __tablename__ = "invoice_number_counter"

    id: int = Field(sa_column=Column(Integer, primary_key=True))
    last_number: int = Field(sa_column=Column(BigInteger, nullable=False))


class RatedPeriod(SQLModel, table=True):
    """How many events a billed period held when it was last rated. More events now means late
    usage arrived: the next invoice re-rates the period and bills the difference."""

    __tablename__ = "rated_periods"
    __table_args__ = (Index("rated_periods_by_customer", "customer_id", "period_start"),)

    subscription_id: uuid.UUID = Field(sa_column=Column(ForeignKey("subscriptions.id"), primary_key=True))
    customer_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    period_start: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True))
    period_end: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    event_count: int = Field(sa_column=Column(BigInteger, nullable=False))
    rated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


STRIPE_EVENT_STATUSES = ("received", "processed", "ignored", "failed")


class StripeEvent(SQLModel, table=True):
    """A Stripe webhook event, stored once by its id before anything acts on it: Stripe retries
    deliveries, sends them in any order, and a duplicate must have no second effect."""

    __tablename__ = "stripe_events"

    id: str = Field(sa_column=Column(Text, primary_key=True))
    type: str = Field(sa_column=Column(Text, nullable=False))
    object_id: str | None = Field(default=None, sa_column=Column(Text))
    created: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    livemode: bool
    payload: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    deliveries: int = Field(sa_column=Column(Integer, nullable=False))
    status: str
    processed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    error: str | None = Field(default=None, sa_column=Column(Text))  # why it failed or was ignored
    trace_id: str | None = Field(default=None, sa_column=Column(String(32)))  # the delivery's request
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    # A failed event is tried again then; None: not again until someone retries it by hand.
    next_attempt_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class BillingFailure(SQLModel, table=True):
    """A customer whose next invoice could not be issued: the error, how many runs tried, and
    when the next one may try again (backoff). Deleted when their invoice is issued at last; the
    billing run bills every other customer meanwhile."""

    __tablename__ = "billing_failures"

    customer_id: uuid.UUID = Field(sa_column=Column(ForeignKey("customers.id"), primary_key=True))
    attempts: int = Field(sa_column=Column(Integer, nullable=False))
    first_failed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    last_failed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    next_attempt_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    error: str = Field(sa_column=Column(Text, nullable=False))
    trace_id: str | None = Field(default=None, sa_column=Column(String(32)))


class StripeCustomer(SQLModel, table=True):
    """The Stripe customer of a Tally customer, created on demand, and their default card."""

    __tablename__ = "stripe_customers"

    customer_id: uuid.UUID = Field(sa_column=Column(ForeignKey("customers.id"), primary_key=True))
    stripe_customer_id: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    default_payment_method: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class CollectionOutbox(SQLModel, table=True):
    """An invoice with an amount due, to collect through Stripe. Written in the invoice's own
    transaction, so no issued invoice is ever forgotten; a worker claims rows with SKIP LOCKED."""

    __tablename__ = "collection_outbox"

    invoice_id: uuid.UUID = Field(sa_column=Column(ForeignKey("invoices.id"), primary_key=True))
    customer_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    attempts: int = Field(sa_column=Column(Integer, nullable=False))
    status: str
    next_attempt_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    first_failed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    unavailable_retries: int = Field(sa_column=Column(Integer, nullable=False))  # Stripe unreachable: backoff
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class PaymentAttempt(SQLModel, table=True):
    """One try at collecting an invoice: its PaymentIntent (key ``invoice:<id>:attempt:<n>``)."""

    __tablename__ = "payment_attempts"

    invoice_id: uuid.UUID = Field(sa_column=Column(ForeignKey("invoices.id"), primary_key=True))
    attempt: int = Field(sa_column=Column(Integer, primary_key=True))
    payment_intent_id: str | None = Field(default=None, sa_column=Column(Text))
    status: str
    error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class StripePayment(SQLModel, table=True):
    """A payment of a Tally invoice that succeeded in Stripe, posted once, with what has since been
    refunded and disputed: what reconciliation compares with Stripe's PaymentIntent and charge."""

    __tablename__ = "stripe_payments"
    __table_args__ = (Index("stripe_payments_by_customer", "customer_id", "paid_at"),)

    payment_intent_id: str = Field(sa_column=Column(Text, primary_key=True))
    invoice_id: uuid.UUID = Field(sa_column=Column(ForeignKey("invoices.id"), nullable=False))
    customer_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    charge_id: str | None = Field(default=None, sa_column=Column(Text, unique=True))
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    refunded: int = Field(sa_column=Column(BigInteger, nullable=False))
    disputed: int = Field(sa_column=Column(BigInteger, nullable=False))
    paid_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    ledger_transaction_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))


class StripeDispute(SQLModel, table=True):
    """A dispute opened on a payment: the disputed amount leaves Stripe clearing at once."""

    __tablename__ = "stripe_disputes"

    dispute_id: str = Field(sa_column=Column(Text, primary_key=True))
    payment_intent_id: str = Field(sa_column=Column(ForeignKey("stripe_payments.payment_intent_id"), nullable=False))
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(Text))
    status: str = Field(sa_column=Column(Text, nullable=False))
    opened_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    ledger_transaction_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))


class ReconciliationRun(SQLModel, table=True):
    __tablename__ = "reconciliation_runs"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    as_of: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    checked: int = Field(sa_column=Column(Integer, nullable=False))
    discrepancies: int = Field(sa_column=Column(Integer, nullable=False))


DISCREPANCY_KINDS = (
    "MISSING_IN_TALLY",
    "MISSING_IN_STRIPE",
    "AMOUNT_MISMATCH",
    "CURRENCY_MISMATCH",
    "STATUS_MISMATCH",
    "DUPLICATE",
)


class ReconciliationDiscrepancy(SQLModel, table=True):
    """A difference between the ledger and Stripe about one object, with both sides as they were
    seen; found again by a later run, it is the same row (kind, object)."""

    __tablename__ = "reconciliation_discrepancies"
    __table_args__ = (UniqueConstraint("kind", "object_id"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    kind: str
    object_id: str = Field(sa_column=Column(Text, nullable=False))
    invoice_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    customer_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    summary: str = Field(sa_column=Column(Text, nullable=False))
    tally_side: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    stripe_side: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    detected_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    last_seen_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    status: str
    note: str | None = Field(default=None, sa_column=Column(Text))
    resolved_by: str | None = Field(default=None, sa_column=Column(Text))
    resolved_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


ANOMALY_SEVERITIES = ("low", "medium", "high", "critical")
ANOMALY_STATUSES = ("open", "acknowledged", "resolved")


class Anomaly(SQLModel, table=True):
    """Something that looks wrong, stored once per (kind, customer, window): a detector that finds
    it again updates nothing, so an acknowledged or resolved anomaly stays so."""

    __tablename__ = "anomalies"
    __table_args__ = (UniqueConstraint("kind", "customer_id", "window_start", postgresql_nulls_not_distinct=True),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    kind: str
    customer_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    window_start: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    window_end: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    severity: str
    summary: str = Field(sa_column=Column(Text, nullable=False))
    numbers: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    detected_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    status: str
    note: str | None = Field(default=None, sa_column=Column(Text))
    status_by: str | None = Field(default=None, sa_column=Column(Text))
    status_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


ONE_OFF_TIMINGS = ("now", "next_invoice")
ONE_OFF_STATUSES = ("pending", "invoiced", "canceled")


class OneOffCharge(SQLModel, table=True):
    """A fee outside the plan: ``now`` is invoiced at once on its own ``one_off`` invoice;
    ``next_invoice`` waits, ``pending``, until the customer's next invoice claims it (a
    conditional update from ``pending`` in that invoice's transaction, so exactly one invoice
    ever bills it) or until it is canceled. ``amount`` is ``amount_exact`` rounded once."""

    __tablename__ = "one_off_charges"
    __table_args__ = (
        Index("one_off_charges_by_customer", "customer_id", "created_at"),
        Index("one_off_charges_pending", "customer_id", postgresql_where=text("status = 'pending'")),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    customer_id: uuid.UUID = Field(sa_column=Column(ForeignKey("customers.id"), nullable=False))
    subscription_id: uuid.UUID | None = Field(default=None, sa_column=Column(ForeignKey("subscriptions.id")))
    description: str = Field(sa_column=Column(Text, nullable=False))
    quantity: Decimal = Field(sa_column=Column(Numeric, nullable=False))
    unit_price: Decimal = Field(sa_column=Column(Numeric, nullable=False))
    amount_exact: Decimal = Field(sa_column=Column(Numeric, nullable=False))
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    timing: str
    status: str
    # Deferred: the invoice claiming a charge claims it before the invoice row is written.
    invoice_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(ForeignKey("invoices.id", deferrable=True, initially="DEFERRED"))
    )
    actor: str
    idempotency_key: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    request_hash: str
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    canceled_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    canceled_by: str | None = None
    cancel_reason: str | None = Field(default=None, sa_column=Column(Text))
    cancel_key: str | None = Field(default=None, sa_column=Column(Text, unique=True))


class MinimumSpend(SQLModel, table=True):
    """A subscription's own minimum spend per period from ``effective_at`` on (a null ``amount``
    goes back to the plan's). Rows are never changed: the latest row in effect at a moment is the
    minimum then (by ``effective_at``, then by ``sequence`` when two take effect together)."""

    __tablename__ = "minimum_spends"
    __table_args__ = (Index("minimum_spends_by_customer", "customer_id", "effective_at"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    customer_id: uuid.UUID = Field(sa_column=Column(ForeignKey("customers.id"), nullable=False))
    subscription_id: uuid.UUID | None = Field(default=None, sa_column=Column(ForeignKey("subscriptions.id")))
    amount: Decimal | None = Field(default=None, sa_column=Column(Numeric(30, 12)))
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    effective_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    reason: str = Field(sa_column=Column(Text, nullable=False))
    actor: str
    idempotency_key: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    request_hash: str
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    sequence: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), nullable=False, unique=True)
    )


class PrepaidCommitment(SQLModel, table=True):
    """An amount the customer commits to and is invoiced for now (a ``commitment`` invoice),
    granted as credits (source ``commitment``) drawable from ``starts_at``; what is left at
    ``ends_at`` expires to breakage. ``grant_id`` and ``invoice_id`` are set in the transaction
    that writes the row (the row comes first: its idempotency key decides whether to go on)."""

    __tablename__ = "prepaid_commitments"
    __table_args__ = (Index("prepaid_commitments_by_customer", "customer_id", "created_at"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    customer_id: uuid.UUID = Field(sa_column=Column(ForeignKey("customers.id"), nullable=False))
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    starts_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    ends_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    priority: int = Field(sa_column=Column(Integer, nullable=False))
    grant_id: uuid.UUID | None = Field(default=None, sa_column=Column(ForeignKey("credit_grants.id")))
    invoice_id: uuid.UUID | None = Field(default=None, sa_column=Column(ForeignKey("invoices.id")))
    actor: str
    idempotency_key: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    request_hash: str
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class AdvanceChargeBill(SQLModel, table=True):
    """An amount an in-advance charge (seats) billed for the period starting at ``period_start``:
    ``advance`` at its start for ``quantity`` (the meter's value then), ``top_up`` when the value
    rose from ``previous_quantity`` at ``effective_at``, ``credit`` of the unused rest when the
    subscription was paused, canceled or left the charge's plan then, ``charge`` of the rest when
    it came back. The key (customer, charge, period start, moment, kind) is written in the
    transaction of the invoice that bills it: a retried billing run can never bill one twice.
    Rows never change (a trigger refuses it)."""

    __tablename__ = "advance_charge_bills"

    customer_id: uuid.UUID = Field(sa_column=Column(ForeignKey("customers.id"), primary_key=True))
    plan_charge_id: uuid.UUID = Field(sa_column=Column(ForeignKey("plan_charges.id"), primary_key=True))
    period_start: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True))
    effective_at: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True))
    kind: str = Field(sa_column=Column(String, primary_key=True))
    plan_version_id: uuid.UUID = Field(sa_column=Column(ForeignKey("plan_versions.id"), nullable=False))
    previous_quantity: Decimal = Field(sa_column=Column(Numeric, nullable=False))
    quantity: Decimal = Field(sa_column=Column(Numeric, nullable=False))
    share: Decimal = Field(sa_column=Column(Numeric, nullable=False))
    amount_exact: Decimal = Field(sa_column=Column(Numeric, nullable=False))
    invoice_id: uuid.UUID = Field(sa_column=Column(ForeignKey("invoices.id"), nullable=False))


COUPON_DURATIONS = ("once", "repeating", "forever")


class Coupon(SQLModel, table=True):
    """A percentage or a fixed amount off, on the whole invoice or on the lines of the meters
    ``applies_to`` names, for one invoice, ``duration_periods`` invoices or forever. Applied to
    customers at most ``max_redemptions`` times: ``redemptions`` only grows by a conditional
    increment, never a read-then-write, so concurrent applications cannot pass the limit."""

    __tablename__ = "coupons"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    code: str = Field(sa_column=Column(Text, nullable=False))
    code_key: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    name: str = Field(sa_column=Column(Text, nullable=False))
    percent_off: Decimal | None = Field(default=None, sa_column=Column(Numeric))
    amount_off: int | None = Field(default=None, sa_column=Column(BigInteger))
    currency: str | None = Field(default=None, sa_column=Column(String(3)))
    # Meter keys: empty for the whole invoice.
    applies_to: list[str] = Field(sa_column=Column(ARRAY(Text), nullable=False))
    duration: str
    duration_periods: int | None = None
    max_redemptions: int | None = None
    redemptions: int = 0
    redeem_by: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    active: bool = Field(default=True, sa_column=Column(Boolean, nullable=False))
    actor: str
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    archived_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class CustomerDiscount(SQLModel, table=True):
    """A coupon applied to a customer: once per customer and coupon; ``periods`` is how many of
    their invoices it discounts (None: forever), counted by :class:`DiscountPeriod` rows."""

    __tablename__ = "customer_discounts"
    __table_args__ = (UniqueConstraint("customer_id", "coupon_id"), UniqueConstraint("customer_id", "idempotency_key"))

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    customer_id: uuid.UUID = Field(sa_column=Column(ForeignKey("customers.id"), nullable=False))
    coupon_id: uuid.UUID = Field(sa_column=Column(ForeignKey("coupons.id"), nullable=False))
    periods: int | None = None
    status: str
    idempotency_key: str = Field(sa_column=Column(Text, nullable=False))
    actor: str
    applied_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    removed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    removed_by: str | None = None


class DiscountPeriod(SQLModel, table=True):
    """One period of a discount, used by exactly one invoice (written in its transaction; rows
    never change). ``amount`` is what it took off, in minor units."""

    __tablename__ = "discount_periods"
    __table_args__ = (UniqueConstraint("discount_id", "invoice_id"),)

    discount_id: uuid.UUID = Field(sa_column=Column(ForeignKey("customer_discounts.id"), primary_key=True))
    period_number: int = Field(sa_column=Column(Integer, primary_key=True))
    customer_id: uuid.UUID = Field(sa_column=Column(ForeignKey("customers.id"), nullable=False))
    invoice_id: uuid.UUID = Field(sa_column=Column(ForeignKey("invoices.id"), nullable=False))
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))


CREDIT_NOTE_METHODS = ("REFUND", "CREDIT", "REDUCE_DUE")
CREDIT_NOTE_REASONS = ("duplicate", "product_unsatisfactory", "order_change", "fraudulent", "other")
CREDIT_NOTE_STATUSES = ("issued", "refund_pending", "refunded", "refund_failed")


class CreditNote(SQLModel, table=True):
    """A correction of an issued invoice: ``amount`` taken back, settled by ``method`` (``REFUND`` to
    the card through the refund outbox, ``CREDIT`` to the customer's credit balance as a grant,
    ``REDUCE_DUE`` off what is still to collect). Numbered in its own gapless series; a trigger
    refuses any change but its status (a refund's progress)."""

    __tablename__ = "credit_notes"
    __table_args__ = (
        Index("credit_notes_by_customer", "customer_id", "issued_at"),
        Index("credit_notes_by_invoice", "invoice_id"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    customer_id: uuid.UUID = Field(sa_column=Column(ForeignKey("customers.id"), nullable=False))
    number: int = Field(sa_column=Column(BigInteger, nullable=False, unique=True))
    invoice_id: uuid.UUID = Field(sa_column=Column(ForeignKey("invoices.id"), nullable=False))
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    # The part of ``amount`` that is tax given back (debited from tax_payable).
    tax_amount: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    method: str
    reason: str
    note: str | None = Field(default=None, sa_column=Column(Text))
    status: str
    ledger_transaction_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    grant_id: uuid.UUID | None = Field(default=None, sa_column=Column(ForeignKey("credit_grants.id")))
    actor: str
    idempotency_key: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    request_hash: str
    issued_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class CreditNoteLine(SQLModel, table=True):
    """What a credit note takes back of one invoice line, and the revenue account it reverses."""

    __tablename__ = "credit_note_lines"
    __table_args__ = (
        ForeignKeyConstraint(
            ["invoice_id", "invoice_line_position"], ["invoice_lines.invoice_id", "invoice_lines.position"]
        ),
        Index("credit_note_lines_by_invoice_line", "invoice_id", "invoice_line_position"),
    )

    credit_note_id: uuid.UUID = Field(sa_column=Column(ForeignKey("credit_notes.id"), primary_key=True))
    position: int = Field(sa_column=Column(Integer, primary_key=True))
    invoice_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    invoice_line_position: int = Field(sa_column=Column(Integer, nullable=False))
    description: str = Field(sa_column=Column(Text, nullable=False))
    revenue_account: str
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))


class CreditNoteNumberCounter(SQLModel, table=True):
    """The last credit note number issued, taken like invoice numbers (``UPDATE … RETURNING`` in the
    note's own transaction): a rolled-back note gives its number back, so the series has no gaps."""

    __tablename__ = "credit_note_number_counter"

    id: int = Field(sa_column=Column(Integer, primary_key=True))
    last_number: int = Field(sa_column=Column(BigInteger, nullable=False))


class RefundOutbox(SQLModel, table=True):
    """A ``REFUND`` credit note's money to send back through Stripe, written in the note's own
    transaction; a worker claims rows with SKIP LOCKED (like the collection outbox)."""

    __tablename__ = "refund_outbox"
    __table_args__ = (Index("refund_outbox_due", "status", "next_attempt_at"),)

    credit_note_id: uuid.UUID = Field(sa_column=Column(ForeignKey("credit_notes.id"), primary_key=True))
    invoice_id: uuid.UUID = Field(sa_column=Column(ForeignKey("invoices.id"), nullable=False))
    payment_intent_id: str = Field(sa_column=Column(ForeignKey("stripe_payments.payment_intent_id"), nullable=False))
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    status: str
    attempts: int = Field(sa_column=Column(Integer, nullable=False))
    next_attempt_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    stripe_refund_id: str | None = Field(default=None, sa_column=Column(Text))
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


ALERT_METRICS = ("usage", "spend")
ALERT_THRESHOLD_UNITS = ("absolute", "percent")


class UsageAlert(SQLModel, table=True):
    """What to watch for one customer, or for every customer on one plan: a meter's usage in the
    period (``metric`` usage) or the period's running amount in ``currency`` (spend). Thresholds
    are quantities or minor units (absolute) or percentages of the meter's entitlement limit or of
    ``spend_base`` (percent). Deleting keeps the row (``deleted_at``): its firings stay readable."""

    __tablename__ = "usage_alerts"
    __table_args__ = (
        CheckConstraint("(customer_id IS NULL) <> (plan_id IS NULL)", name="usage_alerts_one_owner"),
        Index(
            "usage_alerts_name",
            text("coalesce(customer_id, plan_id)"),
            "name",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(sa_column=Column(Text, nullable=False))
    customer_id: uuid.UUID | None = Field(default=None, sa_column=Column(ForeignKey("customers.id"), index=True))
    plan_id: uuid.UUID | None = Field(default=None, sa_column=Column(ForeignKey("plans.id"), index=True))
    metric: str = Field(sa_column=Column(Text, nullable=False))
    meter_id: uuid.UUID | None = Field(default=None, sa_column=Column(ForeignKey("meters.id")))
    currency: str | None = Field(default=None, sa_column=Column(String(3)))
    threshold_unit: str = Field(sa_column=Column(Text, nullable=False))
    spend_base: int | None = Field(default=None, sa_column=Column(BigInteger))
    thresholds: list[Decimal] = Field(sa_column=Column(ARRAY(Numeric(30, 12)), nullable=False))
    actor: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    deleted_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class UsageAlertFiring(SQLModel, table=True):
    """A threshold of an alert crossed by a customer in a period: once per (alert, customer,
    period start, threshold), whatever the number of roll-ups racing to see it. ``threshold`` is
    as defined (80 for 80%); ``threshold_value`` what it meant then (a quantity, or minor units);
    ``observed`` the usage or running amount that crossed it."""

    __tablename__ = "usage_alert_firings"
    __table_args__ = (
        UniqueConstraint("alert_id", "customer_id", "period_start", "threshold", name="usage_alert_firings_once"),
        Index("usage_alert_firings_customer", "customer_id", "fired_at"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    alert_id: uuid.UUID = Field(sa_column=Column(ForeignKey("usage_alerts.id"), nullable=False))
    customer_id: uuid.UUID = Field(sa_column=Column(ForeignKey("customers.id"), nullable=False))
    period_start: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    period_end: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    threshold: Decimal = Field(sa_column=Column(Numeric(30, 12), nullable=False))
    threshold_value: Decimal = Field(sa_column=Column(Numeric(30, 12), nullable=False))
    observed: Decimal = Field(sa_column=Column(Numeric(30, 12), nullable=False))
    fired_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class CreditPurchase(SQLModel, table=True):
    """Credits a customer buys (:mod:`billing.credits.topups`): billed at once on a ``credit_purchase``
    invoice, granted (``grant_id``) when that invoice is paid, never before and only once. A
    failed payment leaves it ``failed``, with nothing granted. ``origin`` is ``request`` (someone
    asked) or ``auto_recharge``; at most one auto-recharge per customer awaits payment (a partial
    unique index), so concurrent balance checks cannot charge twice."""

    __tablename__ = "credit_purchases"
    __table_args__ = (
        CheckConstraint("amount > 0", name="credit_purchases_amount_positive"),
        CheckConstraint("priority BETWEEN 0 AND 1000000", name="credit_purchases_priority_range"),
        CheckConstraint("expires_in_days BETWEEN 1 AND 3660", name="credit_purchases_validity_range"),
        CheckConstraint("origin IN ('request', 'auto_recharge')", name="credit_purchases_origin_known"),
        CheckConstraint("status IN ('awaiting_payment', 'paid', 'failed')", name="credit_purchases_status_known"),
        Index("credit_purchases_by_customer", "customer_id", "created_at"),
        Index(
            "credit_purchases_one_recharge_in_flight",
            "customer_id",
            unique=True,
            postgresql_where=text("origin = 'auto_recharge' AND status = 'awaiting_payment'"),
        ),
        Index(
            "credit_purchases_by_invoice", "invoice_id", unique=True, postgresql_where=text("invoice_id IS NOT NULL")
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    customer_id: uuid.UUID = Field(sa_column=Column(ForeignKey("customers.id"), nullable=False))
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    priority: int = Field(sa_column=Column(Integer, nullable=False))
    # The credits expire this many days after they are granted (paid); None: never.
    expires_in_days: int | None = Field(default=None, sa_column=Column(Integer))
    origin: str
    status: str
    invoice_id: uuid.UUID | None = Field(default=None, sa_column=Column(ForeignKey("invoices.id")))
    grant_id: uuid.UUID | None = Field(default=None, sa_column=Column(ForeignKey("credit_grants.id")))
    failure: str | None = Field(default=None, sa_column=Column(Text))
    actor: str
    idempotency_key: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    request_hash: str
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    settled_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class CreditBalanceSettings(SQLModel, table=True):
    """A customer's low-balance threshold and auto-recharge, amounts in minor units of
    ``currency`` (the customer's). ``balance_low`` is the alert's state: set when the balance fell
    below the threshold and ``credits.balance_low`` was emitted (crossing number
    ``balance_low_crossings``), cleared when it is back at or above it, so each crossing tells once.
    The row is locked by every balance check: checks of one customer run one at a time."""

    __tablename__ = "credit_balance_settings"
    __table_args__ = (
        CheckConstraint("low_balance_threshold >= 0", name="credit_balance_settings_low_not_negative"),
        CheckConstraint("recharge_threshold >= 0", name="credit_balance_settings_threshold_not_negative"),
        CheckConstraint("recharge_amount > 0", name="credit_balance_settings_amount_positive"),
        CheckConstraint("recharge_monthly_cap >= recharge_amount", name="credit_balance_settings_cap_holds_one"),
        CheckConstraint("spend_cap > 0", name="credit_balance_settings_spend_cap_positive"),
        CheckConstraint(
            "NOT recharge_enabled OR (recharge_threshold IS NOT NULL AND recharge_amount IS NOT NULL "
            "AND recharge_monthly_cap IS NOT NULL)",
            name="credit_balance_settings_recharge_complete",
        ),
    )

    customer_id: uuid.UUID = Field(sa_column=Column(ForeignKey("customers.id"), primary_key=True))
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    low_balance_threshold: int | None = Field(default=None, sa_column=Column(BigInteger))
    recharge_enabled: bool = Field(sa_column=Column(Boolean, nullable=False))
    recharge_threshold: int | None = Field(default=None, sa_column=Column(BigInteger))
    recharge_amount: int | None = Field(default=None, sa_column=Column(BigInteger))
    recharge_monthly_cap: int | None = Field(default=None, sa_column=Column(BigInteger))
    recharge_priority: int = Field(sa_column=Column(Integer, nullable=False))
    recharge_expires_in_days: int | None = Field(default=None, sa_column=Column(Integer))
    #: The most a billing period may charge beyond the credits; spend authorizations hold within it.
    spend_cap: int | None = Field(default=None, sa_column=Column(BigInteger))
    balance_low: bool = Field(sa_column=Column(Boolean, nullable=False))
    balance_low_crossings: int = Field(sa_column=Column(Integer, nullable=False))
    updated_by: str
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
