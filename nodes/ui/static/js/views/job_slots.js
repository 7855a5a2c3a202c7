// A job's slots (D233): "ran N of the last M slots" and its late or missed slots, from
// GET …/jobs/{job}/slots (the tick log with each slot's outcome and reason).
import { badge, h, table, timeEl } from "../dom.js";

export function slotsCard(page, zone) {
  const s = page.summary;
  const parts = Object.entries(s.outcomes).sort((a, b) => b[1] - a[1]).map(([o, n]) => `${n} ${o.replaceAll("_", " ")}`);
  const line = s.slots
    ? h("p", { class: "slot-summary" }, h("strong", null, `Ran ${s.ran} of the last ${s.slots} slots`), parts.length ? ` (${parts.join(", ")})` : "", s.open ? `; ${s.open} open` : "")
    : h("p", { class: "muted slot-summary" }, s.open ? `${s.open} slot(s) open, none settled yet.` : "No slots yet.");
  const late = table(
    ["Slot", "Outcome", "Reason", "Run"],
    page.late.map((r) =>
      h(
        "tr",
        { dataset: { slot: r.name || r.tick } },
        h("td", null, timeEl(r.tick, zone)),
        h("td", null, badge(r.outcome)),
        h("td", null, r.reason || "—"),
        h("td", null, r.run ? h("a", { href: `#/runs/${r.run}` }, r.run) : "—"),
      ),
    ),
    "No late or missed slots.",
  );
  return [line, h("h3", null, "Late and missed slots"), late];
}

export function deadlinesText(job) {
  const d = job.deadlines;
  const out = [];
  if (d && d.start_within) out.push(`start within ${d.start_within} s`);
  if (d && d.succeed_within) out.push(`succeed within ${d.succeed_within} s`);
  if (job.expected_every) out.push(`a success every ${job.expected_every} s`);
  return out.length ? out.join(", ") : "none";
}
