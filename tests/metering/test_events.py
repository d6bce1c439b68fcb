"""Reading events (pure): exact numbers, each rejection code, the edges of the time window."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from metering.events import BodyNotEvents, Code, MeterRule, canonical_json, parse_body, read_events

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


def read(*items: object, max_properties_bytes: int = 16384):  # type: ignore[no-untyped-def]
    return read_events(
        list(items),
        customers={"org_acme": ACME},
        meters_by_event_type=RULES,
        received_at=RECEIVED,
        max_age=timedelta(days=35),
        max_properties_bytes=max_properties_bytes,
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
