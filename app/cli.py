"""The `tally` command line. Every command reads the same settings and exits non-zero with a
one-line reason on bad input; `--json` gives scripts a stable shape."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sys
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from opentelemetry.instrumentation.utils import suppress_instrumentation
from rich.console import Console
from rich.progress import Progress
from sqlmodel.ext.asyncio.session import AsyncSession

from app import auth
from app.alert_cli import alert_cli
from app.charges_cli import charge_cli, commitment_cli
from app.cli_support import (
    JsonOption,
    bind_refusal,
    err,
    fail,
    load_settings,
    now,
    parse_as_of,
    prepared_database,
    print_json,
    run_in_session,
    traced_database,
)
from app.coupon_cli import coupon_cli
from app.credit_note_cli import credit_note_cli
from app.customer_cli import customer_cli
from app.database import create_engine, latest_revision, session_factory
from app.email_cli import email_cli
from app.interim_cli import interim_cli
from app.nats_cli import consume, nats_cli
from app.price_override_cli import prices_cli
from app.subscription_cli import SubscriptionOption, subscription_cli, subscription_id_option
from app.tax_cli import tax_cli
from app.topup_cli import topup_cli
from app.user_cli import user_cli
from app.webhook_cli import webhook_cli
from billing.invoice_numbers import invoice_number
from pricing.errors import CatalogInvalid
from pricing.service import apply_catalog

cli = typer.Typer(
    help="Tally: usage-based billing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
token_cli = typer.Typer(help="API tokens: create, list, revoke.", no_args_is_help=True)
catalog_cli = typer.Typer(help="Meters and plans, declared in a TOML file.", no_args_is_help=True)
cli.add_typer(token_cli, name="token")
cli.add_typer(user_cli, name="user")
cli.add_typer(catalog_cli, name="catalog")
events_cli = typer.Typer(help="Usage events: the quarantine and its replay.", no_args_is_help=True)
ledger_cli = typer.Typer(help="The double-entry ledger: verification and credit expiry.", no_args_is_help=True)
cli.add_typer(ledger_cli, name="ledger")
cli.add_typer(events_cli, name="events")
jobs_cli = typer.Typer(help="Run a background job of `tally serve` once, now.", no_args_is_help=True)
cli.add_typer(jobs_cli, name="jobs")
billing_cli = typer.Typer(help="Billing runs: close periods and issue invoices.", no_args_is_help=True)
cli.add_typer(billing_cli, name="billing")
anomalies_cli = typer.Typer(help="Finance anomalies: what looks wrong.", no_args_is_help=True)
cli.add_typer(anomalies_cli, name="anomalies")
invoices_cli = typer.Typer(help="Issued invoices: the accuracy check.", no_args_is_help=True)
cli.add_typer(invoices_cli, name="invoices")
cli.add_typer(charge_cli, name="charge")
cli.add_typer(commitment_cli, name="commitment")
cli.add_typer(credit_note_cli, name="credit-note")
cli.add_typer(subscription_cli, name="subscription")
cli.add_typer(prices_cli, name="prices")
cli.add_typer(customer_cli, name="customer")
cli.add_typer(tax_cli, name="tax")
cli.add_typer(coupon_cli, name="coupon")
cli.add_typer(alert_cli, name="alert")
cli.add_typer(topup_cli, name="credits")
cli.add_typer(email_cli, name="email")
cli.add_typer(webhook_cli, name="webhook")
cli.add_typer(interim_cli, name="interim")
cli.add_typer(nats_cli, name="nats")
cli.command("consume")(consume)
trial_cli = typer.Typer(help="Trials: end one now (its invoice issued at once) or extend it.", no_args_is_help=True)
cli.add_typer(trial_cli, name="trial")


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (one per core suits ingestion).")] = 1,
    jobs: Annotated[
        bool | None,
        typer.Option(
            "--jobs/--no-jobs",
            help="Run the background jobs here (default: TALLY_SERVE_JOBS, on). Off for API processes that "
            "serve the edge while one other `tally serve` runs them.",
        ),
    ] = None,
) -> None:
    """Run the API, the console and the background jobs (migrates first)."""
    import uvicorn

    refused = bind_refusal(host, port)
    if refused is not None:
        if refused.errno == errno.EADDRINUSE:
            fail(
                f"port {port} on {host} is in use (another `tally serve`?): choose a free one with --port, "
                f"e.g. `tally serve --port {port + 1}`"
            )
        fail(f"cannot listen on {host}:{port}: {refused.strerror}; choose another --host or --port")
    settings = load_settings()
    if jobs is not None:
        settings = settings.model_copy(update={"serve_jobs": jobs})
        os.environ["TALLY_SERVE_JOBS"] = str(jobs).lower()  # worker processes read it too
    url = prepared_database(settings)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler found before it
    # started: exiting through SystemExit lets atexit stop the embedded PostgreSQL.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    err.print(
        f"Tally on http://{host}:{port}  console: http://{host}:{port}/console  GraphQL: http://{host}:{port}/graphql",
        highlight=False,
    )
    if workers == 1:
        from app.main import create_app

        uvicorn.run(create_app(settings, url, run_jobs=settings.serve_jobs), host=host, port=port, log_level="info")
        return
    # Worker processes build their own app from the environment; they share this process's
    # (possibly embedded) database through DATABASE_URL.
    os.environ["DATABASE_URL"] = url
    uvicorn.run(
        "app.main:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        # uvicorn restarts a worker that misses its 5 s health check; a worker busy migrating or
        # on a loaded machine (measured: load average 8 on 2 cores) was killed over and over.
        timeout_worker_healthcheck=30,
    )


@cli.command("migrate")
def migrate_command() -> None:
    """Bring the database schema up to date."""
    settings = load_settings()
    prepared_database(settings)
    err.print(f"database schema is at the latest revision ({latest_revision()})")


@catalog_cli.command("apply")
def catalog_apply(
    file: Annotated[Path, typer.Argument(help="The catalog TOML file.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would change; change nothing.")] = False,
    simulate_periods: Annotated[
        int | None,
        typer.Option(
            "--simulate-periods",
            min=1,
            max=24,
            help="With --dry-run: re-rate each affected customer's last N closed periods under the file's plans.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Declare meters and plans. Validates the whole file first; writes nothing on any problem."""
    if not file.is_file():
        fail(f"{file}: no such file (give the path of a catalog TOML file)")
    if simulate_periods is not None and not dry_run:
        fail("--simulate-periods: add --dry-run (a simulation never writes the catalog)")
    text = file.read_text()
    simulation: list[Any] = []

    async def work(session: AsyncSession) -> list[Any]:
        moment = now()
        changes = await apply_catalog(session, text, as_of=moment, dry_run=dry_run)
        if simulate_periods is not None:
            simulation.append(await _simulate(session, text, simulate_periods, moment, quiet=as_json))
        return changes

    try:
        changes = run_in_session(load_settings(), work, commit=not dry_run)
    except CatalogInvalid as invalid:
        if as_json:
            print_json({"ok": False, "problems": [{"path": p.path, "message": p.message} for p in invalid.problems]})
        for problem in invalid.problems:
            err.print(f"[red]{problem.path}[/red]: {problem.message}", highlight=False, soft_wrap=True)
        err.print(f"{len(invalid.problems)} problem(s); nothing was written.")
        raise typer.Exit(1) from None
    if as_json:
        document: dict[str, Any] = {
            "ok": True,
            "dryRun": dry_run,
            "changes": [{"kind": c.kind, "key": c.key, "action": c.action, "detail": c.detail} for c in changes],
        }
        if simulation:
            document["simulation"] = _simulation_document(simulation[0])
        print_json(document)
        return
    for change in changes:
        typer.echo(str(change))
    changed = sum(c.action != "unchanged" for c in changes)
    typer.echo(f"{changed} change(s){' would be made (dry run: nothing written)' if dry_run else ' applied'}.")
    if simulation:
        _print_simulation(simulation[0], simulate_periods or 0)


