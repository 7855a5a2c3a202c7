import { del, get, getAll, post, put } from "../api.js";
import { badge, confirmDialog, field, fill, fmtBytes, fmtTime, h, modal, table, timeEl, toast } from "../dom.js";
import { session } from "../session.js";

const enc = encodeURIComponent;

function ago(iso) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

const cores = (c) => (c === null || c === undefined ? "—" : `${c.toFixed(2)} CPU`);

// What a node's runs use now, and the node process and the machine under it (D257); "—" where
// the node cannot tell (no cgroups: no per-run accounting).
function usageCells(n) {
  const l = n.load;
  if (!l) return [h("td", { class: "runs-usage muted" }, n.up ? "—" : "down"), h("td", { class: "machine muted" }, "—")];
  const sampled = `sampled ${fmtTime(l.at)}`;
  const mem = l.mem_total ? `${fmtBytes(l.mem_total - (l.mem_available ?? 0))} of ${fmtBytes(l.mem_total)} used` : "";
  return [
    h(
      "td",
      { class: "runs-usage", title: sampled },
      h("span", { class: "runs-cpu" }, cores(l.runs_cpu)),
      " · ",
      h("span", { class: "runs-memory" }, fmtBytes(l.runs_memory)),
      h("div", { class: "muted small node-process" }, `node process: ${cores(l.node_cpu)} · ${fmtBytes(l.node_rss)}`),
    ),
    h(
      "td",
      { class: "machine", title: sampled },
      h("span", { class: "load1" }, l.load1 === null || l.load1 === undefined ? "load —" : `load ${l.load1.toFixed(2)}`),
      l.cpus ? ` / ${l.cpus} CPUs` : "",
      mem ? h("div", { class: "muted small" }, mem) : null,
    ),
  ];
}

