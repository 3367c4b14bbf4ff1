// The gateway's dashboard: reads /-/routes, /-/upstreams, /-/stats and /-/errors every few
// seconds and draws them. No framework, no build step. Every value from the gateway goes
// into the page as text (textContent), never as HTML: error paths are chosen by clients.
"use strict";

const INTERVAL_MS = 2000;
const WINDOW_MS = 5 * 60 * 1000; // how far back the charts and the req/s, 5xx % columns look
const TOKEN_KEY = "gateway.admin.token";
const SVG = "http://www.w3.org/2000/svg";

const samples = []; // [{t: ms, routes: {name: stats}}], oldest first, within WINDOW_MS
let timer = null;

// --- fetching, with the admin token when one is kept ---

class Unauthorized extends Error {}

async function getJson(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const answer = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
  if (answer.status === 401) throw new Unauthorized(path);
  if (!answer.ok) throw new Error(path + ": HTTP " + answer.status);
  return answer.json();
}

async function refresh() {
  try {
    const [routes, upstreams, stats, errors] = await Promise.all(
      ["/-/routes", "/-/upstreams", "/-/stats", "/-/errors"].map(getJson));
    remember(stats);
    drawRoutes(routes.routes, stats);
    drawUpstreams(upstreams.upstreams);
    drawErrors(errors.errors);
    text(byId("in-flight"), "in flight: " + stats.in_flight);
    text(byId("status"), "updated " + new Date().toLocaleTimeString());
    byId("status").className = "muted";
    showToken(false);
  } catch (error) {
    if (error instanceof Unauthorized) {
      showToken(true, sessionStorage.getItem(TOKEN_KEY) ? "that token was refused" : "");
      return; // stop polling until a token is given
    }
    text(byId("status"), "cannot reach the admin API: " + error.message);
    byId("status").className = "bad";
  }
  schedule();
}

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(refresh, INTERVAL_MS);
}

function showToken(needed, message) {
  byId("token-form").hidden = !needed;
  byId("main").hidden = needed;
  byId("forget-token").hidden = needed || !sessionStorage.getItem(TOKEN_KEY);
  if (needed) {
    text(byId("status"), "admin token required");
    text(byId("token-error"), message || "");
  }
}

// --- the window of samples ---

function remember(stats) {
  const now = Date.now();
  samples.push({ t: now, routes: stats.routes });
  while (samples.length > 2 && now - samples[0].t > WINDOW_MS) samples.shift();
}

// Per interval between two samples: req/s, 5xx/s, p50 and p99 of the requests in it.
function series(name) {
  const points = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1].routes[name], b = samples[i].routes[name];
    if (!a || !b || b.requests < a.requests) continue; // new route, or the gateway restarted
    const seconds = (samples[i].t - samples[i - 1].t) / 1000;
    const buckets = b.buckets.map(([le, count], k) => [le, count - ((a.buckets[k] || [le, 0])[1])]);
    points.push({
      t: samples[i].t,
      rate: (b.requests - a.requests) / seconds,
      errors: (b.errors_5xx - a.errors_5xx) / seconds,
      p50: quantile(0.5, buckets),
      p99: quantile(0.99, buckets),
    });
  }
  return points;
}

// Prometheus' histogram_quantile over cumulative [le, count] buckets, +Inf last (gateway/stats.py).
function quantile(q, buckets) {
  if (!buckets.length) return null;
  const total = buckets[buckets.length - 1][1];
  if (total <= 0) return null;
  const rank = q * total;
  let lowerBound = 0, lowerCount = 0;
  for (const [le, count] of buckets) {
    const bound = le === "+Inf" ? Infinity : Number(le);
    if (count >= rank && count > lowerCount) {
      if (bound === Infinity) return lowerBound;
      return lowerBound + (bound - lowerBound) * (rank - lowerCount) / (count - lowerCount);
    }
    if (bound !== Infinity) lowerBound = bound;
    lowerCount = count;
  }
  return lowerBound;
}

// --- drawing ---

function drawRoutes(routes, stats) {
  const body = document.querySelector("#routes tbody");
  const rows = routes.map((route) => {
    const s = stats.routes[route.name] || { requests: 0, errors_4xx: 0, errors_5xx: 0 };
    const points = series(route.name);
    const first = samples.find((h) => h.routes[route.name]);
    // a counter that went down means the gateway restarted: no window until new samples build one
    const windowRequests = first ? Math.max(0, s.requests - first.routes[route.name].requests) : 0;
    const windowErrors = windowRequests ? s.errors_5xx - first.routes[route.name].errors_5xx : 0;
    const last = points[points.length - 1];
    const tr = el("tr", { "data-route": route.name });
    tr.append(
      cell(route.name), cell(route.path, "path", { title: route.host === "*" ? route.path : route.host + route.path }),
      cell(route.methods.join(" ")), cell(route.target), cell(route.auth),
      number("requests", s.requests, String(s.requests)),
      number("errors_4xx", s.errors_4xx, String(s.errors_4xx)),
      number("errors_5xx", s.errors_5xx, String(s.errors_5xx), s.errors_5xx ? "bad" : ""),
      number("rate", last ? last.rate : 0, last ? last.rate.toFixed(1) : "–"),
      number("error_ratio", windowRequests ? windowErrors / windowRequests : 0,
        windowRequests ? (100 * windowErrors / windowRequests).toFixed(1) : "–"),
      number("p50", s.p50_seconds, ms(s.p50_seconds)),
      number("p99", s.p99_seconds, ms(s.p99_seconds)),
      chartCell(points, [["rate", "rate"], ["errors", "errors"]], (v) => v.toFixed(1) + "/s"),
      chartCell(points, [["p50", "p50"], ["p99", "p99"]], (v) => ms(v)),
    );
    return tr;
  });
  body.replaceChildren(...rows);
}

