"""GraphQL of per-customer prices: a subscription's charges with the plan's price beside the
customer's, the history of overrides, and setPriceOverride / removePriceOverride."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from app.api.catalog import ChargeBilling, ChargeModel, Meter, Tier
from app.api.common import Money, UserError, money, run_mutation
from app.api.permissions import requires
from app.api.scope import WHICH_SUBSCRIPTION, customer_of, staff_only, subscription_id_of
from app.auth import Capability
from app.billing_run import billing_window
from billing.invoices.price_overrides import PriceOverrideResult, change_price_override
from customers import price_overrides as overrides
from customers.models import PriceOverride as PriceOverrideRow
from customers.models import Subscription as SubscriptionRow
from customers.price_overrides import UNRECORDED, ChargeSelector, PriceOverrideRequest
from ledger.money import plain_decimal
from pricing.models import Meter as MeterRow
from pricing.models import PlanCharge
from pricing.overrides import API_FIELDS, OverrideFields, OverrideTimeline, TierInput, plan_terms
from pricing.service import charges_of_version


def _decimal(text: str | None) -> Decimal | None:
    return plain_decimal(Decimal(text)) if text is not None else None


@strawberry.type(description="A charge's terms: the plan's, or as one customer pays them.")
class PriceTerms:
    unit_price: Decimal | None
    tiers: list[Tier]
    package_size: Decimal | None
    package_price: Decimal | None
    included: Decimal
    minimum: Decimal | None
    limit: Decimal | None = strawberry.field(description="Null: no limit.")

    @classmethod
    def from_document(cls, terms: dict[str, Any]) -> PriceTerms:
        """From the stored form of a charge's terms (exact decimal text, tiers up to "inf")."""
        return cls(
            unit_price=_decimal(terms.get("unit_price")),
            tiers=[
                Tier(
                    up_to=_decimal(tier["up_to"]) if tier["up_to"] != "inf" else None,
                    unit_price=Decimal(tier.get("unit_price", "0")),
                    flat_fee=Decimal(tier.get("flat_fee", "0")),
                )
                for tier in terms.get("tiers", [])
            ],
            package_size=_decimal(terms.get("package_size")),
            package_price=_decimal(terms.get("package_price")),
            included=_decimal(terms.get("included")) or Decimal(0),
            minimum=_decimal(terms.get("minimum")),
            limit=_decimal(terms.get("limit")),
        )

    @classmethod
    def from_charge(cls, charge: PlanCharge) -> PriceTerms:
        return cls.from_document(plan_terms(charge))


@strawberry.enum
class PriceOverrideAction(Enum):
    SET = "set"
    REMOVE = "remove"


@strawberry.type(description="One change of a customer's price for one charge of their plan; never edited.")
class PriceOverride:
    id: strawberry.ID
    charge_id: strawberry.ID = strawberry.field(description="The plan charge it overrides.")
    action: PriceOverrideAction = strawberry.field(description="SET a price, or REMOVE it (the plan's price again).")
    overridden: list[str] = strawberry.field(description="The terms a SET overrides (unitPrice, tiers, limit…).")
    effective_at: datetime
    recorded_at: datetime
    before: PriceTerms = strawberry.field(description="The charge's terms for the customer before this change.")
    after: PriceTerms = strawberry.field(description="…and from effectiveAt on.")
    plan_change_id: strawberry.ID | None = strawberry.field(
        description="Set when a plan change dropped the override (an override belongs to one plan version)."
    )
    reason: str | None = staff_only("Why. Staff only: null for customer tokens.")
    actor: str | None = staff_only("Who. Staff only: null for customer tokens.")

    @classmethod
    def from_model(cls, row: PriceOverrideRow) -> PriceOverride:
        return cls(
            id=strawberry.ID(str(row.id)),
            charge_id=strawberry.ID(str(row.plan_charge_id)),
            action=PriceOverrideAction(row.action),
            overridden=[API_FIELDS[name] for name in row.terms],
            effective_at=row.effective_at,
            recorded_at=row.recorded_at,
            before=PriceTerms.from_document(row.before),
            after=PriceTerms.from_document(row.after),
            plan_change_id=strawberry.ID(str(row.plan_change_id)) if row.plan_change_id else None,
            reason=row.reason,
            actor=row.actor,
        )


