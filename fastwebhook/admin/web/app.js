// The executions page: views over /api/admin/ (SPEC section 9), nothing else.
// Every value from a webhook goes into the page as text (textContent), never as markup.
"use strict";

const TOKEN_KEY = "fastwebhook-admin-token";   // sessionStorage: this tab only, this origin only
const REFRESH_MS = 5000;
const STATUSES = ["queued", "started", "resolved", "failed", "error", "aborted", "duplicate"];
const samples = new Map();                     // workflow -> [{at, requests}], for the chart
let timer = null;
let paused = false;

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

class Refused extends Error {}

async function api(path, options = {}) {
  const response = await fetch(`/api/admin${path}`, {
    ...options, headers: { Authorization: `Bearer ${token()}`, ...(options.headers || {}) },
  });
  if (response.status === 401) {
    signOut("The server refused the token (401): sign in again.");
    throw new Refused("401");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status}`);
  return body;
}

// -- sign-in ---------------------------------------------------------------------------------
function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(timer);
  document.getElementById("nav").hidden = true;
  document.getElementById("view").replaceChildren();
  document.getElementById("sign-in").hidden = false;
  document.getElementById("sign-in-error").textContent = message || "";
}

async function signIn(event) {
  event.preventDefault();
  const given = document.getElementById("token").value;
  const response = await fetch("/api/admin/workflows", { headers: { Authorization: `Bearer ${given}` } });
  if (response.status === 401) {
    document.getElementById("sign-in-error").textContent = "Wrong token: the server refused it.";
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, given);
  document.getElementById("token").value = "";
  showApp();
}

function showApp() {
  document.getElementById("sign-in").hidden = true;
  document.getElementById("nav").hidden = false;
  route();
}

// -- small pieces ------------------------------------------------------------------------------
function when(iso) {
  if (!iso) return el("span", {}, "-");
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  const text = seconds < 60 ? `${Math.round(seconds)} s ago` : seconds < 3600 ? `${Math.round(seconds / 60)} min ago`
    : seconds < 86400 ? `${Math.round(seconds / 3600)} h ago` : `${Math.round(seconds / 86400)} d ago`;
  return el("time", { datetime: iso, title: iso }, text);
}

function status(value) {
  const text = String(value);
  const kind = /^\d{3}$/.test(text) ? `s-${text[0]}xx` : `s-${text}`;
  return el("span", { class: `status ${kind}` }, text);
}

function json(label, value, open = true) {
  const text = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  return el("details", { open }, el("summary", {}, label), el("pre", {}, text));
}

function table(headings, rows) {
  return el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, headings.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows)));
}

function query() {
  const [, search = ""] = location.hash.split("?");
  return new URLSearchParams(search);
}

function go(path, params) {
  const search = new URLSearchParams(Object.entries(params || {}).filter(([, v]) => v)).toString();
  location.hash = search ? `${path}?${search}` : path;
}

function cursorBefore(date) {
  // Execution ids are time-ordered (UUIDv7): the first id of that millisecond lists what came before.
  const hex = Math.floor(date.getTime()).toString(16).padStart(12, "0");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-7000-8000-000000000000`;
}

function chart(points) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 120 28");
  const rates = [];
  for (let i = 1; i < points.length; i++) {
    rates.push(Math.max(0, points[i].requests - points[i - 1].requests) / Math.max(0.001, points[i].at - points[i - 1].at));
  }
  const top = Math.max(1, ...rates);
  const width = 120 / 59;   // a bar per 5 s sample, five minutes across
  rates.slice(-59).forEach((rate, i, shown) => {
    const bar = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    const height = Math.max(1, (rate / top) * 27);
    bar.setAttribute("x", String(120 - (shown.length - i) * width));
    bar.setAttribute("y", String(28 - height));
    bar.setAttribute("width", String(width * 0.8));
    bar.setAttribute("height", String(height));
    svg.append(bar);
  });
  const total = points.length ? points[points.length - 1].requests : 0;
  const label = rates.length ? `${rates[rates.length - 1].toFixed(1)}/s` : `${total} so far`;
  return el("span", { title: "requests per second, sampled every 5 s while this page is open" }, svg, " ", label);
}

function refreshLater(render) {
  clearTimeout(timer);
  timer = setTimeout(() => { if (!paused) render(); else refreshLater(render); }, REFRESH_MS);
}

