// The page shell: a hash router (#/jobs/nightly …), the header, and the life of each view.
import { get, logout, onConnection, onUnauthenticated } from "./api.js";
import { fill, fmtTime, h, timeZones } from "./dom.js";
import { session } from "./session.js";

const TITLES = {
  login: "Log in", dashboard: "Dashboard", jobs: "Jobs", job_form: "Jobs", job: "Jobs", runs: "Runs",
  run: "Runs", workflows: "Workflows", workflow: "Workflows", execution: "Workflows",
  secrets: "Secrets", machines: "Machines", users: "Users", audit: "Audit", plan: "Plan",
};

const ROUTES = [
  [/^#\/login$/, "login", "login", false],
  [/^#?\/?$/, "dashboard", "dashboard"],
  [/^#\/jobs$/, "jobs", "jobs"],
  [/^#\/jobs\/new$/, "job_form", "jobs"],
  [/^#\/jobs\/([^/]+)\/edit$/, "job_form", "jobs"],
  [/^#\/jobs\/([^/]+)$/, "job", "jobs"],
  [/^#\/runs$/, "runs", "runs"],
  [/^#\/plan$/, "plan", "plan"],
  [/^#\/runs\/([^/]+)$/, "run", "runs"],
  [/^#\/workflows$/, "workflows", "workflows"],
  [/^#\/workflows\/([^/]+)$/, "workflow", "workflows"],
  [/^#\/executions\/([^/]+)$/, "execution", "workflows"],
  [/^#\/secrets$/, "secrets", "secrets"],
  [/^#\/machines$/, "machines", "machines"],
  [/^#\/users$/, "users", "users"],
  [/^#\/audit$/, "audit", "audit"],
];

// What a view gets: its parameters, and timers / cleanups that end when the user navigates away.
class ViewContext {
  constructor(params, query) {
    this.params = params;
    this.query = query;
    this.cleanups = [];
    this.alive = true;
  }
  every(ms, fn) {
    let timer = null;
    const tick = async () => {
      if (!this.alive) return;
      try {
        await fn();
      } catch (err) {
        if (err.status !== 401) console.warn(err);
      }
      if (this.alive) timer = setTimeout(tick, ms);
    };
    timer = setTimeout(tick, ms);
    this.cleanups.push(() => clearTimeout(timer));
  }
  // The tab's title: the most specific part first ("nightly · Jobs · cronmesh").
  title(...parts) {
    if (this.alive) document.title = [...parts.filter(Boolean), "cronmesh"].join(" · ");
  }
  onLeave(fn) {
    this.cleanups.push(fn);
  }
  close() {
    this.alive = false;
    this.cleanups.forEach((fn) => fn());
  }
}

let current = null;

// Where to go after logging in: the page the user asked for, never the login page itself.
export function loginHash(wanted) {
  let next = wanted || "";
  while (next.startsWith("#/login")) {
    const q = next.indexOf("?");
    next = q < 0 ? "" : new URLSearchParams(next.slice(q + 1)).get("next") || "";
  }
  return next && next !== "#/" && next !== "#" ? `#/login?next=${encodeURIComponent(next)}` : "#/login";
}

function splitHash() {
  const raw = location.hash || "#/";
  const q = raw.indexOf("?");
  return q < 0 ? [raw, new URLSearchParams()] : [raw.slice(0, q), new URLSearchParams(raw.slice(q + 1))];
}

async function route() {
  const [path, query] = splitHash();
  const main = document.getElementById("main");
  const found = ROUTES.find(([re]) => re.test(path));
  if (current) current.close();
  timeZones.page = null;
  if (!found) {
    document.title = "Not found · cronmesh";
    fill(main, h("h1", null, "Not found"), h("p", null, h("a", { href: "#/" }, "Back to the dashboard")));
    return;
  }
  const [re, view, nav, needsLogin = true] = found;
  if (needsLogin && !session.me) {
    try {
      await session.load();
      renderHeader();
    } catch {
      if (!location.hash.startsWith("#/login")) location.hash = loginHash(location.hash);
      return;
    }
  }
  // a link from a notification names its project (D256): open it there, if this user sees it
  const linked = query.get("project");
  if (linked && session.me && linked !== session.project && session.projects.includes(linked)) {
    session.project = linked;
    renderHeader();
  }
  document.getElementById("top").hidden = !session.me || view === "login";
  if (session.me && view !== "login") showFreeze();
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const params = re.exec(path).slice(1).map(decodeURIComponent);
  const ctx = new ViewContext(params, query);
  current = ctx;
  ctx.title(TITLES[view]);
  main.setAttribute("aria-busy", "true");
  try {
    const mod = await import(`./views/${view}.js`);
    if (!ctx.alive) return;
    const loading = h("p", { class: "muted loading" }, "Loading…"); // never a blank page
    const page = h("div", { class: `page page-${view}` }, loading);
    fill(main, page);
    const rendering = mod.render(page, ctx);
    // a view that drew its frame with a "Loading…" of its own needs no second one above it
    if (page.querySelectorAll(".loading").length > 1) loading.remove();
    await rendering;
    loading.remove();
  } catch (err) {
    if (ctx.alive && err.status !== 401) {
      fill(main, h("h1", null, "Something went wrong"), h("p", { class: "error" }, err.message));
    }
  } finally {
    main.removeAttribute("aria-busy");
  }
}

// the cluster freeze (D239), under the header on every page; text only (the note is untrusted)
async function showFreeze() {
  const box = document.getElementById("frozen");
  try {
    const f = await get("/api/v1/freeze");
    box.hidden = !f.frozen;
    if (f.frozen) {
      box.textContent = `Cluster frozen${f.by ? ` by ${f.by}` : ""}${f.at ? ` at ${fmtTime(f.at)}` : ""}: ${f.note} — no scheduled run starts until it is unfrozen.`;
    }
  } catch {
    box.hidden = true;
  }
}

function renderHeader() {
  const select = document.getElementById("project-select");
  fill(select, session.projects.map((p) => h("option", { value: p, selected: p === session.project }, p)));
  document.getElementById("who-name").textContent = session.me.user.name;
  for (const a of document.querySelectorAll("[data-admin]")) a.hidden = !session.admin;
}

export async function afterLogin(next) {
  await session.load();
  renderHeader();
  // only a page of this UI: `next` sets the fragment, never another site or the login page
  const target = next && next.startsWith("#/") && !next.startsWith("#/login") ? next : "#/";
  if (location.hash === target) route();
  else location.hash = target;
}

function start() {
  onUnauthenticated(() => {
    session.me = null;
    if (!location.hash.startsWith("#/login")) location.hash = loginHash(location.hash);
  });
  // a node that stops answering: say so, and grey out what the page last knew
  onConnection((up) => {
    const box = document.getElementById("conn-lost");
    box.hidden = up;
    document.getElementById("main").classList.toggle("stale", !up);
    if (!up) box.textContent = `Connection to the node lost at ${fmtTime(new Date().toISOString())}: what this page shows may be out of date. Retrying…`;
  });
  const zone = document.getElementById("zone-select");
  zone.value = timeZones.mode;
  zone.querySelector("option[value=browser]").textContent = `Browser time (${timeZones.browser()})`;
  zone.addEventListener("change", () => {
    timeZones.mode = zone.value;
    route();
  });
  document.getElementById("project-select").addEventListener("change", (e) => {
    session.project = e.target.value;
    const [path, query] = splitHash();
    if (!query.has("project")) return route();
    query.delete("project"); // the choice made here wins over the link's project
    location.hash = query.size ? `${path}?${query}` : path;
  });
  document.getElementById("logout").addEventListener("click", async () => {
    await logout().catch(() => {});
    session.me = null;
    location.hash = "#/login";
  });
  const toggle = document.getElementById("menu-toggle");
  toggle.addEventListener("click", () => {
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    document.getElementById("nav").classList.toggle("open", open);
  });
  window.addEventListener("hashchange", () => {
    document.getElementById("nav").classList.remove("open");
    toggle.setAttribute("aria-expanded", "false");
    route();
  });
  route();
}

start();
