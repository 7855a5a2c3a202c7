import { get, projectPath, getAll } from "../api.js";
import { setEnabled, triggerJob } from "../actions.js";
import { badge, fill, fmtTime, h, table } from "../dom.js";
import { session } from "../session.js";

export async function render(root, ctx) {
  const project = session.project;
  const search = h("input", { type: "search", name: "q", placeholder: "Search name, command, description", value: ctx.query.get("q") || "" });
  const tag = h("select", { name: "tag" }, h("option", { value: "" }, "any tag"));
  const status = h(
    "select",
    { name: "status" },
    h("option", { value: "" }, "any last status"),
    ["succeeded", "failed", "timed_out", "cancelled", "lost", "running", "never"].map((st) => h("option", { value: st, selected: ctx.query.get("status") === st }, st.replace("_", " "))),
  );
  const enabled = h("select", { name: "enabled" }, h("option", { value: "" }, "enabled or not"), h("option", { value: "yes", selected: ctx.query.get("enabled") === "yes" }, "enabled"), h("option", { value: "no", selected: ctx.query.get("enabled") === "no" }, "disabled"));
  const list = h("div");
  root.append(
    h("div", { class: "row" }, h("h1", null, "Jobs"), session.can("editor") ? h("a", { class: "button primary", href: "#/jobs/new" }, "New job") : null),
    h(
      "div",
      { class: "filters", role: "search" },
      h("label", null, h("span", { class: "sr-only" }, "Search"), search),
      h("label", null, h("span", { class: "sr-only" }, "Tag"), tag),
      h("label", null, h("span", { class: "sr-only" }, "Last status"), status),
      h("label", null, h("span", { class: "sr-only" }, "Enabled"), enabled),
    ),
    list,
  );
  let jobs = [];
  let last = new Map();
  let wantedTag = ctx.query.get("tag") || "";
  const draw = () => {
    // the filters live in the URL: a reload or a shared link shows the same list
    const state = new URLSearchParams();
    for (const [k, el] of [["q", search], ["tag", tag], ["status", status], ["enabled", enabled]]) if (el.value.trim()) state.set(k, el.value.trim());
    if (tag.value || !wantedTag) history.replaceState(null, "", `#/jobs${[...state.keys()].length ? `?${state}` : ""}`);
    const q = search.value.trim().toLowerCase();
    const shown = jobs.filter((j) => {
      if (q && ![j.name, j.command || "", j.description].some((t) => t.toLowerCase().includes(q))) return false;
      if (tag.value && !j.tags.includes(tag.value)) return false;
      if (enabled.value && j.enabled !== (enabled.value === "yes")) return false;
      const st = last.get(j.name)?.status || "never";
      if (status.value && st !== status.value) return false;
      return true;
    });
    fill(
      list,
      table(
        ["Name", "Schedule", "Tags", "Enabled", "Last run", "Actions"],
        shown.map((j) => row(project, j, last.get(j.name), load)),
        jobs.length ? "No job matches the filters." : "No jobs in this project yet.",
      ),
    );
  };
  async function load() {
    const [jr, rr] = await Promise.all([getAll(projectPath(project, "/jobs"), "jobs"), get(projectPath(project, "/runs?limit=500"))]);
    jobs = jr.jobs;
    last = new Map();
    for (const r of rr.runs) if (!last.has(r.job)) last.set(r.job, r);
    const tags = [...new Set(jobs.flatMap((j) => j.tags))].sort();
    const chosen = tag.value || wantedTag;
    wantedTag = "";
    fill(tag, h("option", { value: "" }, "any tag"), tags.map((t) => h("option", { value: t, selected: t === chosen }, t)));
    draw();
  }
  for (const el of [search, tag, status, enabled]) el.addEventListener("input", draw);
  await load();
  ctx.every(5000, load);
}

function row(project, j, lastRun, reload) {
  const actions = [];
  if (session.can("operator")) {
    actions.push(h("button", { class: "small", onclick: async () => { if (await triggerJob(project, j)) reload(); } }, "Run now"));
  }
  if (session.can("editor")) {
    actions.push(
      h("button", { class: "small secondary", onclick: async () => { if (await setEnabled(project, j, !j.enabled)) reload(); } }, j.enabled ? "Disable" : "Enable"),
      h("a", { class: "button small secondary", href: `#/jobs/${encodeURIComponent(j.name)}/edit` }, "Edit"),
    );
  }
  const sched = j.schedules.map((sc) => sc.cron || `at ${fmtTime(sc.at, sc.timezone)}`).join(", ");
  return h(
    "tr",
    { dataset: { job: j.name } },
    h("td", null, h("a", { href: `#/jobs/${encodeURIComponent(j.name)}` }, j.name)),
    h("td", null, sched ? h("code", null, sched) : h("span", { class: "muted" }, "manual")),
    h("td", null, j.tags.map((t) => h("span", { class: "tag" }, t))),
    h("td", null, j.enabled ? "yes" : h("span", { class: "muted" }, "no")),
    h("td", null, lastRun ? h("a", { href: `#/runs/${lastRun.id}` }, badge(lastRun.status)) : h("span", { class: "muted" }, "never")),
    h("td", { class: "actions" }, actions),
  );
}
