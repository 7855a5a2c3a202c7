// The one place the UI talks to the node: JSON in and out, the session cookie, and the CSRF header.
const CSRF_KEY = "cronmesh.csrf";

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "http_error";
    this.field = err.field || null;
  }
}

const listeners = new Set();
export const onUnauthenticated = (fn) => listeners.add(fn);

// Whether the node answers: fn(false) when a request cannot reach it, fn(true) when one does again.
const connection = { up: true, listeners: new Set() };
export const onConnection = (fn) => connection.listeners.add(fn);
function connected(up) {
  if (connection.up === up) return;
  connection.up = up;
  connection.listeners.forEach((fn) => fn(up));
}

export async function request(method, path, body, { text = false } = {}) {
  const headers = { Accept: text ? "text/plain" : "application/json" };
  const init = { method, headers, credentials: "same-origin" };
  if (method !== "GET" && method !== "HEAD") {
    headers["X-CSRF-Token"] = localStorage.getItem(CSRF_KEY) || "";
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    connected(false);
    throw err;
  }
  // a proxy's 502/503/504 in front of a dead node is a lost connection too
  connected(![502, 503, 504].includes(resp.status) || resp.headers.get("Content-Type")?.includes("application/json"));
  if (resp.status === 204) return null;
  const type = resp.headers.get("Content-Type") || "";
  const data = type.includes("application/json") ? await resp.json() : await resp.text();
  if (!resp.ok) {
    const err = new ApiError(resp.status, typeof data === "object" ? data : null);
    if (resp.status === 401 && !path.endsWith("/auth/login")) listeners.forEach((fn) => fn(err));
    throw err;
  }
  return data;
}

export const get = (path) => request("GET", path);

// Every item of a paged list (`?after=&limit=`; answers carry `next`): `{[key]: items}`.
export async function getAll(path, key) {
  const items = [];
  let after = null;
  for (let page = 0; page < 1000; page += 1) {
    const sep = path.includes("?") ? "&" : "?";
    const qs = `limit=1000${after ? `&after=${encodeURIComponent(after)}` : ""}`;
    const data = await request("GET", `${path}${sep}${qs}`);
    items.push(...(data[key] || []));
    after = data.next;
    if (!after) break;
  }
  return { [key]: items };
}
export const post = (path, body) => request("POST", path, body);
export const put = (path, body) => request("PUT", path, body);
export const patch = (path, body) => request("PATCH", path, body);
export const del = (path) => request("DELETE", path);

export async function login(username, password) {
  const data = await request("POST", "/api/v1/auth/login", { username, password, cookie: true });
  localStorage.setItem(CSRF_KEY, data.csrf_token);
  return data;
}

export async function logout() {
  try {
    await request("POST", "/api/v1/auth/logout");
  } finally {
    localStorage.removeItem(CSRF_KEY);
  }
}

export const enc = encodeURIComponent;
export const projectPath = (project, rest = "") => `/api/v1/projects/${enc(project)}${rest}`;
