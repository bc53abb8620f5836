// The live view of a queued or running run: a websocket to /ws/runs/<id>/ (jobs/live/consumers.py RunConsumer,
// messages of jobs/live/events.py), or the one #live-state names in data-socket (a public page: PublicRunConsumer). The page starts with the stored series (embedded, the same downsampled
// backfill the socket sends) and the log tail, and asks the socket only for the points after the last step
// it has (?after=<step>), again after every reconnect.
// - backfill and metrics messages extend the charts (charts.js RunCharts.extend); points at or before the
//   last step already drawn for their series are dropped (a point may come both in a backfill and live);
// - the backfill's log replaces the log panel, log messages append to it (logtail.js);
// - status messages update the status block (badge, progress bar, ETA, step) and show "cancelling…" once a
//   cancel is requested; a change between queued and running refreshes the status block (its notes, host,
//   start time) from the server; a run that stops reloads the page for its results;
// - a lost socket shows "reconnecting…" and retries with exponential backoff (status_ui.ReconnectingSocket);
//   codes 4403/4404 (not logged in, no such run) stop the retries.
// While the socket is not connected, the htmx polling of the status block (partials/run_status.html) runs:
// the listener at the end cancels each poll while window.kdwebLiveConnected (not a trigger filter, [...],
// which htmx evaluates as code: the Content-Security-Policy allows no eval).
// State for tests and curious users: window.kdwebLive (seriesLast, lastStep, status), and the data
// attributes of #charts (charts.js) and #run-log (data-lines).

import { startLogTail } from "./logtail.js";
import { FINISHED, ReconnectingSocket, cancellingText, phaseText, setBadge, setProgress } from "./status_ui.js";

class LiveRun {
  constructor(stateEl, charts, log) {
    this.stateEl = stateEl;
    this.charts = charts;
    this.log = log;
    this.runId = stateEl.dataset.run;
    // a public page (jobs/public.py) names its own socket, /ws/public/<token>/
    this.socketPath = stateEl.dataset.socket || `/ws/runs/${this.runId}/`;
    this.lastStep = Number(stateEl.dataset.lastStep || 0); // last step the page has, over every series
    this.seriesLast = new Map(); // name -> last step drawn
    const embedded = document.getElementById("run-series");
    for (const [name, points] of Object.entries(embedded ? JSON.parse(embedded.textContent) : {})) {
      if (points.length) this.seriesLast.set(name, points[points.length - 1][0]);
    }
    const block = document.getElementById("run-status");
    this.status = block ? block.dataset.status : undefined;
    this.phase = block ? block.dataset.phase : undefined;
    this.cancelling = Boolean(document.querySelector('#run-status [data-live="cancelling"]'));
    this.lastStatus = null;
    dropQueuedNotice(this.status);
    this.watchCancelForm();
    document.body.addEventListener("htmx:afterSettle", () => this.afterSwap());
    this.socket = new ReconnectingSocket({
      url: () => this.url(),
      onMessage: (message) => this.onMessage(message),
      onDown: (wait) => {
        window.kdwebLiveConnected = false;
        this.show("reconnecting", `Reconnecting… (next try in ${Math.round(wait / 1000)} s; the status is polled meanwhile)`);
      },
      onRefused: (_code, text) => {
        window.kdwebLiveConnected = false;
        this.show("refused", text);
      },
    });
  }

