"""Console forms: a mutation's refusals as messages beside the form's inputs, written once.

A refusal arrives two ways: a ``userErrors`` entry (the domain refused), or a GraphQL error on a
variable (an amount like "ten dollars" is not a Decimal, refused before any resolver runs). Both
become ``{input name: message}``, so no form ends on the error page for what a person typed.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from babel.numbers import get_currency_name
from fastapi import Request
from graphql import GraphQLError
from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup, escape
from num2words import num2words

from app.api.context import Loaders, TallyContext
from console.graphql_client import ConsoleQueryFailed, operation_documents
from console.views import grouped_amount

# graphql-core's wording of a refused variable (graphql.execution.values): "Variable '$input' has
# invalid value at .amount: 'x' is not a decimal number"; the path is within the variable.
REFUSED_VARIABLE = re.compile(
    r"^Variable '\$\w+' has invalid value(?: at (?P<path>[\w.\[\]]+))?: (?P<reason>.+)$", re.S
)


def field_errors(user_errors: list[dict[str, Any]], *, prefix: str = "", whole_path: bool = False) -> dict[str, str]:
    """userErrors by their input's name: the last part of the field path (``["input", "amount"]``
    is ``amount``), or the dotted path for forms with lists (``lines.0.amount``); ``prefix`` tells
    two forms of one page apart. An error naming no field is the form's own (``form``)."""
    errors: dict[str, str] = {}
    for error in user_errors:
        path = [str(part) for part in error.get("field") or ["form"]]
        name = ".".join(path) if whole_path else path[-1]
        errors.setdefault(prefix + name, error["message"])
    return errors


def refused_variables(errors: list[GraphQLError]) -> list[dict[str, Any]] | None:
    """The refused variables of a failed operation as userErrors, or None when any error is
    something else (a permission error, a bug), which the error page shows."""
    found = []
    for error in errors:
        match = REFUSED_VARIABLE.match(error.message)
        if match is None:
            return None
        path = [part for part in re.split(r"[.\[\]]+", match["path"] or "") if part]
        while path and path[-1].isdigit():  # an item of a list input (thresholds[0]) is the list's field
            path.pop()
        code = (error.extensions or {}).get("code", "INVALID")
        reason = "must be a whole number" if match["reason"].startswith("Int cannot represent") else match["reason"]
        found.append({"field": path or None, "code": code, "message": reason})
    return found


async def mutate(request: Request, name: str, variables: dict[str, Any], context: TallyContext) -> dict[str, Any]:
    """Run the mutation operation ``name`` and answer its payload (its one root field): refused
    variables come back as the payload's ``userErrors``, like the domain's own refusals.

    A dry run or a refusal rolls back, which expires the rows the request's session holds: the
    context gets fresh data loaders afterwards, so the page that follows reads them again rather
    than touching an expired row (which fails outside the database's async bridge)."""
    schema = request.app.state.schema
    result = await schema.execute(
        operation_documents()[name], variable_values=variables, context_value=context, operation_name=name
    )
    context.loaders = Loaders(context.session)
    if result.errors:
        user_errors = refused_variables(result.errors)
        if user_errors is None:
            raise ConsoleQueryFailed([error.message for error in result.errors])
        return {"userErrors": user_errors}
    assert result.data is not None
    payload: dict[str, Any] = next(iter(result.data.values()))
    return payload


def amount_in_words(amount: Decimal | str, currency: str, *, above: Decimal) -> str | None:
    """A large amount in words for a confirmation ("one hundred and fifty thousand US dollars"),
    so a slipped zero is read before it is confirmed; None at or below ``above`` (major units).
    ``amount`` is as the API answers it, with its currency's digits; cents are given as a
    fraction, as on a cheque ("… and 25/100 US dollars")."""
    value = Decimal(amount)
    if value.copy_abs() <= above:
        return None
    whole = int(value.copy_abs())
    words = num2words(whole, lang="en")
    exponent = value.as_tuple().exponent
    digits = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    if fraction := int((value.copy_abs() - whole).scaleb(digits)):
        words += f" and {fraction}/{10**digits}"
    name = get_currency_name(currency, count=whole, locale="en")
    return f"{'minus ' if value < 0 else ''}{words} {name}"


@pass_context
def large_amount_in_words(context: Context, money: dict[str, str] | None) -> Markup:
    """``{{ in_words(preview.amount) }}`` on a confirmation: a note stating the Money in words
    when it is above TALLY_AMOUNT_IN_WORDS_ABOVE, else nothing."""
    if not money:
        return Markup("")
    above = context["request"].app.state.settings.amount_in_words_above
    words = amount_in_words(money["amount"], money["currency"], above=above)
    if words is None:
        return Markup("")
    amount = f"{grouped_amount(money['amount'])} {money['currency']}"
    return Markup('<p class="amount-in-words">{} is <strong>{}</strong>.</p>').format(escape(amount), escape(words))
