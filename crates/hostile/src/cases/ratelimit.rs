//! The rate limits, exceeded on purpose: each lane lets a client's burst
//! through and refuses the rest with `429`, `Retry-After` and the JSON
//! error (a WebSocket `subscribe` with a `rate_limited` reply), before the
//! token is checked or the body read; a client cannot pick its own key with
//! `X-Forwarded-For`; one publish token is limited across addresses; and a
//! client that waits as told is served again.
//!
//! The cases need to know the gateway's rates (the runner reads the same
//! `COURTSIDE_RATE_LIMIT*` settings); a lane that is off is skipped. Each
//! case runs from a source address of its own when the runner spreads
//! them; otherwise it waits for the bucket it emptied to fill again, so the
//! cases after it are not refused.

use std::{net::IpAddr, time::Duration};

use anyhow::{Context as _, bail, ensure};
use serde_json::json;

use crate::{
    http::{self, Conn, Request, Response},
    suite::{Case, Check, Ctx, Rate, Skip},
    ws::Ws,
};

pub(crate) const CASES: &[Case] = &[
    Case { name: "ratelimit/ingest-burst-then-429-json", run: ingest_lane },
    Case { name: "ratelimit/x-forwarded-for-is-not-believed", run: forwarded_for },
    Case { name: "ratelimit/subscribe-burst-then-rate_limited", run: subscribe_lane },
    Case { name: "ratelimit/compute-burst-then-429-json", run: compute_lane },
    Case { name: "ratelimit/one-token-across-addresses-is-429", run: per_token },
];

/// The burst of a lane, or a skip when the lane is off.
fn burst(rate: Rate, lane: &str) -> anyhow::Result<u32> {
    match rate {
        Rate::Limited { count, .. } => Ok(count),
        Rate::Off => Err(Skip(format!("the {lane} lane is off")).into()),
    }
}

/// Checks a 429: the JSON error `rate_limited` and a `Retry-After` of whole
/// seconds. Returns the seconds.
fn expect_429(response: &Response, scope: &str) -> anyhow::Result<u64> {
    let message = response.expect_error(429, "rate_limited")?;
    ensure!(message.contains(scope), "expected {scope:?} in {message:?}");
    let retry_after = response.header("retry-after").context("no Retry-After")?;
    let secs: u64 = retry_after.parse().with_context(|| format!("Retry-After {retry_after:?}"))?;
    ensure!(secs >= 1, "Retry-After {secs}");
    Ok(secs)
}

/// The most requests a bucket of `burst` can have let through after
/// `elapsed`: the burst plus what refilled meanwhile, plus one for the
/// clocks' rounding.
fn ceiling(rate: Rate, burst: u32, elapsed: Duration) -> u64 {
    u64::from(burst) + (rate.per_second().unwrap_or(0.0) * elapsed.as_secs_f64()).ceil() as u64 + 1
}

/// A fresh address must get its whole burst before the first refusal; an
/// address the earlier cases shared may have spent some of it already.
fn within_burst(ctx: &Ctx, sent: u64, burst: u32) -> anyhow::Result<()> {
    ensure!(!ctx.spread || sent > u64::from(burst), "refused at request {sent}, within the burst of {burst}");
    Ok(())
}

/// Waits for a lane's bucket to fill again when the cases share one
/// address; with addresses of their own nobody else uses this one.
async fn let_it_refill(ctx: &Ctx, rate: Rate) {
    if !ctx.spread {
        tokio::time::sleep(rate.refill() + Duration::from_millis(200)).await;
    }
}

fn anonymous_publish(ctx: &Ctx) -> Request {
    Request::post(ctx.publish_path()).body("application/json", "{}").keep_alive()
}

