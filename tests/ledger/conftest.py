"""Every ledger test ends with `tally ledger verify`'s checks on what it wrote."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.database import create_engine, session_factory
from ledger.verify import verify


@pytest.fixture(autouse=True)
async def ledger_verified_after(database_url: str) -> AsyncIterator[None]:
    yield
    engine = create_engine(database_url)
    async with session_factory(engine)() as session:
        violations = await verify(session)
    await engine.dispose()
    assert violations == [], [str(v) for v in violations]
