// courtside live dashboard. One page, four views chosen by the path:
//   /               scores, with a win-probability bar per match
//   /matches/{id}   one match: timeline, win probability after each event,
//                   top players by xT and by win probability added
//   /season         leaderboards and the Expected Threat heatmap
//   /ops            the operators' figures (polled while open)
// Match state arrives over one WebSocket: each match is subscribed once and,
// after a reconnect, resumed from the last sequence number seen (the server
// replays what was missed, or resyncs). Nothing is re-read on a timer except
// the list of match ids (to find new matches, from a cache the gateway shares
// among viewers) and the operators' view. Win probability is asked for when
// a match's score line changes, debounced; the gateway computes it once per
// state for every viewer.
"use strict";

const TOKEN_KEY = "courtside.readToken";
const MAX_SUBSCRIPTIONS = 64; // the gateway's limit per connection
const DISCOVERY_MS = 30000;
const WP_DEBOUNCE_MS = 400;
const REFRESH_MS = 5000; // leaderboards, at most this often while events flow
const OPS_POLL_MS = 3000;
const TIMELINE_KINDS = new Set(["kickoff", "goal", "card", "shot", "substitution", "period_end"]);
const TIMELINE_MAX = 40;

const matches = new Map(); // id -> entry (see newEntry)
let socket = null;
let attempts = 0;
let reconnectTimer = null;
let discoveryTimer = null;
let token = sessionStorage.getItem(TOKEN_KEY) || "";
let waitingForToken = false;
let view = { name: "scores" };
let opsTimer = null;
let opsPrevious = null;
let seasonTimer = null;

const $ = (selector, root = document) => root.querySelector(selector);
const pct = (p) => Math.round(p * 100) + "%";

class Unauthorized extends Error {}

function newEntry() {
  return {
    seq: 0, state: null, element: null, last: "",
    subscribed: false,
    wp: null, wpKey: "", wpTimer: null,
    // Detail view only: the events of the match, from a replay since 0.
    wantHistory: false, timeline: null, timelineSeq: 0, historyComplete: true,
    wpBySeq: new Map(), impactTimer: null,
  };
}

// --- API and the read token --------------------------------------------------

async function api(path) {
  const headers = token ? { authorization: "Bearer " + token } : {};
  const response = await fetch(path, { headers });
  if (response.status === 401) throw new Unauthorized(path);
  if (!response.ok) {
    const error = new Error(path + " answered " + response.status);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

function onApiError(err) {
  if (err instanceof Unauthorized) askForToken(token !== "");
}

function askForToken(refused) {
  waitingForToken = true;
  clearTimeout(reconnectTimer);
  clearTimeout(discoveryTimer);
  if (socket) { const old = socket; socket = null; old.close(); }
  setStatus("read token needed", "refused");
  const form = $("#token-form");
  form.hidden = false;
  $("#token-message").textContent = refused
    ? "The gateway refused that token. Check it and try again."
    : "";
  $("#token-input").focus();
}

$("#token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const candidate = $("#token-input").value.trim();
  if (!candidate) return;
  token = candidate;
  $("#token-message").textContent = "Checking…";
  try {
    await api("/v1/views/matches");
  } catch (err) {
    if (err instanceof Unauthorized) {
      sessionStorage.removeItem(TOKEN_KEY);
      $("#token-message").textContent = "The gateway refused that token. Check it and try again.";
      $("#token-input").select();
    } else {
      $("#token-message").textContent = "The gateway did not answer. Try again in a moment.";
    }
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#token-form").hidden = true;
  $("#token-message").textContent = "";
  waitingForToken = false;
  start();
});

// --- The live feed -----------------------------------------------------------

function setStatus(text, kind) {
  const el = $("#connection");
  el.textContent = text;
  el.className = "status " + kind;
}

function send(command) {
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify(command));
    return true;
  }
  return false;
}

function subscribe(id) {
  const entry = matches.get(id);
  if (!entry || entry.subscribed) return;
  const command = { op: "subscribe", match: id };
  if (entry.wantHistory && entry.timelineSeq === 0) command.since = 0;
  else if (entry.seq > 0) command.since = entry.seq;
  if (send(command)) entry.subscribed = true;
}