function drawUpstreams(upstreams) {
  const box = byId("upstreams");
  const blocks = Object.entries(upstreams).map(([name, upstream]) => {
    const div = el("div", { class: "upstream", "data-upstream": name });
    const h3 = el("h3");
    h3.append(name + " ", el("span", { class: upstream.ready ? "ok" : "bad" }, upstream.ready ? "ready" : "no healthy target"),
      el("span", { class: "muted" }, " · " + upstream.balance));
    const table = el("table");
    const head = el("tr");
    for (const h of ["target", "weight", "health", "circuit", "in flight"]) {
      head.append(el("th", h === "weight" || h === "in flight" ? { class: "num" } : {}, h));
    }
    table.append(el("thead", {}, head));
    const tbody = el("tbody");
    for (const t of upstream.targets) {
      const tr = el("tr", { "data-target": t.url });
      tr.append(
        cell(t.url), number("weight", t.weight, String(t.weight)),
        cell(t.healthy ? "healthy" : "unhealthy", t.healthy ? "ok" : "bad", { "data-field": "healthy" }),
        cell(t.circuit, t.circuit === "closed" ? "ok" : (t.circuit === "open" ? "bad" : "warn"), { "data-field": "circuit" }),
        number("in_flight", t.in_flight, String(t.in_flight)));
      tbody.append(tr);
    }
    table.append(tbody);
    div.append(h3, table);
    return div;
  });
  box.replaceChildren(...blocks);
}

function drawErrors(errors) {
  const body = document.querySelector("#errors tbody");
  body.replaceChildren(...errors.map((e) => {
    const tr = el("tr", { "data-request-id": e.request_id });
    tr.append(cell(new Date(e.ts * 1000).toLocaleTimeString()),
      number("status", e.status, String(e.status), e.status >= 500 ? "bad" : "warn"),
      cell(e.route || "–", "", { "data-field": "route" }), cell(e.method),
      cell(e.path, "path", { "data-field": "path", title: e.path }),
      cell(e.request_id, "", { "data-field": "request_id" }));
    return tr;
  }));
}

// A small line chart: one polyline per series, scaled to the largest value shown.
function chartCell(points, lines, label) {
  const width = 160, height = 36, now = Date.now();
  // the x axis spans the samples kept (up to WINDOW_MS), so a page open for a minute uses the whole chart
  const span = Math.min(WINDOW_MS, Math.max(now - (samples.length ? samples[0].t : now), 4 * INTERVAL_MS));
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  let top = 0;
  for (const p of points) for (const [key] of lines) if (p[key] != null) top = Math.max(top, p[key]);
  for (const [key, cls] of lines) {
    const coords = points.filter((p) => p[key] != null).map((p) => {
      const x = width - (now - p.t) / span * width;
      const y = height - 2 - (top ? p[key] / top : 0) * (height - 15);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", cls);
    line.setAttribute("points", coords.join(" "));
    svg.append(line);
  }
  const caption = document.createElementNS(SVG, "text");
  caption.setAttribute("x", 2);
  caption.setAttribute("y", 9);
  caption.textContent = top ? "max " + label(top) : "no traffic";
  svg.append(caption);
  const td = el("td");
  td.append(svg);
  return td;
}

// --- small helpers ---

function ms(seconds) {
  if (seconds == null) return "–";
  return seconds < 0.01 ? (seconds * 1000).toFixed(2) + " ms" : (seconds * 1000).toFixed(1) + " ms";
}

function byId(id) { return document.getElementById(id); }

function text(node, value) { node.textContent = value; }

function el(tag, attributes = {}, content) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (content instanceof Node) node.append(content);
  else if (content != null) node.textContent = String(content);
  return node;
}

function cell(value, cls = "", attributes = {}) {
  return el("td", cls ? { class: cls, ...attributes } : attributes, value);
}

function number(field, value, shown, cls = "") {
  return el("td", { class: ("num " + cls).trim(), "data-field": field, "data-value": value == null ? "" : String(value) }, shown);
}

// --- start ---

byId("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = byId("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  byId("token").value = "";
  refresh();
});

byId("forget-token").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(timer);
  refresh();
});

text(byId("window-minutes"), String(WINDOW_MS / 60000));
text(byId("interval-seconds"), String(INTERVAL_MS / 1000));
refresh();
