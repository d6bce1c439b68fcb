"""Metering against a real server: the contract's usage operations, trace ids kept on events,
and a crash (kill -9) in the middle of ingestion."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.app.test_graphql_contract import contract_operations
from tests.conftest import admin_execute, clone_database
from tests.e2e.conftest import LiveServer, server_env, start_server

pytestmark = pytest.mark.e2e
CONTRACT_DOCUMENTS = dict(contract_operations())


def run_contract(server: LiveServer, token: str, operation: str, variables: dict) -> dict:
    response = httpx.post(
        f"{server.base_url}/graphql",
        json={"query": CONTRACT_DOCUMENTS[operation], "operationName": operation, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def test_contract_usage_operations_on_a_running_server(live_server: LiveServer) -> None:
    ingest = live_server.cli("token", "create", "--role", "ingest").strip()
    now = datetime.now(UTC)
    events = [
        {
            "id": f"e2e-{uuid.uuid4()}",
            "customer": "org_piedpiper",
            "type": "request.completed",
            "timestamp": (now - timedelta(minutes=i)).isoformat(),
            "properties": {"model": "fast-1"},
        }
        for i in range(3)
    ]
    sent = run_contract(
        live_server, ingest, "IngestUsage", {"events": [*events, {**events[0], "customer": "org_nope"}]}
    )
    assert sent["ingestUsage"]["accepted"] == 3
    assert sent["ingestUsage"]["rejected"] == [
        {"index": 3, "code": "UNKNOWN_CUSTOMER", "message": "no customer with external id 'org_nope'"}
    ]
    customer = live_server.cli("token", "create", "--role", "customer", "--customer", "org_piedpiper").strip()
    usage = run_contract(live_server, customer, "CustomerUsage", {"externalId": "org_piedpiper"})["customer"]["usage"]
    [requests] = usage
    assert requests["meter"]["key"] == "requests" and requests["limit"] == "50"
    assert int(requests["quantity"]) >= 3 and requests["cost"] == {"amount": "0.00", "currency": "USD"}
    series = run_contract(
        live_server,
        customer,
        "UsageSeries",
        {
            "externalId": "org_piedpiper",
            "meter": "requests",
            "from": (now - timedelta(hours=2)).isoformat(),
            "to": (now + timedelta(minutes=1)).isoformat(),
            "granularity": "HOUR",
        },
    )["customer"]["usageSeries"]
    first_hour = (now - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    hours = -(-(now + timedelta(minutes=1) - first_hour) // timedelta(hours=1))  # 4 when `to` passes the hour
    assert len(series) == hours and sum(int(point["quantity"]) for point in series) >= 3
    entitlement = run_contract(
        live_server, customer, "Entitlement", {"externalId": "org_piedpiper", "meter": "requests"}
    )
    assert entitlement["customer"]["entitlement"]["used"] == requests["quantity"]
    edge = live_server.cli("token", "create", "--role", "edge").strip()
    rest = httpx.get(
        f"{live_server.base_url}/v1/customers/org_piedpiper/entitlements/requests",
        headers={"Authorization": f"Bearer {edge}"},
        timeout=10,
    ).json()
    assert rest["used"] == requests["quantity"] and rest["limit"] == "50"
    sent = httpx.post(
        f"{live_server.base_url}/v1/events",
        json=[{**events[0], "id": f"e2e-{uuid.uuid4()}"}],
        headers={"Authorization": f"Bearer {edge}"},
        timeout=10,
    )
    assert (sent.status_code, sent.json()["accepted"]) == (200, 1), "the edge's token sends usage"
    for refused in (
        httpx.get(f"{live_server.base_url}/v1/customers/org_piedpiper", headers={"Authorization": f"Bearer {edge}"}),
        httpx.post(
            f"{live_server.base_url}/graphql",
            json={"query": '{ customer(externalId: "org_piedpiper") { name } }'},
            headers={"Authorization": f"Bearer {edge}"},
        ),
    ):
        assert "FORBIDDEN" in refused.text and "org_piedpiper" not in refused.text, refused.text


def test_each_stored_event_keeps_the_producers_trace_id(live_server: LiveServer) -> None:
    token = live_server.cli("token", "create", "--role", "ingest").strip()
    trace_id, event_id = uuid.uuid4().hex, f"traced-{uuid.uuid4()}"
    response = httpx.post(
        f"{live_server.base_url}/v1/events",
        json=[
            {
                "id": event_id,
                "customer": "org_acme",
                "type": "seat.active",
                "timestamp": datetime.now(UTC).isoformat(),
                "properties": {"user_id": "u-1"},
            }
        ],
        headers={"Authorization": f"Bearer {token}", "traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"},
        timeout=10,
    )
    assert response.json()["accepted"] == 1
    with psycopg.connect(live_server.database_url) as connection:
        row = connection.execute("SELECT trace_id FROM events WHERE event_id = %s", (event_id,)).fetchone()
    assert row == (trace_id,)


def batch_of(number: int) -> list[dict]:
    """1,000 events; each batch repeats 100 ids of the one before (retries overlapping)."""
    now = datetime.now(UTC)
    first = number * 900
    return [
        {
            "id": f"crash-{i}",
            "customer": "org_crash",
            "type": "request.completed",
            "timestamp": (now - timedelta(seconds=i % 3000)).isoformat(),
            "properties": {"model": "fast-1"},
        }
        for i in range(first, first + 1000)
    ]


def test_kill_9_during_ingestion_loses_nothing_and_counts_nothing_twice(
    server_url: str, template_url: str, tmp_path: Path
) -> None:
    url = clone_database(server_url, "tally_crash")
    env = server_env(url, tmp_path)
    process, base_url = start_server(env, tmp_path / "serve.log")
    try:
        admin_token = _cli(env, "token", "create", "--role", "admin")
        httpx.post(
            f"{base_url}/graphql",
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=10,
            json={
                "query": 'mutation { createCustomer(input: {externalId: "org_crash", name: "Crash", currency: "USD"}) '
                "{ userErrors { code } } }"
            },
        )
        _cli(env, "catalog", "apply", str(Path(__file__).resolve().parents[2] / "app" / "demo" / "catalog.toml"))
        token = _cli(env, "token", "create", "--role", "ingest")
        answered: list[int] = []
        batches = [batch_of(n) for n in range(200)]

        def send_until_the_server_dies() -> None:
            with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
                for number, batch in enumerate(batches):
                    try:
                        if client.post("/v1/events", json=batch).status_code == 200:
                            answered.append(number)
                    except httpx.TransportError:
                        return

        sender = threading.Thread(target=send_until_the_server_dies)
        sender.start()
        deadline = time.monotonic() + 60
        while len(answered) < 5 and sender.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(answered) >= 5, "the server answered too few batches with a 200 before the kill"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        sender.join(timeout=30)
        assert 5 <= len(answered) < len(batches), "the kill landed in the middle of ingestion"

        with psycopg.connect(url) as connection:
            stored = {row[0] for row in connection.execute("SELECT event_id FROM events")}
        acknowledged = {e["id"] for n in answered for e in batches[n]}
        assert acknowledged <= stored, "every event in a batch that got a 200 is stored"

        process, base_url = start_server(env, tmp_path / "serve.log")
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            for batch in batches:
                assert client.post("/v1/events", json=batch).status_code == 200
            again = [client.post("/v1/events", json=batch).json()["accepted"] for batch in batches[:20]]
            entitlement = client.get(
                "/v1/customers/org_crash/entitlements/requests", headers={"Authorization": f"Bearer {admin_token}"}
            ).json()
        assert again == [0] * 20, "re-sending adds nothing"
        distinct = {e["id"] for batch in batches for e in batch}
        with psycopg.connect(url) as connection:
            [(count,)] = connection.execute("SELECT count(*) FROM events").fetchall()
            [(counted,)] = connection.execute(
                "SELECT (SELECT coalesce(sum(event_count), 0) FROM usage_rollups) "
                "+ (SELECT count(*) FROM usage_pending)"
            ).fetchall()
        assert count == len(distinct) == counted, "each event counted exactly once, rolled up or waiting for it"
        assert entitlement["used"] == str(len(distinct))
        deadline = time.monotonic() + 30
        with psycopg.connect(url, autocommit=True) as connection:
            while connection.execute("SELECT count(*) FROM usage_pending").fetchone() != (0,):
                assert time.monotonic() < deadline, "the server's roller folds what waits within seconds"
                time.sleep(0.2)
            [(rolled_up,)] = connection.execute("SELECT sum(event_count) FROM usage_rollups").fetchall()
        assert rolled_up == len(distinct), "the roller folded each event once"
    finally:
        process.terminate()
        process.wait(timeout=20)
        admin_execute(server_url, "DROP DATABASE IF EXISTS tally_crash WITH (FORCE)")


def _cli(env: dict[str, str], *args: str) -> str:
    import subprocess

    from tests.e2e.conftest import TALLY

    result = subprocess.run([str(TALLY), *args], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()