fn ingest_lane(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let rate = ctx.rates.ingest;
        let burst = burst(rate, "ingest")?;
        let started = tokio::time::Instant::now();
        let mut conn = Conn::open(ctx.addr).await?;
        let mut sent = 0u64;
        let limited = loop {
            sent += 1;
            let response = conn.request(&anonymous_publish(ctx)).await?;
            match response.status() {
                401 => {}
                429 => break response,
                other => bail!("request {sent}: {other} {}", response.text()),
            }
            ensure!(sent <= ceiling(rate, burst, started.elapsed()), "no 429 after {sent} requests");
        };
        within_burst(ctx, sent, burst)?;
        let retry_after = expect_429(&limited, "from this address")?;

        // Refused before the token is checked or the body is read. The
        // bucket refills meanwhile (a token every 1/rate s), so a request
        // may find one and get its 401 (also without the body read); the
        // next finds the bucket empty again.
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{{",
            ctx.publish_path(),
            ctx.addr
        );
        let mut statuses = Vec::new();
        while statuses.len() < 5 && statuses.last() != Some(&429) {
            let mut early = Conn::open(ctx.addr).await?;
            early.write(head.as_bytes()).await?;
            let status = early
                .head_within(Duration::from_secs(3))
                .await
                .context("an answer that waited for the body")?;
            statuses.push(status.status);
        }
        ensure!(
            statuses.last() == Some(&429) && statuses.iter().all(|s| *s == 401 || *s == 429),
            "an announced 1,000,000-byte body over the rate: {statuses:?}"
        );

        tokio::time::sleep(Duration::from_secs(retry_after)).await;
        let again = Conn::open(ctx.addr).await?.request(&anonymous_publish(ctx)).await?;
        ensure!(again.status() == 401, "after Retry-After ({retry_after} s): {}", again.status());
        let_it_refill(ctx, rate).await;
        Ok(format!(
            "burst {burst}: refused at request {sent} with 429 rate_limited, Retry-After {retry_after}; \
             a body-less refusal at once; served again after waiting"
        ))
    })
}

fn forwarded_for(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let rate = ctx.rates.ingest;
        let burst = burst(rate, "ingest")?;
        let mut conn = Conn::open(ctx.addr).await?;
        let started = tokio::time::Instant::now();
        let mut sent = 0u64;
        // Each request names another client; only the socket counts.
        loop {
            sent += 1;
            let request =
                anonymous_publish(ctx).header("X-Forwarded-For", format!("203.0.113.{}", sent % 250));
            let response = conn.request(&request).await?;
            match response.status() {
                401 => {}
                429 => {
                    expect_429(&response, "from this address")?;
                    break;
                }
                other => bail!("request {sent}: {other} {}", response.text()),
            }
            ensure!(
                sent <= ceiling(rate, burst, started.elapsed()),
                "no 429 after {sent} requests naming other clients"
            );
        }
        let_it_refill(ctx, rate).await;
        Ok(format!(
            "{sent} requests, each with another X-Forwarded-For: counted as one client, 429 past the burst"
        ))
    })
}

/// What one step of the subscribe case saw.
enum Refusal {
    /// A `subscribe` answered `rate_limited`, with its `retry_after`.
    Reply(u64),
    /// The WebSocket upgrade answered 429.
    Upgrade(u64),
}

fn subscribe_lane(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let rate = ctx.rates.subscribe;
        let burst = burst(rate, "subscribe")?;
        if ctx.surface.edge_only {
            return sse_subscribe_lane(ctx, rate, burst).await;
        }
        let started = tokio::time::Instant::now();
        let target = ctx.with_token("/v1/live");
        // Each connection costs one, and each subscribe one (counted before
        // the store is asked, so unknown matches cost the same); 63 per
        // connection stays under the 64 failures that close it.
        let mut spent = 0u64;
        let refusal = 'outer: loop {
            spent += 1;
            let mut ws = match Ws::upgrade(ctx.addr, &target).await? {
                Ok(ws) => ws,
                Err(response) => break Refusal::Upgrade(expect_429(&response, "from this address")?),
            };
            for i in 0..63 {
                spent += 1;
                ws.json(&json!({"op": "subscribe", "match": format!("{}-limited{spent}-{i}", ctx.run)}))
                    .await?;
                let reply = ws.reply().await?;
                match reply["code"].as_str() {
                    Some("unknown_match") => {}
                    Some("rate_limited") => {
                        ensure!(reply["type"] == "error" && reply["match"].is_string(), "reply {reply}");
                        let retry_after = reply["retry_after"].as_u64().context("no retry_after")?;
                        ensure!(retry_after >= 1, "retry_after {retry_after}");
                        break 'outer Refusal::Reply(retry_after);
                    }
                    _ => bail!("subscribe {spent}: {reply}"),
                }
            }
            ensure!(spent <= ceiling(rate, burst, started.elapsed()), "no refusal after {spent} subscribes");
        };
        within_burst(ctx, spent, burst)?;
        // As above: a token refilled meanwhile lets one through (404, the
        // match is made up); the next finds the bucket empty.
        let any = ctx.sse_path(&format!("{}-any", ctx.run));
        let mut sse = ctx.get(&any).await?;
        for _ in 0..5 {
            if sse.status() != 404 {
                break;
            }
            sse = ctx.get(&any).await?;
        }
        expect_429(&sse, "from this address").context("an SSE feed from the same address")?;
        let how = match refusal {
            Refusal::Reply(secs) => {
                format!("a `rate_limited` reply (retry_after {secs}), the connection kept")
            }
            Refusal::Upgrade(secs) => format!("the upgrade refused with 429 (Retry-After {secs})"),
        };
        let_it_refill(ctx, rate).await;
        Ok(format!("burst {burst}: at subscribe {spent}, {how}; SSE from the same address: 429"))
    })
}

