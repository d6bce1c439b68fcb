"""Reading a batch of raw usage events: exact decimals, per-event validation with stable codes.

Pure: the caller supplies the known customers and meters and the time the batch was received.
A rejected event never stops the rest of its batch.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from ledger.errors import InvalidInput

MAX_EVENT_ID_LENGTH = 255
FUTURE_TOLERANCE = timedelta(minutes=5)


class Code:
    """Stable rejection codes of the event API."""

    INVALID_ID = "INVALID_ID"
    INVALID_EVENT = "INVALID_EVENT"
    UNKNOWN_CUSTOMER = "UNKNOWN_CUSTOMER"
    UNKNOWN_EVENT_TYPE = "UNKNOWN_EVENT_TYPE"
    TIMESTAMP_OUT_OF_RANGE = "TIMESTAMP_OUT_OF_RANGE"
    INVALID_VALUE = "INVALID_VALUE"
    PROPERTIES_TOO_LARGE = "PROPERTIES_TOO_LARGE"


#: Rejections kept in quarantine, to be replayed once the customer or the meter exists.
QUARANTINED_CODES = frozenset({Code.UNKNOWN_CUSTOMER, Code.UNKNOWN_EVENT_TYPE})


class BodyNotEvents(InvalidInput):
    """The body is neither a JSON array of events nor NDJSON: the whole request is refused."""

    code = "INVALID_BODY"


@dataclass(frozen=True)
class MeterRule:
    """What ingestion needs of a meter: the property it reads and the dimensions it splits by."""

    meter_id: uuid.UUID
    aggregation: str
    value_property: str | None
    group_by: tuple[str, ...]


@dataclass(frozen=True)
class Measurement:
    """One event seen by one meter: its dimensions and the value the meter reads."""

    meter_id: uuid.UUID
    dimensions: str  # canonical JSON object of the meter's group_by properties
    value: Decimal | None  # sum, max, latest
    unique_value: str | None  # unique_count: the distinct value as JSON text


@dataclass(frozen=True)
class ValidEvent:
    index: int
    event_id: str
    customer_id: uuid.UUID
    event_type: str
    occurred_at: datetime
    properties_json: str
    measurements: tuple[Measurement, ...]


@dataclass(frozen=True)
class Rejection:
    index: int
    code: str
    message: str
    event_id: str | None = None
    payload: Any = None

    @property
    def quarantined(self) -> bool:
        return self.code in QUARANTINED_CODES


@dataclass
class ReadBatch:
    valid: list[ValidEvent] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    duplicates_in_batch: int = 0


def parse_body(body: bytes, *, ndjson: bool) -> list[Any]:
    """Events from a JSON array or NDJSON body; numbers are read as exact decimals."""
    try:
        if ndjson:
            return [loads_exact(line) for line in body.splitlines() if line.strip()]
        document = loads_exact(body)
    except (msgspec.DecodeError, ValueError) as error:
        raise BodyNotEvents(f"not JSON or NDJSON: {error}", field="body") from None
    if not isinstance(document, list):
        raise BodyNotEvents("send a JSON array of events, or NDJSON (one event a line)", field="body")
    return document


_decoder = msgspec.json.Decoder(float_hook=Decimal)
_encoder = msgspec.json.Encoder(decimal_format="number", order="sorted")


def loads_exact(text: str | bytes) -> Any:
    """JSON in which every non-integer number is an exact Decimal (NaN and Infinity refused)."""
    return _decoder.decode(text)


def canonical_json(value: Any) -> str:
    """JSON text with sorted keys in which decimals keep their exact digits (never a float)."""
    return _encoder.encode(value).decode()


def _plain_number(value: Any) -> Any:
    """A dimension value spelled as PostgreSQL's jsonb prints it (1E+3 → 1000), so dimensions
    read back from the rollups match those computed from raw events."""
    return Decimal(format(value, "f")) if isinstance(value, Decimal) else value


def read_value(raw: Any) -> Decimal | None:
    """A meter value from a JSON number or a decimal string; None when it is neither."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, Decimal | int):
        value = Decimal(raw)
    elif isinstance(raw, str):
        try:
            value = Decimal(raw.strip())
        except InvalidOperation:
            return None
    else:
        return None
    return value if value.is_finite() else None


