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
  const waiting = page.slots.filter((r) => r.waiting && r.open);
  if (!waiting.length) return [line, h("h3", null, "Late and missed slots"), late];
  const waits = table(
    ["Slot", "Waits for", "Gives up"],
    waiting.map((r) =>
      h(
        "tr",
        { dataset: { waiting: r.name || r.tick } },
        h("td", null, timeEl(r.tick, zone)),
        h("td", null, waitingText(r.waiting_for)),
        h("td", null, r.waiting_for ? timeEl(r.waiting_for.gives_up_at, zone) : "—"),
      ),
    ),
    "",
  );
  return [line, h("h3", null, "Waiting on upstreams"), waits, h("h3", null, "Late and missed slots"), late];
}

// What a waiting slot waits for (D295): per upstream, met or how many of its slots are pending
// or failed; and its time gate while it has not passed.
export function waitingText(w) {
  if (!w) return "its upstreams";
  const parts = (w.depends_on || []).map((d) =>
    d.met ? `${d.upstream}: met` : `${d.upstream} ${d.require.replaceAll("_", " ")}: ${d.slots.pending} pending, ${d.slots.failed} failed${d.note ? ` (${d.note})` : ""}${d.blocked ? " — rerun a failed one to release" : ""}`,
  );
  if (w.not_before && !w.gate_passed) parts.push(`not before ${w.not_before}`);
  return parts.join("; ") || "its time gate";
}

export function deadlinesText(job) {
  const d = job.deadlines;
  const out = [];
  if (d && d.start_within) out.push(`start within ${d.start_within} s`);
  if (d && d.succeed_within) out.push(`succeed within ${d.succeed_within} s`);
  if (job.expected_every) out.push(`a success every ${job.expected_every} s`);
  return out.length ? out.join(", ") : "none";
}
