"""Read and validate a catalog file (meters and plans in TOML) without touching the database.

Validation is complete before anything is written: every problem is collected with the path of
the item and field it concerns (``plans[1].charges[0].tiers: up_to must increase``), so a user
fixes a file in one pass. The result is a :class:`CatalogSpec` of exact values.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from ledger.errors import InvalidInput
from ledger.money import (
    MAX_PRICE_PLACES,
    decimal_places,
    fits_minor_unit,
    normalize_currency,
    parse_decimal,
)
from pricing.errors import CatalogInvalid, CatalogProblem
from pricing.tax import KNOWN_COUNTRIES
from pricing.tax import MAX_RATE as MAX_TAX_RATE

AGGREGATIONS = ("count", "sum", "max", "unique_count", "latest")
CHARGE_MODELS = ("per_unit", "graduated", "volume", "package", "stair_step", "percentage")
PACKAGE_ROUNDINGS = ("up", "down")
PRORATIONS = ("exact", "day")
INTERVALS = ("week", "month", "quarter", "year")
BILLING_ANCHORS = ("anniversary", "calendar")
TRIAL_USAGE = ("free", "charged")
#: When a charge is billed: after the period from its usage (the default), or at the period's start
#: from the meter's value then, topped up when it rises (seats): only a level, a ``latest`` or
#: ``max`` meter, can be billed in advance.
CHARGE_BILLING = ("in_arrears", "in_advance")
IN_ADVANCE_AGGREGATIONS = ("latest", "max")
MAX_TRIAL_DAYS = 365  # a longer "trial" is a free plan, and a typo of 3650 would bill nobody for years
KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")

METER_FIELDS = {"key", "name", "unit", "event_type", "aggregation", "value_property", "group_by", "allow_negative"}
VALUE_AGGREGATIONS = ("sum", "max", "latest")
PLAN_FIELDS = {
    "key",
    "name",
    "currency",
    "interval",
    "base_fee",
    "charges",
    "paused_usage",
    "proration",
    "billing_anchor",
    "trial_days",
    "trial_usage",
    "trial_requires_payment_method",
    "minimum_spend",
    "currency_options",
    "invoice_threshold",
}
#: A price in another currency names only what is money: the base fee, the minimum spend, the
#: invoice threshold and each charge's prices (by position); what is counted, included and
#: limited stays the plan's.
CURRENCY_OPTION_FIELDS = {"base_fee", "minimum_spend", "invoice_threshold", "charges"}
CHARGE_PRICE_FIELDS = {
    "unit_price",
    "tiers",
    "package_price",
    "minimum",
    "fixed_fee",
    "per_event_minimum",
    "per_event_maximum",
}
TAX_RATE_FIELDS = {"key", "name", "rate", "inclusive", "country", "region"}
MAX_TAX_RATE_PLACES = 4
#: What happens to usage while a subscription is paused: still metered and billed, or refused.
PAUSED_USAGE = ("meter", "refuse")
CHARGE_FIELDS = {
    "meter",
    "model",
    "unit_price",
    "tiers",
    "package_size",
    "package_price",
    "included",
    "minimum",
    "limit",
    "where",
    "rounding",
    "rate",
    "fixed_fee",
    "free_events",
    "per_event_minimum",
    "per_event_maximum",
    "billed",
}
# What each model reads, beyond what every charge may have (included, minimum, limit, where).
MODEL_FIELDS = {
    "per_unit": {"unit_price"},
    "graduated": {"tiers"},
    "volume": {"tiers"},
    "stair_step": {"tiers"},
    "package": {"package_size", "package_price", "rounding"},
    "percentage": {"rate", "fixed_fee", "free_events", "per_event_minimum", "per_event_maximum"},
}
MODEL_SPECIFIC_FIELDS = set().union(*MODEL_FIELDS.values())


@dataclass(frozen=True)
class MeterSpec:
    key: str
    name: str
    unit: str
    event_type: str
    aggregation: str
    value_property: str | None
    group_by: tuple[str, ...]
    allow_negative: bool = False  # sum, max, latest: whether a negative value is accepted


@dataclass(frozen=True)
class TierSpec:
    up_to: Decimal | None  # None is "inf": the last tier has no upper bound
    unit_price: Decimal
    flat_fee: Decimal = Decimal(0)  # once for a tier reached; a stair step's whole price

    def pricing_document(self) -> dict[str, Any]:
        document = {
            "up_to": _text(self.up_to) if self.up_to is not None else "inf",
            "unit_price": _text(self.unit_price),
        }
        if self.flat_fee:  # absent when zero, so tiers declared before flat fees keep their hash
            document["flat_fee"] = _text(self.flat_fee)
        return document


@dataclass(frozen=True)
class ChargeSpec:
    meter: str
    model: str
    unit_price: Decimal | None = None
    tiers: tuple[TierSpec, ...] = ()
    package_size: Decimal | None = None
    package_price: Decimal | None = None
    included: Decimal = Decimal(0)
    minimum: Decimal | None = None
    limit: Decimal | None = None
    where: tuple[tuple[str, str], ...] = ()
    rounding: str = "up"  # package only
    percentage_rate: Decimal | None = None  # percentage only, and the four below
    fixed_fee: Decimal | None = None
    free_events: int | None = None
    per_event_minimum: Decimal | None = None
    per_event_maximum: Decimal | None = None
    billed: str = "in_arrears"  # or "in_advance" (a latest or max meter's level, see CHARGE_BILLING)

    def pricing_document(self) -> dict[str, Any]:
        """A canonical JSON-able form: equal documents mean equal pricing. Terms added after the
        first models appear only when they say something, so older charges keep their hash."""
        document: dict[str, Any] = {
            "meter": self.meter,
            "model": self.model,
            "unit_price": _text(self.unit_price),
            "tiers": [t.pricing_document() for t in self.tiers],
            "package_size": _text(self.package_size),
            "package_price": _text(self.package_price),
            "included": _text(self.included),
            "minimum": _text(self.minimum),
            "limit": _text(self.limit),
            "where": dict(self.where),
        }
        if self.rounding != "up":
            document["rounding"] = self.rounding
        if self.billed != "in_arrears":
            document["billed"] = self.billed
        if self.model == "percentage":
            document |= {
                "rate": _text(self.percentage_rate),
                "fixed_fee": _text(self.fixed_fee),
                "free_events": self.free_events,
                "per_event_minimum": _text(self.per_event_minimum),
                "per_event_maximum": _text(self.per_event_maximum),
            }
        return document


@dataclass(frozen=True)
class PlanSpec:
    key: str
    name: str
    currency: str
    interval: str
    base_fee: Decimal
    charges: tuple[ChargeSpec, ...]
    paused_usage: str = "meter"
    proration: str = "exact"
    billing_anchor: str = "anniversary"
    trial_days: int = 0
    trial_usage: str = "free"
    trial_requires_payment_method: bool = False
    minimum_spend: Decimal | None = None
    # Threshold (progressive) invoicing: an interim invoice bills the period's usage so far once
    # what it has not billed yet reaches this amount (billing.invoices.threshold_invoicing).
    invoice_threshold: Decimal | None = None
    # The same plan priced in other currencies (each one a PlanSpec of its own currency, without
    # options): a customer is billed the prices of their currency.
    currency_options: tuple[PlanSpec, ...] = ()

    def in_currency(self, currency: str) -> PlanSpec | None:
        """The plan as priced in ``currency``, or None when it has no prices in it."""
        if currency == self.currency:
            return self
        return next((option for option in self.currency_options if option.currency == currency), None)

    def pricing_document(self) -> dict[str, Any]:
        """What a plan version freezes: a change here makes a new version (the name does not).
        Settings at their default (no minimum spend among them) are left out, so plans declared
        before them keep their version and applying an unchanged catalog makes no new versions."""
        document: dict[str, Any] = {
            "currency": self.currency,
            "interval": self.interval,
            "base_fee": _text(self.base_fee),
            "charges": [c.pricing_document() for c in self.charges],
        }
        if self.paused_usage != "meter":
            document["paused_usage"] = self.paused_usage
        if self.proration != "exact":
            document["proration"] = self.proration
        if self.billing_anchor != "anniversary":
            document["billing_anchor"] = self.billing_anchor
        if self.trial_days:
            document["trial_days"] = self.trial_days
            document["trial_usage"] = self.trial_usage
            document["trial_requires_payment_method"] = self.trial_requires_payment_method
        if self.minimum_spend is not None:
            document["minimum_spend"] = _text(self.minimum_spend)
        if self.invoice_threshold is not None:  # absent without one, so older plans keep their hash
            document["invoice_threshold"] = _text(self.invoice_threshold)
        if self.currency_options:  # a change of any currency's prices makes a new version of all
            document["currency_options"] = {o.currency: o.pricing_document() for o in self.currency_options}
        return document


@dataclass(frozen=True)
class TaxRateSpec:
    """A tax rate: ``rate`` is a percent (``20`` is 20 %), 0 <= rate < 100; ``inclusive`` rates
    are inside the prices, exclusive ones added on top; ``country`` an ISO 3166-1 alpha-2 code and
    ``region`` (optional) a state or province as customers' addresses spell it."""

    key: str
    name: str
    rate: Decimal
    inclusive: bool
    country: str
    region: str | None = None

    def document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rate": _text(self.rate),
            "inclusive": self.inclusive,
            "country": self.country,
            "region": self.region,
        }


