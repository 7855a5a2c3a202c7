// A cron input that validates as the user types (with the node's own parser, through
// GET /api/v1/cron/preview) and lists the next fire times in the schedule's time zone.
import { ApiError, get } from "./api.js";
import { fill, h, timeEl } from "./dom.js";

export function cronPreview(cronInput, tzInput, out) {
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
        h("ol", { class: "fire-times" }, data.times.map((t) => h("li", null, timeEl(t, data.timezone)))),
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
