from tests.billing.scenario import billing_catalog

__all__ = ["billing_catalog"]
