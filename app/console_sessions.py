"""Console sign-in sessions, kept server-side.

The signed session cookie carries only the id of a ``console_sessions`` row. Every console request
checks that row, so a session ends for good when it is ended here (sign-out) or is older than the
configured lifetime, whatever copies of the cookie exist. Callers commit.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timedelta

from itsdangerous import BadSignature, TimestampSigner
from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models import ConsoleSession, StaffUser

SESSION_COOKIE = "tally_session"
# The key of the signed cookie's dict that names the server-side session.
SESSION_KEY = "console_session"
# last_seen_at (when the session was last used, for whoever reviews sessions) is written at most
# this often, not on every request.
TOUCH_INTERVAL = timedelta(minutes=1)


async def start_session(session: AsyncSession, *, staff_user_id: uuid.UUID, as_of: datetime) -> ConsoleSession:
    started = ConsoleSession(staff_user_id=staff_user_id, created_at=as_of, last_seen_at=as_of)
    session.add(started)
    await session.flush()
    return started


def _parse_id(session_id: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(session_id))
    except ValueError:
        return None


async def active_session(
    session: AsyncSession, session_id: object, *, as_of: datetime, lifetime: timedelta
) -> tuple[ConsoleSession, StaffUser] | None:
    """The session and its user, if the session was never ended, began within ``lifetime`` and
    its user is not disabled."""
    parsed = _parse_id(session_id) if session_id else None
    if parsed is None:
        return None
    query = (
        select(ConsoleSession, StaffUser)
        .join(StaffUser, col(StaffUser.id) == col(ConsoleSession.staff_user_id))
        .where(
            col(ConsoleSession.id) == parsed,
            col(ConsoleSession.ended_at).is_(None),
            col(ConsoleSession.created_at) > as_of - lifetime,
            col(StaffUser.disabled_at).is_(None),
        )
    )
    row = (await session.exec(query)).first()
    return (row[0], row[1]) if row is not None else None


async def touch_session(session: AsyncSession, console_session: ConsoleSession, *, as_of: datetime) -> bool:
    """Record that the session was used; at most once a ``TOUCH_INTERVAL``."""
    if console_session.last_seen_at > as_of - TOUCH_INTERVAL:
        return False
    await session.execute(
        update(ConsoleSession).where(col(ConsoleSession.id) == console_session.id).values(last_seen_at=as_of)
    )
    return True


async def end_session(session: AsyncSession, session_id: object, *, as_of: datetime) -> None:
    """End the session (sign-out); ending it again keeps the first end."""
    parsed = _parse_id(session_id) if session_id else None
    if parsed is None:
        return
    await session.execute(
        update(ConsoleSession)
        .where(col(ConsoleSession.id) == parsed)
        .values(ended_at=func.coalesce(col(ConsoleSession.ended_at), as_of))
    )


def session_id_in_cookie(cookie: str, *, secret: str, max_age: int) -> str | None:
    """The console session id in a session cookie, read as Starlette's SessionMiddleware reads it
    (a timestamp-signed base64 JSON dict); None for a cookie that is forged, expired or empty."""
    try:
        data = TimestampSigner(secret).unsign(cookie.encode(), max_age=max_age)
        value = json.loads(base64.b64decode(data))
    except (BadSignature, ValueError):
        return None
    session_id = value.get(SESSION_KEY) if isinstance(value, dict) else None
    return session_id if isinstance(session_id, str) else None
