// Curves of a run, drawn with Plotly (served from static files, loaded as a classic script).
// One chart per loss term (loss/task, loss/output, loss/feature, loss/attention, loss/total), one chart for
// the validation metrics (every val/* series together), and one per any other series (e.g. lr).
// The page embeds the stored series as {"name": [[step, value], ...]} with Django's json_script;
// `RunCharts.extend` takes live points ({name, step, value}) for the websocket page to come.

const LOSS_ORDER = ["loss/total", "loss/task", "loss/output", "loss/feature", "loss/attention"];
const TITLES = {
  "loss/total": "Total loss",
  "loss/task": "Task loss (cross-entropy)",
  "loss/output": "Output loss (KL of softened logits)",
  "loss/feature": "Feature loss (hidden states)",
  "loss/attention": "Attention loss",
  val: "Validation metrics",
  lr: "Learning rate",
};

export function groupOf(name) {
  return name.startsWith("val/") ? "val" : name;
}

function rank(group) {
  const i = LOSS_ORDER.indexOf(group);
  if (i >= 0) return [0, i, group];
  if (group.startsWith("loss/")) return [1, 0, group];
  if (group === "val") return [2, 0, group];
  return [3, 0, group];
}

function compareGroups(a, b) {
  const [ra, rb] = [rank(a), rank(b)];
  for (let i = 0; i < 3; i++) {
    if (ra[i] < rb[i]) return -1;
    if (ra[i] > rb[i]) return 1;
  }
  return 0;
}

export class RunCharts {
  constructor(container, series) {
    this.container = container;
    this.charts = new Map(); // group -> {div, traces: [name, ...]}
    const names = Object.keys(series);
    const groups = [...new Set(names.map(groupOf))].sort(compareGroups);
    for (const group of groups) {
      const members = names.filter((n) => groupOf(n) === group).sort();
      this.addChart(group, members.map((name) => ({ name, points: series[name] })));
    }
    this.showEmpty();
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

  addChart(group, traces) {
    const div = document.createElement("div");
    div.className = "chart";
    div.dataset.group = group;
    // keep the sorted order when a chart is added later by live points
    const after = [...this.charts.keys()].filter((g) => compareGroups(g, group) > 0).sort(compareGroups)[0];
    this.container.insertBefore(div, after ? this.charts.get(after).div : null);
    const data = traces.map(({ name, points }) => ({
      x: points.map((p) => p[0]),
      y: points.map((p) => p[1]),
      name: group === "val" ? name.slice(4) : name,
      mode: points.length > 1 ? "lines" : "markers",
      type: "scatter",
    }));
    const layout = {
      title: { text: TITLES[group] || group, font: { size: 14 } },
      height: 260,
      margin: { l: 55, r: 15, t: 40, b: 40 },
      xaxis: { title: { text: "step" } },
      yaxis: { type: group === "lr" ? "linear" : "-", exponentformat: "power" },
      showlegend: group === "val",
      legend: { orientation: "h" },
      paper_bgcolor: "rgba(0,0,0,0)",
    };
    window.Plotly.newPlot(div, data, layout, { displaylogo: false, responsive: true });
    this.charts.set(group, { div, traces: traces.map((t) => t.name) });
  }

  extend(points) {
    const byName = new Map();
    for (const { name, step, value } of points) {
      if (!byName.has(name)) byName.set(name, []);
      byName.get(name).push([step, value]);
    }
    for (const [name, pts] of byName) {
      const group = groupOf(name);
      const chart = this.charts.get(group);
      if (!chart) {
        this.addChart(group, [{ name, points: pts }]);
        continue;
      }
      let index = chart.traces.indexOf(name);
      if (index < 0) {
        window.Plotly.addTraces(chart.div, { x: [], y: [], name: group === "val" ? name.slice(4) : name, mode: "lines" });
        chart.traces.push(name);
        index = chart.traces.length - 1;
      }
      window.Plotly.extendTraces(chart.div, { x: [pts.map((p) => p[0])], y: [pts.map((p) => p[1])] }, [index]);
    }
    this.showEmpty();
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
}

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", start);
} else {
  start();
}
