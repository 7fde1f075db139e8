'''The dashboard page: HTML, CSS and JavaScript inline, drawing SVG from ``/api/drift/*``.

Input: nothing (a constant). Output: ``DASHBOARD_HTML``. Failure modes: a failed API call (401/403: no token with
the scope) is shown in the status line. The token stays in page memory; report text is inserted as ``textContent``.
Plot geometry (the browser test relies on it): a value v in [0, 1] at y = 10 + (1 − v)·110, week i at
x = 34 + i·step. Weekly charts and operations views: ops/drift/page_ops.py.
'''

from ops.drift.page_ops import OPS_HTML, OPS_JS, WEEKLY_HTML

_PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>impression-gateway · drift</title>
<style>
body{font:14px system-ui,sans-serif;margin:20px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 8px} h2{font-size:16px;margin:18px 0 6px}
.totals span{display:inline-block;margin-right:18px;padding:6px 10px;background:#fff;border:1px solid #ddd}
table{border-collapse:collapse;background:#fff} td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left} .few{color:#999} .charts{display:flex;flex-wrap:wrap;gap:12px}
.chart{background:#fff;border:1px solid #ddd;padding:4px} a{color:#1f5fbf;cursor:pointer}
.pair{background:#fff;border:1px solid #ddd;margin:6px 0;padding:6px} .pair pre{white-space:pre-wrap;margin:2px 0}
#status{color:#a00} .route-block h3{font-size:14px;margin:10px 0 4px} .legend{font-size:12px;color:#555}
#filters label{margin-right:10px} pre.original{white-space:pre-wrap;text-align:left;margin:0;font-size:12px}
#weekly-status,#dl-status,#workers-status{color:#a00}
</style></head>
<body>
<h1>Impression drafts · quality drift</h1>
<p id="auth">Bearer token (scope dashboard-read for the charts, report-text-read for draft/final pairs)
 <input id="token" type="password" placeholder="bearer token" autocomplete="off">
 <button id="use-token">use token</button></p>
<div id="status"></div>
<div class="totals">
 <span>signed reports <b id="total-n" data-metric="n"></b></span>
 <span>drafted <b id="total-drafted" data-metric="drafted"></b></span>
 <span>ROUGE-L <b id="total-rougeL" data-metric="rougeL"></b></span>
 <span>ECR <b id="total-ecr" data-metric="ecr"></b></span>
 <span>UER <b id="total-uer" data-metric="uer"></b></span>
 <span>accepted unchanged <b id="total-accepted" data-metric="accepted"></b></span>
</div>
<!--weekly-->
<h2>Routes</h2>
<table id="routes"><thead><tr><th>route</th><th>n</th><th>drafted</th><th>ROUGE-L</th><th>ECR</th><th>UER</th>
<th>accepted</th><th>last week</th></tr></thead><tbody></tbody></table>
<h2>Worst routes (ROUGE-L of the latest week with enough samples)</h2><ol id="worst"></ol>
<h2>Per route: ROUGE-L (blue), accepted unchanged (green), volume (grey bars), by ISO week</h2>
<div class="charts" id="charts"></div>
<h2>Recent alerts</h2>
<table id="alerts"><thead><tr><th>at</th><th>route</th><th>metric</th><th>detector</th><th>baseline</th>
<th>current</th><th>n ref / cur</th></tr></thead><tbody></tbody></table>
<h2>Adapter versions in service</h2>
<table id="adapters"><thead><tr><th>route</th><th>adapter</th><th>drafted</th><th>first week</th><th>last week</th>
</tr></thead><tbody></tbody></table>
<h2>Time to sign, median minutes (drafted: a draft was there to read; shadow: held back by a shadow route)</h2>
<table id="signing"><thead><tr><th>route</th><th>studies</th><th>drafted</th><th>shadow</th><th>no draft</th>
<th>draft posted → signed</th><th>received → signed: drafted</th><th>shadow</th><th>no draft</th>
<th>drafted − shadow</th></tr></thead><tbody></tbody></table>
<!--ops-->
<div id="detail" hidden>
 <h2>Route <span id="detail-route"></span>: daily ROUGE-L and accepted unchanged</h2><div id="detail-chart"></div>
 <p>Example draft / final pairs (report text: needs a token with the report-text-read scope)
 <button id="load-examples">show examples</button></p><div id="examples"></div>
</div>
<script>
"use strict";
const SVG = "http://www.w3.org/2000/svg";
const fmt = v => (v === null || v === undefined) ? "–" : Number(v).toFixed(3);
function svg(tag, attrs, parent) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}
let token = "";  // kept in memory only: never stored, never put in a URL
const DENIED = {401: "a valid bearer token is required", 403: "this token lacks the scope"};
function cell(row, text, cls) { const td = row.insertCell(); td.textContent = text; if (cls) td.className = cls; return td; }
async function getJSON(url) {
  const r = await fetch(url, {headers: token ? {Authorization: "Bearer " + token} : {}});
  if (!r.ok) { const e = new Error(url + " answered " + r.status); e.status = r.status; throw e; }
  return r.json();
}
function chart(route, points, label) {
  const W = 360, H = 150, L = 34, T = 10, P = 110, step = points.length > 1 ? (W - L - 10) / (points.length - 1) : 0;
  const box = svg("svg", {width: W, height: H, "class": "chart", "data-route": route, role: "img"});
  svg("line", {x1: L, y1: T + P, x2: W - 10, y2: T + P, stroke: "#999"}, box);
  svg("text", {x: 2, y: T + 4, "font-size": 10}, box).textContent = "1.0";
  svg("text", {x: 2, y: T + P, "font-size": 10}, box).textContent = "0";
  const maxN = Math.max(1, ...points.map(p => p.n));
  points.forEach((p, i) => {
    const h = 40 * p.n / maxN;
    svg("rect", {x: L + i * step - 3, y: T + P - h, width: 6, height: h, fill: "#ccc", "data-window": p.window,
                 "data-n": p.n}, box);
  });
  for (const [metric, color] of [["rougeL", "#1f5fbf"], ["accepted", "#2ca02c"]]) {
    const xy = points.map((p, i) => [L + i * step, p[metric] === null ? null : T + (1 - p[metric]) * P, p])
      .filter(q => q[1] !== null);
    if (xy.length > 1) svg("polyline", {fill: "none", stroke: color, points: xy.map(q => q[0] + "," + q[1]).join(" ")}, box);
    for (const [x, y, p] of xy) {
      const c = svg("circle", {cx: x, cy: y, r: 3, stroke: color, fill: p.reliable ? color : "#fff",
        "class": "point", "data-route": route, "data-window": p.window, "data-metric": metric,
        "data-value": String(p[metric]), "data-n": p.n}, box);
      svg("title", {}, c).textContent = route + " " + p.window + " " + metric + " " + fmt(p[metric]) + " (n=" + p.n + ")";
    }
  }
  const wrap = document.createElement("div");
  const title = document.createElement("div"); title.textContent = label; wrap.appendChild(title); wrap.appendChild(box);
  return wrap;
}
function fillRoutes(s) {
  const body = document.querySelector("#routes tbody");
  for (const r of s.routes) {
    const row = body.insertRow(); row.dataset.route = r.route;
    const a = document.createElement("a"); a.textContent = r.route; a.className = "drill"; a.dataset.route = r.route;
    a.addEventListener("click", () => drill(r.route)); row.insertCell().appendChild(a);
    cell(row, String(r.n)).dataset.metric = "n"; cell(row, String(r.drafted)).dataset.metric = "drafted";
    for (const m of ["rougeL", "ecr", "uer", "accepted"]) cell(row, fmt(r[m]), r.reliable ? "" : "few").dataset.metric = m;
    cell(row, r.last_window);
  }
}
function fillTables(s) {
  const worst = document.getElementById("worst");
  for (const w of s.worst_routes) {
    const li = document.createElement("li"); li.dataset.route = w.route;
    li.textContent = w.route + " — " + fmt(w.rougeL) + " (" + w.window + ")"; worst.appendChild(li);
  }
  const alerts = document.querySelector("#alerts tbody");
  for (const a of s.alerts) {
    const row = alerts.insertRow(); row.dataset.alert = a.alert_id;
    for (const t of [a.at.slice(0, 16).replace("T", " "), a.route, a.metric, a.detector, fmt(a.baseline),
                     fmt(a.current), a.n_reference + " / " + a.n_current]) cell(row, t);
  }
  const adapters = document.querySelector("#adapters tbody");
  for (const a of s.adapters) {
    const row = adapters.insertRow();
    for (const t of [a.route, a.adapter, String(a.drafted), a.first_window, a.last_window]) cell(row, t);
  }
}
function fillSigning(t) {
  const body = document.querySelector("#signing tbody"), num = v => (v === null || v === undefined) ? "–" : String(v);
  for (const r of t.rows) {
    const row = body.insertRow(); row.dataset.route = r.route;
    for (const k of ["route", "n", "drafted", "shadow", "none"]) cell(row, String(r[k])).dataset.metric = k;
    for (const k of ["draft_to_sign", "received_to_sign_drafted", "received_to_sign_shadow", "received_to_sign_none",
                     "delta_vs_shadow"]) cell(row, num(r[k]), r.reliable ? "" : "few").dataset.metric = k;
  }
}
async function drill(route) {
  const s = await getJSON("/api/drift/series?route=" + encodeURIComponent(route));
  document.getElementById("detail").hidden = false;
  document.getElementById("detail-route").textContent = route;
  const box = document.getElementById("detail-chart"); box.replaceChildren(chart(route, s.day, "daily"));
  document.getElementById("examples").replaceChildren();
  document.getElementById("detail").dataset.route = route;
}
async function loadExamples() {
  const route = document.getElementById("detail").dataset.route, out = document.getElementById("examples");
  out.replaceChildren();
  try {
    const s = await getJSON("/api/drift/examples?route=" + encodeURIComponent(route));
    for (const e of s.examples) {
      const div = document.createElement("div"); div.className = "pair"; div.dataset.record = e.record_id;
      const head = document.createElement("div");
      head.textContent = e.accession + " · " + e.adapter + " · ROUGE-L " + fmt(e.quality.rougeL)
        + (e.accepted_unchanged ? " · accepted unchanged" : "");
      const draft = document.createElement("pre"); draft.className = "draft"; draft.textContent = "draft: " + e.draft;
      const fin = document.createElement("pre"); fin.className = "final"; fin.textContent = "final: " + e.final;
      div.append(head, draft, fin); out.appendChild(div);
    }
    out.dataset.loaded = String(s.examples.length);
  } catch (e) {
    out.textContent = e.status === 403 ? "this token lacks the report-text-read scope" : DENIED[e.status] || String(e);
    out.dataset.loaded = "error-" + (e.status || "");
  }
}
async function main() {
  document.body.dataset.ready = "";
  document.getElementById("status").textContent = "";
  for (const id of ["routes", "alerts", "adapters", "signing"]) document.querySelector("#" + id + " tbody").replaceChildren();
  for (const id of ["worst", "charts"]) document.getElementById(id).replaceChildren();
  const s = await getJSON("/api/drift/summary");
  for (const [k, v] of Object.entries(s.totals)) {
    const e = document.getElementById("total-" + k);
    if (e) e.textContent = (k === "n" || k === "drafted") ? String(v) : fmt(v);
  }
  fillRoutes(s); fillTables(s); fillSigning(await getJSON("/api/drift/time-to-sign?by=route"));
  const charts = document.getElementById("charts");
  for (const [route, points] of Object.entries(s.series)) charts.appendChild(chart(route, points, route));
  await Promise.all([loadWeekly(), loadOps()]);  // each says in its own line when it fails
  document.body.dataset.ready = "1";
}
function start() {
  main().catch(e => {
    const denied = e.status === 401 || e.status === 403;
    document.getElementById("status").textContent = denied ? DENIED[e.status] + " (dashboard-read)" : String(e);
    document.body.dataset.ready = denied ? "denied-" + e.status : "error";
  });
}
//ops-js
document.getElementById("load-examples").addEventListener("click", loadExamples);
document.getElementById("use-token").addEventListener("click", () => {
  token = document.getElementById("token").value.trim(); start();
});
start();
</script>
</body></html>
"""
DASHBOARD_HTML = _PAGE.replace("<!--weekly-->", WEEKLY_HTML).replace("<!--ops-->", OPS_HTML).replace("//ops-js", OPS_JS)
