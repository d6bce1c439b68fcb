"""What every `tally` command shares: its settings, a session per command (committed if the work
returns), a refusal as one line and exit code 1, stable JSON, and ``--as-of`` times. The commands'
modules import it, and ``app.cli`` assembles them, so none of them imports ``app.cli``."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from sqlmodel.ext.asyncio.session import AsyncSession

from app.database import create_engine, database_url, libpq_url, migrate, session_factory
from app.settings import Settings
from app.telemetry import configure_tracing
from billing.invoices.taxation import use_tax_policy
from ledger.errors import TallyError
from pricing.errors import CatalogInvalid

T = TypeVar("T")

err = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
KeyOption = Annotated[
    str | None,
    typer.Option("--idempotency-key", help="Retry-safe key (default: a new one, printed; reuse it to retry)."),
]
ACTOR = "cli"  # who the audit trail says acted, for writes from the command line


def fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def load_settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as error:
        fail("; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in error.errors()))
    use_tax_policy(settings.tax_policy)
    return settings


def prepared_database(settings: Settings) -> str:
    """The database URL, with the schema brought up to date."""
    url = database_url(settings)
    migrate(url)
    return url


def traced_database(settings: Settings) -> str:
    """``prepared_database`` for a command doing a server's background work: its spans are kept as
    the server's would be (and flushed when the command exits), so the Traces page shows them."""
    url = prepared_database(settings)
    configure_tracing(settings, libpq_url(url))
    return url


def run_in_session(
    settings: Settings, work: Callable[[AsyncSession], Awaitable[T]], *, commit: bool = True, traced: bool = False
) -> T:
    """Run ``work`` in one transaction: committed if it returns, rolled back if it raises."""
    url = traced_database(settings) if traced else prepared_database(settings)

    async def main() -> T:
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as session:
                result = await work(session)
                if commit:
                    await session.commit()
                return result
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except CatalogInvalid:
        raise  # `catalog apply` lists each problem itself
    except TallyError as error:
        fail(f"{error.field}: {error.message}" if error.field else error.message)


def now() -> datetime:
    return datetime.now(UTC)


def parse_as_of(value: str | None) -> datetime:
    """The ``--as-of`` option: an ISO 8601 time with its offset, or now."""
    if value is None:
        return now()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--as-of: {value!r} is not an ISO 8601 time, e.g. 2026-12-01T00:00:00Z")
    if moment.tzinfo is None:
        fail("--as-of: give a time zone offset, e.g. 2026-12-01T00:00:00Z")
    return moment.astimezone(UTC)


def print_json(value: Any) -> None:
    """Stable JSON for scripts: times in ISO 8601 (with the "T"), anything else as its text."""
    typer.echo(json.dumps(value, indent=2, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)))


def bind_refusal(host: str, port: int) -> OSError | None:
    """Why listening on ``host:port`` would fail now (checked by binding it as uvicorn will, with
    SO_REUSEADDR), before migrations and the embedded database start; None when it would not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        return None  # a host that does not resolve: uvicorn says so itself
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            return error
    return None


def decimal_option(value: str, option: str) -> Decimal:
    """A decimal option's value, or a refusal naming the option."""
    try:
        parsed = Decimal(value.strip())
    except InvalidOperation:
        fail(f"{option}: {value!r} is not a decimal number")
    if not parsed.is_finite():
        fail(f"{option}: {value!r} is not a finite decimal number")
    return parsed


async def customer_id_of(session: AsyncSession, external_id: str) -> uuid.UUID:
    from customers import service as customers
    from customers.errors import CustomerNotFound

    found = await customers.get_customer(session, external_id=external_id)
    if found is None:
        raise CustomerNotFound(field="EXTERNAL_ID")
    return found.id
