import { get, post, projectPath } from "../api.js";
import { badge, duration, fill, fmtDuration, fmtTime, h, toast } from "../dom.js";
import { LogView } from "../logview.js";
import { session } from "../session.js";

const DONE = ["succeeded", "failed", "timed_out", "cancelled", "lost", "skipped"];

// What the run's cgroup counted (null where its node has no cgroups).
export function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

function fmtCpu(s) {
  return s === null || s === undefined ? "—" : `${s.toFixed(3)} s`;
}

function attemptsTable(run) {
  if (!run.attempts || !run.attempts.length) return null;
  return h(
    "table",
    { class: "attempts", id: "run-attempts" },
    h("thead", null, h("tr", null, ["#", "Status", "Node", "Started", "Finished", "Peak memory", "CPU time", "Error"].map((t) => h("th", null, t)))),
    h(
      "tbody",
      null,
      run.attempts.map((a) =>
        h(
          "tr",
          null,
          h("td", null, String(a.attempt)),
          h("td", null, badge(a.status), a.reason === "oom_killed" ? h("span", { class: "warn" }, " out of memory") : null),
          h("td", null, a.node || "—"),
          h("td", null, fmtTime(a.started_at)),
          h("td", null, fmtTime(a.finished_at)),
          h("td", { class: "peak-memory" }, fmtBytes(a.peak_memory)),
          h("td", { class: "cpu-time" }, fmtCpu(a.cpu_seconds)),
          h("td", null, a.error || ""),
        ),
      ),
    ),
  );
}

export async function render(root, ctx) {
  const project = session.project;
  const id = ctx.params[0];
  const path = projectPath(project, `/runs/${encodeURIComponent(id)}`);
  const head = h("div");
  const props = h("div");
  const logs = new LogView(project, id);
  ctx.onLeave(() => logs.stop());
  root.append(head, h("section", { class: "card" }, props), h("section", { class: "card", "aria-labelledby": "h-log" }, h("h2", { id: "h-log" }, "Log"), logs.el));

  async function act(action) {
    try {
      await post(`${path}/${action}`);
      toast(`${action} requested`, "ok");
      load();
    } catch (err) {
      toast(err.message, "error");
    }
  }
  let seen = "";
  async function load() {
    const run = await get(path);
    const sig = JSON.stringify(run);
    if (sig === seen) {
      const cell = props.querySelector("#run-duration");
      if (cell && run.started_at && !run.finished_at) cell.textContent = fmtDuration(duration(run.started_at));
      return;
    }
    seen = sig;
    const live = !DONE.includes(run.status);
    const buttons = [];
    if (live && session.can("operator")) {
      buttons.push(
        h("button", { class: "secondary", onclick: () => act("cancel"), title: "Stop gracefully (SIGTERM, then kill after the grace period)" }, "Cancel"),
        h("button", { class: "danger", onclick: () => act("abort"), title: "Kill at once" }, "Abort"),
      );
    }
    fill(head, h("div", { class: "row" }, h("h1", null, `Run ${run.id} `, badge(run.status)), h("div", { class: "actions" }, buttons)));
    const pending = run.placement && run.placement.reason ? h("p", { class: "warn" }, `Waiting: ${run.placement.reason}`) : null;
    fill(
      props,
      pending,
      h(
        "dl",
        { class: "props cols" },
        h("dt", null, "Job"), h("dd", null, h("a", { href: `#/jobs/${encodeURIComponent(run.job)}` }, run.job)),
        h("dt", null, "Status"), h("dd", { id: "run-status" }, run.status),
        h("dt", null, "Source"), h("dd", null, run.source, run.execution ? [" of ", h("a", { href: `#/executions/${run.execution}` }, `execution ${run.execution}`), ` (${run.task})`] : null),
        h("dt", null, "Node"), h("dd", null, run.node || "—"),
        h("dt", null, "Attempt"), h("dd", null, String(run.attempt)),
        h("dt", null, "Exit code"), h("dd", { id: "run-exit" }, run.exit_code ?? (run.signal ? `signal ${run.signal}` : "—")),
        h("dt", null, "Created"), h("dd", null, fmtTime(run.created_at)),
        h("dt", null, "Started"), h("dd", null, fmtTime(run.started_at)),
        h("dt", null, "Finished"), h("dd", null, fmtTime(run.finished_at)),
        h("dt", null, "Duration"), h("dd", { id: "run-duration" }, fmtDuration(duration(run.started_at, run.finished_at))),
        Object.keys(run.parameters).length ? [h("dt", null, "Parameters"), h("dd", null, h("code", null, Object.entries(run.parameters).map(([k, v]) => `${k}=${v}`).join(" ")))] : null,
        run.error ? [h("dt", null, "Error"), h("dd", { class: "error" }, run.error)] : null,
        run.reason === "oom_killed" ? [h("dt", null, "Reason"), h("dd", { class: "error", id: "run-reason" }, "killed by the out-of-memory killer")] : null,
        run.snapshot && run.snapshot.resources ? [h("dt", null, "Limits"), h("dd", null, [
          run.snapshot.resources.memory ? `memory ${fmtBytes(run.snapshot.resources.memory)}` : null,
          run.snapshot.resources.cpu ? `cpu ${run.snapshot.resources.cpu}` : null,
          run.snapshot.resources.pids ? `pids ${run.snapshot.resources.pids}` : null,
        ].filter(Boolean).join(", "))] : null,
      ),
      attemptsTable(run),
    );
    logs.update(run);
    return live;
  }
  await load();
  ctx.every(1000, load);
}
