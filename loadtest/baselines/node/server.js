// The Node.js HTTP peer, as the argument writes it: `/slow` waits 200 ms on a
// timer, `/compute` runs the sum of square roots on a `worker_threads`
// worker (a new worker per request, as in the argument's example), and
// `/compute-blocking` runs it in the handler, the anti-pattern that blocks
// the event loop. Typos of the original fixed (template literals), nothing
// weakened. Usage: node server.js [port]
"use strict";
const http = require("http");
const path = require("path");
const { Worker } = require("worker_threads");

function simulateSlowIO() {
  return new Promise((resolve) => setTimeout(resolve, 200));
}

function expensiveComputation(n) {
  let total = 0;
  for (let i = 0; i < n; i++) total += Math.sqrt(i);
  return total;
}

function runWorker(data) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(path.join(__dirname, "worker.js"), { workerData: data });
    worker.on("message", resolve);
    worker.on("error", reject);
    worker.on("exit", (code) => {
      if (code !== 0) reject(new Error(`Worker stopped with code ${code}`));
    });
  });
}

function nFrom(url) {
  const n = Number(new URL(url, "http://x").searchParams.get("n") || 20000000);
  return Number.isFinite(n) && n >= 0 ? n : 20000000;
}

const server = http.createServer(async (req, res) => {
  if (req.url === "/slow") {
    await simulateSlowIO();
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ status: "ok", t: Date.now() }));
    return;
  }
  if (req.url.startsWith("/compute-blocking")) {
    // This blocks the event loop; other requests will wait.
    const result = expensiveComputation(nFrom(req.url));
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ result }));
    return;
  }
  if (req.url.startsWith("/compute")) {
    try {
      const result = await runWorker({ n: nFrom(req.url) });
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ result }));
    } catch (err) {
      res.writeHead(500);
      res.end("worker error");
    }
    return;
  }
  if (req.url === "/healthz") {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end('{"status":"ok"}');
    return;
  }
  res.writeHead(200, { "Content-Type": "text/plain" });
  res.end("hello\n");
});

const port = Number(process.argv[2] || 3000);
server.listen(port, "127.0.0.1", () => console.log(`Listening on http://127.0.0.1:${port}`));
