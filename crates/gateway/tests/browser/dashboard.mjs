// Drives the live dashboard in headless Chromium: opens the page, publishes
// a kickoff and a goal through the public API, and checks that the page
// shows the match and then the new score, pushed over the WebSocket.
// Usage: node dashboard.mjs <gateway base url> <publish token> <chromium path>
// Prints one line per step; exits non-zero on the first failure.
import { chromium } from "playwright-core";

const [base, token, executablePath] = process.argv.slice(2);
const matchId = "browser-" + Date.now();

async function publish(event) {
  const response = await fetch(base + "/v1/events", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer " + token },
    body: JSON.stringify({ match_id: matchId, ...event }),
  });
  if (!response.ok) throw new Error("publish failed: " + response.status + " " + (await response.text()));
}

const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"],
});
try {
  const page = await browser.newPage();
  page.on("pageerror", (err) => { console.log("page error: " + err.message); process.exitCode = 1; });
  await page.goto(base + "/");
  await page.waitForSelector("#connection.open", { timeout: 10000 });
  console.log("step: websocket connected");

  await publish({ seq: 1, kind: "kickoff", home: { id: 1, name: "Browser Rovers" }, away: { id: 2, name: "Headless United" } });
  const card = `article[data-match="${matchId}"]`;
  await page.waitForSelector(card, { timeout: 10000 });
  await page.waitForFunction((sel) => document.querySelector(sel + " .score")?.textContent === "0 – 0", card, { timeout: 10000 });
  console.log("step: match card shows 0 – 0");

  await publish({ seq: 2, kind: "goal", minute: 17, team: 2, player: 9 });
  await page.waitForFunction((sel) => document.querySelector(sel + " .score")?.textContent === "0 – 1", card, { timeout: 10000 });
  const last = await page.textContent(card + " .last");
  console.log("step: score updated live to 0 – 1 (" + last + ")");
  if (!last.includes("goal for Headless United")) throw new Error("goal not described: " + last);
  console.log("ok");
} finally {
  await browser.close();
}
