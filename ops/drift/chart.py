"""Inline SVG line charts of one route's weekly series, with alert / promotion / mode markers and adapter bands.

Input: a ``route_series`` dict (ops/drift/series.py) and a metric. Output: an ``<svg>`` string: no script, nothing
loaded, every text HTML-escaped; the dashboard and the HTML drift report both embed it. Failure modes: none; a gap
week breaks the line, a week under the minimum sample count is drawn hollow. Geometry: ``Geometry`` (tests use it).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

TITLES = {"rougeL": "ROUGE-L", "fcr": "fact coverage (FCR)", "accepted": "accepted unchanged",
          "flag_rate": "consistency-flag rate", "sign_minutes": "time to sign, median min"}
COLOURS = {"rougeL": "#1f5fbf", "fcr": "#9467bd", "accepted": "#2ca02c", "flag_rate": "#d62728",
           "sign_minutes": "#ff7f0e"}
MARKS = {"alert": "#d62728", "promotion": "#2ca02c", "mode": "#7f7f7f"}
BAND_FILL = ("#eef3fb", "#fdf3e7", "#eef8ee", "#f6eef8")


@dataclass(frozen=True)
class Geometry:
    """Week i is drawn at x = left + i·step; a value v at y = top + (1 − v / scale)·plot."""

    weeks: int
    width: int = 420
    height: int = 170
    left: int = 40
    right: int = 10
    top: int = 22
    bottom: int = 26

    @property
    def plot(self) -> int:
        return self.height - self.top - self.bottom

    @property
    def step(self) -> float:
        return (self.width - self.left - self.right) / max(self.weeks - 1, 1)

    def x(self, index: int) -> float:
        return round(self.left + index * self.step, 2)

    def y(self, value: float, scale: float) -> float:
        return round(self.top + (1 - value / scale) * self.plot, 2)


def scale_of(metric: str, values: list[float | None]) -> float:
    """1 for a rate; for minutes the largest value, at least 1."""
    if metric != "sign_minutes":
        return 1.0
    return max([v for v in values if v is not None] + [1.0])


def _bands(series: dict[str, Any], g: Geometry) -> list[str]:
    parts = []
    for i, band in enumerate(series["bands"]):
        x0, x1 = max(g.left, g.x(band["first"]) - g.step / 2), min(g.width - g.right, g.x(band["last"]) + g.step / 2)
        name = html.escape(band["adapter"])
        parts.append(f'<rect class="band" data-adapter="{name}" data-from="{band["from"]}" data-to="{band["to"]}" '
                     f'x="{x0:.1f}" y="{g.top}" width="{x1 - x0:.1f}" height="{g.plot}" '
                     f'fill="{BAND_FILL[i % len(BAND_FILL)]}"><title>{name}: {band["from"]} – {band["to"]}</title>'
                     f'</rect><text x="{x0 + 2:.1f}" y="{g.top + 9}" font-size="8" fill="#555">{name}</text>')
    return parts


def _markers(series: dict[str, Any], g: Geometry) -> list[str]:
    parts = []
    for mark in series["markers"]:
        x, colour = g.x(mark["index"]), MARKS.get(mark["kind"], "#000")
        label = html.escape(f'{mark["kind"]} {mark["week"]}: {mark["label"]}')
        parts.append(f'<g class="marker" data-kind="{html.escape(mark["kind"])}" data-week="{mark["week"]}">'
                     f'<line x1="{x}" y1="{g.top}" x2="{x}" y2="{g.top + g.plot}" stroke="{colour}" '
                     f'stroke-dasharray="4 3" stroke-width="1.5"/><path d="M{x - 4},{g.top} h8 l-4,6 z" '
                     f'fill="{colour}"/><title>{label}</title></g>')
    return parts


def _line(series: dict[str, Any], metric: str, g: Geometry, scale: float) -> list[str]:
    values, counts, colour = series["values"][metric], series["counts"][metric], COLOURS[metric]
    parts: list[str] = []
    run: list[str] = []
    for i, value in enumerate([*values, None]):  # a None (a gap week, or the end) closes the current run
        if value is None:
            if len(run) > 1:
                parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(run)}"/>')
            run = []
            continue
        run.append(f"{g.x(i)},{g.y(value, scale)}")
    route = html.escape(series["route"])
    for i, (week, value) in enumerate(zip(series["weeks"], values, strict=True)):
        if value is None:
            continue
        fill = colour if counts[i] >= series["min_samples"] else "#fff"
        parts.append(f'<circle class="point" data-week="{week}" data-value="{value}" data-n="{counts[i]}" '
                     f'cx="{g.x(i)}" cy="{g.y(value, scale)}" r="3" fill="{fill}" stroke="{colour}">'
                     f'<title>{route} {week}: {value:g} (n={counts[i]})</title></circle>')
    return parts


def line_chart(series: dict[str, Any], metric: str) -> str:
    """One metric of one route over its weeks: bands behind, then the axis, the line and points, then markers."""
    weeks, g = series["weeks"], Geometry(len(series["weeks"]))
    scale = scale_of(metric, series["values"][metric])
    route, title = html.escape(series["route"]), html.escape(TITLES[metric])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="wchart" data-route="{route}" data-metric="{metric}" '
             f'data-scale="{scale:g}" width="{g.width}" height="{g.height}" role="img" aria-label="{route} {title}">',
             f'<text x="{g.left}" y="12" font-size="12">{route} · {title}</text>', *_bands(series, g),
             f'<line x1="{g.left}" y1="{g.top + g.plot}" x2="{g.width - g.right}" y2="{g.top + g.plot}" stroke="#999"/>',
             f'<text x="2" y="{g.top + 4}" font-size="9">{scale:g}</text>',
             f'<text x="2" y="{g.top + g.plot}" font-size="9">0</text>']
    every = len(weeks) // 8 + 1
    parts += [f'<text x="{min(g.x(i) - 14, g.width - 34):.1f}" y="{g.height - 8}" font-size="8">{w[2:]}</text>'
              for i, w in enumerate(weeks) if i % every == 0]
    parts += _line(series, metric, g, scale) + _markers(series, g) + ["</svg>"]
    return "".join(parts)


def route_charts(series: dict[str, Any], metrics: tuple[str, ...]) -> str:
    """A route's charts side by side in one ``<div class="route-charts">``."""
    return (f'<div class="route-charts" data-route="{html.escape(series["route"])}">'
            + "".join(line_chart(series, m) for m in metrics) + "</div>")