// -- views -----------------------------------------------------------------------------------
async function workflowsView(view) {
  const [workflows, stats] = await Promise.all([api("/workflows"), api("/stats")]);
  for (const [key, figures] of Object.entries(stats.workflows)) {
    const list = samples.get(key) || [];
    list.push({ at: stats.at, requests: figures.requests });
    samples.set(key, list.slice(-60));   // five minutes
  }
  const rows = workflows.items.map((w) => {
    const counts = (stats.workflows[w.key] || { executions: {} }).executions;
    const byStatus = STATUSES.filter((s) => counts[s]).map((s) => el("span", {}, status(s), ` ${counts[s]} `));
    return el("tr", {},
      el("td", {}, el("a", { href: `#/executions?workflow=${encodeURIComponent(w.key)}` }, w.key)),
      el("td", { class: "wrap" }, w.title), el("td", {}, w.path), el("td", {}, w.mode),
      el("td", {}, w.enabled ? "yes" : "no"), el("td", { class: "wrap" }, byStatus.length ? byStatus : "-"),
      el("td", {}, chart(samples.get(w.key) || [])), el("td", {}, workflowLink(w.key, `nodes-${w.key}`, "nodes")));
  });
  view.replaceChildren(el("h1", {}, "Workflows"),
    table(["key", "title", "path", "mode", "enabled", "executions by status", "requests", "nodes"], rows));
  return () => render(workflowsView);   // refreshed
}

async function executionsView(view) {
  const params = query();
  const [workflows, page] = await Promise.all([api("/workflows"), api(`/executions?${apiParams(params)}`)]);
  const choose = (name, options, current) => el("label", {}, `${name} `,
    el("select", { name, onchange: (e) => go("#/executions", { ...Object.fromEntries(params), [name]: e.target.value, cursor: "" }) },
      el("option", { value: "" }, "all"), options.map((o) => el("option", { value: o, selected: o === current }, o))));
  const before = el("input", { type: "datetime-local", name: "before", value: params.get("before") || "" });
  const filters = el("div", { class: "filters" },
    choose("workflow", workflows.items.map((w) => w.key), params.get("workflow")),
    choose("status", STATUSES, params.get("status")),
    el("label", {}, "before ", before),
    el("button", { type: "button", onclick: () => go("#/executions", { ...Object.fromEntries(params), before: before.value, cursor: "" }) }, "Apply"),
    el("button", { type: "button", id: "pause", onclick: (e) => { paused = !paused; e.target.textContent = paused ? "Resume refresh" : "Pause refresh"; } },
      paused ? "Resume refresh" : "Pause refresh"));
  const rows = page.items.map((x) => el("tr", {},
    el("td", {}, el("a", { href: `#/execution/${encodeURIComponent(x.id)}` }, x.id)),
    el("td", {}, x.workflow), el("td", {}, status(x.status)), el("td", {}, when(x.created_at)),
    el("td", {}, x.finished_at && x.started_at ? `${Date.parse(x.finished_at) - Date.parse(x.started_at)} ms` : "-"),
    el("td", { class: "wrap" }, x.error || "")));
  const pager = el("div", { class: "pager" },
    params.get("cursor") ? el("a", { href: "#/executions" }, "Newest") : null,
    page.next ? el("a", { href: `#/executions?${new URLSearchParams({ ...Object.fromEntries(params), cursor: page.next })}` }, "Older") : null);
  view.replaceChildren(el("h1", {}, "Executions"), filters,
    page.items.length ? table(["id", "workflow", "status", "created", "duration", "error"], rows) : el("p", {}, "No executions."), pager);
  if (!params.get("cursor") && !params.get("before")) return () => render(executionsView);
}

function apiParams(params) {
  const out = new URLSearchParams({ limit: "50" });
  for (const name of ["workflow", "status"]) if (params.get(name)) out.set(name, params.get(name));
  const cursor = params.get("cursor") || (params.get("before") ? cursorBefore(new Date(params.get("before"))) : "");
  if (cursor) out.set("cursor", cursor);
  return out.toString();
}

