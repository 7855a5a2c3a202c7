import { del, get, patch, post, getAll } from "../api.js";
import { badge, confirmDialog, field, fill, fmtTime, h, modal, parseKeyValues, table, toast } from "../dom.js";
import { session } from "../session.js";

const enc = encodeURIComponent;
const ROLES_HINT = "project=role a line; roles: viewer, operator, editor, admin; *=admin for cluster admins.";

export async function render(root, ctx) {
  if (!session.admin) {
    root.append(h("h1", null, "Users"), h("p", null, "Only cluster admins manage users."));
    return;
  }
  const users = h("div");
  const tokens = h("div");
  root.append(
    h("div", { class: "row" }, h("h1", null, "Users"), h("button", { class: "primary", onclick: create }, "New user")),
    h("section", { class: "card" }, users),
    h("section", { class: "card", "aria-labelledby": "h-tokens" }, h("h2", { id: "h-tokens" }, "API tokens"), tokens),
  );
  async function create() {
    const roles = h("textarea", { name: "roles", rows: 3, placeholder: "project=role, e.g. default=viewer or *=admin" });
    const v = await modal(
      "New user",
      [field("Name", h("input", { name: "name", required: true })), field("Password", h("input", { name: "password", type: "password", minlength: 8 }), "At least 8 characters; empty: token-only user."), field("Roles", roles, ROLES_HINT)],
      "Create",
      false,
      async (values) => {
        let parsed;
        try {
          parsed = parseKeyValues(values.roles);
        } catch (err) {
          err.field = "roles";
          throw err;
        }
        const body = { name: values.name, roles: parsed };
        if (values.password) body.password = values.password;
        await post("/api/v1/users", body); // an error keeps the dialog open, input and all
        return values;
      },
    );
    if (!v) return;
    toast(`user ${v.name} created`, "ok");
    load();
  }
  async function editRoles(u) {
    const text = Object.entries(u.roles || {}).map(([p, r]) => `${p}=${r}`).join("\n");
    const roles = h("textarea", { name: "roles", rows: 4 }, text);
    const v = await modal(`Roles of ${u.name}`, field("Roles", roles, ROLES_HINT), "Save");
    if (!v) return;
    try {
      await patch(`/api/v1/users/${enc(u.name)}`, { roles: parseKeyValues(v.roles) });
      toast(`roles of ${u.name} saved`, "ok");
      load();
    } catch (err) {
      toast(err.message, "error");
    }
  }
  async function showTokens(user) {
    const { tokens: list } = await get(`/api/v1/users/${enc(user)}/tokens`);
    const secret = h("div");
    fill(
      tokens,
      h("div", { class: "row" }, h("h3", null, `Tokens of ${user}`),
        h("button", { class: "small", onclick: async () => {
          const v = await modal(`New token for ${user}`, field("Description", h("input", { name: "description" })), "Create");
          if (!v) return;
          try {
            const t = await post(`/api/v1/users/${enc(user)}/tokens`, { description: v.description });
            await showTokens(user);
            tokens.prepend(h("p", { class: "secret" }, "New token (shown once): ", h("code", null, t.token)));
          } catch (err) { toast(err.message, "error"); }
        } }, "New token")),
      secret,
      table(
        ["Id", "Kind", "Description", "Created", "Expires", ""],
        list.map((t) => h("tr", null, h("td", null, h("code", null, t.id)), h("td", null, t.kind || ""), h("td", null, t.description || ""), h("td", null, fmtTime(t.created_at)), h("td", null, fmtTime(t.expires_at)),
          h("td", null, h("button", { class: "small danger", onclick: async () => { if (await confirmDialog("Revoke token?", `Token ${t.id} stops working at once.`, "Revoke")) { await del(`/api/v1/users/${enc(user)}/tokens/${enc(t.id)}`).catch((e) => toast(e.message, "error")); showTokens(user); } } }, "Revoke")))),
        "No tokens.",
      ),
    );
  }
  async function load() {
    const { users: list } = await getAll("/api/v1/users", "users");
    fill(
      users,
      table(
        ["User", "Roles", "Enabled", "Password", ""],
        list.map((u) =>
          h(
            "tr",
            { dataset: { user: u.name } },
            h("td", null, h("strong", null, u.name), u.display_name ? h("div", { class: "muted small" }, u.display_name) : null),
            h("td", null, Object.entries(u.roles || {}).map(([p, r]) => h("span", { class: "tag" }, `${p}=${r}`))),
            h("td", null, badge(u.enabled ? "enabled" : "disabled")),
            h("td", null, u.has_password ? "set" : "none"),
            h(
              "td",
              { class: "actions" },
              h("button", { class: "small secondary", onclick: () => showTokens(u.name) }, "Tokens"),
              h("button", { class: "small secondary", onclick: () => editRoles(u) }, "Roles"),
              h("button", { class: "small secondary", onclick: async () => { try { await patch(`/api/v1/users/${enc(u.name)}`, { enabled: !u.enabled }); load(); } catch (err) { toast(err.message, "error"); } } }, u.enabled ? "Disable" : "Enable"),
            ),
          ),
        ),
      ),
    );
  }
  await load();
}