function track(id) {
  if (matches.has(id)) return;
  if (matches.size >= MAX_SUBSCRIPTIONS) return;
  matches.set(id, newEntry());
  subscribe(id);
}

async function discover() {
  clearTimeout(discoveryTimer);
  try {
    const body = await api("/v1/views/matches");
    for (const id of body.matches) track(id);
  } catch (err) {
    onApiError(err);
    if (waitingForToken) return;
  }
  // Jittered, so viewers who opened the page together do not ask together.
  discoveryTimer = setTimeout(discover, DISCOVERY_MS * (0.75 + Math.random() / 2));
}

function connect() {
  clearTimeout(reconnectTimer);
  if (waitingForToken) return;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = token ? "?token=" + encodeURIComponent(token) : "";
  const ws = new WebSocket(scheme + "//" + location.host + "/v1/live" + query);
  socket = ws;
  if (attempts === 0) setStatus("connecting…", "connecting");
  ws.onopen = () => {
    attempts = 0;
    setStatus("live", "open");
    for (const entry of matches.values()) entry.subscribed = false;
    for (const id of matches.keys()) subscribe(id);
    discover();
  };
  ws.onmessage = (event) => {
    let message;
    try { message = JSON.parse(event.data); } catch { return; }
    onMessage(message);
  };
  ws.onclose = () => {
    if (socket !== ws) return; // replaced on purpose
    socket = null;
    for (const entry of matches.values()) entry.subscribed = false;
    if (waitingForToken) return;
    // Exponential backoff with jitter: after a gateway restart, thousands
    // of pages come back spread over the window instead of all at once.
    attempts += 1;
    const ceiling = Math.min(30000, 500 * 2 ** Math.min(attempts, 6));
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    setStatus("reconnecting in " + Math.max(1, Math.round(delay / 1000)) + " s…", "closed");
    reconnectTimer = setTimeout(reconnect, delay);
  };
}

// A closed socket says nothing about why; a plain read tells a refused
// token (401) from a gateway that is still down.
async function reconnect() {
  try {
    await api("/v1/views/matches");
  } catch (err) {
    if (err instanceof Unauthorized) { askForToken(token !== ""); return; }
  }
  connect();
}

function onMessage(message) {
  if (message.type === "error") {
    // A subscribe refused for this address's rate: ask again when told,
    // with jitter, so pages behind one address do not come back together.
    // Other errors (a match that no longer exists) are final.
    const entry = message.code === "rate_limited" && matches.get(message.match);
    if (entry) {
      entry.subscribed = false;
      const delay = (message.retry_after || 1) * 1000 * (1 + Math.random());
      setTimeout(() => subscribe(message.match), delay);
    }
    return;
  }
  const id = message.match;
  const entry = id && matches.get(id);
  if (!entry) return;
  if (message.type === "subscribed" || message.type === "resync") {
    if (entry.wantHistory) {
      if (message.type === "subscribed" && message.since === 0) {
        entry.timeline = [];
        entry.historyComplete = message.recovered !== false;
        entry.timelineSeq = entry.historyComplete ? 0 : message.seq;
      } else if (message.type === "resync" || message.recovered === false) {
        entry.historyComplete = false;
        entry.timelineSeq = message.seq;
      }
    }
    entry.state = message.state;
    entry.seq = Math.max(entry.seq, message.seq);
    if (message.type === "resync") entry.seq = message.seq;
    render(id);
    scoreLineChanged(id);
    if (view.name === "match" && view.id === id) renderMatch();
    return;
  }
  if (message.type !== "event") return;
  if (entry.wantHistory && entry.timeline && message.seq > entry.timelineSeq) {
    entry.timelineSeq = message.seq;
    if (TIMELINE_KINDS.has(message.event.kind)) {
      entry.timeline.push({ seq: message.seq, event: message.event, state: message.state });
      if (entry.timeline.length > TIMELINE_MAX) entry.timeline.shift();
    }
    if (view.name === "match" && view.id === id) scheduleTimeline();
  }
  if (message.seq <= entry.seq) return; // a replay of what the card shows
  entry.seq = message.seq;
  entry.state = message.state;
  const text = describe(message.event, message.state);
  if (text) entry.last = text;
  render(id);
  if (message.event.kind === "goal" && entry.element) {
    entry.element.classList.add("goal");
    setTimeout(() => entry.element.classList.remove("goal"), 1500);
  }
  scoreLineChanged(id);
  if (view.name === "match" && view.id === id) { renderMatch(); scheduleImpact(id); }
  if (view.name === "season" && message.event.kind !== "kickoff") scheduleSeason();
}

