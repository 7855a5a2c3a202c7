// The log of one run attempt: streams live while the run runs, stdout and stderr told apart.
//
// Live: EventSource on `…/logs?follow=1` (Server-Sent Events; each event's data is a JSON line
// {time, stream, text}, a raw frame {ts, stream, text}, or plain text; an "end" event closes it).
// If the node does not stream (the response is not text/event-stream, so EventSource fails before
// any message), it falls back to polling `…/logs?format=json` once a second. When the run is over,
// one final full read.
//
// A job that prints fast must not freeze the tab: arriving lines are queued and drawn once per
// animation frame (at most BATCH a frame), the page keeps only the last MAX_LINES lines (the full
// log is one click away: "Download"), and the scroll position is set once per frame.
import { ApiError, get, projectPath } from "./api.js";
import { clear, h } from "./dom.js";

export const MAX_LINES = 2000;
const BATCH = 2000;

// Pure: frames -> lines [{stream, text}] (a raw chunk carries its own newlines; a line frame not).
export function frameLines(frames) {
  const out = [];
  for (const f of frames) {
    const stream = f.stream === "stderr" ? "stderr" : f.stream === "cronmesh" ? "note" : "stdout";
    const text = String(f.text ?? "");
    if (f.time !== undefined) {
      out.push({ stream, text: text.endsWith("\n") ? text.slice(0, -1) : text });
      continue;
    }
    const parts = text.split("\n");
    if (parts.length > 1 && parts[parts.length - 1] === "") parts.pop();
    for (const part of parts) out.push({ stream, text: part });
  }
  return out;
}

