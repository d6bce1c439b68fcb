"""Subjects and bodies of emails, from the Jinja2 templates of each locale (pure: no I/O but
reading the templates).

Each ``templates/<locale>/<kind>.j2`` holds three blocks: ``subject``, ``text`` and ``html``
(the last autoescaped). Amounts and dates are formatted by Babel for the message's locale and
currency: ``{{ amount | money(currency) }}`` takes minor units, ``{{ moment | date }}`` an ISO
moment, shown as a date in UTC (the day invoices are dated).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from babel.dates import format_date
from babel.numbers import format_currency
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ledger.money import to_major

LINE_BREAKS = re.compile(r"[ \t\r\n\v\f\u2028\u2029\x85]+")
TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE_LOCALES = tuple(sorted(path.name for path in TEMPLATES.iterdir() if path.is_dir()))


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def _environment(locale: str) -> Environment:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True
    )
    environment.filters["money"] = lambda minor, currency: format_currency(
        to_major(int(minor), currency), currency, locale=locale
    )
    environment.filters["date"] = lambda moment: format_date(
        datetime.fromisoformat(moment).date(), format="long", locale=locale
    )
    return environment


ENVIRONMENTS = {locale: _environment(locale) for locale in TEMPLATE_LOCALES}


def render(kind: str, locale: str, content: dict[str, Any]) -> Rendered:
    """The message's subject (one line: line breaks and runs of spaces become one space; Babel's
    no-break spaces stay), text and HTML."""
    template = ENVIRONMENTS[locale].get_template(f"{locale}/{kind}.j2")
    context = template.new_context(dict(content))
    parts = {name: "".join(template.blocks[name](context)) for name in ("subject", "text", "html")}
    subject = LINE_BREAKS.sub(" ", parts["subject"]).strip()
    return Rendered(subject=subject, text=parts["text"].strip() + "\n", html=parts["html"])