// --- Win probability ---------------------------------------------------------

// When to ask again: a goal, a red card, or five more minutes on the clock.
// Passes and shots change nothing the probabilities depend on.
function lineKey(s) {
  return [Math.floor(s.minute / 5), s.score.home, s.score.away, s.red_cards.home, s.red_cards.away].join(":");
}

function scoreLineChanged(id) {
  const entry = matches.get(id);
  if (!entry || !entry.state) return;
  const key = lineKey(entry.state);
  if (key === entry.wpKey) return;
  entry.wpKey = key;
  clearTimeout(entry.wpTimer);
  entry.wpTimer = setTimeout(() => fetchWinProbability(id), WP_DEBOUNCE_MS + Math.random() * 200);
}

async function fetchWinProbability(id) {
  const entry = matches.get(id);
  if (!entry) return;
  try {
    const wp = await api("/v1/views/matches/" + encodeURIComponent(id) + "/win-probability");
    if (!entry.wp || wp.seq >= entry.wp.seq) entry.wp = wp;
    render(id);
    if (view.name === "match" && view.id === id) renderMatch();
  } catch (err) {
    onApiError(err);
    entry.wpKey = ""; // ask again on the next change
  }
}

function wpBar(container, wp, state) {
  container.classList.toggle("pending", !wp);
  if (!container.firstChild) {
    container.innerHTML =
      '<div class="wp-bar" role="img"><span class="home"></span><span class="draw"></span><span class="away"></span></div>' +
      '<div class="wp-labels"><span class="home"></span><span class="draw"></span><span class="away"></span></div>';
  }
  const p = wp ? wp.closed_form : { home_win: 1 / 3, draw: 1 / 3, away_win: 1 / 3 };
  const bar = $(".wp-bar", container);
  $(".home", bar).style.width = (p.home_win * 100).toFixed(1) + "%";
  $(".draw", bar).style.width = (p.draw * 100).toFixed(1) + "%";
  $(".away", bar).style.width = (p.away_win * 100).toFixed(1) + "%";
  bar.dataset.home = wp ? p.home_win.toFixed(4) : "";
  bar.dataset.seq = wp ? String(wp.seq) : "";
  const labels = $(".wp-labels", container);
  if (wp) {
    $(".home", labels).textContent = pct(p.home_win);
    $(".draw", labels).textContent = "draw " + pct(p.draw);
    $(".away", labels).textContent = pct(p.away_win);
    bar.setAttribute("aria-label", "Win probability: " + state.home.name + " " + pct(p.home_win) +
      ", draw " + pct(p.draw) + ", " + state.away.name + " " + pct(p.away_win));
  } else {
    $(".home", labels).textContent = "";
    $(".draw", labels).textContent = "win probability…";
    $(".away", labels).textContent = "";
    bar.setAttribute("aria-label", "Win probability not known yet");
  }
}

// --- Scores view ---------------------------------------------------------------

function render(id) {
  const entry = matches.get(id);
  if (!entry || !entry.state) return;
  const s = entry.state;
  if (!entry.element) {
    const card = document.createElement("a");
    card.className = "match";
    card.href = "/matches/" + encodeURIComponent(id);
    card.dataset.nav = "";
    card.dataset.match = id;
    card.innerHTML =
      '<div class="meta"><span class="status-text"></span><span class="minute"></span></div>' +
      '<div class="teams"><span class="team home"></span><span class="score"></span><span class="team away"></span></div>' +
      '<div class="wp"></div><div class="last"></div>';
    entry.element = card;
    $("#matches").prepend(card);
    $("#empty").hidden = true;
  }
  const el = entry.element;
  $(".status-text", el).textContent = s.status.replace("_", " ");
  $(".minute", el).textContent = s.minute + "'";
  // Names come from publishers: set as text, never as HTML.
  teamLabel($(".team.home", el), s.home.name, s.red_cards.home);
  teamLabel($(".team.away", el), s.away.name, s.red_cards.away);
  $(".score", el).textContent = s.score.home + " – " + s.score.away;
  $(".last", el).textContent = entry.last;
  wpBar($(".wp", el), entry.wp, s);
  el.setAttribute("aria-label", s.home.name + " " + s.score.home + ", " + s.away.name + " " + s.score.away +
    ", " + s.minute + " minutes, " + s.status.replace("_", " ") + ". Open the match.");
  el.dataset.seq = String(entry.seq);
}