async function executionView(view, id) {
  const x = await api(`/executions/${encodeURIComponent(id)}`);
  const r = x.request || {};
  const note = el("p", { id: "replay-note", role: "status" });
  const replay = el("button", { type: "button", id: "replay", onclick: async () => {
    try {
      const done = await api(`/executions/${encodeURIComponent(id)}/replay`, { method: "POST" });
      note.replaceChildren("Replayed as ", el("a", { href: `#/execution/${encodeURIComponent(done.execution_id)}`, id: "replayed" }, done.execution_id), ` (${done.status}).`);
    } catch (error) {
      if (!(error instanceof Refused)) note.textContent = `Replay refused: ${error.message}`;
    }
  } }, "Replay");
  const jobs = (x.jobs || []).map((j) => el("div", { class: "job" },
    el("div", {}, el("strong", {}, j.node), ` (${j.type}) `, status(j.status), ` ${Number(j.duration_ms).toFixed(2)} ms`),
    j.error ? el("p", { class: "error" }, j.error) : null,
    j.result !== null && j.result !== undefined ? json("result", j.result, false) : null,
    j.logs && j.logs.length ? json(`logs (${j.logs.length})`, j.logs.map((line) => typeof line === "string" ? line : JSON.stringify(line)).join("\n")) : null));
  view.replaceChildren(
    el("h1", {}, "Execution ", el("code", {}, x.id), " ", status(x.status)),
    el("dl", {}, el("dt", {}, "workflow"), el("dd", {}, x.workflow), el("dt", {}, "created"), el("dd", {}, when(x.created_at)),
      el("dt", {}, "started"), el("dd", {}, when(x.started_at)), el("dt", {}, "finished"), el("dd", {}, when(x.finished_at)),
      el("dt", {}, "dedup key"), el("dd", {}, x.dedup_key || "-"), el("dt", {}, "error"), el("dd", { class: "error" }, x.error || "-")),
    failureOfNote(x),
    el("div", {}, replay, note),
    el("h2", {}, "Request"),
    el("p", {}, el("code", {}, `${r.method || ""} ${r.path || ""}`), ` from ${r.ip || "-"}`),
    table(["header", "value"], Object.entries(r.headers || {}).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", { class: "wrap" }, v)))),
    json("query", r.query || {}), json("params", r.params || {}), json("data", r.data),
    el("h2", {}, `Jobs (${(x.jobs || []).length})`), ...jobs);
}

// -- a workflow's nodes: the tree they run in, each with its figures since the server started --
async function workflowView(view, key) {
  const [w, stats] = await Promise.all([api(`/workflows/${encodeURIComponent(key)}`), api("/stats")]);
  const figures = (stats.workflows[key] || {}).nodes || {};
  view.replaceChildren(
    el("h1", {}, "Workflow ", el("code", {}, w.key)),
    el("dl", {}, el("dt", {}, "title"), el("dd", {}, w.title || "-"), el("dt", {}, "path"), el("dd", {}, w.path || "-"),
      el("dt", {}, "mode"), el("dd", {}, w.mode || "-"), el("dt", {}, "enabled"), el("dd", {}, w.enabled ? "yes" : "no"),
      el("dt", {}, "on failure"), el("dd", {}, w.on_failure ? workflowLink(w.on_failure, "on-failure") : "-")),
    el("p", {}, el("a", { href: `#/executions?workflow=${encodeURIComponent(w.key)}` }, "Its executions")),
    el("h2", {}, "Nodes"),
    w.nodes && w.nodes.length ? nodeTree(w.nodes, figures) : el("p", {}, "No nodes: its requests are only recorded."));
  return () => render(workflowView, key);   // refreshed
}

function workflowLink(key, id, label = key) {
  return el("a", { href: `#/workflow/${encodeURIComponent(key)}`, id }, label);
}

function nodeTree(nodes, figures) {
  return el("ol", { class: "nodes" }, nodes.map((n) => el("li", { class: "node", "data-node": n.key },
    el("div", { class: "node-line" }, el("strong", {}, n.key), ` (${n.type})`, n.title ? ` ${n.title}` : "", " ",
      nodeFigures(figures[n.key])),
    ["then", "else"].filter((branch) => n[branch]).map((branch) => el("div", { class: "branch", "data-branch": branch },
      el("span", { class: "branch-label" }, branch), nodeTree(n[branch], figures))))));
}

function nodeFigures(f) {
  if (!f || !f.count) return el("span", { class: "figures" }, "not run yet");
  const bound = (ms) => (ms === null || ms === undefined ? "over the top bucket" : `≤ ${ms} ms`);
  const rate = ((100 * f.failures) / f.count).toFixed(1);
  return el("span", { class: "figures" }, `${f.count} run${f.count === 1 ? "" : "s"} · `,
    el("span", { class: f.failures ? "error" : "" }, `${rate}% failed`), ` · p50 ${bound(f.p50_ms)} · p99 ${bound(f.p99_ms)}`);
}

function failureOfNote(x) {
  // a failure workflow's execution (on_failure): the failed execution it reports
  if (!x.failure_of) return document.createDocumentFragment();   // (replaceChildren would write null out)
  return el("p", { class: "failure-of" }, "Reports the failed execution ",
    el("a", { href: `#/execution/${encodeURIComponent(x.failure_of)}`, id: "failure-of" }, x.failure_of), ".");
}

async function requestsView(view) {
  const params = query();
  const search = new URLSearchParams({ limit: "50" });
  if (params.get("cursor")) search.set("cursor", params.get("cursor"));
  const page = await api(`/requests?${search}`);
  const own = (q) => q.path.startsWith("/api/admin/") || q.path === "/admin" || q.path.startsWith("/admin/");
  const hideOwn = params.get("all") !== "1";
  const shown = hideOwn ? page.items.filter((q) => !own(q)) : page.items;
  const toggle = el("label", {}, el("input", { type: "checkbox", id: "show-own", checked: !hideOwn,
    onchange: (e) => go("#/requests", { cursor: params.get("cursor"), all: e.target.checked ? "1" : "" }) }),
    " show this page's own requests");
  const rows = shown.map((q) => el("tr", {},
    el("td", {}, when(q.at)), el("td", {}, q.ip), el("td", {}, q.method), el("td", { class: "wrap" }, q.path),
    el("td", {}, q.workflow || "-"), el("td", {}, status(q.status)), el("td", { class: "wrap" }, q.reason || ""),
    el("td", {}, q.execution_id ? el("a", { href: `#/execution/${encodeURIComponent(q.execution_id)}` }, "execution") : "")));
  view.replaceChildren(el("h1", {}, "Request log"), el("div", { class: "filters" }, toggle),
    shown.length ? table(["at", "ip", "method", "path", "workflow", "status", "reason", ""], rows) : el("p", {}, "No requests."),
    el("div", { class: "pager" }, params.get("cursor") ? el("a", { href: "#/requests" }, "Newest") : null,
      page.next ? el("a", { href: `#/requests?${new URLSearchParams({ cursor: page.next, all: hideOwn ? "" : "1" })}` }, "Older") : null));
  if (!params.get("cursor")) return () => render(requestsView);
}

let rendering = 0;   // the current view's number: a slower, older one never lands over it

async function render(view, ...args) {
  const mine = ++rendering;
  const target = document.getElementById("view");
  const staging = el("section", {});
  try {
    const again = await view(staging, ...args);   // a view that refreshes itself says how
    if (mine !== rendering || !token()) return;
    target.replaceChildren(...staging.childNodes);
    if (again) refreshLater(again);
  } catch (error) {
    if (mine === rendering && !(error instanceof Refused)) {
      target.replaceChildren(el("p", { class: "error", role: "alert" }, `Could not load: ${error.message}`));
    }
  }
}

function route() {
  clearTimeout(timer);
  paused = false;
  if (!token()) return signOut();
  const [path] = location.hash.slice(1).split("?");
  if (path.startsWith("/execution/")) {
    let id;
    try { id = decodeURIComponent(path.slice("/execution/".length)); } catch { id = ""; }
    return render(executionView, id);
  }
  if (path.startsWith("/workflow/")) {
    let key;
    try { key = decodeURIComponent(path.slice("/workflow/".length)); } catch { key = ""; }
    return render(workflowView, key);
  }
  if (path === "/executions") return render(executionsView);
  if (path === "/requests") return render(requestsView);
  return render(workflowsView);
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sign-in").addEventListener("submit", signIn);
  document.getElementById("sign-out").addEventListener("click", () => signOut("Signed out."));
  window.addEventListener("hashchange", () => { if (token()) route(); });
  if (token()) showApp(); else signOut();
});
