"""A throw-away database for a benchmark: DATABASE_URL's server, or an embedded one."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from app.database import migrate, start_embedded_postgres
from metering import repository


@contextmanager
def scratch_database() -> Iterator[str]:
    data_dir = tempfile.mkdtemp(prefix="tally-bench-")
    # The embedded server stops in its own exit hook; removing its data directory before that left
    # servers running without one. Exit hooks run last-registered first, and the server's is
    # registered when it starts, after this one: the directory goes once the server has stopped.
    atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
    server = os.environ.get("DATABASE_URL") or start_embedded_postgres(Path(data_dir))
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    migrate(url)
    try:
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def derive_daily_rollups(connection: psycopg.Connection[Any]) -> None:
    """Daily rollups and distinct values from hourly ones generated in SQL, as ingestion keeps them."""
    connection.execute("""
        INSERT INTO usage_daily_rollups (customer_id, meter_id, day, dimensions, event_count, value_sum, value_max,
                                         latest_value, latest_at, latest_event_id)
        SELECT customer_id, meter_id, date_trunc('day', hour, 'UTC'), dimensions, sum(event_count), sum(value_sum),
               max(value_max), (array_agg(latest_value ORDER BY latest_at DESC, latest_event_id DESC))[1],
               max(latest_at), (array_agg(latest_event_id ORDER BY latest_at DESC, latest_event_id DESC))[1]
        FROM usage_rollups GROUP BY customer_id, meter_id, date_trunc('day', hour, 'UTC'), dimensions""")
    connection.execute("""
        INSERT INTO usage_daily_unique_values (customer_id, meter_id, day, dimensions, value)
        SELECT DISTINCT customer_id, meter_id, date_trunc('day', hour, 'UTC'), dimensions, value
        FROM usage_unique_values""")


def rollup_aggregation(
    connection: psycopg.Connection[Any], customer_id: uuid.UUID, start: datetime, end: datetime
) -> list[Any]:
    """The period aggregate every usage query and invoice runs, alone: a benchmark's baseline."""
    meter_ids = [row[0] for row in connection.execute("SELECT id FROM meters")]
    params = repository.whole_hours_params(customer_id, meter_ids, start, end)
    return connection.execute(repository.ROLLUP_PARTIALS, params).fetchall()
