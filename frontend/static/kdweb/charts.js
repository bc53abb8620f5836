// Curves of a run, drawn with Plotly (served from static files, loaded as a classic script).
// - one chart per loss term (loss/total, loss/task, loss/output, loss/feature, loss/attention), unweighted;
// - one stacked-area chart of the weighted share of each term in the total (every share/* series; they
//   sum to 1 at each step, and exist only when two or more terms are weighted);
// - one chart for the validation perplexity of a language model (val/perplexity, on a log axis: it falls by
//   orders of magnitude), and one for the other validation metrics (every other val/* series together);
// - one per any other series (e.g. lr).
// The page embeds the stored series as {"name": [[step, value], ...]} with Django's json_script;
// `RunCharts.extend` takes live points ({name, step, value}) from live.js.
//
// What the page holds is readable without Plotly: #charts carries data-counts (JSON, series name -> number
// of points drawn) and data-last-step; each chart carries data-group, data-series (its series names,
// space-separated) and data-points (its number of points). The browser tests read them.

import { LOSS_ORDER, LOSS_TITLES, TERMS } from "./vocabulary.js";

const TITLES = {
  ...LOSS_TITLES,
  share: "Weighted share of each term in the total",
  val: "Validation metrics",
  perplexity: "Validation perplexity (lower is better)",
  lr: "Learning rate",
};
// one colour per loss term (by its place in the engine's order), the same in its own chart and in the share chart
const PALETTE = ["#2856c9", "#d9822b", "#137a3a", "#8e44ad", "#2a9d8f", "#b5179e"];
const TOTAL_COLOR = "#1d2330";
function termColor(term) {
  if (term === "total") return TOTAL_COLOR;
  const i = TERMS.indexOf(term);
  return i < 0 ? undefined : PALETTE[i % PALETTE.length];
}

export function groupOf(name) {
  if (name === "val/perplexity") return "perplexity";
  if (name.startsWith("val/")) return "val";
  if (name.startsWith("share/")) return "share";
  return name;
}

function rank(group) {
  const i = LOSS_ORDER.indexOf(group);
  if (i >= 0) return [0, i, group];
  if (group.startsWith("loss/")) return [1, 0, group];
  if (group === "share") return [2, 0, group];
  if (group === "val" || group === "perplexity") return [3, 0, group];
  return [4, 0, group];
}

function compareGroups(a, b) {
  const [ra, rb] = [rank(a), rank(b)];
  for (let i = 0; i < 3; i++) {
    if (ra[i] < rb[i]) return -1;
    if (ra[i] > rb[i]) return 1;
  }
  return 0;
}

function compareMembers(group) {
  if (group !== "share") return (a, b) => (a < b ? -1 : a > b ? 1 : 0);
  // the stack follows the order of the terms in the loss, bottom to top
  const at = (name) => {
    const i = TERMS.indexOf(name.slice(6));
    return i < 0 ? TERMS.length : i;
  };
  return (a, b) => at(a) - at(b) || (a < b ? -1 : a > b ? 1 : 0);
}

function label(group, name) {
  if (group === "val") return name.slice(4);
  if (group === "share") return name.slice(6);
  return name;
}

function traceOf(group, name, points) {
  const x = points.map((p) => p[0]);
  const y = points.map((p) => p[1]);
  const trace = { x, y, name: label(group, name), type: "scatter" };
  if (group === "share") {
    const color = termColor(name.slice(6));
    return {
      ...trace,
      mode: "lines",
      stackgroup: "share",
      line: { width: 0.5, ...(color ? { color } : {}) },
      hovertemplate: "%{y:.1%}",
    };
  }
  if (group === "val" || group === "perplexity") return { ...trace, mode: "lines+markers", marker: { size: 5 } };
  const color = termColor(name.startsWith("loss/") ? name.slice(5) : "");
  return { ...trace, mode: points.length > 1 ? "lines" : "markers", ...(color ? { line: { color }, marker: { color } } : {}) };
}

function layoutOf(group) {
  const legend = group === "val" || group === "share";
  const layout = {
    title: { text: TITLES[group] || group, font: { size: 14 } },
    height: legend ? 300 : 260,
    margin: { l: 55, r: 15, t: 40, b: legend ? 80 : 40 },
    xaxis: { title: { text: "step" } },
    yaxis: { exponentformat: "power" },
    showlegend: legend,
    legend: { orientation: "h", y: -0.3, yanchor: "top", traceorder: "normal" },
    paper_bgcolor: "rgba(0,0,0,0)",
  };
  if (group === "share") layout.yaxis = { range: [0, 1], tickformat: ".0%", fixedrange: true };
  if (group === "perplexity") layout.yaxis = { type: "log", title: { text: "perplexity (log scale)" } };
  if (legend) layout.hovermode = "x unified";
  return layout;
}

