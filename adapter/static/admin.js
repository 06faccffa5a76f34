// hooktrack admin page: plain DOM, no build step, no third-party code.
// The admin token lives in sessionStorage (this tab only) and goes out as a bearer header.
// Every value from the API is written with textContent, never parsed as HTML, and through
// visible(): control, invisible and bidi-reordering characters a provider put in an event type,
// id or body are shown as \uXXXX instead of reordering or hiding what the operator reads.
"use strict";

const TOKEN_KEY = "hooktrack.admin.token";
const POLL_MS = 5000;
const SVG_NS = "http://www.w3.org/2000/svg";
const SERIES = [["accepted", "accepted"], ["ignored", "ignored"], ["failed", "failed"]];

const $ = (sel) => document.querySelector(sel);
// C0/C1 controls except tab and newline, DEL, zero-width, bidi overrides and isolates, BOM.
const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]/g;
const visible = (text) => String(text).replace(UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
const view = { oldest: null, paged: false, lastTotal: null, timer: null, hours: [] };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = visible(v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c !== null && c !== undefined && c !== false) node.append(c instanceof Node ? c : visible(c));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function when(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "-";
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "none";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function badge(word) {
  return el("span", { class: `badge ${word || "none"}`, text: word || "-" });
}

function flash(message, kind) {
  const box = $("#flash");
  box.textContent = message;
  box.className = `flash ${kind || ""}`;
  box.hidden = false;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

// -- session -------------------------------------------------------------------------

class Unauthorized extends Error {}

async function api(path, options) {
  const opts = options || {};
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ""}` };
  if (opts.body) headers["Content-Type"] = "application/json";
  const res = await fetch(`api${path}`, { method: opts.method || "GET", headers, body: opts.body,
                                           cache: "no-store", credentials: "omit" });
  if (res.status === 401) {
    logout("That token was refused. Log in again.");
    throw new Unauthorized();
  }
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((data.error && data.error.message) || `${res.status} ${res.statusText}`);
  return data;
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(view.timer);
  view.timer = null;
  $("#app").hidden = true;
  $("#session").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  $("#token").value = "";
  $("#token").focus();
}

async function login(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    await refreshCounts(true);
  } catch (err) {
    if (!(err instanceof Unauthorized)) $("#login-error").textContent = err.message;
    return;
  }
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#session").hidden = false;
  drawChart(view.hours);  // now that the page is visible, at its real width
  clearInterval(view.timer);
  view.timer = setInterval(() => refreshCounts(false).catch(() => {}), POLL_MS);
  route();
}

// -- live counts and the chart ---------------------------------------------------------

function filters() {
  const form = new FormData($("#filters"));
  return Object.fromEntries([...form.entries()].filter(([, v]) => v !== ""));
}

async function refreshCounts(first) {
  const since = filters().since;
  const stats = await api(`/stats${since ? `?since=${encodeURIComponent(since)}` : ""}`);
  if (first) fillSources(stats.configured_sources || {});
  for (const [key, value] of Object.entries(stats.events)) setCount(key, value);
  setCount("pending", stats.outbox.pending);
  setCount("dead", stats.outbox.dead);
  setCount("oldest", age(stats.outbox.oldest_pending_age_s));
  const paused = (stats.destinations || []).filter((d) => d.paused_reason);
  $("#paused").hidden = !paused.length;
  $("#paused").textContent = paused.map((d) => `Sending to ${d.name} is paused: ${d.paused_reason}. `
    + "Nothing is dead-lettered; one probe goes out every pause_probe_s and sending resumes by itself.").join(" ");
  const replayAll = $("#replay-all");
  replayAll.hidden = !stats.outbox.dead;
  if (!replayAll.dataset.confirm) replayAll.textContent = `Replay all ${stats.outbox.dead} dead`;
  $("#refreshed").textContent = `updated ${when(stats.generated_at).slice(11)} UTC`;
  view.hours = (await api("/stats/hourly?hours=24")).hours;
  if (!$("#app").hidden) drawChart(view.hours);
  const total = Object.values(stats.events).reduce((a, b) => a + b, 0) + stats.outbox.dead + stats.outbox.pending;
  if (!first && total !== view.lastTotal && !$("#list-view").hidden && !view.paged) {
    loadEvents().catch(() => {});
  }
  view.lastTotal = total;
}

function setCount(key, value) {
  const box = document.querySelector(`[data-count="${key}"] b`);
  if (box) box.textContent = String(value);
  const card = document.querySelector(`[data-count="${key}"]`);
  if (card && key === "dead") card.classList.toggle("alarm", Number(value) > 0);
}

function fillSources(sources) {
  const select = $("#filters select[name=source]");
  if (select.options.length > 1) return;
  for (const [name, provider] of Object.entries(sources)) {
    select.append(el("option", { value: name, text: name === provider ? name : `${name} (${provider})` }));
  }
}

function drawChart(hours) {
  const box = $("#chart");
  const width = Math.max(480, Math.round(box.clientWidth || 720)), height = 180, left = 34, bottom = 22, top = 8;
  const max = Math.max(1, ...hours.map((h) => Math.max(h.accepted, h.ignored, h.failed)));
  const slot = (width - left) / hours.length;
  const bar = Math.max(1, (slot - 4) / SERIES.length);
  const y = (v) => top + (height - top - bottom) * (1 - v / max);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
                             "aria-label": "accepted, ignored and failed events per hour" });
  for (const tick of [0, Math.ceil(max / 2), max]) {
    chart.append(svg("line", { x1: left, x2: width, y1: y(tick), y2: y(tick), class: "grid" }));
    chart.append(svg("text", { x: left - 6, y: y(tick) + 4, "text-anchor": "end", class: "axis" }, tick));
  }
  hours.forEach((h, i) => {
    const x0 = left + i * slot + 2;
    SERIES.forEach(([key, css], j) => {
      if (!h[key]) return;
      const rect = svg("rect", { x: x0 + j * bar, y: y(h[key]), width: bar, height: y(0) - y(h[key]),
                                 class: `bar ${css}`, "data-series": key, "data-hour": h.start });
      rect.append(svg("title", {}, `${when(h.start).slice(0, 13)}:00 UTC — ${h[key]} ${key}`));
      chart.append(rect);
    });
    if (i % 3 === 0) {
      chart.append(svg("text", { x: x0 + slot / 2, y: height - 6, "text-anchor": "middle", class: "axis" },
                       `${new Date(h.start).getUTCHours()}h`));
    }
  });
  const legend = el("p", { class: "legend" },
    SERIES.map(([key, css]) => el("span", { class: `key ${css}`, text: key })));
  box.replaceChildren(chart, legend);
}

// -- the events list ---------------------------------------------------------------------

function conversionSummary(c) {
  const reason = c.reason ? ` (${c.reason})` : "";
  return el("div", { class: "conv" }, `${c.kind} #${c.id} ${c.event_name} → `, badge(c.state), reason);
}

async function loadEvents(more) {
  const params = new URLSearchParams({ ...filters(), limit: "50" });
  if (more && view.oldest) params.set("before", String(view.oldest));
  const data = await api(`/events?${params}`);
  const body = $("#events");
  if (!more) body.replaceChildren();
  for (const ev of data.events) {
    const event = el("td", {}, ev.event_type || "-", el("div", { class: "muted mono", text: ev.provider_event_id || "" }));
    const reason = ev.reason || (ev.duplicate_of ? `same as #${ev.duplicate_of}` : "-");
    body.append(el("tr", { "data-event": ev.id, "data-status": ev.status, onclick: () => { location.hash = `#event/${ev.id}`; } },
      el("td", {}, el("a", { href: `#event/${ev.id}`, text: `#${ev.id}` })),
      el("td", { class: "mono", text: when(ev.received_at) }),
      el("td", { text: ev.source }), event, el("td", {}, badge(ev.status)), el("td", { text: reason }),
      el("td", {}, ev.conversions.length ? ev.conversions.map(conversionSummary) : "-")));
  }
  view.paged = Boolean(more);
  view.oldest = data.events.length === 50 ? data.events[data.events.length - 1].id : null;
  $("#empty").hidden = body.children.length > 0;
  $("#more").hidden = view.oldest === null;
}

// -- one event's journey -----------------------------------------------------------------

function pretty(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch (e) { return text; }
}

function facts(pairs) {
  return el("dl", { class: "facts" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
}

function verdict(ev) {
  if (ev.status === "accepted") {
    const dead = ev.conversions.filter((c) => c.state === "dead").length;
    const pending = ev.conversions.filter((c) => c.state === "pending").length;
    if (dead) return `Accepted, but ${dead} conversion(s) were dead-lettered: the tracking API refused them. Fix the cause, then replay below.`;
    if (pending) return `Accepted: ${pending} conversion(s) are waiting in the outbox to be sent.`;
    return `Accepted: ${ev.conversions.length} conversion(s) were sent.`;
  }
  if (ev.status === "duplicate" && ev.duplicate_of) return `A redelivery of event #${ev.duplicate_of}: nothing new was stored or sent.`;
  return `${ev.status[0].toUpperCase()}${ev.status.slice(1)}: ${ev.reason_text || ev.reason || "no reason recorded"}`;
}

function attemptsTable(attempts) {
  if (!attempts.length) return el("p", { class: "muted", text: "No delivery attempt yet." });
  return el("table", { class: "attempts" },
    el("thead", {}, el("tr", {}, ["time (UTC)", "outcome", "HTTP", "latency", "response"].map((h) => el("th", { text: h })))),
    el("tbody", {}, attempts.map((a) => el("tr", { "data-outcome": a.outcome },
      el("td", { class: "mono", text: when(a.attempted_at) }), el("td", {}, badge(a.outcome)),
      el("td", { text: a.status_code === null ? "-" : a.status_code }), el("td", { text: `${a.latency_ms} ms` }),
      el("td", { class: "mono excerpt", text: a.response_excerpt || a.error || "" })))));
}

function conversionCard(ev, c) {
  const card = el("article", { class: "conversion", "data-conversion": c.id, "data-state": c.state },
    el("h3", {}, `${c.kind} #${c.id} · ${c.event_name} `, badge(c.state)),
    facts([["why", c.reason ? `${c.reason}: ${c.reason_text}` : null],
           ["customerExternalId", c.customer_external_id], ["Idempotency-Key", el("code", { text: c.idempotency_key })],
           ["attempts", String(c.attempts)], ["delivered", c.delivered_at ? when(c.delivered_at) : null]]));
  if (c.state === "dead") {
    card.append(el("button", { type: "button", class: "replay", "data-replay": c.id,
                               onclick: (e) => replay(ev.id, [c.id], e.currentTarget) }, "Replay this conversion"));
  }
  card.append(el("h4", { text: "What was sent" }), el("pre", { text: JSON.stringify(c.payload, null, 2) }),
              el("h4", { text: "Attempts" }), attemptsTable(c.attempts_log));
  return card;
}

async function showJourney(id) {
  const ev = await api(`/events/${id}`);
  const out = $("#journey");
  out.replaceChildren(
    el("h2", {}, `Event #${ev.id} · ${ev.source} · ${ev.event_type || "unreadable"} `, badge(ev.status)),
    el("p", { class: `verdict ${ev.status}${ev.conversions.some((c) => c.state === "dead") ? " dead" : ""}`,
              text: verdict(ev) }),
    facts([["provider", ev.provider], ["provider event id", ev.provider_event_id],
           ["received", `${when(ev.received_at)} UTC`], ["occurred", ev.occurred_at ? `${when(ev.occurred_at)} UTC` : null],
           ["livemode", ev.livemode === null ? null : String(ev.livemode)], ["reason", ev.reason],
           ["original", ev.duplicate_of ? el("a", { href: `#event/${ev.duplicate_of}`, text: `event #${ev.duplicate_of}` }) : null]]),
    el("h3", { text: "What arrived" }),
    ev.body === null
      ? el("p", { class: "muted", text: ev.status === "rejected"
          ? "Not stored: the body of a request that failed verification is never kept."
          : "Not stored (a redelivery, or pruned by retention)." })
      : el("details", { open: true }, el("summary", { text: "provider payload" }), el("pre", { text: pretty(ev.body) })),
    el("h3", { text: ev.conversions.length ? "Conversions" : "Nothing was sent" }),
    ...ev.conversions.map((c) => conversionCard(ev, c)));
  return ev;
}

async function replay(eventId, ids, button) {
  button.disabled = true;
  button.textContent = "Replaying…";
  try {
    const res = await api("/replay", { method: "POST", body: JSON.stringify({ ids }) });
    flash(res.requeued.length ? `Requeued ${res.requeued.join(", ")}: sending now.` : "Nothing to replay (not dead any more).");
    for (let i = 0; i < 60; i += 1) {
      const ev = await showJourney(eventId);
      if (ev.conversions.every((c) => !ids.includes(c.id) || c.state !== "pending")) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    refreshCounts(false).catch(() => {});
  } catch (err) {
    if (!(err instanceof Unauthorized)) flash(`Replay failed: ${err.message}`, "bad");
    button.disabled = false;
  }
}

async function replayAll(button) {
  if (!button.dataset.confirm) {
    button.dataset.confirm = "1";
    button.textContent = "Click again to replay every dead conversion";
    setTimeout(() => { delete button.dataset.confirm; }, 5000);
    return;
  }
  delete button.dataset.confirm;
  const body = { dead: true };
  if (filters().source) body.source = filters().source;
  const res = await api("/replay", { method: "POST", body: JSON.stringify(body) });
  flash(`Requeued ${res.requeued.length} conversion(s): sending now.`);
  await refreshCounts(false);
  await loadEvents();
}

// -- routing -------------------------------------------------------------------------------

async function route() {
  if (!sessionStorage.getItem(TOKEN_KEY)) return;
  const match = location.hash.match(/^#event\/(\d+)$/);
  $("#journey-view").hidden = !match;
  $("#list-view").hidden = Boolean(match);
  try {
    if (match) await showJourney(match[1]);
    else await loadEvents();
  } catch (err) {
    if (!(err instanceof Unauthorized)) flash(err.message, "bad");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  // `hooktrack demo --serve` prints a link with #token=...: take it, then drop it from the address bar.
  const given = location.hash.match(/^#token=(.+)$/);
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(given[1]));
    history.replaceState(null, "", location.pathname);
  }
  $("#login-form").addEventListener("submit", (e) => { e.preventDefault(); login($("#token").value.trim()); });
  $("#logout").addEventListener("click", () => logout());
  $("#filters").addEventListener("change", () => {
    loadEvents().catch((err) => flash(err.message, "bad"));
    refreshCounts(false).catch(() => {});
  });
  $("#more").addEventListener("click", () => loadEvents(true).catch((err) => flash(err.message, "bad")));
  $("#replay-all").addEventListener("click", (e) => replayAll(e.currentTarget).catch((err) => flash(err.message, "bad")));
  window.addEventListener("hashchange", route);
  window.addEventListener("resize", () => { if (!$("#app").hidden) drawChart(view.hours); });
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) login(token); else logout();
});