export class LogView {
  constructor(project, runId) {
    this.project = project;
    this.runId = runId;
    this.attempt = null;
    this.count = 0;
    this.source = null;
    this.timer = null;
    this.streaming = false;
    this.queue = [];
    this.frame = null;
    this.lineNo = 0; // lines drawn (numbered from 1)
    this.dropped = 0; // lines drawn, then removed to keep the page light
    this.needle = "";
    this.pre = h("pre", { class: "log numbered", tabindex: "0", "aria-label": "Run log", "aria-live": "off" });
    this.follow = h("input", { type: "checkbox", checked: true });
    this.state = h("span", { class: "muted log-state" });
    this.hiddenNote = h("p", { class: "muted small log-hidden", hidden: true });
    this.search = h("input", { type: "search", class: "log-search", placeholder: "Search the log", "aria-label": "Search the log" });
    this.hits = h("span", { class: "muted small log-hits", "aria-live": "polite" });
    this.download = h("a", { class: "button secondary small", href: "#", download: `run-${runId}.log` }, "Download");
    this.toEnd = h("button", { type: "button", class: "secondary small", onclick: () => this.jumpToEnd() }, "Jump to end");
    this.search.addEventListener("input", () => this.find(this.search.value));
    this.search.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        this.nextHit();
      }
    });
    this.el = h(
      "div",
      { class: "logview" },
      h(
        "div",
        { class: "row small log-tools" },
        h("label", null, this.follow, " Auto-scroll"),
        this.state,
        this.search,
        this.hits,
        this.toEnd,
        this.download,
        h("span", { class: "legend-inline" }, h("span", { class: "stdout" }, "stdout"), " ", h("span", { class: "stderr" }, "stderr")),
      ),
      this.hiddenNote,
      this.pre,
    );
  }

  url(extra) {
    const qs = new URLSearchParams(extra);
    if (this.attempt) qs.set("attempt", String(this.attempt));
    return projectPath(this.project, `/runs/${encodeURIComponent(this.runId)}/logs?${qs}`);
  }

  // Called whenever the run's state is known: starts, keeps or stops the live view.
  update(run) {
    if (this.attempt !== run.attempt) {
      this.stop();
      this.attempt = run.attempt;
      this.count = 0;
      this.finished = false;
      this.streaming = false;
      this.reset();
      this.download.href = this.url({});
    }
    const live = run.status === "running";
    if (live && !this.source && !this.timer) this.startLive();
    if (!live && run.status !== "pending") {
      this.stop();
      this.finished = true;
      this.poll();
    }
  }

  startLive() {
    if (typeof EventSource === "undefined" || this.noStream) return this.startPolling();
    const source = new EventSource(this.url({ follow: "1" }));
    this.source = source;
    let got = false;
    source.onmessage = (e) => {
      got = true;
      this.streaming = true;
      this.state.textContent = "live";
      this.appendEvent(e.data);
    };
    source.addEventListener("end", () => this.stopStream());
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED || !got) {
        this.stopStream();
        if (!got) this.noStream = true;
        if (!this.finished) this.startPolling();
      }
    };
  }

  appendEvent(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      frame = { stream: "stdout", text: `${data}\n` };
    }
    if (typeof frame === "string") frame = { stream: "stdout", text: frame };
    const frames = Array.isArray(frame.frames) ? frame.frames : [frame];
    this.render(frames);
    this.count += frames.length;
  }

  startPolling() {
    this.state.textContent = "live (polling)";
    const tick = async () => {
      await this.poll();
      if (!this.finished) this.timer = setTimeout(tick, 1000);
    };
    this.timer = setTimeout(tick, 0);
  }

  async poll() {
    try {
      const data = await get(this.url({ format: "json" }));
      const fresh = data.frames.slice(this.streaming ? data.frames.length : this.count);
      if (this.streaming && this.finished) {
        this.reset();
        this.render(data.frames);
      } else {
        this.render(fresh);
      }
      this.count = data.frames.length;
      this.streaming = false;
      if (this.finished) {
        const n = frameLines(data.frames).length;
        this.state.textContent = n ? `${n} line(s)` : "no output";
      }
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) this.state.textContent = "no log yet";
      else this.state.textContent = err.message;
    }
  }

  reset() {
    this.queue = [];
    if (this.frame !== null) cancelAnimationFrame(this.frame);
    this.frame = null;
    this.lineNo = 0;
    this.dropped = 0;
    this.hiddenNote.hidden = true;
    clear(this.pre);
  }

  // Queue the frames; they are drawn on the next animation frame.
  render(frames) {
    if (!frames.length) return;
    for (const line of frameLines(frames)) this.queue.push(line);
    if (this.frame === null) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = null;
    const take = this.queue.splice(0, BATCH);
    const needle = this.needle;
    const frag = document.createDocumentFragment();
    for (const line of take) {
      this.lineNo += 1;
      const hit = needle && line.text.toLowerCase().includes(needle);
      frag.append(h("span", { class: hit ? `${line.stream} hit` : line.stream, dataset: { n: this.lineNo } }, `${line.text}\n`));
    }
    this.pre.append(frag);
    const extra = this.pre.childElementCount - MAX_LINES;
    if (extra > 0) {
      for (let i = 0; i < extra; i++) this.pre.firstElementChild.remove();
      this.dropped += extra;
      this.hiddenNote.hidden = false;
      this.hiddenNote.textContent = `${this.dropped} earlier line(s) are not shown here; "Download" has the whole log.`;
    }
    if (needle) this.countHits();
    if (this.follow.checked) this.pre.scrollTop = this.pre.scrollHeight;
    if (this.queue.length) this.frame = requestAnimationFrame(() => this.flush());
  }

  find(text) {
    this.needle = text.trim().toLowerCase();
    for (const el of this.pre.children) {
      el.classList.toggle("hit", Boolean(this.needle) && el.textContent.toLowerCase().includes(this.needle));
    }
    this.countHits();
    this.cursor = -1;
    if (this.needle) this.nextHit();
  }

  countHits() {
    const n = this.needle ? this.pre.querySelectorAll(".hit").length : 0;
    this.hits.textContent = this.needle ? `${n} match(es)` : "";
  }

  nextHit() {
    const all = [...this.pre.querySelectorAll(".hit")];
    if (!all.length) return;
    this.cursor = ((this.cursor ?? -1) + 1) % all.length;
    this.follow.checked = false;
    for (const el of this.pre.querySelectorAll(".current")) el.classList.remove("current");
    all[this.cursor].classList.add("current");
    all[this.cursor].scrollIntoView({ block: "center" });
  }

  jumpToEnd() {
    this.follow.checked = true;
    this.pre.scrollTop = this.pre.scrollHeight;
  }

  stopStream() {
    if (this.source) this.source.close();
    this.source = null;
  }

  stop() {
    this.stopStream();
    clearTimeout(this.timer);
    this.timer = null;
  }
}
