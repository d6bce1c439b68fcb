"""`tally charge …` and `tally commitment …`: one-off charges, prepaid commitments and minimum
spend from the command line, for operators and finance scripts. They call the same services as
the GraphQL mutations, in one transaction each, with the same refusals (a one-line reason, exit 1).

Every write takes an idempotency key. Without ``--idempotency-key`` a new one is made and
printed: pass it again to retry safely (a retry with a new key charges again)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from sqlmodel.ext.asyncio.session import AsyncSession

from app.cli_support import (
    ACTOR,
    JsonOption,
    KeyOption,
    customer_id_of,
    decimal_option,
    fail,
    load_settings,
    print_json,
    run_in_session,
)
from app.subscription_cli import SubscriptionOption, subscription_id_option
from billing.invoice_numbers import invoice_number

charge_cli = typer.Typer(help="One-off charges: now, or on the customer's next invoice.", no_args_is_help=True)
commitment_cli = typer.Typer(help="Prepaid commitments and minimum spend.", no_args_is_help=True)


def _moment(value: str | None, option: str) -> datetime | None:

    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option}: {value!r} is not an ISO 8601 time, e.g. 2027-01-01T00:00:00Z")
    if moment.tzinfo is None:
        fail(f"{option}: give a time zone offset, e.g. 2027-01-01T00:00:00Z")
    return moment.astimezone(UTC)


def _major(minor: int | None, currency: str) -> str | None:
    from ledger.money import to_major

    return None if minor is None else str(to_major(minor, currency))


def _charge_document(charge: Any, invoice: Any = None, credits: int | None = None, due: int | None = None) -> dict:
    return {
        "chargeId": str(charge.id),
        "description": charge.description,
        "quantity": str(charge.quantity),
        "unitPrice": str(charge.unit_price),
        "amount": _major(charge.amount, charge.currency),
        "currency": charge.currency,
        "when": charge.timing.upper(),
        "status": charge.status,
        "invoiceNumber": invoice_number(invoice.number) if invoice is not None else None,
        "creditsApplied": _major(credits, charge.currency),
        "amountDue": _major(due, charge.currency),
        "idempotencyKey": charge.idempotency_key or None,
        "createdAt": charge.created_at,
    }


@charge_cli.command("create")
def charge_create(
    external_id: Annotated[str, typer.Argument(metavar="EXTERNAL_ID", help="The customer's external id.")],
    description: Annotated[str, typer.Option(help="What the invoice line says.")],
    unit_price: Annotated[str, typer.Option("--unit-price", help="Per unit, in the customer's currency.")],
    quantity: Annotated[str, typer.Option(help="How many units.")] = "1",
    now: Annotated[
        bool, typer.Option("--now", help="Invoice it at once on its own invoice (default: the next invoice).")
    ] = False,
    currency: Annotated[str | None, typer.Option(help="Checked against the customer's (default: theirs).")] = None,
    idempotency_key: KeyOption = None,
    subscription: SubscriptionOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the amounts and write nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Charge a customer a one-off fee: on their next invoice (of `--subscription` when they have
    several), or `--now` on its own invoice."""
    from billing.invoices.one_off import OneOffChargeRequest, create_one_off_charge
    from customers import service as customers

    key = idempotency_key or f"cli-{uuid.uuid4()}"
    price, count = decimal_option(unit_price, "--unit-price"), decimal_option(quantity, "--quantity")
    subscription_id = subscription_id_option(subscription)

    async def work(session: AsyncSession) -> Any:
        customer_id = await customer_id_of(session, external_id)
        found = await customers.get_customer(session, customer_id=customer_id)
        assert found is not None
        request = OneOffChargeRequest(
            customer_id=customer_id,
            description=description,
            quantity=count,
            unit_price=price,
            currency=currency or found.currency,
            timing="now" if now else "next_invoice",
            idempotency_key=key,
            actor=ACTOR,
            subscription_id=subscription_id,
        )
        outcome = await create_one_off_charge(session, request, as_of=datetime.now(UTC), dry_run=dry_run)
        return _charge_document(outcome.charge, outcome.invoice, outcome.credits_applied, outcome.amount_due)

    document = run_in_session(load_settings(), work, commit=not dry_run)
    if dry_run:
        document["chargeId"] = None
    if as_json:
        print_json({**document, "dryRun": dry_run})
        return
    money = f"{document['amount']} {document['currency']}"
    if dry_run:
        due = f", {document['amountDue']} due after credits" if document["amountDue"] is not None else ""
        typer.echo(f"would charge {external_id} {money}{due}; nothing written")
    elif document["invoiceNumber"]:
        typer.echo(
            f"charged {external_id} {money} on invoice {document['invoiceNumber']} "
            f"({document['amountDue']} due after credits); key {key}"
        )
    else:
        typer.echo(f"charge {document['chargeId']}: {money} on {external_id}'s next invoice; key {key}")


