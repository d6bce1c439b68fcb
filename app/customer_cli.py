"""`tally customer update`: a customer's name, email and billing details from the command line,
through the same service as updateCustomer, with the same checks, history and dry run."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

import typer
from sqlmodel.ext.asyncio.session import AsyncSession

from app.cli_support import fail, load_settings, print_json, run_in_session
from ledger.errors import InvalidFields, InvalidInput

customer_cli = typer.Typer(help="Customers: their name, email and billing details.", no_args_is_help=True)

# Each option, by the field of updateCustomer it sets (refusals name the option).
OPTIONS = {
    "name": "--name",
    "email": "--email",
    "legal_name": "--legal-name",
    "address_line1": "--line1",
    "address_line2": "--line2",
    "city": "--city",
    "postal_code": "--postal-code",
    "region": "--region",
    "country": "--country",
    "tax_id": "--tax-id",
    "tax_exemption": "--tax-exemption",
    "invoice_emails": "--invoice-email",
    "locale": "--locale",
}
CLEARABLE = frozenset(OPTIONS) - {"name", "tax_exemption", "locale"}
INVOICE_EMAIL_POSITION = re.compile(r"^invoiceEmails\[(\d+)\]$")


def _option_of(field: str | None) -> str | None:
    """The option a refusal is about, for a refusal naming updateCustomer's field."""
    from customers.billing_detail_changes import API_FIELDS

    position = INVOICE_EMAIL_POSITION.match(field or "")
    if position:
        return f"--invoice-email #{int(position.group(1)) + 1}"
    by_api = {api: OPTIONS[name] for name, api in API_FIELDS.items()}
    return by_api.get(field or "", field)


@customer_cli.command("update")
def customer_update(
    external_id: Annotated[str, typer.Argument(help="The customer's external id.")],
    name: Annotated[str | None, typer.Option("--name", help="The customer's name (not empty).")] = None,
    email: Annotated[str | None, typer.Option("--email", help="The customer's email.")] = None,
    legal_name: Annotated[
        str | None, typer.Option("--legal-name", help="The registered name invoices are addressed to.")
    ] = None,
    line1: Annotated[str | None, typer.Option("--line1", help="Address, first line.")] = None,
    line2: Annotated[str | None, typer.Option("--line2", help="Address, second line.")] = None,
    city: Annotated[str | None, typer.Option("--city")] = None,
    postal_code: Annotated[str | None, typer.Option("--postal-code")] = None,
    region: Annotated[str | None, typer.Option("--region", help="State or province.")] = None,
    country: Annotated[str | None, typer.Option("--country", help="ISO 3166-1 alpha-2, e.g. FR.")] = None,
    tax_id: Annotated[
        str | None, typer.Option("--tax-id", help="Spaces removed; an EU VAT number starts with its country's code.")
    ] = None,
    tax_exemption: Annotated[
        str | None, typer.Option("--tax-exemption", help="none, exempt or reverse_charge (needs a tax id).")
    ] = None,
    invoice_email: Annotated[
        list[str] | None,
        typer.Option("--invoice-email", help="Where invoices are sent; repeat for several (at most 10)."),
    ] = None,
    locale: Annotated[str | None, typer.Option("--locale", help="en, fr, de or es.")] = None,
    clear: Annotated[
        list[str] | None,
        typer.Option(
            "--clear",
            help="Clear a field; repeatable: email, legal-name, line1, line2, city, postal-code, region, country, "
            "tax-id, invoice-emails.",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Change a customer's name, email or billing details. Only the options given change; each
    change is kept in the customer's history (actor "cli")."""
    from customers import service as customers
    from customers.billing_detail_changes import API_FIELDS, BillingDetailsPatch, update_billing_details
    from customers.errors import CustomerNotFound

    given: dict[str, Any] = {
        "name": name,
        "email": email,
        "legal_name": legal_name,
        "address_line1": line1,
        "address_line2": line2,
        "city": city,
        "postal_code": postal_code,
        "region": region,
        "country": country,
        "tax_id": tax_id,
        "tax_exemption": tax_exemption,
        "invoice_emails": invoice_email or None,
        "locale": locale,
    }
    values = {field: value for field, value in given.items() if value is not None}
    for option in clear or []:
        field = option.strip().lstrip("-").replace("-", "_")
        field = {"line1": "address_line1", "line2": "address_line2"}.get(field, field)
        if field not in CLEARABLE:
            raise_refusal(InvalidInput(f"{option!r} cannot be cleared", field="--clear"))
        if field in values:
            raise_refusal(InvalidInput(f"both {OPTIONS[field]} and --clear {option}", field="--clear"))
        values[field] = None
    patch = BillingDetailsPatch(**values)

    async def work(session: AsyncSession) -> dict[str, Any]:
        customer = await customers.get_customer(session, external_id=external_id)
        if customer is None:
            raise CustomerNotFound(field="customer")
        try:
            outcome = await update_billing_details(
                session, customer.id, patch, actor="cli", as_of=datetime.now(UTC), dry_run=dry_run
            )
        except InvalidFields as refused:
            raise InvalidInput(
                "; ".join(f"{_option_of(error.field)}: {error.message}" for error in refused.errors)
            ) from None
        return {
            "customer": external_id,
            "dryRun": dry_run,
            "sequence": outcome.change.id if outcome.change else None,
            "changed": [API_FIELDS[field] for field in outcome.changed],
            "before": {API_FIELDS[k]: v for k, v in outcome.before.as_json(outcome.changed).items()},
            "after": {API_FIELDS[k]: v for k, v in outcome.after.as_json(outcome.changed).items()},
            "billingDetails": {API_FIELDS[k]: v for k, v in outcome.after.as_json(tuple(API_FIELDS)).items()},
        }

    document = run_in_session(load_settings(), work, commit=not dry_run)
    if as_json:
        print_json(document)
        return
    if not document["changed"]:
        typer.echo(f"{external_id}: nothing to change")
        return
    verb = "would change" if dry_run else "changed"
    typer.echo(f"{external_id}: {verb} {', '.join(document['changed'])}")
    for field in document["changed"]:
        typer.echo(f"  {field}: {_shown(document['before'][field])} -> {_shown(document['after'][field])}")
    if dry_run:
        typer.echo("dry run: nothing was written")


def _shown(value: Any) -> str:
    if value is None or value == []:
        return "(none)"
    return ", ".join(value) if isinstance(value, list) else str(value)


def raise_refusal(error: InvalidInput) -> NoReturn:

    fail(f"{error.field}: {error.message}")
