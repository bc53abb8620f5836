// The layer-map editor of the new-run wizard (plain JS, no framework).
//
// Draws the student's layers (0 = embeddings .. S) on the left and the teacher's (0 .. T) on the right,
// with a line per pair, and keeps the hidden input "pairs" (JSON [[student, teacher, feature_weight,
// attention_weight], ...]) in sync. Presets come from the server (distill.layer_map.resolve_layer_map);
// editing anything switches to "custom". The server validates whatever is submitted.
(function () {
  "use strict";

  const root = document.getElementById("layermap");
  if (!root) return;
  const form = root.closest("form");
  const S = Number(root.dataset.studentLayers);
  const T = Number(root.dataset.teacherLayers);
  const presets = JSON.parse(document.getElementById("layermap-presets").textContent);
  const hidden = form.querySelector("input[name=pairs]");
  const embeddings = form.querySelector("input[name=map_embeddings]");
  const svg = document.getElementById("layermap-svg");
  const rows = document.getElementById("layermap-rows");
  const hint = document.getElementById("layermap-hint");
  const errors = document.getElementById("err-pairs");
  const NS = "http://www.w3.org/2000/svg";
  // The drawing's geometry, as the server drew the page (jobs/wizard/drawing.py GEOMETRY).
  const G = JSON.parse(document.getElementById("layermap-geometry").textContent);
  const span = Math.max(S, T) * G.row;
  const teacherX = G.width - G.boxW - 2;

  let pairs = parse(hidden.value);
  let bad = new Set(JSON.parse(root.dataset.badRows || "[]"));
  let selected = null; // a student layer waiting for its teacher layer

  function parse(text) {
    let value;
    try {
      value = JSON.parse(text || "[]");
    } catch (e) {
      value = [];
    }
    return (Array.isArray(value) ? value : [])
      .filter((p) => Array.isArray(p) && p.length >= 2)
      .map((p) => [Number(p[0]), Number(p[1]), p.length > 2 ? Number(p[2]) : 1, p.length > 3 ? Number(p[3]) : 1]);
  }

  function mode() {
    const checked = form.querySelector("input[name=preset]:checked");
    return checked ? checked.value : "uniform";
  }

  function setMode(value) {
    const radio = form.querySelector(`input[name=preset][value=${value}]`);
    if (radio) radio.checked = true;
  }

  function fromPreset() {
    pairs = (presets[mode()] || []).map((p) => [p[0], p[1], 1, 1]);
    if (embeddings && embeddings.checked) pairs.unshift([0, 0, 1, 1]);
  }

  // Any edit by hand makes the map a custom one (the preset's pairs are kept as the starting point).
  function edited() {
    setMode("custom");
    bad = new Set();
    if (errors) errors.textContent = "";
  }

  function sync() {
    pairs.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    hidden.value = JSON.stringify(pairs);
  }

  function y(layer, depth) {
    return G.top + ((depth - layer) * span) / depth;
  }

  function label(layer) {
    return layer === 0 ? "embeddings" : `block ${layer}`;
  }

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function activate(node, action) {
    node.setAttribute("tabindex", "0");
    node.setAttribute("role", "button");
    node.addEventListener("click", action);
    node.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        action();
      }
    });
  }

  function box(side, layer, depth, x) {
    const mapped = pairs.some((p) => (side === "student" ? p[0] : p[1]) === layer);
    const classes = ["node", side];
    if (mapped) classes.push("mapped");
    if (side === "student" && selected === layer) classes.push("selected");
    if (side === "teacher" && selected !== null) classes.push("target");
    const g = el("g", { class: classes.join(" "), transform: `translate(${x},${y(layer, depth)})` }, svg);
    g.setAttribute("aria-label", `${side} layer ${layer} (${label(layer)})`);
    el("rect", { width: G.boxW, height: G.boxH, rx: 5 }, g);
    el("text", { x: G.boxW / 2, y: 17, "text-anchor": "middle" }, g).textContent = `${layer} · ${label(layer)}`;
    activate(g, () => (side === "student" ? pickStudent(layer) : pickTeacher(layer)));
  }

  function drawSvg() {
    svg.replaceChildren();
    svg.setAttribute("height", G.top + span + G.boxH + G.bottom);
    svg.setAttribute("viewBox", `0 0 ${G.width} ${G.top + span + G.boxH + G.bottom}`);
    const title = (x, text) => {
      el("text", { class: "col-title", x, y: 16, "text-anchor": "middle" }, svg).textContent = text;
    };
    title(2 + G.boxW / 2, `Student (${S} blocks)`);
    title(teacherX + G.boxW / 2, `Teacher (${T} blocks)`);
    pairs.forEach((p, i) => {
      if (p[0] < 0 || p[0] > S || p[1] < 0 || p[1] > T) return;
      const classes = ["pair"];
      if (p[0] === 0 || p[1] === 0) classes.push("feature-only");
      if (bad.has(i)) classes.push("bad");
      const attrs = {
        x1: 2 + G.boxW,
        y1: y(p[0], S) + G.boxH / 2,
        x2: teacherX,
        y2: y(p[1], T) + G.boxH / 2,
      };
      el("line", { ...attrs, class: classes.join(" ") }, svg);
      // a wide transparent twin is easier to click than the 2.5 px line
      const hit = el("line", { ...attrs, class: "pair-hit" }, svg);
      hit.setAttribute("aria-label", `remove the pair student ${p[0]} → teacher ${p[1]}`);
      el("title", {}, hit).textContent = `student ${p[0]} → teacher ${p[1]}: click to remove`;
      activate(hit, () => removePair(i));
    });
    for (let l = 0; l <= S; l++) box("student", l, S, 2);
    for (let m = 0; m <= T; m++) box("teacher", m, T, teacherX);
  }

  function weightInput(value, onChange, name) {
    const input = document.createElement("input");
    Object.assign(input, { type: "number", min: "0", step: "any", value: String(value) });
    input.setAttribute("aria-label", name);
    input.addEventListener("input", () => {
      const v = Number(input.value);
      if (input.value === "" || Number.isNaN(v)) return;
      onChange(v);
      edited();
      hidden.value = JSON.stringify(pairs);
    });
    return input;
  }

  function drawRows() {
    rows.replaceChildren();
    if (!pairs.length) {
      const tr = rows.insertRow();
      const td = tr.insertCell();
      td.colSpan = 6;
      td.className = "help";
      td.textContent = "No pairs yet: pick a preset, or click a student layer and then a teacher layer.";
      return;
    }
    pairs.forEach((p, i) => {
      const tr = rows.insertRow();
      if (bad.has(i)) tr.className = "bad";
      tr.insertCell().textContent = String(i);
      tr.insertCell().textContent = p[0] === 0 ? "0 (embeddings)" : String(p[0]);
      tr.insertCell().textContent = p[1] === 0 ? "0 (embeddings)" : String(p[1]);
      tr.insertCell().appendChild(weightInput(p[2], (v) => (p[2] = v), `hidden-state weight of pair ${i}`));
      const att = tr.insertCell();
      if (p[0] === 0 || p[1] === 0) {
        att.innerHTML = '<span class="help">— no attention map</span>';
      } else {
        att.appendChild(weightInput(p[3], (v) => (p[3] = v), `attention weight of pair ${i}`));
      }
      const remove = document.createElement("button");
      Object.assign(remove, { type: "button", className: "link", textContent: "Remove" });
      remove.addEventListener("click", () => removePair(i));
      const cell = tr.insertCell();
      cell.className = "js-only";
      cell.appendChild(remove);
    });
  }

  function describeState() {
    if (!hint) return;
    if (selected !== null) {
      hint.textContent = `Student layer ${selected} selected: now click the teacher layer it should learn from (Esc cancels).`;
    } else if (mode() === "custom") {
      hint.textContent = "Click a student layer, then the teacher layer it should learn from; a student layer has at most one pair. Click a line to remove its pair.";
    } else {
      hint.textContent = "The preset's pairs are shown. Click a student layer to start editing them (the map becomes custom).";
    }
  }

  function render() {
    drawSvg();
    drawRows();
    describeState();
  }

  function pickStudent(layer) {
    selected = selected === layer ? null : layer;
    render();
  }

  function pickTeacher(layer) {
    if (selected === null) {
      if (hint) hint.textContent = "First click the student layer that should learn from this teacher layer.";
      return;
    }
    const old = pairs.find((p) => p[0] === selected);
    pairs = pairs.filter((p) => p[0] !== selected);
    pairs.push([selected, layer, old ? old[2] : 1, old ? old[3] : 1]);
    selected = null;
    edited();
    sync();
    render();
  }

  function removePair(index) {
    pairs.splice(index, 1);
    edited();
    sync();
    render();
  }

  form.querySelectorAll("input[name=preset]").forEach((radio) =>
    radio.addEventListener("change", () => {
      if (mode() !== "custom") {
        fromPreset();
        bad = new Set();
      }
      selected = null;
      sync();
      render();
    }),
  );

  if (embeddings) {
    embeddings.addEventListener("change", () => {
      if (mode() !== "custom") {
        fromPreset();
      } else if (embeddings.checked && !pairs.some((p) => p[0] === 0)) {
        pairs.push([0, 0, 1, 1]);
      } else if (!embeddings.checked) {
        pairs = pairs.filter((p) => p[0] !== 0);
      }
      sync();
      render();
    });
  }

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && selected !== null) {
      selected = null;
      render();
    }
  });

  render();
})();