@charge_cli.command("list")
def charge_list(
    external_id: Annotated[str, typer.Argument(metavar="EXTERNAL_ID", help="The customer's external id.")],
    status: Annotated[str | None, typer.Option(help="pending, invoiced or canceled (default: all).")] = None,
    as_json: JsonOption = False,
) -> None:
    """A customer's one-off charges, newest first."""
    from billing.invoices.one_off import one_off_charges
    from billing.invoices.repository import invoices_by_id
    from billing.models import ONE_OFF_STATUSES

    if status is not None and status not in ONE_OFF_STATUSES:
        fail(f"--status: must be one of {', '.join(ONE_OFF_STATUSES)}")

    async def work(session: AsyncSession) -> list[dict]:
        customer_id = await customer_id_of(session, external_id)
        rows = await one_off_charges(session, customer_id, statuses=[status] if status else None, limit=1000)
        invoices = await invoices_by_id(session, [row.invoice_id for row in rows if row.invoice_id])
        return [_charge_document(row, invoices.get(row.invoice_id) if row.invoice_id else None) for row in rows]

    documents = run_in_session(load_settings(), work, commit=False)
    if as_json:
        print_json(documents)
        return
    for d in documents:
        invoice = f" {d['invoiceNumber']}" if d["invoiceNumber"] else ""
        typer.echo(f"{d['chargeId']}  {d['status']:<8} {d['amount']} {d['currency']}  {d['description']}{invoice}")
    if not documents:
        typer.echo("no one-off charges")


