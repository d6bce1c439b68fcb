"""`tally prices`: a customer's own prices from the command line (show, set, remove), through the
same services as setPriceOverride and removePriceOverride, with the same checks and dry run."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import billing_window
from app.cli_support import JsonOption, load_settings, print_json, run_in_session
from app.subscription_cli import SubscriptionOption, subscription_id_option
from ledger.errors import InvalidInput

prices_cli = typer.Typer(help="A customer's own prices: overrides of their plan's charges.", no_args_is_help=True)

CustomerArgument = Annotated[str, typer.Argument(help="The customer's external id.")]
ChargeOption = Annotated[str | None, typer.Option("--charge", help="The plan charge's id (see `tally prices show`).")]
MeterOption = Annotated[str | None, typer.Option("--meter", help="Or the charge's meter key…")]
PositionOption = Annotated[
    int | None, typer.Option("--position", help="…and its position in the plan, when it charges the meter twice.")
]
EffectiveOption = Annotated[
    str | None,
    typer.Option("--effective-at", help="ISO 8601 time with offset (default: now); inside the current period."),
]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why this customer pays another price (audited).")]
KeyOption = Annotated[
    str | None, typer.Option("--key", help="Idempotency key (default: a new one, printed); reuse it to retry safely.")
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Print the effect on this period; change nothing.")]


def _moment(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{value!r} is not an ISO 8601 time, e.g. 2026-12-01T00:00:00Z", field="--effective-at"
        ) from None
    if moment.tzinfo is None:
        raise InvalidInput("give a time zone offset, e.g. 2026-12-01T00:00:00Z", field="--effective-at")
    return moment


def _document(result: Any, dry_run: bool) -> dict[str, Any]:
    from ledger.money import to_major

    outcome, effect = result.outcome, result.effect
    row, currency = outcome.change, effect.currency
    return {
        "dryRun": dry_run,
        "idempotencyKey": None if dry_run else row.idempotency_key,
        "charge": {"id": str(outcome.charge.id), "meter": outcome.meter.key, "position": outcome.charge.position},
        "action": row.action,
        "effectiveAt": row.effective_at,
        "before": row.before,
        "after": row.after,
        "effect": {
            "currency": currency,
            "periodStart": effect.period_start,
            "periodEnd": effect.period_end,
            "chargeBefore": str(to_major(effect.charge_before, currency)),
            "chargeAfter": str(to_major(effect.charge_after, currency)),
            "invoiceBefore": str(to_major(effect.invoice_before, currency)),
            "invoiceAfter": str(to_major(effect.invoice_after, currency)),
        },
    }


def _terms_text(terms: dict[str, Any]) -> str:
    parts = []
    if terms.get("unit_price") is not None:
        parts.append(f"unit price {terms['unit_price']}")
    if terms.get("tiers"):
        parts.append("tiers " + "; ".join(f"{t['up_to']}: {t['unit_price']}" for t in terms["tiers"]))
    if terms.get("package_price") is not None:
        parts.append(f"package {terms['package_price']} per {terms['package_size']}")
    parts.append(f"included {terms['included']}")
    if terms.get("minimum") is not None:
        parts.append(f"minimum {terms['minimum']}")
    parts.append(f"limit {terms['limit'] if terms.get('limit') is not None else 'none'}")
    return ", ".join(parts)


def _change(
    external_id: str,
    *,
    charge: str | None,
    meter: str | None,
    position: int | None,
    fields: Any,
    effective_at: str | None,
    reason: str,
    key: str | None,
    dry_run: bool,
    as_json: bool,
    subscription: str | None = None,
) -> None:
    from billing.invoices.price_overrides import change_price_override
    from customers import service as customers
    from customers.errors import CustomerNotFound
    from customers.price_overrides import ChargeSelector, PriceOverrideRequest

    settings = load_settings()
    idempotency_key = key or f"cli-{uuid.uuid4()}"
    subscription_id = subscription_id_option(subscription)

    async def work(session: AsyncSession) -> dict[str, Any]:
        customer = await customers.get_customer(session, external_id=external_id)
        if customer is None:
            raise CustomerNotFound(field="customer")
        request = PriceOverrideRequest(
            customer_id=customer.id,
            charge=ChargeSelector(charge, meter, position),
            fields=fields() if callable(fields) else None,
            reason=reason,
            idempotency_key=idempotency_key,
            actor="cli",
            effective_at=_moment(effective_at),
            subscription_id=subscription_id,
        )
        result = await change_price_override(
            session,
            request,
            as_of=datetime.now(UTC),
            window=billing_window(settings),
            backdate_limit=timedelta(days=settings.backdate_max_days),
            dry_run=dry_run,
        )
        return _document(result, dry_run)

    document = run_in_session(settings, work, commit=not dry_run)
    if as_json:
        print_json(document)
        return
    effect = document["effect"]
    verb = "would change" if dry_run else "changed"
    typer.echo(
        f"{external_id}: {document['charge']['meter']} (position {document['charge']['position']}) {verb} from "
        f"{document['effectiveAt'].isoformat()}"
    )
    typer.echo(f"  before: {_terms_text(document['before'])}")
    typer.echo(f"  after:  {_terms_text(document['after'])}")
    typer.echo(
        f"  this period so far: charge {effect['chargeBefore']} -> {effect['chargeAfter']} {effect['currency']}, "
        f"upcoming invoice {effect['invoiceBefore']} -> {effect['invoiceAfter']} {effect['currency']}"
    )
    if dry_run:
        typer.echo("dry run: nothing was written")
    else:
        typer.echo(f"idempotency key: {document['idempotencyKey']}")


@prices_cli.command("set")
def prices_set(
    external_id: CustomerArgument,
    reason: ReasonOption,
    charge: ChargeOption = None,
    meter: MeterOption = None,
    position: PositionOption = None,
    unit_price: Annotated[str | None, typer.Option("--unit-price", help="Per-unit charges.")] = None,
    tier: Annotated[
        list[str] | None,
        typer.Option("--tier", help="UP_TO:PRICE, repeated in order; the last one inf:PRICE (graduated, volume)."),
    ] = None,
    package_size: Annotated[str | None, typer.Option("--package-size")] = None,
    package_price: Annotated[str | None, typer.Option("--package-price")] = None,
    included: Annotated[str | None, typer.Option("--included", help="The allowance taken off first.")] = None,
    minimum: Annotated[str | None, typer.Option("--minimum")] = None,
    limit: Annotated[str | None, typer.Option("--limit", help="The entitlement's limit.")] = None,
    unlimited: Annotated[bool, typer.Option("--unlimited", help="Lift the plan's limit.")] = False,
    effective_at: EffectiveOption = None,
    key: KeyOption = None,
    subscription: SubscriptionOption = None,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Give a customer their own price for one charge of their plan (audited; history kept)."""
    from ledger.money import parse_decimal
    from pricing.overrides import OverrideFields, TierInput

    def number(value: str | None, option: str) -> Any:
        return parse_decimal(value, field=option) if value is not None else None

    def fields() -> OverrideFields:
        tiers = None
        if tier:
            tiers = []
            for text in tier:
                up_to, separator, price = (part.strip() for part in text.partition(":"))
                if not separator:
                    raise InvalidInput(f"{text!r}: write UP_TO:PRICE, the last one inf:PRICE", field="--tier")
                tiers.append(TierInput(None if up_to == "inf" else number(up_to, "--tier"), number(price, "--tier")))
        return OverrideFields(
            unit_price=number(unit_price, "--unit-price"),
            tiers=tiers,
            package_size=number(package_size, "--package-size"),
            package_price=number(package_price, "--package-price"),
            included=number(included, "--included"),
            minimum=number(minimum, "--minimum"),
            limit=number(limit, "--limit"),
            unlimited=unlimited,
        )

    _change(
        external_id,
        charge=charge,
        meter=meter,
        position=position,
        fields=fields,
        effective_at=effective_at,
        reason=reason,
        key=key,
        dry_run=dry_run,
        as_json=as_json,
        subscription=subscription,
    )