function teamLabel(el, name, redCards) {
  el.textContent = name;
  for (let i = 0; i < redCards; i++) {
    const card = document.createElement("span");
    card.className = "redcard";
    card.title = "red card";
    card.setAttribute("role", "img");
    card.setAttribute("aria-label", "red card");
    el.append(card);
  }
}

function describe(event, state) {
  const team = event.team === state.home.id ? state.home.name : state.away.name;
  const who = event.player !== undefined ? " (player " + event.player + ")" : "";
  switch (event.kind) {
    case "kickoff": return "kick-off";
    case "goal": return event.minute + "' goal for " + team + who;
    case "card": return event.minute + "' " + event.card + " card, " + team + who;
    case "shot": return event.minute + "' shot by " + team + (event.on_target ? ", on target" : "");
    case "period_end": return event.period === 1 ? "half time" : "full time";
    case "substitution": return event.minute + "' substitution, " + team;
    default: return null;
  }
}

// --- Match view ----------------------------------------------------------------

async function openMatch(id) {
  let entry = matches.get(id);
  $("#match-title").textContent = "Loading…";
  try {
    const state = await api("/v1/matches/" + encodeURIComponent(id));
    if (!entry) { entry = newEntry(); matches.set(id, entry); }
    if (!entry.state) entry.state = state;
  } catch (err) {
    onApiError(err);
    if (err.status === 404 || err.status === 400) $("#match-title").textContent = "No match " + id;
    return;
  }
  if (view.name !== "match" || view.id !== id) return;
  entry.wantHistory = true;
  entry.timeline = [];
  entry.timelineSeq = 0;
  // Subscribe again from the start: the replay fills the timeline.
  if (entry.subscribed && send({ op: "unsubscribe", match: id })) entry.subscribed = false;
  subscribe(id);
  renderMatch();
  if (!entry.wp) fetchWinProbability(id);
  refreshImpact(id);
}

function closeMatch(id) {
  const entry = matches.get(id);
  if (!entry) return;
  entry.wantHistory = false;
  entry.timeline = null;
  entry.wpBySeq.clear();
  clearTimeout(entry.impactTimer);
  entry.impactTimer = null;
}

function renderMatch() {
  const entry = matches.get(view.id);
  if (!entry || !entry.state) return;
  const s = entry.state;
  $("#match-title").textContent = s.home.name + " " + s.score.home + " – " + s.score.away + " " + s.away.name;
  $("#view-match .status-text").textContent = s.status.replace("_", " ");
  $("#view-match .minute").textContent = s.minute + "'";
  document.title = s.home.name + " – " + s.away.name + " · courtside";
  wpBar($("#match-wp"), entry.wp, s);
  renderTimeline();
}

let timelineTimer = null;
function scheduleTimeline() {
  if (timelineTimer) return;
  timelineTimer = setTimeout(() => { timelineTimer = null; renderTimeline(); fillTimelineWp(); }, 250);
}

