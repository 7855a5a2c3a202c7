import { get, post, projectPath, getAll } from "../api.js";
import { badge, fill, fmtTime, h, table, toast } from "../dom.js";
import { session } from "../session.js";

export async function runWorkflow(project, name) {
  try {
    const ex = await post(projectPath(project, `/workflows/${encodeURIComponent(name)}/executions`), {});
    toast(`Execution ${ex.id} of ${name} started`, "ok");
    location.hash = `#/executions/${ex.id}`;
  } catch (err) {
    toast(err.message, "error");
  }
}

export function executionTable(execs) {
  return table(
    ["Execution", "Workflow", "Status", "Source", "Created", "Finished", "Tasks"],
    execs.map((e) =>
      h(
        "tr",
        { dataset: { execution: e.id } },
        h("td", null, h("a", { href: `#/executions/${e.id}` }, e.id)),
        h("td", null, h("a", { href: `#/workflows/${encodeURIComponent(e.workflow)}` }, e.workflow)),
        h("td", null, badge(e.status)),
        h("td", null, e.source),
        h("td", null, fmtTime(e.created_at)),
        h("td", null, fmtTime(e.finished_at)),
        h("td", null, Object.entries(e.tasks).map(([n, st]) => h("span", { class: `dot st-${st}`, title: `${n}: ${st}` }))),
      ),
    ),
    "No executions yet.",
  );
}

export async function render(root, ctx) {
  const project = session.project;
  const list = h("div");
  const execs = h("div");
  root.append(h("h1", null, "Workflows"), h("section", { class: "card" }, list), h("section", { class: "card", "aria-labelledby": "h-ex" }, h("h2", { id: "h-ex" }, "Recent executions"), execs));
  async function load() {
    const [{ workflows }, { executions }] = await Promise.all([getAll(projectPath(project, "/workflows"), "workflows"), get(projectPath(project, "/executions?limit=25"))]);
    fill(
      list,
      table(
        ["Name", "Tasks", "Schedule", "Enabled", ""],
        workflows.map((w) =>
          h(
            "tr",
            null,
            h("td", null, h("a", { href: `#/workflows/${encodeURIComponent(w.name)}` }, w.name)),
            h("td", null, String(w.tasks.length)),
            h("td", null, w.schedules.length ? h("code", null, w.schedules.map((sc) => sc.cron || sc.at).join(", ")) : h("span", { class: "muted" }, "manual")),
            h("td", null, w.enabled ? "yes" : "no"),
            h("td", { class: "actions" }, session.can("operator") ? h("button", { class: "small", onclick: () => runWorkflow(project, w.name) }, "Run now") : null),
          ),
        ),
        "No workflows in this project yet (create them with `cronmesh workflow apply`).",
      ),
    );
    fill(execs, executionTable(executions));
  }
  await load();
  ctx.every(3000, load);
}
