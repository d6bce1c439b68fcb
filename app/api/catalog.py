"""GraphQL of the catalog: meters and plan versions with their charges."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from app.api.common import Money
from app.api.permissions import requires
from app.auth import Capability
from ledger.money import plain_decimal, quantize_major
from pricing import service as catalog
from pricing.describe import describe_charge
from pricing.models import Meter as MeterRow
from pricing.models import Plan as PlanRow
from pricing.models import PlanCharge, PlanVersion


@strawberry.enum
class Aggregation(Enum):
    COUNT = "count"
    SUM = "sum"
    MAX = "max"
    UNIQUE_COUNT = "unique_count"
    LATEST = "latest"


@strawberry.enum
class ChargeModel(Enum):
    PER_UNIT = "per_unit"
    GRADUATED = "graduated"
    VOLUME = "volume"
    PACKAGE = "package"
    STAIR_STEP = "stair_step"
    PERCENTAGE = "percentage"


@strawberry.enum(description="How a package charge counts a partial package.")
class PackageRounding(Enum):
    UP = "up"
    DOWN = "down"


@strawberry.enum(
    description="When a charge is billed: in arrears, from the period's usage when it closes; or in advance, "
    "from a latest or max meter's value at the period's start (seats), topped up when it rises."
)
class ChargeBilling(Enum):
    IN_ARREARS = "in_arrears"
    IN_ADVANCE = "in_advance"


@strawberry.enum(description="How a part of a billing period is measured when a plan changes mid-period.")
class ProrationConvention(Enum):
    EXACT = "exact"
    DAY = "day"


@strawberry.enum
class BillingInterval(Enum):
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


def _plain(value: Decimal | None) -> Decimal | None:
    return plain_decimal(value) if value is not None else None


@strawberry.type(description="How usage events become a quantity: declared in the catalog.")
class Meter:
    key: str = strawberry.field(description="The meter's stable key, as the catalog and the API name it.")
    name: str = strawberry.field(description="For people, e.g. Premium requests.")
    unit: str = strawberry.field(description="What one unit is, e.g. request, token, GB.")
    event_type: str = strawberry.field(description="The type of the events it reads.")
    aggregation: Aggregation = strawberry.field(description="How it turns events into a quantity.")
    value_property: str | None = strawberry.field(
        description="The event property it sums, maxes or counts distinct values of; null for a count."
    )
    group_by: list[str] = strawberry.field(description="The event properties usage is split by (dimensions).")
    allow_negative: bool = strawberry.field(description="Whether a value the meter reads may be negative.")

    @classmethod
    def from_model(cls, meter: MeterRow) -> Meter:
        return cls(
            key=meter.key,
            name=meter.name,
            unit=meter.unit,
            event_type=meter.event_type,
            aggregation=Aggregation(meter.aggregation),
            value_property=meter.value_property,
            group_by=list(meter.group_by),
            allow_negative=meter.allow_negative,
        )


@strawberry.type
class Tier:
    up_to: Decimal | None = strawberry.field(description="None: the last tier, with no upper bound.")
    unit_price: Decimal
    flat_fee: Decimal = strawberry.field(
        description="Charged once a period when usage reaches the tier; a stair step's whole price."
    )


@strawberry.type
class Charge:
    meter: Meter
    model: ChargeModel
    unit_price: Decimal | None
    tiers: list[Tier]
    package_size: Decimal | None
    package_price: Decimal | None
    included: Decimal
    minimum: Decimal | None
    limit: Decimal | None
    where: JSON
    rounding: PackageRounding | None = strawberry.field(description="Package charges only.")
    percentage_rate: Decimal | None = strawberry.field(description="Percentage charges: percent of the value.")
    fixed_fee: Decimal | None = strawberry.field(description="Percentage charges: per paying event.")
    free_events: int | None = strawberry.field(description="Percentage charges: the first events cost nothing.")
    per_event_minimum: Decimal | None
    per_event_maximum: Decimal | None
    summary: str = strawberry.field(description="The charge's terms in words.")
    billed: ChargeBilling = strawberry.field(
        default=ChargeBilling.IN_ARREARS,
        description="IN_ADVANCE: billed at the period's start for the meter's value then, a rise topped up "
        "for the rest of the period on the next invoice, a fall not credited.",
    )

    @classmethod
    def from_model(cls, charge: PlanCharge, meter: MeterRow, currency: str) -> Charge:
        return cls(
            meter=Meter.from_model(meter),
            model=ChargeModel(charge.model),
            unit_price=_plain(charge.unit_price),
            tiers=[
                Tier(
                    up_to=None if tier["up_to"] == "inf" else Decimal(tier["up_to"]),
                    unit_price=Decimal(tier["unit_price"]),
                    flat_fee=Decimal(tier.get("flat_fee", "0")),
                )
                for tier in charge.tiers
            ],
            package_size=_plain(charge.package_size),
            package_price=_plain(charge.package_price),
            included=plain_decimal(charge.included),
            minimum=_plain(charge.minimum),
            limit=_plain(charge.usage_limit),
            where=cast(JSON, dict(charge.where)),
            rounding=PackageRounding(charge.rounding) if charge.model == "package" else None,
            percentage_rate=_plain(charge.percentage_rate),
            fixed_fee=_plain(charge.fixed_fee),
            free_events=charge.free_events,
            per_event_minimum=_plain(charge.per_event_minimum),
            per_event_maximum=_plain(charge.per_event_maximum),
            summary=describe_charge(catalog.charge_terms(charge), currency)
            + ("; billed in advance for the value at the period's start" if charge.billed == "in_advance" else ""),
            billed=ChargeBilling(charge.billed),
        )


@strawberry.type(description="One immutable version of a plan's pricing.")
class Plan:
    key: str = strawberry.field(description="The plan's stable key, as the catalog names it.")
    name: str = strawberry.field(description="For people, e.g. Pro.")
    version: int = strawberry.field(description="This version's number: 1, 2, 3… as the catalog changed its prices.")
    currency: str = strawberry.field(description="The ISO 4217 code its prices are in.")
    interval: BillingInterval
    proration: ProrationConvention
    created_at: datetime
    version_id: strawberry.Private[uuid.UUID]
    base_fee_amount: strawberry.Private[Decimal]
    trial_days: int = strawberry.field(default=0, description="Days of trial a new subscription gets.")
    calendar_billing: bool = strawberry.field(
        default=False, description="New subscriptions are billed on calendar periods (else on their anniversary)."
    )
    minimum_spend_amount: strawberry.Private[Decimal | None] = None
    invoice_threshold_amount: strawberry.Private[Decimal | None] = None

    @strawberry.field
    def base_fee(self) -> Money:
        return Money(amount=quantize_major(self.base_fee_amount, self.currency), currency=self.currency)

    @strawberry.field(description="The least a billing period bills (a true-up line makes up the rest); null: none.")
    def minimum_spend(self) -> Money | None:
        if self.minimum_spend_amount is None:
            return None
        return Money(amount=quantize_major(self.minimum_spend_amount, self.currency), currency=self.currency)

    @strawberry.field(
        description="Threshold invoicing: once a period's usage not billed yet reaches it, an interim invoice bills "
        "the usage so far; null: usage is billed when the period closes."
    )
    def invoice_threshold(self) -> Money | None:
        if self.invoice_threshold_amount is None:
            return None
        return Money(amount=quantize_major(self.invoice_threshold_amount, self.currency), currency=self.currency)

    @strawberry.field
    async def charges(self, info: Info) -> list[Charge]:
        rows = await info.context.loaders.charges_by_version.load(self.version_id)
        return [Charge.from_model(charge, meter, self.currency) for charge, meter in rows]

    @classmethod
    def from_model(cls, plan: PlanRow, version: PlanVersion) -> Plan:
        return cls(
            key=plan.key,
            name=plan.name,
            version=version.version,
            currency=version.currency,
            interval=BillingInterval(version.interval),
            proration=ProrationConvention(version.proration),
            created_at=version.created_at,
            version_id=version.id,
            base_fee_amount=version.base_fee,
            trial_days=version.trial_days,
            calendar_billing=version.billing_anchor == "calendar",
            minimum_spend_amount=version.minimum_spend,
            invoice_threshold_amount=version.invoice_threshold,
        )


@strawberry.type
class CatalogQuery:
    @strawberry.field(permission_classes=[requires(Capability.READ_CATALOG)])
    async def meters(self, info: Info) -> list[Meter]:
        return [Meter.from_model(m) for m in await catalog.list_meters(info.context.session)]

    @strawberry.field(
        permission_classes=[requires(Capability.READ_CATALOG)],
        description="Every plan at its newest version.",
    )
    async def plans(self, info: Info) -> list[Plan]:
        return [Plan.from_model(v.plan, v.version) for v in await catalog.list_plans(info.context.session)]
