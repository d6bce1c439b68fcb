"""The one error type every Tally domain raises, so each boundary can report it the same way, and
the refusals every domain shares (their codes are part of the public contract: never rename one).
Each domain lists its own in its ``errors.py``."""


class TallyError(Exception):
    """A refusal a user can act on: a stable ``code``, the offending ``field``, a message.

    GraphQL turns it into a ``userErrors`` entry, the console into a message beside the field,
    REST endpoints into JSON with the code, and the CLI into a one-line reason and exit code 1.
    """

    code = "INVALID"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class InvalidInput(TallyError):
    code = "INVALID"


class NotFound(TallyError):
    code = "NOT_FOUND"


class Taken(TallyError):
    code = "TAKEN"


class IdempotencyKeyReused(TallyError):
    code = "IDEMPOTENCY_KEY_REUSED"

    def __init__(self) -> None:
        super().__init__(
            "this idempotency key was already used for a different request; use a new key", field="idempotencyKey"
        )


class LimitExceeded(TallyError):
    code = "LIMIT_EXCEEDED"


class InvalidFields(InvalidInput):
    """Every refusal of one input at once (each wrong field of a form), so a person fixes them in
    one go; each names its own field and code. Its own message lists them all (the CLI prints it)."""

    def __init__(self, errors: list[TallyError]):
        super().__init__("; ".join(f"{error.field}: {error.message}" for error in errors))
        self.errors = errors


class TooLong(InvalidInput):
    """Text longer than its field allows (a name, a note, a URL)."""

    code = "TOO_LONG"


class CurrencyMismatch(InvalidInput):
    """An amount in a currency other than the one the customer or subscription is billed in."""

    code = "CURRENCY_MISMATCH"


class PromotionUnavailable(TallyError):
    """A promotion code that is inactive, expired or fully redeemed."""

    code = "PROMOTION_UNAVAILABLE"


class AlreadyRedeemed(TallyError):
    """A promotion or a coupon this customer already has."""

    code = "ALREADY_REDEEMED"
