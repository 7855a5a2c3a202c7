import { ApiError, get, post, projectPath, put } from "../api.js";
import { jobPath } from "../actions.js";
import { cronPreview, schedulePicker } from "../cronfield.js";
import { field, h, showFieldError, toast } from "../dom.js";
import { session } from "../session.js";

const READ_ONLY = ["project", "created_at", "updated_at", "active_since"];

export async function render(root, ctx) {
  const project = session.project;
  const editing = ctx.params[0] || null;
  ctx.title(editing ? `Edit ${editing}` : "New job", "Jobs");
  if (!session.can("editor")) {
    // say so before the user fills the form, not after
    root.append(h("h1", null, editing ? `Edit ${editing}` : "New job"), h("p", { class: "warn", role: "alert" }, `Your role in project ${project} (${["viewer", "operator", "editor", "admin"][session.rank()] || "none"}) cannot ${editing ? "edit" : "create"} jobs: that takes editor.`));
    return;
  }
  const job = editing ? await get(jobPath(project, editing)) : null;
  const first = (job && job.schedules[0]) || { cron: "", timezone: "UTC" };
  const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

  const name = h("input", { name: "name", required: true, value: job?.name || "", readonly: Boolean(job), pattern: "[a-z0-9][a-z0-9_.\\-]*", autocomplete: "off" });
  const description = h("input", { name: "description", value: job?.description || "" });
  const command = h("textarea", { name: "command", rows: 6, spellcheck: "false", class: "mono" }, job?.command || "");
  const upload = h("input", { type: "file", name: "script", accept: ".sh,.py,.bash,.txt,text/*" });
  const cron = h("input", { name: "cron", value: first.cron || "", class: "mono", autocomplete: "off", placeholder: "*/5 * * * *" });
  const timezone = h("input", { name: "timezone", value: first.timezone || (job ? "UTC" : tz), list: "tz-list", autocomplete: "off" });
  const preview = h("div", { class: "preview", "aria-live": "polite", id: "cron-preview" });
  const tags = h("input", { name: "tags", value: (job?.tags || []).join(", "), placeholder: "comma separated" });
  const timeout = h("input", { name: "timeout", type: "number", min: 0, step: "any", value: job?.timeout ?? 0 });
  const retries = h("input", { name: "retries", type: "number", min: 0, max: 100, value: job?.retries ?? 0 });
  const overlap = h("select", { name: "overlap" }, ["allow", "forbid", "replace", "queue"].map((o) => h("option", { value: o, selected: (job?.overlap || "allow") === o }, o)));
  const enabled = h("input", { name: "enabled", type: "checkbox", checked: job ? job.enabled : true });
  // every slot's deadlines (D229): seconds or 90s / 15m / 2h / 1d; empty: none
  const startWithin = h("input", { name: "start_within", value: job?.deadlines?.start_within || "", placeholder: "e.g. 5m", autocomplete: "off" });
  const succeedWithin = h("input", { name: "succeed_within", value: job?.deadlines?.succeed_within || "", placeholder: "e.g. 2h", autocomplete: "off" });
  upload.addEventListener("change", async () => {
    const file = upload.files[0];
    if (file) command.value = await file.text();
  });

  const form = h(
    "form",
    { class: "card form", novalidate: true, "aria-label": editing ? `Edit ${editing}` : "New job" },
    field("Name", name, editing ? null : "Lower-case letters, digits, '-', '_' and '.'."),
    field("Description", description),
    field("Command", command, "A shell command; or upload a script file below."),
    field("Script file", upload, "Its text replaces the command."),
    h(
      "div",
      { class: "grid2" },
      field("Cron schedule", cron, "Five fields, @daily, @every 10m, or H for a spread minute. Empty: manual only."),
      field("Time zone", timezone, "IANA name, e.g. Europe/Berlin."),
    ),
    schedulePicker(cron),
    preview,
    h("datalist", { id: "tz-list" }, (Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : ["UTC"]).map((z) => h("option", { value: z }))),
    h("div", { class: "grid3" }, field("Tags", tags), field("Timeout (s, 0: none)", timeout), field("Retries", retries)),
    h("div", { class: "grid2" }, field("Start within", startWithin, "Each slot's run must start within this, or it is a missed deadline."), field("Succeed within", succeedWithin, "…and succeed within this (seconds, or 90s, 15m, 2h, 1d).")),
    h("div", { class: "grid3" }, field("Overlap", overlap), h("div", { class: "field check", dataset: { field: "enabled" } }, h("label", null, enabled, " Enabled"))),
    h("div", { class: "form-error", role: "alert" }),
    h("div", { class: "actions" }, h("a", { class: "button secondary", href: editing ? `#/jobs/${encodeURIComponent(editing)}` : "#/jobs" }, "Cancel"), h("button", { type: "submit", class: "primary" }, editing ? "Save" : "Create job")),
  );
  root.append(h("h1", null, editing ? `Edit ${editing}` : "New job"), form);
  cronPreview(cron, timezone, preview, first.dst);

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const spec = job ? Object.fromEntries(Object.entries(job).filter(([k]) => !READ_ONLY.includes(k))) : {};
    spec.name = name.value.trim();
    if (!spec.name || !/^[a-z0-9][a-z0-9_.-]*$/.test(spec.name)) {
      showFieldError(form, "name", spec.name ? "Use lower-case letters, digits, '-', '_' and '.', starting with a letter or digit." : "A job needs a name.");
      name.focus();
      return;
    }
    spec.description = description.value;
    spec.command = command.value.trim() ? command.value : null;
    const rest = job ? job.schedules.slice(1) : [];
    spec.schedules = cron.value.trim()
      ? [{ ...(job?.schedules[0] || {}), cron: cron.value.trim(), at: null, timezone: timezone.value.trim() || "UTC" }, ...rest]
      : rest;
    // a DST policy is for wall-clock cron times only: an @every schedule drops it
    if (spec.schedules[0] && /^@every\b/i.test(spec.schedules[0].cron || "")) spec.schedules[0] = { ...spec.schedules[0], dst: null };
    spec.tags = tags.value.split(",").map((t) => t.trim()).filter(Boolean);
    spec.timeout = Number(timeout.value || 0);
    spec.retries = Number(retries.value || 0);
    spec.overlap = overlap.value;
    spec.enabled = enabled.checked;
    const within = (el) => (el.value.trim() === "" ? 0 : /^\d+(\.\d+)?$/.test(el.value.trim()) ? Number(el.value) : el.value.trim());
    const deadlines = { start_within: within(startWithin), succeed_within: within(succeedWithin) };
    spec.deadlines = deadlines.start_within || deadlines.succeed_within ? deadlines : null;
    try {
      const saved = editing ? await put(jobPath(project, editing), spec) : await post(projectPath(project, "/jobs"), spec);
      toast(`${saved.name} saved`, "ok");
      // a fixed time that a daylight-saving change skips or repeats in the coming year (D223)
      for (const w of saved.warnings || []) toast(`${(w.code || "").startsWith("dst_") ? "Daylight saving: " : ""}${w.message}`, "warn", 20000);
      location.hash = `#/jobs/${encodeURIComponent(saved.name)}`;
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      const f = (err.field || "").split(".");
      const known = { name: "name", command: "command", description: "description", tags: "tags", timeout: "timeout", retries: "retries", overlap: "overlap" };
      let target = known[f[0]] || null;
      if (f[0] === "schedules") target = f.includes("timezone") ? "timezone" : "cron";
      if (f[0] === "deadlines") target = f[1] || "start_within";
      showFieldError(form, target, err.message);
    }
  });
}
