"""Errors of the customers domain."""

from ledger.errors import InvalidInput, NotFound, Taken

__all__ = ["CustomerNotFound", "ExternalIdTaken", "InvalidInput", "PlanNotFound"]


class ExternalIdTaken(Taken):
    def __init__(self, external_id: str):
        super().__init__(f"a customer with external id {external_id!r} already exists", field="externalId")


class PlanNotFound(NotFound):
    def __init__(self, plan_key: str):
        super().__init__(f"no plan {plan_key!r}: apply a catalog that declares it first", field="planKey")


class CustomerNotFound(NotFound):
    def __init__(self, field: str = "customerId"):
        super().__init__("no such customer", field=field)
