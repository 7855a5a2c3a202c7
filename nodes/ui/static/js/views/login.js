import { enc, login, put } from "../api.js";
import { afterLogin } from "../app.js";
import { field, fill, h, showFieldError } from "../dom.js";

export async function render(root, ctx) {
  const user = h("input", { name: "username", autocomplete: "username", required: true });
  const pass = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const form = h(
    "form",
    { class: "card login", "aria-label": "Log in" },
    h("h1", null, "cronmesh"),
    h("p", { class: "muted" }, "Log in to manage jobs, runs and workflows."),
    field("User name", user),
    field("Password", pass),
    h("div", { class: "form-error", role: "alert" }),
    h("button", { type: "submit", class: "primary" }, "Log in"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const data = await login(user.value, pass.value);
      if (data.user.must_change_password) {
        changePassword(root, ctx, data.user.name, pass.value);
        return;
      }
      await afterLogin(ctx.query.get("next"));
    } catch (err) {
      showFieldError(form, null, err.message);
    }
  });
  root.append(form);
  user.focus();
}

// A generated first-admin password must be replaced before anything else works (403
// password_change_required everywhere else). Changing it ends the session: log in again with it.
function changePassword(root, ctx, name, current) {
  const pass = h("input", { name: "password", type: "password", autocomplete: "new-password", required: true, minlength: 8 });
  const again = h("input", { name: "again", type: "password", autocomplete: "new-password", required: true });
  const form = h(
    "form",
    { class: "card login", "aria-label": "Choose a new password" },
    h("h1", null, "Choose a new password"),
    h("p", { class: "muted" }, `The password of ${name} was generated; choose your own to continue.`),
    field("New password", pass),
    field("New password again", again),
    h("div", { class: "form-error", role: "alert" }),
    h("button", { type: "submit", class: "primary" }, "Change password"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (pass.value !== again.value) {
      showFieldError(form, "again", "The two passwords differ.");
      return;
    }
    try {
      await put(`/api/v1/users/${enc(name)}/password`, { password: pass.value, current_password: current });
      await login(name, pass.value);
      await afterLogin(ctx.query.get("next"));
    } catch (err) {
      showFieldError(form, err.field === "password" ? "password" : null, err.message);
    }
  });
  fill(root, form);
  pass.focus();
}