/// The subscribe lane of a service with SSE feeds only: feeds of unknown
/// topics (404 each, the lane spent before the store is asked) until 429.
async fn sse_subscribe_lane(ctx: &Ctx, rate: Rate, burst: u32) -> anyhow::Result<String> {
    let started = tokio::time::Instant::now();
    let mut conn = Conn::open(ctx.addr).await?;
    let mut spent = 0u64;
    let limited = loop {
        spent += 1;
        let target = ctx.sse_path(&format!("{}-limited{spent}", ctx.run));
        let response = conn.request(&ctx.read(&target).keep_alive()).await?;
        match response.status() {
            404 => {}
            429 => break response,
            other => bail!("feed {spent}: {other} {}", response.text()),
        }
        ensure!(spent <= ceiling(rate, burst, started.elapsed()), "no 429 after {spent} feeds");
    };
    within_burst(ctx, spent, burst)?;
    let retry_after = expect_429(&limited, "from this address")?;
    let_it_refill(ctx, rate).await;
    Ok(format!("burst {burst}: SSE feed {spent} refused with 429 rate_limited, Retry-After {retry_after}"))
}

fn compute_lane(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let rate = ctx.rates.compute;
        let burst = burst(rate, "compute")?;
        let m = ctx.new_match("compute-lane").await?;
        let target = format!("/v1/matches/{}/impact?top=1", m.id);
        let started = tokio::time::Instant::now();
        let mut conn = Conn::open(ctx.addr).await?;
        let mut sent = 0u64;
        let limited = loop {
            sent += 1;
            let response = conn.request(&ctx.read(&target).keep_alive()).await?;
            match response.status() {
                200 => {}
                429 => break response,
                other => bail!("request {sent}: {other} {}", response.text()),
            }
            ensure!(sent <= ceiling(rate, burst, started.elapsed()), "no 429 after {sent} requests");
        };
        within_burst(ctx, sent, burst)?;
        let retry_after = expect_429(&limited, "from this address")?;
        let_it_refill(ctx, rate).await;
        Ok(format!(
            "burst {burst}: impact refused at request {sent}, 429 rate_limited, Retry-After {retry_after}"
        ))
    })
}

fn per_token(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let rate = ctx.rates.per_token;
        let burst = burst(rate, "per-token")?;
        let Some(base) = http::source() else {
            return Err(Skip("needs source addresses of its own (--spread-sources)".into()).into());
        };
        // Four addresses share the token, so each stays far below its own
        // ingest burst while the token's runs out.
        let addresses: Vec<IpAddr> = (0..4u8)
            .map(|k| match base {
                IpAddr::V4(v4) => {
                    let [a, b, c, d] = v4.octets();
                    IpAddr::V4([a, b + 1 + k, c, d].into())
                }
                v6 => v6,
            })
            .collect();
        let id = ctx.match_id("per-token");
        // A replayed first event: cheap, and acknowledged as a duplicate.
        let body = ctx.first_event(&id).to_string();
        let request = ctx.publisher(body.as_bytes(), "application/json").keep_alive();
        ctx.publish_ok(&ctx.first_event(&id)).await?;
        let mut conns = Vec::new();
        for address in &addresses {
            conns.push(http::from_source(Some(*address), Conn::open(ctx.addr)).await?);
        }
        let started = tokio::time::Instant::now();
        let mut sent = 0u64;
        let limited = 'outer: loop {
            for conn in &mut conns {
                sent += 1;
                let response = conn.request(&request).await?;
                match response.status() {
                    200 => {}
                    429 => break 'outer response,
                    other => bail!("request {sent}: {other} {}", response.text()),
                }
            }
            ensure!(sent <= ceiling(rate, burst, started.elapsed()) + 4, "no 429 after {sent} requests");
        };
        ensure!(sent > u64::from(burst), "refused at request {sent}, within the token's burst of {burst}");
        let retry_after = expect_429(&limited, "with this publish token")?;
        // Let the token's bucket fill again: the cases after this one
        // publish with it.
        tokio::time::sleep(rate.refill() + Duration::from_millis(200)).await;
        Ok(format!(
            "one token from 4 addresses: refused at request {sent} (burst {burst}) with 429 \"with this publish token\", Retry-After {retry_after}"
        ))
    })
}
