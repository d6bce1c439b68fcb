from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from tests.billing.scenario import billing_catalog
from tests.billing.stripe_support import WEBHOOK_SECRET, LocalStripe, start_localstripe

__all__ = ["billing_catalog", "localstripe", "stripe_app", "webhook_client"]


@pytest.fixture(scope="session")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    """One localstripe for the billing tests; each test makes its own Stripe customers."""
    server = start_localstripe(tmp_path_factory.mktemp("localstripe") / "localstripe.log")
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)


@pytest.fixture
async def webhook_client(settings: Settings, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app with webhooks accepted and collection off."""
    app: FastAPI = create_app(settings.model_copy(update={"stripe_webhook_secret": WEBHOOK_SECRET}), database_url)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http


@pytest.fixture
async def stripe_app(
    settings: Settings, database_url: str, localstripe: LocalStripe
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with collection on (localstripe) and webhooks accepted."""
    app: FastAPI = create_app(localstripe.settings(settings), database_url)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http
