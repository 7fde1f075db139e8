"""Renders a drift ``Report``: a text table, JSON, or one self-contained HTML file (inline SVG).

Input: a ``Report``. Output: a string. Failure modes: ``ValueError`` for an unknown format.
The HTML has no script and loads nothing (no CDN, no fonts): it can be mailed or archived as is.
Every value from the store is HTML-escaped. Windows under the minimum sample count are marked "*"
(table) or drawn hollow (plots). Per route weekly charts with alert/promotion markers and adapter bands: chart.py.
"""

from __future__ import annotations

import html
import json
from typing import Any

from ops.drift.chart import route_charts
from ops.drift.report import Report
from ops.drift.series import CHART_METRICS
from ops.drift.signtime import SIGN_COLUMNS

TABLE_COLUMNS = ("n", "drafted", "rougeL", "ecr", "uer", "fcr", "accepted", "bleu4", "findings_length")
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22")
MAX_LINES = len(PALETTE)


def render(report: Report, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report.as_dict(), indent=2, ensure_ascii=False)
    if fmt == "table":
        return render_table(report)
    if fmt == "html":
        return render_html(report)
    raise ValueError(f"unknown format {fmt!r}: table, json or html")


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def render_table(report: Report) -> str:
    head = [*(report.by or ("all",)), *TABLE_COLUMNS]
    body = [[*(r.get(d, "") for d in report.by)] or ["all"] for r in report.rows]
    for line, row in zip(body, report.rows, strict=True):
        line += [_cell(row.get(c)) + ("" if row["reliable"] or c in ("n", "drafted") else "*") for c in TABLE_COLUMNS]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip() for line in [head, *body]]
    lines.append(f"* fewer than {report.min_samples} drafted reports: not enough to count")
    lines += _sign_table(report)
    lines += [f"alert {a.at:%Y-%m-%d} {a.route} {a.metric} {a.detector}: {a.baseline:.3f} -> {a.current:.3f}"
              for a in report.alerts]
    return "\n".join(lines + _weekly_lines(report))


def _weekly_lines(report: Report) -> list[str]:
    """Per route: the adapter bands and the promotion / mode markers, by ISO week."""
    lines = []
    for series in (report.weekly or {}).get("routes", []):
        bands = ", ".join(f'{b["adapter"]} {b["from"]}..{b["to"]}' for b in series["bands"])
        lines.append(f'{series["route"]}: adapters {bands or "none"}')
        lines += [f'  {m["kind"]} {m["week"]}: {m["label"]}' for m in series["markers"] if m["kind"] != "alert"]
    return lines


def _weekly_html(report: Report) -> str:
    if not report.weekly or not report.weekly["routes"]:
        return ""
    blocks = "".join(f'<h3>{html.escape(s["route"])}</h3>{route_charts(s, CHART_METRICS)}'
                     for s in report.weekly["routes"])
    events = "".join(f'<tr><td>{html.escape(m["week"])}</td><td>{html.escape(s["route"])}</td>'
                     f'<td>{html.escape(m["kind"])}</td><td>{html.escape(m["label"])}</td></tr>'
                     for s in report.weekly["routes"] for m in s["markers"]) or "<tr><td colspan=4>none</td></tr>"
    return (f'<h2>Weekly per route ({html.escape(report.weekly["since"])} to {html.escape(report.weekly["until"])})'
            '</h2><p class=legend>Shaded bands: the adapter version that drafted those weeks. Dashed lines: '
            '<span style="color:#d62728">drift alert</span>, <span style="color:#2ca02c">promotion</span>, '
            '<span style="color:#7f7f7f">mode change</span>. A gap: no report signed that week.</p>'
            f'{blocks}<h2>Events by week</h2><table><tr><th>week</th><th>route</th><th>event</th><th>what</th></tr>'
            f'{events}</table>')


SIGN_NOTE = ("time to sign, median minutes: drafted = a draft was there to read before signing, shadow = held back "
             "by a shadow route (the comparison group), none = no draft; delta_vs_shadow = received_to_sign drafted "
             "minus shadow (negative: signed sooner with a draft)")


def _sign_table(report: Report) -> list[str]:
    if not report.time_to_sign:
        return []
    head = [*(report.by or ("all",)), *SIGN_COLUMNS]
    body = [[*(str(r.get(d, "")) for d in report.by)] or ["all"] for r in report.time_to_sign]
    for line, row in zip(body, report.time_to_sign, strict=True):
        line += [_cell(row.get(c)) + ("" if row["reliable"] or c in ("n", "drafted", "shadow", "none") else "*")
                 for c in SIGN_COLUMNS]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    table = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip() for line in [head, *body]]
    return ["", SIGN_NOTE + f"; * fewer than {report.min_samples} drafted or shadow studies", *table]


