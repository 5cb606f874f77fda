// The `worker_threads` worker of server.js: one computation, then exit.
"use strict";
const { workerData, parentPort } = require("worker_threads");

function expensiveComputation(n) {
  let total = 0;
  for (let i = 0; i < n; i++) total += Math.sqrt(i);
  return total;
}

parentPort.postMessage(expensiveComputation(workerData.n));
