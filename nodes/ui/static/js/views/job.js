import { ApiError, get } from "../api.js";
import { deleteJob, jobPath, setEnabled, triggerJob } from "../actions.js";
import { badge, duration, fill, fmtDuration, fmtTime, h, table, timeEl, timeZones } from "../dom.js";
import { session } from "../session.js";
import { deadlinesText, slotsCard } from "./job_slots.js";

export async function render(root, ctx) {
  const project = session.project;
  const name = ctx.params[0];
  const head = h("div");
  const info = h("div");
  const runs = h("div");
  const next = h("div");
  const slots = h("div");
  root.append(
    head,
    h("div", { class: "grid2" }, h("section", { class: "card", "aria-labelledby": "h-info" }, h("h2", { id: "h-info" }, "Definition"), info), h("section", { class: "card", "aria-labelledby": "h-nextf" }, h("h2", { id: "h-nextf" }, "Next fire times"), next)),
    h("section", { class: "card", "aria-labelledby": "h-slots" }, h("h2", { id: "h-slots" }, "Slots"), slots),
    h("section", { class: "card", "aria-labelledby": "h-runs" }, h("h2", { id: "h-runs" }, "Recent runs"), runs),
  );
  async function load() {
    const runsPath = `/api/v1/projects/${encodeURIComponent(project)}/runs?job=${encodeURIComponent(name)}&limit=25`;
    let job, rr, ticks, sl;
    try {
      [job, rr, ticks, sl] = await Promise.all([get(jobPath(project, name)), get(runsPath), get(jobPath(project, name, "/ticks?limit=10")), get(jobPath(project, name, "/slots?limit=50"))]);
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 404) throw err;
      // a deleted job: its past runs stay until retention (D181), listed here
      ctx.title(`${name} (deleted)`, "Jobs");
      rr = await get(runsPath);
      fill(head, h("div", { class: "row" }, h("h1", null, name, " ", h("span", { class: "badge st-deleted" }, "deleted"))));
      fill(info, h("p", { class: "muted" }, "This job was deleted. Its past runs stay until they expire."));
      fill(next, h("p", { class: "muted" }, "Nothing scheduled."));
      fill(slots, h("p", { class: "muted" }, "—"));
      fill(runs, runTable(rr.runs));
      return;
    }
    timeZones.page = job.schedules[0]?.timezone || null;
    ctx.title(name, "Jobs");
    const actions = [];
    if (session.can("operator")) actions.push(h("button", { class: "primary", onclick: async () => { const r = await triggerJob(project, job); if (r) location.hash = `#/runs/${r.id}`; } }, "Run now"));
    if (session.can("editor")) {
      actions.push(
        h("a", { class: "button secondary", href: `#/jobs/${encodeURIComponent(name)}/edit` }, "Edit"),
        h("button", { class: "secondary", onclick: async () => { if (await setEnabled(project, job, !job.enabled)) load(); } }, job.enabled ? "Disable" : "Enable"),
        h("button", { class: "danger", onclick: async () => { if (await deleteJob(project, job)) location.hash = "#/jobs"; } }, "Delete"),
      );
    }
    fill(head, h("div", { class: "row" }, h("h1", null, name, job.enabled ? null : h("small", null, " (disabled)")), h("div", { class: "actions" }, actions)));
    fill(
      info,
      h(
        "dl",
        { class: "props" },
        h("dt", null, "Description"), h("dd", null, job.description || "—"),
        h("dt", null, "Command"), h("dd", null, h("pre", { class: "mono" }, job.command || (job.python ? `python ${job.python.callable}` : "—"))),
        h("dt", null, "Schedules"), h("dd", null, job.schedules.length ? job.schedules.map((s) => h("div", null, h("code", null, s.cron || "at "), s.cron ? null : timeEl(s.at, s.timezone), ` (${s.timezone})`)) : "manual only"),
        h("dt", null, "Tags"), h("dd", null, job.tags.length ? job.tags.map((t) => h("span", { class: "tag" }, t)) : "—"),
        h("dt", null, "Timeout / retries"), h("dd", null, `${job.timeout ? `${job.timeout} s` : "none"} / ${job.retries}`),
        h("dt", null, "Overlap"), h("dd", null, job.overlap),
        h("dt", null, "Deadlines"), h("dd", null, deadlinesText(job)),
        h("dt", null, "Target"), h("dd", null, job.target.group ? `group ${job.target.group}` : "any node", job.target.selector ? ` where ${job.target.selector}` : ""),
        h("dt", null, "Runs as"), h("dd", null, job.run_as ? `${job.run_as.user}${job.run_as.group ? ` (group ${job.run_as.group})` : ""}` : "the node's default user"),
      ),
    );
    fill(next, ticks.next.length ? h("ol", { class: "fire-times" }, ticks.next.map((t) => h("li", { dataset: { outcome: t.reason || "fire" } }, timeEl(t.tick, t.timezone || "UTC"), t.reason ? h("span", { class: "muted", title: t.detail || "" }, ` — ${t.reason}${t.deferred_to ? ` → ${fmtTime(t.deferred_to)}` : ""}`) : null))) : h("p", { class: "muted" }, "Nothing scheduled."));
    fill(slots, ...slotsCard(sl, job.schedules[0]?.timezone || null));
    fill(runs, runTable(rr.runs));
  }
  await load();
  ctx.every(3000, load);
}

// What a run ran: its job, or for a workflow task "etl › transform" linking to the execution.
export function jobLink(r) {
  if (r.execution) {
    const wf = r.job.startsWith("@") ? r.job.slice(1).split(":")[0] : r.job;
    const task = r.task || r.job.split(":").slice(1).join(":");
    return h("a", { href: `#/executions/${encodeURIComponent(r.execution)}?task=${encodeURIComponent(task)}`, class: "task-link" }, `${wf} › ${task}`);
  }
  return h("a", { href: `#/jobs/${encodeURIComponent(r.job)}` }, r.job);
}

export const exitText = (r) => r.exit_code ?? (r.signal ? `signal ${r.signal}` : "—");

export function runTable(runs, withJob = false, empty = "No runs yet.") {
  return table(
    ["Run", ...(withJob ? ["Job"] : []), "Status", "Source", "Created", "Duration", "Node", "Attempt", "Exit"],
    runs.map((r) =>
      h(
        "tr",
        { dataset: { run: r.id } },
        h("td", null, h("a", { href: `#/runs/${r.id}` }, r.id)),
        withJob ? h("td", null, jobLink(r)) : null,
        h("td", null, badge(r.status)),
        h("td", null, r.source),
        h("td", null, timeEl(r.created_at)),
        h("td", null, fmtDuration(duration(r.started_at, r.finished_at))),
        h("td", null, r.node || "—"),
        h("td", null, String(r.attempt)),
        h("td", null, exitText(r)),
      ),
    ),
    empty,
  );
}
