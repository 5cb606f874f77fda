//! Bodies over the limit and query or path parameters that do not parse:
//! `413` and `400` in the JSON error shape (axum's own extractors once
//! answered some of these in plain text). And the live connections one
//! address may hold: its share, then `429`.

use anyhow::{Context as _, ensure};

use crate::{
    http::{Conn, Request},
    suite::{Case, Check, Ctx, Skip},
};

pub(crate) const CASES: &[Case] = &[
    Case { name: "limits/oversized-body-is-413-json", run: oversized_body },
    Case { name: "limits/oversized-chunked-body-is-413-json", run: oversized_chunked },
    Case { name: "limits/body-cut-short-is-refused", run: body_cut_short },
    Case { name: "limits/top-not-a-number-is-400-json", run: top_not_a_number },
    Case { name: "limits/top-out-of-range-is-400-json", run: top_out_of_range },
    Case { name: "limits/samples-negative-is-400-json", run: samples_negative },
    Case { name: "limits/samples-beyond-max-is-400-json", run: samples_beyond_max },
    Case { name: "limits/samples-beyond-u64-is-400-json", run: samples_beyond_u64 },
    Case { name: "limits/non-utf8-path-segment-is-400-json", run: non_utf8_path },
    Case { name: "limits/match-id-not-a-slug-is-400-json", run: bad_match_id },
    Case { name: "limits/player-id-not-a-number-is-400-json", run: bad_player_id },
    Case { name: "limits/since-not-a-number-is-400-json", run: since_not_a_number },
    Case { name: "limits/last-event-id-garbage-is-400-json", run: last_event_id_garbage },
    Case { name: "limits/compute-n-invalid-is-400-json", run: compute_n_invalid },
    Case { name: "limits/live-connections-per-address-are-capped", run: live_connections_per_address },
];

/// Opens `topic`'s SSE feed on a new connection; the connection and the
/// answer's head.
async fn open_sse(ctx: &Ctx, path: &str) -> anyhow::Result<(Conn, crate::http::Head)> {
    let mut conn = Conn::open(ctx.addr).await?;
    conn.write(&ctx.read(path).to_bytes(&ctx.addr.to_string())).await?;
    let head = conn.head_within(crate::ws::WAIT).await?;
    Ok((conn, head))
}

fn live_connections_per_address(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let Some(cap) = ctx.max_connections_per_address else {
            return Err(Skip("the gateway's per-client limits are off".into()).into());
        };
        if let crate::suite::Rate::Limited { count, .. } = ctx.rates.subscribe
            && (count as usize) < cap + 8
        {
            return Err(Skip(format!(
                "the subscribe lane's burst ({count}) cannot pay for {cap} connections"
            ))
            .into());
        }
        let m = ctx.new_match("per-address").await?;
        let path = ctx.sse_path(&m.id);
        let mut held = Vec::with_capacity(cap);
        for n in 1..=cap {
            let (conn, head) = open_sse(ctx, &path).await?;
            ensure!(head.status == 200, "connection {n} of the {cap} allowed: status {}", head.status);
            held.push(conn);
        }
        // Past the share, refused before the store is read, over both
        // transports.
        let mut over = Conn::open(ctx.addr).await?;
        let refused = over.request(&ctx.read(&path)).await?;
        let message = refused.expect_error(429, "too_many_connections_from_address")?;
        ensure!(refused.header("retry-after").is_some(), "no Retry-After");
        ensure!(message.contains(&cap.to_string()), "the message does not name the cap: {message}");
        if !ctx.surface.edge_only {
            match crate::ws::Ws::upgrade(ctx.addr, &ctx.with_token("/v1/live")).await? {
                Ok(_) => anyhow::bail!("a WebSocket past the share was accepted"),
                Err(response) => {
                    response
                        .expect_error(429, "too_many_connections_from_address")
                        .context("the WebSocket")?;
                }
            }
        }
        // A closed connection gives its slot back.
        drop(held.pop());
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let (conn, head) = open_sse(ctx, &path).await?;
            if head.status == 200 {
                held.push(conn);
                break;
            }
            ensure!(head.status == 429, "after a close: status {}", head.status);
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the closed connection's slot was not given back"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok(format!(
            "{cap} live connections held, the next: 429 too_many_connections_from_address; a close frees a slot"
        ))
    })
}

fn oversized_body(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("oversized").await?;
        let body = vec![b' '; ctx.body_limit * 2];
        let response = ctx.send(&ctx.publisher(&body, "application/json")).await?;
        let message = response.expect_error(413, "payload_too_large")?;
        ensure!(
            message.contains(&ctx.body_limit.to_string()),
            "the message does not name the limit: {message}"
        );
        ctx.expect_head(&mut m).await?;
        Ok(format!("{} bytes: 413 payload_too_large ({message})", body.len()))
    })
}

fn oversized_chunked(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("oversized-chunked").await?;
        let chunk = vec![b' '; 64 * 1024];
        let mut body = Vec::new();
        for _ in 0..(ctx.body_limit * 2 / chunk.len()) {
            body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            body.extend_from_slice(&chunk);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        let request = Request::post(ctx.publish_path())
            .bearer(ctx.publish_token())
            .header("Transfer-Encoding", "chunked")
            .body("application/json", body);
        let response = ctx.send(&request).await?;
        response.expect_error(413, "payload_too_large")?;
        ctx.expect_head(&mut m).await?;
        Ok(format!("{} bytes in chunks, no length: 413 payload_too_large", ctx.body_limit * 2))
    })
}

