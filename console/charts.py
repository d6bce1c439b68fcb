"""Charts for the console, server-rendered as SVG: lags and watermark ages over time, revenue by
month, usage trends. The floats here are pixel positions only; the values printed stay exact."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import ROUND_CEILING, Decimal
from typing import Any

# Axes: a plot area inside the SVG, the y labels on its left and the x labels under it.
PLOT_LEFT, PLOT_TOP, PLOT_RIGHT, PLOT_BOTTOM = 84, 12, 16, 28
# Labels along the bottom of a phone's chart: fewer, so they stay apart at a readable size.
PHONE_LABELS = 4


@dataclass(frozen=True)
class Tick:
    position: float  # pixels: y for the value axis, x for the label axis
    label: str
    minor: bool = False  # a label a narrow screen leaves out, so the others do not overlap


@dataclass(frozen=True)
class Column:
    x: float
    y: float
    width: float
    height: float
    tooltip: str


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    tooltip: str


@dataclass(frozen=True)
class Series:
    name: str
    css_class: str
    segments: list[str]  # SVG polylines' "x,y x,y …"; a gap in the data starts a new one
    points: list[Point]


@dataclass(frozen=True)
class AxisChart:
    """A chart with both axes drawn: value ticks with their unit, labels along the bottom, and a
    tooltip (SVG ``<title>``) on every column or point. Floats are pixel positions only."""

    title: str
    unit: str
    width: int
    height: int
    plot_left: int
    plot_top: int
    plot_right: int
    plot_bottom: int
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    columns: list[Column]
    series: list[Series]
    # The same chart drawn narrow for a phone (shown instead under 640 px): text a phone can read
    # without the chart scrolling sideways away from its value axis.
    phone: AxisChart | None = None

    @property
    def empty(self) -> bool:
        return not self.columns and not any(s.points for s in self.series)


def grouped(value: Decimal) -> str:
    """A number with thousands separators, as many decimals as it has: ``12,345.5``."""
    return f"{value:,f}"


def nice_ticks(peak: Decimal, *, count: int = 4) -> list[Decimal]:
    """Round values from 0 to at least ``peak`` (steps of 1, 2 or 5 × 10ⁿ), for a value axis."""
    if peak <= 0:
        return [Decimal(0), Decimal(1)]
    rough = peak / count
    magnitude = Decimal(10) ** rough.adjusted()
    step = next(m * magnitude for m in (Decimal(1), Decimal(2), Decimal(5), Decimal(10)) if m * magnitude >= rough)
    top = (peak / step).to_integral_value(rounding=ROUND_CEILING) * step
    return [step * n for n in range(int(top / step) + 1)]


def _value_axis(peak: Decimal, plot_height: float, label: Callable[[Decimal], str]) -> tuple[list[Tick], Decimal]:
    ticks = nice_ticks(peak)
    top = ticks[-1]
    return [Tick(round(PLOT_TOP + plot_height - float(t / top) * plot_height, 2), label(t)) for t in ticks], top


def _label_ticks(labels: list[str], centers: list[float], *, most: int) -> list[Tick]:
    every = max(1, -(-len(labels) // most))
    shown = [(x, label) for i, (x, label) in enumerate(zip(centers, labels, strict=True)) if i % every == 0]
    return [Tick(round(x, 2), label, minor=index % 2 == 1) for index, (x, label) in enumerate(shown)]


def column_chart(
    title: str,
    labels: list[str],
    values: list[Decimal],
    *,
    unit: str,
    tooltips: list[str],
    tick_label: Callable[[Decimal], str] = grouped,
    width: int = 720,
    height: int = 220,
    most_labels: int = 12,
    phone_width: int | None = None,
) -> AxisChart:
    """One column per label (e.g. a month's revenue in one currency); with ``phone_width``, also
    drawn that wide with fewer labels for a phone."""
    plot_width, plot_height = width - PLOT_LEFT - PLOT_RIGHT, height - PLOT_TOP - PLOT_BOTTOM
    y_ticks, top = _value_axis(max(values, default=Decimal(0)), plot_height, tick_label)
    slot = plot_width / max(len(values), 1)
    columns = []
    for index, (value, tooltip) in enumerate(zip(values, tooltips, strict=True)):
        column_height = round(float(value / top) * plot_height, 2) if value > 0 else 0.0
        columns.append(
            Column(
                x=round(PLOT_LEFT + index * slot + slot * 0.15, 2),
                y=round(PLOT_TOP + plot_height - column_height, 2),
                width=round(slot * 0.7, 2),
                height=column_height,
                tooltip=tooltip,
            )
        )
    centers = [PLOT_LEFT + index * slot + slot / 2 for index in range(len(labels))]
    x_ticks = _label_ticks(labels, centers, most=most_labels)
    chart = AxisChart(
        title, unit, width, height, PLOT_LEFT, PLOT_TOP, PLOT_RIGHT, PLOT_BOTTOM, y_ticks, x_ticks, columns, []
    )
    if phone_width is None:
        return chart
    phone = column_chart(
        title,
        labels,
        values,
        unit=unit,
        tooltips=tooltips,
        tick_label=tick_label,
        width=phone_width,
        height=height,
        most_labels=PHONE_LABELS,
    )
    return replace(chart, phone=phone)


def lines_chart(
    title: str,
    labels: list[str],
    series: dict[str, tuple[str, list[Decimal | None]]],
    *,
    unit: str,
    value_label: Callable[[Decimal], str] = grouped,
    width: int = 720,
    height: int = 220,
    most_labels: int = 8,
) -> AxisChart:
    """One line per series over the same ``labels``; ``series`` maps a name to its CSS class and
    its values (None where there is no data: the line breaks). Every point has a tooltip."""
    plot_width, plot_height = width - PLOT_LEFT - PLOT_RIGHT, height - PLOT_TOP - PLOT_BOTTOM
    peak = max((v for _, values in series.values() for v in values if v is not None), default=Decimal(0))
    y_ticks, top = _value_axis(peak, plot_height, value_label)
    step = plot_width / max(len(labels) - 1, 1)
    drawn = []
    for name, (css_class, values) in series.items():
        segments: list[str] = []
        current: list[str] = []
        points = []
        for index, value in enumerate(values):
            if value is None:
                if current:
                    segments.append(" ".join(current))
                current = []
                continue
            x = round(PLOT_LEFT + index * step, 2)
            y = round(PLOT_TOP + plot_height - float(value / top) * plot_height, 2)
            current.append(f"{x},{y}")
            points.append(Point(x, y, f"{name}, {labels[index]}: {value_label(value)} {unit}"))
        if current:
            segments.append(" ".join(current))
        drawn.append(Series(name, css_class, segments, points))
    centers = [PLOT_LEFT + index * step for index in range(len(labels))]
    x_ticks = _label_ticks(labels, centers, most=most_labels)
    return AxisChart(
        title, unit, width, height, PLOT_LEFT, PLOT_TOP, PLOT_RIGHT, PLOT_BOTTOM, y_ticks, x_ticks, [], drawn
    )


# A duration chart's one unit, chosen from its peak: (name, milliseconds in one).
DURATION_UNITS = (("hours", 3_600_000), ("minutes", 60_000), ("seconds", 1000), ("milliseconds", 1))


def duration_chart(
    title: str, labels: list[str], series: dict[str, tuple[str, list[object]]], **options: Any
) -> AxisChart:
    """Lags over time in milliseconds (the API's), drawn in one unit for the whole chart: the
    largest unit the peak reaches twice, so the axis reads 0–90 seconds rather than 0–90,000 milliseconds."""
    values = {
        name: (css, [None if v is None else Decimal(str(v)) for v in points]) for name, (css, points) in series.items()
    }
    peak = max((v for _, points in values.values() for v in points if v is not None), default=Decimal(0))
    unit, size = next(((u, n) for u, n in DURATION_UNITS if peak >= 2 * n), DURATION_UNITS[-1])
    scaled: dict[str, tuple[str, list[Decimal | None]]] = {
        name: (css, [None if v is None else (v / size).quantize(Decimal("0.1")) for v in points])
        for name, (css, points) in values.items()
    }
    return lines_chart(title, labels, scaled, unit=unit, **options)
