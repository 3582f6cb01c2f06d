// nanogrid web console: talks to this node's admin API (/v1/...) with the token the user
// typed, kept in this tab's sessionStorage and sent only in the Authorization header.
"use strict";

const TOKEN_KEY = "nanogrid.token";
const POLL_MS = 2000;
const VIEWS = ["cluster", "services", "graph", "grid", "traces", "barriers", "experiments", "events"];
const $ = (sel) => document.querySelector(sel);

let scope = null;          // "read" | "deploy" | "admin" once signed in
let timer = null;
let previous = {};         // last readings, to turn counters into rates: key -> {t, value}

// ---- API --------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = Object.assign({ Authorization: "Bearer " + token }, options.headers || {});
  const resp = await fetch(path, Object.assign({}, options, { headers, credentials: "omit", cache: "no-store" }));
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
  if (!resp.ok) {
    const e = (body && body.error) || {};
    if (resp.status === 401) signOut("The token was refused; sign in again.");
    throw new ApiError(resp.status, e.code || "http-" + resp.status, e.message || text || resp.statusText);
  }
  return body;
}

// ---- helpers ----------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    // Through the CSSOM: the page's policy forbids style attributes.
    else if (k === "style") for (const [p, x] of Object.entries(v)) e.style.setProperty(p, x);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fillBody(table, rows) {
  const body = table.querySelector("tbody");
  body.replaceChildren(...rows);
  if (!rows.length) {
    const cols = table.querySelectorAll("thead th").length;
    body.append(el("tr", {}, el("td", { colspan: cols, class: "empty" }, "nothing yet")));
  }
}

function summary(dl, pairs) {
  dl.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function say(text) { $("#status").textContent = text; }

/// Per-second rate of a counter since the last reading under `key` (null on the first).
function rate(key, value) {
  const now = performance.now();
  const last = previous[key];
  previous[key] = { t: now, value };
  if (!last || now <= last.t || value < last.value) return null;
  return (value - last.value) / ((now - last.t) / 1000);
}

function fmtRate(r) { return r === null ? "…" : r < 10 ? r.toFixed(1) : Math.round(r).toString(); }

function fmtUs(us) {
  if (us === null || us === undefined) return "–";
  if (us >= 1e6) return (us / 1e6).toFixed(2) + " s";
  if (us >= 1e3) return (us / 1e3).toFixed(1) + " ms";
  return Math.round(us) + " µs";
}

/// The bucket bound under which `q` of the requests since the last reading finished.
function quantile(key, latency, q) {
  const last = previous[key];
  previous[key] = { counts: latency.counts };
  if (!last) return undefined;
  const diff = latency.counts.map((c, i) => c - (last.counts[i] || 0));
  const total = diff.reduce((a, b) => a + b, 0);
  if (total <= 0) return null;
  let seen = 0;
  for (let i = 0; i < diff.length; i++) {
    seen += diff[i];
    if (seen >= q * total) return i < latency.bounds.length ? latency.bounds[i] : Infinity;
  }
  return null;
}

function ask(question) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = question;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    $("#confirm-cancel").focus();
  });
}

// ---- sign in / out ----------------------------------------------------------------------

async function signIn(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  const me = await api("/v1/whoami");
  scope = me.scope;
  document.body.dataset.scope = scope;
  $("#who-text").textContent = `node ${me.node} · ${scope} token`;
  $("#login").hidden = true;
  $("#nav").hidden = false;
  $("#who").hidden = false;
  if (!location.hash) location.hash = "#cluster";
  show();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  scope = null;
  clearInterval(timer);
  timer = null;
  for (const v of VIEWS) $("#view-" + v).hidden = true;
  $("#nav").hidden = true;
  $("#who").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  $("#token").value = "";
  $("#token").focus();
}

// ---- views ------------------------------------------------------------------------------

async function showCluster() {
  const c = await api("/v1/cluster");
  summary($("#cluster-summary"), [
    ["Leader", c.leader || "none"], ["Term", c.term], ["This node", `${c.node} (${c.mode})`],
    ["Nodes", c.nodes.length],
  ]);
  fillBody($("#nodes-table"), c.nodes.map((n) => el("tr", { "data-node": n.id, class: n.live ? "" : "warn" },
    el("th", { scope: "row" }, n.id, n.id === c.leader ? el("span", { class: "badge" }, "leader") : null),
    el("td", {}, n.role), el("td", {}, n.mode), el("td", {}, n.live ? "yes" : "no"),
    el("td", {}, n.load ?? "–"), el("td", {}, (n.services || []).join(", ") || "–"), el("td", {}, n.addr || "–"))));
}

