"""`tally credits`: buy credits for a customer and set their low-balance alert and auto-recharge,
grant credits and void a grant, through the same services as purchaseCredits,
setCreditBalanceSettings, grantCredits and voidCreditGrant, with the same checks and the same
audit log (actor "cli"), and a dry run for each money movement."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer
from sqlmodel.ext.asyncio.session import AsyncSession

from app.cli_support import JsonOption, load_settings, print_json, run_in_session
from ledger.errors import InvalidInput
from ledger.money import to_major

topup_cli = typer.Typer(help="Credits: grants, voids, paid top-ups and auto-recharge.", no_args_is_help=True)


def _decimal(value: str | None, field: str) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        raise InvalidInput(f"{value!r} is not a decimal number", field=field) from None


async def _customer(session: AsyncSession, external_id: str) -> Any:
    from customers import service as customers
    from customers.errors import CustomerNotFound

    customer = await customers.get_customer(session, external_id=external_id)
    if customer is None:
        raise CustomerNotFound(field="customer")
    return customer


@topup_cli.command("buy")
def credits_buy(
    external_id: Annotated[str, typer.Argument(help="The customer's external id.")],
    amount: Annotated[str, typer.Argument(help="In the customer's currency, e.g. 25.00.")],
    priority: Annotated[int | None, typer.Option("--priority", help="Of the credits: lower is drawn first.")] = None,
    expires_in_days: Annotated[
        int | None, typer.Option("--expires-in-days", help="The credits expire this long after payment.")
    ] = None,
    key: Annotated[
        str | None, typer.Option("--key", help="Idempotency key (default: a new one, printed); reuse it to retry.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check it; write nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Invoice a purchase of credits, granted when the invoice is paid."""
    from billing.credits import topups

    idempotency_key = key or f"cli-{uuid.uuid4()}"

    async def work(session: AsyncSession) -> dict[str, Any]:
        customer = await _customer(session, external_id)
        outcome = await topups.purchase_credits(
            session,
            topups.PurchaseRequest(
                customer_id=customer.id,
                amount=_decimal(amount, "amount") or Decimal(0),
                currency=customer.currency,
                idempotency_key=idempotency_key,
                actor="cli",
                priority=priority,
                expires_in_days=expires_in_days,
            ),
            as_of=datetime.now(UTC),
            dry_run=dry_run,
        )
        purchase = outcome.purchase
        return {
            "dryRun": dry_run,
            "customer": external_id,
            "amount": str(to_major(purchase.amount, purchase.currency)),
            "currency": purchase.currency,
            "status": purchase.status,
            "invoiceNumber": outcome.invoice.number if outcome.invoice else None,
            "idempotencyKey": None if dry_run else idempotency_key,
        }

    document = run_in_session(load_settings(), work, commit=not dry_run)
    if as_json:
        print_json(document)
        return
    what = f"{document['amount']} {document['currency']} of credits for {external_id}"
    if dry_run:
        typer.echo(f"would invoice {what}; dry run: nothing was written")
        return
    typer.echo(f"invoiced {what} (invoice {document['invoiceNumber']}), granted when paid")
    typer.echo(f"idempotency key: {idempotency_key}")


