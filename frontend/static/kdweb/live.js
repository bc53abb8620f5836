// The live view of a running run: a websocket to /ws/runs/<id>/ (jobs/consumers.py, messages of DESIGN §8).
// The page starts with the stored series (embedded, the same downsampled backfill the socket sends) and asks
// the socket only for the points after the last step it has (?after=<step>), again after every reconnect.
// - backfill and metrics messages extend the charts (charts.js RunCharts.extend); points at or before the
//   last step already drawn for their series are dropped (a point may come both in a backfill and live);
// - status messages update the status block (badge, progress bar, ETA, step); a run that stops reloads
//   the page for its results;
// - a lost socket shows "reconnecting…" and retries with exponential backoff (1 s doubling to 30 s, with
//   jitter); codes 4403/4404 (not logged in, no such run) stop the retries.
// While the socket is not connected, the htmx polling of the status block (partials/run_status.html) runs:
// it reads window.kdwebLiveConnected.

const FINISHED = new Set(["succeeded", "failed", "cancelled", "interrupted"]);
const REFUSED = { 4403: "Live view refused: you are logged out. Reload the page after logging in.", 4404: "Live view refused: this run is not visible to you any more." };
const MIN_DELAY_MS = 1000;
const MAX_DELAY_MS = 30000;

function etaText(seconds) {
  if (seconds === null || seconds === undefined || seconds < 0) return "";
  const s = Math.round(seconds);
  const pad = (n) => String(n).padStart(2, "0");
  if (s >= 3600) return `${Math.floor(s / 3600)} h ${pad(Math.floor((s % 3600) / 60))} min`;
  if (s >= 60) return `${Math.floor(s / 60)} min ${pad(s % 60)} s`;
  return `${s} s`;
}

class LiveRun {
  constructor(stateEl, charts) {
    this.stateEl = stateEl;
    this.charts = charts;
    this.runId = stateEl.dataset.run;
    this.lastStep = Number(stateEl.dataset.lastStep || 0); // last step the page has, over every series
    this.seriesLast = new Map(); // name -> last step drawn
    const embedded = document.getElementById("run-series");
    for (const [name, points] of Object.entries(embedded ? JSON.parse(embedded.textContent) : {})) {
      if (points.length) this.seriesLast.set(name, points[points.length - 1][0]);
    }
    this.delay = MIN_DELAY_MS;
    this.stopped = false;
    this.connect();
  }

  url() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const after = this.lastStep > 0 ? `?after=${this.lastStep}` : "";
    return `${scheme}://${window.location.host}/ws/runs/${this.runId}/${after}`;
  }

  show(state, text) {
    this.stateEl.className = `live-state ${state}`;
    this.stateEl.textContent = text;
  }

  connect() {
    const socket = new WebSocket(this.url());
    this.socket = socket;
    socket.addEventListener("message", (e) => {
      if (this.socket !== socket) return;
      this.onMessage(JSON.parse(e.data));
    });
    socket.addEventListener("close", (e) => {
      if (this.socket !== socket) return;
      window.kdwebLiveConnected = false;
      if (this.stopped) return;
      if (REFUSED[e.code]) {
        this.stopped = true;
        this.show("refused", REFUSED[e.code]);
        return;
      }
      const wait = Math.min(this.delay, MAX_DELAY_MS) * (0.8 + Math.random() * 0.4);
      this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
      this.show("reconnecting", `Reconnecting… (next try in ${Math.round(wait / 1000)} s; the status is polled meanwhile)`);
      window.setTimeout(() => this.connect(), wait);
    });
  }

  onMessage(message) {
    switch (message.type) {
      case "backfill": {
        // the first message of every connection: the socket works
        this.delay = MIN_DELAY_MS;
        window.kdwebLiveConnected = true;
        this.show("connected", "Live");
        const points = [];
        for (const [name, pts] of Object.entries(message.series)) {
          for (const [step, value] of pts) points.push({ name, step, value });
        }
        this.extend(points);
        this.lastStep = Math.max(this.lastStep, message.last_step);
        break;
      }
      case "metrics":
        this.extend(message.points);
        break;
      case "status":
        this.updateStatus(message);
        break;
      case "log":
        break; // the log tail of the page comes with a later slice
      default:
        break;
    }
  }

  extend(points) {
    const fresh = points.filter((p) => p.step > (this.seriesLast.get(p.name) ?? -Infinity));
    if (!fresh.length) return;
    fresh.sort((a, b) => a.step - b.step);
    for (const p of fresh) {
      this.seriesLast.set(p.name, p.step);
      this.lastStep = Math.max(this.lastStep, p.step);
    }
    if (this.charts) this.charts.extend(fresh);
  }

  updateStatus({ status, progress, eta_s: eta, step, total_steps: total }) {
    const block = document.getElementById("run-status");
    const label = status.charAt(0).toUpperCase() + status.slice(1);
    for (const badge of document.querySelectorAll("h1 .badge, #run-status .badge")) {
      badge.className = `badge status-${status}`;
      badge.textContent = label;
    }
    if (block) {
      const pct = Math.round(Math.min(Math.max(progress, 0), 1) * 100);
      const bar = block.querySelector(".progress");
      if (bar) {
        bar.className = `progress status-${status}`;
        bar.setAttribute("aria-valuenow", String(pct));
        bar.querySelector("span").style.width = `${pct}%`;
      }
      const pctEl = block.querySelector(".pct");
      if (pctEl) pctEl.textContent = `${pct}%`;
      let etaEl = block.querySelector(".eta");
      const text = status === "running" ? etaText(eta) : "";
      if (text && !etaEl && pctEl) {
        etaEl = document.createElement("span");
        etaEl.className = "eta";
        pctEl.after(" ", etaEl);
      }
      if (etaEl) {
        etaEl.textContent = text ? `ETA ${text}` : "";
        etaEl.hidden = !text;
      }
      const stepEl = block.querySelector('[data-live="step"]');
      if (stepEl && step !== undefined) stepEl.textContent = total ? `${step} / ${total}` : String(step);
    }
    if (FINISHED.has(status)) {
      // the results, the artifacts and the final curves are on the page as rendered after the run
      this.stopped = true;
      this.socket.close();
      window.location.reload();
    }
  }
}

function start() {
  const stateEl = document.getElementById("live-state");
  if (!stateEl || !("WebSocket" in window)) return;
  const charts = document.getElementById("charts");
  window.kdwebLive = new LiveRun(stateEl, charts ? charts.runCharts : null);
}

// charts.js (a module before this one) has built container.runCharts by now
if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", start);
} else {
  start();
}
