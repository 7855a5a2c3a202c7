// A Gantt-like timeline of an execution: one bar per task from its start to its end (or now).
import { h, s } from "./dom.js";

export function drawTimeline(execution, order) {
  const tasks = order.map((n) => [n, execution.tasks[n]]).filter(([, t]) => t && t.started_at);
  if (!tasks.length) return h("p", { class: "muted" }, "No task has started yet.");
  const now = Date.now();
  const t0 = Math.min(...tasks.map(([, t]) => Date.parse(t.started_at)));
  const t1 = Math.max(...tasks.map(([, t]) => (t.finished_at ? Date.parse(t.finished_at) : now)), t0 + 1000);
  const L = 140, W = 720, R = 16, rowH = 24;
  const x = (ms) => L + ((ms - t0) / (t1 - t0)) * (W - L - R);
  const svg = s("svg", { viewBox: `0 0 ${W} ${tasks.length * rowH + 24}`, class: "timeline", role: "img", "aria-label": "Timeline of the execution's tasks" });
  tasks.forEach(([n, t], i) => {
    const a = Date.parse(t.started_at), b = t.finished_at ? Date.parse(t.finished_at) : now;
    const y = i * rowH + 4;
    svg.append(
      s("text", { x: 0, y: y + 14, class: "axis" }, n.length > 18 ? `${n.slice(0, 17)}…` : n),
      s("rect", { x: x(a), y, width: Math.max(2, x(b) - x(a)), height: rowH - 8, rx: 3, class: `bar st-${t.status}` }, s("title", null, `${n}: ${t.status}, ${((b - a) / 1000).toFixed(1)} s`)),
    );
  });
  const total = (t1 - t0) / 1000;
  svg.append(
    s("text", { x: L, y: tasks.length * rowH + 18, class: "axis" }, "0 s"),
    s("text", { x: W - R, y: tasks.length * rowH + 18, class: "axis end" }, `${total.toFixed(1)} s`),
  );
  return svg;
}
