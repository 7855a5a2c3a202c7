// The log of one run attempt: streams live while the run runs, stdout and stderr told apart.
//
// Live: EventSource on `…/logs?follow=1` (Server-Sent Events; each event's data is a JSON line
// {time, stream, text}, a raw frame {ts, stream, text}, or plain text; an "end" event closes it). If the node does not stream (the
// response is not text/event-stream, so EventSource fails before any message), it falls back to
// polling `…/logs?format=json` once a second. When the run is over, one final full read.
import { ApiError, get, projectPath } from "./api.js";
import { clear, h } from "./dom.js";

export class LogView {
  constructor(project, runId) {
    this.project = project;
    this.runId = runId;
    this.attempt = null;
    this.count = 0;
    this.source = null;
    this.timer = null;
    this.streaming = false;
    this.pre = h("pre", { class: "log", tabindex: "0", "aria-label": "Run log", "aria-live": "off" });
    this.follow = h("input", { type: "checkbox", checked: true });
    this.state = h("span", { class: "muted log-state" });
    this.el = h(
      "div",
      { class: "logview" },
      h("div", { class: "row small" }, h("label", null, this.follow, " Auto-scroll"), this.state, h("span", { class: "legend-inline" }, h("span", { class: "stdout" }, "stdout"), " ", h("span", { class: "stderr" }, "stderr"))),
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
      clear(this.pre);
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
        clear(this.pre);
        this.render(data.frames);
      } else {
        this.render(fresh);
      }
      this.count = data.frames.length;
      this.streaming = false;
      if (this.finished) this.state.textContent = this.count ? `${this.count} line(s)` : "no output";
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) this.state.textContent = "no log yet";
      else this.state.textContent = err.message;
    }
  }

  render(frames) {
    if (!frames.length) return;
    for (const f of frames) {
      // raw chunks ({ts, stream, text}) carry their newlines; line frames ({time, stream, text}) do not
      const text = f.time !== undefined && !f.text.endsWith("\n") ? `${f.text}\n` : f.text;
      const cls = f.stream === "stderr" ? "stderr" : f.stream === "cronmesh" ? "note" : "stdout";
      this.pre.append(h("span", { class: cls }, text));
    }
    if (this.follow.checked) this.pre.scrollTop = this.pre.scrollHeight;
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
