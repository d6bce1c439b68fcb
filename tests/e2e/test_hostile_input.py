"""Hostile input against a real server: no event, however odd, can poison metering or billing.

Each hostile event shares its batch with valid ones: it gets its own rejection code and they are
kept. Afterwards the customers' usage, upcoming invoice and entitlement still answer, and
`tally billing run` bills a period that hostile events were sent into. Ends with a fuzzer of
`POST /v1/events` bodies.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import admin_execute, clone_database
from tests.e2e.conftest import TALLY, server_env, start_server

pytestmark = pytest.mark.e2e

CATALOG = """
[[meters]]
key = "tokens"
name = "Tokens"
unit = "token"
event_type = "llm.tokens"
aggregation = "sum"
value_property = "tokens"
group_by = ["model"]

[[meters]]
key = "adjustments"
name = "Adjustments"
unit = "unit"
event_type = "usage.adjusted"
aggregation = "sum"
value_property = "delta"
allow_negative = true

[[meters]]
key = "seats"
name = "Seats"
unit = "seat"
event_type = "seat.active"
aggregation = "unique_count"
value_property = "user_id"

[[plans]]
key = "metered"
name = "Metered"
currency = "USD"
interval = "month"
base_fee = "0"

  [[plans.charges]]
  meter = "tokens"
  model = "per_unit"
  unit_price = "0.001"

  [[plans.charges]]
  meter = "seats"
  model = "per_unit"
  unit_price = "1"
