"""`tally user list/disable/enable/reset-password`, `tally token list` with each token's customer,
and `tally serve` on a port already taken (the commands run in-process, so the tests are sync)."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import timedelta

import psycopg

from app.console_sessions import active_session, start_session
from app.database import create_engine, session_factory
from app.staff import LoginPolicy, PasswordChecks, verify_login
from tests.app.test_cli import run
from tests.app.test_customer_cli import new_customer
from tests.conftest import now

__all__ = ["run"]
OLD, NEW = "the first long password", "a second long password"
POLICY = LoginPolicy(max_failures=3, lockout=timedelta(minutes=15))


def signs_in(database_url: str, email: str, password: str) -> bool:
    """Whether the console's sign-in check lets the user in (a wrong password counts, as there)."""

    async def check() -> bool:
        engine, checks = create_engine(database_url), PasswordChecks(1)
        try:
            async with session_factory(engine)() as session:
                user = await verify_login(
                    session, email=email, password=password, as_of=now(), policy=POLICY, checks=checks
                )
                await session.commit()
                return user is not None
        finally:
            checks.close()
            await engine.dispose()

    return asyncio.run(check())


def open_console_session(database_url: str, email: str) -> tuple:
    async def start() -> tuple:
        engine = create_engine(database_url)
        async with session_factory(engine)() as session:
            with psycopg.connect(database_url) as connection:
                [(staff_id,)] = connection.execute("SELECT id FROM staff_users WHERE email = %s", (email,)).fetchall()
            started = await start_session(session, staff_user_id=staff_id, as_of=now())
            await session.commit()
        await engine.dispose()
        return started.id

    return asyncio.run(start())


def still_signed_in(database_url: str, session_id: object) -> bool:
    async def look() -> bool:
        engine = create_engine(database_url)
        async with session_factory(engine)() as session:
            found = await active_session(session, session_id, as_of=now(), lifetime=timedelta(hours=1))
        await engine.dispose()
        return found is not None

    return asyncio.run(look())


def listed(run) -> list[dict]:  # type: ignore[no-untyped-def]
    result = run("user", "list", "--json")
    assert result.exit_code == 0, result.output
    return list(json.loads(result.stdout))


def test_every_user_command_has_help(run) -> None:
    for command in ("list", "disable", "enable", "reset-password"):
        described = run("user", command, "--help")
        assert described.exit_code == 0 and "Usage:" in described.output, command
    assert "--json" in run("user", "list", "--help").output


def test_list_disable_enable_and_reset_a_console_user(run, database_url: str) -> None:
    assert run("user", "list").stdout.startswith("no console users")
    for email, role in (("fin@example.com", "finance"), ("cs@example.com", "support")):
        created = run("user", "create", "--email", email, "--role", role, "--password-stdin", stdin=OLD + "\n")
        assert created.exit_code == 0, created.output
    users = listed(run)
    assert [(u["email"], u["role"], u["status"], u["lastSignInAt"]) for u in users] == [
        ("cs@example.com", "support", "active", None),
        ("fin@example.com", "finance", "active", None),
    ]
    assert "password" not in json.dumps(users).lower()

    assert signs_in(database_url, "cs@example.com", OLD)
    console = open_console_session(database_url, "cs@example.com")
    assert listed(run)[0]["lastSignInAt"] is not None
    disabled = run("user", "disable", "CS@example.com")
    assert disabled.exit_code == 0 and "1 open session(s) ended" in disabled.output
    assert not still_signed_in(database_url, console), "signed out everywhere at once"
    assert not signs_in(database_url, "cs@example.com", OLD), "a disabled user cannot sign in"
    assert listed(run)[0]["status"] == "disabled"
    assert "disabled" in run("user", "list").stdout.splitlines()[0]

    assert run("user", "enable", "cs@example.com").exit_code == 0
    assert signs_in(database_url, "cs@example.com", OLD)

    for _ in range(3):
        assert not signs_in(database_url, "fin@example.com", "a wrong password!")
    assert listed(run)[1]["status"] == "locked"
    too_short = run("user", "reset-password", "fin@example.com", "--password-stdin", stdin="short\n")
    assert too_short.exit_code == 1 and "at least 10 characters" in too_short.output
    reset = run("user", "reset-password", "fin@example.com", "--password-stdin", stdin=NEW + "\n")
    assert reset.exit_code == 0, reset.output
    assert listed(run)[1]["status"] == "active", "the lockout is cleared"
    assert not signs_in(database_url, "fin@example.com", OLD)
    assert signs_in(database_url, "fin@example.com", NEW)

    unknown = run("user", "disable", "nobody@example.com")
    assert unknown.exit_code == 1 and "no console user 'nobody@example.com'" in unknown.output


def test_token_list_shows_each_tokens_customer(run, database_url: str) -> None:
    new_customer(database_url, "org_tokens")
    assert run("token", "create", "--role", "customer", "--customer", "org_tokens").exit_code == 0
    assert run("token", "create", "--role", "finance").exit_code == 0
    tokens = json.loads(run("token", "list", "--json").stdout)
    assert [(t["role"], t["customer"]) for t in tokens] == [("customer", "org_tokens"), ("finance", None)]
    assert "org_tokens" in run("token", "list").stdout.splitlines()[0]


def test_serve_on_a_port_in_use_says_so_and_suggests_another(run) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = run("serve", "--port", str(port))
    assert refused.exit_code == 1
    assert f"port {port} on 127.0.0.1 is in use" in refused.output and "--port" in refused.output
    assert "Traceback" not in refused.output
