// Drives the live dashboard in headless Chromium (Debian's package; nothing
// is downloaded) for crates/gateway/tests/edge/dashboard_browser.rs.
//
// Usage: node dashboard.mjs <scenario> <gateway base url> <publish token>
//          <chromium path> <screenshot dir> <match id> [read token]
// Scenarios:
//   views    scores with a win-probability bar that moves after a goal,
//            the match view (timeline, chart, leaderboards), the season
//            view (heatmap cells, leaderboards), the operators' view, and
//            the scores at phone width
//   token    read tokens are set: the page asks for one, says so when it is
//            refused, and goes live with the right one
//   restart  the page recovers after the gateway restarts: it prints
//            "restart-gateway", waits for "restarted" on stdin, and checks
//            that a goal published afterwards reaches the page
// Prints one "step:" line per check; exits non-zero on the first failure.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";

const [scenario, base, publishToken, executablePath, shots, matchId, readToken] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const card = `a.match[data-match="${matchId}"]`;
const stdin = createInterface({ input: process.stdin });
const lines = stdin[Symbol.asyncIterator]();

async function publish(event) {
  const response = await fetch(base + "/v1/events", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer " + publishToken },
    body: JSON.stringify({ match_id: matchId, ...event }),
  });
  if (!response.ok) throw new Error("publish failed: " + response.status + " " + (await response.text()));
}

const kickoff = { seq: 1, kind: "kickoff", home: { id: 1, name: "Browser Rovers" }, away: { id: 2, name: "Headless United" } };
const step = (text) => console.log("step: " + text);
const waitFor = (page, fn, arg, timeout = 15000) => page.waitForFunction(fn, arg, { timeout });
const homeWin = (page) => page.getAttribute(card + " .wp-bar", "data-home");

async function shot(page, name) {
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: false });
  step("screenshot " + name + ".png");
}

