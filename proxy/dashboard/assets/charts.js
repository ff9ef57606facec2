// farebox dashboard charts: plain SVG drawn in the page, no library.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#1d4ed8", "#c2410c", "#047857", "#7c3aed", "#be123c", "#0e7490", "#a16207", "#4b5563"];

  function el(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A round step for about `count` ticks up to `max`.
  function niceStep(max, count) {
    const raw = max / count;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const unit = raw / power;
    return (unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 2.5 ? 2.5 : unit <= 5 ? 5 : 10) * power;
  }

  // The width the page gives a chart now, in CSS pixels, so its text is drawn at its own size:
  // a full-width panel, or one of two columns (`half`) where the page has room for two.
  function room(half) {
    const main = Math.min(window.innerWidth, 1200) - (window.innerWidth <= 600 ? 20 : 32);
    const panel = main - (window.innerWidth <= 600 ? 26 : 34);
    const wide = half && main >= 2 * 320 + 16 ? (main - 16) / 2 - 34 : panel;
    return Math.max(280, Math.floor(wide));
  }

  function money(value) {
    if (value === 0) return "$0";
    if (value >= 100) return "$" + value.toFixed(0);
    if (value >= 1) return "$" + value.toFixed(2);
    const text = Number(value.toPrecision(2)).toString();      // to at least the cent: $0.50, $0.005
    return "$" + (text.includes(".") && text.split(".")[1].length >= 2 ? text : value.toFixed(2));
  }

  // Stacked bars over time. points: [{label, title, values: [number per series]}]; series: names.
  function bars(opts) {
    const width = room(false), height = opts.height || (width < 500 ? 200 : 260), left = 58, right = 8, top = 10, bottom = 28;
    const svg = el("svg", {viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
      "aria-label": opts.label});
    svg.appendChild(el("title", {}, opts.label));
    const totals = opts.points.map(p => p.values.reduce((a, b) => a + b, 0));
    const most = Math.max(0, ...totals);
    const step = most > 0 ? niceStep(most, 4) : 1;
    const top_value = most > 0 ? Math.ceil(most / step) * step : 1;
    const plotW = width - left - right, plotH = height - top - bottom;
    const y = v => top + plotH - (v / top_value) * plotH;
    for (let t = 0; t <= top_value + step / 2; t += step) {
      svg.appendChild(el("line", {x1: left, x2: width - right, y1: y(t), y2: y(t), stroke: "#e5e7eb"}));
      svg.appendChild(el("text", {x: left - 6, y: y(t) + 4, "text-anchor": "end", "font-size": 11, fill: "#4b5563"},
        opts.format ? opts.format(t) : money(t)));
    }
    const n = Math.max(1, opts.points.length);
    const slot = plotW / n, barW = Math.max(1, slot * 0.8);
    const every = Math.max(1, Math.ceil(n / Math.max(3, Math.floor(plotW / 70))));
    opts.points.forEach((p, i) => {
      const x = left + i * slot + (slot - barW) / 2;
      let base = 0;
      const group = el("g", {});
      group.appendChild(el("title", {}, p.title));
      p.values.forEach((v, s) => {
        if (v <= 0) return;
        group.appendChild(el("rect", {x: x, y: y(base + v), width: barW, height: Math.max(0.5, y(base) - y(base + v)),
          fill: COLORS[s % COLORS.length]}));
        base += v;
      });
      // An invisible full-height target so the tooltip shows on empty bars too.
      group.appendChild(el("rect", {x: left + i * slot, y: top, width: slot, height: plotH, fill: "transparent"}));
      svg.appendChild(group);
      if (i % every === 0) {
        svg.appendChild(el("text", {x: x + barW / 2, y: height - 8, "text-anchor": "middle", "font-size": 11,
          fill: "#4b5563"}, p.label));
      }
    });
    svg.appendChild(el("line", {x1: left, x2: width - right, y1: y(0), y2: y(0), stroke: "#6b7280"}));
    return svg;
  }

  // Horizontal bars, one per row: rows [{label, value, text}].
  function hbars(opts) {
    const rowH = 26, width = room(true), labelW = Math.min(200, Math.floor(width * 0.34)), textW = 96;
    const height = Math.max(1, opts.rows.length) * rowH + 4;
    const svg = el("svg", {viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": opts.label});
    svg.appendChild(el("title", {}, opts.label));
    const most = Math.max(0, ...opts.rows.map(r => r.value));
    const plotW = width - labelW - textW - 12;
    opts.rows.forEach((r, i) => {
      const yTop = 2 + i * rowH;
      const most_chars = Math.floor(labelW / 7.5);
      const name = r.label.length > most_chars ? r.label.slice(0, most_chars - 1) + "…" : r.label;
      svg.appendChild(el("text", {x: labelW - 8, y: yTop + 17, "text-anchor": "end", "font-size": 13, fill: "#111827"}, name));
      const w = most > 0 ? Math.max(r.value > 0 ? 1 : 0, (r.value / most) * plotW) : 0;
      svg.appendChild(el("rect", {x: labelW, y: yTop + 4, width: w, height: rowH - 8, rx: 2,
        fill: COLORS[i % COLORS.length]}));
      svg.appendChild(el("text", {x: labelW + w + 6, y: yTop + 17, "font-size": 13, fill: "#111827"}, r.text));
    });
    return svg;
  }

  // A budget's gauge: spent (solid), reserved (light), threshold marks, the limit at 100 %.
  // All amounts in USD as numbers; thresholds as fractions of the limit.
  function gauge(opts) {
    const width = room(false), height = 46, barY = 8, barH = 18;
    const scale = Math.max(1, ...opts.thresholds, (opts.spent + opts.reserved) / (opts.limit || 1));
    const x = fraction => (Math.min(fraction, scale) / scale) * (width - 2) + 1;
    const svg = el("svg", {viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": opts.label});
    svg.appendChild(el("title", {}, opts.label));
    svg.appendChild(el("rect", {x: 1, y: barY, width: width - 2, height: barH, fill: "#f3f4f6", stroke: "#6b7280"}));
    const spentF = opts.limit > 0 ? opts.spent / opts.limit : (opts.spent > 0 ? scale : 0);
    const heldF = opts.limit > 0 ? opts.reserved / opts.limit : 0;
    const color = spentF >= 1 ? "#b91c1c" : spentF >= 0.8 ? "#c2410c" : "#1d4ed8";
    svg.appendChild(el("rect", {x: 1, y: barY, width: x(spentF) - 1, height: barH, fill: color}));
    if (heldF > 0) {
      svg.appendChild(el("rect", {x: x(spentF), y: barY, width: Math.max(1, x(spentF + heldF) - x(spentF)),
        height: barH, fill: "#93c5fd"}));
    }
    // A dashed mark per alert threshold, a solid one at the limit (100 %); labels where they fit,
    // the limit's first.
    const marks = [1, ...opts.thresholds.filter(t => t !== 1).sort((a, b) => a - b)];
    const labelled = [];
    for (const t of marks) {
      if (labelled.every(other => Math.abs(x(other) - x(t)) >= 34)) labelled.push(t);
    }
    for (const t of marks) {
      const tx = x(t);
      const line = {x1: tx, x2: tx, y1: barY - 4, y2: barY + barH + 4, stroke: "#111827", "stroke-width": t === 1 ? 2.5 : 1.5};
      svg.appendChild(el("line", t === 1 ? {...line, class: "limit"} : {...line, class: "threshold", "stroke-dasharray": "3 2"}));
      if (!labelled.includes(t)) continue;
      const anchor = tx > width - 30 ? "end" : tx < 30 ? "start" : "middle";
      svg.appendChild(el("text", {x: tx, y: height - 2, "text-anchor": anchor, "font-size": 11, fill: "#111827"},
        `${Math.round(t * 1000) / 10}%`));
    }
    return svg;
  }

  window.FareboxCharts = {bars, hbars, gauge, money, COLORS};
})();
