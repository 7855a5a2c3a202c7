import { get, post, projectPath } from "../api.js";
import { badge, duration, fill, fmtBytes, fmtDuration, h, table, timeEl, timeZones, toast } from "../dom.js";
import { LogView } from "../logview.js";
import { session } from "../session.js";
import { exitText, jobLink } from "./job.js";

const DONE = ["succeeded", "failed", "timed_out", "cancelled", "lost", "skipped"];

function fmtCpu(s) {
  return s === null || s === undefined ? "—" : `${s.toFixed(3)} s`;
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
  let zoneKnown = false;
  let jobGone = false;
  async function load() {
    const run = await get(path);
    if (!zoneKnown) {
      zoneKnown = true; // the job's zone, for the "job" time switch (a deleted job: none)
      if (!run.execution) {
        const job = await get(projectPath(project, `/jobs/${encodeURIComponent(run.job)}`)).catch((err) => (err.status === 404 ? (jobGone = true, null) : null));
        timeZones.page = job?.schedules?.[0]?.timezone || null;
      }
    }
    const sig = JSON.stringify(run);
    if (sig === seen) {
      const cell = props.querySelector("#run-duration");
      if (cell && run.started_at && !run.finished_at) cell.textContent = fmtDuration(duration(run.started_at));
      return;
    }
    seen = sig;
    ctx.title(`Run ${run.id.length > 12 ? `${run.id.slice(0, 12)}…` : run.id} ${run.status.replace("_", " ")}`, run.execution ? jobLink(run).textContent : run.job);
    const live = !DONE.includes(run.status);
    const buttons = [];
    if (!live && !run.execution && !jobGone && session.can("operator")) {
      buttons.push(h("button", { class: "secondary", title: "Trigger the job again with these parameters", onclick: async () => {
        try {
          const again = await post(projectPath(project, `/jobs/${encodeURIComponent(run.job)}/runs`), { parameters: run.parameters });
          toast(`Run ${again.id} created`, "ok");
          location.hash = `#/runs/${again.id}`;
        } catch (err) {
          toast(err.message, "error");
        }
      } }, "Run again"));
    }
    if (live && session.can("operator")) {
      buttons.push(
        h("button", { class: "secondary", onclick: () => act("cancel"), title: "Stop gracefully (SIGTERM, then kill after the grace period)" }, "Cancel"),
        h("button", { class: "danger", onclick: () => act("abort"), title: "Kill at once" }, "Abort"),
      );
    }
    fill(head, h("div", { class: "row" }, h("h1", null, `Run ${run.id} `, badge(run.status)), h("div", { class: "actions" }, buttons)));
    // why a pending run has not started: no eligible node, or a budget holding it back (D276)
    const why = (run.placement && run.placement.reason) || run.waiting;
    const pending = why ? h("p", { class: "warn", id: "run-waiting" }, `Waiting: ${why}`) : null;
    fill(
      props,
      pending,
      h(
        "dl",
        { class: "props cols" },
        h("dt", null, "Job"), h("dd", null, jobLink(run), jobGone ? [" ", h("span", { class: "badge st-deleted" }, "deleted")] : null),
        h("dt", null, "Status"), h("dd", { id: "run-status" }, run.status),
        h("dt", null, "Source"), h("dd", null, run.source, run.execution ? [" of ", h("a", { href: `#/executions/${run.execution}` }, `execution ${run.execution}`), ` (${run.task})`] : null),
        h("dt", null, "Node"), h("dd", null, run.node || "—"),
        h("dt", null, "Attempt"), h("dd", null, String(run.attempt)),
        h("dt", null, "Exit code"), h("dd", { id: "run-exit" }, exitText(run)),
        h("dt", null, "Created"), h("dd", null, timeEl(run.created_at)),
        h("dt", null, "Started"), h("dd", null, timeEl(run.started_at)),
        h("dt", null, "Finished"), h("dd", null, timeEl(run.finished_at)),
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
      attemptTable(run),
    );
    logs.update(run);
    return live;
  }
  await load();
  ctx.every(1000, load);
}

// Every attempt of the run (retries keep the earlier ones), with what containment measured
// where the node records it (peak memory, CPU time).
function attemptTable(run) {
  const attempts = run.attempts || [];
  if (attempts.length < 2 && !attempts.some((a) => a.peak_memory != null || a.cpu_seconds != null)) return null;
  return h(
    "div",
    { class: "attempts", id: "run-attempts" },
    h("h3", null, "Attempts"),
    table(
      ["Attempt", "Status", "Node", "Started", "Duration", "Exit", "Peak memory", "CPU time"],
      [...attempts].reverse().map((a) =>
        h(
          "tr",
          { dataset: { attempt: a.attempt } },
          h("td", null, String(a.attempt)),
          h("td", null, badge(a.status), a.reason === "oom_killed" ? h("span", { class: "warn" }, " out of memory") : a.reason ? h("span", { class: "muted small" }, ` ${a.reason.replace("_", " ")}`) : null),
          h("td", null, a.node || "—"),
          h("td", null, timeEl(a.started_at)),
          h("td", null, fmtDuration(duration(a.started_at, a.finished_at))),
          h("td", null, a.exit_code ?? (a.signal ? `signal ${a.signal}` : "—")),
          h("td", { class: "peak-memory" }, a.peak_memory != null ? fmtBytes(a.peak_memory) : "—"),
          h("td", { class: "cpu-time" }, fmtCpu(a.cpu_seconds)),
        ),
      ),
    ),
  );
}
