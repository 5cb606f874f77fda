//! The demo feed: seeded, reproducible football matches, published event by
//! event through the gateway's public ingest API, exactly as a real data
//! provider would publish them.
//!
//! # Layout
//! - [`script`]: the pure part. A [`script::MatchScript`] turns a seed into
//!   one match's events: kickoff, passes and dribbles across the pitch,
//!   shots and goals, fouls and cards, half time, full time.
//! - [`run`]: the I/O part. Plays several matches at once at a fixed event
//!   rate, starts a new match when one ends, and retries when the gateway
//!   asks it to (`503` or `429`, with `Retry-After`).

pub mod script;

use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::script::MatchScript;

/// What to simulate and where to send it.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The gateway's base URL, e.g. `http://127.0.0.1:8080`.
    pub gateway_url: String,
    /// A publish token of that gateway.
    pub token: String,
    /// Matches played at the same time.
    pub matches: usize,
    /// Events per second, over all matches.
    pub events_per_second: f64,
    pub seed: u64,
}

/// Publishes matches until `stop` fires.
pub async fn run(config: SimConfig, stop: CancellationToken) -> anyhow::Result<()> {
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).build().context("http client")?;
    let url = format!("{}/v1/events", config.gateway_url.trim_end_matches('/'));
    let interval = Duration::from_secs_f64(1.0 / config.events_per_second.max(0.01));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // Match ids carry the start time, so a restarted simulator never
    // collides with the matches of an earlier run in a shared store.
    let run_id =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut next_match = 0u64;
    let mut new_script = |slot: usize| {
        next_match += 1;
        MatchScript::new(&format!("demo-{run_id}-{next_match}"), slot, config.seed.wrapping_add(next_match))
    };
    let mut scripts: Vec<MatchScript> = (0..config.matches.max(1)).map(&mut new_script).collect();
    tracing::info!(matches = scripts.len(), rate = config.events_per_second, "simulator publishing to {url}");

    let mut turn = 0usize;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return Ok(()),
        }
        let slot = turn % scripts.len();
        turn += 1;
        let event = match scripts[slot].next() {
            Some(event) => event,
            None => {
                scripts[slot] = new_script(slot);
                continue;
            }
        };
        publish_with_retry(&client, &url, &config.token, &event, &stop).await?;
    }
}

/// Sends one event until the gateway acknowledges it or refuses it for good.
async fn publish_with_retry(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    event: &serde_json::Value,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let outcome = client.post(url).bearer_auth(token).json(event).send().await;
        let retry_in = match outcome {
            Ok(response) if response.status().is_success() => return Ok(()),
            // Busy (503) or over the publisher's rate (429): both say when to
            // come back.
            Ok(response) if matches!(response.status().as_u16(), 429 | 503) => response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .map_or(backoff, Duration::from_secs),
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                // A refused event would refuse every later one of its match
                // (sequence gap), so stop loudly rather than spin.
                anyhow::bail!("gateway refused a simulated event ({status}): {body}");
            }
            Err(err) => {
                tracing::debug!(%err, "gateway not reachable yet");
                backoff
            }
        };
        tokio::select! {
            () = tokio::time::sleep(retry_in) => {}
            () = stop.cancelled() => return Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
