"""Tables of the composition root: API tokens, console staff users and their sessions, the span store."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel


class ApiToken(SQLModel, table=True):
    """A bearer token; only its SHA-256 is stored, so a database leak reveals no token."""

    __tablename__ = "api_tokens"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    prefix: str = Field(sa_column=Column(String(16), nullable=False))
    role: str
    customer_id: uuid.UUID | None = Field(default=None, sa_column=Column(ForeignKey("customers.id"), nullable=True))
    label: str | None = None
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class StaffUser(SQLModel, table=True):
    """A console user: argon2 password hash, role, and the counters behind the login lockout."""

    __tablename__ = "staff_users"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    email: str = Field(sa_column=Column(String, nullable=False, unique=True))
    password_hash: str
    role: str
    failed_logins: int = 0
    locked_until: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    disabled_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class ConsoleSession(SQLModel, table=True):
    """A console sign-in, kept server-side: the signed session cookie carries only this id, so
    ending the row (sign-out) ends every copy of the cookie at once."""

    __tablename__ = "console_sessions"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    staff_user_id: uuid.UUID = Field(sa_column=Column(ForeignKey("staff_users.id"), nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    last_seen_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    ended_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class StoredSpan(SQLModel, table=True):
    """A finished span kept for the console's trace pages when no OTLP endpoint is set."""

    __tablename__ = "spans"

    trace_id: str = Field(sa_column=Column(String(32), primary_key=True))
    span_id: str = Field(sa_column=Column(String(16), primary_key=True))
    parent_span_id: str | None = Field(default=None, sa_column=Column(String(16)))
    name: str = Field(sa_column=Column(Text, nullable=False))
    kind: str
    status: str
    start_time: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    duration_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    attributes: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    events: list[dict[str, Any]] = Field(sa_column=Column(JSONB, nullable=False))
    links: list[dict[str, Any]] = Field(sa_column=Column(JSONB, nullable=False))
