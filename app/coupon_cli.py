"""`tally coupon`: create, list and apply coupons from the command line, through the same services
as createCoupon, coupons and applyCoupon, with the same checks (and a dry run for apply)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer
from sqlmodel.ext.asyncio.session import AsyncSession

from app.cli_support import JsonOption, load_settings, print_json, run_in_session
from billing.models import Coupon
from ledger.errors import InvalidInput

coupon_cli = typer.Typer(help="Coupons: discounts on a customer's invoices.", no_args_is_help=True)


def _decimal(value: str | None, field: str) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        raise InvalidInput(f"{value!r} is not a decimal number", field=field) from None


def _moment(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{value!r} is not an ISO 8601 time", field="--redeem-by") from None
    if moment.tzinfo is None:
        raise InvalidInput("give a time zone offset, e.g. 2026-12-31T00:00:00Z", field="--redeem-by")
    return moment


def _document(coupon: Coupon) -> dict[str, Any]:
    from billing.discounts.coupons import describe_off

    return {
        "code": coupon.code,
        "name": coupon.name,
        "off": describe_off(coupon, {}),
        "duration": coupon.duration,
        "durationPeriods": coupon.duration_periods,
        "redemptions": coupon.redemptions,
        "maxRedemptions": coupon.max_redemptions,
        "redeemBy": coupon.redeem_by,
        "active": coupon.active,
    }


def _line(document: dict[str, Any]) -> str:
    lasts = {"once": "one invoice", "forever": "forever"}.get(
        document["duration"], f"{document['durationPeriods']} invoices"
    )
    limit = f" / {document['maxRedemptions']}" if document["maxRedemptions"] else ""
    state = "" if document["active"] else ", archived"
    applied = f"applied {document['redemptions']}{limit}{state}"
    return f"{document['code']}: {document['name']}, {document['off']}, {lasts}, {applied}"


@coupon_cli.command("create")
def coupon_create(
    code: Annotated[str, typer.Argument(help="3 to 64 letters, digits, '-' or '_'; unique, ignoring case.")],
    name: Annotated[str, typer.Option("--name", help="Printed on the invoice's discount line.")],
    percent_off: Annotated[str | None, typer.Option("--percent-off", help="More than 0, at most 100.")] = None,
    amount_off: Annotated[str | None, typer.Option("--amount-off", help="Or an amount, with --currency.")] = None,
    currency: Annotated[str | None, typer.Option("--currency")] = None,
    meter: Annotated[
        list[str] | None, typer.Option("--meter", help="Discount only this meter's lines (repeatable).")
    ] = None,
    duration: Annotated[str, typer.Option("--duration", help="once, repeating or forever.")] = "once",
    periods: Annotated[int | None, typer.Option("--periods", help="repeating: how many invoices.")] = None,
    max_redemptions: Annotated[int | None, typer.Option("--max-redemptions")] = None,
    redeem_by: Annotated[str | None, typer.Option("--redeem-by", help="ISO 8601 time with offset.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a coupon."""
    from billing.discounts import coupons

    async def work(session: AsyncSession) -> dict[str, Any]:
        new = coupons.NewCoupon(
            code=code,
            name=name,
            duration=duration,
            percent_off=_decimal(percent_off, "--percent-off"),
            amount_off=_decimal(amount_off, "--amount-off"),
            currency=currency,
            applies_to=tuple(meter or ()),
            duration_periods=periods,
            max_redemptions=max_redemptions,
            redeem_by=_moment(redeem_by),
        )
        return _document(await coupons.create_coupon(session, new, actor="cli", as_of=datetime.now(UTC)))

    document = run_in_session(load_settings(), work)
    if as_json:
        print_json(document)
    else:
        typer.echo(f"created {_line(document)}")


@coupon_cli.command("list")
def coupon_list(as_json: JsonOption = False) -> None:
    """Every coupon, newest first, with how often it was applied."""
    from billing.discounts import coupons

    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        return [_document(coupon) for coupon in await coupons.coupons(session)]

    documents = run_in_session(load_settings(), work, commit=False)
    if as_json:
        print_json(documents)
        return
    for document in documents:
        typer.echo(_line(document))
    if not documents:
        typer.echo("no coupons")


@coupon_cli.command("apply")
def coupon_apply(
    external_id: Annotated[str, typer.Argument(help="The customer's external id.")],
    code: Annotated[str, typer.Argument(help="The coupon's code.")],
    key: Annotated[
        str | None, typer.Option("--key", help="Idempotency key (default: a new one, printed); reuse it to retry.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check it would apply; change nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Give a customer a coupon's discount on their next invoices."""
    from billing.discounts import coupons
    from customers import service as customers
    from customers.errors import CustomerNotFound

    idempotency_key = key or f"cli-{uuid.uuid4()}"

    async def work(session: AsyncSession) -> dict[str, Any]:
        customer = await customers.get_customer(session, external_id=external_id)
        if customer is None:
            raise CustomerNotFound(field="customer")
        discount = await coupons.apply_coupon(
            session,
            customer_id=customer.id,
            currency=customer.currency,
            code=code,
            idempotency_key=idempotency_key,
            actor="cli",
            as_of=datetime.now(UTC),
        )
        coupon = await coupons.coupon_of(session, discount.coupon_id)
        return {
            "dryRun": dry_run,
            "customer": external_id,
            "coupon": _document(coupon),
            "periods": discount.periods,
            "idempotencyKey": None if dry_run else idempotency_key,
        }

    document = run_in_session(load_settings(), work, commit=not dry_run)
    if as_json:
        print_json(document)
        return
    lasts = "every invoice" if document["periods"] is None else f"{document['periods']} invoice(s)"
    verb = "would take" if dry_run else "takes"
    typer.echo(f"{external_id} {verb} {document['coupon']['code']} ({document['coupon']['off']}) off {lasts}")
    typer.echo("dry run: nothing was written" if dry_run else f"idempotency key: {idempotency_key}")
