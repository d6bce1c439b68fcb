"""Every failure of a request is answered in JSON with a stable code, never a bare 500 page.

- The database cannot be reached, or is busy, or cancelled a statement for running too long:
  503 with ``DATABASE_UNAVAILABLE``, ``DATABASE_BUSY`` or ``DATABASE_TIMEOUT`` and a
  ``Retry-After``; nothing is wrong with the request and a later try may succeed (the pool
  replaces dropped connections by itself once the database is back).
- Anything else unexpected: 500 ``INTERNAL`` with a ``traceId`` to quote; the error itself is
  logged with that id and never shown to the client (it may hold SQL, URLs or secrets).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg import errors as pg_errors
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.database import is_database_unavailable
from app.telemetry import current_trace_id

logger = logging.getLogger("tally.http")


@dataclass(frozen=True)
class DatabaseFailure:
    code: str
    message: str
    retry_after_seconds: int


UNAVAILABLE = DatabaseFailure(
    "DATABASE_UNAVAILABLE", "the database cannot be reached at the moment; nothing was changed, retry shortly", 5
)


def database_failure(error: BaseException) -> DatabaseFailure | None:
    """What to tell the client about a database failure that is not the request's fault, or
    None when the failure is unexpected (a bug, or a schema that does not match the code)."""
    if isinstance(error, PoolTimeout):
        return DatabaseFailure("DATABASE_BUSY", "every database connection is in use; retry shortly", 1)
    if is_database_unavailable(error):
        return UNAVAILABLE
    original = error.orig if isinstance(error, DBAPIError) else error
    if isinstance(original, pg_errors.TooManyConnections):
        return DatabaseFailure("DATABASE_BUSY", "the database accepts no more connections; retry shortly", 1)
    if isinstance(original, pg_errors.QueryCanceled):
        return DatabaseFailure(
            "DATABASE_TIMEOUT", "the database took too long and the request was cancelled; nothing was changed", 1
        )
    return None


def internal_error(request: Request, error: BaseException) -> JSONResponse:
    trace_id = current_trace_id() or uuid.uuid4().hex
    logger.error("unexpected error on %s %s (trace %s)", request.method, request.url.path, trace_id, exc_info=error)
    return JSONResponse(
        {
            "code": "INTERNAL",
            "message": f"Unexpected error; quote trace id {trace_id} when reporting it.",
            "traceId": trace_id,
        },
        status_code=500,
    )


def install_error_answers(app: FastAPI) -> None:
    @app.exception_handler(SQLAlchemyError)
    @app.exception_handler(psycopg.Error)
    async def database_error(request: Request, error: Exception) -> JSONResponse:
        failure = database_failure(error)
        if failure is None:
            return internal_error(request, error)
        logger.warning("%s on %s %s: %s", failure.code, request.method, request.url.path, error)
        return JSONResponse(
            {"code": failure.code, "message": failure.message},
            status_code=503,
            headers={"Retry-After": str(failure.retry_after_seconds)},
        )

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        return internal_error(request, error)
