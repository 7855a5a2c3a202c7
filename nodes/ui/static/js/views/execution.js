import { get, post, projectPath } from "../api.js";
import { dependencies, drawDag, layout } from "../dag.js";
import { badge, confirmDialog, fill, h, timeEl, toast } from "../dom.js";
import { LogView } from "../logview.js";
import { session } from "../session.js";
import { drawTimeline } from "../timeline.js";

const DONE = ["succeeded", "failed", "cancelled"];

export async function render(root, ctx) {
  const project = session.project;
  const id = ctx.params[0];
  const path = projectPath(project, `/executions/${encodeURIComponent(id)}`);
  let selected = ctx.query.get("task");
  let logs = null;
  const head = h("div");
  const graph = h("div", { class: "dag-wrap" });
  const panel = h("div", { class: "task-panel" });
  const timeline = h("div", { class: "timeline-wrap" });
  const legend = h("ul", { class: "legend" }, ["pending", "running", "succeeded", "failed", "skipped", "cancelled"].map((st) => h("li", null, h("span", { class: `swatch st-${st}` }), st)));
  root.append(
    head,
    h("section", { class: "card", "aria-labelledby": "h-graph" }, h("h2", { id: "h-graph" }, "Graph"), legend, graph, panel),
    h("section", { class: "card", "aria-labelledby": "h-tl" }, h("h2", { id: "h-tl" }, "Timeline"), timeline),
  );
  ctx.onLeave(() => logs && logs.stop());

  async function act(body, what) {
    const yes = await confirmDialog(
      body.from_task ? `Rerun from ${body.from_task}?` : "Rerun the failed tasks?",
      `${body.from_task ? `${body.from_task} and every task downstream of it run` : "The failed tasks and what depends on them run"} again in this execution. The earlier tries stay listed under each task.`,
      "Rerun",
    );
    if (!yes) return;
    try {
      await post(`${path}/rerun`, body);
      toast(what, "ok");
      await load();
    } catch (err) {
      toast(err.message, "error");
    }
  }
  let ex = null;
  function pick(task) {
    selected = task;
    history.replaceState(null, "", `#/executions/${encodeURIComponent(id)}?task=${encodeURIComponent(task)}`);
    if (logs) logs.stop();
    logs = null;
    drawAll();
  }
  function drawAll() {
    const states = Object.fromEntries(Object.entries(ex.tasks).map(([n, t]) => [n, t.status]));
    const focused = graph.contains(document.activeElement) ? document.activeElement.dataset.task : null;
    fill(graph, drawDag(ex.snapshot, states, pick, selected));
    if (focused) graph.querySelector(`g[data-task="${CSS.escape(focused)}"]`)?.focus();
    const order = layout(dependencies(ex.snapshot)).layers.flat();
    fill(timeline, drawTimeline(ex, order));
    if (!selected || !ex.tasks[selected]) return fill(panel);
    const t = ex.tasks[selected];
    const finished = DONE.includes(ex.status);
    const buttons = [];
    if (session.can("operator") && finished) {
      buttons.push(h("button", { class: "primary", onclick: () => act({ from_task: selected }, `Rerunning from ${selected}`) }, `Rerun from ${selected}`));
    }
    if (t.run_id && (!logs || logs.runId !== t.run_id)) {
      if (logs) logs.stop();
      logs = new LogView(project, t.run_id);
    }
    fill(
      panel,
      h("div", { class: "row" }, h("h3", null, `Task ${selected} `, badge(t.status)), h("div", { class: "actions" }, buttons)),
      h(
        "dl",
        { class: "props cols" },
        h("dt", null, "Run"), h("dd", null, t.run_id ? h("a", { href: `#/runs/${t.run_id}` }, t.run_id) : "—"),
        h("dt", null, "Node"), h("dd", null, t.node || "—"),
        h("dt", null, "Attempt"), h("dd", null, t.attempt ?? "—"),
        h("dt", null, "Exit code"), h("dd", null, t.exit_code ?? "—"),
        h("dt", null, "Started"), h("dd", null, timeEl(t.started_at)),
        h("dt", null, "Finished"), h("dd", null, timeEl(t.finished_at)),
        t.error ? [h("dt", null, "Error"), h("dd", { class: "error" }, t.error)] : null,
      ),
      tries(t),
      logs ? logs.el : h("p", { class: "muted" }, "This task has not run in this execution."),
    );
    if (logs) logs.update({ attempt: t.attempt || 1, status: t.status === "started" ? "running" : t.status });
  }
  // Earlier tries of a task (reruns keep them): links with their outcome, newest first.
  const tryStatus = new Map(); // run id -> status (finished tries do not change)
  function tries(t) {
    const ids = [...(t.previous_runs || [])].reverse().slice(0, 20);
    if (!ids.length) return null;
    const list = h("ol", { class: "tries", "aria-label": "Earlier tries" });
    for (const rid of ids) {
      const status = h("span", null, tryStatus.has(rid) ? badge(tryStatus.get(rid)) : "…");
      list.append(h("li", { dataset: { run: rid } }, h("a", { href: `#/runs/${rid}` }, rid), " ", status));
      if (!tryStatus.has(rid)) {
        get(projectPath(project, `/runs/${encodeURIComponent(rid)}`))
          .then((r) => { tryStatus.set(rid, r.status); fill(status, badge(r.status)); })
          .catch(() => fill(status, "expired"));
      }
    }
    return h("div", { class: "earlier" }, h("h4", null, `Earlier tries (${t.previous_runs.length})`), list);
  }
  let seen = "";
  async function load() {
    const fresh = await get(path);
    const sig = JSON.stringify(fresh);
    if (sig === seen) return;
    seen = sig;
    ex = fresh;
    ctx.title(`Execution ${id} ${ex.status}`, ex.workflow);
    const finished = DONE.includes(ex.status);
    const buttons = [];
    if (session.can("operator")) {
      if (finished && ex.failed_tasks.length) buttons.push(h("button", { class: "primary", onclick: () => act({ failed_only: true }, "Rerunning the failed tasks") }, "Rerun failed"));
      if (!finished) buttons.push(h("button", { class: "danger", onclick: async () => { try { await post(`${path}/cancel`); toast("Cancel requested", "ok"); } catch (err) { toast(err.message, "error"); } } }, "Cancel"));
    }
    fill(
      head,
      h("div", { class: "row" }, h("h1", null, "Execution ", id, " ", badge(ex.status)), h("div", { class: "actions" }, buttons)),
      h("p", { class: "muted" }, "Workflow ", h("a", { href: `#/workflows/${encodeURIComponent(ex.workflow)}` }, ex.workflow), ` · ${ex.source} · created `, timeEl(ex.created_at), ex.reruns ? ` · rerun ${ex.reruns}×` : "", ex.finished_at ? [" · finished ", timeEl(ex.finished_at)] : ""),
    );
    drawAll();
  }
  await load();
  ctx.every(1000, load);
}
