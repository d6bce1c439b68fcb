"""A throw-away database for a benchmark: DATABASE_URL's server, or an embedded one."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from app.database import migrate, start_embedded_postgres


@contextmanager
def scratch_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="tally-bench-") as data_dir:
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