function renderTimeline() {
  const entry = matches.get(view.id);
  if (!entry || !entry.timeline) return;
  const list = $("#timeline");
  list.textContent = "";
  const items = entry.timeline.slice().reverse();
  for (const item of items) {
    const li = document.createElement("li");
    li.className = item.event.kind;
    li.dataset.seq = String(item.seq);
    const when = document.createElement("span");
    when.className = "when";
    when.textContent = item.event.kind === "kickoff" ? "0'" : item.event.minute + "'";
    const what = document.createElement("span");
    what.className = "what";
    const score = item.state.score.home + "–" + item.state.score.away;
    what.textContent = (describe(item.event, item.state) || item.event.kind).replace(/^\d+' /, "") +
      (item.event.kind === "goal" ? " · " + score : "");
    const after = document.createElement("span");
    after.className = "wp-after";
    const wp = entry.wpBySeq.get(item.seq);
    after.textContent = wp ? pct(wp.closed_form.home_win) + " / " + pct(wp.closed_form.away_win) : "";
    if (wp) after.title = "win probability after the event: home / away";
    li.append(when, what, after);
    list.append(li);
  }
  if (!entry.historyComplete && !$("#timeline .gap")) {
    const li = document.createElement("li");
    li.className = "gap";
    li.textContent = "Earlier events are no longer in the match's history.";
    list.append(li);
  }
  renderChart(entry);
}

let filling = false;
// Asks for the win probability after each listed event, one at a time; the
// gateway answers most from its shared cache.
async function fillTimelineWp() {
  if (filling) return;
  filling = true;
  try {
    for (;;) {
      const entry = matches.get(view.id);
      if (view.name !== "match" || !entry || !entry.timeline) break;
      const next = entry.timeline.find((item) => !entry.wpBySeq.has(item.seq));
      if (!next) break;
      try {
        const wp = await api("/v1/views/matches/" + encodeURIComponent(view.id) + "/win-probability?seq=" + next.seq);
        entry.wpBySeq.set(next.seq, wp);
      } catch (err) {
        onApiError(err);
        entry.wpBySeq.set(next.seq, null); // history moved on; skip it
        if (err instanceof Unauthorized) break;
      }
      scheduleRender();
    }
  } finally {
    filling = false;
  }
}

let renderTimer = null;
function scheduleRender() {
  if (renderTimer) return;
  renderTimer = setTimeout(() => { renderTimer = null; renderTimeline(); }, 100);
}

const SVG = "http://www.w3.org/2000/svg";
function svgEl(name, attributes) {
  const el = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes || {})) el.setAttribute(key, value);
  return el;
}

function renderChart(entry) {
  const container = $("#match-chart");
  const points = [];
  for (const item of entry.timeline) {
    const wp = entry.wpBySeq.get(item.seq);
    if (wp) points.push({ minute: item.event.kind === "kickoff" ? 0 : wp.minute, p: wp.closed_form, kind: item.event.kind });
  }
  if (entry.wp && (!points.length || entry.wp.minute >= points[points.length - 1].minute)) {
    points.push({ minute: entry.wp.minute, p: entry.wp.closed_form, kind: "now" });
  }
  const W = 600, H = 180, left = 34, right = 10, top = 10, bottom = 24;
  const span = Math.max(90, ...points.map((pt) => pt.minute));
  const x = (m) => left + (m / span) * (W - left - right);
  const y = (p) => top + (1 - p) * (H - top - bottom);
  const svg = svgEl("svg", { viewBox: "0 0 " + W + " " + H, role: "img",
    "aria-label": "Win probability of each side after each event, by minute" });
  for (const p of [0, 0.5, 1]) {
    svg.append(svgEl("line", { x1: left, x2: W - right, y1: y(p), y2: y(p), class: p === 0.5 ? "even" : "axis" }));
    const label = svgEl("text", { x: left - 6, y: y(p) + 3, "text-anchor": "end" });
    label.textContent = pct(p);
    svg.append(label);
  }
  for (const m of [0, 45, 90]) {
    const label = svgEl("text", { x: x(m), y: H - 6, "text-anchor": "middle" });
    label.textContent = m + "'";
    svg.append(label);
  }
  for (const side of ["home", "away"]) {
    const value = (pt) => (side === "home" ? pt.p.home_win : pt.p.away_win);
    if (points.length > 1) {
      const d = points.map((pt, i) => (i ? "L" : "M") + x(pt.minute).toFixed(1) + " " + y(value(pt)).toFixed(1)).join(" ");
      svg.append(svgEl("path", { d, class: "line-" + side }));
    }
    for (const pt of points) {
      const dot = svgEl("circle", { cx: x(pt.minute).toFixed(1), cy: y(value(pt)).toFixed(1), r: pt.kind === "goal" ? 4 : 2.5, class: "dot-" + side });
      svg.append(dot);
    }
  }
  container.textContent = "";
  container.append(svg);
  const s = entry.state;
  const legend = document.createElement("div");
  legend.className = "legend";
  const home = document.createElement("span");
  home.className = "home";
  home.textContent = s.home.name + " wins";
  const away = document.createElement("span");
  away.className = "away";
  away.textContent = s.away.name + " wins";
  legend.append(home, away);
  container.append(legend);
  container.dataset.points = String(points.length);
}