@strawberry.type(description="A charge of the subscription's plan version: the plan's price beside the customer's.")
class SubscriptionCharge:
    id: strawberry.ID = strawberry.field(description="The plan charge's id (what setPriceOverride names).")
    position: int = strawberry.field(description="Its place in the plan version, from 0.")
    meter: Meter
    model: ChargeModel
    where: JSON
    plan_price: PriceTerms
    customer_price: PriceTerms = strawberry.field(description="What the customer pays: the plan's or their own.")
    override: PriceOverride | None = strawberry.field(description="The override in effect; null: the plan's price.")
    billed: ChargeBilling = strawberry.field(
        default=ChargeBilling.IN_ARREARS,
        description="IN_ADVANCE: billed at the period's start for the meter's value then, topped up when it rises.",
    )

    @classmethod
    def build(
        cls,
        charge: PlanCharge,
        meter: MeterRow,
        timeline: OverrideTimeline,
        rows: dict[int, PriceOverrideRow],
        moment: datetime,
    ) -> SubscriptionCharge:
        step = timeline.step_in_effect(charge.id, moment)
        in_effect = step if step is not None and step.terms is not None else None
        row = rows.get(in_effect.seq) if in_effect is not None else None
        return cls(
            id=strawberry.ID(str(charge.id)),
            position=charge.position,
            meter=Meter.from_model(meter),
            model=ChargeModel(charge.model),
            where=cast(JSON, dict(charge.where)),
            plan_price=PriceTerms.from_charge(charge),
            customer_price=PriceTerms.from_charge(timeline.charge_at(charge, moment)),
            override=PriceOverride.from_model(row) if row is not None else None,
            billed=ChargeBilling(charge.billed),
        )


async def subscription_charges(info: Info, row: SubscriptionRow, version_id: uuid.UUID) -> list[SubscriptionCharge]:
    """The charges of the version in effect, at the customer's prices now (no query for the
    overrides of a subscription that never had one)."""
    session = info.context.session
    timeline, rows = await overrides.overrides_with_rows(session, row)
    now = info.context.now()
    return [
        SubscriptionCharge.build(charge, meter, timeline, rows, now)
        for charge, meter in await charges_of_version(session, version_id)
    ]


async def resolve_price_overrides(root: strawberry.Parent[Any], info: Info, first: int = 50) -> list[PriceOverride]:
    rows = await overrides.history(info.context.session, root.row_id, limit=max(1, min(first, 200)))
    return [PriceOverride.from_model(row) for row in rows]


async def resolve_dropped_price_overrides(root: strawberry.Parent[Any], info: Info) -> list[PriceOverride]:
    rows = await info.context.loaders.dropped_price_overrides.load(root.row.id)
    return [PriceOverride.from_model(row) for row in rows]


@strawberry.input(description="Which charge of the customer's plan: its id, or its meter key (and position).")
class PlanChargeSelector:
    id: strawberry.ID | None = None
    meter_key: str | None = None
    position: int | None = strawberry.field(
        default=None, description="Its place in the plan, from 0: needed when the plan charges the meter twice."
    )

    def selector(self) -> ChargeSelector:
        return ChargeSelector(str(self.id) if self.id is not None else None, self.meter_key, self.position)


@strawberry.input
class PriceTierInput:
    up_to: Decimal | None = strawberry.field(description="Null: no upper bound (the last tier).")
    unit_price: Decimal


@strawberry.input
class SetPriceOverrideInput:
    customer_id: strawberry.ID
    charge: PlanChargeSelector
    reason: str = strawberry.field(description="Why this customer pays another price (kept in the audit).")
    idempotency_key: str
    subscription_id: strawberry.ID | None = strawberry.field(default=None, description=WHICH_SUBSCRIPTION)
    unit_price: Decimal | None = strawberry.field(default=None, description="Per-unit charges.")
    tiers: list[PriceTierInput] | None = strawberry.field(default=None, description="Graduated and volume charges.")
    package_size: Decimal | None = strawberry.field(default=None, description="Package charges.")
    package_price: Decimal | None = strawberry.field(default=None, description="Package charges.")
    included: Decimal | None = strawberry.field(default=None, description="The allowance taken off first.")
    minimum: Decimal | None = None
    limit: Decimal | None = strawberry.field(default=None, description="The entitlement's limit.")
    unlimited: bool = strawberry.field(default=False, description="Lift the plan's limit for this customer.")
    effective_at: datetime | None = strawberry.field(
        default=None, description="Defaults to now; inside the current billing period, or its end."
    )
    dry_run: bool = strawberry.field(default=False, description="Answer the effect on this period; change nothing.")


@strawberry.input
class RemovePriceOverrideInput:
    customer_id: strawberry.ID
    charge: PlanChargeSelector
    reason: str
    idempotency_key: str
    subscription_id: strawberry.ID | None = strawberry.field(default=None, description=WHICH_SUBSCRIPTION)
    effective_at: datetime | None = strawberry.field(
        default=None, description="Defaults to now; inside the current billing period, or its end."
    )
    dry_run: bool = False


