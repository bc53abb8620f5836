// Plots of a scorecard page (a study, or runs compared), drawn with Plotly (served locally, a classic script).
// The page embeds, with json_script "study-plots" (selectors.scorecard_plots):
//   {metric, label, lower_is_better, points: [{name, variant, params, mb, value, best}],
//    teacher: {name, params, mb, value} | null,
//    curves: {"loss/total": [{name, variant, points: [[step, value], ...]}], ..., "val/<metric>": [...]}}
// - #plot-size: the primary metric (accuracy, or perplexity for language models, on a log axis) against
//   parameters, one colour per variant, the teacher a star;
// - #plot-val: the validation metric over steps, one line per run;
// - #plot-losses: one chart per loss term, one line per run (unweighted terms, as the run page shows them).
// Each chart carries data-traces (its number of traces) and #plot-size data-points / data-teacher, which the
// browser tests read.

import { LOSS_ORDER, LOSS_TITLES, VARIANTS } from "./vocabulary.js";

// one colour per study variant, by its place in the server's order (full method, ablations, baselines, ...)
const VARIANT_PALETTE = ["#137a3a", "#2a9d8f", "#8e44ad", "#d9822b", "#2856c9", "#6b7280", "#b5179e"];
const CONFIG = { displaylogo: false, responsive: true };

// Plotly renders trace names, hover text and templates as its own HTML subset (<a href>, <b>, <br>...): a run
// or teacher named with markup would become a live link. Entities show the characters as typed.
// (Plotly decodes these three entities only; without a "<" no tag can open.)
const ENTITIES = { "&": "&amp;", "<": "&lt;", ">": "&gt;" };
function plain(text) {
  return String(text).replace(/[&<>]/g, (c) => ENTITIES[c]);
}

function colorOf(variant) {
  const i = VARIANTS.indexOf(variant);
  return i < 0 ? "#1d2330" : VARIANT_PALETTE[i % VARIANT_PALETTE.length];
}

function layout(title, xTitle, yTitle, extra = {}) {
  return {
    title: { text: title, font: { size: 14 } },
    height: 320,
    margin: { l: 60, r: 15, t: 40, b: 90 },
    xaxis: { title: { text: xTitle } },
    yaxis: { title: { text: yTitle } },
    legend: { orientation: "h", y: -0.3, yanchor: "top" },
    paper_bgcolor: "rgba(0,0,0,0)",
    ...extra,
  };
}

function draw(div, traces, plotLayout) {
  window.Plotly.newPlot(div, traces, plotLayout, CONFIG);
  div.dataset.traces = String(traces.length);
}

// Runs of one size and score (seeds that agree, a baseline that matches) would hide each other under one marker:
// the markers of such a group sit side by side, 3 % of the axis' width apart (log scale), centred on the true
// size; the hover keeps the exact size.
const NUDGE_SHARE = 0.03;

function nudged(points, teacher) {
  const sizes = [...points.map((p) => p.params), ...(teacher ? [teacher.params] : [])].filter((x) => x > 0);
  const span = sizes.length ? Math.max(...sizes) / Math.min(...sizes) : 1;
  const step = Math.max(span, 10) ** NUDGE_SHARE;
  const groups = new Map();
  for (const p of points) {
    const key = `${p.params}|${p.value}`;
    groups.set(key, [...(groups.get(key) || []), p]);
  }
  const x = new Map();
  for (const group of groups.values()) {
    group.forEach((p, i) => x.set(p, p.params * step ** (i - (group.length - 1) / 2)));
  }
  return points.map((p) => ({ ...p, x: x.get(p) }));
}

function sizePlot(div, data) {
  const all = nudged(data.points, data.teacher);
  const variants = [...new Set(all.map((p) => p.variant))];
  const traces = variants.map((variant) => {
    const points = all.filter((p) => p.variant === variant);
    return {
      type: "scatter",
      mode: "markers",
      name: plain(variant),
      x: points.map((p) => p.x),
      y: points.map((p) => p.value),
      text: points.map((p) => `${plain(p.name)}${p.best ? " (best)" : ""}`),
      customdata: points.map((p) => p.params),
      hovertemplate: `%{text}<br>%{customdata:,} parameters<br>${data.label} %{y:.4f}<extra></extra>`,
      marker: {
        size: points.map((p) => (p.best ? 15 : 10)),
        color: colorOf(variant),
        line: { width: points.map((p) => (p.best ? 2 : 0)), color: "#1d2330" },
      },
    };
  });
  if (data.teacher) {
    traces.push({
      type: "scatter",
      mode: "markers+text",
      name: "teacher",
      x: [data.teacher.params],
      y: [data.teacher.value],
      text: ["teacher"],
      customdata: [plain(data.teacher.name)], // a template would read "%{...}" in a name as its own fields
      // the teacher is the largest model, at the right edge: its label goes left, and may leave the axes
      textposition: "middle left",
      cliponaxis: false,
      hovertemplate: `%{customdata}<br>%{x:,} parameters<br>${data.label} %{y:.4f}<extra></extra>`,
      marker: { symbol: "star", size: 16, color: "#c0392b" },
    });
  }
  const extra = { xaxis: { type: "log", title: { text: "parameters (log scale)" } } };
  if (data.metric === "perplexity") extra.yaxis = { type: "log", title: { text: "perplexity (log scale, lower is better)" } };
  draw(div, traces, layout(`${data.label} vs size`, "parameters (log scale)", data.label, extra));
  div.dataset.points = String(data.points.length);
  div.dataset.metric = data.metric;
  div.dataset.teacher = data.teacher ? "1" : "0";
}

function curveTraces(runs) {
  return runs.map((run) => ({
    type: "scatter",
    mode: run.points.length > 1 ? "lines" : "markers",
    name: plain(run.name),
    x: run.points.map((p) => p[0]),
    y: run.points.map((p) => p[1]),
    line: { color: colorOf(run.variant), width: 1.5 },
    marker: { color: colorOf(run.variant) },
  }));
}

function start() {
  const source = document.getElementById("study-plots");
  const container = document.getElementById("study-charts");
  if (!source || !container) return;
  if (!window.Plotly) {
    container.textContent = "The chart library did not load.";
    return;
  }
  const data = JSON.parse(source.textContent);
  const sizeDiv = document.getElementById("plot-size");
  const valDiv = document.getElementById("plot-val");
  if (data.points.length || data.teacher) sizePlot(sizeDiv, data);
  else sizeDiv.remove();
  const val = data.curves[`val/${data.metric}`];
  if (val) draw(valDiv, curveTraces(val), layout(`Validation ${data.label} over steps`, "step", data.label));
  else valDiv.remove();
  const losses = document.getElementById("plot-losses");
  const terms = Object.keys(data.curves).filter((name) => name.startsWith("loss/"));
  terms.sort((a, b) => (LOSS_ORDER.indexOf(a) + 1 || 99) - (LOSS_ORDER.indexOf(b) + 1 || 99) || a.localeCompare(b));
  for (const term of terms) {
    const div = document.createElement("div");
    div.className = "chart chart-loss";
    div.dataset.term = term;
    losses.append(div);
    draw(div, curveTraces(data.curves[term]), layout(LOSS_TITLES[term] || term, "step", "loss", { yaxis: { exponentformat: "power" } }));
  }
  if (!container.querySelector(".chart")) {
    const note = document.createElement("p");
    note.className = "empty";
    note.textContent = container.dataset.empty;
    container.append(note);
  }
}

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", start);
} else {
  start();
}
