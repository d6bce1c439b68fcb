"""`tally user`: the console's staff users from the command line: create, list, disable (and
enable again), reset a password."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from sqlmodel.ext.asyncio.session import AsyncSession

from app import staff
from app.cli_support import JsonOption, err, load_settings, print_json, run_in_session
from app.models import StaffUser

user_cli = typer.Typer(help="Console staff users: create, list, disable, enable, reset-password.", no_args_is_help=True)

EmailArgument = Annotated[str, typer.Argument(help="The user's email.")]
PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="Read the password from standard input.")]


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@user_cli.command("create")
def user_create(
    email: Annotated[str, typer.Option(help="The user's email, used to sign in.")],
    role: Annotated[str, typer.Option(help="admin, finance, support or viewer.")],
    password_stdin: PasswordStdin = False,
) -> None:
    """Create a console user (the password is prompted for, or read with --password-stdin)."""

    password = _password(password_stdin)

    async def work(session: AsyncSession) -> Any:
        return await staff.create_user(session, email=email, role=role, password=password, as_of=datetime.now(UTC))

    user = run_in_session(load_settings(), work)
    err.print(f"created {user.role} user {user.email}")


@user_cli.command("list")
def user_list(as_json: JsonOption = False) -> None:
    """List console users: email, role, whether they may sign in (active, locked for now after wrong
    passwords, or disabled), and when they last signed in. Never a password hash."""

    async def work(session: AsyncSession) -> list[staff.StaffListing]:
        return await staff.list_users(session)

    now = datetime.now(UTC)
    listings = run_in_session(load_settings(), work, commit=False)
    if as_json:
        print_json([_document(listing, now) for listing in listings])
        return
    if not listings:
        typer.echo("no console users (create one with `tally user create`)")
    width = max((len(listing.user.email) for listing in listings), default=0)
    for listing in listings:
        user, last = listing.user, listing.last_sign_in_at
        signed_in = f"last sign-in {last:%Y-%m-%d %H:%M} UTC" if last else "never signed in"
        typer.echo(f"{user.email:<{width}}  {user.role:<8}  {_status(user, now):<8}  {signed_in}")


def _document(listing: staff.StaffListing, now: datetime) -> dict[str, Any]:
    user, status = listing.user, _status(listing.user, now)
    return {
        "email": user.email,
        "role": user.role,
        "status": status,
        "createdAt": user.created_at,
        "lastSignInAt": listing.last_sign_in_at,
        "disabledAt": user.disabled_at,
        "lockedUntil": user.locked_until if status == "locked" else None,
    }


def _status(user: StaffUser, now: datetime) -> str:
    if user.disabled_at is not None:
        return "disabled"
    if user.locked_until is not None and user.locked_until > now:
        return "locked"
    return "active"


@user_cli.command("disable")
def user_disable(email: EmailArgument) -> None:
    """Stop a user signing in to the console, and sign them out everywhere at once. Their name stays
    on what they did; `tally user enable` lets them in again."""

    async def work(session: AsyncSession) -> tuple[Any, int]:
        return await staff.disable_user(session, email=email, as_of=datetime.now(UTC))

    user, ended = run_in_session(load_settings(), work)
    err.print(f"disabled {user.email}; {ended} open session(s) ended")


@user_cli.command("enable")
def user_enable(email: EmailArgument) -> None:
    """Let a disabled user sign in again (with their password as it was)."""

    async def work(session: AsyncSession) -> Any:
        return await staff.enable_user(session, email=email)

    user = run_in_session(load_settings(), work)
    err.print(f"enabled {user.email}")


@user_cli.command("reset-password")
def user_reset_password(email: EmailArgument, password_stdin: PasswordStdin = False) -> None:
    """Set a new password (prompted for, or read with --password-stdin), clear a lockout after wrong
    passwords, and end the user's open sessions (a reset often follows a leak)."""

    password = _password(password_stdin)

    async def work(session: AsyncSession) -> tuple[Any, int]:
        return await staff.reset_password(session, email=email, password=password, as_of=datetime.now(UTC))

    user, ended = run_in_session(load_settings(), work)
    err.print(f"new password set for {user.email}; {ended} open session(s) ended")
