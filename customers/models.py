"""Customers and their subscriptions to plan versions."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Column, DateTime, ForeignKey, String
from sqlmodel import Field, SQLModel

CUSTOMER_STATUSES = ("ACTIVE", "PAST_DUE", "SUSPENDED")


class Customer(SQLModel, table=True):
    __tablename__ = "customers"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    external_id: str = Field(sa_column=Column(String, nullable=False, unique=True))
    name: str
    email: str | None = None
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    status: str = Field(default="ACTIVE")
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class Subscription(SQLModel, table=True):
    """A customer's plan version; billing periods are anchored on ``started_at``."""

    __tablename__ = "subscriptions"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    customer_id: uuid.UUID = Field(sa_column=Column(ForeignKey("customers.id"), nullable=False, unique=True))
    plan_version_id: uuid.UUID = Field(sa_column=Column(ForeignKey("plan_versions.id"), nullable=False))
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