export async function render(root, ctx) {
  const nodesBox = h("div");
  const groupsBox = h("div");
  root.append(
    h("h1", null, "Machines"),
    h("section", { class: "card", "aria-labelledby": "h-nodes" }, h("h2", { id: "h-nodes" }, "Nodes"), nodesBox),
    h(
      "section",
      { class: "card", "aria-labelledby": "h-groups" },
      h("div", { class: "row" }, h("h2", { id: "h-groups" }, "Groups and bindings"), session.admin ? h("button", { class: "secondary", onclick: newGroup }, "New group") : null),
      groupsBox,
    ),
  );
  async function nodeAction(id, action) {
    try {
      await post(`/api/v1/nodes/${enc(id)}/${action}`);
      toast(`${id}: ${action} done`, "ok");
      await load();
    } catch (err) {
      toast(err.message, "error");
    }
  }
  async function newGroup() {
    const name = h("input", { name: "name", required: true });
    const values = await modal("New group", [field("Name", name), field("Description", h("input", { name: "description" }))], "Create");
    if (!values) return;
    try {
      await put(`/api/v1/groups/${enc(values.name)}`, { name: values.name, description: values.description });
      await load();
    } catch (err) {
      toast(err.message, "error");
    }
  }
  async function saveBinding(group, name, node, weight) {
    try {
      await put(`/api/v1/groups/${enc(group)}/bindings/${enc(name)}`, { name, node, weight: Number(weight) });
      toast(`binding ${name} saved`, "ok");
      await load();
    } catch (err) {
      toast(err.message, "error");
    }
  }
  let nodeIds = [];
  async function load() {
    const [{ nodes }, { groups }] = await Promise.all([get("/api/v1/nodes"), getAll("/api/v1/groups", "groups")]);
    nodeIds = nodes.map((n) => n.id);
    fill(
      nodesBox,
      table(
        ["Node", "Up", "State", "Running / capacity", "Runs use (CPU · memory)", "Machine", "Properties", "Version", "Last seen", ...(session.admin ? ["Actions"] : [])],
        nodes.map((n) =>
          h(
            "tr",
            { dataset: { node: n.id } },
            h("td", null, h("strong", null, n.id), h("div", { class: "muted small" }, n.address || "")),
            h("td", null, badge(n.up ? "up" : "down")),
            h("td", { class: "node-state" }, badge(n.state)),
            h("td", { class: "load" }, `${n.running} / ${n.capacity}`, n.capacity ? h("meter", { min: 0, max: n.capacity, value: n.running, high: n.capacity * 0.8, "aria-label": `${n.id} load` }) : null),
            ...usageCells(n),
            h("td", null, Object.entries(n.properties).map(([k, v]) => h("span", { class: "tag" }, `${k}=${v}`))),
            h("td", null, n.version || "—"),
            h("td", { class: "heartbeat" }, n.last_heartbeat ? [timeEl(n.last_heartbeat), h("div", { class: "muted small" }, ago(n.last_heartbeat))] : "never seen"),
            session.admin
              ? h(
                  "td",
                  { class: "actions" },
                  n.enabled ? null : h("button", { class: "small", onclick: () => nodeAction(n.id, "enable") }, "Enable"),
                  // a dead node runs nothing: nothing to disable or drain (it rejoins enabled or not as stored)
                  n.enabled && n.up ? h("button", { class: "small secondary", onclick: () => nodeAction(n.id, "disable") }, "Disable") : null,
                  !n.up || n.state === "draining" || n.state === "drained" ? null : h("button", { class: "small secondary", onclick: () => nodeAction(n.id, "drain") }, "Drain"),
                )
              : null,
          ),
        ),
        "No node has registered.",
      ),
    );
    fill(groupsBox, groups.length ? groups.map((g) => groupCard(g)) : h("p", { class: "empty" }, "No groups: runs go to any enabled node."));
  }
  function groupCard(g) {
    const rows = g.bindings.map((b) => {
      const weight = h("input", { type: "number", min: 1, value: b.weight, class: "narrow", "aria-label": `Weight of ${b.name}` });
      return h(
        "tr",
        { dataset: { binding: b.name } },
        h("td", null, b.name),
        h("td", null, b.node),
        h("td", null, session.admin ? weight : String(b.weight)),
        session.admin
          ? h(
              "td",
              { class: "actions" },
              h("button", { class: "small", onclick: () => saveBinding(g.name, b.name, b.node, weight.value) }, "Save"),
              h("button", { class: "small danger", onclick: async () => { if (await confirmDialog(`Remove binding ${b.name}?`, `${b.node} leaves group ${g.name}.`, "Remove")) { await del(`/api/v1/groups/${enc(g.name)}/bindings/${enc(b.name)}`).catch((e) => toast(e.message, "error")); load(); } } }, "Remove"),
            )
          : null,
      );
    });
    const add = session.admin
      ? (() => {
          const node = h("select", { "aria-label": "Node" }, nodeIds.map((id) => h("option", { value: id }, id)));
          const weight = h("input", { type: "number", min: 1, value: 1, class: "narrow", "aria-label": "Weight" });
          return h(
            "form",
            { class: "filters", onsubmit: (e) => { e.preventDefault(); saveBinding(g.name, node.value, node.value, weight.value); } },
            h("span", null, "Bind "), node, h("span", null, " weight "), weight, h("button", { type: "submit", class: "small" }, "Add binding"),
          );
        })()
      : null;
    return h(
      "div",
      { class: "group", dataset: { group: g.name } },
      h("div", { class: "row" }, h("h3", null, g.name, g.description ? h("small", null, ` — ${g.description}`) : null),
        session.admin ? h("button", { class: "small danger", onclick: async () => { if (await confirmDialog(`Delete group ${g.name}?`, "The group and its bindings are removed.")) { await del(`/api/v1/groups/${enc(g.name)}`).catch((e) => toast(e.message, "error")); load(); } } }, "Delete group") : null),
      table(["Binding", "Node", "Weight", ...(session.admin ? [""] : [])], rows, "No bindings."),
      add,
    );
  }
  await load();
  ctx.every(3000, load);
}
