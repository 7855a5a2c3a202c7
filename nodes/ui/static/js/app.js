// The page shell: a hash router (#/jobs/nightly …), the header, and the life of each view.
import { logout, onUnauthenticated } from "./api.js";
import { fill, h } from "./dom.js";
import { session } from "./session.js";

const ROUTES = [
  [/^#\/login$/, "login", "login", false],
  [/^#?\/?$/, "dashboard", "dashboard"],
  [/^#\/jobs$/, "jobs", "jobs"],
  [/^#\/jobs\/new$/, "job_form", "jobs"],
  [/^#\/jobs\/([^/]+)\/edit$/, "job_form", "jobs"],
  [/^#\/jobs\/([^/]+)$/, "job", "jobs"],
  [/^#\/runs$/, "runs", "runs"],
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
  onLeave(fn) {
    this.cleanups.push(fn);
  }
  close() {
    this.alive = false;
    this.cleanups.forEach((fn) => fn());
  }
}

let current = null;

function splitHash() {
  const raw = location.hash || "#/";
  const [path, qs] = raw.split("?");
  return [path, new URLSearchParams(qs || "")];
}

async function route() {
  const [path, query] = splitHash();
  const main = document.getElementById("main");
  const found = ROUTES.find(([re]) => re.test(path));
  if (current) current.close();
  if (!found) {
    fill(main, h("h1", null, "Not found"), h("p", null, h("a", { href: "#/" }, "Back to the dashboard")));
    return;
  }
  const [re, view, nav, needsLogin = true] = found;
  if (needsLogin && !session.me) {
    try {
      await session.load();
      renderHeader();
    } catch {
      location.hash = `#/login?next=${encodeURIComponent(location.hash)}`;
      return;
    }
  }
  document.getElementById("top").hidden = !session.me || view === "login";
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const params = re.exec(path).slice(1).map(decodeURIComponent);
  const ctx = new ViewContext(params, query);
  current = ctx;
  main.setAttribute("aria-busy", "true");
  try {
    const mod = await import(`./views/${view}.js`);
    if (!ctx.alive) return;
    const page = h("div", { class: `page page-${view}` });
    fill(main, page);
    await mod.render(page, ctx);
  } catch (err) {
    if (ctx.alive && err.status !== 401) {
      fill(main, h("h1", null, "Something went wrong"), h("p", { class: "error" }, err.message));
    }
  } finally {
    main.removeAttribute("aria-busy");
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
  location.hash = next && !next.startsWith("#/login") ? next : "#/";
}

function start() {
  onUnauthenticated(() => {
    session.me = null;
    if (!location.hash.startsWith("#/login")) {
      location.hash = `#/login?next=${encodeURIComponent(location.hash)}`;
    }
  });
  document.getElementById("project-select").addEventListener("change", (e) => {
    session.project = e.target.value;
    route();
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
