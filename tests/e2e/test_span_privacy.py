"""What a running server's span store keeps: no personal data, and no spans written under a trace
id an unauthenticated caller chose."""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.e2e.conftest import LiveServer

pytestmark = pytest.mark.e2e


def traceparent(trace_id: str) -> str:
    return f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"


@contextlib.contextmanager
def signed_in_console(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as console:
        page = console.get("/console/login")
        token = re.search(r'name="csrftoken" value="([^"]+)"', page.text)
        assert token
        signed_in = console.post(
            "/console/login",
            data={"email": server.admin_email, "password": server.admin_password, "csrftoken": token.group(1)},
        )
        assert signed_in.status_code == 303
        yield console


def wait_for_trace(server: LiveServer, trace_id: str) -> None:
    """Spans reach the store in batches, in the order they ended: once a trace sent last is
    there, everything before it is too."""
    deadline = time.monotonic() + 20
    with psycopg.connect(server.database_url) as connection:
        while time.monotonic() < deadline:
            if connection.execute("SELECT 1 FROM spans WHERE trace_id = %s", (trace_id,)).fetchone():
                return
            time.sleep(0.3)
    raise AssertionError(f"trace {trace_id} never reached the span store")


def stored(server: LiveServer, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(server.database_url) as connection:
        return connection.execute(sql, params or None).fetchall()


def test_no_personal_data_reaches_the_span_store(live_server: LiveServer) -> None:
    email = f"private.person.{uuid.uuid4().hex[:8]}@example.com"
    token = live_server.cli("token", "create", "--role", "admin").strip()
    with signed_in_console(live_server) as console:
        assert console.get("/console/customers", params={"search": email}).status_code == 200
        assert console.get("/console/customers.csv", params={"search": email}).status_code == 200
        assert console.get("/console/traces", params={"search": email}).status_code == 200
    inline = (
        'mutation { createCustomer(input: {externalId: "org_private", name: "Private Person", email: "EMAIL", '
        'currency: "USD"}) { userErrors { code } } }'
    ).replace("EMAIL", email)
    searched = '{ customers(search: "EMAIL", first: 5) { edges { node { id } } } }'.replace("EMAIL", email)
    for document in (inline, searched):
        answer = httpx.post(
            f"{live_server.base_url}/graphql",
            json={"query": document},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert answer.status_code == 200 and "errors" not in answer.json(), answer.text
    marker = uuid.uuid4().hex
    httpx.get(
        f"{live_server.base_url}/v1/customers/org_private/entitlements/api_calls",
        headers={"Authorization": f"Bearer {token}", "traceparent": traceparent(marker)},
        timeout=10,
    )
    wait_for_trace(live_server, marker)
    leaks = stored(
        live_server,
        "SELECT name, attributes, events FROM spans "
        "WHERE concat(name, attributes::text, events::text, links::text) ILIKE %s",
        f"%{email.split('@')[0]}%",
    )
    assert leaks == []
    urls = stored(live_server, "SELECT attributes->>'http.url' FROM spans WHERE name = 'GET /console/customers.csv'")
    assert urls and all(url.endswith("/console/customers.csv") for (url,) in urls), "no query string"
    searches = stored(
        live_server,
        "SELECT attributes->>'db.statement' FROM spans "
        "WHERE attributes->>'db.statement' LIKE '%FROM customers%' AND attributes->>'db.statement' LIKE '%ILIKE%'",
    )
    assert searches and all("ILIKE ?" in statement for (statement,) in searches), "no literals in SQL"
    operations = stored(live_server, "SELECT attributes FROM spans WHERE attributes->>'component' = 'graphql'")
    assert operations and all("query" not in attributes for (attributes,) in operations), "no GraphQL documents"
    assert stored(live_server, "SELECT 1 FROM spans WHERE attributes ? 'net.peer.ip'") == [], "no client addresses"


def test_an_unauthenticated_traceparent_is_linked_not_adopted(live_server: LiveServer) -> None:
    chosen = {"console page": uuid.uuid4().hex, "graphql": uuid.uuid4().hex, "events": uuid.uuid4().hex}
    httpx.get(f"{live_server.base_url}/console/login", headers={"traceparent": traceparent(chosen["console page"])})
    refused = httpx.post(
        f"{live_server.base_url}/graphql",
        json={"query": "{ plans { key } }"},
        headers={"traceparent": traceparent(chosen["graphql"])},
    )
    assert refused.status_code == 401
    wrong_token = httpx.post(
        f"{live_server.base_url}/v1/events",
        json=[],
        headers={"Authorization": "Bearer tally_not_a_token", "traceparent": traceparent(chosen["events"])},
    )
    assert wrong_token.status_code == 401
    signed_in_trace, token_trace = uuid.uuid4().hex, uuid.uuid4().hex
    with signed_in_console(live_server) as console:
        page = console.get("/console/customers", headers={"traceparent": traceparent(signed_in_trace)})
        assert page.status_code == 200
    token = live_server.cli("token", "create", "--role", "viewer").strip()
    answered = httpx.post(
        f"{live_server.base_url}/graphql",
        json={"query": "{ plans { key } }"},
        headers={"Authorization": f"Bearer {token}", "traceparent": traceparent(token_trace)},
    )
    assert answered.status_code == 200
    # Authenticated callers' trace contexts are adopted: a live console session's, a token's.
    wait_for_trace(live_server, signed_in_trace)
    wait_for_trace(live_server, token_trace)
    for what, trace_id in chosen.items():
        assert stored(live_server, "SELECT name FROM spans WHERE trace_id = %s", trace_id) == [], what
        linked = stored(
            live_server,
            "SELECT name FROM spans WHERE parent_span_id IS NULL AND links @> %s::jsonb",
            f'[{{"trace_id": "{trace_id}"}}]',
        )
        assert len(linked) == 1, what