function scheduleImpact(id) {
  const entry = matches.get(id);
  if (!entry || entry.impactTimer) return;
  entry.impactTimer = setTimeout(() => { entry.impactTimer = null; refreshImpact(id); }, REFRESH_MS);
}

async function refreshImpact(id) {
  try {
    const impact = await api("/v1/matches/" + encodeURIComponent(id) + "/impact?top=5");
    if (view.name !== "match" || view.id !== id) return;
    fillBoard($("#match-xt tbody"), impact.players.map((r) => [r.player, r.xt.toFixed(3)]), "No rated moves yet");
    fillBoard($("#match-wpa tbody"), impact.goals.map((r) => [r.player, (r.wpa >= 0 ? "+" : "") + pct(r.wpa)]), "No goals yet");
  } catch (err) {
    onApiError(err);
  }
}

function fillBoard(tbody, rows, emptyText) {
  tbody.textContent = "";
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 3;
    td.className = "none";
    td.textContent = emptyText;
    tr.append(td);
    tbody.append(tr);
    return;
  }
  rows.forEach(([player, value], index) => {
    const tr = document.createElement("tr");
    for (const [text, cls] of [[String(index + 1), ""], ["Player " + player, ""], [value, "num"]]) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    tbody.append(tr);
  });
}

// --- Season view -----------------------------------------------------------------

function scheduleSeason() {
  if (seasonTimer) return;
  seasonTimer = setTimeout(() => { seasonTimer = null; if (view.name === "season") refreshSeason(false); }, REFRESH_MS);
}

async function refreshSeason(withGrid) {
  try {
    const season = await api("/v1/views/season?top=10");
    fillBoard($("#season-xt tbody"), season.xt.map((r) => [r.player, r.xt.toFixed(3)]), "No rated moves yet");
    // Summed over many goals: wins added, not a percentage.
    fillBoard($("#season-wpa tbody"), season.wpa.map((r) => [r.player, (r.wpa >= 0 ? "+" : "") + r.wpa.toFixed(2)]), "No goals yet");
    if (withGrid) renderHeatmap(await api("/v1/views/xt-grid"));
  } catch (err) {
    onApiError(err);
    if (!(err instanceof Unauthorized) && withGrid) $("#heatmap-meta").textContent = "The threat map is not available: " + err.message;
  }
}

// Dark blue through green to yellow; the square root spreads the many small
// values of the back of the pitch.
const RAMP = [[20, 37, 48], [29, 107, 111], [83, 179, 106], [242, 214, 75]];
function rampColour(t) {
  const scaled = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(scaled));
  const f = scaled - i;
  const c = RAMP[i].map((v, k) => Math.round(v + (RAMP[i + 1][k] - v) * f));
  return "rgb(" + c.join(",") + ")";
}

