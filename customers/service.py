"""What the rest of Tally calls about customers."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from customers import repository, selection
from customers.calendar import check_anchor_day
from customers.errors import ExternalIdTaken, InvalidInput, PlanNotFound
from customers.models import CUSTOMER_STATUSES, Customer, Subscription, SubscriptionPhase
from customers.webhook_payloads import customer_event, subscription_event
from ledger import audit
from ledger.errors import CurrencyMismatch, IdempotencyKeyReused
from ledger.money import normalize_currency
from notifications.webhook_events import emit
from pricing import repository as catalog
from pricing.catalog import MAX_TRIAL_DAYS
from pricing.models import PlanVersion

EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_EXTERNAL_ID_LENGTH = 255


# Control, format (zero-width, bidirectional overrides) and line/paragraph separators: invisible
# characters that would make two external ids look alike.
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def normalize_external_id(raw: str) -> str:
    """An external id as Tally keeps and looks it up: NFKC-normalised (a full-width ``ｏｒｇ`` is
    ``org``) and trimmed, so look-alike spellings name one customer."""
    return unicodedata.normalize("NFKC", raw).strip()


def check_external_id(raw: str) -> str:
    external_id = normalize_external_id(raw)
    if not external_id or len(external_id) > MAX_EXTERNAL_ID_LENGTH:
        raise InvalidInput(f"must be 1 to {MAX_EXTERNAL_ID_LENGTH} characters", field="externalId")
    invisible = next((c for c in external_id if unicodedata.category(c) in INVISIBLE_CATEGORIES), None)
    if invisible is not None:
        raise InvalidInput(
            f"must not contain control or invisible characters (found U+{ord(invisible):04X})", field="externalId"
        )
    return external_id


@dataclass(frozen=True)
class StartBounds:
    """How far from now a subscription may start: a start in 1800 would issue centuries of
    invoices at the next billing run, one in 9999 has no period the jobs could compute
    (TALLY_BACKDATE_MAX_DAYS, TALLY_START_AHEAD_MAX_DAYS)."""

    backdate: timedelta
    ahead: timedelta

    def check(self, started_at: datetime, *, as_of: datetime) -> None:
        if started_at < as_of - self.backdate:
            raise InvalidInput(
                f"must be at most {self.backdate.days} days in the past (TALLY_BACKDATE_MAX_DAYS)", field="startedAt"
            )
        if started_at > as_of + self.ahead:
            raise InvalidInput(
                f"must be at most {self.ahead.days} days in the future (TALLY_START_AHEAD_MAX_DAYS)", field="startedAt"
            )


@dataclass(frozen=True)
class NewCustomer:
    external_id: str
    name: str
    currency: str
    email: str | None = None
    plan_key: str | None = None
    started_at: datetime | None = None
    trial_days: int | None = None  # None: the plan's
    billing_anchor_day: int | None = None  # None: the plan's (calendar plans bill on the 1st, or Monday)


async def create_customer(
    session: AsyncSession,
    new: NewCustomer,
    *,
    as_of: datetime,
    start_bounds: StartBounds | None = None,
    actor: str = "system",
) -> Customer:
    """Create a customer and, with a plan key, subscribe them to that plan's newest version.

    The external id is the retry key: a second create with the same id raises
    :class:`ExternalIdTaken` and changes nothing. The API bounds the start by ``start_bounds``
    (from the settings); trusted callers (the demo, tests) may leave it out. Tells the product
    ``customer.created`` (and ``subscription.created``) in the same transaction.
    """
    external_id = check_external_id(new.external_id)
    name = new.name.strip()
    if not name:
        raise InvalidInput("must not be empty", field="name")
    email = new.email.strip() if new.email else None
    if email and not EMAIL_PATTERN.match(email):
        raise InvalidInput(f"{email!r} is not an email address", field="email")
    currency = normalize_currency(new.currency)
    started_at = new.started_at or as_of
    if started_at.tzinfo is None:
        raise InvalidInput("must carry a time zone offset", field="startedAt")
    if new.plan_key and start_bounds is not None:
        start_bounds.check(started_at, as_of=as_of)

    if not new.plan_key:
        if new.trial_days is not None:
            raise InvalidInput("a trial needs a plan: give planKey", field="trialDays")
        if new.billing_anchor_day is not None:
            raise InvalidInput("a billing anchor needs a plan: give planKey", field="billingAnchorDay")
    plan_version = None
    if new.plan_key:
        found = await catalog.latest_version_of(session, new.plan_key, currency)
        if found is None:
            raise PlanNotFound(new.plan_key)
        plan_version = found[1]
        if plan_version.currency != currency:
            raise InvalidInput(
                f"plan {new.plan_key!r} has no prices in {currency} (it is priced in {plan_version.currency})",
                field="currency",
            )

    customer = Customer(external_id=external_id, name=name, email=email, currency=currency, created_at=as_of)
    if not await repository.insert_customer(session, customer):
        raise ExternalIdTaken(external_id)
    await emit(session, customer_event("customer.created", f"customer.created:{customer.id}", customer), as_of=as_of)
    if plan_version is not None:
        subscription = _subscribe(
            customer, plan_version, started_at, new.trial_days, new.billing_anchor_day, as_of=as_of
        )
        session.add(subscription)
        session.add(_first_phase(subscription))
        await session.flush()
        await _emit_created(session, subscription, as_of=as_of)
    await audit.record(
        session,
        actor=actor,
        action="customer.create",
        subject_type="Customer",
        subject_id=customer.external_id,
        customer_id=customer.id,
        as_of=as_of,
        after={
            "external_id": customer.external_id,
            "name": customer.name,
            "email": customer.email,
            "currency": customer.currency,
            "plan": new.plan_key,
        },
    )
    return customer


async def _emit_created(session: AsyncSession, subscription: Subscription, *, as_of: datetime) -> None:
    key = f"subscription.created:{subscription.id}"
    await emit(
        session, await subscription_event(session, "subscription.created", key, subscription, as_of=as_of), as_of=as_of
    )


def _calendar_of(
    trial_days_given: int | None, anchor_day_given: int | None, version: PlanVersion
) -> tuple[int, int | None]:
    """The trial days and calendar anchor day of a new subscription: what the input says, else
    what the plan version says (an explicit ``billingAnchorDay`` wins over the plan's
    ``billing_anchor``; ``trialDays: 0`` subscribes without the plan's trial)."""
    trial_days = version.trial_days if trial_days_given is None else trial_days_given
    if not 0 <= trial_days <= MAX_TRIAL_DAYS:
        raise InvalidInput(f"must be from 0 to {MAX_TRIAL_DAYS} days", field="trialDays")
    anchor_day = anchor_day_given
    if anchor_day is None and version.billing_anchor == "calendar":
        anchor_day = 1
    check_anchor_day(anchor_day, version.interval)
    return trial_days, anchor_day


async def get_customer(
    session: AsyncSession, *, customer_id: uuid.UUID | None = None, external_id: str | None = None
) -> Customer | None:
    if customer_id is not None:
        return (await repository.get_by_ids(session, [customer_id])).get(customer_id)
    if external_id is not None:
        return await repository.get_by_external_id(session, normalize_external_id(external_id))
    return None


async def customers_by_ids(session: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Customer]:
    return await repository.get_by_ids(session, ids)


async def search_customers(
    session: AsyncSession,
    *,
    search: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    only_customer_id: uuid.UUID | None = None,
) -> list[Customer]:
    return await repository.page(session, search=search, after=after, limit=limit, only_customer_id=only_customer_id)


async def subscriptions_of(session: AsyncSession, customer_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Subscription]:
    return await repository.subscriptions_of(session, customer_ids)


async def all_subscriptions_of(
    session: AsyncSession, customer_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Subscription]]:
    """Every subscription of each customer, the primary one first."""
    return await repository.all_subscriptions_of(session, customer_ids)


