"""Usage and spend alerts, and the ``entitlement.exhausted`` event: defined per customer or per
plan, evaluated by the roller right after each roll-up commits, for the customers whose usage it
folded (so an alert fires within one roller pass of the event that crossed it, not nightly).

An alert watches a meter's usage in the period (``usage``) or the period's running amount
(``spend``: the upcoming invoice's subtotal, base fee and usage, less the credits it would draw;
read from :func:`billing.invoices.service.upcoming_invoice`, never rated twice). Each threshold fires at
most once per (alert, customer, period start): the firing's unique key in the database decides,
so concurrent roll-ups (several servers) fire it once; only the transaction whose insert wrote the
row emits the webhook event and queues the email, both keyed by the firing too.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.emails import enqueue
from billing.insights import alert_repository as repository
from billing.invoices.service import BillingWindow, upcoming_invoice
from billing.models import ALERT_METRICS, ALERT_THRESHOLD_UNITS, UsageAlert, UsageAlertFiring
from customers.models import Customer
from ledger.errors import InvalidFields, InvalidInput, NotFound, Taken, TallyError
from ledger.money import normalize_currency, plain_decimal, round_to_minor, to_major, to_minor_exact
from metering.entitlements import MeterStanding, meter_standings
from notifications.service import Email
from notifications.webhook_events import Event, emit
from pricing import repository as catalog
from pricing.models import Meter

logger = logging.getLogger("tally.alerts")
MAX_THRESHOLDS = 10
MAX_NAME_LENGTH = 100
MAX_PLAN_KEY_LENGTH = 200  # longer than any plan key; refused before the catalog is read
MAX_PERCENT = Decimal(1000)  # 1000% of a limit: an alert well past it still makes sense, 10^6 % does not
MAX_QUANTITY = Decimal(10) ** 15
HUNDRED = Decimal(100)


@dataclass(frozen=True)
class NewAlert:
    """An alert as asked for. Exactly one of ``customer_id`` and ``plan_key``. ``thresholds``: for
    ``absolute``, quantities of the meter or amounts in major units of ``currency``; for
    ``percent``, percentages of the meter's entitlement limit or of ``spend_base`` (major units)."""

    name: str
    metric: str
    threshold_unit: str
    thresholds: tuple[Decimal, ...]
    customer_id: uuid.UUID | None = None
    plan_key: str | None = None
    meter_key: str | None = None
    currency: str | None = None
    spend_base: Decimal | None = None


def _collect(errors: list[TallyError], check: Any) -> Any:
    try:
        return check()
    except TallyError as error:
        errors.append(error)
        return None


async def create_alert(session: AsyncSession, new: NewAlert, *, actor: str, as_of: datetime) -> UsageAlert:
    """Validate every field at once (each refusal names its field), then write the alert; a live
    alert of the same owner and name makes it ``TAKEN`` (also under concurrent creates). A plan key
    longer than any plan's is refused first, alone."""
    if new.plan_key is not None and len(new.plan_key) > MAX_PLAN_KEY_LENGTH:
        raise InvalidInput("no plan has so long a key", field="planKey")
    errors: list[TallyError] = []
    name = _name(new.name, errors)
    if new.metric not in ALERT_METRICS:
        errors.append(InvalidInput(f"one of {', '.join(ALERT_METRICS)}", field="metric"))
    if new.threshold_unit not in ALERT_THRESHOLD_UNITS:
        errors.append(InvalidInput(f"one of {', '.join(ALERT_THRESHOLD_UNITS)}", field="thresholdUnit"))
    customer_id, plan_id = await _owner(session, new, errors)
    meter_id = currency = None
    if new.metric == "usage":
        meter_id = await _meter_id(session, new.meter_key, errors)
    elif new.metric == "spend":
        currency = await _currency(session, new, customer_id, errors)
    thresholds = _thresholds(new, currency, errors)
    spend_base = None
    if new.metric == "spend" and new.threshold_unit == "percent":
        spend_base = _spend_base(new.spend_base, currency, errors)
    if errors:
        raise errors[0] if len(errors) == 1 else InvalidFields(errors)
    alert = UsageAlert(
        id=uuid.uuid4(),
        name=name,
        customer_id=customer_id,
        plan_id=plan_id,
        metric=new.metric,
        meter_id=meter_id,
        currency=currency,
        threshold_unit=new.threshold_unit,
        spend_base=spend_base,
        thresholds=thresholds,
        actor=actor,
        created_at=as_of,
    )
    if not await repository.insert_alert(session, alert):
        raise Taken("an alert of this name exists for it; choose another name or delete that one", field="name")
    return alert


