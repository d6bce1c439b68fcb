"""`tally credit-note create|list`: credit notes from the command line, for finance. They call the
same service as ``createCreditNote``, in one transaction, with the same refusals (a one-line
reason naming the field, exit 1, nothing written). Without ``--idempotency-key`` a new key is made
and printed: pass it again to retry safely."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
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
from billing.invoice_numbers import invoice_number, parse_invoice_number

credit_note_cli = typer.Typer(help="Credit notes: correct an issued invoice.", no_args_is_help=True)
METHODS = {"refund": "REFUND", "credit": "CREDIT", "reduce-due": "REDUCE_DUE"}


def _document(note: Any, lines: list[Any], invoice_sequence: int, *, dry_run: bool = False) -> dict[str, Any]:
    from billing.invoices.credit_notes import credit_note_number
    from ledger.money import to_major

    return {
        "number": None if dry_run else credit_note_number(note.number),
        "invoiceNumber": invoice_number(invoice_sequence),
        "amount": str(to_major(note.amount, note.currency)),
        "currency": note.currency,
        "method": note.method,
        "reason": note.reason,
        "note": note.note,
        "status": note.status,
        "issuedAt": note.issued_at,
        "lines": [
            {
                "invoiceLinePosition": line.invoice_line_position,
                "description": line.description,
                "amount": str(to_major(line.amount, note.currency)),
            }
            for line in lines
        ],
    }


def _line(value: str) -> tuple[int, str]:

    position, _, amount = value.partition("=")
    if not position.strip().isdigit() or len(position.strip()) > 9 or not amount:
        fail(f"--line: {value!r} is not POSITION=AMOUNT, e.g. 0=5.00")
    return int(position), amount


@credit_note_cli.command("create")
def credit_note_create(
    invoice: Annotated[str, typer.Argument(metavar="INVOICE", help="The invoice number, e.g. INV-000042.")],
    method: Annotated[str, typer.Option(help="refund (to the card), credit (to the balance) or reduce-due.")],
    reason: Annotated[str, typer.Option(help="duplicate, product_unsatisfactory, order_change, fraudulent, other.")],
    amount: Annotated[str | None, typer.Option(help="By amount, spread over the lines; or give --line.")] = None,
    line: Annotated[
        list[str] | None, typer.Option("--line", help="POSITION=AMOUNT of one invoice line (repeatable).")
    ] = None,
    note: Annotated[str | None, typer.Option(help="Free text, shown on the credit note.")] = None,
    idempotency_key: KeyOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the note and write nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Credit an issued invoice, in full or in part, by amount or per line."""
    from billing.invoices.credit_notes import CreditNoteRequest, LineCredit, create_credit_note
    from billing.invoices.repository import invoice_by_number
    from ledger.errors import NotFound

    if method not in METHODS:
        fail(f"--method: must be one of {', '.join(METHODS)}")
    number = parse_invoice_number(invoice)
    if number is None:
        fail(f"INVOICE: {invoice!r} is not an invoice number, e.g. INV-000042")
    key = idempotency_key or f"cli-{uuid.uuid4()}"
    lines = tuple(LineCredit(position, decimal_option(value, "--line")) for position, value in map(_line, line or []))
    parsed = decimal_option(amount, "--amount") if amount is not None else None

    async def work(session: AsyncSession) -> dict[str, Any]:
        found = await invoice_by_number(session, number)
        if found is None:
            raise NotFound("no such invoice", field="INVOICE")
        request = CreditNoteRequest(
            invoice_id=found.id,
            method=METHODS[method],
            reason=reason,
            idempotency_key=key,
            actor=ACTOR,
            note=note,
            amount=parsed,
            lines=lines,
        )
        outcome = await create_credit_note(session, request, as_of=datetime.now(UTC), dry_run=dry_run)
        return _document(outcome.note, outcome.lines, found.number, dry_run=outcome.dry_run)

    document = run_in_session(load_settings(), work, commit=not dry_run)
    if as_json:
        print_json({**document, "dryRun": dry_run, "idempotencyKey": key})
        return
    money = f"{document['amount']} {document['currency']}"
    if dry_run:
        typer.echo(f"would credit {money} on {document['invoiceNumber']} ({method}); nothing written")
    else:
        typer.echo(f"{document['number']}: {money} credited on {document['invoiceNumber']} ({method}); key {key}")


@credit_note_cli.command("list")
def credit_note_list(
    external_id: Annotated[str, typer.Argument(metavar="EXTERNAL_ID", help="The customer's external id.")],
    as_json: JsonOption = False,
) -> None:
    """A customer's credit notes, newest first."""
    from billing.invoices import credit_notes_repository
    from billing.invoices.credit_notes import credit_notes
    from billing.invoices.repository import invoices_by_id

    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        customer_id = await customer_id_of(session, external_id)
        rows = await credit_notes(session, customer_id, limit=1000)
        lines = await credit_notes_repository.lines_of_notes(session, [row.id for row in rows])
        invoices = await invoices_by_id(session, [row.invoice_id for row in rows])
        return [_document(row, lines[row.id], invoices[row.invoice_id].number) for row in rows]

    documents = run_in_session(load_settings(), work, commit=False)
    if as_json:
        print_json(documents)
        return
    if not documents:
        typer.echo(f"{external_id} has no credit notes")
    for document in documents:
        typer.echo(
            f"{document['number']}  {document['invoiceNumber']}  {document['amount']} {document['currency']}  "
            f"{document['method']}  {document['reason']}  {document['status']}"
        )
