"""Reading a batch of raw usage events: exact decimals, per-event validation with stable codes.

Pure: the caller supplies the known customers and meters and the time the batch was received.
A rejected event never stops the rest of its batch.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any

import msgspec

from metering.errors import BodyNotEvents

MAX_EVENT_ID_LENGTH = 255
FUTURE_TOLERANCE = timedelta(minutes=5)
#: The fields of an event: what quarantine keeps of one (anything else is ignored, never stored).
#: ``authorization`` (optional) is the id of the usage authorization the event uses and settles.
EVENT_FIELDS = ("id", "customer", "type", "timestamp", "properties", "authorization")
#: Digits a number in an event's properties may have before, and after, the decimal point.
#: PostgreSQL's jsonb refuses more than 131,072 and 16,383; Tally's bound is tighter so that no
#: number of a few bytes expands into megabytes where PostgreSQL prints it plainly (dimensions,
#: stored properties), and loose enough for anything a 64-bit float can write (1.8e308, 5e-324).
PROPERTY_NUMBER_DIGITS = 1000
_PROPERTY_INT_BOUND = 10**PROPERTY_NUMBER_DIGITS
#: Significant digits of a meter's value at the largest bounds settings allow (10^30, 30 places).
MAX_QUANTITY_DIGITS = 61


class Code:
    """Stable rejection codes of the event API."""

    INVALID_ID = "INVALID_ID"
    INVALID_EVENT = "INVALID_EVENT"
    UNKNOWN_CUSTOMER = "UNKNOWN_CUSTOMER"
    UNKNOWN_EVENT_TYPE = "UNKNOWN_EVENT_TYPE"
    TIMESTAMP_OUT_OF_RANGE = "TIMESTAMP_OUT_OF_RANGE"
    INVALID_VALUE = "INVALID_VALUE"
    INVALID_PROPERTIES = "INVALID_PROPERTIES"
    PROPERTIES_TOO_LARGE = "PROPERTIES_TOO_LARGE"
    PROPERTIES_TOO_DEEP = "PROPERTIES_TOO_DEEP"
    SUBSCRIPTION_CANCELED = "SUBSCRIPTION_CANCELED"
    SUBSCRIPTION_PAUSED = "SUBSCRIPTION_PAUSED"


#: Rejections kept in quarantine, to be replayed once the customer or the meter exists.
QUARANTINED_CODES = frozenset({Code.UNKNOWN_CUSTOMER, Code.UNKNOWN_EVENT_TYPE})


@dataclass(frozen=True)
class IngestLimits:
    """What an event may be: its age, and the size, nesting and numbers of its properties.

    The bounds of a value a meter reads (``quantity_max``, ``quantity_max_places``) keep every
    stored quantity, and every sum of them, within what rating computes exactly; settings declare
    them (``TALLY_QUANTITY_MAX``, ``TALLY_QUANTITY_MAX_PLACES``)."""

    max_age: timedelta
    max_properties_bytes: int
    max_properties_depth: int
    quantity_max: Decimal
    quantity_max_places: int


@dataclass(frozen=True)
class MeterRule:
    """What ingestion needs of a meter: the property it reads, the dimensions it splits by, and
    whether a value it reads may be negative."""

    meter_id: uuid.UUID
    aggregation: str
    value_property: str | None
    group_by: tuple[str, ...]
    allow_negative: bool = False


@dataclass(frozen=True)
class Unreadable:
    """An element of a batch that is JSON but cannot be read as a value (nested deeper than the
    decoder follows, or an integer of thousands of digits): it stands in for the event, which is
    then rejected on its own while the rest of the batch is read."""

    code: str
    message: str


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
    authorization_id: uuid.UUID | None = None  # the authorization this event settles


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
    _seen_ids: set[str] = field(default_factory=set, repr=False)

    def add(self, outcome: ValidEvent | Rejection) -> None:
        """Sort one event's outcome: the first occurrence of an id in a batch wins, later ones
        are duplicates (as they would be across batches)."""
        if isinstance(outcome, Rejection):
            self.rejected.append(outcome)
        elif outcome.event_id in self._seen_ids:
            self.duplicates_in_batch += 1
        else:
            self._seen_ids.add(outcome.event_id)
            self.valid.append(outcome)


def parse_body(body: bytes, *, ndjson: bool) -> list[Any]:
    """Events from a JSON array or NDJSON body; numbers are read as exact decimals.

    A body that is not JSON or NDJSON is refused whole. An event that is JSON but beyond what the
    decoder reads becomes an :class:`Unreadable` in its place, so the batch's other events are
    still read: the whole body is decoded at once, and only when that fails so is each element.
    """
    try:
        if ndjson:
            return [_load_event(line) for line in body.splitlines() if line.strip()]
        try:
            document = loads_exact(body)
        except (RecursionError, msgspec.ValidationError):
            document = [_load_event(element) for element in _array_elements(body)]
    except (msgspec.DecodeError, ValueError) as error:
        raise BodyNotEvents(f"not JSON or NDJSON: {error}", field="body") from None
    if not isinstance(document, list):
        raise BodyNotEvents("send a JSON array of events, or NDJSON (one event a line)", field="body")
    return document


def _load_event(text: bytes) -> Any:
    """One event's JSON, or an :class:`Unreadable` when it is valid JSON that cannot be read
    (msgspec follows nesting as deep as Python's recursion limit, and integers up to 4,300
    digits); malformed JSON raises."""
    try:
        return loads_exact(text)
    except RecursionError:
        return Unreadable(Code.PROPERTIES_TOO_DEEP, "the event nests too deep to be read")
    except msgspec.ValidationError:
        return Unreadable(Code.INVALID_PROPERTIES, "the event has a number too large to be read")


# A JSON string (skipped whole, escapes included) or one of the characters that give an array
# its structure.
_JSON_STRUCTURE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.DOTALL)


def _array_elements(body: bytes) -> list[bytes]:
    """The texts of the elements of the JSON array ``body``, split at its top-level commas, its
    brackets matched however deep; each element is then decoded on its own, which tells
    malformed JSON (refused whole) from an element that is merely beyond the decoder."""
    text = body.strip()
    if not text.startswith(b"["):
        raise BodyNotEvents("send a JSON array of events, or NDJSON (one event a line)", field="body")
    open_brackets = bytearray()
    start = 1
    elements: list[bytes] = []
    for match in _JSON_STRUCTURE.finditer(text):
        token = match.group()
        if token in (b"[", b"{"):
            open_brackets += token
        elif token in (b"]", b"}"):
            if not open_brackets or open_brackets.pop() != _OPENING[token[0]]:
                break
            if not open_brackets:
                if match.end() != len(text):
                    break
                last = text[start : match.start()]
                return [*elements, last] if elements or last.strip() else []
        elif token == b"," and len(open_brackets) == 1:
            elements.append(text[start : match.start()])
            start = match.end()
    raise BodyNotEvents("not JSON: its brackets do not match", field="body")


_OPENING = {ord("]"): ord("["), ord("}"): ord("{")}


_decoder = msgspec.json.Decoder(float_hook=Decimal)
_encoder = msgspec.json.Encoder(decimal_format="number", order="sorted")


def loads_exact(text: str | bytes) -> Any:
    """JSON in which every non-integer number is an exact Decimal (NaN and Infinity refused)."""
    return _decoder.decode(text)


def canonical_json(value: Any) -> str:
    """JSON text with sorted keys in which decimals keep their exact digits (never a float)."""
    return _encoder.encode(value).decode()


def text_problem(text: str) -> str | None:
    """Why PostgreSQL could not store this text, or None: a NUL character (``text`` and ``jsonb``
    refuse it), or an unpaired surrogate (which GraphQL's JSON lets through and UTF-8 cannot
    encode)."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored"
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return "is not valid Unicode (an unpaired surrogate)"
    return None


