import { get, projectPath } from "../api.js";
import { fill, h } from "../dom.js";
import { session } from "../session.js";
import { runTable } from "./job.js";

const STATUSES = ["pending", "running", "succeeded", "failed", "timed_out", "cancelled", "lost", "skipped"];

export async function render(root, ctx) {
  const project = session.project;
  const job = h("input", { name: "job", type: "search", placeholder: "job name", value: ctx.query.get("job") || "" });
  const status = h("select", { name: "status" }, h("option", { value: "" }, "any status"), STATUSES.map((st) => h("option", { value: st, selected: ctx.query.get("status") === st }, st.replace("_", " "))));
  const list = h("div");
  root.append(
    h("h1", null, "Runs"),
    h("form", { class: "filters", role: "search", onsubmit: (e) => { e.preventDefault(); load(); } },
      h("label", null, h("span", { class: "sr-only" }, "Job"), job),
      h("label", null, h("span", { class: "sr-only" }, "Status"), status),
      h("button", { type: "submit", class: "secondary" }, "Filter")),
    list,
  );
  async function load() {
    const qs = new URLSearchParams({ limit: "100" });
    if (job.value.trim()) qs.set("job", job.value.trim());
    if (status.value) qs.set("status", status.value);
    try {
      const { runs } = await get(projectPath(project, `/runs?${qs}`));
      fill(list, runTable(runs, true));
    } catch (err) {
      fill(list, h("p", { class: "error" }, err.message));
    }
  }
  status.addEventListener("change", load);
  await load();
  ctx.every(3000, load);
}