async function showServices() {
  const list = (await api("/v1/services")).services;
  const details = await Promise.all(list.map((s) => api("/v1/services/" + encodeURIComponent(s.name)).catch(() => null)));
  const body = $("#services-table tbody");
  for (const stale of body.querySelectorAll("tr:not([data-service])")) stale.remove();
  const names = new Set(list.map((s) => s.name));
  for (const row of body.querySelectorAll("tr[data-service]")) if (!names.has(row.dataset.service)) row.remove();
  list.forEach((s, i) => {
    const d = details[i];
    const nodes = d ? (d.status.nodes || []).filter((n) => n.instances > 0).map((n) => `${n.node}: ${n.instances}`) : [];
    const r = s.requests;
    const total = r.ok + r.guest_error + r.trapped + r.timed_out + r.rejected;
    const reqs = rate("svc-req:" + s.name, total);
    const errs = rate("svc-err:" + s.name, total - r.ok);
    const p99 = quantile("svc-lat:" + s.name, s.latency_us, 0.99);
    const wanted = s.autoscale ? `${s.instances} (auto ${s.autoscale.min}–${s.autoscale.max})` : s.instances;
    const cells = [
      el("th", { scope: "row" }, s.name),
      el("td", {}, s.ready ? "yes" : "no"),
      el("td", { class: "instances" }, wanted),
      el("td", { class: "per-node" }, nodes.join(", ") || "–"),
      el("td", {}, `${s.running} / ${s.queued}`),
      el("td", {}, fmtRate(reqs)),
      el("td", { class: errs > 0 ? "bad" : "" }, fmtRate(errs)),
      el("td", { class: "p99" }, p99 === undefined ? "…" : p99 === null ? "–" : p99 === Infinity ? "> 10 s" : "≤ " + fmtUs(p99)),
    ];
    const row = upsert(body, s.name, cells, () => el("td", { class: "write" }, actions(s.name)));
    row.dataset.instances = s.instances;
    row.dataset.autoscaled = s.autoscale ? "yes" : "";
    for (const c of row.querySelectorAll(".scale, .scale-input")) c.disabled = !!s.autoscale;
    if (body.children[i] !== row) body.insertBefore(row, body.children[i] || null);
  });
  if (!list.length) fillBody($("#services-table"), []);
}

/// Update the row keyed `key` in place: its cells are replaced but the last one (the
/// controls) stays, so a number being typed and the focus survive the poll.
function upsert(body, key, cells, makeLast) {
  let row = [...body.querySelectorAll("tr[data-service]")].find((r) => r.dataset.service === key);
  if (!row) {
    row = el("tr", { "data-service": key }, ...cells, makeLast());
    body.append(row);
    return row;
  }
  const last = row.lastElementChild;
  while (row.firstElementChild !== last) row.firstElementChild.remove();
  for (const c of cells) row.insertBefore(c, last);
  return row;
}

function actions(name) {
  const row = () => [...document.querySelectorAll("#services-table tr[data-service]")].find((r) => r.dataset.service === name);
  const input = el("input", { type: "number", min: 0, max: 1024, "aria-label": `Instances of ${name}`, class: "scale-input" });
  queueMicrotask(() => { const r = row(); if (r) input.value = r.dataset.instances; });
  const scale = el("button", { type: "button", class: "scale", onclick: async () => {
    const n = Number(input.value), from = row() ? row().dataset.instances : "?";
    if (!(await ask(`Scale ${name} from ${from} to ${n} instances?`))) return;
    try { await api(`/v1/services/${encodeURIComponent(name)}/scale`, jsonBody("POST", { instances: n })); say(`${name} scaled to ${n}.`); }
    catch (e) { say(`Scaling ${name} failed: ${e.message}`); }
    refresh();
  } }, "Scale");
  const del = el("button", { type: "button", class: "delete danger", onclick: async () => {
    if (!(await ask(`Delete ${name}? Its instances stop; its kv data stays.`))) return;
    try { await api("/v1/services/" + encodeURIComponent(name), { method: "DELETE" }); say(`${name} deleted.`); }
    catch (e) { say(`Deleting ${name} failed: ${e.message}`); }
    refresh();
  } }, "Delete");
  return el("div", { class: "actions" }, input, scale, del);
}