def _plain_text(text: str) -> bool:
    """ASCII without NUL: storable at a glance (the common case of ingestion's hot path)."""
    return text.isascii() and "\x00" not in text


def _number_problem(value: int | Decimal) -> str | None:
    """Why a number in properties cannot be stored, or None (see PROPERTY_NUMBER_DIGITS)."""
    if isinstance(value, int):
        fits = -_PROPERTY_INT_BOUND < value < _PROPERTY_INT_BOUND
    elif not value.is_finite():
        return "NaN and Infinity are not JSON numbers"
    else:
        exponent = value.as_tuple().exponent
        assert isinstance(exponent, int)  # finite
        fits = value.adjusted() < PROPERTY_NUMBER_DIGITS and exponent >= -PROPERTY_NUMBER_DIGITS
    if fits:
        return None
    return f"numbers have at most {PROPERTY_NUMBER_DIGITS} digits before and after the decimal point"


def _path_text(path: tuple[str | int, ...]) -> str:
    parts = ["properties"]
    for step in path:
        parts.append(f"[{step}]" if isinstance(step, int) else "." + repr(step)[1:-1][:40])
    return "".join(parts)


def properties_problem(properties: dict[str, Any], *, max_depth: int) -> tuple[str, str] | None:
    """Why PostgreSQL could not store these properties as they are (a code and a message naming
    the place), or None. Walked without recursion, so no nesting exhausts the stack; objects and
    arrays deeper than ``max_depth`` (the properties object is depth 1) are refused. A quick pass
    answers for almost every event; only one it doubts is walked again to name the place."""
    if _storable_at_a_glance(properties, max_depth):
        return None
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(properties, ())]
    while stack:
        value, path = stack.pop()
        problem: str | None = None
        if isinstance(value, dict):
            if len(path) >= max_depth:
                return Code.PROPERTIES_TOO_DEEP, f"{_path_text(path)}: properties nest at most {max_depth} deep"
            for key, item in value.items():
                key_problem = text_problem(key) if isinstance(key, str) else "is not a string"
                if key_problem:
                    return Code.INVALID_PROPERTIES, f"{_path_text((*path, key))}: the name {key_problem}"
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            if len(path) >= max_depth:
                return Code.PROPERTIES_TOO_DEEP, f"{_path_text(path)}: properties nest at most {max_depth} deep"
            stack.extend((item, (*path, index)) for index, item in enumerate(value))
        elif isinstance(value, str):
            problem = text_problem(value)
        elif isinstance(value, int | Decimal) and not isinstance(value, bool):
            problem = _number_problem(value)
        elif value is not None and not isinstance(value, bool):
            problem = "is not a JSON value"
        if problem:
            return Code.INVALID_PROPERTIES, f"{_path_text(path)}: {problem}"
    return None


