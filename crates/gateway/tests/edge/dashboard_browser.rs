//! The live dashboard in a real browser: headless Chromium (Debian's
//! `chromium` package) driven by Playwright (`tests/browser/dashboard.mjs`),
//! against a gateway in front of the stand-in worker.
//!
//! - the scores, each with a win-probability bar that moves after a goal
//!   published through the API; the match view (timeline, chart, top
//!   players); the season view (the xT heatmap's cells, leaderboards); the
//!   operators' view; the scores at phone width;
//! - with read tokens set, the token prompt: a refusal is said, the right
//!   token makes the page live;
//! - the page recovers after the gateway restarts.
//!
//! Leaderboards come from the real worker's stream consumer, which the
//! stand-in does not run: the tests write them into the store as the
//! consumer would. Screenshots go to `target/screenshots/` for people to
//! look at (the README's are copies of them).
//!
//! Needs Node.js, `npm ci` in `tests/browser`, and Chromium at
//! `COURTSIDE_CHROMIUM` (default `/usr/bin/chromium`); `.ci/run` installs
//! them. Missing pieces skip the tests with a notice, or fail them under CI.

use super::helpers;

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, atomic::AtomicU64},
};

use domain::boards;
use gateway::{
    GatewayConfig,
    config::TEST_PUBLISH_TOKEN,
    testing::{
        RunningGateway,
        stand_in::{StandInConfig, StandInWorker},
    },
};
use store::{LeaderboardReplace, StateStore, StoreArgs};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

const READ_TOKEN: &str = "dashboard-reader-token-0123456789";

/// What the browser needs, or `None` (with a notice) when a piece is missing
/// outside CI.
struct Browser {
    script_dir: PathBuf,
    chromium: String,
    screenshots: PathBuf,
}

fn browser() -> Option<Browser> {
    let script_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("COURTSIDE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing = [
        (!script_dir.join("node_modules/playwright-core").exists())
            .then_some("tests/browser/node_modules (run npm ci)"),
        (!PathBuf::from(&chromium).exists()).then_some("chromium"),
        std::process::Command::new("node").arg("--version").output().is_err().then_some("node"),
    ];
    if let Some(what) = missing.into_iter().flatten().next() {
        assert!(std::env::var_os("CI").is_none(), "CI is set but the browser test lacks {what}");
        eprintln!("note: skipping the browser test, {what} is missing");
        return None;
    }
    let screenshots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    Some(Browser { script_dir, chromium, screenshots })
}

fn match_id(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("browser-{name}-{}-{n}", now.as_millis())
}

/// Runs one scenario of `dashboard.mjs` and returns its output. Each line
/// `restart-gateway` it prints is answered by `on_restart`, then
/// `restarted` on its stdin.
async fn run_scenario(
    browser: &Browser,
    scenario: &str,
    base: &str,
    match_id: &str,
    mut on_restart: impl AsyncFnMut(),
) -> String {
    let mut child = tokio::process::Command::new("node")
        .arg(browser.script_dir.join("dashboard.mjs"))
        .args([scenario, base, TEST_PUBLISH_TOKEN, &browser.chromium])
        .arg(browser.screenshots.join(scenario))
        .args([match_id, READ_TOKEN])
        .current_dir(&browser.script_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    let mut output = String::new();
    while let Some(line) = stdout.next_line().await.expect("read node's output") {
        output.push_str(&line);
        output.push('\n');
        if line == "restart-gateway" {
            on_restart().await;
            stdin.write_all(b"restarted\n").await.expect("write to node");
        }
    }
    let finished = child.wait_with_output().await.expect("node finishes");
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert!(
        finished.status.success(),
        "browser scenario {scenario} failed\nstdout:\n{output}\nstderr:\n{stderr}"
    );
    output
}

/// Writes leaderboards as the worker's stream consumer would.
async fn seed_leaderboards(store: &Arc<dyn StateStore>, match_id: &str) {
    let rows = |rows: &[(&str, f64)]| rows.iter().map(|(p, s)| ((*p).to_owned(), *s)).collect::<Vec<_>>();
    let replace = LeaderboardReplace {
        boards: vec![
            (boards::match_xt(match_id), rows(&[("9", 0.212), ("7", 0.154), ("4", 0.031)])),
            (boards::match_wpa(match_id), rows(&[("9", 0.268)])),
            (boards::SEASON_XT.to_owned(), rows(&[("9", 3.48), ("7", 2.91), ("11", 2.05), ("4", 1.12)])),
            (boards::SEASON_WPA.to_owned(), rows(&[("9", 1.35), ("11", 0.82)])),
        ],
        through: None,
        fence: None,
    };
    store.replace_leaderboards(&replace).await.expect("leaderboards written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_views_show_scores_win_probability_timeline_heatmap_and_operators() {
    let Some(browser) = browser() else { return };
    let app = helpers::spawn_app().await;
    let id = match_id("views");
    seed_leaderboards(&app.gateway.store, &id).await;

    let output = run_scenario(&browser, "views", &app.url(""), &id, async || {}).await;

    for step in [
        "step: win-probability bar moved after the goal",
        "step: match view shows a timeline",
        "step: season view draws the 16 x 12 threat map",
        "step: operators' view lists routes",
        "step: scores fit a 390 px wide screen",
    ] {
        assert!(output.contains(step), "missing {step:?} in\n{output}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_read_tokens_the_page_asks_for_one_and_says_when_it_is_refused() {
    let Some(browser) = browser() else { return };
    let app = helpers::spawn_app_with(|_| {}, |config, _| config.edge.read_tokens = READ_TOKEN.into()).await;

    let output = run_scenario(&browser, "token", &app.url(""), &match_id("token"), async || {}).await;

    assert!(output.contains("step: a wrong token is refused with a message"), "{output}");
    assert!(output.contains("step: with the right token the page is live"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_recovers_after_the_gateway_restarts() {
    let Some(browser) = browser() else { return };
    let worker = StandInWorker::spawn(StandInConfig::default()).await;
    // One store outlives both gateways, as Redis does in a deployment.
    let store = store::open(&StoreArgs::default()).expect("store opens");
    let gateway = RunningGateway::spawn(GatewayConfig::for_tests(worker.url()), Arc::clone(&store)).await;
    let addr = gateway.addr;
    let mut gateway = Some(gateway);

    let output =
        run_scenario(&browser, "restart", &format!("http://{addr}"), &match_id("restart"), async || {
            if let Some(running) = gateway.take() {
                running.stop().await.expect("the gateway stops cleanly");
            }
            let mut config = GatewayConfig::for_tests(worker.url());
            config.edge.listen_addr = addr;
            gateway = Some(RunningGateway::spawn(config, Arc::clone(&store)).await);
        })
        .await;

    assert!(output.contains("step: reconnected after the restart"), "{output}");
    assert!(output.contains("step: a goal published after the restart reaches the page"), "{output}");
}
