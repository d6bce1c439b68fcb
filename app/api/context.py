"""The per-request GraphQL context: the session, the viewer, and per-request DataLoaders."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from functools import cached_property

from sqlmodel.ext.asyncio.session import AsyncSession
from strawberry.dataloader import DataLoader
from strawberry.fastapi import BaseContext

from app.auth import Viewer
from app.billing_run import billing_window
from app.settings import Settings
from billing.discounts import coupons
from billing.invoices import credit_notes_repository, failures
from billing.invoices import service as billing
from billing.models import BillingFailure, CreditNote, CreditNoteLine, Invoice, InvoiceLine, InvoiceTaxLine
from customers import price_overrides
from customers import service as customers
from customers.models import Customer, PriceOverride, Subscription
from ledger.repository import share_between_tasks
from metering.event_log import EventLog
from pricing import repository as catalog
from pricing.models import Meter, Plan, PlanCharge, PlanVersion


class Loaders:
    """Batch the nested fields of a list into one query each (no N+1 on list pages)."""

    def __init__(self, session: AsyncSession):
        self.session = session

    @cached_property
    def subscription_by_customer(self) -> DataLoader[uuid.UUID, Subscription | None]:
        async def load(ids: list[uuid.UUID]) -> list[Subscription | None]:
            found = await customers.subscriptions_of(self.session, ids)
            return [found.get(i) for i in ids]

        return DataLoader(load_fn=load)

    @cached_property
    def subscriptions_by_customer(self) -> DataLoader[uuid.UUID, list[Subscription]]:
        async def load(ids: list[uuid.UUID]) -> list[list[Subscription]]:
            found = await customers.all_subscriptions_of(self.session, ids)
            return [found[i] for i in ids]

        return DataLoader(load_fn=load)

    @cached_property
    def customer(self) -> DataLoader[uuid.UUID, Customer | None]:
        async def load(ids: list[uuid.UUID]) -> list[Customer | None]:
            found = await customers.customers_by_ids(self.session, ids)
            return [found.get(i) for i in ids]

        return DataLoader(load_fn=load)

    @cached_property
    def plan_version(self) -> DataLoader[uuid.UUID, tuple[Plan, PlanVersion]]:
        async def load(ids: list[uuid.UUID]) -> list[tuple[Plan, PlanVersion]]:
            found = await catalog.plan_versions_by_id(self.session, ids)
            return [found[i] for i in ids]

        return DataLoader(load_fn=load)

    @cached_property
    def charges_by_version(self) -> DataLoader[uuid.UUID, list[tuple[PlanCharge, Meter]]]:
        async def load(ids: list[uuid.UUID]) -> list[list[tuple[PlanCharge, Meter]]]:
            grouped: dict[uuid.UUID, list[tuple[PlanCharge, Meter]]] = {i: [] for i in ids}
            for charge, meter in await catalog.charges_of(self.session, ids):
                grouped[charge.plan_version_id].append((charge, meter))
            return [grouped[i] for i in ids]

        return DataLoader(load_fn=load)

    @cached_property
    def billing_failure(self) -> DataLoader[uuid.UUID, BillingFailure | None]:
        async def load(ids: list[uuid.UUID]) -> list[BillingFailure | None]:
            found = await failures.failures_of(self.session, ids)
            return [found.get(i) for i in ids]

        return DataLoader(load_fn=load)

    @cached_property
    def dropped_price_overrides(self) -> DataLoader[uuid.UUID, list[PriceOverride]]:
        """By plan change: the price overrides it dropped."""

        async def load(ids: list[uuid.UUID]) -> list[list[PriceOverride]]:
            found = await price_overrides.dropped_by(self.session, ids)
            return [found[i] for i in ids]

        return DataLoader(load_fn=load)

    @cached_property
    def discounts(self) -> DataLoader[uuid.UUID, list[coupons.ActiveDiscount]]:
        """By customer: their discounts with periods left, in the order they stack."""

        async def load(ids: list[uuid.UUID]) -> list[list[coupons.ActiveDiscount]]:
            found = await coupons.active_discounts(self.session, ids)
            return [found[i] for i in ids]

        return DataLoader(load_fn=load)

    @cached_property
    def invoice(self) -> DataLoader[uuid.UUID, Invoice]:
        async def load(ids: list[uuid.UUID]) -> list[Invoice]:
            found = await billing.invoices_by_id(self.session, ids)
            return [found[i] for i in ids]

        return DataLoader(load_fn=load)

    @cached_property
    def credit_notes_by_invoice(self) -> DataLoader[uuid.UUID, list[CreditNote]]:
        async def load(ids: list[uuid.UUID]) -> list[list[CreditNote]]:
            found = await credit_notes_repository.notes_of_invoices(self.session, ids)
            return [found[i] for i in ids]

        return DataLoader(load_fn=load)

    @cached_property
    def credit_note_lines(self) -> DataLoader[uuid.UUID, list[CreditNoteLine]]:
        async def load(ids: list[uuid.UUID]) -> list[list[CreditNoteLine]]:
            found = await credit_notes_repository.lines_of_notes(self.session, ids)
            return [found[i] for i in ids]

        return DataLoader(load_fn=load)

    @cached_property
    def invoice_lines(self) -> DataLoader[uuid.UUID, list[InvoiceLine]]:
        async def load(ids: list[uuid.UUID]) -> list[list[InvoiceLine]]:
            found = await billing.lines_of(self.session, ids)
            return [found[i] for i in ids]

        return DataLoader(load_fn=load)

    @cached_property
    def invoice_tax_lines(self) -> DataLoader[uuid.UUID, list[InvoiceTaxLine]]:
        async def load(ids: list[uuid.UUID]) -> list[list[InvoiceTaxLine]]:
            found = await billing.tax_lines_of(self.session, ids)
            return [found[i] for i in ids]

        return DataLoader(load_fn=load)


class TallyContext(BaseContext):
    def __init__(
        self, *, session: AsyncSession, viewer: Viewer | None, settings: Settings, event_log: EventLog | None = None
    ):
        super().__init__()
        share_between_tasks(session)  # sibling fields resolve concurrently on this one session
        self.session = session
        self._viewer = viewer
        self.settings = settings
        self.event_log = event_log  # the process's connection to the event log (edge mode), else None
        self.loaders = Loaders(session)
        self._upcoming: dict[uuid.UUID, asyncio.Future[billing.UpcomingInvoice | None]] = {}

    async def upcoming_invoice(self, customer_id: uuid.UUID) -> billing.UpcomingInvoice | None:
        """The customer's upcoming invoice, composed once per request: the balance's unbilled
        amount and the upcomingInvoice field read the same preview."""
        if customer_id not in self._upcoming:
            self._upcoming[customer_id] = asyncio.ensure_future(
                billing.upcoming_invoice(
                    self.session, customer_id, as_of=self.now(), window=billing_window(self.settings)
                )
            )
        return await self._upcoming[customer_id]

    @property
    def viewer(self) -> Viewer:
        """The authenticated viewer; permission classes run before any resolver reads it."""
        assert self._viewer is not None, "resolver reached without an authenticated viewer"
        return self._viewer

    @property
    def authenticated(self) -> bool:
        return self._viewer is not None

    def now(self) -> datetime:
        """The request's ``as_of``: the one place a GraphQL request reads the clock."""
        return datetime.now(UTC)
