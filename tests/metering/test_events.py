"""Reading events (pure): exact numbers, each rejection code, the edges of the time window."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.events import (
    BodyNotEvents,
    Code,
    IngestLimits,
    MeterRule,
    _array_elements,
    canonical_json,
    loads_exact,
    parse_body,
    read_events,
)

RECEIVED = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ACME = uuid.uuid4()
TOKENS = MeterRule(uuid.uuid4(), "sum", "tokens", ("model",))
SEATS = MeterRule(uuid.uuid4(), "unique_count", "user_id", ())
REQUESTS = MeterRule(uuid.uuid4(), "count", None, ("model",))
RULES = {"llm.tokens": [TOKENS], "seat.active": [SEATS], "request.completed": [REQUESTS]}


def event(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": "e1",
        "customer": "org_acme",
        "type": "llm.tokens",
        "timestamp": "2026-11-25T11:00:00Z",
        "properties": {"model": "fast-1", "tokens": 1200},
    }
    return {**base, **overrides}


LIMITS = IngestLimits(
    max_age=timedelta(days=35),
    max_properties_bytes=16384,
    max_properties_depth=32,
    quantity_max=Decimal(10) ** 15,
    quantity_max_places=12,
)


def read(*items: object, rules: dict[str, list[MeterRule]] = RULES, **limits: object):  # type: ignore[no-untyped-def]
    return read_events(
        list(items),
        customers={"org_acme": ACME},
        meters_by_event_type=rules,
        received_at=RECEIVED,
        limits=replace(LIMITS, **limits),
    )


def test_numbers_are_read_exactly_from_json_and_from_strings() -> None:
    items = parse_body(
        b'[{"id":"a","customer":"org_acme","type":"llm.tokens","timestamp":"2026-11-25T11:00:00Z",'
        b'"properties":{"model":"fast-1","tokens":0.1}},'
        b'{"id":"b","customer":"org_acme","type":"llm.tokens","timestamp":"2026-11-25T11:00:00+01:00",'
        b'"properties":{"model":"fast-1","tokens":"0.2"}}]',
        ndjson=False,
    )
    batch = read(*items)
    assert [m.value for e in batch.valid for m in e.measurements] == [Decimal("0.1"), Decimal("0.2")]
    assert batch.valid[1].occurred_at == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert '"tokens":0.1' in batch.valid[0].properties_json, "stored properties keep the exact number"


def test_ndjson_and_bodies_that_are_not_events() -> None:
    lines = b'{"id":"a"}\n\n{"id":"b"}\n'
    assert [i["id"] for i in parse_body(lines, ndjson=True)] == ["a", "b"]
    for body, ndjson in ((b"{not json", False), (b'{"id": "a"}', False), (b"[1, NaN]", False), (b"\xff", True)):
        with pytest.raises(BodyNotEvents):
            parse_body(body, ndjson=ndjson)


@pytest.mark.parametrize(
    ("item", "code"),
    [
        (event(id=""), Code.INVALID_ID),
        (event(id=42), Code.INVALID_ID),
        (event(id="x" * 256), Code.INVALID_ID),
        (event(customer="org_nobody"), Code.UNKNOWN_CUSTOMER),
        (event(type="llm.unknown"), Code.UNKNOWN_EVENT_TYPE),
        (event(timestamp="2026-11-25T11:00:00"), Code.INVALID_EVENT),
        (event(timestamp="2026-10-20T11:59:59Z"), Code.TIMESTAMP_OUT_OF_RANGE),
        (event(timestamp="2026-11-25T12:05:01Z"), Code.TIMESTAMP_OUT_OF_RANGE),
        (event(properties={"model": "fast-1"}), Code.INVALID_VALUE),
        (event(properties={"model": "fast-1", "tokens": "lots"}), Code.INVALID_VALUE),
        (event(properties={"model": "fast-1", "tokens": True}), Code.INVALID_VALUE),
        (event(type="seat.active", properties={"user_id": None}), Code.INVALID_VALUE),
        (event(properties={"model": "fast-1", "tokens": 1, "blob": "x" * 100}), Code.PROPERTIES_TOO_LARGE),
        ("not an object", Code.INVALID_EVENT),
    ],
)
def test_each_rejection_code(item: object, code: str) -> None:
    batch = read(item, max_properties_bytes=80)
    assert batch.valid == []
    assert [(r.index, r.code) for r in batch.rejected] == [(0, code)]


def test_the_time_window_is_inclusive_at_both_edges() -> None:
    oldest = (RECEIVED - timedelta(days=35)).isoformat()
    newest = (RECEIVED + timedelta(minutes=5)).isoformat()
    batch = read(event(id="old", timestamp=oldest), event(id="new", timestamp=newest))
    assert [e.event_id for e in batch.valid] == ["old", "new"]


def test_a_batch_keeps_its_valid_events_and_counts_an_id_once() -> None:
    batch = read(event(id="a"), event(id="bad", customer=""), event(id="a", properties={"model": "x", "tokens": 9}))
    assert [e.event_id for e in batch.valid] == ["a"]
    assert batch.valid[0].measurements[0].value == Decimal(1200), "the first occurrence wins"
    assert batch.duplicates_in_batch == 1
    assert [(r.index, r.code) for r in batch.rejected] == [(1, Code.INVALID_EVENT)]


def test_unknown_customers_and_types_are_quarantined_other_rejections_are_not() -> None:
    batch = read(event(id="a", customer="org_later"), event(id="b", type="later.type"), event(id="c", properties={}))
    assert [r.quarantined for r in batch.rejected] == [True, True, False]


def test_canonical_json_is_exact_and_ordered() -> None:
    assert canonical_json({"b": Decimal("0.10"), "a": [1, True, None]}) == '{"a":[1,true,null],"b":0.10}'


def tokens(value: object, **overrides: object) -> dict[str, object]:
    return event(properties={"model": "fast-1", "tokens": value}, **overrides)


@pytest.mark.parametrize(
    "value",
    ["1e400", Decimal("1E+400"), Decimal("1E+25"), 10**15 + 1, "1000000000000000.5", "0.0000000000001", -1, "-0.5"],
)
def test_a_value_outside_the_declared_range_and_scale_is_invalid(value: object) -> None:
    batch = read(tokens(value))
    assert batch.valid == []
    assert [r.code for r in batch.rejected] == [Code.INVALID_VALUE]


def test_values_at_the_bounds_are_kept_without_their_trailing_zeros() -> None:
    batch = read(
        tokens(10**15, id="max"),
        tokens("-1000000000000000", id="min"),
        tokens("0.000000000001", id="places"),
        tokens("1.000000000000000000000", id="zeros"),
        tokens(Decimal("1E+3"), id="exponent"),
        tokens("-0", id="negative-zero"),
        rules={"llm.tokens": [replace(TOKENS, allow_negative=True)]},
    )
    assert batch.rejected == []
    values = [str(e.measurements[0].value) for e in batch.valid]
    assert values == ["1000000000000000", "-1000000000000000", "1E-12", "1", "1000", "0"]


def test_the_declared_range_is_configurable() -> None:
    batch = read(tokens("100.5", id="a"), tokens("99.5", id="b"), quantity_max=Decimal(100), quantity_max_places=0)
    assert batch.valid == [] and [r.code for r in batch.rejected] == [Code.INVALID_VALUE] * 2


def test_negative_values_need_a_meter_that_allows_them() -> None:
    refused = read(tokens("-5"))
    assert [r.message for r in refused.rejected] == [
        "properties.tokens must not be negative (the meter does not set allow_negative)"
    ]
    allowed = read(tokens("-5"), rules={"llm.tokens": [replace(TOKENS, allow_negative=True)]})
    assert allowed.valid[0].measurements[0].value == Decimal(-5)


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("properties", "code", "message"),
    [
        ({"model": "a\x00b"}, Code.INVALID_PROPERTIES, "properties.model: contains a NUL character"),
        ({"a\x00": 1}, Code.INVALID_PROPERTIES, "properties.a\\x00: the name contains a NUL character"),
        ({"deep": {"list": ["ok", "\x00"]}}, Code.INVALID_PROPERTIES, "properties.deep.list[1]: contains a NUL"),
        ({"model": "\ud800"}, Code.INVALID_PROPERTIES, "properties.model: is not valid Unicode"),
        ({"n": Decimal("1E+200000")}, Code.INVALID_PROPERTIES, "properties.n: numbers have at most 1000 digits"),
        ({"n": Decimal("1E-20000")}, Code.INVALID_PROPERTIES, "properties.n: numbers have at most 1000 digits"),
        ({"n": Decimal("1E+1000")}, Code.INVALID_PROPERTIES, "properties.n: numbers have at most 1000 digits"),
        ({"n": -(10**1000)}, Code.INVALID_PROPERTIES, "properties.n: numbers have at most 1000 digits"),
        ({"n": Decimal("NaN")}, Code.INVALID_PROPERTIES, "properties.n: NaN and Infinity are not JSON numbers"),
        ({"n": [Decimal("-Infinity")]}, Code.INVALID_PROPERTIES, "properties.n[0]: NaN and Infinity"),
        ({"n": 0.5}, Code.INVALID_PROPERTIES, "properties.n: is not a JSON value"),
        ({"n": nested(32)}, Code.PROPERTIES_TOO_DEEP, "properties.n" + "[0]" * 31 + ": properties nest at most 32"),
        ({"n": nested(5000)}, Code.PROPERTIES_TOO_DEEP, "properties.n" + "[0]" * 31 + ": properties nest at most 32"),
    ],
)
def test_properties_postgresql_cannot_store_are_refused_event_by_event(
    properties: dict[str, object], code: str, message: str
) -> None:
    batch = read(event(id="bad", properties={"tokens": 1, **properties}), event(id="good"))
    assert [e.event_id for e in batch.valid] == ["good"]
    assert [(r.index, r.code, r.event_id) for r in batch.rejected] == [(0, code, "bad")]
    assert batch.rejected[0].message.startswith(message)


def test_the_largest_storable_properties_are_kept() -> None:
    properties = {
        "tokens": 1,
        "big": Decimal("9.99E+999"),
        "small": Decimal("1E-1000"),
        "int": 10**1000 - 1,
        "nested": nested(31),
        "odd": "\u2028\U0001f600\ufeff\\u0000",
    }
    batch = read(event(properties=properties))
    assert batch.rejected == []


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"id": "a\x00"}, Code.INVALID_ID),
        ({"id": "\udc00"}, Code.INVALID_ID),
        ({"customer": "org\x00acme"}, Code.INVALID_EVENT),
        ({"type": "llm.tokens\x00"}, Code.INVALID_EVENT),
        ({"timestamp": "2026-11-25T11:00:00Z\x00"}, Code.INVALID_EVENT),
    ],
)
def test_fields_postgresql_cannot_store_are_refused(overrides: dict[str, object], code: str) -> None:
    assert [r.code for r in read(event(**overrides)).rejected] == [code]


def test_quarantine_keeps_only_the_fields_of_an_event() -> None:
    batch = read(event(customer="org_later", extra={"anything": "\x00"}))
    assert batch.rejected[0].quarantined
    assert set(batch.rejected[0].payload) == {"id", "customer", "type", "timestamp", "properties"}


def good(event_id: str) -> bytes:
    return canonical_json(event(id=event_id)).encode()


@pytest.mark.parametrize(
    "hostile",
    [
        b'{"id":"deep","properties":{"x":' + b"[" * 5000 + b"]" * 5000 + b"}}",
        b"[" * 5000 + b"]" * 5000,
        b'{"id":"huge","properties":{"n":' + b"9" * 5000 + b"}}",
    ],
)
def test_an_event_beyond_the_decoder_stands_alone_and_the_rest_are_read(hostile: bytes) -> None:
    for body, ndjson in (
        (b"[" + good("a") + b", " + hostile + b"," + good("b") + b"]", False),
        (good("a") + b"\n" + hostile + b"\n" + good("b"), True),
    ):
        batch = read(*parse_body(body, ndjson=ndjson))
        assert [e.event_id for e in batch.valid] == ["a", "b"]
        assert [r.index for r in batch.rejected] == [1]
        assert batch.rejected[0].code in (Code.PROPERTIES_TOO_DEEP, Code.INVALID_PROPERTIES)


@pytest.mark.parametrize(
    "body",
    [
        b"[" + b"[" * 5000 + b"]" * 4999,  # never closed
        b"[" + b"[" * 5000 + b"]" * 5000 + b"]]",  # closed twice
        b"[" + b"[" * 5000 + b"]" * 5000 + b",]",  # an empty element
        b"[" + b"[" * 5000 + b"]" * 5000 + b", {bad}]",  # malformed beside
        b"{" + b"[" * 5000 + b"]" * 5000 + b"}",  # not an array
        b"[" + b"[" * 5000 + b"}" * 5000 + b"]",  # mismatched
    ],
)
def test_a_malformed_body_stays_refused_whole_however_deep(body: bytes) -> None:
    with pytest.raises(BodyNotEvents):
        parse_body(body, ndjson=False)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(st.lists(JSON_VALUES, max_size=6), st.booleans(), st.sampled_from(["", " ", "\n", "\t "]))
def test_splitting_an_array_reads_what_decoding_it_whole_reads(
    elements: list[object], ensure_ascii: bool, space: str
) -> None:
    body = ("[" + space + f",{space}".join(json.dumps(e, ensure_ascii=ensure_ascii) for e in elements) + "]").encode()
    assert [loads_exact(part) for part in _array_elements(body)] == loads_exact(body)
