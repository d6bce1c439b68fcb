"""Line charts for the console, server-rendered as SVG: lags and watermark ages over time. The
floats here are pixel positions only; the values printed stay the API's."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Line:
    name: str
    css_class: str
    segments: list[str]  # SVG polylines' "x,y x,y …"; a gap in the data starts a new one
    latest: str | None  # the last value there is, as the API gave it


@dataclass(frozen=True)
class LineChart:
    width: int
    height: int
    lines: list[Line]
    peak: float
    first_label: str
    last_label: str

    @property
    def empty(self) -> bool:
        return not any(line.segments for line in self.lines)


def line_chart(
    labels: list[str],
    series: dict[str, tuple[str, list[object]]],
    *,
    width: int = 720,
    height: int = 160,
) -> LineChart:
    """One line per series over the same ``labels`` (x axis). ``series`` maps a name to its CSS
    class and its values (numbers as strings or ints, None where there is no data)."""
    numbers = {
        name: [None if v is None else float(Decimal(str(v))) for v in values] for name, (_, values) in series.items()
    }
    peak = max((v for values in numbers.values() for v in values if v is not None), default=0.0)
    step = width / max(len(labels) - 1, 1)

    def y(value: float) -> float:
        return round(height - (value / peak * height if peak else 0), 2)

    lines = []
    for name, (css_class, values) in series.items():
        segments: list[str] = []
        current: list[str] = []
        for index, value in enumerate(numbers[name]):
            if value is None:
                if current:
                    segments.append(" ".join(current))
                current = []
                continue
            current.append(f"{round(index * step, 2)},{y(value)}")
        if current:
            segments.append(" ".join(current))
        present = [v for v in values if v is not None]
        lines.append(Line(name, css_class, segments, str(present[-1]) if present else None))
    return LineChart(width, height, lines, peak, labels[0] if labels else "", labels[-1] if labels else "")