def _storable_at_a_glance(properties: dict[str, Any], max_depth: int) -> bool:
    """True when nothing in ``properties`` needs a closer look: the same rules as
    :func:`properties_problem`, without paths, exact types first (ingestion's hot path)."""
    pending: list[tuple[dict[str, Any] | list[Any], int]] = [(properties, 1)]
    while pending:
        container, depth = pending.pop()
        if depth > max_depth:
            return False
        if type(container) is dict:
            for key in container:
                if type(key) is not str or "\x00" in key or (not key.isascii() and text_problem(key)):
                    return False
            values: Any = container.values()
        else:
            values = container
        for value in values:
            kind = type(value)
            if kind is str:
                if "\x00" in value or (not value.isascii() and text_problem(value)):
                    return False
            elif kind is int:
                if not -_PROPERTY_INT_BOUND < value < _PROPERTY_INT_BOUND:
                    return False
            elif kind is dict or kind is list:
                pending.append((value, depth + 1))
            elif kind is Decimal:
                if _number_problem(value):
                    return False
            elif value is not None and kind is not bool:
                return False
    return True


def json_size(value: Any) -> int:
    """About how many bytes ``value`` takes as compact JSON (strings counted in UTF-8, without
    escapes): how a batch that did not arrive as one body (GraphQL's `ingestUsage`) is held to
    the body limit of `POST /v1/events`. Walked without recursion, so any nesting is measured."""
    size, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            size += len(item.encode("utf-8", "surrogatepass")) + 2
        elif isinstance(item, dict):
            size += 1 + 2 * len(item)  # braces, colons and commas
            for key, element in item.items():
                stack += (key, element)
        elif isinstance(item, list):
            size += 1 + max(len(item), 1)
            stack += item
        elif item is None or isinstance(item, bool):
            size += 4
        else:
            size += len(str(item))
    return size


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
    if not isinstance(raw, str) or not _plain_text(raw):  # fromisoformat lets a trailing NUL through
        return None
    try:
        parsed = datetime.fromisoformat(raw.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def measure(properties: dict[str, Any], rule: MeterRule, limits: IngestLimits | None = None) -> Measurement | str:
    """What a meter reads of an event's properties, or why it cannot (an INVALID_VALUE message).
    With ``limits`` (ingestion), a value must be within their range and scale; without (events
    already stored, measured again), it is read as it is."""
    dimensions = canonical_json({key: _plain_number(properties.get(key)) for key in rule.group_by})
    value = unique_value = None
    if rule.aggregation in ("sum", "max", "latest"):
        assert rule.value_property is not None
        value = read_value(properties.get(rule.value_property))
        if value is None:
            return f"properties.{rule.value_property} must be a number or a decimal string"
        if limits is not None:
            bounded = bounded_quantity(value, rule, limits)
            if isinstance(bounded, str):
                return bounded
            value = bounded
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


def bounded_quantity(value: Decimal, rule: MeterRule, limits: IngestLimits) -> Decimal | str:
    """A value a meter reads, within the declared range and scale, without trailing zeros (so
    the stored scale is at most ``quantity_max_places``); or why it is not (a message)."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite: read_value refuses NaN and Infinity
    if digits[0] == 0:  # zero: -0, 0.000 and 0E+3 alike (a coefficient has no other leading zero)
        return Decimal(0)
    if sign and not rule.allow_negative:
        return f"properties.{rule.value_property} must not be negative (the meter does not set allow_negative)"
    trailing_zeros = places = 0
    if exponent < 0:
        if digits[-1] == 0:
            trailing_zeros = min(len(digits) - len("".join(map(str, digits)).rstrip("0")), -exponent)
        places = -exponent - trailing_zeros
    if places > limits.quantity_max_places or value.copy_abs() > limits.quantity_max:
        return (
            f"properties.{rule.value_property} must be at most {format(limits.quantity_max, 'f')} in magnitude, "
            f"with at most {limits.quantity_max_places} decimal places"
        )
    if exponent > 0 or (trailing_zeros and exponent < 0):  # 1E+3, 1.50: written out as 1000, 1.5
        with localcontext(prec=MAX_QUANTITY_DIGITS):
            return value.quantize(Decimal(1).scaleb(-places))
    return value


def read_events(
    items: list[Any],
    *,
    customers: dict[str, uuid.UUID],
    meters_by_event_type: dict[str, list[MeterRule]],
    received_at: datetime,
    limits: IngestLimits,
    refusals: dict[uuid.UUID, tuple[datetime | None, datetime | None, datetime | None]] | None = None,
) -> ReadBatch:
    """Validate each event (:meth:`ReadBatch.add` says which of an id's occurrences counts).
    Whatever PostgreSQL could not store is refused here, event by event, before the batch's one
    statement runs. ``refusals`` names the customers whose subscription refuses usage: from when
    it ended, and from when it was paused (under a plan that refuses usage while paused, up to
    when a plan that meters it takes over); an event at or after the end, or within the refused
    part of the pause, is refused."""
    batch = ReadBatch()
    for index, item in enumerate(items):
        outcome = _read_event(index, item, customers, meters_by_event_type, received_at, limits)
        if refusals and isinstance(outcome, ValidEvent) and outcome.customer_id in refusals:
            outcome = subscription_refusal(outcome, *refusals[outcome.customer_id])
        batch.add(outcome)
    return batch


def subscription_refusal(
    event: ValidEvent, canceled_from: datetime | None, paused_from: datetime | None, paused_until: datetime | None
) -> ValidEvent | Rejection:
    """The event, or its rejection when its customer's subscription refuses usage at its time."""
    if canceled_from is not None and event.occurred_at >= canceled_from:
        message = f"the customer's subscription ended at {canceled_from.isoformat()}"
        return Rejection(event.index, Code.SUBSCRIPTION_CANCELED, message, event.event_id)
    if (
        paused_from is not None
        and paused_from <= event.occurred_at
        and (paused_until is None or event.occurred_at < paused_until)
    ):
        message = f"the customer's subscription is paused since {paused_from.isoformat()} and its plan refuses usage"
        return Rejection(event.index, Code.SUBSCRIPTION_PAUSED, message, event.event_id)
    return event


@dataclass(frozen=True)
class EventShape:
    """What an event says about itself, read and checked without the catalog or the customers:
    its fields in canonical form (what an edge publishes to the event log)."""

    event_id: str
    customer: str
    event_type: str
    properties: dict[str, Any]
    properties_json: str
    authorization_id: uuid.UUID | None
    occurred_at: datetime


@dataclass
class ScreenedBatch:
    """A batch checked by :func:`screen_events`: the events to pass on (by their index in the
    batch, in canonical form: those that passed, and those rejected to quarantine, which the
    counting quarantines itself), and the rejections, with the codes and messages
    :func:`read_events` gives."""

    passed: list[tuple[int, EventShape]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    duplicates_in_batch: int = 0


def screen_events(
    items: list[Any],
    *,
    meters_by_event_type: dict[str, list[MeterRule]] | None,
    received_at: datetime,
    limits: IngestLimits,
) -> ScreenedBatch:
    """The checks of :func:`read_events` that need no customer (ids, fields, properties,
    timestamps and, given the meters, types and values), with the same codes and messages and
    the same rule for repeated ids (the first valid occurrence wins): what an edge without a
    database connection can answer. Without ``meters_by_event_type`` types and values are left
    to the counting. An event that passes may still be refused when it is counted (an unknown
    customer, a closed subscription, a meter added or changed since)."""
    batch = ScreenedBatch()
    seen_ids: set[str] = set()
    for index, item in enumerate(items):
        shape = _read_shape(index, item, received_at, limits)
        if isinstance(shape, Rejection):
            batch.rejected.append(shape)
            continue
        if meters_by_event_type is not None:
            measured = _measurements(index, item, shape, meters_by_event_type, limits)
            if isinstance(measured, Rejection):
                batch.rejected.append(measured)
                if measured.quarantined:
                    batch.passed.append((index, shape))
                continue
        if shape.event_id in seen_ids:
            batch.duplicates_in_batch += 1
        else:
            seen_ids.add(shape.event_id)
            batch.passed.append((index, shape))
    return batch


def _read_event(
    index: int,
    item: Any,
    customers: dict[str, uuid.UUID],
    meters_by_event_type: dict[str, list[MeterRule]],
    received_at: datetime,
    limits: IngestLimits,
) -> ValidEvent | Rejection:
    shape = _read_shape(index, item, received_at, limits)
    if isinstance(shape, Rejection):
        return shape
    event_id = shape.event_id
    measurements = _measurements(index, item, shape, meters_by_event_type, limits)
    if isinstance(measurements, Rejection):
        return measurements
    customer_id = customers.get(shape.customer)
    if customer_id is None:
        return unknown_customer(index, shape.customer, event_id, _held(item))
    return ValidEvent(
        index,
        event_id,
        customer_id,
        item["type"],
        shape.occurred_at,
        shape.properties_json,
        measurements,
        shape.authorization_id,
    )


def _measurements(
    index: int,
    item: dict[str, Any],
    shape: EventShape,
    meters_by_event_type: dict[str, list[MeterRule]],
    limits: IngestLimits,
) -> tuple[Measurement, ...] | Rejection:
    """What each meter of the event's type reads of it, or why one cannot."""
    rules = meters_by_event_type.get(shape.event_type)
    if not rules:
        return unknown_event_type(index, shape.event_type, shape.event_id, _held(item))
    measurements = []
    for rule in rules:
        measured = measure(shape.properties, rule, limits)
        if isinstance(measured, str):
            return Rejection(index, Code.INVALID_VALUE, measured, shape.event_id)
        measurements.append(measured)
    return tuple(measurements)


def _read_shape(index: int, item: Any, received_at: datetime, limits: IngestLimits) -> EventShape | Rejection:
    if isinstance(item, Unreadable):
        return Rejection(index, item.code, item.message)
    if not isinstance(item, dict):
        return Rejection(index, Code.INVALID_EVENT, "an event is a JSON object")
    event_id = item.get("id")
    if not isinstance(event_id, str) or not event_id.strip() or len(event_id) > MAX_EVENT_ID_LENGTH:
        return Rejection(
            index,
            Code.INVALID_ID,
            f"id must be a non-empty string of at most {MAX_EVENT_ID_LENGTH} characters",
        )
    if not _plain_text(event_id) and (problem := text_problem(event_id)):
        return Rejection(index, Code.INVALID_ID, f"id {problem}")
    for name in ("customer", "type"):
        text = item.get(name)
        if not isinstance(text, str) or not text.strip():
            return Rejection(index, Code.INVALID_EVENT, f"{name} must be a non-empty string", event_id)
        if not _plain_text(text) and (problem := text_problem(text)):
            return Rejection(index, Code.INVALID_EVENT, f"{name} {problem}", event_id)
    properties = item.get("properties", {})
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        return Rejection(index, Code.INVALID_EVENT, "properties must be a JSON object", event_id)
    if unstorable := properties_problem(properties, max_depth=limits.max_properties_depth):
        return Rejection(index, *unstorable, event_id)
    properties_json = canonical_json(properties)
    if len(properties_json.encode()) > limits.max_properties_bytes:
        return Rejection(
            index, Code.PROPERTIES_TOO_LARGE, f"properties exceed {limits.max_properties_bytes} bytes", event_id
        )
    authorization_id = None
    if (reference := item.get("authorization")) is not None:
        authorization_id = _authorization_id(reference)
        if authorization_id is None:
            message = "authorization must be the id of an authorization (a UUID)"
            return Rejection(index, Code.INVALID_EVENT, message, event_id)
    occurred_at = _parse_timestamp(item.get("timestamp"))
    if occurred_at is None:
        return Rejection(
            index,
            Code.INVALID_EVENT,
            "timestamp must be ISO 8601 with an offset, e.g. 2026-11-03T10:15:00Z",
            event_id,
        )
    if not received_at - limits.max_age <= occurred_at <= received_at + FUTURE_TOLERANCE:
        return Rejection(
            index,
            Code.TIMESTAMP_OUT_OF_RANGE,
            f"timestamp must be within the last {limits.max_age.days} days and at most 5 minutes ahead",
            event_id,
        )
    return EventShape(
        event_id, item["customer"], item["type"], properties, properties_json, authorization_id, occurred_at
    )


def _authorization_id(reference: Any) -> uuid.UUID | None:
    if not isinstance(reference, str) or len(reference) > 36:
        return None
    try:
        return uuid.UUID(reference)
    except ValueError:
        return None


def unknown_customer(index: int, customer: str, event_id: str, payload: dict[str, Any]) -> Rejection:
    """The rejection (to quarantine) of an event whose customer Tally does not know yet."""
    return Rejection(index, Code.UNKNOWN_CUSTOMER, f"no customer with external id {customer!r}", event_id, payload)


def unknown_event_type(index: int, event_type: str, event_id: str, payload: dict[str, Any]) -> Rejection:
    """The rejection (to quarantine) of an event that no meter reads yet."""
    message = f"no meter reads events of type {event_type!r}"
    return Rejection(index, Code.UNKNOWN_EVENT_TYPE, message, event_id, payload)


def _held(item: dict[str, Any]) -> dict[str, Any]:
    """What quarantine keeps of an event: its own fields, each checked by then (never others)."""
    return {name: item[name] for name in EVENT_FIELDS if name in item}
