// Who is logged in, which project is selected, and what their roles allow (to hide actions).
import { get, getAll } from "./api.js";

const RANK = { viewer: 0, operator: 1, editor: 2, admin: 3 };
const PROJECT_KEY = "cronmesh.project";

export const session = {
  me: null,
  projects: [],
  get project() {
    return localStorage.getItem(PROJECT_KEY) || this.projects[0] || "default";
  },
  set project(name) {
    localStorage.setItem(PROJECT_KEY, name);
  },
  get roles() {
    return (this.me && this.me.user && this.me.user.roles) || {};
  },
  rank(project = this.project) {
    const r = this.roles;
    return Math.max(RANK[r["*"]] ?? -1, RANK[r[project]] ?? -1);
  },
  can(role, project = this.project) {
    return this.rank(project) >= RANK[role];
  },
  get admin() {
    return this.roles["*"] === "admin";
  },
  async load() {
    this.me = await get("/api/v1/auth/me");
    const { projects } = await getAll("/api/v1/projects", "projects");
    const granted = Object.keys(this.roles).filter((p) => p !== "*");
    const names = new Set([...projects, ...granted]);
    if (this.roles["*"]) names.add("default");
    this.projects = [...names].sort();
    if (!this.projects.includes(this.project) && this.projects.length) this.project = this.projects[0];
    return this.me;
  },
};
