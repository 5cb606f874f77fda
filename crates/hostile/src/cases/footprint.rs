//! What the attacks cost the gateway. The cheap attacks are repeated at a
//! scale that once grew it by hundreds of megabytes (a thousand made-up
//! methods, a thousand failed subscribes, near-limit anonymous bodies held
//! open, idle sockets), then, given the gateway's pid, its resident memory
//! and open descriptors are compared with what it had before the first
//! case. Last, the gateway must still be healthy and ready.

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};

use crate::{
    http::{Conn, Request},
    suite::{Case, Check, Ctx, Skip, usage},
    ws::{self, Ws},
};

pub(crate) const CASES: &[Case] = &[
    Case { name: "health/readyz-names-no-dependency-errors", run: readyz_categories },
    Case { name: "footprint/a-thousand-made-up-methods", run: thousand_methods },
    Case { name: "footprint/a-thousand-failed-subscribes", run: thousand_subscribes },
    Case { name: "footprint/three-hundred-sse-404s", run: sse_404s },
    Case { name: "footprint/anonymous-bodies-are-not-buffered", run: anonymous_bodies },
    Case { name: "footprint/idle-connections-are-closed", run: idle_connections },
    Case { name: "footprint/memory-growth-is-bounded", run: memory_bounded },
    Case { name: "footprint/descriptors-are-released", run: descriptors_released },
    Case { name: "health/healthz-still-ok", run: healthz_ok },
    Case { name: "health/readyz-still-ready", run: readyz_ready },
];

/// Reasons `/readyz` may give an anonymous caller: categories, never a
/// dependency's own error text.
fn is_category(reason: &str) -> bool {
    reason == "unavailable" || reason.starts_with("no answer within ")
}

fn readyz_categories(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let response = ctx.send(&Request::get("/readyz")).await?;
        ensure!(matches!(response.status(), 200 | 503), "status {}", response.status());
        let body = response.json()?;
        ensure!(
            body["status"]
                .as_str()
                .is_some_and(|s| ["ready", "degraded", "not_ready", "draining"].contains(&s)),
            "status field {}",
            body["status"]
        );
        let checks = body["checks"].as_object().context("no `checks` object")?;
        for (name, check) in checks {
            let status = check["status"].as_str().unwrap_or_default();
            ensure!(["ok", "error", "skipped"].contains(&status), "{name}: status {status:?}");
            if let Some(reason) = check.get("reason") {
                let reason = reason.as_str().unwrap_or_default();
                ensure!(is_category(reason), "{name}: reason {reason:?} is more than a category");
            }
        }
        let text = response.text();
        ensure!(!text.contains("://") && !text.contains("os error"), "raw error text: {text}");
        Ok(format!("{} {}: statuses and categories only", response.status(), body["status"]))
    })
}

fn thousand_methods(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        for batch in 0..10 {
            let mut conn = Conn::open(ctx.addr).await?;
            for i in 0..100 {
                let method = format!("QZXFOOT{batch}{i:03}");
                let response = conn.request(&Request::new(&method, ctx.publish_path()).keep_alive()).await?;
                response.expect_error(405, "method_not_allowed").with_context(|| method.clone())?;
            }
        }
        let metrics = ctx.send(&Request::get("/metrics")).await?.text();
        ensure!(!metrics.contains("QZXFOOT"), "a client's method became a label");
        Ok("1,000 made-up methods on 10 connections: 405 each, none in /metrics".into())
    })
}

fn thousand_subscribes(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        for connection in 0..16 {
            let mut ws = Ws::connect(ctx.addr, &ctx.with_token("/v1/live")).await?;
            for i in 0..64 {
                ws.json(&json!({"op": "subscribe", "match": format!("{}-ghost{connection}-{i}", ctx.run)}))
                    .await?;
            }
            // 63 replies, then the close: the failures are counted
            // whatever the client reads.
            let code = ws.close_code(ws::WAIT).await?;
            ensure!(code == Some(1008), "connection {connection}: {code:?} instead of close 1008");
        }
        Ok("16 connections x 64 unknown matches: each closed with 1008".into())
    })
}

