'''The dashboard page's weekly and operations parts (HTML and inline JavaScript), put into ops/drift/page.py's page.

Input: nothing (constants). Output: ``WEEKLY_HTML`` (filters, weekly charts), ``OPS_HTML`` (modes, workers, lag, dead
letters) and ``OPS_JS``. Failure modes: a view whose call fails says so in its own status line; the others still draw.
Charts are SVG made by the server (ops/drift/chart.py, every text escaped); report text is set as ``textContent``.
'''

WEEKLY_HTML = r"""
<h2>Weekly, per route: ROUGE-L, fact coverage, accepted unchanged, consistency-flag rate, time to sign</h2>
<p class="legend">Shaded bands: the adapter version that drafted those weeks. Dashed lines: <span style="color:#d62728">
drift alert</span>, <span style="color:#2ca02c">promotion</span>, <span style="color:#7f7f7f">mode change</span> (hover
for what). Hollow points: fewer drafted reports than the minimum sample count.</p>
<form id="filters" onsubmit="return false">
 <label>route <select id="f-route" data-filter="route"><option value="">all</option></select></label>
 <label>site <select id="f-site" data-filter="site"><option value="">all</option></select></label>
 <label>modality <select id="f-modality" data-filter="modality"><option value="">all</option></select></label>
 <label>radiologist <select id="f-radiologist" data-filter="radiologist"><option value="">all</option></select></label>
 <label>weeks <select id="f-weeks"><option>8</option><option>12</option><option selected>16</option>
 <option>26</option><option>52</option></select></label> <span id="weekly-status"></span>
</form>
<div id="weekly"></div>
"""

OPS_HTML = r"""
<h2>Route modes (shadow / live) and their evidence</h2>
<table id="modes"><thead><tr><th>route</th><th>mode</th><th>configured</th><th>since</th><th>signed</th>
<th>evidence</th></tr></thead><tbody></tbody></table>
<h2>Model workers and the adapters they serve</h2><div id="workers-status"></div>
<table id="workers"><thead><tr><th>worker</th><th>up</th><th>generation</th><th>adapters by route</th>
<th>in flight</th><th>last error</th></tr></thead><tbody></tbody></table>
<h2>Consumer lag and queue depths</h2>
<table id="queues"><thead><tr><th>what</th><th>topic / label</th><th>messages</th></tr></thead><tbody></tbody></table>
<h2>Recent dead letters</h2>
<p><label><input type="checkbox" id="dl-text"> show accessions and the original message (report text: report-text-read scope)
</label> · replay needs a token with the operator scope <span id="dl-status"></span></p>
<table id="dead-letters"><thead><tr><th>rejected</th><th>topic</th><th>stage</th><th>code</th><th>reason</th>
<th>accession</th><th></th></tr></thead><tbody></tbody></table>
"""

