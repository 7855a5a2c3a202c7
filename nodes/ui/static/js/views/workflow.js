import { get, projectPath } from "../api.js";
import { drawDag } from "../dag.js";
import { fill, h } from "../dom.js";
import { session } from "../session.js";
import { executionTable, runWorkflow } from "./workflows.js";

export async function render(root, ctx) {
  const project = session.project;
  const name = ctx.params[0];
  const wfPath = projectPath(project, `/workflows/${encodeURIComponent(name)}`);
  const wf = await get(wfPath);
  ctx.title(name, "Workflows");
  const execs = h("div");
  root.append(
    h("div", { class: "row" }, h("h1", null, name), session.can("operator") ? h("button", { class: "primary", onclick: () => runWorkflow(project, name) }, "Run now") : null),
    wf.description ? h("p", null, wf.description) : null,
    h("section", { class: "card", "aria-labelledby": "h-graph" }, h("h2", { id: "h-graph" }, "Graph"), h("div", { class: "dag-wrap" }, drawDag(wf))),
    h("section", { class: "card", "aria-labelledby": "h-ex" }, h("h2", { id: "h-ex" }, "Executions"), execs),
  );
  async function load() {
    fill(execs, executionTable((await get(`${wfPath}/executions?limit=25`)).executions));
  }
  await load();
  ctx.every(3000, load);
}
