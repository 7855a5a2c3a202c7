"""One PNG per scenario next to its JSON in bench/results/ (matplotlib, no display needed).

Each result document carries what its plot needs: a sample of latencies in ms
(``*_ms_sample``) and counts per second (``*_per_s`` / ``finished_per_second``). A document
without them gets no plot; a missing matplotlib (the ``bench`` extra) skips plotting with a note.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LATENCY_KEYS = {
    "start_lag_ms_sample": "tick → process started (ms)",
    "start_offset_ms_sample": "due instant → process started (ms)",
    "resume_after_kill_ms_sample": "leader killed → scheduling resumed (ms)",
    "edge_ms_sample": "upstream end → downstream start (ms)",
}
SERIES_KEYS = {
    "started_per_s": "processes started per second",
    "finished_per_second": "runs finished per second",
}


def _series(doc: dict[str, Any]) -> list[tuple[str, list[float]]]:
    """(label, values) of every per-second series in the document or its levels."""
    out = [(SERIES_KEYS[k], doc[k]) for k in SERIES_KEYS if doc.get(k)]
    for lv in doc.get("levels", []):
        for k, label in SERIES_KEYS.items():
            if lv.get(k):
                out.append((f"{lv.get('jobs', '?')} offered/s: {label}", lv[k]))
    return out


def _latencies(doc: dict[str, Any]) -> list[tuple[str, list[float]]]:
    out = [(LATENCY_KEYS[k], doc[k]) for k in LATENCY_KEYS if doc.get(k)]
    for part in ("chain", "fanout"):
        sub = doc.get(part)
        if isinstance(sub, dict) and sub.get("edge_ms_sample"):
            out.append((f"{part}: {LATENCY_KEYS['edge_ms_sample']}", sub["edge_ms_sample"]))
    return out


def plot(name: str, doc: dict[str, Any], folder: Path) -> Path | None:
    """Write ``folder/<name>.png``: latency distribution (CDF) and/or throughput over time."""
    latencies, series = _latencies(doc), _series(doc)
    if not latencies and not series:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"bench: no matplotlib (pip install -e '.[bench]'): no plot for {name}")
        return None
    panels = (1 if latencies else 0) + (1 if series else 0)
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4), squeeze=False)
    ax_iter = iter(axes[0])
    if latencies:
        ax = next(ax_iter)
        for label, values in latencies:
            xs = sorted(values)
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.step(xs, ys, where="post", label=f"{label} (n={len(xs)})")
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction ≤ x")
        ax.set_title(f"{name}: latency distribution")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if series:
        ax = next(ax_iter)
        for label, values in series:
            ax.plot(range(len(values)), values, marker=".", label=label)
        ax.set_xlabel("second of the window")
        ax.set_ylabel("per second")
        ax.set_title(f"{name}: throughput over time")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
