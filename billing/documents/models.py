"""The stored documents of invoices and credit notes."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Column, DateTime, ForeignKey, LargeBinary, String, Text
from sqlmodel import Field, SQLModel


class StoredDocument(SQLModel, table=True):
    """A rendered PDF, once per (invoice, kind, locale, payment status): written on first request
    and never rewritten, so every later download is byte for byte the document first sent with
    that status (the invoice's lines and totals never change; only its status moves on, and a
    paid invoice's document says paid)."""

    __tablename__ = "invoice_documents"

    invoice_id: uuid.UUID = Field(sa_column=Column(ForeignKey("invoices.id"), primary_key=True))
    kind: str = Field(sa_column=Column(Text, primary_key=True))
    locale: str = Field(sa_column=Column(Text, primary_key=True))
    status: str = Field(sa_column=Column(Text, primary_key=True))
    sha256: str = Field(sa_column=Column(String(64), nullable=False))
    pdf: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    rendered_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class StoredCreditNoteDocument(SQLModel, table=True):
    """A credit note's rendered PDF, once per (note, locale): written on first request and never
    rewritten (a trigger refuses it), like an invoice's."""

    __tablename__ = "credit_note_documents"

    credit_note_id: uuid.UUID = Field(sa_column=Column(ForeignKey("credit_notes.id"), primary_key=True))
    locale: str = Field(sa_column=Column(Text, primary_key=True))
    sha256: str = Field(sa_column=Column(String(64), nullable=False))
    pdf: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    rendered_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