OPS_JS = r"""
function filterQuery() {
  const q = new URLSearchParams();
  for (const sel of document.querySelectorAll("#filters select[data-filter]")) if (sel.value) q.set(sel.dataset.filter, sel.value);
  q.set("weeks", document.getElementById("f-weeks").value);
  return q.toString();
}
function fillOptions(options) {
  for (const sel of document.querySelectorAll("#filters select[data-filter]")) {
    const keep = sel.value, values = options[sel.dataset.filter] || [];
    sel.replaceChildren(new Option("all", ""));
    for (const v of values) sel.appendChild(new Option(v, v));
    sel.value = values.includes(keep) ? keep : "";
  }
}
async function loadWeekly() {
  const box = document.getElementById("weekly"), status = document.getElementById("weekly-status");
  status.textContent = "";
  try {
    const w = await getJSON("/api/drift/weekly?" + filterQuery());
    fillOptions(w.options);
    box.replaceChildren();
    for (const r of w.routes) {
      const block = document.createElement("div"); block.className = "route-block"; block.dataset.route = r.route;
      const head = document.createElement("h3"); head.textContent = r.route + " · " + r.n.reduce((a, b) => a + b, 0)
        + " signed in " + w.weeks.length + " weeks"; block.appendChild(head);
      const charts = document.createElement("div"); charts.className = "charts";
      for (const m of Object.keys(r.charts)) {
        const holder = document.createElement("div"); holder.className = "chart";
        holder.innerHTML = r.charts[m];  // server-made SVG: every text in it is escaped (ops/drift/chart.py)
        charts.appendChild(holder);
      }
      block.appendChild(charts); box.appendChild(block);
    }
    box.dataset.filters = JSON.stringify(w.filters); box.dataset.weeks = String(w.weeks.length);
  } catch (e) { status.textContent = "weekly charts: " + (DENIED[e.status] || String(e)); }
}
function evidenceText(ev) {
  if (!ev || !Object.keys(ev).length) return "–";
  const parts = ["rouge_l", "fcr", "accepted_unchanged", "flag_rate"].filter(k => ev[k] !== undefined && ev[k] !== null)
    .map(k => k + " " + fmt(ev[k]));
  if (ev.failing && ev.failing.length) parts.push("held back: " + ev.failing.join("; "));
  else if (ev.passes) parts.push("passes");
  return parts.join(" · ") || "–";
}
async function loadOps() {
  for (const id of ["modes", "workers", "queues"]) document.querySelector("#" + id + " tbody").replaceChildren();
  let s;
  try { s = await getJSON("/api/ops/status"); }
  catch (e) { document.getElementById("workers-status").textContent = "status: " + (DENIED[e.status] || String(e)); return; }
  for (const m of s.routes) {
    const row = document.querySelector("#modes tbody").insertRow(); row.dataset.route = m.route; row.dataset.mode = m.mode;
    for (const t of [m.route, m.mode, m.configured, (m.since || "").slice(0, 10),
                     m.evidence && m.evidence.signed !== undefined ? String(m.evidence.signed) : "–",
                     evidenceText(m.evidence)]) cell(row, t);
  }
  document.getElementById("workers-status").textContent = s.workers.length ? "" : "no worker URLs given to this dashboard";
  for (const w of s.workers) {
    const row = document.querySelector("#workers tbody").insertRow(); row.dataset.worker = w.name;
    const routes = Object.entries(w.routes || {}).map(([k, v]) => k + " → " + (typeof v === "string" ? v : JSON.stringify(v)));
    for (const t of [w.name, w.up ? "up" : "DOWN", String(w.generation ?? "–"), routes.join(", ") || "–",
                     String(w.in_flight ?? "–"), w.last_error || w.error || ""]) cell(row, t);
  }
  const queues = document.querySelector("#queues tbody");
  for (const [name, samples] of Object.entries(s.gauges)) for (const g of samples) {
    const row = queues.insertRow(); row.dataset.gauge = name;
    for (const t of [name, Object.values(g.labels).join(", ") || "–", String(g.value)]) cell(row, t);
  }
  if (s.dead_letters_configured) await loadDeadLetters();
  else document.getElementById("dl-status").textContent = "(no broker given to this dashboard)";
}
async function replay(source, button) {
  button.disabled = true;
  try {
    const r = await fetch("/api/ops/dead-letters/replay?source=" + encodeURIComponent(source),
                          {method: "POST", headers: token ? {Authorization: "Bearer " + token} : {}});
    const body = await r.json().catch(() => ({}));
    button.dataset.result = r.ok ? "sent-" + body.sent : "error-" + r.status;
    button.textContent = r.ok ? "replayed (" + body.sent + " sent)" : (r.status === 403 ? "needs the operator scope"
      : DENIED[r.status] || "failed: " + r.status);
  } finally { button.disabled = false; }
}
async function loadDeadLetters() {
  const body = document.querySelector("#dead-letters tbody"), status = document.getElementById("dl-status");
  body.replaceChildren(); status.textContent = "";
  const text = document.getElementById("dl-text").checked;
  try {
    const d = await getJSON("/api/ops/dead-letters" + (text ? "?text=true" : ""));
    if (d.error) status.textContent = "broker: " + d.error;
    for (const l of d.letters) {
      const row = body.insertRow(); row.dataset.source = l.source;
      for (const t of [(l.rejected_at || "").slice(0, 16).replace("T", " "), l.topic, l.stage, l.code, l.reason,
                       l.accession]) cell(row, t);
      const b = document.createElement("button"); b.className = "replay"; b.dataset.source = l.source;
      b.textContent = "replay"; b.disabled = !l.replayable; b.addEventListener("click", () => replay(l.source, b));
      row.insertCell().appendChild(b);
      if (l.original !== undefined) {
        const pre = document.createElement("pre"); pre.className = "original"; pre.textContent = l.original;
        body.insertRow().insertCell().appendChild(pre); pre.parentElement.colSpan = 7;
      }
    }
    body.dataset.loaded = String(d.letters.length);
  } catch (e) { status.textContent = e.status === 403 ? "this token lacks the report-text-read scope"
                                     : DENIED[e.status] || String(e); body.dataset.loaded = "error-" + (e.status || ""); }
}
for (const sel of document.querySelectorAll("#filters select")) sel.addEventListener("change", loadWeekly);
document.getElementById("dl-text").addEventListener("change", loadDeadLetters);
"""
