// Iron Cage dashboard: plain JavaScript, no build step.
// Every piece of data reaches the page through textContent or an attribute, never as markup.
"use strict";

const SESSION_KEY = "iron.session";
const FEED_LIMIT = 100;
const RECONNECT_MAX_MS = 10000;
const AUTH_CLOSE_CODES = new Set([4401, 4403]);

const state = {
  session: null, // {token, user: {id, email, role, name}}
  agents: new Map(), // id -> AgentState from the feed
  hours: new Array(24).fill(0), // today's spend per UTC hour, USD
  chartHasData: false,
  socket: null,
  reconnectMs: 500,
};

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "className") node.className = value;
    else if (key.startsWith("data-") || key === "type" || key === "placeholder" || key === "aria-label") {
      node.setAttribute(key, value);
    } else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

const usd = (n, places = 2) => `$${Number(n).toFixed(places)}`;
const clock = (iso) => new Date(iso).toISOString().slice(11, 19);

// --- REST ----------------------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (state.session) headers.Authorization = `Bearer ${state.session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.status === 401 && state.session) signOut(false);
  return { status: response.status, ok: response.ok, data };
}

function errorText(result) {
  const error = result.data && result.data.error;
  if (!error) return `Request failed (${result.status})`;
  const fields = error.fields ? Object.entries(error.fields).map(([k, v]) => `${k}: ${v}`) : [];
  return [error.message, ...fields].join("; ");
}

// --- sign in / out ---------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  $("sign-in-error").textContent = "";
  const result = await api("POST", "/api/v1/auth/login", {
    email: $("email").value,
    password: $("password").value,
  });
  if (!result.ok) {
    $("sign-in-error").textContent = errorText(result);
    return;
  }
  state.session = { token: result.data.user_token, user: result.data.user };
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(state.session));
  $("password").value = "";
  start();
}

function signOut(callServer = true) {
  if (callServer && state.session) api("POST", "/api/v1/auth/logout").catch(() => {});
  sessionStorage.removeItem(SESSION_KEY);
  state.session = null;
  if (state.socket) state.socket.close(1000);
  state.socket = null;
  state.agents.clear();
  $("board").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("who").textContent = "";
  setLive("off", "offline");
}

function start() {
  const { user } = state.session;
  $("who").textContent = `${user.name || user.email} (${user.role})`;
  $("sign-in").hidden = true;
  $("sign-out").hidden = false;
  $("board").hidden = false;
  connect();
  loadRequests();
  loadChart();
}

// --- the live feed ---------------------------------------------------------------------------

function setLive(kind, text) {
  $("live").dataset.state = kind;
  $("live").textContent = text;
}