async def _simulate(session: AsyncSession, text: str, periods: int, as_of: datetime, *, quiet: bool) -> Any:
    from billing.invoices.simulation import PeriodSelection, simulate_pricing

    with Progress(console=err, transient=True, disable=quiet) as progress:
        task = progress.add_task("Simulating customers", total=None)
        return await simulate_pricing(
            session,
            catalog_text=text,
            selection=PeriodSelection.checked(start=None, end=as_of, last=periods, as_of=as_of),
            as_of=as_of,
            on_start=lambda total: progress.update(task, total=total),
            on_customer=lambda: progress.update(task, advance=1),
        )


def _simulation_document(summary: Any) -> dict[str, Any]:
    from ledger.money import to_major

    def row(o: Any) -> dict[str, Any]:
        return {
            "customer": o.customer_key,
            "plan": o.plan_key,
            "periods": o.periods,
            "currency": o.currency,
            "current": str(to_major(o.current, o.currency)),
            "simulated": str(to_major(o.simulated, o.currency)),
            "difference": str(to_major(o.difference, o.currency)),
            "changePercent": str(o.change_percent) if o.change_percent is not None else None,
        }

    return {
        "customers": [row(o) for o in summary.outcomes],
        "totals": {
            currency: {
                "current": str(to_major(current, currency)),
                "simulated": str(to_major(summary.simulated_by_currency[currency], currency)),
                "difference": str(to_major(summary.simulated_by_currency[currency] - current, currency)),
            }
            for currency, current in sorted(summary.current_by_currency.items())
        },
        "distribution": summary.distribution,
        "biggestMovers": [row(o) for o in summary.biggest_movers],
    }