@strawberry.type(description="What the change does to the current period's invoice so far (usage to now).")
class PriceOverrideEffect:
    period_start: datetime
    period_end: datetime
    charge_before: Money = strawberry.field(description="The charge's usage lines before the change.")
    charge_after: Money
    invoice_before: Money = strawberry.field(description="The whole upcoming invoice before the change.")
    invoice_after: Money


@strawberry.type
class SetPriceOverridePayload:
    price_override: PriceOverride | None
    charge: SubscriptionCharge | None = strawberry.field(description="The charge as the customer pays it from then.")
    effect: PriceOverrideEffect | None
    user_errors: list[UserError]


@strawberry.type
class RemovePriceOverridePayload:
    price_override: PriceOverride | None
    charge: SubscriptionCharge | None
    effect: PriceOverrideEffect | None
    user_errors: list[UserError]


def _parts(result: PriceOverrideResult, now: datetime) -> tuple[PriceOverride, SubscriptionCharge, PriceOverrideEffect]:
    outcome, effect = result.outcome, result.effect
    row, currency = outcome.change, effect.currency
    moment = max(now, row.effective_at)
    rows = {row.seq if row.seq is not None else UNRECORDED: row}  # a dry run's row has no place yet
    after = outcome.after
    return (
        PriceOverride.from_model(row),
        SubscriptionCharge.build(outcome.charge, outcome.meter, after, rows, moment),
        PriceOverrideEffect(
            period_start=effect.period_start,
            period_end=effect.period_end,
            charge_before=money(effect.charge_before, currency),
            charge_after=money(effect.charge_after, currency),
            invoice_before=money(effect.invoice_before, currency),
            invoice_after=money(effect.invoice_after, currency),
        ),
    )


async def _change(
    info: Info, customer_id: strawberry.ID, request_of: Any, dry_run: bool
) -> tuple[tuple[PriceOverride, SubscriptionCharge, PriceOverrideEffect] | None, list[UserError]]:
    context = info.context

    async def act() -> tuple[PriceOverride, SubscriptionCharge, PriceOverrideEffect]:
        customer = await customer_of(info, customer_id)
        result = await change_price_override(
            context.session,
            request_of(customer.id),
            as_of=context.now(),
            window=billing_window(context.settings),
            backdate_limit=timedelta(days=context.settings.backdate_max_days),
            dry_run=dry_run,
        )
        return _parts(result, context.now())  # built before a dry run's rollback expires the rows

    return await run_mutation(info, act, commit=not dry_run)


@strawberry.type
class PriceOverridesMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.OVERRIDE_PRICES)],
        description="Give a customer their own price for one charge of their plan (a new version of it, audited).",
    )
    async def set_price_override(self, info: Info, input: SetPriceOverrideInput) -> SetPriceOverridePayload:
        fields = OverrideFields(
            unit_price=input.unit_price,
            tiers=[TierInput(t.up_to, t.unit_price) for t in input.tiers] if input.tiers is not None else None,
            package_size=input.package_size,
            package_price=input.package_price,
            included=input.included,
            minimum=input.minimum,
            limit=input.limit,
            unlimited=input.unlimited,
        )

        def request_of(customer_id: uuid.UUID) -> PriceOverrideRequest:
            return PriceOverrideRequest(
                customer_id=customer_id,
                charge=input.charge.selector(),
                fields=fields,
                reason=input.reason,
                idempotency_key=input.idempotency_key,
                actor=info.context.viewer.actor,
                effective_at=input.effective_at,
                subscription_id=subscription_id_of(input.subscription_id),
            )

        found, errors = await _change(info, input.customer_id, request_of, input.dry_run)
        if found is None:
            return SetPriceOverridePayload(price_override=None, charge=None, effect=None, user_errors=errors)
        override, charge, effect = found
        return SetPriceOverridePayload(price_override=override, charge=charge, effect=effect, user_errors=[])

    @strawberry.mutation(
        permission_classes=[requires(Capability.OVERRIDE_PRICES)],
        description="Put a customer back on the plan's price for one charge (the override's history is kept).",
    )
    async def remove_price_override(self, info: Info, input: RemovePriceOverrideInput) -> RemovePriceOverridePayload:
        def request_of(customer_id: uuid.UUID) -> PriceOverrideRequest:
            return PriceOverrideRequest(
                customer_id=customer_id,
                charge=input.charge.selector(),
                fields=None,
                reason=input.reason,
                idempotency_key=input.idempotency_key,
                actor=info.context.viewer.actor,
                effective_at=input.effective_at,
                subscription_id=subscription_id_of(input.subscription_id),
            )

        found, errors = await _change(info, input.customer_id, request_of, input.dry_run)
        if found is None:
            return RemovePriceOverridePayload(price_override=None, charge=None, effect=None, user_errors=errors)
        override, charge, effect = found
        return RemovePriceOverridePayload(price_override=override, charge=charge, effect=effect, user_errors=[])
