"""The throughput chart, laid out on the server.

No JavaScript library: the template draws the bars as an inline <svg> that
stretches to its box, and places the axis labels as HTML around it (by
percentage), so the text stays crisp and legible at any width, phone or
desktop. Everything here is numbers; nothing from a job reaches the SVG.
Coordinates are formatted here, as plain decimals: the template would put
each of them through the locale's number formatting, the largest part of
rendering the overview.
"""

import math
from dataclasses import dataclass

# The plot's own coordinate system; the SVG stretches it to fit.
WIDTH = 1000
HEIGHT = 200


@dataclass
class Bar:
    # In plot units.
    x: str
    y: str
    width: str
    height: str
    value: int
    kind: str  # "completed" or "failed"
    title: str  # "12:04: 1,234 completed"


@dataclass
class GridLine:
    y: str  # in plot units
    percent: str  # from the bottom, for the HTML label
    label: str


@dataclass
class Tick:
    percent: str  # from the left
    label: str


def _decimal(value: float) -> str:
    """Return `value` to two decimals, without trailing zeros: "12.5", "200"."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


@dataclass
class Chart:
    width: int
    height: int
    bars: list[Bar]
    grid: list[GridLine]
    ticks: list[Tick]
    empty: bool


def nice_ceiling(value: int) -> int:
    """Return the smallest 1, 2 or 5 times a power of ten that is at least `value` (and at least 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def throughput_chart(buckets) -> Chart:
    """Lay out completed and failed bars side by side for each bucket, oldest on the left."""
    top = nice_ceiling(max([b.completed for b in buckets] + [b.failed for b in buckets] + [0]))
    slot = WIDTH / max(len(buckets), 1)
    bar_width = slot * 0.36
    bars, ticks = [], []
    for index, bucket in enumerate(buckets):
        x0 = index * slot + slot * 0.14
        label = bucket.start.strftime("%H:%M")
        for offset, kind, value in ((0, "completed", bucket.completed), (1, "failed", bucket.failed)):
            height = HEIGHT * value / top
            bars.append(Bar(x=_decimal(x0 + offset * bar_width), y=_decimal(HEIGHT - height),
                            width=_decimal(bar_width), height=_decimal(height), value=value, kind=kind,
                            title=f"{label}: {value:,} {kind}"))
        if index % 5 == 0 or index == len(buckets) - 1:
            ticks.append(Tick(percent=_decimal((index + 0.5) * 100 / len(buckets)), label=label))
    fractions = (0, 0.5, 1) if top % 2 == 0 else (0, 1)
    grid = [
        GridLine(y=_decimal(HEIGHT * (1 - fraction)), percent=_decimal(fraction * 100), label=f"{round(top * fraction):,}")
        for fraction in fractions
    ]
    empty = not any(b.value for b in bars)
    return Chart(width=WIDTH, height=HEIGHT, bars=bars, grid=grid, ticks=ticks, empty=empty)
