"""GraphQL of usage and spend alerts: define them on a customer or a plan, delete them (both with
a dry run, the console's review step), and read what they fired. The ``UsageAlertFiring`` and
``EntitlementExhaustion`` types are also the ``data`` of the ``usage_alert.fired`` and
``entitlement.exhausted`` webhook events (billing.insights.alerts builds those, amounts in minor units)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import strawberry
from strawberry.types import Info

from app.api.common import Money, UserError, money, run_mutation
from app.api.permissions import requires
from app.api.scope import customer_of
from app.auth import Capability
from billing.insights import alerts
from billing.models import UsageAlert as AlertRow
from billing.models import UsageAlertFiring as FiringRow
from ledger.errors import NotFound
from ledger.money import plain_decimal
from pricing import service as catalog
from pricing.repository import plans_by_key


@strawberry.enum
class UsageAlertMetric(Enum):
    USAGE = "usage"
    SPEND = "spend"


@strawberry.enum
class UsageAlertThresholdUnit(Enum):
    ABSOLUTE = "absolute"
    PERCENT = "percent"


@strawberry.type(
    description="An alert on a customer (or on every customer of a plan): a meter's usage in the period or "
    "the period's running amount (base fee + usage − credits, before tax), at up to 10 thresholds, each fired "
    "once per period."
)
class UsageAlert:
    id: strawberry.ID
    name: str
    customer_id: strawberry.ID | None = strawberry.field(description="Set for an alert of one customer.")
    plan_key: str | None = strawberry.field(description="Set for an alert of every customer of a plan.")
    metric: UsageAlertMetric
    meter_key: str | None = strawberry.field(description="USAGE: the meter watched.")
    currency: str | None = strawberry.field(description="SPEND: the currency of the running amount.")
    threshold_unit: UsageAlertThresholdUnit
    thresholds: list[Decimal] = strawberry.field(
        description="Ascending. ABSOLUTE: quantities (USAGE) or amounts in major units (SPEND); PERCENT: "
        "percentages of the meter's entitlement limit (USAGE, never reached without a limit) or of spendBase."
    )
    spend_base: Money | None = strawberry.field(description="SPEND in PERCENT: the amount the percentages are of.")
    created_at: datetime
    deleted_at: datetime | None

    @classmethod
    def from_model(cls, row: AlertRow, *, meter_key: str | None, plan_key: str | None) -> UsageAlert:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            customer_id=strawberry.ID(str(row.customer_id)) if row.customer_id else None,
            plan_key=plan_key,
            metric=UsageAlertMetric(row.metric),
            meter_key=meter_key,
            currency=row.currency,
            threshold_unit=UsageAlertThresholdUnit(row.threshold_unit),
            thresholds=[plain_decimal(value) for value in row.thresholds],
            spend_base=money(row.spend_base, row.currency) if row.spend_base and row.currency else None,
            created_at=row.created_at,
            deleted_at=row.deleted_at,
        )


@strawberry.type(description="A threshold of an alert crossed by a customer in a period (once per period).")
class UsageAlertFiring:
    id: strawberry.ID
    alert_id: strawberry.ID
    alert_name: str
    customer_id: strawberry.ID
    metric: UsageAlertMetric
    meter_key: str | None
    threshold_unit: UsageAlertThresholdUnit
    threshold: Decimal = strawberry.field(description="As defined: 80 for 80%, a quantity, or a major amount.")
    threshold_quantity: Decimal | None = strawberry.field(description="USAGE: the quantity the threshold meant.")
    used_quantity: Decimal | None = strawberry.field(description="USAGE: the usage that crossed it.")
    threshold_amount: Money | None = strawberry.field(description="SPEND: the amount the threshold meant.")
    running_amount: Money | None = strawberry.field(description="SPEND: the running amount that crossed it.")
    period_start: datetime
    period_end: datetime
    fired_at: datetime

    @classmethod
    def from_model(cls, row: FiringRow, alert: AlertRow, *, meter_key: str | None) -> UsageAlertFiring:
        spend = alert.metric == "spend" and alert.currency is not None
        currency = alert.currency or ""
        return cls(
            id=strawberry.ID(str(row.id)),
            alert_id=strawberry.ID(str(alert.id)),
            alert_name=alert.name,
            customer_id=strawberry.ID(str(row.customer_id)),
            metric=UsageAlertMetric(alert.metric),
            meter_key=meter_key,
            threshold_unit=UsageAlertThresholdUnit(alert.threshold_unit),
            threshold=plain_decimal(row.threshold),
            threshold_quantity=None if spend else plain_decimal(row.threshold_value),
            used_quantity=None if spend else plain_decimal(row.observed),
            threshold_amount=money(int(row.threshold_value), currency) if spend else None,
            running_amount=money(int(row.observed), currency) if spend else None,
            period_start=row.period_start,
            period_end=row.period_end,
            fired_at=row.fired_at,
        )


@strawberry.type(
    description="A customer's usage of a metered entitlement reached its limit in a period: the data of the "
    "entitlement.exhausted webhook event (once per customer, meter and period)."
)
class EntitlementExhaustion:
    customer_id: strawberry.ID
    meter_key: str
    used: Decimal
    limit: Decimal
    period_start: datetime
    period_end: datetime


async def _keys(info: Info, rows: list[AlertRow]) -> tuple[dict[uuid.UUID, str], dict[uuid.UUID, str]]:
    """Meter keys and plan keys by id, for the rows (one query each, whatever their number)."""
    session = info.context.session
    meters = {meter.id: meter.key for meter in await catalog.list_meters(session)} if rows else {}
    plans = {plan.id: key for key, plan in (await plans_by_key(session)).items()} if rows else {}
    return meters, plans


async def _alerts(info: Info, rows: list[AlertRow]) -> list[UsageAlert]:
    meters, plans = await _keys(info, rows)
    return [
        UsageAlert.from_model(
            row,
            meter_key=meters.get(row.meter_id) if row.meter_id else None,
            plan_key=plans.get(row.plan_id) if row.plan_id else None,
        )
        for row in rows
    ]


async def resolve_usage_alerts(root: strawberry.Parent[Any], info: Info) -> list[UsageAlert]:
    return await _alerts(info, await alerts.alerts_watching(info.context.session, root.row_id))


async def resolve_usage_alert_firings(root: strawberry.Parent[Any], info: Info) -> list[UsageAlertFiring]:
    session = info.context.session
    firings = await alerts.firings_of(session, root.row_id)
    by_id = await alerts.alerts_by_id(session, list({firing.alert_id for firing in firings}))
    meters, _ = await _keys(info, list(by_id.values()))
    return [
        UsageAlertFiring.from_model(
            firing, by_id[firing.alert_id], meter_key=meters.get(by_id[firing.alert_id].meter_id or uuid.UUID(int=0))
        )
        for firing in firings
    ]


@strawberry.input
class CreateUsageAlertInput:
    name: str = strawberry.field(description="1 to 100 characters; unique among the owner's live alerts.")
    metric: UsageAlertMetric
    threshold_unit: UsageAlertThresholdUnit
    thresholds: list[Decimal] = strawberry.field(
        description="1 to 10, each above 0: at most 1000 in PERCENT, 10^15 in ABSOLUTE."
    )
    customer_id: strawberry.ID | None = strawberry.field(default=None, description="Give this or planKey.")
    plan_key: str | None = strawberry.field(default=None, description="Every customer of the plan.")
    meter_key: str | None = strawberry.field(default=None, description="USAGE: the meter to watch.")
    currency: str | None = strawberry.field(default=None, description="SPEND: the customer's (or plan's) currency.")
    spend_base: Decimal | None = strawberry.field(default=None, description="SPEND in PERCENT: major units.")
    dry_run: bool = strawberry.field(default=False, description="Validate and answer the alert; write nothing.")


@strawberry.input
class UpdateUsageAlertInput:
    alert_id: strawberry.ID
    name: str | None = strawberry.field(default=None, description="Null: unchanged.")
    thresholds: list[Decimal] | None = strawberry.field(
        default=None, description="Null: unchanged. Checked as on create; what fired this period stays fired."
    )
    dry_run: bool = strawberry.field(default=False, description="Answer the alert as changed; change nothing.")


@strawberry.input
class DeleteUsageAlertInput:
    alert_id: strawberry.ID
    dry_run: bool = strawberry.field(default=False, description="Answer the alert as deleted; change nothing.")


@strawberry.type
class UsageAlertPayload:
    usage_alert: UsageAlert | None
    user_errors: list[UserError]


def _alert_id(value: object) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound("no such alert", field="alertId") from None


async def _visible_alert(info: Info, alert_id: object) -> AlertRow:
    """The alert the input names, if the viewer may see its customer (a plan's: any staff)."""
    found = await alerts.alert_of(info.context.session, _alert_id(alert_id))
    if found is None:
        raise NotFound("no such alert", field="alertId")
    if found.customer_id is not None:
        await customer_of(info, str(found.customer_id), field="alertId")
    return found


@strawberry.type
class AlertsQuery:
    @strawberry.field(
        permission_classes=[requires(Capability.READ_CUSTOMERS)],
        description="The live alerts defined on a plan (a customer's are on Customer.usageAlerts).",
    )
    async def plan_usage_alerts(self, info: Info, plan_key: str) -> list[UsageAlert]:
        plan = (await plans_by_key(info.context.session)).get(plan_key)
        if plan is None:
            return []
        return await _alerts(info, await alerts.alerts_of_plan(info.context.session, plan.id))


@strawberry.type
class AlertsMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.WRITE_CUSTOMERS)],
        description="Define an alert on a customer or a plan; the roller evaluates it after each roll-up.",
    )
    async def create_usage_alert(self, info: Info, input: CreateUsageAlertInput) -> UsageAlertPayload:
        context = info.context

        async def create() -> UsageAlert:
            customer_id = None
            if input.customer_id is not None:
                customer_id = (await customer_of(info, str(input.customer_id))).id
            row = await alerts.create_alert(
                context.session,
                alerts.NewAlert(
                    name=input.name,
                    metric=input.metric.value,
                    threshold_unit=input.threshold_unit.value,
                    thresholds=tuple(input.thresholds),
                    customer_id=customer_id,
                    plan_key=input.plan_key,
                    meter_key=input.meter_key,
                    currency=input.currency,
                    spend_base=input.spend_base,
                ),
                actor=context.viewer.actor,
                as_of=context.now(),
            )
            [alert] = await _alerts(info, [row])
            return alert

        alert, errors = await run_mutation(info, create, commit=not input.dry_run)
        return UsageAlertPayload(usage_alert=alert, user_errors=errors)

    @strawberry.mutation(
        permission_classes=[requires(Capability.WRITE_CUSTOMERS)],
        description="Rename an alert or give it other thresholds.",
    )
    async def update_usage_alert(self, info: Info, input: UpdateUsageAlertInput) -> UsageAlertPayload:
        context = info.context

        async def update() -> UsageAlert:
            session = context.session
            found = await _visible_alert(info, input.alert_id)
            thresholds = tuple(input.thresholds) if input.thresholds is not None else None
            row = await alerts.update_alert(session, found.id, name=input.name, thresholds=thresholds)
            [alert] = await _alerts(info, [row])
            return alert

        alert, errors = await run_mutation(info, update, commit=not input.dry_run)
        return UsageAlertPayload(usage_alert=alert, user_errors=errors)

    @strawberry.mutation(
        permission_classes=[requires(Capability.WRITE_CUSTOMERS)],
        description="Stop an alert firing; what it fired stays. Deleting twice changes nothing.",
    )
    async def delete_usage_alert(self, info: Info, input: DeleteUsageAlertInput) -> UsageAlertPayload:
        context = info.context

        async def delete() -> UsageAlert:
            found = await _visible_alert(info, input.alert_id)
            row = await alerts.delete_alert(context.session, found.id, as_of=context.now())
            [alert] = await _alerts(info, [row])
            return alert

        alert, errors = await run_mutation(info, delete, commit=not input.dry_run)
        return UsageAlertPayload(usage_alert=alert, user_errors=errors)