fn sse_404s(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut conn = Conn::open(ctx.addr).await?;
        let code = ctx.unknown_topic_code();
        for i in 0..300 {
            let request = ctx.read(&ctx.sse_path(&format!("{}-phantom{i}", ctx.run))).keep_alive();
            conn.request(&request).await?.expect_error(404, &code)?;
        }
        Ok(format!("300 SSE subscriptions to unknown topics: 404 {code} each"))
    })
}

fn anonymous_bodies(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        // Each announces a near-limit body and sends a tenth of it; all stay
        // open while the memory is read. 90 stays inside the default ingest
        // burst of one address (100).
        let sliver = vec![b' '; 100 * 1024];
        let mut held = Vec::new();
        for _ in 0..90 {
            let mut conn = Conn::open(ctx.addr).await?;
            let head = format!(
                "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n",
                ctx.publish_path(),
                ctx.addr
            );
            conn.write(head.as_bytes()).await?;
            // The server may stop reading once it has answered.
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.write(&sliver)).await;
            held.push(conn);
        }
        for (i, conn) in held.iter_mut().enumerate() {
            let head =
                conn.head_within(Duration::from_secs(5)).await.with_context(|| format!("connection {i}"))?;
            ensure!(head.status == 401, "connection {i}: {}", head.status);
        }
        let detail = "90 anonymous publishes announcing 1,000,000 bytes (100 KiB sent each): 401 each";
        match (ctx.pid.and_then(usage), ctx.baseline) {
            (Some(now), Some(before)) => {
                let grown = now.rss_kib.saturating_sub(before.rss_kib);
                // Buffered to the limit they would hold about 90 MiB.
                ensure!(grown < 48 * 1024, "{detail}, but RSS grew by {} MiB while held", grown / 1024);
                Ok(format!("{detail}; RSS {} MiB above the start while held", grown / 1024))
            }
            _ => Ok(detail.into()),
        }
    })
}

fn idle_connections(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(Conn::open(ctx.addr).await?);
        }
        let limit = ctx.header_read_timeout + (ctx.header_read_timeout / 2).max(Duration::from_secs(2));
        // All were opened before the first wait began, so one deadline
        // serves them all.
        let mut waited = Duration::ZERO;
        for (i, conn) in idle.iter_mut().enumerate() {
            let left = limit.saturating_sub(waited);
            waited += conn.closed_within(left).await.with_context(|| format!("connection {i}"))?;
        }
        Ok(format!("200 connections that never sent a byte: all closed within {} ms", waited.as_millis()))
    })
}

fn memory_bounded(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let (Some(pid), Some(before)) = (ctx.pid, ctx.baseline) else {
            return Err(Skip("no --pid given (or /proc unreadable)".into()).into());
        };
        let now = usage(pid).context("cannot read /proc for the pid")?;
        let grown = now.rss_kib.saturating_sub(before.rss_kib);
        ensure!(
            grown <= ctx.max_rss_growth_kib,
            "RSS {} -> {} MiB: grew {} MiB, bound {} MiB",
            before.rss_kib / 1024,
            now.rss_kib / 1024,
            grown / 1024,
            ctx.max_rss_growth_kib / 1024
        );
        Ok(format!(
            "RSS {} -> {} MiB over the whole run (bound +{} MiB)",
            before.rss_kib / 1024,
            now.rss_kib / 1024,
            ctx.max_rss_growth_kib / 1024
        ))
    })
}

fn descriptors_released(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let (Some(pid), Some(before)) = (ctx.pid, ctx.baseline) else {
            return Err(Skip("no --pid given (or /proc unreadable)".into()).into());
        };
        // Connections the suite just dropped take a moment to be noticed.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = usage(pid).context("cannot read /proc for the pid")?;
            if now.fds <= before.fds + 8 {
                return Ok(format!("{} open descriptors, {} before the first case", now.fds, before.fds));
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} open descriptors 10 s after the last case, {} before the first",
                    now.fds,
                    before.fds
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

fn healthz_ok(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let body = ctx.send(&Request::get("/healthz")).await?.expect_ok_json()?;
        ensure!(body == json!({"status": "ok"}), "body {body}");
        Ok("200 {\"status\":\"ok\"}".into())
    })
}

fn readyz_ready(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let body: Value = ctx.send(&Request::get("/readyz")).await?.expect_ok_json()?;
        ensure!(body["status"] == "ready", "body {body}");
        Ok(format!("200 ready (store: {})", body["checks"]["store"]["backend"]))
    })
}