def _print_simulation(summary: Any, periods: int) -> None:
    from rich.table import Table

    from ledger.money import to_major

    out = Console()
    document = _simulation_document(summary)
    table = Table(title=f"Biggest movers over each customer's last {periods} closed period(s)")
    for column in ("customer", "plan", "periods", "current", "simulated", "difference", "change"):
        table.add_column(column, justify="right" if column not in ("customer", "plan") else "left")
    for o in summary.biggest_movers:
        table.add_row(
            o.customer_key,
            o.plan_key,
            str(o.periods),
            f"{to_major(o.current, o.currency)} {o.currency}",
            f"{to_major(o.simulated, o.currency)} {o.currency}",
            f"{to_major(o.difference, o.currency):+} {o.currency}",
            f"{o.change_percent:+}%" if o.change_percent is not None else "new" if o.difference else "none",
        )
    out.print(table)
    for currency, totals in document["totals"].items():
        out.print(
            f"Revenue {currency}: {totals['current']} now, {totals['simulated']} under the draft "
            f"({totals['difference']} change) across {len(summary.outcomes)} customer(s)",
            highlight=False,
        )
    out.print("Distribution: " + ", ".join(f"{label}: {count}" for label, count in summary.distribution.items()))


@token_cli.command("create")
def token_create(
    role: Annotated[
        str,
        typer.Option(
            help="admin, finance, support, viewer, ingest, customer, or edge (sends usage and checks "
            "entitlements, nothing else)."
        ),
    ],
    customer: Annotated[str | None, typer.Option(help="External id of the customer (role customer).")] = None,
    label: Annotated[str | None, typer.Option(help="A note on what the token is for.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Print a new bearer token, and only the token. It is shown once; only its hash is kept."""

    async def work(session: AsyncSession) -> auth.IssuedToken:
        return await auth.create_token(session, role=role, customer_external_id=customer, label=label, as_of=now())

    issued = run_in_session(load_settings(), work)
    if as_json:
        print_json({"id": issued.id, "token": issued.token, "role": issued.role.value, "customer": customer})
    else:
        typer.echo(issued.token)


@token_cli.command("revoke")
def token_revoke(token: Annotated[str, typer.Argument(help="The token itself, or its id.")]) -> None:
    """Revoke a token at once."""

    async def work(session: AsyncSession) -> Any:
        return await auth.revoke_token(session, token, as_of=now())

    token_id = run_in_session(load_settings(), work)
    err.print(f"revoked token {token_id}")


@token_cli.command("list")
def token_list(as_json: JsonOption = False) -> None:
    """List tokens (ids, prefixes, roles, the customer of a customer token; never the tokens)."""

    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        return [
            {
                "id": t.id,
                "prefix": t.prefix,
                "role": t.role,
                "customer": customer,
                "label": t.label,
                "createdAt": t.created_at,
                "revokedAt": t.revoked_at,
            }
            for t, customer in await auth.list_tokens(session)
        ]

    rows = run_in_session(load_settings(), work, commit=False)
    if as_json:
        print_json(rows)
        return
    for row in rows:
        state = f"revoked {row['revokedAt']:%Y-%m-%d}" if row["revokedAt"] else "active"
        customer = row["customer"] or "-"
        typer.echo(f"{row['id']}  {row['prefix']}…  {row['role']:<8}  {customer:<16}  {state}  {row['label'] or ''}")


@cli.command()
def demo(as_json: JsonOption = False) -> None:
    """Load the example catalog, 25 customers, a month of their usage, credits, promotions and a staff admin, once."""
    from app.demo import DEMO_STEPS, load_demo

    settings = load_settings()
    with Progress(console=err, transient=True, disable=as_json) as progress:
        task = progress.add_task("Loading demo data", total=DEMO_STEPS)

        async def work(session: AsyncSession) -> Any:
            # The demo's own spans (ingest batches, billing) are kept, so its events and invoices
            # lead to traces; its tens of thousands of SQL statements are not.
            with suppress_instrumentation():
                return await load_demo(
                    session,
                    as_of=now(),
                    advance=lambda step: progress.update(task, advance=1, description=f"Loading {step}"),
                )

        result = run_in_session(settings, work, traced=True)
    password_file = settings.data_dir / "demo-login"
    password = result.admin_password
    if password is not None:
        password_file.parent.mkdir(parents=True, exist_ok=True)
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
    elif password_file.exists():
        password = password_file.read_text().strip()
    if as_json:
        print_json(
            {
                "loaded": result.loaded,
                "customers": result.customers,
                "adminEmail": result.admin_email,
                "adminPassword": password,
            }
        )
        return
    typer.echo(
        "Demo loaded: example catalog, 25 customers, a month of usage, credits, promotions, plan changes and invoices."
        if result.loaded
        else "Demo data already loaded."
    )
    shown = password or "(set when the demo was first loaded; create another with `tally user create`)"
    typer.echo(f"Console login: {result.admin_email} / {shown}")


@events_cli.command("quarantine")
def events_quarantine(
    limit: Annotated[int, typer.Option(help="How many to list, newest first.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List events waiting in quarantine for their customer or meter to exist."""
    from metering.service import quarantined

    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        return [
            {
                "eventId": q.event_id,
                "code": q.code,
                "message": q.message,
                "receivedAt": q.received_at,
                "payload": q.payload,
            }
            for q in await quarantined(session, limit=limit)
        ]

    rows = run_in_session(load_settings(), work, commit=False)
    if as_json:
        print_json(rows)
        return
    for row in rows:
        typer.echo(f"{row['receivedAt']:%Y-%m-%d %H:%M:%S}  {row['eventId']}  {row['code']}  {row['message']}")
    typer.echo(f"{len(rows)} event(s) shown.")


@events_cli.command("replay")
def events_replay(
    limit: Annotated[int, typer.Option(help="At most this many events, oldest first (1 to 100000).")] = 10_000,
    as_json: JsonOption = False,
) -> None:
    """Ingest quarantined events again, now that their customers or meters may exist."""
    from app.usage_ingest import ingest_limits
    from metering.service import replay_quarantine

    settings = load_settings()

    async def work(session: AsyncSession) -> Any:
        return await replay_quarantine(session, limits=ingest_limits(settings), batch_size=limit)

    report = run_in_session(settings, work)
    figures = {
        "accepted": report.accepted,
        "duplicates": report.duplicates,
        "stillWaiting": report.still_waiting,
        "rejected": report.rejected,
    }
    if as_json:
        print_json(figures)
        return
    typer.echo(
        f"replayed: {report.accepted} accepted, {report.duplicates} duplicate(s), {report.rejected} rejected; "
        f"{report.still_waiting} still waiting for their customer or meter"
    )


@ledger_cli.command("verify")
def ledger_verify(as_json: JsonOption = False) -> None:
    """Recompute every balance from the postings and check every invariant; exit 1 on any violation."""
    from ledger.verify import verify

    async def work(session: AsyncSession) -> Any:
        return await verify(session)

    violations = run_in_session(load_settings(), work, commit=False)
    if as_json:
        print_json({"ok": not violations, "violations": [v.__dict__ for v in violations]})
    else:
        for violation in violations:
            err.print(f"[red]{violation}[/red]", highlight=False, soft_wrap=True)
        typer.echo(f"{len(violations)} violation(s)" if violations else "ledger verified: every invariant holds")
    if violations:
        raise typer.Exit(1)


@ledger_cli.command("expire")
def ledger_expire(
    as_of: Annotated[str | None, typer.Option("--as-of", help="ISO 8601 time (default: now).")] = None,
) -> None:
    """Post what remains of every credit grant past its expiry to breakage (safe to rerun)."""
    from customers.credits import expire_grants

    moment = parse_as_of(as_of)

    async def work(session: AsyncSession) -> int:
        return await expire_grants(session, as_of=moment)

    typer.echo(f"{run_in_session(load_settings(), work)} grant(s) expired")


BILLING_INCOMPLETE = 3


@billing_cli.command(
    "run",
    epilog=(
        "Exit codes: 0, every due customer is billed; 1, bad input; 3, the others are billed but some "
        "customers' invoices failed or wait for their retry (each has a BILLING_FAILED anomaly; the "
        "summary line says how many)."
    ),
)
def billing_run(
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="ISO 8601 time (default: now): bill periods ended by then.")
    ] = None,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="Try customers whose invoice failed now, without waiting for backoff."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Close every billing period that ended (plus the grace period for late events) by --as-of
    and issue its invoice; safe to run twice or concurrently: nothing is issued twice. A customer
    whose invoice fails is recorded and retried later with backoff; everyone else is billed."""
    from app.billing_run import run_billing
    from ledger.money import to_major

    settings = load_settings()
    moment = parse_as_of(as_of)
    if moment > now():
        fail(
            f"--as-of: {moment.isoformat()} is in the future; invoices are final once issued, so only periods "
            "that have already ended are billed (leave --as-of out to bill up to now)"
        )
    url = traced_database(settings)

    async def main() -> Any:
        engine = create_engine(url)
        try:
            with Progress(console=err, transient=True, disable=as_json) as progress:
                task = progress.add_task("Billing customers", total=None)
                return await run_billing(
                    session_factory(engine),
                    settings,
                    as_of=moment,
                    retry_failed=retry_failed,
                    on_start=lambda total: progress.update(task, total=total),
                    on_customer_done=lambda issued: progress.update(task, advance=1),
                )
        finally:
            await engine.dispose()

    report = asyncio.run(main())
    totals = {currency: str(to_major(amount, currency)) for currency, amount in sorted(report.totals_minor.items())}
    if as_json:
        print_json(
            {
                "asOf": moment.isoformat(),
                "customersConsidered": report.customers_considered,
                "invoicesIssued": report.invoices_issued,
                "totals": totals,
                "seconds": round(report.seconds, 3),
                "customersFailed": [
                    {"customerId": str(customer_id), "error": error} for customer_id, error in report.failed.items()
                ],
                "customersWaitingRetry": [
                    {"customerId": str(customer_id), "nextAttemptAt": at.isoformat()}
                    for customer_id, at in report.waiting.items()
                ],
            }
        )
    else:
        summary = ", ".join(f"{amount} {currency}" for currency, amount in totals.items()) or "nothing"
        typer.echo(
            f"{report.invoices_issued} invoice(s) issued for {report.customers_considered} customer(s) due by "
            f"{moment.isoformat()}: {summary} in {report.seconds:.1f} s"
        )
    if not report.complete:
        err.print(
            f"[red]error:[/red] {len(report.failed)} customer(s) failed and {len(report.waiting)} wait for a retry "
            "after failing before; everyone else is billed (see BILLING_FAILED on the console's Anomalies page)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(BILLING_INCOMPLETE)


DISCREPANCIES_FOUND = 3
COLLECTION_OFF = 4


@cli.command(
    "reconcile",
    epilog=(
        "Exit codes: 0, the ledger and Stripe agree; 1, bad input or an error (Stripe unreachable); "
        f"{DISCREPANCIES_FOUND}, discrepancies found (each recorded, listed in the console's Reconciliation page); "
        f"{COLLECTION_OFF}, collection is off (no STRIPE_API_KEY): nothing to reconcile."
    ),
)
def reconcile(
    as_of: Annotated[str | None, typer.Option("--as-of", help="ISO 8601 time (default: now).")] = None,
    days: Annotated[int, typer.Option("--days", min=1, help="How many days of payments to compare.")] = 35,
    as_json: JsonOption = False,
) -> None:
    """Compare the ledger's payments and refunds with Stripe's and record every difference."""
    from datetime import timedelta

    from app.collection import stripe_gateway
    from billing.reconciliation.service import reconcile as reconcile_payments

    settings = load_settings()
    gateway = stripe_gateway(settings)
    if gateway is None:
        why = "collection is off: set STRIPE_API_KEY (and STRIPE_API_BASE for a stand-in) to reconcile with Stripe"
        if as_json:
            print_json({"collection": "off", "message": why})
        else:
            err.print(f"[yellow]{why}[/yellow]", highlight=False, soft_wrap=True)
        raise typer.Exit(COLLECTION_OFF)
    moment = parse_as_of(as_of)

    async def work(session: AsyncSession) -> Any:
        return await reconcile_payments(session, gateway, as_of=moment, window=timedelta(days=days))

    with err.status("Comparing the ledger with Stripe…", spinner="dots") if not as_json else nullcontext():
        report = run_in_session(settings, work, traced=True)
    found = [
        {"kind": d.kind, "object": d.object_id, "summary": d.summary, "tally": d.tally_side, "stripe": d.stripe_side}
        for d in report.discrepancies
    ]
    if as_json:
        print_json({"collection": "on", "checked": report.checked, "new": report.new, "discrepancies": found})
    else:
        for discrepancy in report.discrepancies:
            err.print(f"[red]{discrepancy.kind}[/red] {discrepancy.summary}", highlight=False, soft_wrap=True)
        compared = f"{report.checked} payment(s) compared since {report.since.date().isoformat()}"
        verdict = f"{len(found)} discrepancy(ies), {report.new} new" if found else "ledger and Stripe agree"
        typer.echo(f"{compared}: {verdict}")
    if found:
        raise typer.Exit(DISCREPANCIES_FOUND)


@invoices_cli.command("verify")
def invoices_verify(
    sample: Annotated[
        int | None, typer.Option("--sample", min=1, help="How many issued invoices to re-rate (default 50).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Re-rate a random sample of issued invoices from the raw events (not the rollups) and report
    every line that differs; each such invoice becomes an INVOICE_ACCURACY anomaly. Exit 1 on any."""
    from app import jobs

    settings = load_settings()
    url = prepared_database(settings)

    async def main() -> Any:
        engine = create_engine(url)
        try:
            return await jobs.verify_invoice_accuracy(session_factory(engine), settings, sample=sample, as_of=now())
        finally:
            await engine.dispose()

    report = asyncio.run(main())
    if as_json:
        print_json(
            {
                "checked": len(report.checked),
                "differences": report.differences,
                "anomaliesRaised": report.anomalies_raised,
                "invoices": [
                    {
                        "number": invoice_number(check.invoice.number),
                        "differences": [difference.as_dict() for difference in check.differences],
                    }
                    for check in report.checked
                    if check.differences
                ],
            }
        )
    else:
        for check in report.checked:
            for d in check.differences:
                err.print(
                    f"[red]{invoice_number(check.invoice.number)}[/red] {d.description}: billed {d.billed_quantity} "
                    f"for {d.billed_amount}, raw events give {d.rerated_quantity} for {d.rerated_amount}",
                    highlight=False,
                    soft_wrap=True,
                )
        typer.echo(
            f"{len(report.checked)} invoice(s) re-rated from raw events: {report.differences} line(s) differ"
            + (f", {report.anomalies_raised} new anomaly(ies)" if report.anomalies_raised else "")
        )
    if report.differences:
        raise typer.Exit(1)


@anomalies_cli.command("scan")
def anomalies_scan(
    as_of: Annotated[str | None, typer.Option("--as-of", help="ISO 8601 time (default: now).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Run every anomaly detector and store what it finds; scanning again stores nothing twice."""
    from app.anomaly_scan import scan_anomalies
    from billing.insights.detectors import DETECTORS

    settings = load_settings()
    moment = parse_as_of(as_of)
    url = prepared_database(settings)

    async def main() -> Any:
        engine = create_engine(url)
        try:
            with Progress(console=err, transient=True, disable=as_json) as progress:
                task = progress.add_task("Scanning for anomalies", total=len(DETECTORS))
                return await scan_anomalies(
                    session_factory(engine),
                    settings,
                    as_of=moment,
                    on_detector=lambda kind: progress.update(task, advance=1, description=f"Checked {kind}"),
                )
        finally:
            await engine.dispose()

    report = asyncio.run(main())
    if as_json:
        print_json({"asOf": moment.isoformat(), "found": report.found, "new": report.new})
        return
    for kind, found in report.found.items():
        if found:
            typer.echo(f"{kind}: {found} found, {report.new[kind]} new")
    typer.echo(
        f"{sum(report.new.values())} new anomaly(ies) of {sum(report.found.values())} found as of {moment.isoformat()}"
    )


@jobs_cli.command("run")
def jobs_run(
    job: Annotated[str, typer.Argument(help="outbox (collect invoices through Stripe) or stripe-events.")],
    as_of: Annotated[str | None, typer.Option("--as-of", help="ISO 8601 time (default: now).")] = None,
) -> None:
    """Run one job until it has nothing left to do, and say how much it did."""
    from app import jobs

    if job not in ("outbox", "stripe-events"):
        fail(f"{job!r}: not a job; run `outbox` or `stripe-events`")
    settings = load_settings()
    moment = parse_as_of(as_of)
    url = traced_database(settings)

    async def main() -> int:
        engine = create_engine(url)
        try:
            sessions = session_factory(engine)
            if job == "outbox":
                return await jobs.collect_invoices(sessions, settings, as_of=moment)
            return await jobs.process_stripe_events(sessions, settings, as_of=moment)
        finally:
            await engine.dispose()

    done = asyncio.run(main())
    what = "invoice collection attempt(s)" if job == "outbox" else "Stripe event(s) processed"
    suffix = " (collection is off: set STRIPE_API_KEY)" if job == "outbox" and not settings.stripe_api_key else ""
    typer.echo(f"{done} {what}{suffix}")


def _trial_change(
    external_id: str,
    kind: str,
    moment: datetime | None,
    *,
    dry_run: bool,
    as_json: bool,
    subscription: str | None = None,
) -> None:
    """End or extend a trial as the endTrial/extendTrial mutations do (actor "cli")."""
    from app.billing_run import billing_window
    from billing.subscriptions.trials import change_trial_billed
    from customers.service import get_customer
    from customers.trials import TrialChangeRequest
    from ledger.money import to_major

    settings = load_settings()
    named = f"{subscription}:" if subscription else ""  # two subscriptions' trials are two requests
    key = f"cli:{kind}:{external_id}:{named}{moment.isoformat() if moment else 'now'}"

    async def work(session: AsyncSession) -> dict[str, Any]:
        customer = await get_customer(session, external_id=external_id)
        if customer is None:
            fail(f"{external_id!r}: no such customer")
        request = TrialChangeRequest(
            customer.id, kind, key, actor="cli", at=moment, subscription_id=subscription_id_option(subscription)
        )
        outcome = await change_trial_billed(
            session, request, as_of=now(), window=billing_window(settings), backdate_limit=None
        )
        result = {
            "customer": external_id,
            "trialEndsAt": outcome.subscription.trial_ends_at,
            "cancelAt": outcome.subscription.cancel_at,
            "dryRun": dry_run,
            "invoices": [
                {
                    "number": None if dry_run else invoice_number(invoice.number),
                    "periodStart": invoice.period_start,
                    "periodEnd": invoice.period_end,
                    "total": str(to_major(invoice.total, invoice.currency)),
                    "currency": invoice.currency,
                }
                for invoice in outcome.invoices
            ],
        }
        if dry_run:
            await session.rollback()
        return result

    result = run_in_session(settings, work, commit=not dry_run)
    if as_json:
        print_json(result)
        return
    typer.echo(f"{external_id}: trial {'would end' if dry_run else 'ends'} at {result['trialEndsAt'].isoformat()}")
    for invoice in result["invoices"]:
        number = invoice["number"] or "(dry run)"
        typer.echo(
            f"  {number}  {invoice['periodStart']:%Y-%m-%d} to {invoice['periodEnd']:%Y-%m-%d}  "
            f"{invoice['total']} {invoice['currency']}"
        )


@trial_cli.command("end")
def trial_end(
    external_id: Annotated[str, typer.Argument(help="The customer's external id.")],
    at: Annotated[str | None, typer.Option("--at", help="ISO 8601 time inside the trial (default: now).")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the invoices it would issue; change nothing.")
    ] = False,
    subscription: SubscriptionOption = None,
    as_json: JsonOption = False,
) -> None:
    """End the customer's trial: the first paid period starts then, and the trial's invoice (its
    usage if charged, that period's base fee in advance) is issued at once. Running it again
    with the same arguments changes nothing more."""
    moment = parse_as_of(at) if at else None
    _trial_change(external_id, "end", moment, dry_run=dry_run, as_json=as_json, subscription=subscription)


@trial_cli.command("extend")
def trial_extend(
    external_id: Annotated[str, typer.Argument(help="The customer's external id.")],
    until: Annotated[str, typer.Option("--until", help="ISO 8601 time: the trial's new end, after its current one.")],
    subscription: SubscriptionOption = None,
    as_json: JsonOption = False,
) -> None:
    """Extend the customer's trial until a later moment; the first paid period moves with it."""
    _trial_change(external_id, "extend", parse_as_of(until), dry_run=False, as_json=as_json, subscription=subscription)


def main() -> None:
    cli()
