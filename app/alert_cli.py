"""`tally alert`: define, list and delete usage and spend alerts from the command line, through the
same services as createUsageAlert and deleteUsageAlert, with the same checks (and a dry run)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer
from sqlmodel.ext.asyncio.session import AsyncSession

from app.cli_support import JsonOption, load_settings, print_json, run_in_session
from billing.models import UsageAlert, UsageAlertFiring
from ledger.errors import InvalidInput, NotFound
from ledger.money import plain_decimal, to_major

alert_cli = typer.Typer(
    help="Usage and spend alerts: thresholds on a meter's usage or the period's running amount.",
    no_args_is_help=True,
)


def _decimal(value: str, field: str) -> Decimal:
    try:
        return Decimal(value)
    except InvalidOperation:
        raise InvalidInput(f"{value!r} is not a decimal number", field=field) from None


def _document(alert: UsageAlert, *, owner: str) -> dict[str, Any]:
    base = to_major(alert.spend_base, alert.currency) if alert.spend_base and alert.currency else None
    return {
        "id": str(alert.id),
        "name": alert.name,
        "owner": owner,
        "metric": alert.metric,
        "meterId": str(alert.meter_id) if alert.meter_id else None,
        "currency": alert.currency,
        "thresholdUnit": alert.threshold_unit,
        "thresholds": [str(plain_decimal(value)) for value in alert.thresholds],
        "spendBase": str(base) if base is not None else None,
        "deleted": alert.deleted_at is not None,
    }


def _line(document: dict[str, Any]) -> str:
    unit = "%" if document["thresholdUnit"] == "percent" else ""
    of = f" of {document['spendBase']} {document['currency']}" if document["spendBase"] else ""
    watched = "usage" if document["metric"] == "usage" else f"spend in {document['currency']}"
    thresholds = ", ".join(f"{value}{unit}" for value in document["thresholds"])
    return f"{document['id']}  {document['name']} ({document['owner']}): {watched} at {thresholds}{of}"


async def _customer_id(session: AsyncSession, external_id: str) -> uuid.UUID:
    from customers import service as customers
    from customers.errors import CustomerNotFound

    customer = await customers.get_customer(session, external_id=external_id)
    if customer is None:
        raise CustomerNotFound(field="--customer")
    return customer.id


@alert_cli.command("create")
def alert_create(
    name: Annotated[str, typer.Argument(help="1 to 100 characters, unique among the owner's alerts.")],
    thresholds: Annotated[list[str], typer.Argument(help="1 to 10 thresholds, e.g. 50 80 100.")],
    customer: Annotated[str | None, typer.Option("--customer", help="The customer's external id.")] = None,
    plan: Annotated[str | None, typer.Option("--plan", help="Or a plan key: every customer on it.")] = None,
    meter: Annotated[str | None, typer.Option("--meter", help="Watch this meter's usage.")] = None,
    currency: Annotated[str | None, typer.Option("--currency", help="Or the running amount in this currency.")] = None,
    percent: Annotated[
        bool, typer.Option("--percent", help="Thresholds are percentages (of the limit, or of --spend-base).")
    ] = False,
    spend_base: Annotated[str | None, typer.Option("--spend-base", help="Spend in percent: the amount.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check it; write nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Define an alert on a customer or a plan; the roller fires it after the roll-up that crosses it."""
    from billing.insights import alerts

    async def work(session: AsyncSession) -> dict[str, Any]:
        customer_id = await _customer_id(session, customer) if customer else None
        new = alerts.NewAlert(
            name=name,
            metric="spend" if currency else "usage",
            threshold_unit="percent" if percent else "absolute",
            thresholds=tuple(_decimal(value, "thresholds") for value in thresholds),
            customer_id=customer_id,
            plan_key=plan,
            meter_key=meter,
            currency=currency,
            spend_base=_decimal(spend_base, "--spend-base") if spend_base else None,
        )
        created = await alerts.create_alert(session, new, actor="cli", as_of=datetime.now(UTC))
        return {"dryRun": dry_run, **_document(created, owner=customer or f"plan {plan}")}

    document = run_in_session(load_settings(), work, commit=not dry_run)
    if as_json:
        print_json(document)
        return
    typer.echo(("would create " if dry_run else "created ") + _line(document))


