// The runs history: search by job name, status, a time range, and pages; every filter is in the
// URL (#/runs?q=etl&status=failed&from=…&before=…) so a reload or a shared link shows the same.
import { get, projectPath } from "../api.js";
import { fill, h, timeZones } from "../dom.js";
import { session } from "../session.js";
import { runTable } from "./job.js";

const STATUSES = ["pending", "running", "succeeded", "failed", "timed_out", "cancelled", "lost", "skipped"];
const PAGE = 50; // per page; ?limit= in the URL changes it (1–200)

// <input type=datetime-local> value -> ISO instant, read in the zone times are shown in.
export function localToIso(value, zone) {
  if (!value) return "";
  if (zone === "UTC") return `${value.length === 16 ? `${value}:00` : value}Z`;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString();
}

function isoToLocal(iso, zone) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  if (zone === "UTC") return d.toISOString().slice(0, 16);
  const off = d.getTimezoneOffset() * 60000;
  return new Date(d.getTime() - off).toISOString().slice(0, 16);
}

export async function render(root, ctx) {
  const project = session.project;
  const zone = timeZones.mode === "utc" ? "UTC" : "browser";
  const q = ctx.query;
  const job = h("input", { name: "q", type: "search", placeholder: "job name (any part)", value: q.get("q") || q.get("job") || "" });
  const status = h("select", { name: "status" }, h("option", { value: "" }, "any status"), STATUSES.map((st) => h("option", { value: st, selected: q.get("status") === st }, st.replace("_", " "))));
  const from = h("input", { name: "from", type: "datetime-local", value: isoToLocal(q.get("from"), zone) });
  const to = h("input", { name: "to", type: "datetime-local", value: isoToLocal(q.get("to"), zone) });
  const zoneNote = zone === "UTC" ? "UTC" : timeZones.browser();
  const list = h("div", null, h("p", { class: "muted loading" }, "Loading…"));
  const pager = h("div", { class: "row pager" });
  const pages = q.get("before") ? [q.get("before")] : []; // the `before` of each page shown so far
  let before = q.get("before") || null;
  root.append(
    h("h1", null, "Runs"),
    h("form", { class: "filters", role: "search", onsubmit: (e) => { e.preventDefault(); before = null; pages.length = 0; load(); } },
      h("label", null, h("span", { class: "sr-only" }, "Job"), job),
      h("label", null, h("span", { class: "sr-only" }, "Status"), status),
      h("label", { class: "small" }, `From (${zoneNote}) `, from),
      h("label", { class: "small" }, `To `, to),
      h("button", { type: "submit", class: "secondary" }, "Filter")),
    list,
    pager,
  );
  function params() {
    const qs = new URLSearchParams();
    if (job.value.trim()) qs.set("q", job.value.trim());
    if (status.value) qs.set("status", status.value);
    const f = localToIso(from.value, zone), t = localToIso(to.value, zone);
    if (f) qs.set("from", f);
    if (t) qs.set("to", t);
    return qs;
  }
  async function load() {
    const qs = params();
    const filtered = [...qs.keys()].length > 0;
    if (before) qs.set("before", before);
    const limit = Math.min(200, Math.max(1, Number(q.get("limit")) || PAGE));
    if (limit !== PAGE) qs.set("limit", String(limit));
    history.replaceState(null, "", `#/runs${[...qs.keys()].length ? `?${qs}` : ""}`);
    qs.set("limit", String(limit));
    try {
      const { runs, next } = await get(projectPath(project, `/runs?${qs}`));
      fill(list, runTable(runs, true, filtered || before ? "No runs match these filters." : "No runs yet."));
      fill(
        pager,
        h("span", { class: "muted small" }, before ? `Older runs, page ${pages.length + 1}` : "Newest runs"),
        h("div", { class: "actions" },
          before ? h("button", { type: "button", class: "secondary small", onclick: () => { pages.pop(); before = pages[pages.length - 1] || null; load(); } }, "Newer") : null,
          next ? h("button", { type: "button", class: "secondary small", onclick: () => { pages.push(next); before = next; load(); } }, "Older") : null),
      );
    } catch (err) {
      fill(list, h("p", { class: "error" }, err.message));
    }
  }
  status.addEventListener("change", () => { before = null; pages.length = 0; load(); });
  await load();
  ctx.every(3000, () => (before ? null : load())); // a page of older runs holds still
}
