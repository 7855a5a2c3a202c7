// A cron input that validates as the user types (with the node's own parser, through
// GET /api/v1/cron/preview) and lists the next fire times in the schedule's time zone.
import { ApiError, get } from "./api.js";
import { fill, h, timeEl } from "./dom.js";

// What the preview's per-fire DST flag means (GET /api/v1/cron/preview, D223).
const DST_NOTES = {
  gap_shifted: "clocks go forward: moved to the end of the skipped hour",
  gap_skipped: "clocks went forward before this: the skipped time did not run",
  fold_first: "clocks go back later: first of a repeated time",
  fold_second: "clocks went back: the repeated time again",
};

export function cronPreview(cronInput, tzInput, out, dst = null) {
  let timer = null;
  let seq = 0;
  const update = async () => {
    const expr = cronInput.value.trim();
    const mine = ++seq;
    const err = cronInput.closest(".field")?.querySelector(".field-error");
    const tzErr = tzInput.closest(".field")?.querySelector(".field-error");
    if (!expr) {
      if (err) err.textContent = "";
      cronInput.removeAttribute("aria-invalid");
      fill(out, h("span", { class: "muted" }, "No schedule: the job runs only when triggered."));
      return;
    }
    const qs = new URLSearchParams({ expr, timezone: tzInput.value.trim() || "UTC", count: "5" });
    // the schedule's own DST policy (kept as it is by the form), so the notes match it
    if (dst?.gap) qs.set("dst_gap", dst.gap);
    if (dst?.fold) qs.set("dst_fold", dst.fold);
    try {
      const data = await get(`/api/v1/cron/preview?${qs}`);
      if (mine !== seq) return;
      if (err) err.textContent = "";
      if (tzErr) tzErr.textContent = "";
      cronInput.removeAttribute("aria-invalid");
      tzInput.removeAttribute("aria-invalid");
      fill(
        out,
        h("div", { class: "muted" }, `Next ${data.times.length} in ${data.timezone}:`),
        h("ol", { class: "fire-times" }, (data.fires || data.times.map((time) => ({ time }))).map((f) =>
          h("li", null, timeEl(f.time, data.timezone), f.dst ? h("span", { class: "dst warn" }, DST_NOTES[f.dst] || f.dst) : null))),
      );
    } catch (e) {
      if (mine !== seq || !(e instanceof ApiError)) return;
      const bad = e.field === "timezone" ? tzInput : cronInput;
      const box = e.field === "timezone" ? tzErr : err;
      if (bad === cronInput) {
        // the node checks the zone first: a cron error means the zone is fine now (no stale error)
        tzInput.removeAttribute("aria-invalid");
        if (tzErr) tzErr.textContent = "";
      }
      bad.setAttribute("aria-invalid", "true");
      if (box) box.textContent = e.message;
      fill(out);
    }
  };
  const schedule = () => {
    clearTimeout(timer);
    timer = setTimeout(update, 200);
  };
  cronInput.addEventListener("input", schedule);
  tzInput.addEventListener("input", schedule);
  update();
}

// Pure: a friendly schedule -> a cron expression ("" when a value is out of range).
// kind: every (n minutes), hourly (at minute), daily / weekdays (at HH:MM), weekly (day 0-6 at
// HH:MM, 0 = Sunday), monthly (day of month 1-31 at HH:MM).
export function buildCron(kind, { n = 5, minute = 0, time = "09:00", day = 1 } = {}) {
  const m = /^(\d{1,2}):(\d{2})$/.exec(time || "");
  const hh = m ? Number(m[1]) : NaN, mm = m ? Number(m[2]) : NaN;
  const okTime = hh >= 0 && hh <= 23 && mm >= 0 && mm <= 59;
  const int = (v, lo, hi) => Number.isInteger(Number(v)) && Number(v) >= lo && Number(v) <= hi;
  switch (kind) {
    case "every": return int(n, 1, 59) ? (Number(n) === 1 ? "* * * * *" : `*/${Number(n)} * * * *`) : "";
    case "hourly": return int(minute, 0, 59) ? `${Number(minute)} * * * *` : "";
    case "daily": return okTime ? `${mm} ${hh} * * *` : "";
    case "weekdays": return okTime ? `${mm} ${hh} * * 1-5` : "";
    case "weekly": return okTime && int(day, 0, 6) ? `${mm} ${hh} * * ${Number(day)}` : "";
    case "monthly": return okTime && int(day, 1, 31) ? `${mm} ${hh} ${Number(day)} * *` : "";
    default: return "";
  }
}

const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

// A small form beside the raw cron field: pick "every 15 minutes", "weekdays at 09:00"…; "Use"
// writes the expression into the cron field (which then checks and previews it).
export function schedulePicker(cronInput) {
  const kind = h("select", { "aria-label": "Repeat" },
    [["every", "Every N minutes"], ["hourly", "Hourly at minute"], ["daily", "Daily at"], ["weekdays", "Weekdays at"], ["weekly", "Weekly on"], ["monthly", "Monthly on day"]].map(([v, t]) => h("option", { value: v }, t)));
  const n = h("input", { type: "number", min: 1, max: 59, value: 15, "aria-label": "Minutes between runs", class: "narrow" });
  const minute = h("input", { type: "number", min: 0, max: 59, value: 0, "aria-label": "Minute of the hour", class: "narrow" });
  const weekday = h("select", { "aria-label": "Day of the week" }, DAYS.map((d, i) => h("option", { value: i, selected: i === 1 }, d)));
  const monthday = h("input", { type: "number", min: 1, max: 31, value: 1, "aria-label": "Day of the month", class: "narrow" });
  const time = h("input", { type: "time", value: "09:00", "aria-label": "Time of day" });
  const use = h("button", { type: "button", class: "secondary small" }, "Use");
  const show = () => {
    const k = kind.value;
    n.hidden = k !== "every";
    minute.hidden = k !== "hourly";
    weekday.hidden = k !== "weekly";
    monthday.hidden = k !== "monthly";
    time.hidden = k === "every" || k === "hourly";
  };
  kind.addEventListener("change", show);
  show();
  use.addEventListener("click", () => {
    const day = kind.value === "weekly" ? weekday.value : monthday.value;
    const expr = buildCron(kind.value, { n: n.value, minute: minute.value, time: time.value, day });
    if (!expr) return;
    cronInput.value = expr;
    cronInput.dispatchEvent(new Event("input", { bubbles: true }));
  });
  return h("div", { class: "schedule-picker row small", role: "group", "aria-label": "Schedule helper" }, kind, n, minute, weekday, monthday, time, use);
}