def _sign_html(report: Report) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in [*(report.by or ("all",)), *SIGN_COLUMNS])
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r.get(d, '')))}</td>" for d in report.by or ("",))
        + "".join(f'<td class="{"" if r["reliable"] else "few"}">{_cell(r.get(c))}</td>' for c in SIGN_COLUMNS)
        + "</tr>" for r in report.time_to_sign) or f"<tr><td colspan={len(SIGN_COLUMNS) + 1}>none</td></tr>"
    return f"<h2>Time to sign</h2><p>{html.escape(SIGN_NOTE)}.</p><table><tr>{head}</tr>{rows}</table>"


def _chart(report: Report, metric: str, title: str, *, scale_max: float | None = 1.0) -> str:
    width, height, left, top, bottom = 640, 220, 44, 24, 30
    keys = sorted(report.series, key=lambda k: -sum(w["n"] for w in report.series[k]))[:MAX_LINES]
    weeks = sorted({w["window"] for k in keys for w in report.series[k]})
    values: list[float] = [w[metric] for k in keys for w in report.series[k] if w.get(metric) is not None]
    top_value = scale_max or max(values + [1])
    step = (width - left - 10) / max(len(weeks) - 1, 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<text x="{left}" y="14" font-size="13">{html.escape(title)}</text>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#999"/>',
             f'<text x="4" y="{top + 4}" font-size="10">{top_value:g}</text>',
             f'<text x="4" y="{height - bottom}" font-size="10">0</text>']
    for i, week in enumerate(weeks):
        if len(weeks) <= 12 or i % (len(weeks) // 12 + 1) == 0:
            parts.append(f'<text x="{left + i * step:.1f}" y="{height - 10}" font-size="9">{html.escape(week)}</text>')
    for color, key in zip(PALETTE, keys, strict=False):
        points = [(left + weeks.index(w["window"]) * step,
                   top + (1 - w[metric] / top_value) * (height - top - bottom), w) for w in report.series[key]
                  if w.get(metric) is not None]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{path}"/>')
        for x, y, w in points:
            fill = color if w["reliable"] else "white"
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{fill}" stroke="{color}">'
                         f'<title>{html.escape(key)} {html.escape(w["window"])}: {w[metric]:.3f} (n={w["n"]})</title>'
                         "</circle>")
    parts.append("</svg>")
    legend = " ".join(f'<span style="color:{c}">&#9632; {html.escape(k or "all")}</span>'
                      for c, k in zip(PALETTE, keys, strict=False))
    return "".join(parts) + f"<p class=legend>{legend}</p>"


def render_html(report: Report) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in [*(report.by or ("all",)), *TABLE_COLUMNS])
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r.get(d, '')))}</td>" for d in report.by or ("",))
        + "".join(f'<td class="{"" if r["reliable"] else "few"}">{_cell(r.get(c))}</td>' for c in TABLE_COLUMNS)
        + "</tr>" for r in report.rows)
    alerts = "".join(
        f"<tr><td>{a.at:%Y-%m-%d %H:%M}</td><td>{html.escape(a.route)}</td><td>{html.escape(a.metric)}</td>"
        f"<td>{html.escape(a.detector)}</td><td>{a.baseline:.3f}</td><td>{a.current:.3f}</td>"
        f"<td>{a.n_reference}/{a.n_current}</td></tr>" for a in report.alerts) or "<tr><td colspan=7>none</td></tr>"
    span = f"{report.since or 'the start'} to {report.until or 'now'}"
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Drift report</title>
<style>body{{font:14px system-ui,sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td.few{{color:#999}}.legend{{font-size:12px}}
.route-charts{{display:flex;flex-wrap:wrap;gap:8px}}</style>
</head><body><h1>Drift report</h1>
<p>Signed reports from {html.escape(str(span))}, by {html.escape(", ".join(report.by) or "all")}.
Generated {report.generated_at:%Y-%m-%d %H:%M} UTC. Grey values / hollow points: fewer than
{report.min_samples} drafted reports.</p>
{_weekly_html(report)}
{_chart(report, "rougeL", "ROUGE-L per ISO week")}{_chart(report, "accepted", "Accepted unchanged per ISO week")}
{_chart(report, "ecr", "Entity coverage (ECR) per ISO week")}
<h2>Groups</h2><table><tr>{head}</tr>{rows}</table>
{_sign_html(report)}
<h2>Alerts</h2><table><tr><th>at</th><th>route</th><th>metric</th><th>detector</th><th>baseline</th>
<th>current</th><th>n ref/cur</th></tr>{alerts}</table></body></html>
"""