async def lock_subscription(
    session: AsyncSession, customer_id: uuid.UUID, subscription_id: uuid.UUID | None = None
) -> Subscription | None:
    """The subscription a request means (the customer's only one unless named), locked until the
    caller's transaction ends: the billing run, plan changes and lifecycle requests of the
    subscription take the same lock, so what the caller writes is seen by (or waits for) the next
    invoice they compose."""
    return await selection.lock_subscription(session, customer_id, subscription_id)


@dataclass(frozen=True)
class NewSubscription:
    customer_id: uuid.UUID
    plan_key: str
    idempotency_key: str
    started_at: datetime | None = None
    trial_days: int | None = None  # None: the plan's
    billing_anchor_day: int | None = None  # None: the plan's


def _subscription_hash(new: NewSubscription) -> str:
    document = {
        "customer": str(new.customer_id),
        "plan": new.plan_key,
        "started_at": new.started_at.isoformat() if new.started_at else None,
        "trial_days": new.trial_days,
        "billing_anchor_day": new.billing_anchor_day,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


async def add_subscription(
    session: AsyncSession, new: NewSubscription, *, as_of: datetime, start_bounds: StartBounds | None = None
) -> Subscription:
    """Subscribe an existing customer to one more plan (another product, or an add-on: a plan
    with no base fee), with its own calendar, trial and invoices.

    Refused, writing nothing, when the plan charges a meter another of the customer's
    subscriptions charges while both run (``planKey``, ``METER_ALREADY_CHARGED``): usage is
    attributed by meter. The customer's row is locked first, so two requests cannot both pass
    that check. The same idempotency key with the same request returns the first subscription;
    with another request it is refused."""
    key = (new.idempotency_key or "").strip()
    if not key:
        raise InvalidInput("is required", field="idempotencyKey")
    customer = await selection.lock_customer(session, new.customer_id)
    request_hash = _subscription_hash(new)
    existing = await repository.subscription_by_key(session, key)
    if existing is not None:
        if existing.request_hash != request_hash:
            raise IdempotencyKeyReused()
        return existing
    started_at = new.started_at or as_of
    if started_at.tzinfo is None:
        raise InvalidInput("must carry a time zone offset", field="startedAt")
    if start_bounds is not None:
        start_bounds.check(started_at, as_of=as_of)
    found = await catalog.latest_version_of(session, new.plan_key, customer.currency)
    if found is None:
        raise PlanNotFound(new.plan_key)
    version = found[1]
    if version.currency != customer.currency:
        raise CurrencyMismatch(
            f"plan {new.plan_key!r} has no prices in {customer.currency}, the customer's currency "
            f"(it is priced in {version.currency})",
            field="planKey",
        )
    await selection.check_meters_free(session, customer.id, version.id, from_moment=started_at)
    subscription = _subscribe(customer, version, started_at, new.trial_days, new.billing_anchor_day, as_of=as_of)
    subscription.idempotency_key, subscription.request_hash = key, request_hash
    session.add(subscription)
    session.add(_first_phase(subscription))
    await session.flush()
    await _emit_created(session, subscription, as_of=as_of)
    return subscription


def _subscribe(
    customer: Customer,
    version: PlanVersion,
    started_at: datetime,
    trial_days: int | None,
    billing_anchor_day: int | None,
    *,
    as_of: datetime,
) -> Subscription:
    trial, anchor_day = _calendar_of(trial_days, billing_anchor_day, version)
    trial_ends_at = started_at + timedelta(days=trial) if trial else None
    # The first paid period starts at the trial's end: anniversary periods are anchored there.
    return Subscription(
        customer_id=customer.id,
        plan_version_id=version.id,
        started_at=started_at,
        created_at=as_of,
        billing_anchor=trial_ends_at or started_at,
        billing_anchor_day=anchor_day,
        trial_ends_at=trial_ends_at,
    )


def _first_phase(subscription: Subscription) -> SubscriptionPhase:
    return SubscriptionPhase(
        subscription_id=subscription.id,
        customer_id=subscription.customer_id,
        starts_at=subscription.started_at,
        plan_version_id=subscription.plan_version_id,
        billing_anchor=subscription.billing_anchor,
    )


async def ids_by_external_id(session: AsyncSession, external_ids: Iterable[str]) -> dict[str, uuid.UUID]:
    return await repository.ids_by_external_id(session, list(external_ids))


@dataclass(frozen=True)
class UsageRefusal:
    """When a customer's usage events are refused: from when their subscription ended
    (``canceled_from``), and while it is paused under a plan that refuses usage while paused
    (``paused_from`` up to ``paused_until``, open-ended when None). A plan change scheduled
    during the pause decides by the event's own time which plan's rule applies."""

    canceled_from: datetime | None
    paused_from: datetime | None
    paused_until: datetime | None = None


def _refused_while_paused(
    paused_at: datetime | None, refuses: bool, change_at: datetime | None, next_refuses: bool
) -> tuple[datetime | None, datetime | None]:
    """The stretch of a pause in which usage is refused, by the plan in effect at each moment."""
    if paused_at is None:
        return None, None
    if change_at is None:
        return (paused_at, None) if refuses else (None, None)
    if change_at <= paused_at:
        return (paused_at, None) if next_refuses else (None, None)
    if refuses:
        return paused_at, None if next_refuses else change_at
    return (change_at, None) if next_refuses else (None, None)


async def usage_states(
    session: AsyncSession, external_ids: Iterable[str]
) -> tuple[dict[str, uuid.UUID], dict[uuid.UUID, UsageRefusal]]:
    """The ids of the named customers, and the refusals of those whose subscription refuses usage."""
    ids: dict[str, uuid.UUID] = {}
    refusals: dict[uuid.UUID, list[UsageRefusal | None]] = {}
    for (
        external_id,
        customer_id,
        canceled_from,
        paused_at,
        refuses,
        change_at,
        next_refuses,
    ) in await repository.usage_states(session, list(external_ids)):
        ids[external_id] = customer_id
        paused_from, paused_until = _refused_while_paused(paused_at, refuses, change_at, next_refuses)
        refusal = UsageRefusal(canceled_from, paused_from, paused_until)
        refused = canceled_from is not None or paused_from is not None
        refusals.setdefault(customer_id, []).append(refusal if refused else None)
    return ids, {customer_id: found for customer_id, each in refusals.items() if (found := _refusal_of(each))}


def _refusal_of(each: list[UsageRefusal | None]) -> UsageRefusal | None:
    """A customer's refusal: their one subscription's; with several (whose meters differ), usage
    is refused only once every one of them has ended, from the last end on. A paused one's
    events are kept, and its invoices bill them as its plan's ``paused_usage`` says."""
    if len(each) == 1:
        return each[0]
    ends = [refusal.canceled_from if refusal is not None else None for refusal in each]
    if any(end is None for end in ends):
        return None
    return UsageRefusal(max(end for end in ends if end is not None), None)


async def subscribed_customers(
    session: AsyncSession, external_ids: Sequence[str] | None = None
) -> list[tuple[Customer, Subscription]]:
    """Every subscribed customer (or those named), with their subscription: a customer with
    several comes once with each."""
    return await repository.subscribed(session, external_ids)


async def phases_of_subscriptions(
    session: AsyncSession, subscription_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[SubscriptionPhase]]:
    return await repository.phases_of_subscriptions(session, subscription_ids)


async def set_status(session: AsyncSession, customer_id: uuid.UUID, status: str) -> None:
    """ACTIVE, PAST_DUE (a payment failed; retries are scheduled) or SUSPENDED (they all failed:
    entitlements answer no)."""
    if status not in CUSTOMER_STATUSES:
        raise InvalidInput(f"must be one of {', '.join(CUSTOMER_STATUSES)}", field="status")
    await repository.set_status(session, customer_id, status)
