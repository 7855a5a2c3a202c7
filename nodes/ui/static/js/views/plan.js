// The schedule simulator (GET /api/v1/plan, D240): the next hours of the current project's jobs
// after time zone, DST, H, calendars, blackout windows and the freeze — a heatmap of starts per
// minute per executor group, the crowded seconds, and the slots with their outcome.
import { enc, get } from "../api.js";
import { fill, fmtTime, h, table } from "../dom.js";
import { session } from "../session.js";

const HOURS = [1, 6, 24];
const MAX_COLUMNS = 24 * 60;

export async function render(root, ctx) {
  const hours = Number(ctx.query.get("hours")) || 6;
  const body = h("div");
  const pick = h(
    "div",
    { class: "row" },
    ...HOURS.map((n) =>
      h("a", { class: n === hours ? "button small" : "button small secondary", href: `#/plan?hours=${n}` }, `next ${n} h`),
    ),
  );
  root.append(h("h1", null, "Plan"), pick, body);
  const from = new Date();
  const to = new Date(from.getTime() + hours * 3600 * 1000);
  const qs = `?project=${enc(session.project)}&from=${enc(from.toISOString())}&to=${enc(to.toISOString())}&limit=500`;
  const plan = await get(`/api/v1/plan${qs}`);
  if (!ctx.alive) return;
  fill(
    body,
    plan.frozen ? h("p", { class: "error" }, "The cluster is frozen: every slot below is skipped.") : null,
    h(
      "p",
      { class: "muted" },
      `${plan.jobs} job(s), ${fmtTime(plan.from)} – ${fmtTime(plan.to)}: `,
      Object.entries(plan.counts).map(([k, n]) => `${n} ${k}`).join(", ") || "no slots",
    ),
    h("section", { class: "card" }, h("h2", null, "Starts per minute"), heatmap(plan, from, hours)),
    plan.warnings.length
      ? h(
          "section",
          { class: "card", id: "plan-warnings" },
          h("h2", null, "Crowded seconds"),
          h("ul", null, ...plan.warnings.map((w) => h("li", null, `${w.jobs} jobs start at ${fmtTime(w.at)} on group ${w.group}: ${w.hint}`))),
        )
      : null,
    h(
      "section",
      { class: "card" },
      h("h2", null, "Slots"),
      table(
        ["Time", "Job", "Group", "Outcome"],
        plan.slots.map((s) =>
          h(
            "tr",
            { dataset: { outcome: s.reason || s.outcome } },
            h("td", null, fmtTime(s.tick)),
            h("td", null, h("a", { href: `#/jobs/${enc(s.job)}` }, s.job)),
            h("td", null, s.group),
            h("td", { title: s.detail || "" }, s.reason ? `${s.reason}${s.deferred_to ? ` → ${fmtTime(s.deferred_to)}` : ""}` : "fires"),
          ),
        ),
        "No slots in this window.",
      ),
      plan.truncated ? h("p", { class: "muted" }, "More slots than listed.") : null,
    ),
  );
}

// one row per group, one cell per minute (shaded by starts; the title tells the count)
function heatmap(plan, from, hours) {
  const start = new Date(Math.floor(from.getTime() / 60000) * 60000);
  const columns = Math.min(hours * 60, MAX_COLUMNS);
  const groups = Object.keys(plan.starts_per_minute);
  if (!groups.length) return h("p", { class: "muted" }, "Nothing starts in this window.");
  const peak = Math.max(1, ...groups.flatMap((g) => Object.values(plan.starts_per_minute[g])));
  const rows = groups.map((g) => {
    const counts = plan.starts_per_minute[g];
    const cells = [];
    for (let i = 0; i < columns; i++) {
      const minute = new Date(start.getTime() + i * 60000).toISOString().replace(".000Z", "+00:00");
      const n = counts[minute] || 0;
      cells.push(
        h("span", {
          class: "heat",
          style: `opacity:${n ? 0.2 + (0.8 * n) / peak : 0.05}`,
          title: `${fmtTime(minute)}: ${n} start(s)`,
          dataset: n ? { count: String(n) } : {},
        }),
      );
    }
    return h("div", { class: "heat-row", dataset: { group: g } }, h("span", { class: "heat-label" }, g), h("span", { class: "heat-cells" }, ...cells));
  });
  return h("div", { class: "heatmap", role: "img", "aria-label": `starts per minute, peak ${peak}` }, ...rows);
}
