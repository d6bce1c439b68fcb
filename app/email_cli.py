"""`tally email …`: the email outbox from the command line: send what is due now (what
`tally serve` does every few seconds), and list messages by customer and status."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from sqlmodel.ext.asyncio.session import AsyncSession

from app.cli_support import JsonOption, err, load_settings, prepared_database, print_json, run_in_session
from notifications.models import EMAIL_STATUSES, EmailMessage

email_cli = typer.Typer(help="Emails: send what is due, list the outbox.", no_args_is_help=True)
NO_EMAIL = 2  # exit code of `send` while email is off


def _document(message: EmailMessage) -> dict[str, Any]:
    return {
        "id": str(message.id),
        "messageKey": message.message_key,
        "kind": message.kind,
        "customerId": str(message.customer_id),
        "recipients": list(message.recipients),
        "locale": message.locale,
        "status": message.status,
        "attempts": message.attempts,
        "nextAttemptAt": message.next_attempt_at if message.status in ("pending", "sending") else None,
        "lastError": message.last_error,
        "smtpMessageId": message.smtp_message_id,
        "createdAt": message.created_at,
        "sentAt": message.sent_at,
    }


@email_cli.command("send")
def send(as_json: JsonOption = False) -> None:
    """Send every email due now, as `tally serve` does; exit 2 while email is off (no TALLY_SMTP_HOST)."""
    from app.database import create_engine, session_factory
    from app.email import email_delivery, send_emails

    settings = load_settings()
    delivery = email_delivery(settings)
    if delivery is None:
        err.print("email is off: set TALLY_SMTP_HOST and TALLY_EMAIL_FROM; messages stay queued", highlight=False)
        raise typer.Exit(NO_EMAIL)
    url = prepared_database(settings)

    async def main() -> Any:
        engine = create_engine(url)
        try:
            return await send_emails(session_factory(engine), delivery, as_of=datetime.now(UTC))
        finally:
            await engine.dispose()

    report = asyncio.run(main())
    if as_json:
        print_json({"sent": report.sent, "retrying": report.retrying, "failed": report.failed, "errors": report.errors})
    else:
        typer.echo(f"{report.sent} sent, {report.retrying} to retry, {report.failed} failed")


@email_cli.command("list")
def list_messages(
    customer: Annotated[str | None, typer.Option("--customer", help="A customer's external id.")] = None,
    status: Annotated[str | None, typer.Option(help=f"One of {', '.join(EMAIL_STATUSES)}.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """The outbox's messages, newest first: status, attempts and the last error of each."""
    from app.cli_support import customer_id_of
    from notifications import service as notifications

    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        customer_id = await customer_id_of(session, customer) if customer is not None else None
        rows = await notifications.messages(session, customer_id=customer_id, status=status, limit=limit)
        return [_document(row) for row in rows]

    documents = run_in_session(load_settings(), work, commit=False)
    if as_json:
        print_json(documents)
        return
    if not documents:
        typer.echo("no emails")
    for document in documents:
        error = f"  ({document['lastError']})" if document["lastError"] else ""
        typer.echo(
            f"{document['createdAt'].isoformat()}  {document['status']:<8} {document['attempts']} tries  "
            f"{document['kind']:<16} {', '.join(document['recipients']) or '-'}  {document['messageKey']}{error}"
        )