fn body_cut_short(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("cut-short").await?;
        let event = ctx.next_event(&m.id, 2).to_string();
        let mut conn = Conn::open(ctx.addr).await?;
        ctx.pace_publisher().await;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            ctx.publish_path(),
            ctx.addr,
            ctx.publish_token(),
            event.len() + 100
        );
        conn.write(head.as_bytes()).await?;
        conn.write(event.as_bytes()).await?;
        conn.shutdown_write().await?;
        // Either a 400 or a closed connection is an honest answer to a body
        // that never arrives; the event must not be applied either way.
        let answer = match conn.response().await {
            Ok(response) => {
                response.expect_error(400, "invalid_event")?;
                "400 invalid_event"
            }
            Err(_) => "connection closed",
        };
        ctx.expect_head(&mut m).await?;
        Ok(format!("body 100 bytes short of its Content-Length: {answer}, nothing applied"))
    })
}

async fn bad_read(ctx: &Ctx, target: &str, needle: &str) -> anyhow::Result<String> {
    let message =
        ctx.get(target).await?.expect_error(400, "invalid_parameter").with_context(|| target.to_owned())?;
    ensure!(message.contains(needle), "{target}: expected {needle:?} in {message:?}");
    Ok(message)
}

fn top_not_a_number(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let m = ctx.new_match("top").await?;
        let message = bad_read(ctx, &format!("/v1/matches/{}/impact?top=lots", m.id), "top").await?;
        Ok(format!("top=lots: 400 invalid_parameter ({})", crate::http::clip(&message, 80)))
    })
}

fn top_out_of_range(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let m = ctx.new_match("top-range").await?;
        for top in ["0", "100000"] {
            bad_read(ctx, &format!("/v1/matches/{}/impact?top={top}", m.id), "`top` must be between 1 and")
                .await?;
        }
        Ok("top=0 and top=100000: 400 invalid_parameter naming the range".into())
    })
}

fn samples_negative(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let m = ctx.new_match("samples-negative").await?;
        bad_read(ctx, &format!("/v1/matches/{}/win-probability?samples=-1", m.id), "samples").await?;
        Ok("samples=-1: 400 invalid_parameter".into())
    })
}

fn samples_beyond_max(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let m = ctx.new_match("samples-max").await?;
        // Far beyond any configurable maximum (the domain's own cap is 10^9).
        let message =
            bad_read(ctx, &format!("/v1/matches/{}/win-probability?samples=1000000000000", m.id), "samples")
                .await?;
        Ok(format!("samples=10^12: 400 invalid_parameter ({message})"))
    })
}

fn samples_beyond_u64(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let m = ctx.new_match("samples-u64").await?;
        bad_read(
            ctx,
            &format!("/v1/matches/{}/win-probability?samples=99999999999999999999999", m.id),
            "samples",
        )
        .await?;
        Ok("samples=10^23: 400 invalid_parameter".into())
    })
}

fn non_utf8_path(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut targets = vec![ctx.topic_path("%FF%FE"), ctx.sse_path("%FF")];
        if !ctx.surface.edge_only {
            targets.push("/v1/players/%C3%28/impact".to_owned());
        }
        for target in &targets {
            bad_read(ctx, &ctx.with_token(target), "").await?;
        }
        Ok(format!("%FF%FE, %FF and %C3%28 in path segments ({}): 400 invalid_parameter", targets.join(", ")))
    })
}

fn bad_match_id(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        bad_read(ctx, &ctx.topic_path("NOT..A..SLUG"), &ctx.surface.topic).await?;
        Ok("an id outside a-z0-9-_: 400 invalid_parameter".into())
    })
}

fn bad_player_id(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        bad_read(ctx, "/v1/players/abc/impact", "player id").await?;
        bad_read(ctx, "/v1/players/99999999999/impact", "player id").await?;
        Ok("player id abc and 99999999999: 400 invalid_parameter".into())
    })
}

fn since_not_a_number(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let m = ctx.new_match("since").await?;
        bad_read(ctx, &ctx.with_token(&format!("{}?since=soon", ctx.sse_path(&m.id))), "since").await?;
        Ok("SSE since=soon: 400 invalid_parameter".into())
    })
}

fn last_event_id_garbage(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let m = ctx.new_match("last-event-id").await?;
        let request = ctx.read(&ctx.sse_path(&m.id)).header("Last-Event-ID", "yesterday");
        let message = ctx.send(&request).await?.expect_error(400, "invalid_parameter")?;
        ensure!(message.contains("Last-Event-ID"), "message {message:?}");
        Ok("Last-Event-ID: yesterday: 400 invalid_parameter".into())
    })
}

fn compute_n_invalid(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let probe = ctx.get("/v1/bench/compute?n=lots").await?;
        if probe.status() == 404 {
            return Err(Skip("the benchmark routes are turned off".into()).into());
        }
        for query in ["n=lots", "n=-5", "n=1.5", "n=99999999999999999999999", ""] {
            bad_read(ctx, &format!("/v1/bench/compute?{query}"), "`n`").await?;
        }
        Ok("n missing, lots, -5, 1.5, 10^23: 400 invalid_parameter".into())
    })
}