def _name(given: str, errors: list[TallyError]) -> str:
    name = given.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        errors.append(InvalidInput(f"give a name of 1 to {MAX_NAME_LENGTH} characters", field="name"))
    return name


async def update_alert(
    session: AsyncSession, alert_id: uuid.UUID, *, name: str | None, thresholds: tuple[Decimal, ...] | None
) -> UsageAlert:
    """Rename a live alert or give it other thresholds (checked as on create). Thresholds that
    fired this period stay fired; a new one fires at the next roll-up that finds it crossed."""
    alert = await repository.alert_by_id(session, alert_id)
    if alert is None or alert.deleted_at is not None:
        raise NotFound("no such alert", field="alertId")
    errors: list[TallyError] = []
    renamed = _name(name, errors) if name is not None else alert.name
    values = alert.thresholds
    if thresholds is not None:
        asked = NewAlert(renamed, alert.metric, alert.threshold_unit, thresholds, currency=alert.currency)
        values = _thresholds(asked, alert.currency, errors)
    if errors:
        raise errors[0] if len(errors) == 1 else InvalidFields(errors)
    alert.name, alert.thresholds = renamed, values
    session.add(alert)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Taken("an alert of this name exists for it; choose another name", field="name") from None
    return alert


async def _owner(
    session: AsyncSession, new: NewAlert, errors: list[TallyError]
) -> tuple[uuid.UUID | None, uuid.UUID | None]:
    if (new.customer_id is None) == (new.plan_key is None):
        errors.append(InvalidInput("give a customer or a plan, not both", field="customerId"))
        return None, None
    if new.customer_id is not None:
        if await session.get(Customer, new.customer_id) is None:
            errors.append(NotFound("no such customer", field="customerId"))
        return new.customer_id, None
    plan = (await catalog.plans_by_key(session)).get(str(new.plan_key))
    if plan is None:
        errors.append(NotFound("no such plan", field="planKey"))
        return None, None
    return None, plan.id


async def _meter_id(session: AsyncSession, meter_key: str | None, errors: list[TallyError]) -> uuid.UUID | None:
    meter = await catalog.meter_by_key(session, meter_key) if meter_key else None
    if meter is None:
        errors.append(NotFound("a usage alert watches a meter: give the key of one", field="meterKey"))
        return None
    return meter.id


async def _currency(
    session: AsyncSession, new: NewAlert, customer_id: uuid.UUID | None, errors: list[TallyError]
) -> str | None:
    if new.currency is None:
        errors.append(InvalidInput("a spend alert counts in a currency: give one", field="currency"))
        return None
    currency = _collect(errors, lambda: normalize_currency(str(new.currency)))
    customer = await session.get(Customer, customer_id) if customer_id else None
    if currency and customer is not None and customer.currency != currency:
        errors.append(InvalidInput(f"the customer is billed in {customer.currency}", field="currency"))
    return currency  # type: ignore[no-any-return]