  url() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const after = this.lastStep > 0 ? `?after=${this.lastStep}` : "";
    return `${scheme}://${window.location.host}${this.socketPath}${after}`;
  }

  show(state, text) {
    this.stateEl.className = `live-state ${state}`;
    this.stateEl.textContent = text;
  }

  onMessage(message) {
    switch (message.type) {
      case "backfill": {
        // the first message of every connection: the socket works
        this.socket.healthy();
        window.kdwebLiveConnected = true;
        this.show("connected", "Live");
        const points = [];
        for (const [name, pts] of Object.entries(message.series)) {
          for (const [step, value] of pts) points.push({ name, step, value });
        }
        this.extend(points);
        this.lastStep = Math.max(this.lastStep, message.last_step);
        if (this.log) this.log.replace(message.log, message.log_last_id);
        break;
      }
      case "metrics":
        this.extend(message.points);
        break;
      case "status":
        this.updateStatus(message);
        break;
      case "log":
        if (this.log) this.log.append(message.lines, message.ids);
        break;
      default:
        break;
    }
  }

  extend(points) {
    const fresh = [];
    for (const p of [...points].sort((a, b) => a.step - b.step)) {
      if (p.step <= (this.seriesLast.get(p.name) ?? -Infinity)) continue;
      this.seriesLast.set(p.name, p.step);
      this.lastStep = Math.max(this.lastStep, p.step);
      fresh.push(p);
    }
    if (fresh.length && this.charts) this.charts.extend(fresh);
  }

  /** Points per series on the page (charts.js counts them). */
  pointCounts() {
    return this.charts ? this.charts.pointCounts() : {};
  }

  watchCancelForm() {
    // one click is enough: the button waits for the answer disabled
    document.body.addEventListener("submit", (e) => {
      const button = e.target.querySelector && e.target.querySelector('button[data-action="cancel"]');
      if (button) window.setTimeout(() => (button.disabled = true), 0);
    });
  }

  /** The "cancelling…" state: a note, and the cancel button disabled (the run stops at its next step). */
  showCancelling() {
    const block = document.getElementById("run-status");
    if (!block) return;
    const button = block.querySelector('button[data-action="cancel"]');
    if (button) {
      button.disabled = true;
      button.textContent = "Cancelling…";
    }
    let note = block.querySelector('[data-live="cancelling"]');
    if (!note) {
      note = document.createElement("p");
      note.className = "note cancelling";
      note.dataset.live = "cancelling";
      const actions = block.querySelector(".run-actions");
      block.insertBefore(note, actions || block.querySelector(".run-error"));
    }
    note.textContent = cancellingText(this.phase);
  }

  afterSwap() {
    // the status block came again from the server (htmx): what the socket said since may be newer
    const block = document.getElementById("run-status");
    if (block) dropQueuedNotice(block.dataset.status);
    if (!block || !this.lastStatus || this.lastStatus.status !== block.dataset.status) return;
    const rendered = parseInt(block.querySelector('[data-live="step"]')?.textContent || "0", 10) || 0;
    if ((this.lastStatus.step ?? 0) > rendered) this.applyStatus(this.lastStatus);
    else if (this.cancelling && this.status === "running") this.showCancelling();
  }

  applyStatus(message) {
    const { status, step, total_steps: total } = message;
    for (const badge of document.querySelectorAll("h1 .badge, #run-status .badge")) setBadge(badge, status);
    const block = document.getElementById("run-status");
    if (!block) return;
    setProgress(block, message);
    const stepEl = block.querySelector('[data-live="step"]');
    if (stepEl && step !== undefined) stepEl.textContent = total ? `${step} / ${total}` : String(step);
    const phaseEl = block.querySelector('[data-live="phase"]');
    if (message.phase !== undefined) this.phase = message.phase;
    if (phaseEl && message.phase !== undefined) phaseEl.textContent = phaseText(message);
    if (status !== "queued") block.querySelector('[data-live="queued"]')?.remove();
    dropQueuedNotice(status);
    if (this.cancelling && status === "running") this.showCancelling();
  }

  updateStatus(message) {
    const { status } = message;
    const changed = status !== this.status;
    // a cancel holds until the run stops: the worker's own status messages say so only once it has read
    // the flag (at its next flush or heartbeat), a moment after the service's message
    if (status !== "running") this.cancelling = false;
    else if (message.cancel_requested) this.cancelling = true;
    this.status = status;
    this.lastStatus = message;
    this.applyStatus(message);
    if (FINISHED.has(status)) {
      // the results, the artifacts and the final curves are on the page as rendered after the run
      window.kdwebLiveConnected = false;
      this.socket.stop();
      this.show("finished", "The run stopped: loading its results…");
      window.location.reload();
      return;
    }
    if (changed && window.htmx && document.getElementById("run-status")) {
      // queued <-> running: the notes, the host and the start time come from the server
      refreshing = true; // htmx issues the request (and its htmx:beforeRequest) before ajax() returns
      window.htmx.ajax("GET", `${window.location.pathname}?partial=status`, { target: "#run-status", swap: "outerHTML" });
      refreshing = false;
    }
  }
}

/** The launch message ("… is queued on default", jobs/wizard/review.py QUEUED_NOTICE) says nothing true once
 * the run has left the queue. */
function dropQueuedNotice(status) {
  if (status && status !== "queued") for (const flash of document.querySelectorAll(".flash.queued-notice")) flash.remove();
}

let refreshing = false; // a refresh of the status block that LiveRun asks for: never cancelled

document.addEventListener("htmx:beforeRequest", (event) => {
  if (window.kdwebLiveConnected && !refreshing && event.detail.elt.id === "run-status") event.preventDefault();
});

function start() {
  const stateEl = document.getElementById("live-state");
  if (!stateEl || !("WebSocket" in window)) return;
  const charts = document.getElementById("charts");
  window.kdwebLive = new LiveRun(stateEl, charts ? charts.runCharts : null, startLogTail());
}

// charts.js (a module before this one) has built container.runCharts by now
if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", start);
} else {
  start();
}
