"""The schema, merged from each domain's Query and Mutation types, with its limits."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable
from inspect import isawaitable
from pathlib import Path
from typing import Any

import strawberry
from graphql import GraphQLError, GraphQLResolveInfo
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.extensions.tracing import OpenTelemetryExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types

from app.api.alerts import AlertsMutation, AlertsQuery, EntitlementExhaustion
from app.api.anomalies import AnomaliesMutation, AnomaliesQuery
from app.api.audit import AuditQuery
from app.api.authorizations import AuthorizationsMutation
from app.api.billing import BillingQuery
from app.api.calendar import CalendarMutation
from app.api.catalog import CatalogQuery
from app.api.charges import ChargesMutation
from app.api.collection import CollectionMutation, CollectionQuery, FinanceMutation, ReconciliationMutation
from app.api.coupons import CouponsMutation, CouponsQuery
from app.api.credit_note_mutations import CreditNotesMutation
from app.api.credit_notes import CreditNotesQuery
from app.api.customer_updates import BillingDetailsMutation
from app.api.customers import CustomersMutation, CustomersQuery
from app.api.invoice_documents import InvoiceDocumentsMutation
from app.api.invoice_list import InvoiceListQuery
from app.api.ledger import CorrectionsMutation, LedgerMutation
from app.api.ledger_statement import LedgerStatementQuery
from app.api.lifecycle_mutations import LifecycleMutation
from app.api.metering import MeteringMutation, MeteringQuery, QuarantineMutation
from app.api.notifications import NotificationsMutation, NotificationsQuery
from app.api.overview import OverviewQuery
from app.api.plan_changes import PlanChangeMutation
from app.api.plan_subscribers import PlanSubscribersQuery
from app.api.price_overrides import PriceOverridesMutation
from app.api.promotions import PromotionsMutation, PromotionsQuery
from app.api.scalars import SCALAR_MAP
from app.api.simulation import SimulationMutation
from app.api.taxes import TaxesMutation, TaxesQuery
from app.api.topups import TopUpsMutation
from app.api.traces import TracesQuery
from app.api.webhook_endpoints import WebhooksMutation, WebhooksQuery
from app.database import is_database_unavailable
from app.http_errors import UNAVAILABLE
from app.settings import Settings
from app.telemetry import current_trace_id
from ledger.errors import TallyError

logger = logging.getLogger("tally.graphql")
SDL_PATH = Path(__file__).resolve().parents[2] / "graphql" / "schema.graphql"
# The frontend and the console send the same few operation texts: parsing and validating each
# once per process saves milliseconds a request. Bounded, so unique texts cannot grow memory.
GRAPHQL_DOCUMENTS_CACHED = 256

Query = merge_types(
    "Query",
    (
        CustomersQuery,
        AlertsQuery,
        CatalogQuery,
        MeteringQuery,
        PromotionsQuery,
        CouponsQuery,
        TracesQuery,
        BillingQuery,
        CreditNotesQuery,
        CollectionQuery,
        AnomaliesQuery,
        TaxesQuery,
        NotificationsQuery,
        WebhooksQuery,
        OverviewQuery,
        InvoiceListQuery,
        LedgerStatementQuery,
        PlanSubscribersQuery,
        AuditQuery,
    ),
)
Mutation = merge_types(
    "Mutation",
    (
        CustomersMutation,
        AlertsMutation,
        BillingDetailsMutation,
        MeteringMutation,
        AuthorizationsMutation,
        QuarantineMutation,
        LedgerMutation,
        CorrectionsMutation,
        PromotionsMutation,
        CouponsMutation,
        PlanChangeMutation,
        SimulationMutation,
        CollectionMutation,
        FinanceMutation,
        ReconciliationMutation,
        AnomaliesMutation,
        ChargesMutation,
        InvoiceDocumentsMutation,
        CreditNotesMutation,
        LifecycleMutation,
        PriceOverridesMutation,
        CalendarMutation,
        TaxesMutation,
        NotificationsMutation,
        WebhooksMutation,
        TopUpsMutation,
    ),
)


class MaskUnexpectedErrors(MaskErrors):
    """Hide unexpected errors from clients, but give them the trace id to quote, and log it. A
    refusal (a ``TallyError``) raised by a query is no surprise: it is answered with its message
    (after the argument at fault, ``first: must be…``), its ``code`` and that argument (``field``, a
    path like a userError's) in the error's extensions, and only the field that raised it is null."""

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        if isinstance(error.original_error, TallyError):
            refusal = error.original_error
            return GraphQLError(
                f"{refusal.field}: {refusal.message}" if refusal.field else refusal.message,
                nodes=error.nodes,
                source=error.source,
                positions=error.positions,
                path=error.path,
                extensions={"code": refusal.code, **({"field": [refusal.field]} if refusal.field else {})},
            )
        if error.original_error is not None and is_database_unavailable(error.original_error):
            return GraphQLError(
                UNAVAILABLE.message,
                nodes=error.nodes,
                source=error.source,
                positions=error.positions,
                path=error.path,
                extensions={"code": UNAVAILABLE.code},
            )
        trace_id = current_trace_id()
        logger.error("unexpected error in %s (trace %s)", error.path, trace_id, exc_info=error.original_error)
        return GraphQLError(
            f"Unexpected error; quote trace id {trace_id or 'unknown'} when reporting it.",
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions={"code": "INTERNAL", "traceId": trace_id},
        )


class RootFieldTracing(OpenTelemetryExtension):
    """Spans for the operation and its root fields only: one span per nested field of every row
    of a list drowned traces (25 customers → 50 spans) and slowed the page it traced. Nested
    fields' SQL still shows, under the operation's span."""

    async def resolve(
        self, _next: Callable[..., Any], root: Any, info: GraphQLResolveInfo, *args: str, **kwargs: Any
    ) -> Any:
        if info.path.prev is None:
            return await super().resolve(_next, root, info, *args, **kwargs)
        result = _next(root, info, *args, **kwargs)
        return await result if isawaitable(result) else result

    def filter_resolver_args(self, args: dict[str, Any], info: GraphQLResolveInfo) -> dict[str, Any]:
        """Resolver arguments may hold personal data (names, emails): none is kept in spans, so
        none is copied either (the base class deep-copies them first, and a deep copy of an
        event's deeply nested properties exhausts the stack)."""
        return {}


class ConnectionFirst(SchemaExtension):
    """Root fields resolve concurrently on the request's one AsyncSession. A session holding no
    connection (a fresh one, or one whose mutation just committed) would then have each root field
    provision one at the same moment, which SQLAlchemy refuses; so the connection comes first."""

    async def on_execute(self) -> AsyncIterator[None]:
        session = getattr(self.execution_context.context, "session", None)  # absent: nothing to resolve on
        if session is not None:
            await session.connection()
        yield


def _unexpected(error: GraphQLError) -> bool:
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


def build_schema(settings: Settings) -> strawberry.Schema:
    """The schema with the settings' limits: built once per process for given limits, since
    building it walks every type and field (a tenth of a second) and it holds no state of its own
    (its caches live at module level)."""
    return _schema_with_limits(settings.graphql_max_depth, settings.graphql_max_aliases, settings.graphql_max_tokens)


@functools.cache
def _schema_with_limits(max_depth: int, max_aliases: int, max_tokens: int) -> strawberry.Schema:
    # The limits' validation rules are classes made by their limiter: made once here, so that a
    # document validated once is found in the validation cache (keyed by document and rules).
    limit_rules = [
        *QueryDepthLimiter(max_depth=max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=max_aliases).validation_rules,
    ]
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        types=[EntitlementExhaustion],  # no field answers it: the entitlement.exhausted event's data
        config=StrawberryConfig(scalar_map=SCALAR_MAP),
        extensions=[
            lambda: MaxTokensLimiter(max_token_count=max_tokens),
            lambda: AddValidationRules(limit_rules),
            lambda: ParserCache(maxsize=GRAPHQL_DOCUMENTS_CACHED),
            lambda: ValidationCache(maxsize=GRAPHQL_DOCUMENTS_CACHED),
            RootFieldTracing,
            lambda: MaskUnexpectedErrors(should_mask_error=_unexpected),
            ConnectionFirst,
        ],
    )


def sdl() -> str:
    """The schema's SDL as committed in graphql/schema.graphql (limits do not change it)."""
    return build_schema(Settings()).as_str() + "\n"
