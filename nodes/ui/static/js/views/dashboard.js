import { get, projectPath, getAll } from "../api.js";
import { bucketRuns, runsChart } from "../chart.js";
import { badge, duration, fill, fmtDuration, fmtTime, h, table } from "../dom.js";
import { session } from "../session.js";

const SPANS = { "24h": [24 * 3600e3, 24], "7d": [7 * 24 * 3600e3, 28] };

export async function render(root, ctx) {
  const project = session.project;
  let span = ctx.query.get("span") === "7d" ? "7d" : "24h";
  const chartBox = h("div");
  const running = h("div");
  const nextDue = h("div");
  const failing = h("div");
  const health = h("div", { class: "health" });
  const spanButtons = Object.keys(SPANS).map((key) =>
    h("button", { class: "secondary", "aria-pressed": String(key === span), onclick: () => { span = key; spanButtons.forEach((b) => b.setAttribute("aria-pressed", String(b.textContent === key))); refresh(); } }, key),
  );
  root.append(
    h("h1", null, "Dashboard ", h("small", null, `project ${project}`)),
    h("section", { class: "card", "aria-labelledby": "h-health" }, h("h2", { id: "h-health" }, "Cluster health"), health),
    h(
      "section",
      { class: "card", "aria-labelledby": "h-chart" },
      h("div", { class: "row" }, h("h2", { id: "h-chart" }, "Runs by status"), h("div", { class: "seg", role: "group", "aria-label": "Time span" }, spanButtons)),
      chartBox,
    ),
    h(
      "div",
      { class: "grid2" },
      h("section", { class: "card", "aria-labelledby": "h-running" }, h("h2", { id: "h-running" }, "Running now"), running),
      h("section", { class: "card", "aria-labelledby": "h-next" }, h("h2", { id: "h-next" }, "Next due"), nextDue),
    ),
    h("section", { class: "card", "aria-labelledby": "h-failing" }, h("h2", { id: "h-failing" }, "Failing jobs"), failing),
  );

  let jobs = [];
  async function refresh() {
    const [{ runs }, status, metrics] = await Promise.all([
      get(projectPath(project, "/runs?limit=1000")),
      // cluster-wide read-outs: viewer on "*" only (D166); others see their project's runs
      session.roles["*"] ? get("/status").catch(() => null) : null,
      session.roles["*"] ? get("/metrics").catch(() => "") : "",
    ]);
    const [ms, n] = SPANS[span];
    fill(chartBox, runsChart(bucketRuns(runs, Date.now(), ms, n), `Runs by status, last ${span}`, chartBox.clientWidth || 1000));
    const live = runs.filter((r) => r.status === "running" || r.status === "pending");
    fill(
      running,
      table(
        ["Run", "Job", "Status", "Node", "For"],
        live.map((r) => h("tr", null,
          h("td", null, h("a", { href: `#/runs/${r.id}` }, r.id)),
          h("td", null, h("a", { href: `#/jobs/${encodeURIComponent(r.job)}` }, r.job)),
          h("td", null, badge(r.status)),
          h("td", null, r.node || "—"),
          h("td", null, fmtDuration(duration(r.started_at || r.created_at))),
        )),
        "Nothing is running.",
      ),
    );
    const lastByJob = new Map();
    for (const r of runs) {
      if (["pending", "running", "skipped"].includes(r.status)) continue;
      if (!lastByJob.has(r.job)) lastByJob.set(r.job, r);
    }
    const bad = [...lastByJob.values()].filter((r) => ["failed", "timed_out", "lost"].includes(r.status));
    fill(
      failing,
      table(
        ["Job", "Last run", "Status", "Finished", "Error"],
        bad.map((r) => h("tr", null,
          h("td", null, h("a", { href: `#/jobs/${encodeURIComponent(r.job)}` }, r.job)),
          h("td", null, h("a", { href: `#/runs/${r.id}` }, r.id)),
          h("td", null, badge(r.status)),
          h("td", null, fmtTime(r.finished_at)),
          h("td", { class: "clip" }, r.error || (r.exit_code !== null ? `exit ${r.exit_code}` : "")),
        )),
        "No job's last run failed.",
      ),
    );
    if (status) {
      const nodes = status.nodes || [];
      const up = nodes.filter((nd) => nd.up).length;
      fill(
        health,
        stat("Nodes up", `${up} / ${nodes.length}`, up < nodes.length ? "warn" : "ok"),
        stat("Leader", (status.leader && (status.leader.node || status.leader.id || status.leader)) || "none", status.leader ? "ok" : "warn"),
        stat("Queue depth", status.queue_depth ?? "—"),
        stat("etcd", status.etcd.connected ? "connected" : "unreachable", status.etcd.connected ? "ok" : "warn"),
        spoolBacklog(metrics),
      );
    }
  }

  async function refreshNext() {
    jobs = (await getAll(projectPath(project, "/jobs"), "jobs")).jobs.filter((j) => j.enabled && j.schedules.length);
    const ticks = await Promise.all(
      jobs.slice(0, 30).map((j) => get(projectPath(project, `/jobs/${encodeURIComponent(j.name)}/ticks?limit=1`)).catch(() => null)),
    );
    const due = ticks.filter(Boolean).flatMap((t) => t.next.slice(0, 3).map((n) => ({ job: t.job, ...n })));
    due.sort((a, b) => a.tick.localeCompare(b.tick));
    fill(
      nextDue,
      table(
        ["Job", "When", "Schedule"],
        due.slice(0, 10).map((d) => h("tr", null,
          h("td", null, h("a", { href: `#/jobs/${encodeURIComponent(d.job)}` }, d.job)),
          h("td", null, fmtTime(d.tick)),
          h("td", null, h("code", null, d.cron || "")),
        )),
        "No scheduled job is due.",
      ),
    );
  }

  await Promise.all([refresh(), refreshNext()]);
  ctx.every(5000, refresh);
  ctx.every(30000, refreshNext);
}

function stat(label, value, kind = "") {
  return h("div", { class: `stat ${kind}` }, h("div", { class: "stat-value" }, String(value)), h("div", { class: "stat-label" }, label));
}

// The log spool waiting for upload, from this node's Prometheus metrics (absent: no log store).
function spoolBacklog(text) {
  const num = (name) => {
    const m = typeof text === "string" ? text.match(new RegExp(`^${name} ([0-9.eE+-]+)$`, "m")) : null;
    return m ? Number(m[1]) : null;
  };
  const files = num("cronmesh_log_spool_backlog_files");
  if (files === null) return null;
  const kib = (num("cronmesh_log_spool_backlog_bytes") || 0) / 1024;
  return stat("Spool backlog (this node)", `${files} files, ${kib.toFixed(0)} KiB`, files > 100 ? "warn" : "");
}
