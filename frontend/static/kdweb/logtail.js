// The log panel of the run page (#run-log, pre-rendered from the view's log_tail): one .log-line per line,
// at most LOG_MAX_LINES, following the end while the reader is there. live.js feeds it the socket's lines;
// on a finished run it only starts at the end. data-lines holds the number of lines shown.

const LOG_MAX_LINES = 500;

export class LogTail {
  constructor(el) {
    this.el = el;
    this.lastId = 0; // the id of the newest line shown (the backfill's log_last_id, then live lines')
    this.scrollToEnd();
    this.publish();
  }

  atEnd() {
    return this.el.scrollHeight - this.el.scrollTop - this.el.clientHeight < 8;
  }

  scrollToEnd() {
    this.el.scrollTop = this.el.scrollHeight;
  }

  lines() {
    return [...this.el.querySelectorAll(".log-line")].map((line) => line.textContent);
  }

  publish() {
    const count = this.el.querySelectorAll(".log-line").length;
    this.el.dataset.lines = String(count);
    const empty = this.el.querySelector(".log-empty");
    if (empty) empty.hidden = count > 0;
  }

  add(lines) {
    const follow = this.atEnd();
    const fragment = document.createDocumentFragment();
    for (const text of lines) {
      const line = document.createElement("div");
      line.className = "log-line";
      line.textContent = text;
      fragment.append(line);
    }
    this.el.append(fragment);
    const all = this.el.querySelectorAll(".log-line");
    for (let i = 0; i < all.length - LOG_MAX_LINES; i++) all[i].remove();
    this.publish();
    if (follow) this.scrollToEnd();
  }

  /** The backfill's tail replaces the panel (it is what the database has, the page's may be older). */
  replace(lines, lastId) {
    const follow = this.atEnd();
    for (const line of this.el.querySelectorAll(".log-line")) line.remove();
    this.add(lines);
    this.lastId = lastId;
    if (follow) this.scrollToEnd();
  }

  /**
   * New lines with their ids. The consumer joins the run's group before it reads the tail it sends, so
   * the first log messages after a backfill may carry lines the tail has: those have ids up to its last.
   */
  append(lines, ids) {
    const fresh = lines.filter((_, i) => ids[i] > this.lastId);
    if (ids.length) this.lastId = Math.max(this.lastId, ...ids);
    this.add(fresh);
  }
}

/** The panel's LogTail (made once), or null on a page without one. */
export function startLogTail() {
  const el = document.getElementById("run-log");
  if (!el) return null;
  if (!el.logTail) el.logTail = new LogTail(el);
  return el.logTail;
}

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", startLogTail);
} else {
  startLogTail();
}
