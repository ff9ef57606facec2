// farebox dashboard: one project's page (spend, budgets, events, alerts, keys).
"use strict";
(function () {
  const F = () => window.Farebox;
  const Charts = () => window.FareboxCharts;
  const PERIODS = {day: "Today (UTC)", week: "This week", month: "This month"};
  const LIVE_S = 5;
  const EVENTS_SHOWN = 50;

  function select(id, label, options, value, onchange) {
    const {h} = F();
    return h("div", {class: "field"}, h("label", {for: id}, label),
      h("select", {id, onchange}, Object.entries(options).map(([v, text]) =>
        h("option", {value: v, selected: v === value}, text))));
  }

  function input(id, label, attrs) {
    const {h} = F();
    return h("div", {class: "field"}, h("label", {for: id}, label), h("input", {id, ...(attrs || {})}));
  }

  function table(id, head, rows, numeric) {
    const {h} = F();
    return h("div", {class: "table-wrap"}, h("table", {id},
      h("thead", {}, h("tr", {}, head.map((name, i) => h("th", {scope: "col", class: numeric[i] ? "num" : null}, name)))),
      rows instanceof HTMLElement ? rows : h("tbody", {}, rows)));
  }

  function panel(id, title, ...children) {
    const {h} = F();
    return h("section", {class: "panel", id, "aria-labelledby": id + "-title"}, h("h2", {id: id + "-title"}, title), ...children);
  }

  function breakdown(id, title, parts, what) {
    const {h, usd, count} = F();
    const names = Object.keys(parts).sort((a, b) => Number(parts[b].cost_usd) - Number(parts[a].cost_usd));
    if (!names.length) return panel(id, title, h("p", {class: "muted"}, "Nothing spent in this period."));
    const chart = Charts().hbars({label: title, rows: names.slice(0, 10).map(n =>
      ({label: n, value: Number(parts[n].cost_usd), text: usd(parts[n].cost_usd)}))});
    const rows = names.map(n => h("tr", {[`data-${what}`]: n},
      h("td", {}, n), h("td", {class: "num", "data-field": "requests"}, count(parts[n].requests)),
      h("td", {class: "num", "data-field": "prompt_tokens"}, count(parts[n].prompt_tokens)),
      h("td", {class: "num", "data-field": "completion_tokens"}, count(parts[n].completion_tokens)),
      h("td", {class: "num", "data-field": "cost_usd"}, usd(parts[n].cost_usd))));
    return panel(id, title, chart, table(id + "-table", [what === "model" ? "Model" : "Agent", "Requests", "Prompt tokens",
      "Completion tokens", "Cost"], rows, [false, true, true, true, true]));
  }

  function resourcesPanel(usage) {
    // Usage records of compute (POST /v1/usage-records), beside the LLM calls' cost.
    const {h, usd, count} = F();
    const parts = usage.by_resource || {};
    const names = Object.keys(parts).sort((a, b) => Number(parts[b].cost_usd) - Number(parts[a].cost_usd));
    const split = h("p", {}, "LLM calls ", h("strong", {"data-field": "llm_cost_usd"}, usd(usage.llm_cost_usd || "0")),
      ", compute ", h("strong", {"data-field": "compute_cost_usd"}, usd(usage.compute_cost_usd || "0")),
      ` (${count(usage.compute_records || 0)} usage records).`);
    if (!names.length) return panel("by-resource", "Compute", split);
    const rows = names.map(n => h("tr", {"data-resource": n}, h("td", {}, n),
      h("td", {class: "num", "data-field": "records"}, count(parts[n].records)),
      h("td", {class: "num", "data-field": "cost_usd"}, usd(parts[n].cost_usd))));
    return panel("by-resource", "Compute", split,
      table("by-resource-table", ["Resource", "Usage records", "Cost"], rows, [false, true, true]));
  }

  // -- budgets -----------------------------------------------------------------------------------
  function budgetPath(project, scope, local) {
    return `/admin/budgets/${scope}/${F().enc(project)}` + (scope === "project" ? "" : `/${F().enc(local)}`);
  }

  function runsOut(forecast) {
    if (!forecast || !forecast.budget) return "—";
    const trend = forecast.forecasts.trend.runs_out_at;
    if (trend) return F().when(trend) + " (at the recent rate)";
    return forecast.budget.resets_at ? "not before it resets" : "not at the recent rate";
  }

  function gauge(project, b, forecast, form) {
    const {h, usd, when, state} = F();
    const label = `${b.scope} ${b.id}: spent $${b.spent_usd} of $${b.limit_usd} (${b.percent}%)`;
    const actions = state.access === "write" ? h("div", {class: "actions"},
      h("button", {type: "button", class: "secondary", onclick: () => form.edit(b)}, "Edit"),
      h("button", {type: "button", class: "danger", onclick: async (e) => {
        const button = e.currentTarget;
        if (button.dataset.armed !== "1") { button.dataset.armed = "1"; button.textContent = "Confirm delete"; return; }
        button.disabled = true;
        const local = b.id.includes("/") ? b.id.slice(b.id.indexOf("/") + 1) : b.id;
        try { await F().api(budgetPath(project, b.scope, local), {method: "DELETE"}); F().route(); }
        catch (err) { form.show(err.message, true); button.disabled = false; }
      }}, "Delete")) : null;
    return h("div", {class: "gauge", "data-budget": `${b.scope}:${b.id}`},
      h("div", {class: "gauge-head"}, h("h3", {}, `${b.scope} ${b.id}`),
        h("span", {}, h("span", {class: `badge ${b.mode}`}, b.mode), " ", b.period === "total" ? "total" : `per ${b.period}`)),
      Charts().gauge({label, limit: Number(b.limit_usd), spent: Number(b.spent_usd), reserved: Number(b.reserved_usd),
        thresholds: b.alert_thresholds}),
      h("div", {class: "facts"},
        h("span", {}, "Limit ", h("strong", {"data-field": "limit_usd"}, usd(b.limit_usd))),
        h("span", {}, "Spent ", h("strong", {"data-field": "spent_usd"}, usd(b.spent_usd)), " (",
          h("span", {"data-field": "percent"}, String(b.percent)), "%)"),
        h("span", {}, "Reserved ", h("strong", {"data-field": "reserved_usd"}, usd(b.reserved_usd))),
        h("span", {}, "Remaining ", h("strong", {"data-field": "remaining_usd"}, usd(b.remaining_usd))),
        h("span", {}, "Resets ", when(b.resets_at)),
        h("span", {}, "Runs out ", h("strong", {"data-field": "runs_out"}, runsOut(forecast)))),
      actions);
  }

  function budgetForm(project) {
    const {h, api, state} = F();
    const message = h("p", {class: "hidden", role: "status"});
    const show = (text, bad) => { message.textContent = text; message.className = bad ? "error" : "notice"; };
    const scope = select("budget-scope", "Scope", {project: "project", agent: "agent", session: "session", key: "key"},
      "project", () => sync());
    const local = input("budget-id", "Agent, session or key id", {type: "text", autocomplete: "off", disabled: true});
    const limit = input("budget-limit", "Limit (USD)", {type: "text", inputmode: "decimal", required: true, placeholder: "50"});
    const period = select("budget-period", "Period", {hour: "hour", day: "day", week: "week", month: "month", total: "total"}, "month");
    const mode = select("budget-mode", "Mode", {hard: "hard (refuse with 402)", soft: "soft (alerts only)"}, "hard");
    const thresholds = input("budget-thresholds", "Alert thresholds (%)", {type: "text", value: "50, 80, 90, 100"});
    const sync = () => { local.querySelector("input").disabled = scope.querySelector("select").value === "project"; };
    const value = (field, tag) => field.querySelector(tag || "input").value.trim();
    const form = h("form", {id: "budget-form", onsubmit: async (e) => {
      e.preventDefault();
      const s = value(scope, "select");
      const percents = value(thresholds).split(/[\s,]+/).filter(Boolean);
      const body = {limit_usd: value(limit), period: value(period, "select"), mode: value(mode, "select"),
        alert_thresholds: percents.map(p => Number(p) / 100)};
      if (percents.some(p => !isFinite(Number(p)))) return show("Alert thresholds are percentages such as 50, 80, 100.", true);
      try {
        await api(budgetPath(project, s, value(local)), {method: "PUT", body});
        F().route();
      } catch (err) { show(err.message, true); }
    }},
      h("h3", {}, "Set a budget"),
      h("div", {class: "form-row"}, scope, local, limit),
      h("div", {class: "form-row"}, period, mode, thresholds),
      message, h("button", {type: "submit"}, "Save budget"));
    return {
      node: state.access === "write" ? form : h("p", {class: "muted"}, "Read-only token: budgets can be viewed, not changed."),
      show,
      edit(b) {
        const localId = b.id.includes("/") ? b.id.slice(b.id.indexOf("/") + 1) : "";
        scope.querySelector("select").value = b.scope;
        local.querySelector("input").value = localId;
        limit.querySelector("input").value = b.limit_usd;
        period.querySelector("select").value = b.period;
        mode.querySelector("select").value = b.mode;
        thresholds.querySelector("input").value = b.alert_thresholds.map(t => Math.round(t * 100000) / 1000).join(", ");
        sync();
        limit.querySelector("input").focus();
      },
    };
  }

  // -- events, alerts, keys --------------------------------------------------------------------
  function eventRow(e) {
    const {h, usd, count} = F();
    return h("tr", {"data-event": e.request_id},
      h("td", {}, e.time.replace("T", " ").replace("Z", "")), h("td", {}, e.agent), h("td", {}, e.session || "—"),
      h("td", {}, e.model), h("td", {class: "num"}, String(e.status)), h("td", {class: "num"}, count(e.prompt_tokens)),
      h("td", {class: "num"}, count(e.completion_tokens)), h("td", {class: "num", "data-field": "cost_usd"}, usd(e.cost_usd)),
      h("td", {class: "num"}, e.latency_ms === null ? "—" : count(e.latency_ms) + " ms"));
  }

  function eventsPanel(project, recent) {
    const {h, api, enc, state} = F();
    const body = h("tbody", {}, recent.events.map(eventRow));
    const status = h("p", {class: "muted", role: "status"}, `${recent.events.length} newest events.`);
    let cursor = recent.next_since;
    const live = h("input", {type: "checkbox", id: "events-live", checked: true});
    const poll = async () => {
      if (!live.checked || document.hidden) return;
      try {
        const page = await api(`/admin/events?project=${enc(project)}&since=${enc(cursor)}&limit=100`, {raw: true});
        cursor = page.headers.get("X-Next-Since") || cursor;
        const fresh = page.text.split("\n").filter(Boolean).map(line => JSON.parse(line));
        for (const e of fresh) body.prepend(eventRow(e));
        while (body.children.length > EVENTS_SHOWN) body.lastChild.remove();
        status.textContent = `Updated ${new Date().toISOString().slice(11, 19)} UTC: ${fresh.length} new.`;
      } catch (err) { status.textContent = "Live refresh failed: " + err.message; }
    };
    state.timers.push(setInterval(poll, LIVE_S * 1000));
    return panel("events", "Recent events",
      h("label", {class: "inline", for: "events-live"}, live, `Live refresh (every ${LIVE_S} s)`), status,
      table("events-table", ["Time (UTC)", "Agent", "Session", "Model", "Status", "Prompt", "Completion", "Cost", "Latency"],
        body, [false, false, false, false, true, true, true, true, true]));
  }

  function alertsPanel(alerts, deliveries) {
    const {h, when} = F();
    if (!alerts.length) return panel("alerts", "Alerts sent", h("p", {class: "muted"}, "No budget has crossed an alert threshold yet."));
    const crossed = table("alerts-table", ["Period from", "Period", "Budget", "Threshold"],
      alerts.map(a => h("tr", {}, h("td", {}, when(a.period_start)), h("td", {}, a.period),
        h("td", {class: "wrap"}, `${a.scope} ${a.id}`), h("td", {class: "num"}, `${a.percent}%`))), [false, false, false, true]);
    const sent = deliveries.length
      ? table("deliveries-table", ["Sent (UTC)", "Budget", "Threshold", "By", "To", "Outcome", "Attempts"],
          deliveries.map(d => h("tr", {}, h("td", {}, when(d.at)), h("td", {class: "wrap"}, `${d.scope} ${d.id}`),
            h("td", {class: "num"}, `${d.percent}%`), h("td", {}, d.channel === "email" ? "e-mail" : "webhook"),
            h("td", {class: "wrap"}, d.to),
            h("td", {}, h("span", {class: `badge ${d.outcome === "delivered" ? "active" : "hard"}`, title: d.problem || ""},
              d.outcome)), h("td", {class: "num"}, String(d.attempts)))),
          [false, false, true, false, false, false, true])
      : h("p", {class: "muted"}, "No webhook or e-mail is configured for these alerts, or none was sent yet.");
    return panel("alerts", "Alerts sent", crossed, h("h3", {}, "Deliveries"), sent);
  }

  function keysPanel(project, keys) {
    const {h, api, when, state} = F();
    const message = h("div", {class: "hidden", role: "status", id: "key-message"});
    const rows = keys.map(k => h("tr", {"data-key": k.id},
      h("td", {}, k.id), h("td", {class: "wrap"}, k.name || "—"), h("td", {}, k.agent || "any"),
      h("td", {class: "wrap"}, k.models ? k.models.join(", ") : "any"),
      h("td", {}, [k.rpm ? `${k.rpm} rpm` : "", k.tpm ? `${k.tpm} tpm` : ""].filter(Boolean).join(", ") || "—"),
      h("td", {}, when(k.expires_at)), h("td", {}, h("span", {class: `badge ${k.state}`}, k.state)),
      h("td", {}, state.access === "write" && k.state === "active" ? h("button", {type: "button", class: "danger",
        "aria-label": `Revoke ${k.id}`, onclick: async () => {
          try { await api(`/admin/keys/${F().enc(k.id)}`, {method: "DELETE"}); F().route(); }
          catch (err) { message.textContent = err.message; message.className = "error"; }
        }}, "Revoke") : "")));
    const field = id => form.querySelector("#" + id).value.trim();
    const form = h("form", {id: "key-form", onsubmit: async (e) => {
      e.preventDefault();
      const body = {project};
      if (field("key-name")) body.name = field("key-name");
      if (field("key-agent")) body.agent = field("key-agent");
      if (field("key-models")) body.models = field("key-models").split(/[\s,]+/).filter(Boolean);
      for (const r of ["rpm", "tpm"]) if (field("key-" + r)) body[r] = Number(field("key-" + r));
      if (field("key-expires")) body.expires_in = field("key-expires");
      try {
        const made = await api("/admin/keys", {method: "POST", body});
        await F().route();
        const shown = document.getElementById("key-message");
        shown.replaceChildren(h("strong", {}, `Key ${made.id} created. `), "Copy its secret now, it is not shown again: ",
          h("span", {class: "secret", id: "key-secret"}, made.key));
        shown.className = "notice";
      } catch (err) { message.textContent = err.message; message.className = "error"; }
    }},
      h("h3", {}, "Create a key"),
      h("div", {class: "form-row"}, input("key-name", "Name", {type: "text"}), input("key-agent", "Agent (optional)", {type: "text"}),
        input("key-models", "Models (patterns, optional)", {type: "text", placeholder: "gpt-4o*"})),
      h("div", {class: "form-row"}, input("key-rpm", "Requests per minute", {type: "number", min: 1}),
        input("key-tpm", "Tokens per minute", {type: "number", min: 1}),
        input("key-expires", "Expires in (e.g. 30d)", {type: "text"})),
      h("button", {type: "submit"}, "Create key"));
    return panel("keys", "Keys", message,
      keys.length ? table("keys-table", ["Id", "Name", "Agent", "Models", "Limits", "Expires", "State", ""], rows,
        [false, false, false, false, false, false, false, false]) : h("p", {class: "muted"}, "No farebox key for this project."),
      state.access === "write" ? form : h("p", {class: "muted"}, "Read-only token: keys can be viewed, not created or revoked."));
  }

  // -- the page --------------------------------------------------------------------------------
  // Hourly figures are kept HOURS_KEPT hours (farebox's default ttl_hour_s): hourly points start
  // no earlier, and end with the current hour.
  const HOURS_KEPT = 48;

  function seriesRange(usage, granularity) {
    const what = PERIODS[usage.period].toLowerCase();
    if (granularity === "day") return {from: usage.period_start, to: usage.period_end, what};
    const hour = new Date();
    hour.setUTCMinutes(0, 0, 0);
    const next = new Date(hour.getTime() + 3600e3);
    const kept = new Date(hour.getTime() - (HOURS_KEPT - 1) * 3600e3);
    const start = new Date(usage.period_start);
    const end = new Date(Math.min(next.getTime(), new Date(usage.period_end).getTime()));
    const iso = d => d.toISOString().replace(/\.\d+Z$/, "Z");
    if (start >= kept) return {from: usage.period_start, to: iso(end), what};
    return {from: iso(kept), to: iso(end), what: `${what}, last ${HOURS_KEPT} hours (hourly figures are kept ${HOURS_KEPT} h)`};
  }

  async function render(view, project, params) {
    const {h, api, enc, usd, count, card, when} = F();
    const period = PERIODS[params.get("period")] ? params.get("period") : "month";
    const granularity = ["hour", "day"].includes(params.get("granularity")) ? params.get("granularity")
      : (period === "day" ? "hour" : "day");
    const p = enc(project);
    const [usage, budgets, alerts, recent, keys] = await Promise.all([
      api(`/admin/usage?scope=project&id=${p}&period=${period}&top=10`),
      api(`/admin/budgets?project=${p}`), api(`/admin/alerts?project=${p}`),
      api(`/admin/events/recent?project=${p}&limit=20`), api(`/admin/keys?project=${p}`)]);
    const range = seriesRange(usage, granularity);
    const [series, ...forecasts] = await Promise.all([
      api(`/admin/usage/series?scope=project&id=${p}&granularity=${granularity}&from=${enc(range.from)}&to=${enc(range.to)}`),
      ...budgets.budgets.map(b => api(`/admin/forecast?scope=${b.scope}&id=${enc(b.id)}&period=${b.period === "total" ? "month" : b.period}`))]);
    const go = () => {
      location.hash = `#/project/${p}?period=${document.getElementById("range-period").value}` +
        `&granularity=${document.getElementById("range-granularity").value}`;
    };
    const points = series.points.map(pt => ({
      label: granularity === "hour" ? pt.start.slice(11, 13) + "h" : pt.start.slice(5, 10),
      values: [Number(pt.cost_usd)],
      title: `${when(pt.start)}: $${pt.cost_usd}, ${pt.requests} requests`}));
    const form = budgetForm(project);
    const sessions = usage.top_sessions.map(s => h("tr", {"data-session": s.session}, h("td", {}, s.session),
      h("td", {class: "num"}, count(s.requests)), h("td", {class: "num"}, count(s.prompt_tokens)),
      h("td", {class: "num"}, count(s.completion_tokens)), h("td", {class: "num", "data-field": "cost_usd"}, usd(s.cost_usd))));
    const chartTitle = `Spend per ${granularity}, ${range.what}`;
    view.replaceChildren(
      h("p", {}, h("a", {href: "#/"}, "← Overview")),
      h("h1", {}, "Project ", h("span", {id: "project-id"}, project)),
      h("div", {class: "controls"},
        select("range-period", "Range", PERIODS, period, go),
        select("range-granularity", "Points", {hour: "per hour", day: "per day"}, granularity, go),
        h("p", {class: "muted"}, `${when(usage.period_start)} to ${when(usage.period_end)}`)),
      h("div", {class: "cards"},
        card(`Spend, ${PERIODS[period].toLowerCase()}`, usd(usage.cost_usd), "cost_usd"),
        card("Requests", count(usage.requests), "requests"),
        card("Tokens (prompt + completion)", count(usage.total_tokens), "total_tokens"),
        card("Estimated usage", count(usage.estimated_requests) + " requests", "estimated_requests")),
      panel("series", chartTitle, Charts().bars({points, label: chartTitle})),
      h("div", {class: "grid"}, breakdown("by-model", "By model (LLM calls)", usage.by_model, "model"),
        breakdown("by-agent", "By agent", usage.by_agent, "agent")),
      resourcesPanel(usage),
      panel("budgets", "Budgets",
        budgets.budgets.length ? budgets.budgets.map((b, i) => gauge(project, b, forecasts[i], form))
          : h("p", {class: "muted"}, "No budget in this project."),
        form.node),
      panel("sessions", "Top sessions", sessions.length ? table("sessions-table",
        ["Session", "Requests", "Prompt tokens", "Completion tokens", "Cost"], sessions, [false, true, true, true, true])
        : h("p", {class: "muted"}, "No session spent in this period.")),
      eventsPanel(project, recent),
      alertsPanel(alerts.alerts, alerts.deliveries || []),
      keysPanel(project, keys.keys));
  }

  window.FareboxProject = {render};
})();
