// The Node.js fan-out peer: a plain `ws` broadcast server, as the argument
// recommends Node for live feeds. It speaks the subset of courtside's
// protocol the fan-out benchmark uses, with the same message shapes:
//   WebSocket /v1/live: {"op":"subscribe","match":ID} → {"type":"subscribed","match":ID}
//   POST /v1/events (JSON event) → broadcast {"type":"event","match":ID,"seq":N,"event":{...}}
//     to every subscriber of that match.
// No history, no bounded queues, no authentication: the idiomatic minimal
// server, which is what courtside is compared against.
// Usage: node fanout.js [port]
"use strict";
const http = require("http");
const { WebSocketServer } = require("ws");

const port = Number(process.argv[2] || 3001);
const channels = new Map(); // match id -> Set<WebSocket>

const server = http.createServer((req, res) => {
  if (req.method === "POST" && req.url === "/v1/events") {
    let body = "";
    req.on("data", (chunk) => { body += chunk; });
    req.on("end", () => {
      let event;
      try { event = JSON.parse(body); } catch (err) {
        res.writeHead(400, { "Content-Type": "application/json" });
        res.end(JSON.stringify({ error: { code: "invalid_event", message: String(err) } }));
        return;
      }
      const message = JSON.stringify({ type: "event", match: event.match_id, seq: event.seq, event });
      const subscribers = channels.get(event.match_id);
      if (subscribers) for (const ws of subscribers) ws.send(message);
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ status: "applied", match: event.match_id, seq: event.seq }));
    });
    return;
  }
  if (req.url === "/healthz") {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end('{"status":"ok"}');
    return;
  }
  res.writeHead(404);
  res.end();
});

const wss = new WebSocketServer({ server, path: "/v1/live" });
wss.on("connection", (ws) => {
  const mine = new Set();
  ws.on("message", (data) => {
    let command;
    try { command = JSON.parse(data); } catch (err) { return; }
    if (command.op === "subscribe" && typeof command.match === "string") {
      if (!channels.has(command.match)) channels.set(command.match, new Set());
      channels.get(command.match).add(ws);
      mine.add(command.match);
      ws.send(JSON.stringify({ type: "subscribed", match: command.match }));
    }
  });
  ws.on("close", () => {
    for (const id of mine) channels.get(id)?.delete(ws);
  });
});

server.listen(port, "127.0.0.1", () => console.log("node fan-out peer on http://127.0.0.1:" + port));
