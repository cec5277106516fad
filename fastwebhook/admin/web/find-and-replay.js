// The executions list's operator tools (SPEC section 9): finding an execution by what it carried
// (dedup key, request id, a field of its body) and "Replay N matching", and an execution's
// replay_of link.  app.js's views call these; they use its el(), api(), go() and STATUSES.
"use strict";

const FINAL_STATUSES = ["resolved", "failed", "error", "aborted"];   // what "all" replays
const BULK_LIMIT = 10000;
let bulk = null;   // the list's bulk replay under way: {filter, stage, ...}, kept across refreshes

// -- finding ---------------------------------------------------------------------------------
function carriedFilters(params) {
  // `data` is written PATH=VALUE (order.id=42); the API takes it as data.order.id=42.
  const field = (name, label, placeholder) => el("label", {}, `${label} `,
    el("input", { type: "text", name, value: params.get(name) || "", placeholder, size: 14 }));
  const inputs = [field("dedup_key", "dedup key", ""), field("request_id", "request id", ""),
    field("data", "data", "order.id=42")];
  const find = () => {
    const given = Object.fromEntries(inputs.map((label) => {
      const input = label.querySelector("input");
      return [input.name, input.value.trim()];
    }));
    go("#/executions", { ...Object.fromEntries(params), ...given, cursor: "" });
  };
  inputs.forEach((label) => label.querySelector("input").addEventListener("keydown", (e) => { if (e.key === "Enter") find(); }));
  return [...inputs, el("button", { type: "button", id: "find", onclick: find }, "Find")];
}

function carriedParams(params, out) {
  for (const name of ["dedup_key", "request_id"]) if (params.get(name)) out.set(name, params.get(name));
  const data = params.get("data");
  if (data && data.includes("=")) {
    const at = data.indexOf("=");
    out.set(`data.${data.slice(0, at).trim()}`, data.slice(at + 1).trim());
  }
  return out;
}

// -- replaying what the list matches ---------------------------------------------------------
function bulkFilter(params) {
  // What the list shows, as a bulk replay's filter; null when it filters by what was carried
  // (a bulk replay takes workflow, status and time only).
  if (["dedup_key", "request_id", "data"].some((name) => params.get(name))) return null;
  const filter = { status: params.get("status") ? [params.get("status")] : FINAL_STATUSES, limit: BULK_LIMIT };
  if (params.get("workflow")) filter.workflow = params.get("workflow");
  if (params.get("before")) filter.until = new Date(params.get("before")).toISOString();
  return filter;
}

function describe(filter) {   // its time bound is the count's, said apart
  return [filter.workflow ? `workflow ${filter.workflow}` : "every workflow", `status ${filter.status.join(" or ")}`].join(", ");
}

function countedUntil(filter) {
  // The count's time bounds the replay: what fails between the count and the confirmation was
  // not in the N the operator confirmed, so it is not replayed.  A list that ends earlier (its
  // `before`) keeps its own bound.  ISO 8601 times in UTC compare as strings.
  const now = new Date().toISOString();
  return filter.until && filter.until < now ? filter.until : now;
}

function newKey() {   // an Idempotency-Key: a second click, a retry, replays nothing twice
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function replayMatching(params) {
  const box = el("div", { id: "bulk-replay", class: "filters" });
  const filter = bulkFilter(params);
  if (!filter) return box;
  const same = JSON.stringify(filter);
  if (!bulk || bulk.filter !== same) bulk = { filter: same, stage: "idle" };
  bulk.box = box;   // a refresh draws the list anew: what is under way goes on in the new box
  drawBulk(filter);
  return box;
}

function drawBulk(filter) {
  const state = bulk;
  const redraw = () => { if (bulk === state) drawBulk(filter); };
  const fail = (error) => {
    if (error instanceof Refused) return;
    Object.assign(state, { stage: "failed", message: error.message });
    redraw();
  };
  const count = async () => {
    Object.assign(state, { stage: "counting", until: countedUntil(filter) });
    redraw();
    try {
      const dry = await api("/executions/replay", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ ...filter, until: state.until, dry_run: true }) });
      Object.assign(state, { stage: "confirm", count: dry.items.length, cannot: dry.not_replayed.length, key: newKey() });
    } catch (error) { return fail(error); }
    redraw();
  };
  const replay = async () => {
    Object.assign(state, { stage: "replaying" });
    redraw();
    try {
      const done = await api("/executions/replay", { method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": state.key },
        body: JSON.stringify({ ...filter, until: state.until }) });
      Object.assign(state, { stage: "done", answer: done });
    } catch (error) { return fail(error); }
    redraw();
  };
  const again = el("button", { type: "button", onclick: () => { Object.assign(state, { stage: "idle" }); redraw(); } }, "Close");
  const shown = {
    idle: () => [el("button", { type: "button", id: "replay-matching", onclick: count }, "Replay matching…")],
    counting: () => ["Counting the matching executions…"],
    confirm: () => state.count === 0 ? ["No execution matches to replay.", again] : [
      el("span", { id: "replay-confirmation" }, `Replay ${state.count} matching execution${state.count === 1 ? "" : "s"} `
        + `(${describe(filter)}) created before ${state.until}? Each runs its stored request again as a new execution;`
        + " those that arrive after this count are not."
        + (state.cannot ? ` ${state.cannot} more cannot be replayed.` : "")),
      el("button", { type: "button", id: "replay-confirm", onclick: replay }, `Replay ${state.count} matching`),
      el("button", { type: "button", id: "replay-cancel", onclick: () => { Object.assign(state, { stage: "idle" }); redraw(); } }, "Cancel")],
    replaying: () => [`Replaying ${state.count}…`],
    done: () => [el("span", { id: "replay-outcome", role: "status" }, `Replayed ${state.answer.replayed} of ${state.answer.matched}.`
      + state.answer.not_replayed.map((x) => ` ${x.replay_of}: ${x.reason}.`).join("")), again],
    failed: () => [el("span", { class: "error", role: "alert" }, `Bulk replay refused: ${state.message}`), again],
  };
  state.box.replaceChildren(...shown[state.stage]());
}

// -- an execution ----------------------------------------------------------------------------
function replayOf(x) {
  if (!x.replay_of) return [];
  return [el("dt", {}, "replay of"),
    el("dd", {}, el("a", { href: `#/execution/${encodeURIComponent(x.replay_of)}`, id: "replay-of" }, x.replay_of))];
}
