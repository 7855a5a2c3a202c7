import { get } from "../api.js";
import { fill, fmtTime, h, table } from "../dom.js";
import { session } from "../session.js";

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
            h("td", null, fmtTime(e.at)),
            h("td", null, e.actor, e.via ? h("span", { class: "muted small" }, ` (${e.via})`) : null),
            h("td", null, h("code", null, `${e.method} ${e.path}`)),
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
