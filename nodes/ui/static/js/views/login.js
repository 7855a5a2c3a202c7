import { login } from "../api.js";
import { afterLogin } from "../app.js";
import { field, h, showFieldError } from "../dom.js";

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
      await login(user.value, pass.value);
      await afterLogin(ctx.query.get("next"));
    } catch (err) {
      showFieldError(form, null, err.message);
    }
  });
  root.append(form);
  user.focus();
}