@prices_cli.command("remove")
def prices_remove(
    external_id: CustomerArgument,
    reason: ReasonOption,
    charge: ChargeOption = None,
    meter: MeterOption = None,
    position: PositionOption = None,
    effective_at: EffectiveOption = None,
    key: KeyOption = None,
    subscription: SubscriptionOption = None,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Put a customer back on the plan's price for one charge (the override's history is kept)."""
    _change(
        external_id,
        charge=charge,
        meter=meter,
        position=position,
        fields=None,
        effective_at=effective_at,
        reason=reason,
        key=key,
        dry_run=dry_run,
        as_json=as_json,
        subscription=subscription,
    )


@prices_cli.command("show")
def prices_show(external_id: CustomerArgument, as_json: JsonOption = False) -> None:
    """Each charge of the customer's plan: the plan's price beside the customer's."""
    from customers import price_overrides
    from customers import service as customers
    from customers.errors import CustomerNotFound, InvalidInput
    from pricing.overrides import plan_terms
    from pricing.service import charges_of_version

    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        customer = await customers.get_customer(session, external_id=external_id)
        if customer is None:
            raise CustomerNotFound(field="customer")
        subscription = (await customers.subscriptions_of(session, [customer.id])).get(customer.id)
        if subscription is None:
            raise InvalidInput("the customer has no subscription", field="customer", code="NO_SUBSCRIPTION")
        moment = datetime.now(UTC)
        timeline = await price_overrides.overrides_of(session, subscription)
        return [
            {
                "id": str(charge.id),
                "meter": meter.key,
                "position": charge.position,
                "model": charge.model,
                "where": dict(charge.where),
                "planPrice": plan_terms(charge),
                "customerPrice": plan_terms(timeline.charge_at(charge, moment)),
                "overridden": timeline.in_effect(charge.id, moment) is not None,
                "billed": charge.billed,
            }
            for charge, meter in await charges_of_version(session, subscription.version_at(moment))
        ]

    charges = run_in_session(load_settings(), work, commit=False)
    if as_json:
        print_json({"customer": external_id, "charges": charges})
        return
    for row in charges:
        where = "".join(f" ({k} = {v})" for k, v in row["where"].items())
        billed = ", billed in advance" if row["billed"] == "in_advance" else ""
        typer.echo(f"{row['meter']}{where}, position {row['position']} ({row['model']}{billed}), charge {row['id']}")
        typer.echo(f"  plan:     {_terms_text(row['planPrice'])}")
        typer.echo(f"  customer: {_terms_text(row['customerPrice']) if row['overridden'] else 'the plan price'}")