def _thresholds(new: NewAlert, currency: str | None, errors: list[TallyError]) -> list[Decimal]:
    values = list(new.thresholds)
    if not 1 <= len(values) <= MAX_THRESHOLDS:
        errors.append(InvalidInput(f"give 1 to {MAX_THRESHOLDS} thresholds", field="thresholds"))
        return []
    if len(set(values)) != len(values):
        errors.append(InvalidInput("each threshold once", field="thresholds"))
    ceiling = MAX_PERCENT if new.threshold_unit == "percent" else MAX_QUANTITY
    for value in values:
        if not value.is_finite() or value <= 0 or value > ceiling:
            errors.append(InvalidInput(f"each threshold above 0 and at most {ceiling}", field="thresholds"))
            return []
        if value.as_tuple().exponent < -12:  # type: ignore[operator]
            errors.append(InvalidInput("at most 12 decimal places", field="thresholds"))
            return []
        spent = new.metric == "spend" and new.threshold_unit == "absolute" and currency
        if spent and _collect(errors, lambda v=value: to_minor_exact(v, str(currency), field="thresholds")) is None:
            return []
    return sorted(plain_decimal(value) for value in values)


def _spend_base(amount: Decimal | None, currency: str | None, errors: list[TallyError]) -> int | None:
    if amount is None or not amount.is_finite() or amount <= 0 or amount > MAX_QUANTITY:
        errors.append(InvalidInput("percentages of a spend need the amount they are of, above 0", field="spendBase"))
        return None
    if currency is None:
        return None
    return _collect(errors, lambda: to_minor_exact(amount, currency, field="spendBase"))  # type: ignore[no-any-return]


async def delete_alert(session: AsyncSession, alert_id: uuid.UUID, *, as_of: datetime) -> UsageAlert:
    """Stop the alert firing; what it fired stays. Deleting twice changes nothing."""
    alert = await repository.alert_by_id(session, alert_id)
    if alert is None:
        raise NotFound("no such alert", field="alertId")
    if alert.deleted_at is None:
        alert.deleted_at = as_of
        session.add(alert)
        await session.flush()
    return alert


async def alert_of(session: AsyncSession, alert_id: uuid.UUID) -> UsageAlert | None:
    return await repository.alert_by_id(session, alert_id)


async def alerts_watching(session: AsyncSession, customer_id: uuid.UUID) -> list[UsageAlert]:
    """The customer's live alerts and those of their plans."""
    return await repository.alerts_watching(session, customer_id)


async def firings_of(session: AsyncSession, customer_id: uuid.UUID, *, limit: int = 50) -> list[UsageAlertFiring]:
    """The customer's fired alerts, newest first."""
    return await repository.firings_of(session, customer_id, limit=limit)


async def alerts_of_plan(session: AsyncSession, plan_id: uuid.UUID) -> list[UsageAlert]:
    return await repository.alerts_of_plan(session, plan_id)


async def alerts_by_id(session: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, UsageAlert]:
    return await repository.alerts_by_id(session, ids)


@dataclass(frozen=True)
class Fired:
    """A threshold crossed now (the firing's row was written by this evaluation)."""

    alert: UsageAlert
    firing: UsageAlertFiring


def firing_fields(alert: UsageAlert, firing: UsageAlertFiring, meter_key: str | None) -> dict[str, Any]:
    """The ``UsageAlertFiring`` GraphQL type's fields, camelCase, amounts in minor units: the
    webhook event's ``data`` (app.api.alerts shows the same, amounts in major units)."""
    spend = alert.metric == "spend"
    amount = {"currency": alert.currency}
    return {
        "id": str(firing.id),
        "alertId": str(alert.id),
        "alertName": alert.name,
        "customerId": str(firing.customer_id),
        "metric": alert.metric.upper(),
        "meterKey": meter_key,
        "thresholdUnit": alert.threshold_unit.upper(),
        "threshold": str(plain_decimal(firing.threshold)),
        "thresholdQuantity": None if spend else str(plain_decimal(firing.threshold_value)),
        "usedQuantity": None if spend else str(plain_decimal(firing.observed)),
        "thresholdAmount": {**amount, "amount": int(firing.threshold_value)} if spend else None,
        "runningAmount": {**amount, "amount": int(firing.observed)} if spend else None,
        "periodStart": firing.period_start.isoformat(),
        "periodEnd": firing.period_end.isoformat(),
        "firedAt": firing.fired_at.isoformat(),
    }


