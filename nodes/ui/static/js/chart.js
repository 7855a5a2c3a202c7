// A stacked bar chart of runs by status over time, drawn as SVG (no library).
import { h, s } from "./dom.js";

export const STATUSES = ["succeeded", "failed", "timed_out", "cancelled", "lost", "skipped"];

// Pure: count runs per (bucket, status); buckets end at ``now`` and cover ``span`` ms.
export function bucketRuns(runs, now, span, count) {
  const size = span / count;
  const start = now - span;
  const buckets = Array.from({ length: count }, (_, i) => ({
    start: start + i * size,
    counts: Object.fromEntries(STATUSES.map((st) => [st, 0])),
  }));
  for (const run of runs) {
    if (!STATUSES.includes(run.status)) continue;
    const at = Date.parse(run.finished_at || run.created_at);
    const i = Math.floor((at - start) / size);
    if (i >= 0 && i < count) buckets[i].counts[run.status] += 1;
  }
  return buckets;
}

export function runsChart(buckets, label, width = 1000) {
  const W = Math.max(300, width), H = W < 600 ? 140 : 180, pad = 28, bw = (W - pad) / buckets.length;
  const every = Math.ceil(buckets.length / Math.max(2, Math.floor(W / 140)));
  const max = Math.max(1, ...buckets.map((b) => STATUSES.reduce((n, st) => n + b.counts[st], 0)));
  const svg = s("svg", { viewBox: `0 0 ${W} ${H + 20}`, class: "chart", role: "img", "aria-label": label });
  svg.append(s("text", { x: 0, y: 12, class: "axis" }, String(max)));
  svg.append(s("line", { x1: pad, x2: W, y1: H, y2: H, class: "axis-line" }));
  buckets.forEach((b, i) => {
    let y = H;
    const when = new Date(b.start);
    for (const st of STATUSES) {
      const n = b.counts[st];
      if (!n) continue;
      const bh = (n / max) * (H - 16);
      y -= bh;
      svg.append(
        s(
          "rect",
          { x: pad + i * bw + 1, y, width: Math.max(1, bw - 2), height: bh, class: `bar st-${st}` },
          s("title", null, `${when.toLocaleString()}: ${n} ${st.replace("_", " ")}`),
        ),
      );
    }
    if (i % every === 0) {
      const text = buckets.length > 24 ? when.toLocaleDateString() : `${when.getHours()}:00`;
      svg.append(s("text", { x: pad + i * bw, y: H + 16, class: "axis" }, text));
    }
  });
  const legend = h(
    "ul",
    { class: "legend" },
    STATUSES.map((st) => h("li", null, h("span", { class: `swatch st-${st}` }), st.replace("_", " "))),
  );
  return h("figure", { class: "chart-box" }, svg, legend);
}