@dataclass(frozen=True)
class CatalogSpec:
    meters: tuple[MeterSpec, ...]
    plans: tuple[PlanSpec, ...]
    tax_rates: tuple[TaxRateSpec, ...] = ()


def _text(value: Decimal | None) -> str | None:
    """A canonical text for a decimal: 20, 20.0 and 20.00 are the same price."""
    if value is None:
        return None
    normalized = value.normalize()
    return format(normalized, "f") if normalized != 0 else "0"


@dataclass
class _Reader:
    """Collects problems while reading values, so one pass reports them all."""

    problems: list[CatalogProblem] = field(default_factory=list)

    def problem(self, path: str, message: str) -> None:
        self.problems.append(CatalogProblem(path, message))

    def unknown_fields(self, item: dict[str, Any], allowed: set[str], path: str) -> None:
        for name in sorted(set(item) - allowed):
            self.problem(f"{path}.{name}", f"unknown field (expected one of: {', '.join(sorted(allowed))})")

    def text(self, item: dict[str, Any], name: str, path: str, *, required: bool = True) -> str | None:
        value = item.get(name)
        if value is None:
            if required:
                self.problem(f"{path}.{name}", "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(f"{path}.{name}", "must be a non-empty string")
            return None
        return value.strip()

    def key(self, item: dict[str, Any], name: str, path: str) -> str | None:
        value = self.text(item, name, path)
        if value is not None and not KEY_PATTERN.match(value):
            self.problem(
                f"{path}.{name}",
                f"{value!r} must be lower case letters, digits, '_', '-' or '.', starting with a letter",
            )
            return None
        return value

    def decimal(
        self,
        item: dict[str, Any],
        name: str,
        path: str,
        *,
        required: bool = False,
        max_places: int = MAX_PRICE_PLACES,
        positive: bool = False,
    ) -> Decimal | None:
        if name not in item:
            if required:
                self.problem(f"{path}.{name}", "is required")
            return None
        try:
            value = parse_decimal(item[name], field=name)
        except InvalidInput as error:
            self.problem(f"{path}.{name}", error.message)
            return None
        if value < 0 or (positive and value == 0):
            self.problem(f"{path}.{name}", "must be greater than zero" if positive else "must not be negative")
            return None
        if decimal_places(value) > max_places:
            self.problem(f"{path}.{name}", f"at most {max_places} decimal places")
            return None
        return value


def parse_catalog(
    text: str,
    *,
    known_meters: dict[str, tuple[str, ...]] | None = None,
    known_aggregations: dict[str, str] | None = None,
) -> CatalogSpec:
    """Parse and validate catalog TOML; raise :class:`CatalogInvalid` listing every problem.

    ``known_meters`` are meters already in the database (key → group_by), which charges may
    also refer to; ``known_aggregations`` their aggregations (key → aggregation).
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise CatalogInvalid([CatalogProblem("file", f"not valid TOML: {error}")]) from None
    reader = _Reader()
    reader.unknown_fields(document, {"meters", "plans", "tax_rates"}, "catalog")
    meters = _read_meters(reader, document.get("meters", []))
    meter_dimensions = {**(known_meters or {}), **{m.key: m.group_by for m in meters}}
    aggregations = {**(known_aggregations or {}), **{m.key: m.aggregation for m in meters}}
    plans = _read_plans(reader, document.get("plans", []), meter_dimensions, aggregations)
    tax_rates = _read_tax_rates(reader, document.get("tax_rates", []))
    if reader.problems:
        raise CatalogInvalid(reader.problems)
    return CatalogSpec(meters=tuple(meters), plans=tuple(plans), tax_rates=tuple(tax_rates))


def _items(reader: _Reader, value: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        reader.problem(path, "must be an array of tables ([[...]])")
        return []
    return value


def _read_meters(reader: _Reader, raw: Any) -> list[MeterSpec]:
    meters: list[MeterSpec] = []
    seen: set[str] = set()
    for index, item in enumerate(_items(reader, raw, "meters")):
        path = f"meters[{index}]"
        reader.unknown_fields(item, METER_FIELDS, path)
        key = reader.key(item, "key", path)
        if key is not None and key in seen:
            reader.problem(f"{path}.key", f"{key!r} is declared twice")
        name = reader.text(item, "name", path)
        unit = reader.text(item, "unit", path)
        event_type = reader.text(item, "event_type", path)
        aggregation = reader.text(item, "aggregation", path)
        if aggregation is not None and aggregation not in AGGREGATIONS:
            reader.problem(f"{path}.aggregation", f"{aggregation!r} is not one of {', '.join(AGGREGATIONS)}")
            aggregation = None
        value_property = reader.text(item, "value_property", path, required=False)
        if aggregation == "count" and value_property is not None:
            reader.problem(f"{path}.value_property", "a count meter counts events and reads no property")
        elif aggregation not in (None, "count") and value_property is None:
            reader.problem(f"{path}.value_property", f"is required for a {aggregation} meter")
        group_by = item.get("group_by", [])
        if not isinstance(group_by, list) or not all(isinstance(g, str) and g for g in group_by):
            reader.problem(f"{path}.group_by", "must be a list of event property names")
            group_by = []
        elif len(set(group_by)) != len(group_by):
            reader.problem(f"{path}.group_by", "names a property twice")
        allow_negative = item.get("allow_negative", False)
        if not isinstance(allow_negative, bool):
            reader.problem(f"{path}.allow_negative", "must be true or false")
            allow_negative = False
        elif allow_negative and aggregation not in (None, *VALUE_AGGREGATIONS):
            reader.problem(f"{path}.allow_negative", f"a {aggregation} meter reads no value that could be negative")
        if key is None or None in (name, unit, event_type, aggregation):
            continue
        seen.add(key)
        assert name and unit and event_type and aggregation
        meters.append(
            MeterSpec(key, name, unit, event_type, aggregation, value_property, tuple(group_by), allow_negative)
        )
    return meters


def _read_plans(
    reader: _Reader, raw: Any, meter_keys: dict[str, tuple[str, ...]], aggregations: dict[str, str]
) -> list[PlanSpec]:
    plans: list[PlanSpec] = []
    seen: set[str] = set()
    for index, item in enumerate(_items(reader, raw, "plans")):
        path = f"plans[{index}]"
        before = len(reader.problems)
        plan = _read_plan(reader, item, path, meter_keys, aggregations, PLAN_FIELDS)
        if plan is not None and plan.key in seen:
            reader.problem(f"{path}.key", f"{plan.key!r} is declared twice")
        if plan is None:
            continue
        seen.add(plan.key)
        options = _read_currency_options(reader, item, path, plan, meter_keys, aggregations)
        if len(reader.problems) == before:
            plans.append(replace(plan, currency_options=options))
    return plans


def _read_currency_options(
    reader: _Reader,
    item: dict[str, Any],
    path: str,
    plan: PlanSpec,
    meter_keys: dict[str, tuple[str, ...]],
    aggregations: dict[str, str],
) -> tuple[PlanSpec, ...]:
    """``[plans.currency_options.EUR]``: the plan's prices in another currency. Each option is read
    as the plan itself with its money replaced, so it is validated exactly as the plan is."""
    raw = item.get("currency_options", {})
    if not isinstance(raw, dict):
        reader.problem(f"{path}.currency_options", "must be a table of currency code = prices")
        return ()
    options = []
    charges = item.get("charges", [])
    for code, option in raw.items():
        option_path = f"{path}.currency_options.{code}"
        try:
            currency = normalize_currency(code)
        except InvalidInput as error:
            reader.problem(option_path, error.message)
            continue
        if currency == plan.currency:
            reader.problem(option_path, f"the plan is priced in {currency} already")
            continue
        if not isinstance(option, dict):
            reader.problem(option_path, "must be a table (base_fee, minimum_spend, charges)")
            continue
        reader.unknown_fields(option, CURRENCY_OPTION_FIELDS, option_path)
        option_charges = _items(reader, option.get("charges", []), f"{option_path}.charges")
        if len(option_charges) != len(charges):
            reader.problem(
                f"{option_path}.charges",
                f"must give the prices of each of the plan's {len(charges)} charge(s), in order",
            )
            continue
        if plan.minimum_spend is not None and "minimum_spend" not in option:
            reader.problem(
                f"{option_path}.minimum_spend", f"is required: the plan has a minimum spend in {plan.currency}"
            )
            continue
        if plan.invoice_threshold is not None and "invoice_threshold" not in option:
            reader.problem(
                f"{option_path}.invoice_threshold",
                f"is required: the plan invoices at a threshold in {plan.currency}",
            )
            continue
        merged_charges = []
        for position, (charge, prices) in enumerate(zip(charges, option_charges, strict=True)):
            reader.unknown_fields(prices, CHARGE_PRICE_FIELDS, f"{option_path}.charges[{position}]")
            merged_charges.append(
                {key: value for key, value in charge.items() if key not in CHARGE_PRICE_FIELDS} | prices
            )
        money = ("base_fee", "minimum_spend", "invoice_threshold")
        merged = {key: value for key, value in item.items() if key not in money}
        merged |= {"currency": currency, "charges": merged_charges, "currency_options": {}}
        merged |= {key: option[key] for key in money if key in option}
        priced = _read_plan(reader, merged, option_path, meter_keys, aggregations, PLAN_FIELDS)
        if priced is not None:
            options.append(priced)
    return tuple(sorted(options, key=lambda option: option.currency))


def _read_plan(
    reader: _Reader,
    item: dict[str, Any],
    path: str,
    meter_keys: dict[str, tuple[str, ...]],
    aggregations: dict[str, str],
    allowed: set[str],
) -> PlanSpec | None:
    reader.unknown_fields(item, allowed, path)
    key = reader.key(item, "key", path)
    name = reader.text(item, "name", path)
    currency: str | None = None
    raw_currency = reader.text(item, "currency", path)
    if raw_currency is not None:
        try:
            currency = normalize_currency(raw_currency)
        except InvalidInput as error:
            reader.problem(f"{path}.currency", error.message)
    interval = reader.text(item, "interval", path)
    if interval is not None and interval not in INTERVALS:
        reader.problem(f"{path}.interval", f"{interval!r} is not one of {', '.join(INTERVALS)}")
        interval = None
    proration = item.get("proration", "exact")
    if proration not in PRORATIONS:
        reader.problem(f"{path}.proration", f"{proration!r} is not one of {', '.join(PRORATIONS)}")
        proration = "exact"
    base_fee = reader.decimal(item, "base_fee", path, required=True)
    if base_fee is not None and currency is not None and not fits_minor_unit(base_fee, currency):
        reader.problem(f"{path}.base_fee", f"{base_fee} is not payable in {currency}: too many decimal places")
        base_fee = None
    charges = [
        charge
        for charge_index, charge_item in enumerate(_items(reader, item.get("charges", []), f"{path}.charges"))
        if (
            charge := _read_charge(
                reader, charge_item, f"{path}.charges[{charge_index}]", meter_keys, aggregations, currency
            )
        )
    ]
    paused_usage = reader.text(item, "paused_usage", path, required=False) or "meter"
    if paused_usage not in PAUSED_USAGE:
        reader.problem(f"{path}.paused_usage", f"{paused_usage!r} is not one of {', '.join(PAUSED_USAGE)}")
    billing_anchor = reader.text(item, "billing_anchor", path, required=False) or "anniversary"
    if billing_anchor not in BILLING_ANCHORS:
        reader.problem(f"{path}.billing_anchor", f"{billing_anchor!r} is not one of {', '.join(BILLING_ANCHORS)}")
    trial_days = item.get("trial_days", 0)
    if isinstance(trial_days, bool) or not isinstance(trial_days, int) or not 0 <= trial_days <= MAX_TRIAL_DAYS:
        reader.problem(f"{path}.trial_days", f"must be a whole number of days from 0 to {MAX_TRIAL_DAYS}")
        trial_days = 0
    trial_usage = reader.text(item, "trial_usage", path, required=False) or "free"
    if trial_usage not in TRIAL_USAGE:
        reader.problem(f"{path}.trial_usage", f"{trial_usage!r} is not one of {', '.join(TRIAL_USAGE)}")
    requires_method = item.get("trial_requires_payment_method", False)
    if not isinstance(requires_method, bool):
        reader.problem(f"{path}.trial_requires_payment_method", "must be true or false")
        requires_method = False
    minimum_spend = reader.decimal(item, "minimum_spend", path)
    if minimum_spend is not None and currency is not None and not fits_minor_unit(minimum_spend, currency):
        reader.problem(
            f"{path}.minimum_spend", f"{minimum_spend} is not payable in {currency}: too many decimal places"
        )
        minimum_spend = None
    invoice_threshold = _read_invoice_threshold(reader, item, path, currency)
    if key is None or name is None or currency is None or interval is None or base_fee is None:
        return None
    return PlanSpec(
        key,
        name,
        currency,
        interval,
        base_fee,
        tuple(charges),
        paused_usage,
        proration,
        billing_anchor,
        trial_days,
        trial_usage,
        requires_method,
        minimum_spend=minimum_spend,
        invoice_threshold=invoice_threshold,
    )


#: The largest threshold accepted (in major units): beyond it no period would ever reach it, and
#: a typo of extra zeros would silently turn threshold invoicing off.
MAX_INVOICE_THRESHOLD = Decimal("1000000000")


def _read_invoice_threshold(reader: _Reader, item: dict[str, Any], path: str, currency: str | None) -> Decimal | None:
    """``invoice_threshold = "100.00"``: a positive amount payable in the plan's currency."""
    threshold = reader.decimal(item, "invoice_threshold", path, positive=True)
    if threshold is None:
        return None
    if threshold > MAX_INVOICE_THRESHOLD:
        reader.problem(f"{path}.invoice_threshold", f"must be at most {MAX_INVOICE_THRESHOLD}")
        return None
    if currency is not None and not fits_minor_unit(threshold, currency):
        reader.problem(
            f"{path}.invoice_threshold", f"{threshold} is not payable in {currency}: too many decimal places"
        )
        return None
    return threshold


def _read_charge(
    reader: _Reader,
    item: dict[str, Any],
    path: str,
    meter_keys: dict[str, tuple[str, ...]],
    aggregations: dict[str, str],
    currency: str | None,
) -> ChargeSpec | None:
    before = len(reader.problems)
    reader.unknown_fields(item, CHARGE_FIELDS, path)
    meter = reader.text(item, "meter", path)
    if meter is not None and meter not in meter_keys:
        reader.problem(f"{path}.meter", f"no meter {meter!r} is declared in this file or the database")
    model = reader.text(item, "model", path)
    if model is not None and model not in CHARGE_MODELS:
        reader.problem(f"{path}.model", f"{model!r} is not one of {', '.join(CHARGE_MODELS)}")
    unit_price = package_size = package_price = None
    tiers: tuple[TierSpec, ...] = ()
    for name in sorted(MODEL_SPECIFIC_FIELDS - MODEL_FIELDS.get(model or "", set())):
        if name in item and model in CHARGE_MODELS:
            reader.problem(f"{path}.{name}", f"is not used by a {model} charge")
    if model == "per_unit":
        unit_price = reader.decimal(item, "unit_price", path, required=True)
    elif model in ("graduated", "volume", "stair_step"):
        tiers = _read_tiers(reader, item.get("tiers"), f"{path}.tiers", model)
    elif model == "package":
        package_size = reader.decimal(item, "package_size", path, required=True, max_places=0, positive=True)
        package_price = reader.decimal(item, "package_price", path, required=True)
    rounding = item.get("rounding", "up") if model == "package" else "up"
    if rounding not in PACKAGE_ROUNDINGS:
        reader.problem(
            f"{path}.rounding",
            f"{rounding!r} is not one of {', '.join(PACKAGE_ROUNDINGS)} (a started package costs a whole one, "
            "or only whole packages are charged)",
        )
    percentage = _read_percentage(reader, item, path) if model == "percentage" else {}
    if model == "percentage" and meter in aggregations and aggregations[meter] != "sum":
        reader.problem(
            f"{path}.meter",
            f"a percentage charge takes a share of each event's value: meter {meter!r} must be a sum meter, "
            f"not {aggregations[meter]}",
        )
    billed = item.get("billed", "in_arrears")
    if billed not in CHARGE_BILLING:
        reader.problem(
            f"{path}.billed",
            f"{billed!r} is not one of {', '.join(CHARGE_BILLING)} (after the period from its usage, or at its "
            "start from the meter's value then)",
        )
    elif billed == "in_advance" and meter in aggregations and aggregations[meter] not in IN_ADVANCE_AGGREGATIONS:
        reader.problem(
            f"{path}.billed",
            f"only a level can be billed in advance: meter {meter!r} must be a latest or max meter, "
            f"not {aggregations[meter]}",
        )
    included = reader.decimal(item, "included", path) or Decimal(0)
    minimum = reader.decimal(item, "minimum", path)
    if minimum is not None and currency is not None and not fits_minor_unit(minimum, currency):
        reader.problem(f"{path}.minimum", f"{minimum} is not payable in {currency}: too many decimal places")
    limit = reader.decimal(item, "limit", path)
    where_raw = item.get("where", {})
    where: tuple[tuple[str, str], ...] = ()
    if not isinstance(where_raw, dict) or not all(
        isinstance(v, str | int | bool) and not isinstance(v, float) for v in where_raw.values()
    ):
        reader.problem(f"{path}.where", "must be a table of property = string, integer or boolean")
    else:
        where = tuple(sorted((str(k), _where_text(v)) for k, v in where_raw.items()))
        dimensions = meter_keys.get(meter or "", ())
        for key, _ in where:
            if meter in meter_keys and key not in dimensions:
                reader.problem(
                    f"{path}.where.{key}",
                    f"meter {meter!r} does not split usage by {key!r}; add it to the meter's group_by",
                )
    if len(reader.problems) > before or meter is None or model is None:
        return None
    return ChargeSpec(
        meter=meter,
        model=model,
        unit_price=unit_price,
        tiers=tiers,
        package_size=package_size,
        package_price=package_price,
        included=included,
        minimum=minimum,
        limit=limit,
        where=where,
        rounding=rounding,
        billed=billed,
        **percentage,
    )


def _read_percentage(reader: _Reader, item: dict[str, Any], path: str) -> dict[str, Any]:
    """Lago's percentage model: ``rate`` percent of the value, a fixed fee per event, free events
    (``included`` is the free value), and a minimum and maximum fee per event."""
    rate = reader.decimal(item, "rate", path, required=True)
    if rate is not None and rate > 100:
        reader.problem(f"{path}.rate", f"{rate} is a percentage: it must be between 0 and 100")
    free_events = reader.decimal(item, "free_events", path, max_places=0)
    minimum = reader.decimal(item, "per_event_minimum", path)
    maximum = reader.decimal(item, "per_event_maximum", path)
    if minimum is not None and maximum is not None and minimum > maximum:
        reader.problem(f"{path}.per_event_minimum", f"{minimum} is above per_event_maximum {maximum}")
    return {
        "percentage_rate": rate,
        "fixed_fee": reader.decimal(item, "fixed_fee", path),
        "free_events": int(free_events) if free_events is not None else None,
        "per_event_minimum": minimum,
        "per_event_maximum": maximum,
    }


def _where_text(value: str | int | bool) -> str:
    """Event properties are matched by their JSON text: true, 42, or the string itself."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _read_tiers(reader: _Reader, raw: Any, path: str, model: str) -> tuple[TierSpec, ...]:
    """Graduated and volume tiers: ``{ up_to, unit_price, flat_fee? }``; stair steps:
    ``{ up_to, flat_fee }`` (the step's price)."""
    step = model == "stair_step"
    shape = "{ up_to, flat_fee }" if step else "{ up_to, unit_price } (and an optional flat_fee)"
    if not isinstance(raw, list) or not raw or not all(isinstance(t, dict) for t in raw):
        reader.problem(path, f"must be a non-empty list of {shape} tables")
        return ()
    tiers: list[TierSpec] = []
    previous: Decimal | None = None
    for index, tier in enumerate(raw):
        tier_path = f"{path}[{index}]"
        reader.unknown_fields(tier, {"up_to", "flat_fee"} if step else {"up_to", "unit_price", "flat_fee"}, tier_path)
        unit_price = Decimal(0) if step else reader.decimal(tier, "unit_price", tier_path, required=True)
        flat_fee = reader.decimal(tier, "flat_fee", tier_path, required=step)
        last = index == len(raw) - 1
        up_to: Decimal | None
        if tier.get("up_to") == "inf":
            if not last:
                reader.problem(path, 'only the last tier may go up to "inf"')
            up_to = None
        else:
            up_to = reader.decimal(tier, "up_to", tier_path, required=True, positive=True)
            if last and up_to is not None:
                reader.problem(path, 'the last tier must go up to "inf" so every quantity is priced')
            if up_to is not None and previous is not None and up_to <= previous:
                reader.problem(path, "up_to must increase")
            previous = up_to if up_to is not None else previous
        if unit_price is not None and (flat_fee is not None or not step):
            tiers.append(TierSpec(up_to, unit_price, flat_fee or Decimal(0)))
    return tuple(tiers)


def _read_tax_rates(reader: _Reader, raw: Any) -> list[TaxRateSpec]:
    """``[[tax_rates]]``: a rate of 0 (a zero-rated supply) is allowed, 100 and above are not."""
    rates: list[TaxRateSpec] = []
    seen: set[str] = set()
    for index, item in enumerate(_items(reader, raw, "tax_rates")):
        path = f"tax_rates[{index}]"
        before = len(reader.problems)
        reader.unknown_fields(item, TAX_RATE_FIELDS, path)
        key = reader.key(item, "key", path)
        if key is not None and key in seen:
            reader.problem(f"{path}.key", f"{key!r} is declared twice")
        name = reader.text(item, "name", path)
        rate = reader.decimal(item, "rate", path, required=True, max_places=MAX_TAX_RATE_PLACES)
        if rate is not None and rate >= MAX_TAX_RATE:
            reader.problem(f"{path}.rate", "a percent below 100 (20 is 20 %)")
        inclusive = item.get("inclusive", False)
        if not isinstance(inclusive, bool):
            reader.problem(f"{path}.inclusive", "must be true or false")
        country = reader.text(item, "country", path)
        if country is not None and country not in KNOWN_COUNTRIES:
            reader.problem(f"{path}.country", f"{country!r} is not an ISO 3166-1 alpha-2 country code (e.g. FR, DE)")
        region = reader.text(item, "region", path, required=False)
        if len(reader.problems) > before or key is None or name is None or rate is None or country is None:
            continue
        seen.add(key)
        rates.append(TaxRateSpec(key, name, rate, inclusive, country, region))
    return rates
