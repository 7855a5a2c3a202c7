import { get, projectPath } from "../api.js";
import { dependencies, drawDag, layout } from "../dag.js";
import { fill, fmtTime, h } from "../dom.js";
import { session } from "../session.js";
import { executionTable, runWorkflow } from "./workflows.js";

export async function render(root, ctx) {
  const project = session.project;
  const name = ctx.params[0];
  const wfPath = projectPath(project, `/workflows/${encodeURIComponent(name)}`);
  const wf = await get(wfPath);
  ctx.title(name, "Workflows");
  const execs = h("div");
  const grid = h("div", { class: "grid-wrap" });
  root.append(
    h("div", { class: "row" }, h("h1", null, name), session.can("operator") ? h("button", { class: "primary", onclick: () => runWorkflow(project, name) }, "Run now") : null),
    wf.description ? h("p", null, wf.description) : "", // root.append would print a null
    h("section", { class: "card", "aria-labelledby": "h-graph" }, h("h2", { id: "h-graph" }, "Graph"), h("div", { class: "dag-wrap" }, drawDag(wf))),
    h("section", { class: "card", "aria-labelledby": "h-grid" }, h("h2", { id: "h-grid" }, "History"), grid),
    h("section", { class: "card", "aria-labelledby": "h-ex" }, h("h2", { id: "h-ex" }, "Executions"), execs),
  );
  async function load() {
    const { executions } = await get(`${wfPath}/executions?limit=25`);
    fill(grid, historyGrid(executions, layout(dependencies(wf)).layers.flat()));
    fill(execs, executionTable(executions));
  }
  await load();
  ctx.every(3000, load);
}

// Executions x tasks (oldest left), each cell coloured by the task's state and linking to it
// in its execution (the grid view Airflow users know).
export function historyGrid(executions, tasks) {
  if (!executions.length) return h("p", { class: "muted" }, "No executions yet.");
  const cols = [...executions].reverse();
  const cell = (e, n) => {
    const st = e.tasks[n] || "none";
    return h("td", null, h("a", { class: `cell st-${st}`, href: `#/executions/${encodeURIComponent(e.id)}?task=${encodeURIComponent(n)}`, title: `${n} in ${e.id}: ${st.replace("_", " ")}`, "aria-label": `${n} in ${e.id}: ${st.replace("_", " ")}`, dataset: { task: n, execution: e.id, state: st } }));
  };
  return h(
    "table",
    { class: "history-grid" },
    h("thead", null, h("tr", null, h("th", { scope: "col" }, "Task"), cols.map((e) => h("th", { scope: "col" }, h("a", { href: `#/executions/${encodeURIComponent(e.id)}`, title: `${e.id} · ${fmtTime(e.created_at)}`, class: `cell st-${e.status}`, "aria-label": `execution ${e.id}: ${e.status}` }))))),
    h("tbody", null, tasks.map((n) => h("tr", null, h("th", { scope: "row" }, n), cols.map((e) => cell(e, n))))),
  );
}