"""
NOW = datetime.now(UTC)
# org_due's first month ended ten days ago: due for billing, and still within the events' max age.
DUE_STARTED = NOW - timedelta(days=40)
IN_DUE_PERIOD = DUE_STARTED + timedelta(days=25)
REJECTION_CODES = {
    "INVALID_ID",
    "INVALID_EVENT",
    "UNKNOWN_CUSTOMER",
    "UNKNOWN_EVENT_TYPE",
    "TIMESTAMP_OUT_OF_RANGE",
    "INVALID_VALUE",
    "INVALID_PROPERTIES",
    "PROPERTIES_TOO_LARGE",
    "PROPERTIES_TOO_DEEP",
}
ids = (f"{uuid.uuid4().hex[:8]}-{n}" for n in itertools.count())


@dataclass
class Server:
    base_url: str
    env: dict[str, str]
    ingest: str
    admin: str
    sent_tokens: dict[str, Decimal]  # what each customer's valid token events add up to

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(TALLY), *args], env=self.env, capture_output=True, text=True, timeout=120)

    def post_events(self, body: bytes, *, ndjson: bool = False) -> httpx.Response:
        content_type = "application/x-ndjson" if ndjson else "application/json"
        return httpx.post(
            f"{self.base_url}/v1/events",
            content=body,
            headers={"Authorization": f"Bearer {self.ingest}", "Content-Type": content_type},
            timeout=30,
        )

    def graphql(self, query: str, variables: dict[str, Any] | None = None, *, raw: bytes | None = None) -> Any:
        """A GraphQL request; ``raw`` sends a body written by hand (NaN, Infinity, unpaired
        surrogates: what Python's JSON reader on the server lets through)."""
        body = raw if raw is not None else json.dumps({"query": query, "variables": variables or {}}).encode()
        token = self.ingest if raw is not None else self.admin
        response = httpx.post(
            f"{self.base_url}/graphql",
            content=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert "errors" not in answer, answer
        return answer["data"]


@pytest.fixture(scope="module")
def server(server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own (the demo's customers stay untouched), without background jobs: the
    test runs the billing itself. Usage reads include what the roller has not folded yet."""
    url = clone_database(server_url, "tally_hostile")
    data_dir = tmp_path_factory.mktemp("hostile")
    # org_due started 40 days ago, so that a closed period can be billed.
    env = {**server_env(url, data_dir), "TALLY_BACKDATE_MAX_DAYS": "90"}
    process, base_url = start_server(env, data_dir / "serve.log", "--no-jobs")
    try:
        catalog = data_dir / "catalog.toml"
        catalog.write_text(CATALOG)

        def cli(*args: str) -> str:
            result = subprocess.run([str(TALLY), *args], env=env, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            return result.stdout.strip()

        cli("catalog", "apply", str(catalog))
        found = Server(
            base_url, env, cli("token", "create", "--role", "ingest"), cli("token", "create", "--role", "admin"), {}
        )
        for external_id, started in (
            ("org_victim", NOW - timedelta(days=1)),
            ("org_due", DUE_STARTED),
            ("org_fuzz", NOW - timedelta(days=1)),
        ):
            created = found.graphql(
                "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { userErrors { code } } }",
                {
                    "i": {
                        "externalId": external_id,
                        "name": external_id,
                        "currency": "USD",
                        "planKey": "metered",
                        "startedAt": started.isoformat(),
                    }
                },
            )
            assert created["createCustomer"]["userErrors"] == []
            found.sent_tokens[external_id] = Decimal(0)
        yield found
    finally:
        process.terminate()
        process.wait(timeout=20)
        admin_execute(server_url, "DROP DATABASE IF EXISTS tally_hostile WITH (FORCE)")


def good(server: Server, customer: str = "org_victim", tokens: Decimal = Decimal("1.5"), at: datetime = NOW) -> bytes:
    """A valid event, remembered in what its customer's usage must add up to."""
    server.sent_tokens[customer] += tokens
    event = {
        "id": f"good-{next(ids)}",
        "customer": customer,
        "type": "llm.tokens",
        "timestamp": (at - timedelta(minutes=1)).isoformat(),
        "properties": {"model": "fast-1", "tokens": str(tokens)},
    }
    return json.dumps(event).encode()


def hostile(properties: bytes, **fields: str) -> bytes:
    """An event whose properties are written by hand, byte for byte; ``fields`` override the
    others (JSON text)."""
    written = {
        "id": json.dumps(f"bad-{next(ids)}"),
        "customer": '"org_victim"',
        "type": '"llm.tokens"',
        "timestamp": json.dumps((NOW - timedelta(minutes=1)).isoformat()),
        **fields,
    }
    return (
        ("{" + ",".join(f'"{name}":{text}' for name, text in written.items())).encode()
        + b',"properties":'
        + properties
        + b"}"
    )


DEEP = b"[" * 5000 + b"]" * 5000
HOSTILE_EVENTS: dict[str, tuple[Callable[[], bytes], str]] = {
    "a value of 1e400 as a string": (lambda: hostile(b'{"tokens": "1e400"}'), "INVALID_VALUE"),
    "a value of 1e400 as a number": (lambda: hostile(b'{"tokens": 1e400}'), "INVALID_VALUE"),
    "a value of 1e25": (lambda: hostile(b'{"tokens": 1e25}'), "INVALID_VALUE"),
    "a value past 10^15": (lambda: hostile(b'{"tokens": 1000000000000001}'), "INVALID_VALUE"),
    "a value with 13 places": (lambda: hostile(b'{"tokens": "0.0000000000001"}'), "INVALID_VALUE"),
    "a negative value for a sum meter": (lambda: hostile(b'{"tokens": -5}'), "INVALID_VALUE"),
    "NUL in a property": (lambda: hostile(b'{"tokens": 1, "model": "a\\u0000b"}'), "INVALID_PROPERTIES"),
    "NUL in a property name": (lambda: hostile(b'{"tokens": 1, "a\\u0000": 1}'), "INVALID_PROPERTIES"),
    "NUL deep in properties": (lambda: hostile(b'{"tokens": 1, "x": [{"y": "\\u0000"}]}'), "INVALID_PROPERTIES"),
    "NUL in the id": (lambda: hostile(b'{"tokens": 1}', id='"bad\\u0000"'), "INVALID_ID"),
    "NUL in the customer": (lambda: hostile(b'{"tokens": 1}', customer='"org\\u0000"'), "INVALID_EVENT"),
    "NUL in the type": (lambda: hostile(b'{"tokens": 1}', type='"llm\\u0000"'), "INVALID_EVENT"),
    "NUL in the timestamp": (
        lambda: hostile(b'{"tokens": 1}', timestamp=json.dumps(NOW.isoformat() + "\x00")),
        "INVALID_EVENT",
    ),
    "nesting 5,000 deep": (lambda: hostile(b'{"tokens": 1, "x": ' + DEEP + b"}"), "PROPERTIES_TOO_DEEP"),
    "nesting 100 deep": (
        lambda: hostile(b'{"tokens": 1, "x": ' + b"[" * 100 + b"]" * 100 + b"}"),
        "PROPERTIES_TOO_DEEP",
    ),
    "an event nested 5,000 deep": (lambda: DEEP, "PROPERTIES_TOO_DEEP"),
    "1e200000 in a property": (lambda: hostile(b'{"tokens": 1, "x": 1e200000}'), "INVALID_PROPERTIES"),
    "1e-20000 in a property": (lambda: hostile(b'{"tokens": 1, "x": 1e-20000}'), "INVALID_PROPERTIES"),
    "an integer of 5,000 digits": (lambda: hostile(b'{"tokens": 1, "x": ' + b"9" * 5000 + b"}"), "INVALID_PROPERTIES"),
    "1e200000 as the value": (lambda: hostile(b'{"tokens": 1e200000}'), "INVALID_PROPERTIES"),
}


@pytest.mark.parametrize("ndjson", [False, True], ids=["json", "ndjson"])
@pytest.mark.parametrize("case", list(HOSTILE_EVENTS))
def test_a_hostile_event_is_rejected_on_its_own_and_its_batch_is_kept(server: Server, case: str, ndjson: bool) -> None:
    make_hostile, code = HOSTILE_EVENTS[case]
    events = [good(server), make_hostile(), good(server)]
    body = b"\n".join(events) if ndjson else b"[" + b",".join(events) + b"]"
    response = server.post_events(body, ndjson=ndjson)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["accepted"] == 2
    assert [(r["index"], r["code"]) for r in answer["rejected"]] == [(1, code)], answer


def test_negative_values_count_on_a_meter_that_allows_them(server: Server) -> None:
    events = [
        {
            "id": f"adjust-{next(ids)}",
            "customer": "org_victim",
            "type": "usage.adjusted",
            "timestamp": (NOW - timedelta(minutes=1)).isoformat(),
            "properties": {"delta": delta},
        }
        for delta in ("10.25", -3, "-0.25")
    ]
    response = server.post_events(json.dumps(events).encode())
    assert response.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    entitlement = httpx.get(
        f"{server.base_url}/v1/customers/org_victim/entitlements/adjustments",
        headers={"Authorization": f"Bearer {server.admin}"},
        timeout=10,
    )
    assert entitlement.json()["used"] == "7"


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[" + DEEP + b"," + DEEP, b"[" + DEEP + b"}", b'[{"id": "\\ud800"}]', b"[1,]", b"\xff"],
    ids=["malformed", "unclosed and deep", "mismatched and deep", "unpaired surrogate", "empty element", "not UTF-8"],
)
def test_a_body_that_is_not_json_is_400_and_stores_nothing(server: Server, body: bytes) -> None:
    response = server.post_events(body)
    assert (response.status_code, response.json()["code"]) == (400, "INVALID_BODY"), response.text


INGEST_USAGE = "mutation($e: [UsageEventInput!]!) { ingestUsage(events: $e) { accepted rejected { index code } } }"


@pytest.mark.parametrize(
    ("properties", "fields", "code"),
    [
        ('{"tokens": NaN}', {}, "INVALID_PROPERTIES"),
        ('{"tokens": 1, "x": Infinity}', {}, "INVALID_PROPERTIES"),
        ('{"tokens": 1, "x": [-Infinity]}', {}, "INVALID_PROPERTIES"),
        ('{"tokens": 1e400}', {}, "INVALID_PROPERTIES"),
        ('{"tokens": 1, "x": "\\ud800"}', {}, "INVALID_PROPERTIES"),
        ('{"tokens": 1, "\\udc00": 1}', {}, "INVALID_PROPERTIES"),
        ('{"tokens": 1, "x": "\\u0000"}', {}, "INVALID_PROPERTIES"),
        ('{"tokens": 1}', {"id": '"\\u0000"'}, "INVALID_ID"),
        ('{"tokens": 1}', {"customer": '"\\ud800"'}, "INVALID_EVENT"),
        ('{"tokens": 1, "x": ' + "[" * 500 + "]" * 500 + "}", {}, "PROPERTIES_TOO_DEEP"),
        ('{"tokens": "1e25"}', {}, "INVALID_VALUE"),
        ('{"tokens": -1}', {}, "INVALID_VALUE"),
    ],
)
def test_ingest_usage_rejects_a_hostile_event_on_its_own(
    server: Server, properties: str, fields: dict[str, str], code: str
) -> None:
    events = ",".join([good(server).decode(), hostile(properties.encode(), **fields).decode(), good(server).decode()])
    raw = ('{"query": ' + json.dumps(INGEST_USAGE) + ', "variables": {"e": [' + events + "]}}").encode()
    answer = server.graphql("", raw=raw)["ingestUsage"]
    assert answer == {"accepted": 2, "rejected": [{"index": 1, "code": code}]}


def usage_of(server: Server, customer: str) -> dict[str, Decimal]:
    found = server.graphql(
        "query($c: String!) { customer(externalId: $c) { usage { meter { key } quantity } } }", {"c": customer}
    )
    return {u["meter"]["key"]: Decimal(u["quantity"]) for u in found["customer"]["usage"]}


def test_usage_invoices_entitlements_and_billing_still_work(server: Server) -> None:
    """After everything above (and whatever ran before it): org_victim's usage is exactly its
    valid events; a period of org_due that hostile events were sent into is billed by
    `tally billing run`, which exits 0."""
    due = [good(server, "org_due", Decimal("1000.5"), IN_DUE_PERIOD) for _ in range(2)]
    poison = [hostile(b'{"tokens": "1e400"}', customer='"org_due"', timestamp=json.dumps(IN_DUE_PERIOD.isoformat()))]
    assert server.post_events(b"[" + b",".join([due[0], *poison, due[1]]) + b"]").json()["accepted"] == 2
    assert usage_of(server, "org_victim")["tokens"] == server.sent_tokens["org_victim"]
    for customer in ("org_victim", "org_fuzz"):
        found = server.graphql(
            "query($c: String!) { customer(externalId: $c) { upcomingInvoice { total { amount } } "
            'entitlement(meter: "tokens") { allowed used } } }',
            {"c": customer},
        )["customer"]
        assert found["upcomingInvoice"] is not None and found["entitlement"]["allowed"] is True
        rest = httpx.get(
            f"{server.base_url}/v1/customers/{customer}/entitlements/tokens",
            headers={"Authorization": f"Bearer {server.admin}"},
            timeout=10,
        )
        assert rest.status_code == 200 and rest.json()["allowed"] is True
    run = server.cli("billing", "run", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["invoicesIssued"] >= 1
    invoices = server.graphql(
        'query { customer(externalId: "org_due") { invoices(first: 5) { edges { node { kind periodStart periodEnd '
        "subtotal { amount } } } } } }"
    )["customer"]["invoices"]["edges"]
    closing = [e["node"] for e in invoices if e["node"]["kind"] == "period"]
    assert [(i["periodEnd"] > IN_DUE_PERIOD.isoformat(), i["subtotal"]["amount"]) for i in closing] == [(True, "2.00")]


# The fuzzer: bodies of valid events for org_victim mixed with anything else.
class Raw(str):
    """JSON text written as it is (numbers no Python type writes, nesting no encoder follows)."""


NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.sampled_from(["1e400", "1e200000", "-1e-20000", "1E+1000", "-0", "0E-50000", "9" * 5000]).map(lambda t: Raw(t)),
)
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=20) | st.sampled_from(
    ["\x00", "a\x00", "\u2028", "\ufeff", "\U0001f4a9", "'; DROP TABLE events; --", "\\u0000", "null", "[", "}"]
)
JSON = st.recursive(
    st.none() | st.booleans() | NUMBERS | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
FIELD = JSON | TEXT | st.just(Raw(DEEP.decode()))
HOSTILE = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {
            "id": st.just(None).map(lambda _: f"fuzz-{next(ids)}") | FIELD,
            "customer": st.sampled_from(["org_fuzz", "org_nobody", ""]) | FIELD,
            "type": st.sampled_from(["llm.tokens", "seat.active", "usage.adjusted", "other"]) | FIELD,
            "timestamp": st.just((NOW - timedelta(minutes=2)).isoformat()) | FIELD,
            "properties": st.fixed_dictionaries(
                {"tokens": NUMBERS | TEXT, "delta": NUMBERS, "user_id": JSON}, optional={"model": JSON, "x": FIELD}
            )
            | FIELD,
        },
        optional={"extra": FIELD},
    ),
)


def write(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{write(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(write(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def test_fuzzed_bodies_never_fail_and_never_lose_a_valid_event(server: Server) -> None:
    before = usage_of(server, "org_victim")["tokens"]
    expected = before

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        st.lists(st.tuples(st.booleans(), HOSTILE), max_size=6),
        st.lists(st.decimals(min_value=0, max_value=10**6, places=3), min_size=1, max_size=3),
        st.booleans(),
        st.randoms(use_true_random=False),
    )
    def send(hostile_items: list[tuple[bool, Any]], valid_tokens: list[Decimal], ndjson: bool, rng: Any) -> None:
        nonlocal expected
        lines = [write(item) for _, item in hostile_items]
        valid = [good(server, tokens=tokens).decode() for tokens in valid_tokens]
        order = list(range(len(lines) + len(valid)))
        rng.shuffle(order)
        items = [*lines, *valid]
        valid_at = {position for position, source in enumerate(order) if source >= len(lines)}
        ordered = [items[source] for source in order]
        body = "\n".join(ordered) if ndjson else "[" + ",".join(ordered) + "]"
        response = server.post_events(body.encode(), ndjson=ndjson)
        assert response.status_code == 200, (response.status_code, response.text[:500])
        answer = response.json()
        rejected = {r["index"]: r for r in answer["rejected"]}
        assert not valid_at & set(rejected), ("a valid event was rejected", answer)
        assert all(r["code"] in REJECTION_CODES and r["message"] for r in rejected.values()), answer
        assert answer["accepted"] + answer["duplicates"] + len(rejected) == len(ordered)
        assert answer["accepted"] >= len(valid)
        expected += sum(valid_tokens, Decimal(0))

    send()
    assert usage_of(server, "org_victim")["tokens"] == expected, "every valid event counted once, nothing else"
    assert usage_of(server, "org_fuzz") is not None
    run = server.cli("billing", "run", "--json")
    assert run.returncode == 0, run.stderr
