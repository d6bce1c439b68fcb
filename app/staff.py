"""Console staff users: argon2 password hashes and a lockout after repeated failed logins.

Argon2 is slow on purpose (tens of milliseconds of CPU per check, on up to 4 cores): checks run
in threads of their own (argon2-cffi releases the GIL), never on the event loop, where one would
stall every request of the process. See :class:`PasswordChecks`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, update
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth import STAFF_ROLES, parse_role
from app.models import ConsoleSession, StaffUser
from customers.service import EMAIL_PATTERN
from ledger.errors import InvalidInput, NotFound, Taken

MIN_PASSWORD_LENGTH = 10
_hasher = PasswordHasher()
# Verified against when the email is unknown, so a wrong email costs as long as a wrong password.
_UNKNOWN_USER_HASH = _hasher.hash("tally-unknown-user-placeholder")


async def create_user(session: AsyncSession, *, email: str, role: str, password: str, as_of: datetime) -> StaffUser:
    normalized = email.strip().lower()
    if not EMAIL_PATTERN.match(normalized):
        raise InvalidInput(f"{email!r} is not an email address", field="email")
    parsed_role = parse_role(role, allowed=STAFF_ROLES)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"use at least {MIN_PASSWORD_LENGTH} characters", field="password")
    user = StaffUser(email=normalized, password_hash=_hasher.hash(password), role=parsed_role.value, created_at=as_of)
    statement = (
        insert(StaffUser)
        .values(
            id=user.id,
            email=user.email,
            password_hash=user.password_hash,
            role=user.role,
            failed_logins=0,
            created_at=as_of,
        )
        .on_conflict_do_nothing(index_elements=["email"])
        .returning(col(StaffUser.id))
    )
    if (await session.execute(statement)).first() is None:
        raise Taken(f"a user {normalized!r} already exists", field="email")
    return user


async def get_user(session: AsyncSession, email: str) -> StaffUser | None:
    query = select(StaffUser).where(col(StaffUser.email) == email.strip().lower())
    return (await session.exec(query)).first()


@dataclass(frozen=True)
class StaffListing:
    user: StaffUser
    last_sign_in_at: datetime | None


async def list_users(session: AsyncSession) -> list[StaffListing]:
    """Every console user by email, with when they last signed in."""
    last_sign_in = (
        select(func.max(ConsoleSession.created_at))
        .where(col(ConsoleSession.staff_user_id) == col(StaffUser.id))
        .scalar_subquery()
    )
    rows = await session.exec(select(StaffUser, last_sign_in).order_by(col(StaffUser.email)))
    return [StaffListing(user, signed_in) for user, signed_in in rows]


async def _user_for_update(session: AsyncSession, email: str) -> StaffUser:
    query = select(StaffUser).where(col(StaffUser.email) == email.strip().lower()).with_for_update()
    user = (await session.exec(query)).first()
    if user is None:
        raise NotFound(f"no console user {email!r}", field="email")
    return user


async def _end_sessions(session: AsyncSession, user: StaffUser, *, as_of: datetime) -> int:
    ended = await session.execute(
        update(ConsoleSession)
        .where(col(ConsoleSession.staff_user_id) == user.id, col(ConsoleSession.ended_at).is_(None))
        .values(ended_at=as_of)
    )
    return int(ended.rowcount)  # type: ignore[attr-defined]


async def disable_user(session: AsyncSession, *, email: str, as_of: datetime) -> tuple[StaffUser, int]:
    """Stop the user signing in and end their open sessions at once; how many were ended.
    Disabling a disabled user keeps the first time."""
    user = await _user_for_update(session, email)
    if user.disabled_at is None:
        user.disabled_at = as_of
        session.add(user)
    return user, await _end_sessions(session, user, as_of=as_of)


async def enable_user(session: AsyncSession, *, email: str) -> StaffUser:
    user = await _user_for_update(session, email)
    user.disabled_at = None
    session.add(user)
    return user


async def reset_password(session: AsyncSession, *, email: str, password: str, as_of: datetime) -> tuple[StaffUser, int]:
    """A new password, the lockout cleared, and every open session of the user ended (a reset often
    follows a leak); how many sessions were ended."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"use at least {MIN_PASSWORD_LENGTH} characters", field="password")
    user = await _user_for_update(session, email)
    user.password_hash = _hasher.hash(password)
    user.failed_logins = 0
    user.locked_until = None
    session.add(user)
    return user, await _end_sessions(session, user, as_of=as_of)


@dataclass(frozen=True)
class LoginPolicy:
    max_failures: int
    lockout: timedelta


class PasswordChecks:
    """Argon2 checks of one server process, off its event loop: in ``concurrency`` threads of their
    own, at a lower CPU priority on Linux (nice 10, inherited by argon2's lane threads), so that
    when sign-ins and requests compete for the cores, requests win. ``turns`` lets a caller wait
    for a free thread before taking anything else (a database connection) for the sign-in."""

    def __init__(self, concurrency: int) -> None:
        self.turns = asyncio.Semaphore(concurrency)
        self._threads = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="password-check", initializer=_yield_the_cpu
        )

    async def matches(self, password_hash: str, password: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(self._threads, _matches, password_hash, password)

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._threads, _hasher.hash, password)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)


def _yield_the_cpu() -> None:
    if sys.platform == "linux":  # Linux's nice value is per thread; elsewhere this thread keeps its own
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


async def verify_login(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    as_of: datetime,
    policy: LoginPolicy,
    checks: PasswordChecks,
) -> StaffUser | None:
    """The user if the password is right and the account is not locked; None otherwise.

    Callers show one generic message for every None, so an attacker learns nothing about which
    emails exist. ``policy.max_failures`` wrong passwords lock the account for
    ``policy.lockout``; the caller commits, so the count survives the failed request.
    """
    user = await get_user(session, email)
    if user is None or user.disabled_at is not None:
        await checks.matches(_UNKNOWN_USER_HASH, password)
        return None
    locked = select(StaffUser).where(col(StaffUser.id) == user.id).with_for_update()
    user = (await session.exec(locked)).one()
    if user.locked_until is not None and user.locked_until > as_of:
        return None
    if not await checks.matches(user.password_hash, password):
        user.failed_logins += 1
        if user.failed_logins >= policy.max_failures:
            user.locked_until = as_of + policy.lockout
            user.failed_logins = 0
        session.add(user)
        return None
    user.failed_logins = 0
    user.locked_until = None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = await checks.hash(password)
    session.add(user)
    return user


def _matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