function jsonBody(method, value) {
  return { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(value) };
}

async function deploy(event) {
  event.preventDefault();
  const form = event.target;
  const out = $("#deploy-result");
  const name = $("#deploy-name").value.trim();
  const file = $("#deploy-file").files[0];
  const instances = Number($("#deploy-instances").value);
  if (!file) { out.textContent = "Choose a .wasm component file."; return; }
  out.textContent = `Uploading ${file.name}…`;
  try {
    const up = await api("/v1/components", { method: "PUT", headers: { "Content-Type": "application/wasm" }, body: file });
    out.textContent = `Uploaded ${up.digest.slice(0, 19)}…; deploying ${name}…`;
    await api("/v1/services/" + encodeURIComponent(name), jsonBody("PUT", { component: up.digest, instances }));
    out.textContent = `Deployed ${name} with ${instances} instance(s).`;
    form.reset();
  } catch (e) {
    out.textContent = `Deploy failed (${e.code}): ${e.message}`;
  }
  refresh();
}

async function showGraph() {
  const g = await api("/v1/graph");
  const edges = g.edges.map((e) => Object.assign({ rate: rate(`edge:${e.from}>${e.to}`, e.calls) }, e));
  drawGraph($("#graph-box"), edges);
  fillBody($("#edges-table"), edges.map((e) => el("tr", { "data-edge": `${e.from}>${e.to}` },
    el("td", {}, e.from), el("td", {}, e.to), el("td", {}, fmtRate(e.rate)), el("td", {}, e.calls),
    el("td", {}, e.remote), el("td", { class: e.errors ? "bad" : "" }, e.errors), el("td", {}, fmtUs(e.mean_us)))));
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

/// Services on a circle, an arrow per edge labelled with its rate.
function drawGraph(box, edges) {
  const names = [...new Set(edges.flatMap((e) => [e.from, e.to]))].sort();
  const W = 640, H = 420, R = Math.min(W, H) / 2 - 70;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", id: "graph-svg",
    "aria-label": names.length ? `Call graph of ${names.length} services; the table below lists every edge` : "No calls yet" });
  const defs = svg("defs", {});
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" });
  marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }));
  defs.append(marker);
  root.append(defs);
  if (!names.length) root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "muted" }, "no calls between services yet"));
  const at = {};
  names.forEach((n, i) => {
    const a = (2 * Math.PI * i) / names.length - Math.PI / 2;
    at[n] = [W / 2 + R * Math.cos(a), H / 2 + R * Math.sin(a)];
  });
  for (const e of edges) {
    const [x1, y1] = at[e.from], [x2, y2] = at[e.to];
    const d = Math.hypot(x2 - x1, y2 - y1) || 1, k = 34 / d;
    const g = svg("g", { class: "edge", "data-edge": `${e.from}>${e.to}` });
    g.append(svg("line", { x1: x1 + (x2 - x1) * k, y1: y1 + (y2 - y1) * k, x2: x2 - (x2 - x1) * k, y2: y2 - (y2 - y1) * k, "marker-end": "url(#arrow)" }));
    g.append(svg("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 6, "text-anchor": "middle", class: "rate" }, `${fmtRate(e.rate)}/s`));
    root.append(g);
  }
  for (const n of names) {
    const [x, y] = at[n];
    const g = svg("g", { class: "service", "data-service": n });
    g.append(svg("circle", { cx: x, cy: y, r: 30 }));
    g.append(svg("text", { x, y: y + 4, "text-anchor": "middle" }, n));
    root.append(g);
  }
  box.replaceChildren(root);
}

async function showGrid() {
  const g = await api("/v1/grid");
  summary($("#grid-summary"), [["Partitions", g.partitions], ["Replication", g.replication],
    ["Under-replicated", g.under_replicated], ["Table version", g.version]]);
  fillBody($("#grid-nodes"), Object.entries(g.nodes).map(([n, v]) => el("tr", { class: v.live ? "" : "warn" },
    el("th", { scope: "row" }, n), el("td", {}, v.primaries), el("td", {}, v.replicas), el("td", {}, v.in_sync), el("td", {}, v.live ? "yes" : "no"))));
  const short = (p) => p.in_sync.length < Math.max(p.replicas.length, g.replication);
  const parts = [...g.table].sort((a, b) => short(b) - short(a) || a.partition - b.partition);
  fillBody($("#grid-parts"), parts.map((p) => el("tr", { class: short(p) ? "warn" : "" },
    el("th", { scope: "row" }, p.partition, short(p) ? el("span", { class: "badge warn" }, "under-replicated") : null),
    el("td", {}, p.primary), el("td", {}, p.epoch), el("td", {}, p.replicas.join(", ")),
    el("td", {}, p.in_sync.join(", ")), el("td", {}, p.last_lsn ?? "–"))));
}

async function showBarriers() {
  const b = await api("/v1/barriers");
  $("#barriers-summary").textContent = `${b.pending.length} pending; ${b.driven_here} driven by this node.`;
  const stats = (await api("/v1/barriers/stats")).callees;
  fillBody($("#barrier-stats"), stats.map((r) => el("tr", { class: r.wait_share >= 0.5 ? "warn" : "" },
    el("td", {}, r.caller), el("td", {}, r.callee), el("td", {}, `${Math.round(r.wait_share * 100)} %`),
    el("td", {}, r.waited_on), el("td", {}, r.p99_ms === null ? "–" : `≤ ${r.p99_ms} ms`), el("td", {}, `${r.remote} / ${r.calls}`))));
  $("#barriers-list").replaceChildren(...b.pending.map((id) => el("li", {}, el("button", { type: "button", class: "link",
    onclick: async () => {
      const pre = $("#barrier-detail");
      try { pre.textContent = JSON.stringify(await api("/v1/barriers/" + encodeURIComponent(id)), null, 2); }
      catch (e) { pre.textContent = e.message; }
      pre.hidden = false;
      pre.focus();
    } }, id))));
}

async function showExperiments() {
  const x = await api("/v1/experiments");
  $("#experiments-summary").textContent = `Mode ${x.mode}; a trial runs ${x.window_ms / 1000} s and needs ${x.min_samples} calls per arm. Rule: ${x.rule}.`;
  const arm = (e, name) => {
    const f = e.figures && e.figures[name];
    const ms = (x) => (x === null ? "failed" : `${x} ms`);
    if (f) return `${f.samples} calls, ${f.errors} failed, ${ms(f.p50_ms)} / ${ms(f.p99_ms)}`;
    return e.so_far ? `${e.so_far[name]} calls so far` : "–";
  };
  const gain = (e) => {
    const g = e.figures && e.figures.p50_gain;
    return g ? `${(g.estimate * 100).toFixed(1)} % (${(g.lo * 100).toFixed(1)} … ${(g.hi * 100).toFixed(1)} %)` : "–";
  };
  const decide = (e, approve) => el("button", { type: "button", class: approve ? "" : "danger", onclick: async () => {
    const verb = approve ? "Apply" : "Roll back";
    if (!(await ask(`${verb} experiment ${e.id}'s move of ${e.service} to ${e.node}?`))) return;
    try { await api(`/v1/experiments/${e.id}/${approve ? "approve" : "reject"}`, { method: "POST" }); say(`Experiment ${e.id} ${approve ? "approved" : "rejected"}.`); }
    catch (err) { say(`Could not decide experiment ${e.id}: ${err.message}`); }
    refresh();
  } }, approve ? "Approve" : "Reject");
  fillBody($("#experiments-table"), x.experiments.map((e) => el("tr", { "data-experiment": e.id, class: e.stage === "pending" ? "warn" : "" },
    el("th", { scope: "row" }, e.id), el("td", { class: "stage" }, e.stage), el("td", {}, `${e.service} @ ${e.node}`),
    el("td", {}, arm(e, "old")), el("td", {}, arm(e, "new")), el("td", {}, gain(e)),
    el("td", {}, e.hypothesis, e.verdict ? el("br") : null, e.verdict || null),
    el("td", { class: "admin-only" }, e.stage === "pending" ? [decide(e, true), " ", decide(e, false)] : "–"))));
}

async function showEvents() {
  const ev = (await api("/v1/events?limit=200")).events.slice().reverse();
  fillBody($("#events-table"), ev.map((e) => el("tr", {},
    el("td", {}, e.seq), el("td", {}, new Date(e.at_ms).toLocaleTimeString()), el("td", {}, e.kind),
    el("td", {}, [e.service, e.node].filter(Boolean).join(" @ ") || "–"),
    el("td", {}, e.from !== undefined || e.to !== undefined ? `${e.from ?? "–"} → ${e.to ?? "–"}` : "–"),
    el("td", {}, e.reason))));
}

let traceShown = null;     // the trace whose waterfall is open

async function showTraces() {
  const params = new URLSearchParams({ limit: "50" });
  const svc = $("#traces-service").value.trim();
  if (svc) params.set("service", svc);
  params.set("min_ms", String(Number($("#traces-min").value) || 0));
  const list = (await api("/v1/traces?" + params)).traces;
  fillBody($("#traces-table"), list.map((t) => el("tr", { "data-trace": t.trace_id, class: t.errors ? "warn" : "" },
    el("td", {}, el("button", { type: "button", class: "link mono", onclick: () => openTrace(t.trace_id) }, t.trace_id.slice(0, 16) + "…")),
    el("td", {}, t.root), el("td", {}, (t.duration_us / 1000).toFixed(2)), el("td", {}, t.spans),
    el("td", {}, t.services.join(", ")), el("td", {}, t.nodes.join(", ")))));
}

/// One trace as a waterfall: spans nested by parent, bars on a common time axis.
async function openTrace(id) {
  traceShown = id;
  const t = await api("/v1/traces/" + encodeURIComponent(id));
  const spans = t.spans;
  const t0 = Math.min(...spans.map((s) => s.start_unix_us));
  const t1 = Math.max(...spans.map((s) => s.start_unix_us + s.duration_us), t0 + 1);
  const ids = new Set(spans.map((s) => s.span_id));
  const kids = {};
  const roots = [];
  for (const s of spans) {
    if (s.parent_id && ids.has(s.parent_id)) (kids[s.parent_id] = kids[s.parent_id] || []).push(s); else roots.push(s);
  }
  const items = [];
  const walk = (s, depth) => {
    const left = ((s.start_unix_us - t0) / (t1 - t0)) * 100, width = Math.max((s.duration_us / (t1 - t0)) * 100, 0.5);
    const label = `${s.name} on ${s.node}: ${(s.duration_us / 1000).toFixed(2)} ms` + (s.error ? ` (error ${s.error})` : "");
    const attrs = Object.entries(s.attrs || {}).map(([k, v]) => `${k}=${v}`).join("  ");
    items.push(el("li", { class: "span" + (s.error ? " bad" : ""), "data-span": s.span_id, style: { "--depth": String(depth) } },
      el("span", { class: "span-name", title: attrs }, label),
      el("span", { class: "bar-track", "aria-hidden": "true" }, el("span", { class: "bar", style: { "--left": `${left}%`, "--width": `${width}%` } }))));
    for (const k of (kids[s.span_id] || []).sort((a, b) => a.start_unix_us - b.start_unix_us)) walk(k, depth + 1);
  };
  for (const r of roots.sort((a, b) => a.start_unix_us - b.start_unix_us)) walk(r, 0);
  $("#trace-title").textContent = `Trace ${id} · ${((t1 - t0) / 1000).toFixed(2)} ms · ${spans.length} spans`;
  $("#waterfall").replaceChildren(...items);
  $("#trace-detail").hidden = false;
  $("#trace-detail").focus();
}

const SHOW = { cluster: showCluster, services: showServices, graph: showGraph, grid: showGrid, traces: showTraces, barriers: showBarriers, experiments: showExperiments, events: showEvents };

function current() {
  const v = location.hash.slice(1);
  return VIEWS.includes(v) ? v : "cluster";
}

async function refresh() {
  if (!scope) return;
  const v = current();
  try { await SHOW[v](); document.body.dataset.loaded = v; }
  catch (e) { if (scope) say(`Could not load ${v}: ${e.message}`); }
}

function show() {
  if (!scope) return;
  const v = current();
  for (const name of VIEWS) $("#view-" + name).hidden = name !== v;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.view === v) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  previous = {};
  say("");
  clearInterval(timer);
  refresh();
  // The trace list stays put while it is read (Filter refreshes it); other views poll.
  if (v !== "traces") timer = setInterval(refresh, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const token = $("#token").value.trim();
    try { await signIn(token); }
    catch (err) { signOut(err.status === 401 ? "That token is not one of this cluster's." : `Sign-in failed: ${err.message}`); }
  });
  $("#logout").addEventListener("click", () => signOut("Signed out."));
  $("#deploy-form").addEventListener("submit", deploy);
  $("#traces-filter").addEventListener("submit", (e) => { e.preventDefault(); refresh(); });
  window.addEventListener("hashchange", show);
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved).catch(() => signOut("Sign in again."));
  else signOut("");
});