def exhaustion_fields(customer_id: uuid.UUID, standing: MeterStanding) -> dict[str, Any]:
    """The ``EntitlementExhaustion`` GraphQL type's fields: the ``entitlement.exhausted`` data."""
    return {
        "customerId": str(customer_id),
        "meterKey": standing.meter.key,
        "used": str(standing.used),
        "limit": str(standing.limit),
        "periodStart": standing.period.start.isoformat(),
        "periodEnd": standing.period.end.isoformat(),
    }


async def evaluate(
    session: AsyncSession, customer_ids: Iterable[uuid.UUID], *, as_of: datetime, window: BillingWindow
) -> list[Fired]:
    """Fire what the customers' usage now crosses, in the caller's transaction: a firing row, a
    ``usage_alert.fired`` event and a ``usage_alert`` email per threshold crossed for the first
    time in the period; an ``entitlement.exhausted`` event per limited meter used up (keyed by
    customer, meter and period). Customers with nothing to watch cost one query in all."""
    fired: list[Fired] = []
    watched = await repository.watched_customers(session, sorted(set(customer_ids)))
    if not watched:
        return fired
    meters = {meter.id: meter for meter in (await catalog.meters_by_key(session)).values()}
    for customer_id in watched:
        try:
            async with session.begin_nested():
                fired += await _evaluate_customer(session, customer_id, meters, as_of=as_of, window=window)
        except Exception:
            logger.exception("evaluating the alerts of customer %s failed; their next roll-up retries", customer_id)
    return fired


async def _evaluate_customer(
    session: AsyncSession,
    customer_id: uuid.UUID,
    meters: dict[uuid.UUID, Meter],
    *,
    as_of: datetime,
    window: BillingWindow,
) -> list[Fired]:
    alerts = await repository.alerts_watching(session, customer_id)
    watched_meters = [meters[a.meter_id] for a in alerts if a.metric == "usage" and a.meter_id in meters]
    standings = {s.meter.id: s for s in await meter_standings(session, customer_id, watched_meters, as_of=as_of)}
    for standing in standings.values():
        if standing.exhausted:
            await _exhausted(session, customer_id, standing, as_of=as_of)
    fired: list[Fired] = []
    for alert in alerts:
        if alert.metric == "usage" and alert.meter_id in standings:
            standing = standings[alert.meter_id]
            period = (standing.period.start, standing.period.end)
            crossed = _crossed(alert, standing.used, base=standing.limit)
            fired += await _fire(
                session, alert, customer_id, period, crossed, standing.meter.key, observed=standing.used, as_of=as_of
            )
    spend_alerts = [alert for alert in alerts if alert.metric == "spend"]
    if spend_alerts:
        fired += await _spend(session, customer_id, spend_alerts, as_of=as_of, window=window)
    return fired


async def _spend(
    session: AsyncSession, customer_id: uuid.UUID, alerts: list[UsageAlert], *, as_of: datetime, window: BillingWindow
) -> list[Fired]:
    upcoming = await upcoming_invoice(session, customer_id, as_of=as_of, window=window)
    if upcoming is None:
        return []
    draft = upcoming.draft
    running = upcoming.running_amount
    period = (draft.period_start, draft.period_end)
    fired: list[Fired] = []
    for alert in alerts:
        if alert.currency != draft.currency:
            continue  # a plan's alert in another currency than this customer's: not theirs to cross
        base = Decimal(alert.spend_base) if alert.spend_base is not None else None
        crossed = _crossed(alert, Decimal(running), base=base, minor_of=draft.currency)
        fired += await _fire(session, alert, customer_id, period, crossed, None, observed=Decimal(running), as_of=as_of)
    return fired


