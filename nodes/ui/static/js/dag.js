// A workflow's DAG as SVG: layered layout by longest path from the roots (pure), then drawing.
import { s } from "./dom.js";

// Pure: {task: [dependencies]} -> {layers, pos, slots, routes}. layers: [[task…]…] (x = layer);
// pos: {task: {x, y}} (y = row). An edge that skips layers gets a dummy node in each layer it
// crosses (slots: [[name-or-null…]…], every row of every layer, dummies as null), so it is routed
// through a free row and never through another task's box; routes: {"from>to": [{x, y}…]}, the
// dummy rows it passes.
export function layout(deps) {
  const names = Object.keys(deps);
  const depth = {};
  const visit = (n, seen = new Set()) => {
    if (depth[n] !== undefined) return depth[n];
    if (seen.has(n)) return 0; // a cycle cannot be stored; guard anyway
    seen.add(n);
    const ds = (deps[n] || []).filter((d) => d in deps);
    depth[n] = ds.length ? 1 + Math.max(...ds.map((d) => visit(d, seen))) : 0;
    return depth[n];
  };
  names.forEach((n) => visit(n));
  // the layered graph: real tasks plus one dummy per skipped layer of each long edge
  const preds = {}; // node id -> [node ids one layer left]
  const layerOf = {};
  const cells = []; // layer -> [{id, task|null}]
  const add = (id, task, x) => {
    layerOf[id] = x;
    preds[id] ||= [];
    (cells[x] ||= []).push({ id, task });
  };
  for (const n of names) add(n, n, depth[n]);
  const chains = {};
  for (const n of names) {
    for (const d of (deps[n] || []).filter((v) => v in deps)) {
      let prev = d;
      const chain = [];
      for (let x = depth[d] + 1; x < depth[n]; x++) {
        const id = `\u0000${d}>${n}#${x}`;
        add(id, null, x);
        preds[id].push(prev);
        chain.push(id);
        prev = id;
      }
      preds[n].push(prev);
      chains[`${d}>${n}`] = chain;
    }
  }
  // order each layer by the mean row of what feeds it (fewer crossings), tasks before dummies, then by name
  const row = {};
  cells.forEach((layer = [], x) => {
    const key = (c) => {
      const rows = preds[c.id].map((p) => row[p]).filter((v) => v !== undefined);
      return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : 0;
    };
    layer.sort((a, b) => key(a) - key(b) || (a.task === null) - (b.task === null) || a.id.localeCompare(b.id));
    layer.forEach((c, y) => (row[c.id] = y));
    cells[x] = layer;
  });
  const pos = {};
  for (const n of names) pos[n] = { x: depth[n], y: row[n] };
  const layers = cells.map((layer) => layer.filter((c) => c.task !== null).map((c) => c.task));
  const slots = cells.map((layer) => layer.map((c) => c.task));
  const routes = Object.fromEntries(Object.entries(chains).map(([k, ids]) => [k, ids.map((id) => ({ x: layerOf[id], y: row[id] }))]));
  return { layers, pos, slots, routes };
}

export function dependencies(spec) {
  const deps = Object.fromEntries(spec.tasks.map((t) => [t.name, [...(t.depends_on || [])]]));
  for (const [from, to] of spec.edges || []) if (to in deps && !deps[to].includes(from)) deps[to].push(from);
  return deps;
}

const W = 150, H = 40, GX = 60, GY = 20;

// states: {task: status}; onPick(task) when a task is clicked or chosen with the keyboard.
export function drawDag(spec, states = {}, onPick = null, selected = null) {
  const deps = dependencies(spec);
  const { pos, slots, routes } = layout(deps);
  const rows = Math.max(1, ...slots.map((l) => l.length));
  const width = slots.length * (W + GX) - GX + 20;
  const height = rows * (H + GY) - GY + 20;
  const cell = (p) => ({ x: 10 + p.x * (W + GX), y: 10 + p.y * (H + GY) });
  const at = (n) => cell(pos[n]);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "dag", role: "group", "aria-label": `Graph of ${spec.name}` });
  svg.append(s("defs", null, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }))));
  const curve = (x1, y1, x2, y2) => {
    const mx = (x1 + x2) / 2;
    return ` C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`;
  };
  for (const [n, ds] of Object.entries(deps)) {
    for (const d of ds) {
      if (!(d in pos)) continue;
      const a = at(d), b = at(n);
      let x = a.x + W, y = a.y + H / 2;
      let path = `M ${x} ${y}`;
      for (const p of routes[`${d}>${n}`] || []) {
        const c = cell(p); // a dummy row: straight across the layer, clear of every box
        path += curve(x, y, c.x, c.y + H / 2) + ` L ${c.x + W} ${c.y + H / 2}`;
        x = c.x + W;
        y = c.y + H / 2;
      }
      path += curve(x, y, b.x, b.y + H / 2);
      svg.append(s("path", { d: path, class: "edge", "marker-end": "url(#arrow)", dataset: { from: d, to: n } }));
    }
  }
  const highlight = (n, on) => {
    svg.classList.toggle("dim", on);
    for (const e of svg.querySelectorAll("path.edge")) {
      e.classList.toggle("hl", on && (e.dataset.from === n || e.dataset.to === n));
    }
  };
  for (const n of Object.keys(deps)) {
    const { x, y } = at(n);
    const st = states[n] || "none";
    const g = s(
      "g",
      { class: `task st-${st}${n === selected ? " selected" : ""}`, transform: `translate(${x},${y})`, dataset: { task: n, state: st }, tabindex: onPick ? 0 : null, role: onPick ? "button" : null, "aria-label": `${n}: ${st}` },
      s("rect", { width: W, height: H, rx: 6 }),
      s("text", { x: 10, y: 17, class: "task-name" }, n.length > 18 ? `${n.slice(0, 17)}…` : n),
      s("text", { x: 10, y: 32, class: "task-state" }, st === "none" ? "" : st.replace("_", " ")),
      s("title", null, `${n}: ${st}`),
    );
    g.addEventListener("mouseenter", () => highlight(n, true));
    g.addEventListener("mouseleave", () => highlight(n, false));
    g.addEventListener("focus", () => highlight(n, true));
    g.addEventListener("blur", () => highlight(n, false));
    if (onPick) {
      g.addEventListener("click", () => onPick(n));
      g.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onPick(n); } });
    }
    svg.append(g);
  }
  return svg;
}
