from tests.billing.scenario import billing_catalog, sessions

__all__ = ["billing_catalog", "sessions"]
