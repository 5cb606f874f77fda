//! The live dashboard in a real browser: headless Chromium (Debian's
//! `chromium` package) driven by Playwright (`tests/browser/dashboard.mjs`).
//! A goal published through the API must appear on the page, pushed over
//! the WebSocket, without a reload.
//!
//! Needs Node.js, `npm ci` in `tests/browser`, and Chromium at
//! `COURTSIDE_CHROMIUM` (default `/usr/bin/chromium`); `.ci/run` installs
//! them. Missing pieces skip the test with a notice, or fail it under CI.

use super::helpers;

use std::{path::PathBuf, process::Command};

use gateway::config::TEST_PUBLISH_TOKEN;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goal_published_through_the_api_appears_on_the_dashboard() {
    let script_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("COURTSIDE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing = [
        (!script_dir.join("node_modules/playwright-core").exists())
            .then_some("tests/browser/node_modules (run npm ci)"),
        (!PathBuf::from(&chromium).exists()).then_some("chromium"),
        Command::new("node").arg("--version").output().is_err().then_some("node"),
    ];
    if let Some(what) = missing.into_iter().flatten().next() {
        assert!(std::env::var_os("CI").is_none(), "CI is set but the browser test lacks {what}");
        eprintln!("note: skipping the browser test, {what} is missing");
        return;
    }

    let app = helpers::spawn_app().await;
    let output = tokio::process::Command::new("node")
        .arg(script_dir.join("dashboard.mjs"))
        .arg(format!("http://{}", app.gateway.addr))
        .arg(TEST_PUBLISH_TOKEN)
        .arg(&chromium)
        .current_dir(&script_dir)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "browser test failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("step: score updated live to 0 – 1"), "{stdout}");
}
