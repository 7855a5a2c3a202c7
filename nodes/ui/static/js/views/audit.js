import { get } from "../api.js";
import { fill, h, table, timeEl } from "../dom.js";
import { session } from "../session.js";

// Pure: an audited request -> what it did, in words ("deleted job nightly in default").
const VERB = { POST: "created", PUT: "set", PATCH: "changed", DELETE: "deleted" };
const ACTIONS = [
  [/^\/api\/v1\/auth\/login$/, () => "logged in"],
  [/^\/api\/v1\/auth\/logout$/, () => "logged out"],
  [/^\/api\/v1\/projects\/([^/]+)\/jobs\/([^/]+)\/runs$/, (m, p, j) => `ran job ${j} in ${p}`],
  [/^\/api\/v1\/projects\/([^/]+)\/jobs\/([^/]+)\/backfill$/, (m, p, j) => `backfilled job ${j} in ${p}`],
  [/^\/api\/v1\/projects\/([^/]+)\/jobs\/([^/]+)$/, (m, p, j) => `${VERB[m] || m} job ${j} in ${p}`],
  [/^\/api\/v1\/projects\/([^/]+)\/jobs$/, (m, p) => `created a job in ${p}`],
  [/^\/api\/v1\/projects\/([^/]+)\/runs\/([^/]+)\/(cancel|abort)$/, (m, p, r, a) => `${a === "abort" ? "aborted" : "cancelled"} run ${r} in ${p}`],
  [/^\/api\/v1\/projects\/([^/]+)\/workflows\/([^/]+)\/executions$/, (m, p, w) => `ran workflow ${w} in ${p}`],
  [/^\/api\/v1\/projects\/([^/]+)\/workflows\/([^/]+)$/, (m, p, w) => `${VERB[m] || m} workflow ${w} in ${p}`],
  [/^\/api\/v1\/projects\/([^/]+)\/workflows$/, (m, p) => `created a workflow in ${p}`],
  [/^\/api\/v1\/projects\/([^/]+)\/executions\/([^/]+)\/(rerun|cancel)$/, (m, p, e, a) => `${a === "rerun" ? "reran" : "cancelled"} execution ${e} in ${p}`],
  [/^\/api\/v1\/projects\/([^/]+)\/secrets\/([^/]+)$/, (m, p, s) => `${m === "DELETE" ? "deleted" : "set"} secret ${s} in ${p}`],
  [/^\/api\/v1\/users$/, () => "created a user"],
  [/^\/api\/v1\/users\/([^/]+)\/tokens\/([^/]+)$/, (m, u) => `revoked a token of ${u}`],
  [/^\/api\/v1\/users\/([^/]+)\/tokens$/, (m, u) => `created a token for ${u}`],
  [/^\/api\/v1\/users\/([^/]+)$/, (m, u) => `${VERB[m] || m} user ${u}`],
  [/^\/api\/v1\/nodes\/([^/]+)\/(drain|enable|disable)$/, (m, n, a) => `${{ drain: "drained", enable: "enabled", disable: "disabled" }[a]} node ${n}`],
  [/^\/api\/v1\/groups\/([^/]+)\/bindings\/([^/]+)$/, (m, g, b) => `${m === "DELETE" ? "removed" : "set"} binding ${b} of group ${g}`],
  [/^\/api\/v1\/groups\/([^/]+)$/, (m, g) => `${VERB[m] || m} group ${g}`],
];

export function describe(method, path) {
  const clean = (path || "").split("?")[0];
  for (const [re, say] of ACTIONS) {
    const m = re.exec(clean);
    if (m) return say(method, ...m.slice(1).map(decodeURIComponent));
  }
  return `${method} ${clean}`;
}

export async function render(root, ctx) {
  if (!session.admin) {
    root.append(h("h1", null, "Audit log"), h("p", null, "Only cluster admins read the audit log."));
    return;
  }
  const actor = h("input", { type: "search", name: "actor", placeholder: "actor" });
  const list = h("div");
  root.append(
    h("h1", null, "Audit log"),
    h("form", { class: "filters", role: "search", onsubmit: (e) => { e.preventDefault(); load(); } }, h("label", null, h("span", { class: "sr-only" }, "Actor"), actor), h("button", { class: "secondary", type: "submit" }, "Filter")),
    list,
  );
  async function load() {
    const qs = new URLSearchParams({ limit: "200" });
    if (actor.value.trim()) qs.set("actor", actor.value.trim());
    const { entries } = await get(`/api/v1/audit?${qs}`);
    fill(
      list,
      table(
        ["When", "Actor", "Action", "Status", "Outcome", "Changes"],
        entries.map((e) =>
          h(
            "tr",
            null,
            h("td", null, timeEl(e.at)),
            h("td", null, e.actor, e.via ? h("span", { class: "muted small" }, ` (${e.via})`) : null),
            h("td", null, describe(e.method, e.path), h("div", null, h("code", { class: "muted small" }, `${e.method} ${e.path}`))),
            h("td", null, String(e.status ?? "")),
            h("td", null, e.outcome || "", e.count > 1 ? h("span", { class: "muted small" }, ` ×${e.count}`) : null),
            h("td", null, (e.changes || []).length ? h("details", null, h("summary", null, `${e.changes.length} key(s)`), h("pre", { class: "mono small" }, JSON.stringify(e.changes, null, 2))) : "—"),
          ),
        ),
        "No entries.",
      ),
    );
  }
  await load();
}