export class RunCharts {
  constructor(container, series) {
    this.container = container;
    this.charts = new Map(); // group -> {div, traces: [name, ...]}
    this.counts = new Map(); // series name -> points drawn
    this.lastStep = 0;
    const names = Object.keys(series);
    const groups = [...new Set(names.map(groupOf))].sort(compareGroups);
    for (const group of groups) {
      const members = names.filter((n) => groupOf(n) === group).sort(compareMembers(group));
      this.addChart(group, members.map((name) => ({ name, points: series[name] })));
    }
    this.showEmpty();
    this.publish();
  }

  showEmpty() {
    let note = this.container.querySelector(".empty");
    if (this.charts.size === 0 && !note) {
      note = document.createElement("p");
      note.className = "empty";
      note.textContent = this.container.dataset.empty || "No points.";
      this.container.append(note);
    } else if (this.charts.size > 0 && note) {
      note.remove();
    }
  }

  count(name, points) {
    this.counts.set(name, (this.counts.get(name) || 0) + points.length);
    if (points.length) this.lastStep = Math.max(this.lastStep, points[points.length - 1][0]);
  }

  /** The counts, as data attributes (see the top of this file). */
  publish() {
    this.container.dataset.counts = JSON.stringify(Object.fromEntries([...this.counts].sort()));
    this.container.dataset.lastStep = String(this.lastStep);
    for (const chart of this.charts.values()) {
      chart.div.dataset.series = chart.traces.join(" ");
      chart.div.dataset.points = String(chart.traces.reduce((n, name) => n + (this.counts.get(name) || 0), 0));
    }
  }

  /** Points per series, e.g. {"loss/total": 120, "val/accuracy": 5}: what the page holds. */
  pointCounts() {
    return Object.fromEntries(this.counts);
  }

  addChart(group, traces) {
    const div = document.createElement("div");
    div.className = `chart chart-${group === "share" || group === "val" ? group : "series"}`;
    div.dataset.group = group;
    // keep the sorted order when a chart is added later by live points
    const after = [...this.charts.keys()].filter((g) => compareGroups(g, group) > 0).sort(compareGroups)[0];
    this.container.insertBefore(div, after ? this.charts.get(after).div : null);
    const data = traces.map(({ name, points }) => traceOf(group, name, points));
    window.Plotly.newPlot(div, data, layoutOf(group), { displaylogo: false, responsive: true });
    this.charts.set(group, { div, traces: traces.map((t) => t.name) });
    for (const { name, points } of traces) this.count(name, points);
  }

  extend(points) {
    const byName = new Map();
    for (const { name, step, value } of points) {
      if (!byName.has(name)) byName.set(name, []);
      byName.get(name).push([step, value]);
    }
    // new traces of a group join in their sorted place only when the chart is created, so create charts
    // with every new series of the batch at once
    const fresh = new Map();
    for (const [name, pts] of byName) {
      const group = groupOf(name);
      if (this.charts.has(group)) continue;
      if (!fresh.has(group)) fresh.set(group, []);
      fresh.get(group).push({ name, points: pts });
    }
    for (const [group, traces] of fresh) {
      traces.sort((a, b) => compareMembers(group)(a.name, b.name));
      this.addChart(group, traces);
    }
    for (const [name, pts] of byName) {
      const group = groupOf(name);
      if (fresh.has(group)) continue;
      const chart = this.charts.get(group);
      let index = chart.traces.indexOf(name);
      if (index < 0) {
        window.Plotly.addTraces(chart.div, traceOf(group, name, []));
        chart.traces.push(name);
        index = chart.traces.length - 1;
      }
      window.Plotly.extendTraces(chart.div, { x: [pts.map((p) => p[0])], y: [pts.map((p) => p[1])] }, [index]);
      const trace = chart.div.data[index];
      if (trace.mode === "markers" && trace.x.length > 1) window.Plotly.restyle(chart.div, { mode: "lines" }, [index]);
      this.count(name, pts);
    }
    this.showEmpty();
    this.publish();
  }
}

function start() {
  const container = document.getElementById("charts");
  const source = document.getElementById("run-series");
  if (!container || !source) return;
  if (!window.Plotly) {
    container.textContent = "The chart library did not load.";
    return;
  }
  container.runCharts = new RunCharts(container, JSON.parse(source.textContent));
  window.kdwebCharts = container.runCharts;
}

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", start);
} else {
  start();
}
