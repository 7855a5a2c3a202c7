// The project's secrets: names and metadata (paged), set a value (write-only: never shown again),
// delete. Values go to the API once and are never read back; the page holds none after a save.
import { del, enc, get, projectPath, put } from "../api.js";
import { confirmDialog, field, fill, fmtTime, h, modal, table, toast } from "../dom.js";
import { session } from "../session.js";

const PAGE = 50;

export async function render(root, ctx) {
  const project = session.project;
  const editor = session.can("editor");
  const list = h("div");
  const more = h("div", { class: "row" });
  root.append(
    h(
      "div",
      { class: "row" },
      h("h1", null, "Secrets"),
      editor ? h("button", { class: "primary", id: "secret-new", onclick: () => setValue(null) }, "New secret") : null,
    ),
    h(
      "p",
      { class: "muted" },
      "Values are write-only: encrypted in etcd, injected into the runs whose job or task references them ",
      h("code", null, "env: {NAME: {secret: name}}"),
      ", and shown as *** in their logs.",
    ),
    h("section", { class: "card" }, list, more),
  );

  async function setValue(name) {
    const nameInput = h("input", { name: "name", required: true, pattern: "[a-z0-9][a-z0-9\\-_.]{0,62}", value: name || "" });
    if (name) nameInput.readOnly = true;
    const value = h("textarea", { name: "value", rows: 4, required: true, autocomplete: "off", spellcheck: "false" });
    const v = await modal(
      name ? `New value for ${name}` : "New secret",
      [field("Name", nameInput), field("Value", value, "At most 16 KiB. It cannot be read back, only replaced.")],
      "Save",
    );
    if (!v) return;
    try {
      await put(projectPath(project, `/secrets/${enc(v.name)}`), { value: v.value });
      toast(`secret ${v.name} saved`, "ok");
      load();
    } catch (err) {
      toast(err.field ? `${err.field}: ${err.message}` : err.message, "error");
    }
  }

  async function remove(name) {
    if (!(await confirmDialog("Delete secret?", `Secret ${name} is deleted; jobs that use it must drop the reference first.`, "Delete"))) return;
    try {
      await del(projectPath(project, `/secrets/${enc(name)}`));
      toast(`secret ${name} deleted`, "ok");
      load();
    } catch (err) {
      toast(err.message, "error");
    }
  }

  async function load(after = null) {
    const qs = `?limit=${PAGE}` + (after ? `&after=${enc(after)}` : "");
    const page = await get(projectPath(project, `/secrets${qs}`));
    fill(
      list,
      table(
        ["Name", "Updated", "By", "Key", ""],
        page.secrets.map((s) =>
          h(
            "tr",
            { dataset: { secret: s.name } },
            h("td", null, h("strong", null, s.name)),
            h("td", null, fmtTime(s.updated_at)),
            h("td", null, s.updated_by || ""),
            h("td", null, h("code", null, s.key_id)),
            h(
              "td",
              { class: "actions" },
              editor ? h("button", { class: "small secondary", onclick: () => setValue(s.name) }, "Set value") : null,
              editor ? h("button", { class: "small danger", onclick: () => remove(s.name) }, "Delete") : null,
            ),
          ),
        ),
        "No secrets in this project.",
      ),
    );
    fill(
      more,
      after ? h("button", { class: "small secondary", onclick: () => load() }, "First page") : null,
      page.next ? h("button", { class: "small secondary", onclick: () => load(page.next) }, "Next page") : null,
    );
  }
  await load();
}
