// Tiny DOM helpers: build elements from plain values (text is always set as text, never HTML).
const SVG_NS = "http://www.w3.org/2000/svg";

function apply(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "value" && "value" in el) {
      el.value = value;
    } else if (key === "checked" || key === "disabled" || key === "selected") {
      el[key] = Boolean(value);
      if (value) el.setAttribute(key, "");
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function fill(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

// Times always say their zone. The header switch picks which zone times are shown in: the
// browser's, UTC, or the job's (a page about a job sets `timeZones.page`); schedule times pass
// their schedule's own zone explicitly and ignore the switch.
const ZONE_KEY = "cronmesh.timezone";
export const timeZones = {
  page: null,
  get mode() {
    const m = localStorage.getItem(ZONE_KEY);
    return ["browser", "utc", "job"].includes(m) ? m : "browser";
  },
  set mode(m) {
    localStorage.setItem(ZONE_KEY, m);
  },
  browser() {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  },
  // The zone a time without its own is shown in, per the switch.
  current() {
    if (this.mode === "utc") return "UTC";
    if (this.mode === "job" && this.page) return this.page;
    return this.browser();
  },
};

const formats = new Map();
function formatter(zone) {
  if (!formats.has(zone)) {
    formats.set(zone, new Intl.DateTimeFormat("en-GB", {
      timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
      minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "shortOffset",
    }));
  }
  return formats.get(zone);
}

// "2026-12-07 09:00:00 GMT-5" in `zone` (default: the switch's zone); "UTC" for UTC.
export function fmtTime(iso, zone = null) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  let fmt;
  try {
    fmt = formatter(zone || timeZones.current());
  } catch {
    fmt = formatter("UTC");
  }
  const p = Object.fromEntries(fmt.formatToParts(d).map((x) => [x.type, x.value]));
  const name = fmt.resolvedOptions().timeZone === "UTC" ? "UTC" : p.timeZoneName;
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second} ${name}`;
}

// A <time> element: the formatted text, the instant and the IANA zone in its tooltip.
export function timeEl(iso, zone = null) {
  if (!iso) return "—";
  const z = zone || timeZones.current();
  return h("time", { datetime: iso, title: `${z} · ${iso}` }, fmtTime(iso, z));
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function fmtBytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(n), i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

export function duration(start, end) {
  if (!start) return null;
  const t1 = end ? new Date(end) : new Date();
  return (t1 - new Date(start)) / 1000;
}

export function badge(status) {
  return h("span", { class: `badge st-${status || "unknown"}` }, (status || "unknown").replace("_", " "));
}

export function table(headers, rows, empty = "Nothing here yet.") {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      null,
      h("thead", null, h("tr", null, headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", null, rows),
    ),
  );
}

export function field(label, input, hint) {
  const id = input.id || `f-${label.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  input.id = id;
  const error = h("div", { class: "field-error", id: `${id}-error`, "aria-live": "polite" });
  input.setAttribute("aria-describedby", `${id}-error`);
  // an error goes once the user changes what it was about (never stale)
  input.addEventListener("input", () => {
    error.textContent = "";
    input.removeAttribute("aria-invalid");
  });
  return h(
    "div",
    { class: "field", dataset: { field: input.name || "" } },
    h("label", { for: id }, label),
    input,
    hint ? h("div", { class: "hint" }, hint) : null,
    error,
  );
}

export function showFieldError(form, name, message) {
  for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  const box = name ? form.querySelector(`.field[data-field="${CSS.escape(name)}"]`) : null;
  const target = box ? box.querySelector(".field-error") : form.querySelector(".form-error");
  if (box) box.querySelector("input,textarea,select")?.setAttribute("aria-invalid", "true");
  if (target) target.textContent = message;
}

export function toast(message, kind = "info", ms = 5000) {
  const box = document.getElementById("toast");
  const item = h("div", { class: `toast ${kind}`, role: kind === "warn" ? "alert" : null }, message);
  box.append(item);
  setTimeout(() => item.remove(), ms);
}

// A modal built on <dialog>: resolves to the submitted form's values, or null when dismissed.
// With `onSubmit(values)` the dialog stays open while it runs; if it throws, the error is shown
// in the dialog (on the field it names) and the input is kept; it resolves to onSubmit's result.
export function modal(title, body, okLabel = "OK", danger = false, onSubmit = null) {
  return new Promise((resolve) => {
    let result;
    const form = h(
      "form",
      { method: "dialog" },
      h("h2", null, title),
      body,
      h("div", { class: "form-error", role: "alert" }),
      h(
        "div",
        { class: "actions" },
        h("button", { value: "cancel", type: "submit", class: "secondary", formnovalidate: true }, "Cancel"),
        h("button", { value: "ok", type: "submit", class: danger ? "danger" : "primary" }, okLabel),
      ),
    );
    const dlg = h("dialog", { class: "modal", "aria-label": title }, form);
    document.body.append(dlg);
    if (onSubmit) {
      form.addEventListener("submit", async (e) => {
        if (e.submitter?.value !== "ok") return;
        e.preventDefault();
        const values = Object.fromEntries(new FormData(form));
        try {
          result = await onSubmit(values);
          dlg.close("ok");
        } catch (err) {
          showFieldError(form, err.field || null, err.message);
          if (err.field && !form.querySelector(`.field[data-field="${CSS.escape(err.field)}"]`)) showFieldError(form, null, err.message);
        }
      });
    }
    dlg.addEventListener("close", () => {
      let data = dlg.returnValue === "ok" ? Object.fromEntries(new FormData(form)) : null;
      if (onSubmit) data = dlg.returnValue === "ok" ? result : null;
      dlg.remove();
      resolve(data);
    });
    dlg.showModal();
  });
}

export const confirmDialog = (title, text, okLabel = "Delete") =>
  modal(title, h("p", null, text), okLabel, true).then((v) => v !== null);

export function parseKeyValues(text) {
  const out = {};
  for (const line of (text || "").split("\n")) {
    const t = line.trim();
    if (!t) continue;
    const i = t.indexOf("=");
    if (i <= 0) throw new Error(`"${t}" is not key=value`);
    out[t.slice(0, i).trim()] = t.slice(i + 1).trim();
  }
  return out;
}