function renderHeatmap(grid) {
  const L = 105, Wd = 68; // metres
  const cw = L / grid.columns, ch = Wd / grid.rows;
  const lo = Math.min(...grid.values), hi = Math.max(...grid.values);
  const svg = svgEl("svg", { viewBox: "-1 -1 " + (L + 2) + " " + (Wd + 2), role: "img",
    "aria-label": "Expected Threat by zone, " + grid.columns + " by " + grid.rows +
      ": highest in front of the opponent's goal, at the right, up to " + hi.toFixed(3) });
  for (let r = 0; r < grid.rows; r++) {
    for (let c = 0; c < grid.columns; c++) {
      const v = grid.values[r * grid.columns + c];
      const t = hi > lo ? Math.sqrt((v - lo) / (hi - lo)) : 0;
      // Row 0 is the top of the pitch (the highest y), as the model orders it.
      const cell = svgEl("rect", { x: (c * cw).toFixed(3), y: (r * ch).toFixed(3), width: cw.toFixed(3),
        height: ch.toFixed(3), fill: rampColour(t), class: "cell", "data-row": r, "data-col": c, "data-value": v });
      const title = svgEl("title");
      title.textContent = "xT " + v.toFixed(4);
      cell.append(title);
      svg.append(cell);
    }
  }
  // Pitch markings, in metres.
  const line = (attrs) => svg.append(svgEl(attrs.r ? "circle" : attrs.d ? "path" : "rect", { class: "pitch", ...attrs }));
  line({ x: 0, y: 0, width: L, height: Wd });
  line({ d: "M" + L / 2 + " 0 V" + Wd });
  line({ cx: L / 2, cy: Wd / 2, r: 9.15 });
  line({ x: 0, y: (Wd - 40.32) / 2, width: 16.5, height: 40.32 });
  line({ x: L - 16.5, y: (Wd - 40.32) / 2, width: 16.5, height: 40.32 });
  line({ x: 0, y: (Wd - 18.32) / 2, width: 5.5, height: 18.32 });
  line({ x: L - 5.5, y: (Wd - 18.32) / 2, width: 5.5, height: 18.32 });
  const container = $("#heatmap");
  container.textContent = "";
  container.append(svg);
  const scale = document.createElement("div");
  scale.className = "scale";
  const low = document.createElement("span");
  low.textContent = lo.toFixed(3);
  const ramp = document.createElement("span");
  ramp.className = "ramp";
  ramp.style.background = "linear-gradient(to right, " + [0, 0.25, 0.5, 0.75, 1].map((t) => rampColour(Math.sqrt(t))).join(", ") + ")";
  const high = document.createElement("span");
  high.textContent = hi.toFixed(3) + " xT";
  scale.append(low, ramp, high);
  container.append(scale);
  $("#heatmap-meta").textContent = "Model: " + grid.model_source + ", fitted on " +
    grid.trained_on.toLocaleString("en") + " actions. Hover a zone for its value.";
}

// --- Operators' view ---------------------------------------------------------------

async function pollOps() {
  clearTimeout(opsTimer);
  if (view.name !== "ops") return;
  try {
    const now = performance.now();
    const ops = await api("/v1/views/ops");
    renderOps(ops, opsPrevious, now);
    opsPrevious = { ops, at: now };
  } catch (err) {
    onApiError(err);
    if (waitingForToken) return;
  }
  opsTimer = setTimeout(pollOps, OPS_POLL_MS);
}

function lagOver(current, previous) {
  const prior = previous ? previous.event_loop_lag : { count: 0, sum: 0, buckets: [] };
  const count = current.event_loop_lag.count - prior.count;
  if (count <= 0) return { p99: null, mean: null };
  const mean = (current.event_loop_lag.sum - prior.sum) / count;
  let p99 = null;
  for (const [bound, cumulative] of current.event_loop_lag.buckets) {
    const before = (prior.buckets.find(([b]) => b === bound) || [bound, 0])[1];
    if (cumulative - before >= 0.99 * count) { p99 = bound; break; }
  }
  return { p99, mean };
}

