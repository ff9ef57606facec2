// farebox dashboard: sign-in, the admin API client, routing, and the overview.
// The token lives in this tab's sessionStorage only; every call sends it as Authorization: Bearer.
"use strict";
(function () {
  const TOKEN = "farebox.admin_token";
  const state = {access: null, timers: []};

  // -- DOM ------------------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "class") node.className = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  const $ = id => document.getElementById(id);

  // -- formats -----------------------------------------------------------------------------------
  const usd = text => "$" + text;                     // the API's exact decimal string (>= 2 decimals)
  const count = n => Number(n).toLocaleString("en-US");
  function when(iso) {
    if (!iso) return "—";
    return iso.replace("T", " ").replace(/:\d\d(\.\d+)?Z$/, " UTC");
  }
  const enc = encodeURIComponent;

  // -- the admin API -----------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message, code) { super(message); this.status = status; this.code = code; }
  }

  async function api(path, options) {
    const opts = options || {};
    const token = sessionStorage.getItem(TOKEN);
    if (!token) throw new ApiError(401, "Not signed in.");
    const headers = {"Authorization": "Bearer " + token};
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {method: opts.method || "GET", headers, cache: "no-store", credentials: "omit",
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body)});
    } catch (e) {
      throw new ApiError(0, "farebox did not answer (" + e.message + ").");
    }
    const text = await response.text();
    if (!response.ok) {
      let message = `farebox answered HTTP ${response.status}.`, code = null;
      try { const err = JSON.parse(text).error; message = err.message; code = err.code; } catch (_) { /* not JSON */ }
      throw new ApiError(response.status, message, code);
    }
    return opts.raw ? {text, headers: response.headers} : JSON.parse(text);
  }

  // -- sign-in ---------------------------------------------------------------------------------
  function showSignIn(message) {
    stopTimers();
    state.access = null;
    $("view").replaceChildren();
    $("who").classList.add("hidden");
    $("signout").classList.add("hidden");
    $("signin-panel").classList.remove("hidden");
    const error = $("signin-error");
    error.textContent = message || "";
    error.classList.toggle("hidden", !message);
    $("token").focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN);
    showSignIn(message);
  }

  async function signIn(event) {
    event.preventDefault();
    const input = $("token");
    const token = input.value.trim();
    if (!token) return showSignIn("Enter a token.");
    sessionStorage.setItem(TOKEN, token);
    input.value = "";
    try {
      state.access = (await api("/admin/access")).access;
    } catch (e) {
      sessionStorage.removeItem(TOKEN);
      return showSignIn(e.status === 401 ? "That token was refused: " + e.message : e.message);
    }
    route();
  }

  // -- routing -----------------------------------------------------------------------------------
  function stopTimers() {
    for (const t of state.timers) clearInterval(t);
    state.timers = [];
  }

  function parseHash() {
    const hash = location.hash.replace(/^#/, "") || "/";
    const [path, query] = hash.split("?");
    return {parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query || "")};
  }

  function failed(view, error) {
    if (error.status === 401) return signOut("That token was refused: " + error.message);
    view.replaceChildren(h("div", {class: "error", role: "alert"}, error.message));
  }

  async function route() {
    stopTimers();
    if (!sessionStorage.getItem(TOKEN)) return showSignIn();
    $("signin-panel").classList.add("hidden");
    $("signout").classList.remove("hidden");
    const view = $("view");
    view.replaceChildren(h("p", {class: "muted"}, "Loading…"));
    try {
      if (!state.access) state.access = (await api("/admin/access")).access;
      const who = $("who");
      who.textContent = state.access === "write" ? "Signed in: full access" : "Signed in: read-only";
      who.classList.remove("hidden");
      const r = parseHash();
      if (r.parts[0] === "project" && r.parts[1]) {
        await window.FareboxProject.render(view, r.parts[1], r.params);
      } else {
        await overview(view);
      }
    } catch (e) {
      failed(view, e);
    }
  }

  // -- overview --------------------------------------------------------------------------------
  const TOP_CHARTED = 8;

  function card(label, value, field) {
    return h("div", {class: "card"}, h("div", {class: "label"}, label),
      h("div", {class: "value", "data-field": field}, value));
  }

  function legend(names) {
    return h("div", {class: "legend"}, names.map((name, i) =>
      h("span", {}, h("span", {class: `swatch sw${i % 8}`, "aria-hidden": "true"}), name)));
  }

  async function overview(view) {
    const data = await api("/admin/projects");
    const charted = data.projects.slice(0, TOP_CHARTED);
    const series = await Promise.all(charted.map(p =>
      api(`/admin/usage/series?scope=project&id=${enc(p.id)}&granularity=day`)));
    const points = (series[0] ? series[0].points : []).map((point, i) => {
      const values = series.map(s => Number(s.points[i].cost_usd));
      const lines = charted.map((p, s) => `${p.id}: $${series[s].points[i].cost_usd}`);
      return {label: point.start.slice(5, 10), values, title: `${point.start.slice(0, 10)}\n${lines.join("\n")}`};
    });
    const rows = data.projects.map(p => h("tr", {"data-project": p.id},
      h("td", {}, h("a", {href: `#/project/${enc(p.id)}`}, p.id)),
      h("td", {class: "num", "data-field": "today_usd"}, usd(p.today_usd)),
      h("td", {class: "num", "data-field": "month_usd"}, usd(p.month_usd)),
      h("td", {class: "num", "data-field": "requests_today"}, count(p.requests_today)),
      h("td", {class: "num", "data-field": "requests_month"}, count(p.requests_month))));
    const chartTitle = data.projects.length > TOP_CHARTED
      ? `Spend per day, last 30 days (the ${TOP_CHARTED} costliest projects this month)`
      : "Spend per day, last 30 days";
    view.replaceChildren(
      h("h1", {}, "Overview"),
      h("div", {class: "cards"},
        card("Spend today (UTC)", usd(data.today_usd), "today_usd"),
        card("Spend this month", usd(data.month_usd), "month_usd"),
        card("Requests today", count(data.requests_today), "requests_today"),
        card("Projects", count(data.projects.length), "projects")),
      h("section", {class: "panel", "aria-labelledby": "chart-title"},
        h("h2", {id: "chart-title"}, chartTitle),
        points.length ? window.FareboxCharts.bars({points, label: chartTitle}) : h("p", {class: "muted"}, "No spend recorded yet."),
        legend(charted.map(p => p.id))),
      h("section", {class: "panel", "aria-labelledby": "projects-title"},
        h("h2", {id: "projects-title"}, "Projects, costliest this month first"),
        data.projects.length
          ? h("div", {class: "table-wrap"}, h("table", {id: "projects"},
              h("thead", {}, h("tr", {}, h("th", {scope: "col"}, "Project"), h("th", {class: "num", scope: "col"}, "Today"),
                h("th", {class: "num", scope: "col"}, "This month"), h("th", {class: "num", scope: "col"}, "Requests today"),
                h("th", {class: "num", scope: "col"}, "Requests this month"))),
              h("tbody", {}, rows)))
          : h("p", {class: "muted"}, "No project has recorded usage or a budget yet.")));
  }

  window.Farebox = {h, api, usd, count, when, enc, card, legend, state, failed, route, ApiError};

  document.addEventListener("DOMContentLoaded", () => {
    $("signin").addEventListener("submit", signIn);
    $("signout").addEventListener("click", () => signOut());
    window.addEventListener("hashchange", route);
    route();
  });
})();