@alert_cli.command("list")
def alert_list(
    customer: Annotated[str, typer.Argument(help="The customer's external id.")],
    as_json: JsonOption = False,
) -> None:
    """The customer's alerts (their own and their plan's) and what they fired, newest first."""
    from billing.insights import alerts

    async def work(session: AsyncSession) -> dict[str, Any]:
        customer_id = await _customer_id(session, customer)
        defined = await alerts.alerts_watching(session, customer_id)
        firings = await alerts.firings_of(session, customer_id)
        by_id = await alerts.alerts_by_id(session, list({firing.alert_id for firing in firings}))
        return {
            "alerts": [_document(alert, owner=customer if alert.customer_id else "plan") for alert in defined],
            "fired": [_fired(firing, by_id[firing.alert_id]) for firing in firings],
        }

    document = run_in_session(load_settings(), work, commit=False)
    if as_json:
        print_json(document)
        return
    for alert in document["alerts"]:
        typer.echo(_line(alert))
    if not document["alerts"]:
        typer.echo("no alerts")
    for fired in document["fired"]:
        typer.echo(f"fired {fired['firedAt']}: {fired['alertName']} at {fired['threshold']} ({fired['observed']})")


def _fired(firing: UsageAlertFiring, alert: UsageAlert) -> dict[str, Any]:
    observed: Any = plain_decimal(firing.observed)
    if alert.metric == "spend" and alert.currency:
        observed = f"{to_major(int(firing.observed), alert.currency)} {alert.currency}"
    return {
        "alertName": alert.name,
        "threshold": str(plain_decimal(firing.threshold)),
        "observed": str(observed),
        "periodStart": firing.period_start.isoformat(),
        "firedAt": firing.fired_at.isoformat(),
    }


@alert_cli.command("update")
def alert_update(
    alert_id: Annotated[str, typer.Argument(help="The alert's id (see `tally alert list`).")],
    thresholds: Annotated[
        list[str] | None, typer.Argument(help="New thresholds, e.g. 50 80 100 (omit to keep them).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="A new name.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check it; change nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Rename an alert or give it other thresholds; thresholds that fired this period stay fired."""
    from billing.insights import alerts

    async def work(session: AsyncSession) -> dict[str, Any]:
        updated = await alerts.update_alert(
            session,
            _alert_id(alert_id),
            name=name,
            thresholds=tuple(_decimal(value, "thresholds") for value in thresholds) if thresholds else None,
        )
        return {"dryRun": dry_run, **_document(updated, owner="customer" if updated.customer_id else "plan")}

    document = run_in_session(load_settings(), work, commit=not dry_run)
    if as_json:
        print_json(document)
        return
    typer.echo(("would update " if dry_run else "updated ") + _line(document))


def _alert_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound("no such alert", field="alertId") from None


@alert_cli.command("delete")
def alert_delete(
    alert_id: Annotated[str, typer.Argument(help="The alert's id (see `tally alert list`).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check it; change nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Stop an alert firing; what it fired stays."""
    from billing.insights import alerts

    async def work(session: AsyncSession) -> dict[str, Any]:
        deleted = await alerts.delete_alert(session, _alert_id(alert_id), as_of=datetime.now(UTC))
        return {"dryRun": dry_run, **_document(deleted, owner="customer" if deleted.customer_id else "plan")}

    document = run_in_session(load_settings(), work, commit=not dry_run)
    if as_json:
        print_json(document)
        return
    typer.echo(("would delete " if dry_run else "deleted ") + _line(document))
