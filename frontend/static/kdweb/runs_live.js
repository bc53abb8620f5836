// The live runs list: a websocket to /ws/runs/ (jobs/live/consumers.py RunListConsumer) brings the status
// events of every run of the user's teams as they change (jobs/live/events.py StatusEvent).
// - each row (tr[data-run-id]) gets its badge and progress bar (with ETA) from the event at once;
// - when a run changes status (queued -> running -> succeeded, ...) its row is fetched again from this very
//   page's URL a moment later and swapped in, for what the event does not carry (host, accuracy): the page
//   is never reloaded;
// - an event of a run that is not listed (launched since the page loaded) shows a notice with a reload
//   link, unless filters are on (the run may just not match them);
// - a lost socket shows "reconnecting…" and retries with exponential backoff (status_ui.ReconnectingSocket);
//   after a reconnect every row is fetched again (events sent meanwhile are lost). 4403 stops the retries.
// window.kdwebRunsLive holds the state (events: status events received so far).

import { ReconnectingSocket, setBadge, setProgress } from "./status_ui.js";

const REFRESH_DELAY_MS = 600;

class LiveRunsList {
  constructor(stateEl) {
    this.stateEl = stateEl;
    this.filtered = stateEl.dataset.filtered === "true";
    this.pending = new Set(); // run ids whose rows are fetched again ("*": all of them)
    this.timer = null;
    this.events = 0; // status events received
    this.changedAt = new Map(); // run id -> this.events when its status last changed
    this.refreshes = 0;
    this.socket = new ReconnectingSocket({
      url: () => `${window.location.protocol === "https:" ? "wss" : "ws"}://${window.location.host}/ws/runs/`,
      onOpen: (_socket, reconnected) => {
        this.socket.healthy();
        this.show("connected", "Live: statuses and progress update as the runs go.");
        if (reconnected) this.refresh("*");
      },
      onMessage: (message) => this.onMessage(message),
      onDown: (wait) => this.show("reconnecting", `Reconnecting… (next try in ${Math.round(wait / 1000)} s)`),
      onRefused: (_code, text) => this.show("refused", text),
    });
  }

  show(state, text) {
    this.stateEl.className = `live-state runs-head-state ${state}`;
    this.stateEl.textContent = text;
  }

  row(runId) {
    return document.querySelector(`table.runs tbody tr[data-run-id="${runId}"]`);
  }

  onMessage(message) {
    if (message.type !== "status") return;
    this.events += 1;
    const row = this.row(message.run_id);
    if (!row) {
      // without filters the list shows every run of the user's teams: this one is new since the page loaded
      if (!this.filtered) this.notice();
      return;
    }
    const before = row.dataset.status;
    row.dataset.status = message.status;
    const badge = row.querySelector(".badge");
    if (badge) setBadge(badge, message.status);
    setProgress(row, message);
    if (before !== message.status) {
      this.changedAt.set(String(message.run_id), this.events);
      row.classList.remove("changed");
      void row.offsetWidth; // restart the highlight
      row.classList.add("changed");
      this.refresh(String(message.run_id));
    }
  }

  notice() {
    const notice = document.getElementById("runs-notice");
    if (notice) notice.hidden = false;
  }

  /** Fetch the rows of `runId` ("*": every row) again, soon, in one request for all asked meanwhile. */
  refresh(runId) {
    this.pending.add(runId);
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => this.fetchRows(), REFRESH_DELAY_MS);
  }

  async fetchRows() {
    const ids = this.pending;
    this.pending = new Set();
    const asked = this.events;
    let html;
    try {
      const response = await fetch(window.location.href, { headers: { Accept: "text/html" }, credentials: "same-origin" });
      if (!response.ok || response.redirected) return; // logged out, or an error page: keep what is shown
      html = await response.text();
    } catch {
      return; // the server is away: the socket says so as well, and a reconnect fetches every row
    }
    const fresh = new DOMParser().parseFromString(html, "text/html");
    const freshRows = new Map([...fresh.querySelectorAll("table.runs tbody tr[data-run-id]")].map((r) => [r.dataset.runId, r]));
    const all = ids.has("*");
    for (const [id, freshRow] of freshRows) {
      const row = this.row(id);
      if (!row) {
        if (all && !this.filtered) this.notice();
        continue;
      }
      if (!all && !ids.has(id)) continue;
      if ((this.changedAt.get(id) || 0) > asked) continue; // changed again meanwhile: fetched again soon
      const replacement = document.importNode(freshRow, true);
      if (row.classList.contains("changed")) replacement.classList.add("changed");
      row.replaceWith(replacement);
    }
    this.refreshes += 1;
  }
}

function start() {
  const stateEl = document.getElementById("runs-live");
  if (!stateEl || !("WebSocket" in window)) return;
  window.kdwebRunsLive = new LiveRunsList(stateEl);
}

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", start);
} else {
  start();
}