@topup_cli.command("auto-recharge")
def credits_auto_recharge(
    external_id: Annotated[str, typer.Argument(help="The customer's external id.")],
    enabled: Annotated[bool, typer.Option("--enable/--disable", help="Turn auto-recharge on or off.")] = True,
    threshold: Annotated[str | None, typer.Option("--threshold", help="Recharge below this balance.")] = None,
    amount: Annotated[str | None, typer.Option("--amount", help="What each recharge buys.")] = None,
    monthly_cap: Annotated[str | None, typer.Option("--monthly-cap", help="The most bought a month.")] = None,
    priority: Annotated[int | None, typer.Option("--priority")] = None,
    expires_in_days: Annotated[int | None, typer.Option("--expires-in-days")] = None,
    low_balance: Annotated[
        str | None, typer.Option("--low-balance", help="credits.balance_low below this (default: the threshold).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Set a customer's low-balance alert and auto-recharge; the balance is checked at once."""
    from billing.credits import balance as credit_balance

    async def work(session: AsyncSession) -> dict[str, Any]:
        customer = await _customer(session, external_id)
        settings, check = await credit_balance.set_balance_settings(
            session,
            credit_balance.BalanceSettingsRequest(
                customer_id=customer.id,
                currency=customer.currency,
                actor="cli",
                low_balance_threshold=_decimal(low_balance, "--low-balance"),
                recharge_enabled=enabled,
                recharge_threshold=_decimal(threshold, "--threshold"),
                recharge_amount=_decimal(amount, "--amount"),
                recharge_monthly_cap=_decimal(monthly_cap, "--monthly-cap"),
                recharge_priority=priority,
                recharge_expires_in_days=expires_in_days,
            ),
            as_of=datetime.now(UTC),
        )
        return {
            "customer": external_id,
            "autoRecharge": settings.recharge_enabled,
            "balance": str(to_major(check.balance, customer.currency)) if check else None,
            "balanceLow": settings.balance_low,
            "rechargeBought": str(to_major(check.recharge.amount, customer.currency))
            if check and check.recharge
            else None,
        }

    document = run_in_session(load_settings(), work)
    if as_json:
        print_json(document)
        return
    state = "on" if document["autoRecharge"] else "off"
    typer.echo(f"{external_id}: auto-recharge {state}, credits {document['balance']}")
    if document["balanceLow"]:
        typer.echo("the balance is below the low-balance threshold (credits.balance_low sent)")
    if document["rechargeBought"]:
        typer.echo(f"a recharge of {document['rechargeBought']} was invoiced")


@topup_cli.command("spend-cap")
def credits_spend_cap(
    external_id: Annotated[str, typer.Argument(help="The customer's external id.")],
    amount: Annotated[
        str | None, typer.Argument(help="The most a billing period may charge beyond the credits; omit with --none.")
    ] = None,
    none: Annotated[bool, typer.Option("--none", help="Remove the cap: spend is held within the credits.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Set the customer's spend cap, within which `POST /v1/customers/{id}/authorizations` holds
    money (with an `amount`); without a cap, money is held only within the credits."""
    from billing.credits import spend_authorizations

    if (amount is None) == (not none):
        raise typer.BadParameter("give an amount, or --none to remove the cap")

    async def work(session: AsyncSession) -> dict[str, Any]:
        customer = await _customer(session, external_id)
        cap = await spend_authorizations.set_spend_cap(
            session,
            customer.id,
            customer.currency,
            _decimal(amount, "amount"),
            actor="cli",
            as_of=datetime.now(UTC),
        )
        return {
            "customer": external_id,
            "currency": customer.currency,
            "spendCap": str(to_major(cap, customer.currency)) if cap is not None else None,
        }

    document = run_in_session(load_settings(), work)
    if as_json:
        print_json(document)
        return
    if document["spendCap"] is None:
        typer.echo(f"{external_id}: no spend cap (money is held within the credits)")
    else:
        typer.echo(f"{external_id}: spend cap {document['spendCap']} {document['currency']} a billing period")


@topup_cli.command("grant")
def credits_grant(
    external_id: Annotated[str, typer.Argument(help="The customer's external id.")],
    amount: Annotated[str, typer.Argument(help="In the customer's currency, e.g. 25.00.")],
    reason: Annotated[str, typer.Option("--reason", help="Why: kept in the ledger and the audit log.")],
    priority: Annotated[int, typer.Option("--priority", help="Lower is drawn first.")] = 100,
    key: Annotated[
        str | None, typer.Option("--key", help="Idempotency key (default: a new one, printed); reuse it to retry.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check it; write nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Grant credits, checked and audited as grantCredits is (the operator has no grant limit)."""
    from customers import credits
    from ledger.money import to_minor_exact

    idempotency_key = key or f"cli-{uuid.uuid4()}"

    async def work(session: AsyncSession) -> dict[str, Any]:
        customer = await _customer(session, external_id)
        grant = await credits.grant_credits(
            session,
            customer_id=customer.id,
            currency=customer.currency,
            amount=to_minor_exact(_decimal(amount, "amount") or Decimal(0), customer.currency),
            reason=reason,
            actor="cli",
            idempotency_key=idempotency_key,
            as_of=datetime.now(UTC),
            priority=priority,
        )
        return {
            "dryRun": dry_run,
            "grantId": str(grant.id),
            "customer": external_id,
            "amount": str(to_major(grant.amount, grant.currency)),
            "currency": grant.currency,
            "idempotencyKey": None if dry_run else idempotency_key,
        }

    document = run_in_session(load_settings(), work, commit=not dry_run)
    if as_json:
        print_json(document)
        return
    what = f"{document['amount']} {document['currency']} of credits to {external_id}"
    if dry_run:
        typer.echo(f"would grant {what}; dry run: nothing was written")
        return
    typer.echo(f"granted {what} (grant {document['grantId']})")
    typer.echo(f"idempotency key: {idempotency_key}")


@topup_cli.command("void")
def credits_void(
    grant_id: Annotated[str, typer.Argument(help="The grant's id (`tally credits grant` prints it).")],
    reason: Annotated[str, typer.Option("--reason", help="Why: kept in the ledger and the audit log.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be taken back; write nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Void what remains of a grant, as voidCreditGrant does (what was used stays used)."""
    from customers import credits
    from ledger.errors import NotFound

    async def work(session: AsyncSession) -> dict[str, Any]:
        try:
            parsed = uuid.UUID(grant_id)
        except ValueError:
            raise NotFound("no such credit grant", field="grantId") from None
        outcome = await credits.void_grant(
            session,
            grant_id=parsed,
            reason=reason,
            actor="cli",
            idempotency_key=f"cli-void-{parsed}",
            as_of=datetime.now(UTC),
        )
        return {
            "dryRun": dry_run,
            "grantId": grant_id,
            "voided": str(to_major(outcome.voided, outcome.grant.currency)),
            "currency": outcome.grant.currency,
        }

    document = run_in_session(load_settings(), work, commit=not dry_run)
    if as_json:
        print_json(document)
        return
    verb = "would take back" if dry_run else "took back"
    typer.echo(f"{verb} {document['voided']} {document['currency']} of grant {grant_id}")