function connect() {
  if (!state.session) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws`);
  state.socket = socket;
  setLive("connecting", "connecting");
  socket.addEventListener("open", () => {
    socket.send(JSON.stringify({ type: "auth", token: state.session.token }));
  });
  socket.addEventListener("message", (event) => onMessage(JSON.parse(event.data)));
  socket.addEventListener("close", (event) => {
    if (state.socket !== socket) return; // replaced or signed out
    state.socket = null;
    if (AUTH_CLOSE_CODES.has(event.code)) {
      signOut(false);
      return;
    }
    setLive("off", "reconnecting");
    setTimeout(connect, state.reconnectMs);
    state.reconnectMs = Math.min(state.reconnectMs * 2, RECONNECT_MAX_MS);
  });
}

const handlers = {
  STATE_UPDATE(message) {
    state.agents.clear();
    for (const agent of message.agents) state.agents.set(agent.id, agent);
    state.reconnectMs = 500;
    setLive("on", "live");
    renderAgents();
  },
  AGENT_EVENT(message) {
    updateAgent(message.agent);
    addToChart(message.timestamp, message.cost_usd);
    addFeed(message, `${message.agent.name}: ${message.model}, ${message.input_tokens + message.output_tokens} tokens, ${usd(message.cost_usd, 6)}`);
  },
  COST_ALERT(message) {
    updateAgent(message.agent);
    addFeed(message, `${message.agent.name} reached ${message.threshold_percent}% of its budget (${message.level})`, message.level);
  },
  BUDGET_REQUEST(message) {
    updateAgent(message.agent);
    addFeed(message, `Budget request for ${message.agent.name} ${message.action}: ${usd(message.requested_budget)}`);
    loadRequests();
  },
  LEASE(message) {
    updateAgent(message.agent);
    addFeed(message, `Lease ${message.action} for ${message.agent.name}: ${usd(message.amount, 6)}`);
  },
  AGENT_UPDATED(message) {
    const { user } = state.session;
    const { agent } = message;
    // deleted, or given to another owner: no longer this user's to see (admins see every agent)
    const gone = message.action === "deleted" || (user.role !== "admin" && agent.owner_id !== user.id);
    if (gone) removeAgent(agent.id);
    else updateAgent(agent);
    const what = {
      created: "created",
      updated: gone ? "moved to another owner" : "updated",
      budget_changed: `budget set to ${usd(agent.budget)}`,
      deleted: "deleted",
    }[message.action];
    addFeed(message, `Agent ${agent.name} ${what}`);
  },
  HEARTBEAT(message) {
    setLive("on", `live · ${clock(message.timestamp)}`);
  },
  ERROR(message) {
    addFeed(message, `Feed error: ${message.error.message}`, "critical");
  },
};

function onMessage(message) {
  const handle = handlers[message.type];
  if (handle) handle(message);
}

function addFeed(message, text, level) {
  const item = el("li", { className: `feed-item ${level || ""}`, "data-type": message.type },
    el("time", { text: clock(message.timestamp) }),
    el("span", { className: "kind", text: message.type }),
    el("span", { text }));
  const list = $("feed");
  list.prepend(item);
  while (list.children.length > FEED_LIMIT) list.lastChild.remove();
}

// --- agents and their budget bars ------------------------------------------------------------

function updateAgent(agent) {
  if (!agent) return;
  state.agents.set(agent.id, agent);
  const row = document.querySelector(`li[data-agent-id="${CSS.escape(agent.id)}"]`);
  if (row) fillAgentRow(row, agent);
  else renderAgents();
}

function removeAgent(agentId) {
  if (state.agents.delete(agentId)) renderAgents();
}

function level(percent) {
  if (percent >= 100) return "exhausted";
  if (percent >= 95) return "critical";
  if (percent >= 80) return "warning";
  return "ok";
}

function fillAgentRow(row, agent) {
  row.dataset.level = level(agent.percent_used);
  row.querySelector(".name").textContent = agent.name;
  row.querySelector(".spent").textContent = usd(agent.spent);
  row.querySelector(".budget").textContent = usd(agent.budget);
  row.querySelector(".percent").textContent = `${agent.percent_used.toFixed(1)}%`;
  row.querySelector(".remaining").textContent = `${usd(agent.remaining)} left`;
  const fill = row.querySelector(".fill");
  fill.style.width = `${Math.min(agent.percent_used, 100)}%`;
  row.querySelector(".bar").setAttribute("aria-valuenow", String(agent.percent_used));
}

function agentRow(agent) {
  const bar = el("div", { className: "bar" }, el("div", { className: "fill" }));
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  const row = el("li", { className: "agent", "data-agent-id": agent.id },
    el("div", { className: "agent-head" },
      el("span", { className: "name" }),
      el("span", { className: "figures" },
        el("span", { className: "spent" }), " of ", el("span", { className: "budget" }),
        " · ", el("span", { className: "percent" }), " · ", el("span", { className: "remaining" }))),
    bar);
  fillAgentRow(row, agent);
  return row;
}

function renderAgents() {
  const list = $("agents");
  const agents = [...state.agents.values()].sort((a, b) => a.name.localeCompare(b.name));
  list.replaceChildren(...agents.map(agentRow));
  $("agents-empty").hidden = agents.length > 0;
}

// --- the spending chart ----------------------------------------------------------------------

async function loadChart() {
  state.hours.fill(0);
  state.chartHasData = false;
  const result = await api("GET", "/api/v1/analytics/spending/timeseries?period=today&bucket=hour");
  if (result.ok && result.data && Array.isArray(result.data.points)) {
    const today = new Date().toISOString().slice(0, 10);
    for (const point of result.data.points) {
      if (point.start.slice(0, 10) !== today) continue;
      state.hours[new Date(point.start).getUTCHours()] += Number(point.cost_usd);
      if (point.requests > 0) state.chartHasData = true; // empty buckets come as zeros
    }
  }
  drawChart();
}

function addToChart(timestamp, cost) {
  const moment = new Date(timestamp);
  if (moment.toISOString().slice(0, 10) !== new Date().toISOString().slice(0, 10)) return;
  state.hours[moment.getUTCHours()] += cost;
  state.chartHasData = true;
  drawChart();
}

function svg(tag, attrs, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawChart() {
  const chart = $("chart");
  const width = 720, height = 180, top = 16, bottom = 20, left = 8;
  const slot = (width - left) / 24;
  const max = Math.max(...state.hours, 0);
  const parts = [svg("line", { x1: left, x2: width, y1: height - bottom, y2: height - bottom, class: "axis" })];
  state.hours.forEach((cost, hour) => {
    const h = max > 0 ? ((height - top - bottom) * cost) / max : 0;
    if (cost > 0) {
      const bar = svg("rect", {
        x: left + hour * slot + 2, y: height - bottom - h, width: slot - 4, height: Math.max(h, 1),
        class: "chart-bar", "data-hour": hour,
      });
      bar.append(svg("title", {}, `${String(hour).padStart(2, "0")}:00 UTC: ${usd(cost, 4)}`));
      parts.push(bar);
    }
    if (hour % 3 === 0) {
      parts.push(svg("text", { x: left + hour * slot + slot / 2, y: height - 4, class: "tick" }, `${String(hour).padStart(2, "0")}h`));
    }
  });
  if (max > 0) parts.push(svg("text", { x: width - 4, y: 12, class: "max" }, `max ${usd(max, 4)}`));
  chart.replaceChildren(...parts);
  $("chart-empty").hidden = state.chartHasData;
}

// --- budget requests -------------------------------------------------------------------------

async function loadRequests() {
  if (!state.session) return;
  const result = await api("GET", "/api/v1/budget-requests?status=pending&per_page=100&sort=created_at");
  if (!result.ok) {
    $("requests-error").textContent = errorText(result);
    return;
  }
  $("requests-error").textContent = "";
  const rows = result.data.data.map(requestRow);
  $("requests").querySelector("tbody").replaceChildren(...rows);
  $("requests").hidden = rows.length === 0;
  $("requests-empty").hidden = rows.length > 0;
}

function requestRow(request) {
  const actions = el("td", { className: "actions" });
  if (state.session.user.role === "admin") {
    const notes = el("input", { type: "text", placeholder: "notes (needed to reject)", className: "notes", "aria-label": "Review notes" });
    const approve = el("button", { type: "button", className: "approve", text: "Approve" });
    const reject = el("button", { type: "button", className: "reject", text: "Reject" });
    approve.addEventListener("click", () => review(request.id, "approve", notes.value, [approve, reject]));
    reject.addEventListener("click", () => review(request.id, "reject", notes.value, [approve, reject]));
    actions.append(notes, approve, reject);
  }
  return el("tr", { "data-request-id": request.id },
    el("td", { text: request.agent_name }),
    el("td", { text: usd(request.current_budget) }),
    el("td", { text: usd(request.requested_budget) }),
    el("td", { className: "justification", text: request.justification }),
    el("td", { text: request.requester_name || request.requester_id }),
    actions);
}

async function review(requestId, verb, notes, buttons) {
  for (const button of buttons) button.disabled = true;
  const body = notes ? { review_notes: notes } : {};
  const result = await api("PUT", `/api/v1/budget-requests/${encodeURIComponent(requestId)}/${verb}`, body);
  $("requests-error").textContent = result.ok ? "" : errorText(result);
  if (!result.ok) for (const button of buttons) button.disabled = false;
  loadRequests();
}

// --- start -----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut(true));
  drawChart();
  const saved = sessionStorage.getItem(SESSION_KEY);
  if (saved) {
    try {
      state.session = JSON.parse(saved);
      start();
    } catch {
      sessionStorage.removeItem(SESSION_KEY);
    }
  }
});
