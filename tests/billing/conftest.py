from collections.abc import Iterator

import pytest

from tests.billing.scenario import billing_catalog
from tests.billing.stripe_support import LocalStripe, start_localstripe

__all__ = ["billing_catalog", "localstripe"]


@pytest.fixture(scope="session")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    """One localstripe for the billing tests; each test makes its own Stripe customers."""
    server = start_localstripe(tmp_path_factory.mktemp("localstripe") / "localstripe.log")
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)
