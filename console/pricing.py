"""The Pricing page: a draft catalog (pasted or uploaded) simulated on real past usage, its
totals, the distribution of changes as an SVG chart, every customer's change, and a CSV of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from app.api.context import TallyContext
from console.forms import field_errors
from console.pages import ContextDep, csv_download, is_htmx, query, render
from console.views import biggest_movers_first, distribution_chart

router = APIRouter(prefix="/console", include_in_schema=False)

DEFAULT_PERIODS = "3"
MAX_CATALOG_BYTES = 1_000_000


@dataclass
class SimulationForm:
    """What was asked, as typed; ``errors`` by field, catalog errors by their path in the draft."""

    catalog: str = ""
    periods: str = DEFAULT_PERIODS
    date_from: str = ""
    date_to: str = ""
    errors: dict[str, str] = field(default_factory=dict)
    catalog_errors: list[tuple[str, str]] = field(default_factory=list)


async def read_form(request: Request) -> SimulationForm:
    """The pasted catalog, or the uploaded file when one was chosen (the file wins)."""
    submitted = await request.form()
    form = SimulationForm(
        catalog=str(submitted.get("catalog", "")).replace("\r\n", "\n"),
        periods=str(submitted.get("periods", "")).strip(),
        date_from=str(submitted.get("from", "")).strip(),
        date_to=str(submitted.get("to", "")).strip(),
    )
    upload = submitted.get("catalog_file")
    if isinstance(upload, str) and upload and not form.catalog.strip():
        # Without JavaScript the form is URL-encoded (see pricing.html), which sends a file's name only.
        form.errors["catalog"] = f"to upload {upload}, turn JavaScript on; or paste the catalog here"
    elif isinstance(upload, UploadFile) and upload.filename:
        content = await upload.read(MAX_CATALOG_BYTES + 1)
        if len(content) > MAX_CATALOG_BYTES:
            form.errors["catalog"] = "the file is larger than 1 MB; a catalog is a few kilobytes"
        else:
            try:
                form.catalog = content.decode("utf-8").replace("\r\n", "\n")
            except UnicodeDecodeError:
                form.errors["catalog"] = f"{upload.filename} is not UTF-8 text (a TOML catalog)"
    if not form.catalog.strip() and "catalog" not in form.errors:
        form.errors["catalog"] = "paste a draft catalog or choose a TOML file"
    return form


def day_start(text: str, field_name: str, form: SimulationForm, *, next_day: bool = False) -> str | None:
    """A date field as a UTC instant: the start of the day, or of the next for an inclusive end."""
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        form.errors[field_name] = "must be a date (YYYY-MM-DD)"
        return None
    if next_day:
        day += timedelta(days=1)
    return datetime.combine(day, time(), tzinfo=UTC).isoformat()


def simulation_input(form: SimulationForm) -> dict[str, Any]:
    """Dates when a start date is given; otherwise each customer's last N closed periods."""
    variables: dict[str, Any] = {"catalog": form.catalog}
    start = day_start(form.date_from, "from", form)
    end = day_start(form.date_to, "to", form, next_day=True)
    if start is not None:
        variables["from"] = start
        variables["to"] = end
    elif form.periods.isdigit():
        variables["periods"] = int(form.periods)
    elif not form.date_from:
        form.errors["periods"] = "must be a whole number of periods, or give a start date"
    return variables


async def simulate(request: Request, context: TallyContext, form: SimulationForm) -> dict[str, Any] | None:
    variables = simulation_input(form)
    if form.errors:
        return None
    payload = (await query(request, "ConsoleSimulatePricing", {"input": variables}, context))["simulatePricing"]
    in_catalog = [e for e in payload["userErrors"] if len(e["field"] or []) > 1 and e["field"][0] == "catalog"]
    form.catalog_errors.extend((".".join(e["field"][1:]), e["message"]) for e in in_catalog)  # a problem list
    form.errors.update(field_errors([e for e in payload["userErrors"] if e not in in_catalog]))
    return payload["simulation"]


async def current_plans(request: Request, context: TallyContext) -> list[dict[str, Any]]:
    """Today's pricing, each charge in words (flat fees per tier, steps, package rounding,
    percentages, the proration convention), beside the simulation that would change it."""
    if is_htmx(request):
        return []  # an htmx request swaps the simulation block only
    plans = (await query(request, "ConsoleCurrentPlans", {}, context))["plans"]
    return sorted(plans, key=lambda plan: plan["key"])


def page(
    request: Request,
    context: TallyContext,
    form: SimulationForm,
    simulation: dict[str, Any] | None,
    plans: list[dict[str, Any]],
) -> Response:
    refused = bool(form.errors or form.catalog_errors)
    results = None
    if simulation is not None:
        results = {
            "totals": simulation["totals"],
            "chart": distribution_chart(simulation["distribution"]),
            "customers": biggest_movers_first(simulation["customers"]),
        }
    return render(
        request,
        "pricing.html",
        {
            "form": form,
            "results": results,
            "plans": plans,
        },
        block="simulation",
        status_code=422 if refused and not is_htmx(request) else 200,
    )


@router.get("/pricing")
async def pricing_page(request: Request, context: ContextDep) -> Response:
    return page(request, context, SimulationForm(), None, await current_plans(request, context))


@router.post("/pricing")
async def run_simulation(request: Request, context: ContextDep) -> Response:
    form = await read_form(request)
    simulation = await simulate(request, context, form) if not form.errors else None
    return page(request, context, form, simulation, await current_plans(request, context))


CSV_COLUMNS = [
    "external_id",
    "name",
    "plan",
    "periods",
    "currency",
    "current",
    "simulated",
    "difference",
    "change_percent",
]


@router.post("/pricing.csv")
async def simulation_csv(request: Request, context: ContextDep) -> Response:
    """The same simulation run again from the same inputs, as CSV, biggest movers first."""
    form = await read_form(request)
    simulation = await simulate(request, context, form) if not form.errors else None
    if simulation is None:
        return page(request, context, form, None, await current_plans(request, context))
    header = CSV_COLUMNS
    rows: list[list[Any]] = []
    for row in biggest_movers_first(simulation["customers"]):
        rows.append(
            [
                row["externalId"],
                row["name"],
                row["planKey"],
                row["periods"],
                row["current"]["currency"],
                row["current"]["amount"],
                row["simulated"]["amount"],
                row["difference"]["amount"],
                row["changePercent"] if row["changePercent"] is not None else "",
            ]
        )
    return csv_download("pricing-simulation.csv", header, rows)
