"""The refusals of the customers domain, each with its stable code (part of the public contract)."""

from ledger.errors import InvalidInput, NotFound, Taken, TallyError

__all__ = [
    "AlreadyCanceled",
    "AlreadyPaused",
    "CancelScheduled",
    "ChangeScheduled",
    "ChargeNotInPlan",
    "CustomerNotFound",
    "ExternalIdTaken",
    "Forbidden",
    "InTrial",
    "InvalidEmail",
    "InvalidInput",
    "MeterAlreadyCharged",
    "NoOverride",
    "NoSubscription",
    "NoTrial",
    "NotPaused",
    "NothingScheduled",
    "PlanNotFound",
    "SameVersion",
    "SubscriptionCanceled",
    "SubscriptionNotFound",
    "SubscriptionRequired",
    "TaxIdCountryMismatch",
    "TaxIdRequired",
    "TrialEnded",
    "UnknownCountry",
    "UnknownInterval",
    "UnknownTaxExemption",
    "UnknownTaxRate",
]


class ExternalIdTaken(Taken):
    def __init__(self, external_id: str):
        super().__init__(f"a customer with external id {external_id!r} already exists", field="externalId")


class PlanNotFound(NotFound):
    def __init__(self, plan_key: str):
        super().__init__(f"no plan {plan_key!r}: apply a catalog that declares it first", field="planKey")


class CustomerNotFound(NotFound):
    def __init__(self, field: str = "customerId"):
        super().__init__("no such customer", field=field)


class Forbidden(TallyError):
    """A change the caller's role may not make (a customer setting its own tax exemption)."""

    code = "FORBIDDEN"


# Subscriptions: which one a request means, and whether its state allows the request.


class NoSubscription(InvalidInput):
    code = "NO_SUBSCRIPTION"


class SubscriptionRequired(InvalidInput):
    """The customer has several subscriptions and the request did not say which."""

    code = "SUBSCRIPTION_REQUIRED"


class SubscriptionNotFound(InvalidInput):
    """A named subscription the customer does not have (an input error, so ``NOT_FOUND`` on the field)."""

    code = "NOT_FOUND"


class SubscriptionCanceled(InvalidInput):
    code = "SUBSCRIPTION_CANCELED"


class CancelScheduled(InvalidInput):
    """A trial change while a cancel is scheduled: resume the subscription first."""

    code = "CANCEL_SCHEDULED"


class SubscriptionStateError(InvalidInput):
    """The request does not fit the subscription's state (cancel twice, unpause an active one…)."""

    def __init__(self, message: str):
        super().__init__(message, field="customerId")


class AlreadyCanceled(SubscriptionStateError):
    code = "ALREADY_CANCELED"


class AlreadyPaused(SubscriptionStateError):
    code = "ALREADY_PAUSED"


class NotPaused(SubscriptionStateError):
    code = "NOT_PAUSED"


class NothingScheduled(SubscriptionStateError):
    code = "NOTHING_SCHEDULED"


class InTrial(SubscriptionStateError):
    code = "IN_TRIAL"


class SameVersion(InvalidInput):
    """A plan change to the version the subscription is already on."""

    code = "SAME_VERSION"


class NoTrial(InvalidInput):
    code = "NO_TRIAL"


class TrialEnded(InvalidInput):
    code = "TRIAL_ENDED"


class ChangeScheduled(InvalidInput):
    """A trial change while a plan change is scheduled."""

    code = "CHANGE_SCHEDULED"


class UnknownInterval(InvalidInput):
    code = "UNKNOWN_INTERVAL"


class MeterAlreadyCharged(InvalidInput):
    """An add-on on a meter another subscription of the customer already charges."""

    code = "METER_ALREADY_CHARGED"


# Per-customer prices.


class ChargeNotInPlan(InvalidInput):
    code = "CHARGE_NOT_IN_PLAN"


class NoOverride(InvalidInput):
    code = "NO_OVERRIDE"


# Billing details.


class InvalidEmail(InvalidInput):
    code = "INVALID_EMAIL"


class UnknownCountry(InvalidInput):
    code = "UNKNOWN_COUNTRY"


class TaxIdRequired(InvalidInput):
    code = "TAX_ID_REQUIRED"


class TaxIdCountryMismatch(InvalidInput):
    code = "TAX_ID_COUNTRY_MISMATCH"


class UnknownTaxExemption(InvalidInput):
    code = "UNKNOWN_TAX_EXEMPTION"


class UnknownLocale(InvalidInput):
    """A locale invoices and emails are not written in."""

    code = "UNKNOWN_LOCALE"


class UnknownTaxRate(InvalidInput):
    code = "UNKNOWN_TAX_RATE"