def _parse_timestamp(raw: Any) -> datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        parsed = datetime.fromisoformat(raw.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def measure(properties: dict[str, Any], rule: MeterRule) -> Measurement | str:
    """What a meter reads of an event's properties, or why it cannot (an INVALID_VALUE message)."""
    dimensions = canonical_json({key: _plain_number(properties.get(key)) for key in rule.group_by})
    value = unique_value = None
    if rule.aggregation in ("sum", "max", "latest"):
        assert rule.value_property is not None
        value = read_value(properties.get(rule.value_property))
        if value is None:
            return f"properties.{rule.value_property} must be a number or a decimal string"
    elif rule.aggregation == "unique_count":
        assert rule.value_property is not None
        raw = properties.get(rule.value_property)
        if isinstance(raw, bool) or not isinstance(raw, str | int | Decimal) or raw == "":
            return f"properties.{rule.value_property} must be a string or a number"
        unique_value = canonical_json(raw)
    return Measurement(rule.meter_id, dimensions, value, unique_value)


def dimension_text(value: Any) -> str:
    """A dimension value as catalog ``where`` filters write it: the string itself, else JSON."""
    return value if isinstance(value, str) else canonical_json(value)


def read_events(
    items: list[Any],
    *,
    customers: dict[str, uuid.UUID],
    meters_by_event_type: dict[str, list[MeterRule]],
    received_at: datetime,
    max_age: timedelta,
    max_properties_bytes: int,
) -> ReadBatch:
    """Validate each event; the first occurrence of an id in a batch wins, later ones are
    duplicates (as they would be across batches)."""
    batch = ReadBatch()
    seen_ids: set[str] = set()
    for index, item in enumerate(items):
        outcome = _read_event(index, item, customers, meters_by_event_type, received_at, max_age, max_properties_bytes)
        if isinstance(outcome, Rejection):
            batch.rejected.append(outcome)
        elif outcome.event_id in seen_ids:
            batch.duplicates_in_batch += 1
        else:
            seen_ids.add(outcome.event_id)
            batch.valid.append(outcome)
    return batch


def _read_event(
    index: int,
    item: Any,
    customers: dict[str, uuid.UUID],
    meters_by_event_type: dict[str, list[MeterRule]],
    received_at: datetime,
    max_age: timedelta,
    max_properties_bytes: int,
) -> ValidEvent | Rejection:
    if not isinstance(item, dict):
        return Rejection(index, Code.INVALID_EVENT, "an event is a JSON object")
    event_id = item.get("id")
    if not isinstance(event_id, str) or not event_id.strip() or len(event_id) > MAX_EVENT_ID_LENGTH:
        return Rejection(
            index,
            Code.INVALID_ID,
            f"id must be a non-empty string of at most {MAX_EVENT_ID_LENGTH} characters",
        )
    for name in ("customer", "type"):
        if not isinstance(item.get(name), str) or not item[name].strip():
            return Rejection(index, Code.INVALID_EVENT, f"{name} must be a non-empty string", event_id)
    properties = item.get("properties", {})
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        return Rejection(index, Code.INVALID_EVENT, "properties must be a JSON object", event_id)
    properties_json = canonical_json(properties)
    if len(properties_json.encode()) > max_properties_bytes:
        return Rejection(index, Code.PROPERTIES_TOO_LARGE, f"properties exceed {max_properties_bytes} bytes", event_id)
    occurred_at = _parse_timestamp(item.get("timestamp"))
    if occurred_at is None:
        return Rejection(
            index,
            Code.INVALID_EVENT,
            "timestamp must be ISO 8601 with an offset, e.g. 2026-11-03T10:15:00Z",
            event_id,
        )
    if not received_at - max_age <= occurred_at <= received_at + FUTURE_TOLERANCE:
        return Rejection(
            index,
            Code.TIMESTAMP_OUT_OF_RANGE,
            f"timestamp must be within the last {max_age.days} days and at most 5 minutes ahead",
            event_id,
        )
    rules = meters_by_event_type.get(item["type"])
    if not rules:
        return Rejection(
            index, Code.UNKNOWN_EVENT_TYPE, f"no meter reads events of type {item['type']!r}", event_id, item
        )
    measurements = []
    for rule in rules:
        measured = measure(properties, rule)
        if isinstance(measured, str):
            return Rejection(index, Code.INVALID_VALUE, measured, event_id)
        measurements.append(measured)
    customer_id = customers.get(item["customer"])
    if customer_id is None:
        return Rejection(
            index, Code.UNKNOWN_CUSTOMER, f"no customer with external id {item['customer']!r}", event_id, item
        )
    return ValidEvent(index, event_id, customer_id, item["type"], occurred_at, properties_json, tuple(measurements))
