"""The developer pages (GraphiQL at ``/graphql``, Swagger UI at ``/docs``) with their scripts and
styles served from ``static/vendor/`` instead of a CDN, so they work offline."""

from __future__ import annotations

import re

from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

VENDOR_URL = "/static/vendor"
SWAGGER_UI = f"{VENDOR_URL}/swagger-ui-dist@5.36.0"

# An npm package's file on unpkg: https://unpkg.com/<name>@<version>/<path>, name maybe scoped.
UNPKG_FILE = re.compile(r"https://unpkg\.com/((?:@[\w.-]+/)?[\w.-]+@[\w.-]+/[^\"'\s]+)")


def offline_page(html: str) -> str:
    """A page that loads npm packages from unpkg, loading the same files from ``static/vendor/``
    (each package in a folder named ``<name>@<version>``). Integrity hashes stay: a vendored file
    that differs from the one the page names is refused by the browser."""
    return UNPKG_FILE.sub(lambda found: f"{VENDOR_URL}/{found.group(1)}", html)


def api_docs_page(openapi_url: str, title: str) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{title} – API docs",
        swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
        swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
    )
