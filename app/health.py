"""`/healthz` and `/readyz`: is the database answering, and is its schema the code's?

Both open a connection of their own rather than borrowing one of the pool's: the pool's may all
be busy (which is not ill health) or stale after a database restart (which the next request
repairs), and the question is whether PostgreSQL accepts connections and answers now.
"""

from __future__ import annotations

import asyncio

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from opentelemetry.instrumentation.utils import suppress_instrumentation
from psycopg import errors as pg_errors

from app.database import libpq_url

router = APIRouter(include_in_schema=False)


async def schema_revision(url: str, *, timeout_seconds: int) -> str | None:
    """The schema revision the database is at (None before any migration). Raises
    ``psycopg.Error``, ``OSError`` or ``TimeoutError`` when the database does not answer."""
    with suppress_instrumentation():  # a probe every few seconds would flood the span store
        async with asyncio.timeout(timeout_seconds + 1):
            connection = await psycopg.AsyncConnection.connect(
                libpq_url(url), connect_timeout=timeout_seconds, autocommit=True
            )
            async with connection:
                try:
                    cursor = await connection.execute("SELECT version_num FROM alembic_version")
                except pg_errors.UndefinedTable:
                    return None
                row = await cursor.fetchone()
    return str(row[0]) if row else None


async def _probe(request: Request) -> str | JSONResponse | None:
    """The schema revision, or the 503 to answer when the database does not answer."""
    settings = request.app.state.settings
    try:
        return await schema_revision(
            request.app.state.database_url, timeout_seconds=settings.database_connect_timeout_seconds
        )
    except (psycopg.Error, OSError, TimeoutError) as error:
        return JSONResponse(
            {
                "status": "unavailable",
                "code": "DATABASE_UNAVAILABLE",
                "message": f"the database does not answer: {type(error).__name__}",
            },
            status_code=503,
            headers={"Retry-After": "5"},
        )


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    """200 while the process runs and its database answers; 503 when the database does not."""
    probed = await _probe(request)
    if isinstance(probed, JSONResponse):
        return probed
    return JSONResponse({"status": "ok", "database": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """200 when the database answers and its schema is the revision this code expects; 503 with
    ``DATABASE_UNAVAILABLE`` or ``SCHEMA_OUTDATED`` otherwise (send no traffic here yet)."""
    probed = await _probe(request)
    if isinstance(probed, JSONResponse):
        return probed
    expected = request.app.state.schema_revision
    if probed != expected:
        return JSONResponse(
            {
                "status": "unavailable",
                "code": "SCHEMA_OUTDATED",
                "message": f"the database schema is at {probed or 'nothing'}, this code needs {expected}: "
                "run `tally migrate`",
            },
            status_code=503,
        )
    return JSONResponse({"status": "ready", "database": "ok", "schema": probed})