async function views(page) {
  // Published first: a page learns of matches that start later only at its
  // next look at the match list (every 30 s or so).
  await publish(kickoff);
  await page.goto(base + "/");
  await page.waitForSelector("#connection.open", { timeout: 10000 });
  step("websocket connected");
  await page.waitForSelector(card, { timeout: 10000 });
  await waitFor(page, (sel) => document.querySelector(sel + " .score")?.textContent === "0 – 0", card);
  await waitFor(page, (sel) => document.querySelector(sel + " .wp-bar")?.dataset.home, card);
  const before = Number(await homeWin(page));
  step("match card shows 0 – 0 with a win-probability bar (home " + before.toFixed(3) + ")");
  for (let seq = 2; seq <= 6; seq++) {
    await publish({ seq, kind: "pass", minute: seq, team: 1, player: 7, start: { x: 30 + seq, y: 30 }, end: { x: 40 + seq, y: 34 }, success: true });
  }
  await publish({ seq: 7, kind: "goal", minute: 17, team: 1, player: 9 });
  await waitFor(page, (sel) => document.querySelector(sel + " .score")?.textContent === "1 – 0", card);
  await waitFor(page, ([sel, old]) => {
    const value = Number(document.querySelector(sel + " .wp-bar")?.dataset.home);
    return value > old + 0.05;
  }, [card, before]);
  const after = Number(await homeWin(page));
  step("win-probability bar moved after the goal: home " + before.toFixed(3) + " -> " + after.toFixed(3));
  await publish({ seq: 8, kind: "card", minute: 30, team: 2, player: 4, card: "red" });
  await publish({ seq: 9, kind: "shot", minute: 33, team: 1, player: 9, start: { x: 90, y: 34 }, on_target: true });
  await waitFor(page, (sel) => document.querySelector(sel + " .minute")?.textContent === "33'", card);
  await shot(page, "scores");

  // Keyboard: tab to the card and open it.
  await page.focus(card);
  await page.keyboard.press("Enter");
  await page.waitForURL("**/matches/" + matchId, { timeout: 10000 });
  await waitFor(page, () => document.querySelectorAll("#timeline li").length >= 4);
  await waitFor(page, () => Number(document.querySelector("#match-chart")?.dataset.points) >= 3);
  await waitFor(page, () => document.querySelectorAll("#match-xt tbody tr td.num").length >= 2);
  const timeline = await page.$$eval("#timeline li", (items) => items.map((li) => li.className + ":" + li.textContent));
  step("match view shows a timeline of " + timeline.length + " events, a chart and a leaderboard");
  if (!timeline.some((t) => t.startsWith("goal:") && t.includes("1–0"))) throw new Error("no goal in the timeline: " + timeline);
  const leader = await page.textContent("#match-xt tbody tr td:nth-child(2)");
  if (!leader.includes("Player 9")) throw new Error("leaderboard does not lead with player 9: " + leader);
  await waitFor(page, () => [...document.querySelectorAll("#timeline .wp-after")].every((el) => el.textContent));
  await shot(page, "match");

  await page.click('nav a[data-view="season"]');
  await page.waitForURL("**/season", { timeout: 10000 });
  await waitFor(page, () => document.querySelectorAll("#heatmap rect.cell").length === 192);
  const top = await page.$eval("#heatmap rect.cell[data-row='5'][data-col='15']", (el) => Number(el.dataset.value));
  const back = await page.$eval("#heatmap rect.cell[data-row='5'][data-col='0']", (el) => Number(el.dataset.value));
  if (!(top > back)) throw new Error(`the zone before goal (${top}) should outrate the own goal's (${back})`);
  await waitFor(page, () => document.querySelectorAll("#season-xt tbody td.num").length >= 2);
  step("season view draws the 16 x 12 threat map (" + back.toFixed(4) + " -> " + top.toFixed(4) + ") and the leaderboards");
  await shot(page, "season");

  await page.click('nav a[data-view="ops"]');
  await page.waitForURL("**/ops", { timeout: 10000 });
  await waitFor(page, () => document.querySelectorAll("#ops-routes .verdict").length >= 3);
  await waitFor(page, () => /live|websocket/.test(document.querySelector("#ops-connections")?.textContent || ""));
  step("operators' view lists routes with verdicts and open connections");
  await shot(page, "ops");

  await page.setViewportSize({ width: 390, height: 844 });
  await page.click('nav a[data-view="scores"]');
  await page.waitForSelector(card, { timeout: 10000 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 0) throw new Error("the page is wider than a phone by " + overflow + " px");
  step("scores fit a 390 px wide screen");
  await shot(page, "phone");
}

async function token(page) {
  await publish(kickoff);
  await page.goto(base + "/");
  await page.waitForSelector("#token-form:not([hidden])", { timeout: 10000 });
  step("the page asks for a read token");
  await page.fill("#token-input", "not-the-right-token-0000");
  await page.press("#token-input", "Enter");
  await waitFor(page, () => /refused/.test(document.querySelector("#token-message").textContent));
  step("a wrong token is refused with a message");
  await shot(page, "token");
  await page.fill("#token-input", readToken);
  await page.click("#token-form button");
  await page.waitForSelector("#token-form", { state: "hidden", timeout: 10000 });
  await page.waitForSelector("#connection.open", { timeout: 10000 });
  await page.reload(); // the token is kept for the tab: no second prompt
  await page.waitForSelector("#connection.open", { timeout: 10000 });
  if (await page.isVisible("#token-form")) throw new Error("asked for the token again");
  await page.waitForSelector(card, { timeout: 10000 });
  await waitFor(page, (sel) => document.querySelector(sel + " .wp-bar")?.dataset.home, card);
  await publish({ seq: 2, kind: "goal", minute: 5, team: 2, player: 11 });
  await waitFor(page, (sel) => document.querySelector(sel + " .score")?.textContent === "0 – 1", card);
  step("with the right token the page is live: the card and its win probability load and a goal arrives");
}

async function restart(page) {
  await publish(kickoff);
  await page.goto(base + "/");
  await page.waitForSelector("#connection.open", { timeout: 10000 });
  await page.waitForSelector(card, { timeout: 10000 });
  step("live before the restart");
  console.log("restart-gateway");
  const answer = await lines.next();
  if (answer.value !== "restarted") throw new Error("expected 'restarted', got " + answer.value);
  await page.waitForSelector("#connection.closed", { timeout: 10000 }).catch(() => {});
  await page.waitForSelector("#connection.open", { timeout: 30000 });
  step("reconnected after the restart");
  await publish({ seq: 2, kind: "goal", minute: 50, team: 1, player: 10 });
  await waitFor(page, (sel) => document.querySelector(sel + " .score")?.textContent === "1 – 0", card);
  step("a goal published after the restart reaches the page");
}

const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("pageerror", (err) => { console.log("page error: " + err.message); process.exitCode = 1; });
  const run = { views, token, restart }[scenario];
  if (!run) throw new Error("unknown scenario " + scenario);
  await run(page);
  console.log("ok");
} finally {
  await browser.close();
  stdin.close();
}
