// A workflow's DAG as SVG: layered layout by longest path from the roots (pure), then drawing.
import { s } from "./dom.js";

// Pure: {task: [dependencies]} -> {layers: [[task…]…], pos: {task: {x, y}}} (x = layer, y = row).
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
  const layers = [];
  for (const n of names) (layers[depth[n]] ||= []).push(n);
  // order each layer by the mean row of its dependencies (fewer crossings), then by name
  const pos = {};
  layers.forEach((layer, x) => {
    const key = (n) => {
      const rows = (deps[n] || []).map((d) => pos[d]?.y).filter((v) => v !== undefined);
      return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : 0;
    };
    layer.sort((a, b) => key(a) - key(b) || a.localeCompare(b));
    layer.forEach((n, y) => (pos[n] = { x, y }));
  });
  return { layers, pos };
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
  const { layers, pos } = layout(deps);
  const rows = Math.max(1, ...layers.map((l) => l.length));
  const width = layers.length * (W + GX) - GX + 20;
  const height = rows * (H + GY) - GY + 20;
  const at = (n) => ({ x: 10 + pos[n].x * (W + GX), y: 10 + pos[n].y * (H + GY) });
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "dag", role: "group", "aria-label": `Graph of ${spec.name}` });
  svg.append(s("defs", null, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }))));
  for (const [n, ds] of Object.entries(deps)) {
    for (const d of ds) {
      const a = at(d), b = at(n);
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
      svg.append(s("path", { d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`, class: "edge", "marker-end": "url(#arrow)" }));
    }
  }
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
    if (onPick) {
      g.addEventListener("click", () => onPick(n));
      g.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onPick(n); } });
    }
    svg.append(g);
  }
  return svg;
}