def _crossed(
    alert: UsageAlert, observed: Decimal, *, base: Decimal | None, minor_of: str | None = None
) -> list[tuple[Decimal, Decimal]]:
    """The thresholds ``observed`` has reached, each with the value it stands for (a quantity, or
    minor units for spend). A percentage of no limit (an unlimited meter) is never reached."""
    reached = []
    for threshold in alert.thresholds:
        if alert.threshold_unit == "percent":
            if base is None:
                continue
            value = base * threshold / HUNDRED
            if minor_of is not None:  # a share of an amount is money: whole minor units, rounded once
                value = Decimal(round_to_minor(to_major(int(base), minor_of) * threshold / HUNDRED, minor_of))
        elif minor_of is not None:
            value = Decimal(to_minor_exact(threshold, minor_of))
        else:
            value = threshold
        if observed >= value:
            reached.append((threshold, value))
    return reached


async def _fire(
    session: AsyncSession,
    alert: UsageAlert,
    customer_id: uuid.UUID,
    period: tuple[datetime, datetime],
    crossed: list[tuple[Decimal, Decimal]],
    meter_key: str | None,
    *,
    observed: Decimal,
    as_of: datetime,
) -> list[Fired]:
    """Record each crossed threshold; only a firing written here is told (webhook and email)."""
    fired = []
    for threshold, value in crossed:
        firing = await repository.record_firing(
            session,
            alert_id=alert.id,
            customer_id=customer_id,
            period=period,
            threshold=threshold,
            threshold_value=value,
            observed=observed,
            fired_at=as_of,
        )
        if firing is None:
            continue
        fields = firing_fields(alert, firing, meter_key)
        await emit(
            session,
            Event(
                key=f"usage_alert.fired:{firing.id}",
                type="usage_alert.fired",
                resource_type="UsageAlertFiring",
                resource_id=str(firing.id),
                data=fields,
                customer_id=customer_id,
            ),
            as_of=as_of,
        )
        await enqueue(
            session,
            Email(
                f"usage-alert:{alert.id}:{customer_id}:{period[0].isoformat()}:{threshold}",
                "usage_alert",
                customer_id,
                {"alert_id": str(alert.id), "firing_id": str(firing.id)},
                _email_content(alert, firing, meter_key),
            ),
            as_of=as_of,
        )
        fired.append(Fired(alert, firing))
    return fired


def _email_content(alert: UsageAlert, firing: UsageAlertFiring, meter_key: str | None) -> dict[str, Any]:
    """What the ``usage_alert`` templates say, fixed at firing: amounts in minor units."""
    content: dict[str, Any] = {
        "alert_name": alert.name,
        "metric": alert.metric,
        "threshold_unit": alert.threshold_unit,
        "threshold": str(plain_decimal(firing.threshold)),
        "period_start": firing.period_start.isoformat(),
        "period_end": firing.period_end.isoformat(),
    }
    if alert.metric == "spend":
        content |= {
            "currency": alert.currency,
            "threshold_amount": int(firing.threshold_value),
            "running_amount": int(firing.observed),
        }
    else:
        content |= {
            "meter_key": meter_key,
            "threshold_quantity": str(plain_decimal(firing.threshold_value)),
            "used": str(plain_decimal(firing.observed)),
        }
    return content


async def _exhausted(
    session: AsyncSession, customer_id: uuid.UUID, standing: MeterStanding, *, as_of: datetime
) -> None:
    """``entitlement.exhausted`` once per (customer, meter, period): its key says so."""
    resource_id = f"{customer_id}:{standing.meter.key}"
    await emit(
        session,
        Event(
            key=f"entitlement.exhausted:{resource_id}:{standing.period.start.isoformat()}",
            type="entitlement.exhausted",
            resource_type="EntitlementExhaustion",
            resource_id=resource_id,
            data=exhaustion_fields(customer_id, standing),
            customer_id=customer_id,
        ),
        as_of=as_of,
    )