@charge_cli.command("cancel")
def charge_cancel(
    charge_id: Annotated[str, typer.Argument(metavar="CHARGE_ID", help="The pending charge's id.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit.")],
    idempotency_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a pending one-off charge before an invoice bills it."""
    from billing.invoices.one_off import cancel_one_off_charge

    try:
        parsed = uuid.UUID(charge_id)
    except ValueError:
        fail(f"CHARGE_ID: {charge_id!r} is not a charge id")
    key = idempotency_key or f"cli-{uuid.uuid4()}"

    async def work(session: AsyncSession) -> dict:
        row = await cancel_one_off_charge(
            session, charge_id=parsed, reason=reason, actor=ACTOR, idempotency_key=key, as_of=datetime.now(UTC)
        )
        return _charge_document(row)

    document = run_in_session(load_settings(), work)
    if as_json:
        print_json(document)
    else:
        typer.echo(f"canceled {document['chargeId']} ({document['amount']} {document['currency']})")


@commitment_cli.command("create")
def commitment_create(
    external_id: Annotated[str, typer.Argument(metavar="EXTERNAL_ID", help="The customer's external id.")],
    amount: Annotated[str, typer.Option(help="Invoiced now and granted as credits, in major units.")],
    ends_at: Annotated[str, typer.Option("--ends-at", help="ISO 8601; what is left then expires.")],
    starts_at: Annotated[str | None, typer.Option("--starts-at", help="ISO 8601 (default: now).")] = None,
    priority: Annotated[int | None, typer.Option(help="Lower is drawn first (default 100).")] = None,
    idempotency_key: KeyOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check it and write nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Invoice a prepaid commitment now and grant it as credits until --ends-at."""
    from billing.invoices.commitments import CommitmentRequest, create_prepaid_commitment
    from customers import service as customers

    settings = load_settings()
    key = idempotency_key or f"cli-{uuid.uuid4()}"
    total = decimal_option(amount, "--amount")
    ends, starts = _moment(ends_at, "--ends-at"), _moment(starts_at, "--starts-at")
    assert ends is not None

    async def work(session: AsyncSession) -> dict:
        customer_id = await customer_id_of(session, external_id)
        found = await customers.get_customer(session, customer_id=customer_id)
        assert found is not None
        request = CommitmentRequest(
            customer_id=customer_id,
            amount=total,
            currency=found.currency,
            starts_at=starts,
            ends_at=ends,
            priority=priority,
            idempotency_key=key,
            actor=ACTOR,
        )
        outcome = await create_prepaid_commitment(
            session,
            request,
            as_of=datetime.now(UTC),
            backdate_limit=timedelta(days=settings.backdate_max_days),
            dry_run=dry_run,
        )
        row = outcome.commitment
        return {
            "commitmentId": None if dry_run else str(row.id),
            "amount": _major(row.amount, row.currency),
            "currency": row.currency,
            "startsAt": row.starts_at,
            "endsAt": row.ends_at,
            "priority": row.priority,
            "invoiceNumber": invoice_number(outcome.invoice.number) if outcome.invoice else None,
            "idempotencyKey": key,
            "dryRun": dry_run,
        }

    document = run_in_session(settings, work, commit=not dry_run)
    if as_json:
        print_json(document)
    elif dry_run:
        typer.echo(f"would invoice {external_id} {document['amount']} {document['currency']}; nothing written")
    else:
        typer.echo(
            f"commitment {document['commitmentId']}: {document['amount']} {document['currency']} invoiced on "
            f"{document['invoiceNumber']}, credits until {document['endsAt'].isoformat()}; key {key}"
        )


@commitment_cli.command("minimum-spend")
def commitment_minimum_spend(
    external_id: Annotated[str, typer.Argument(metavar="EXTERNAL_ID", help="The customer's external id.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit.")],
    amount: Annotated[
        str | None, typer.Option(help="Per billing period; leave out to go back to the plan's minimum.")
    ] = None,
    effective_at: Annotated[str | None, typer.Option("--effective-at", help="ISO 8601 (default: now).")] = None,
    idempotency_key: KeyOption = None,
    subscription: SubscriptionOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give the customer's subscription (`--subscription` when they have several) its own minimum
    spend per period (versioned, audited)."""
    from billing.invoices.commitments import MinimumSpendRequest, set_minimum_spend
    from ledger.money import quantize_major

    key = idempotency_key or f"cli-{uuid.uuid4()}"
    minimum = decimal_option(amount, "--amount") if amount is not None else None
    moment = _moment(effective_at, "--effective-at")
    subscription_id = subscription_id_option(subscription)

    async def work(session: AsyncSession) -> dict:
        request = MinimumSpendRequest(
            customer_id=await customer_id_of(session, external_id),
            amount=minimum,
            effective_at=moment,
            reason=reason,
            idempotency_key=key,
            actor=ACTOR,
            subscription_id=subscription_id,
        )
        row = await set_minimum_spend(session, request, as_of=datetime.now(UTC))
        return {
            "id": str(row.id),
            "amount": str(quantize_major(row.amount, row.currency)) if row.amount is not None else None,
            "currency": row.currency,
            "effectiveAt": row.effective_at,
            "idempotencyKey": key,
        }

    document = run_in_session(load_settings(), work)
    if as_json:
        print_json(document)
    else:
        what = f"{document['amount']} {document['currency']}" if document["amount"] else "the plan's minimum"
        typer.echo(f"minimum spend of {external_id}: {what} per period from {document['effectiveAt'].isoformat()}")
