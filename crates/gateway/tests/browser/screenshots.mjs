// Takes the README's screenshots of a running courtside (the all-in-one
// binary with its simulated matches): the scores, one match, the season
// view and the operators' view, in headless Chromium (Debian's package).
// Usage: node screenshots.mjs <base url> <out dir> [chromium path]
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [base, out, executablePath = "/usr/bin/chromium"] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 760 } });
  await page.goto(base + "/");
  await page.waitForSelector("a.match .wp-bar[data-home]:not([data-home=''])", { timeout: 20000 });
  await page.waitForTimeout(1500); // let the bars settle
  await page.screenshot({ path: out + "/dashboard-scores.png" });
  // The match with the most goals makes the liveliest chart.
  const busiest = await page.$$eval("a.match", (cards) => cards
    .map((c) => ({ id: c.dataset.match, goals: c.querySelector(".score").textContent.split("–").reduce((a, b) => a + Number(b), 0) }))
    .sort((a, b) => b.goals - a.goals)[0].id);
  await page.click(`a.match[data-match="${busiest}"]`);
  await page.waitForFunction(() => Number(document.querySelector("#match-chart")?.dataset.points) >= 2, null, { timeout: 20000 });
  await page.waitForTimeout(2500);
  await page.screenshot({ path: out + "/dashboard-match.png" });
  await page.click('nav a[data-view="season"]');
  await page.waitForFunction(() => document.querySelectorAll("#heatmap rect.cell").length === 192, null, { timeout: 20000 });
  await page.waitForTimeout(500);
  await page.screenshot({ path: out + "/dashboard-season.png" });
  await page.click('nav a[data-view="ops"]');
  await page.waitForSelector("#ops-routes .verdict", { timeout: 20000 });
  await page.waitForTimeout(3500); // a second poll, for the rates
  await page.screenshot({ path: out + "/dashboard-ops.png" });
  console.log("wrote " + out);
} finally {
  await browser.close();
}
