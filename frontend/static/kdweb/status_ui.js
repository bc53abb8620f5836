// Status badges and progress bars (partials/status_badge.html, partials/progress.html) updated from a
// `status` event (jobs/live/events.py StatusEvent), for the run page (live.js) and the runs list (runs_live.js);
// plus the reconnecting socket both use.

export { FINISHED, LIVE } from "./vocabulary.js";
export const REFUSED = {
  4403: "Live view refused: you are logged out. Reload the page after logging in.",
  4404: "Live view refused: this run is not visible to you any more.",
};
const MIN_DELAY_MS = 1000;
const MAX_DELAY_MS = 30000;

/** `3 h 05 min`, `4 min 10 s`, `12 s`; empty when unknown (views.eta_text). */
export function etaText(seconds) {
  if (seconds === null || seconds === undefined || seconds < 0) return "";
  const s = Math.round(seconds);
  const pad = (n) => String(n).padStart(2, "0");
  if (s >= 3600) return `${Math.floor(s / 3600)} h ${pad(Math.floor((s % 3600) / 60))} min`;
  if (s >= 60) return `${Math.floor(s / 60)} min ${pad(s % 60)} s`;
  return `${s} s`;
}

export function statusLabel(status) {
  return status.charAt(0).toUpperCase() + status.slice(1);
}

export function setBadge(badge, status) {
  badge.className = `badge status-${status}`;
  badge.textContent = statusLabel(status);
}

/** What a running run does: `training`, or a phase of the finish with its share, e.g. `measuring 40 %`
 * (the template's Phase cell, partials/run_status.html). */
export function phaseText({ phase, phase_progress: share = 0 }) {
  if (!phase) return "starting";
  return phase === "training" ? phase : `${phase} ${Math.round(share * 100)} %`;
}

/** What a run asked to cancel does next: training stops at a step, the teacher-output cache's build and the
 * finish (evaluation, latency, export) at their next unit of work, the finish keeping the final checkpoint. Same words as partials/run_status.html. */
export function cancellingText(phase) {
  if (!phase || phase === "training") return "Cancelling… the run stops at its next step, with a checkpoint.";
  if (phase === "caching") {
    return "Cancelling… caching the teacher's outputs stops at its next batch; a resume starts it again.";
  }
  return `Cancelling… ${phase} stops at its next batch; the trained model stays in the final checkpoint (a resume redoes only the finish).`;
}

/** The progress cell inside `root` (bar, percentage, ETA while running). */
export function setProgress(root, { status, progress, eta_s: eta }) {
  const pct = Math.round(Math.min(Math.max(progress, 0), 1) * 100);
  const bar = root.querySelector(".progress");
  if (bar) {
    bar.className = `progress status-${status}`;
    bar.setAttribute("aria-valuenow", String(pct));
    const fill = bar.querySelector("span");
    if (fill) fill.style.width = `${pct}%`;
  }
  const pctEl = root.querySelector(".pct");
  if (pctEl) pctEl.textContent = `${pct}%`;
  let etaEl = root.querySelector(".eta");
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
}

/**
 * A websocket that reconnects with exponential backoff (1 s doubling to 30 s, with jitter) until
 * `stop()`; close codes 4403/4404 (refusals, jobs/live/consumers.py) stop it for good.
 * Callbacks: url() -> string (asked at every attempt), onMessage(message), onOpen(socket, isReconnect),
 * onDown(waitMs) when a connection is lost and the next try is scheduled, onRefused(code, text).
 */
export class ReconnectingSocket {
  constructor({ url, onMessage, onOpen = () => {}, onDown = () => {}, onRefused = () => {} }) {
    Object.assign(this, { url, onMessage, onOpen, onDown, onRefused });
    this.delay = MIN_DELAY_MS;
    this.stopped = false;
    this.opened = 0; // connections that opened so far
    this.connect();
  }

  connect() {
    const socket = new WebSocket(this.url());
    this.socket = socket;
    socket.addEventListener("open", () => {
      if (this.socket !== socket) return;
      this.onOpen(socket, this.opened++ > 0);
    });
    socket.addEventListener("message", (e) => {
      if (this.socket !== socket || this.stopped) return;
      this.onMessage(JSON.parse(e.data));
    });
    socket.addEventListener("close", (e) => {
      if (this.socket !== socket || this.stopped) return;
      if (REFUSED[e.code]) {
        this.stopped = true;
        this.onRefused(e.code, REFUSED[e.code]);
        return;
      }
      const wait = Math.min(this.delay, MAX_DELAY_MS) * (0.8 + Math.random() * 0.4);
      this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
      this.onDown(wait);
      this.timer = window.setTimeout(() => this.connect(), wait);
    });
  }

  /** The connection works (its first message came): the next loss starts the backoff from 1 s again. */
  healthy() {
    this.delay = MIN_DELAY_MS;
  }

  stop() {
    this.stopped = true;
    window.clearTimeout(this.timer);
    const socket = this.socket;
    if (!socket) return;
    // closing a socket that is still connecting makes the browser log an error: close it once open
    if (socket.readyState === WebSocket.CONNECTING) socket.addEventListener("open", () => socket.close());
    else if (socket.readyState === WebSocket.OPEN) socket.close();
  }
}