function renderOps(ops, previous, now) {
  const seconds = previous ? (now - previous.at) / 1000 : 0;
  const rows = ops.fit.routes.map((r) => {
    const cls = r.verdict === "edge" ? "edge" : r.verdict === "review" ? "review" : "move";
    return [r.route, String(r.requests), r.wall_p50_ms.toFixed(1), r.wall_p99_ms.toFixed(1),
      (r.cpu_share * 100).toFixed(1) + "%", { verdict: r.verdict, cls }];
  });
  fillTable($("#ops-routes tbody"), rows, "No requests yet");
  fillTable($("#ops-runtimes tbody"), ops.runtimes.map((rt) => {
    const before = previous && previous.ops.runtimes.find((p) => p.runtime === rt.runtime);
    const lag = lagOver(rt, before);
    return [rt.runtime, rt.workers == null ? "–" : String(rt.workers),
      rt.busy_ratio == null ? "–" : (rt.busy_ratio * 100).toFixed(0) + "%",
      lag.p99 == null ? "–" : "≤ " + (lag.p99 * 1000).toFixed(1),
      lag.mean == null ? "–" : (lag.mean * 1000).toFixed(2)];
  }), "No runtime probe yet");
  const connections = $("#ops-connections");
  connections.textContent = "";
  for (const c of ops.connections) addFigure(connections, c.label, String(c.value));
  addFigure(connections, "messages delivered", ops.delivered.toLocaleString("en"));
  const pool = $("#ops-pool");
  pool.textContent = "";
  if (ops.pool) {
    const p = ops.pool;
    const prior = previous && previous.ops.pool;
    const utilisation = prior && seconds > 0 ? (p.busy_seconds - prior.busy_seconds) / (seconds * p.threads) : null;
    addFigure(pool, "threads", String(p.threads));
    addFigure(pool, "utilisation", utilisation == null ? "–" : (Math.min(1, Math.max(0, utilisation)) * 100).toFixed(0) + "%");
    addFigure(pool, "queue depth", String(p.queue_depth));
    addFigure(pool, "rejections", String(p.rejections));
    addFigure(pool, "dropped (caller gone)", String(p.deadline_drops));
    fillTable($("#ops-tasks tbody"), p.tasks.map((t) => {
      const before = prior && prior.tasks.find((b) => b.label === t.label);
      const rate = before && seconds > 0 ? ((t.value - before.value) / seconds).toFixed(1) : "–";
      return [t.label, String(t.value), rate];
    }), "No pool task yet");
  } else {
    addFigure(pool, "worker", "in another process: see its /metrics");
    fillTable($("#ops-tasks tbody"), [], "Not in this process");
  }
  if (ops.consumer) {
    addFigure(pool, "consumer lag (entries)", String(ops.consumer.lag_entries));
    addFigure(pool, "consumer pending", String(ops.consumer.pending_entries));
  }
}

function addFigure(dl, label, value) {
  const dt = document.createElement("dt");
  dt.textContent = label;
  const dd = document.createElement("dd");
  dd.textContent = value;
  dl.append(dt, dd);
}

function fillTable(tbody, rows, emptyText) {
  tbody.textContent = "";
  const columns = tbody.closest("table").querySelectorAll("thead th").length;
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = columns;
    td.className = "none";
    td.textContent = emptyText;
    tr.append(td);
    tbody.append(tr);
    return;
  }
  for (const row of rows) {
    const tr = document.createElement("tr");
    row.forEach((cell, index) => {
      const td = document.createElement("td");
      if (cell && typeof cell === "object") {
        const badge = document.createElement("span");
        badge.className = "verdict " + cell.cls;
        badge.textContent = cell.verdict;
        td.append(badge);
      } else {
        td.textContent = cell;
        if (index > 0 && /^[≤\d–.,%\s-]+$/.test(cell)) td.className = "num";
      }
      tr.append(td);
    });
    tbody.append(tr);
  }
}

// --- Views and navigation --------------------------------------------------------------

function route(focus) {
  const path = location.pathname;
  const previous = view;
  if (path.startsWith("/matches/")) view = { name: "match", id: decodeURIComponent(path.slice("/matches/".length)) };
  else if (path === "/season") view = { name: "season" };
  else if (path === "/ops") view = { name: "ops" };
  else view = { name: "scores" };
  if (previous.name === "match" && (view.name !== "match" || view.id !== previous.id)) closeMatch(previous.id);
  for (const name of ["scores", "match", "season", "ops"]) $("#view-" + name).hidden = view.name !== name;
  for (const link of document.querySelectorAll("nav a")) {
    const current = link.dataset.view === view.name || (view.name === "match" && link.dataset.view === "scores");
    if (current) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  document.title = { scores: "courtside · live", match: "match · courtside", season: "season · courtside", ops: "operators · courtside" }[view.name];
  if (focus) $("#main").focus();
  if (waitingForToken) return;
  if (view.name === "match") openMatch(view.id);
  if (view.name === "season") refreshSeason(true);
  if (view.name === "ops") { opsPrevious = null; pollOps(); } else clearTimeout(opsTimer);
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-nav]");
  if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  if (link.getAttribute("href") !== location.pathname) history.pushState(null, "", link.getAttribute("href"));
  route(true);
});
window.addEventListener("popstate", () => route(true));

async function start() {
  try {
    const body = await api("/v1/views/matches");
    for (const id of body.matches) track(id);
  } catch (err) {
    if (err instanceof Unauthorized) { askForToken(token !== ""); return; }
    // The gateway may be restarting: the socket's backoff tries again.
  }
  connect();
  route(false);
}

start();
