// courtside live dashboard: lists matches, subscribes to each over one
// WebSocket, and on reconnect resumes every match from the last sequence
// number it saw (the server replays what was missed, or resyncs).
"use strict";

const matches = new Map(); // id -> { state, seq, element }
let socket = null;
let backoff = 500;

const $ = (selector, root = document) => root.querySelector(selector);

function setStatus(text, kind) {
  const el = $("#connection");
  el.textContent = text;
  el.className = "status " + kind;
}

function render(id) {
  const entry = matches.get(id);
  if (!entry || !entry.state) return;
  const s = entry.state;
  if (!entry.element) {
    entry.element = document.createElement("article");
    entry.element.className = "match";
    entry.element.dataset.match = id;
    entry.element.innerHTML =
      '<div class="meta"><span class="status-text"></span><span class="minute"></span></div>' +
      '<div class="teams"><span class="team home"></span><span class="score"></span><span class="team away"></span></div>' +
      '<div class="last"></div>';
    $("#matches").prepend(entry.element);
    $("#empty").hidden = true;
  }
  const el = entry.element;
  $(".status-text", el).textContent = s.status.replace("_", " ");
  $(".minute", el).textContent = s.minute + "'";
  // Names come from publishers: set as text, never as HTML.
  teamLabel($(".home", el), s.home.name, s.red_cards.home);
  teamLabel($(".away", el), s.away.name, s.red_cards.away);
  $(".score", el).textContent = s.score.home + " – " + s.score.away;
  el.dataset.seq = String(entry.seq);
}

function teamLabel(el, name, redCards) {
  el.textContent = name;
  for (let i = 0; i < redCards; i++) {
    const card = document.createElement("span");
    card.className = "redcard";
    card.title = "red card";
    el.append(card);
  }
}

function describe(event, state) {
  const team = event.team === state.home.id ? state.home.name : state.away.name;
  switch (event.kind) {
    case "goal": return event.minute + "' goal for " + team;
    case "card": return event.minute + "' " + event.card + " card, " + team;
    case "shot": return event.minute + "' shot by " + team + (event.on_target ? ", on target" : "");
    case "period_end": return event.period === 1 ? "half time" : "full time";
    case "substitution": return event.minute + "' substitution, " + team;
    default: return null;
  }
}

function onMessage(message) {
  const id = message.match;
  if (!id) return;
  const entry = matches.get(id) || { seq: 0 };
  matches.set(id, entry);
  if (message.type === "subscribed" || message.type === "resync") {
    entry.state = message.state;
    entry.seq = message.seq;
  } else if (message.type === "event") {
    if (message.seq <= entry.seq) return; // already seen
    entry.state = message.state;
    entry.seq = message.seq;
    const text = describe(message.event, message.state);
    if (entry.element && text) $(".last", entry.element).textContent = text;
    if (entry.element && message.event.kind === "goal") {
      entry.element.classList.add("goal");
      setTimeout(() => entry.element.classList.remove("goal"), 1500);
    }
  } else {
    return;
  }
  render(id);
}

function subscribe(id) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  const entry = matches.get(id);
  const command = { op: "subscribe", match: id };
  if (entry && entry.seq > 0) command.since = entry.seq;
  socket.send(JSON.stringify(command));
}

async function refreshList() {
  try {
    const response = await fetch("/v1/matches");
    const body = await response.json();
    for (const state of body.matches) {
      if (!matches.has(state.id)) {
        matches.set(state.id, { state, seq: 0 });
        render(state.id);
        subscribe(state.id);
      }
    }
  } catch (err) {
    // The gateway may be restarting; the next refresh tries again.
  }
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(scheme + "//" + location.host + "/v1/live");
  setStatus("connecting…", "connecting");
  socket.onopen = () => {
    backoff = 500;
    setStatus("live", "open");
    for (const id of matches.keys()) subscribe(id);
    refreshList();
  };
  socket.onmessage = (event) => onMessage(JSON.parse(event.data));
  socket.onclose = () => {
    setStatus("reconnecting…", "closed");
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 10000);
  };
}

connect();
setInterval(refreshList, 3000);
