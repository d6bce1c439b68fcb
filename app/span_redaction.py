"""What a span may keep once it leaves the process: ids, counts, amounts, outcomes and the shape
of the work, never personal data.

Every finished span passes through ``RedactingSpanExporter`` on its way to the PostgreSQL span
store or to OTLP, so one place decides, whatever instrumentation made the span:

- URLs lose their query string and fragment (a console search for an email is in the query);
- SQL keeps its shape with every literal replaced by ``?`` (a search pattern is inlined as a
  literal on purpose, for the trigram index; see ``customers.repository``);
- a GraphQL operation keeps its name (in the span name), not its document, whose inline
  arguments may hold names and emails; resolver arguments are never recorded at all;
- client IP addresses are dropped;
- exception events keep the exception's type, not its message or stack trace (a database error
  quotes the row it refused), and a span's status keeps its code, not its description. The
  server log keeps the detail, under the trace id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status
from sqlparse import tokens as sql_tokens
from sqlparse.lexer import Lexer

URL_KEYS = frozenset({"http.url", "url.full", "http.target"})
SQL_KEYS = frozenset({"db.statement", "db.query.text"})
DROPPED_KEYS = frozenset({"url.query", "net.peer.ip", "client.address", "http.client_ip", "net.sock.peer.addr"})
GRAPHQL_DOCUMENT_KEY = "query"  # set by Strawberry's OpenTelemetry extension on the operation span
EXCEPTION_KEYS_KEPT = frozenset({"exception.type", "exception.escaped"})
SQL_LITERAL = "?"


def without_query(url: str) -> str:
    return url.split("#", 1)[0].split("?", 1)[0]


@lru_cache(maxsize=1024)
def sql_without_literals(statement: str) -> str:
    """The statement with every string, number and dollar-quoted literal replaced by ``?``;
    identifiers (quoted ones too) and driver placeholders (``%s``, ``%(name)s``) stay."""
    return "".join(
        SQL_LITERAL if token_type in sql_tokens.Literal and token_type not in sql_tokens.String.Symbol else value
        for token_type, value in Lexer.get_default_instance().get_tokens(statement)
    )


def redacted_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    if not attributes:
        return {}
    graphql = attributes.get("component") == "graphql"
    kept: dict[str, Any] = {}
    for key, value in attributes.items():
        if key in DROPPED_KEYS or key.startswith("graphql.param.") or (graphql and key == GRAPHQL_DOCUMENT_KEY):
            continue
        if key in URL_KEYS and isinstance(value, str):
            value = without_query(value)
        elif key in SQL_KEYS and isinstance(value, str):
            value = sql_without_literals(value)
        kept[key] = value
    return kept


def redacted_event(event: Event) -> Event:
    attributes: Mapping[str, Any] = event.attributes or {}
    if event.name == "exception":
        attributes = {key: value for key, value in attributes.items() if key in EXCEPTION_KEYS_KEPT}
    else:
        attributes = redacted_attributes(attributes)
    return Event(event.name, attributes=attributes, timestamp=event.timestamp)


def redacted(span: ReadableSpan) -> ReadableSpan:
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=redacted_attributes(span.attributes),
        events=[redacted_event(event) for event in span.events],
        links=span.links,
        kind=span.kind,
        status=Status(span.status.status_code),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingSpanExporter(SpanExporter):
    """Hands ``exporter`` each span as ``redacted`` makes it."""

    def __init__(self, exporter: SpanExporter):
        self.exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.exporter.export([redacted(span) for span in spans])

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.exporter.force_flush(timeout_millis)
