//! The token matrix: no token, a wrong one, a read token where a publish
//! token is needed, the wrong scheme, the token in the wrong place; and the
//! order of checks: a refused publisher is answered before its body is read,
//! so an anonymous client cannot make the gateway buffer up to the body
//! limit.

use std::time::Duration;

use anyhow::{Context as _, ensure};

use crate::{
    http::{Conn, Request, Response},
    suite::{Case, Check, Ctx},
    ws::Ws,
};

pub(crate) const CASES: &[Case] = &[
    Case { name: "auth/publish-without-token-is-401", run: without_token },
    Case { name: "auth/publish-with-wrong-token-is-401", run: wrong_token },
    Case { name: "auth/publish-with-read-token-is-401", run: read_token_on_publish },
    Case { name: "auth/publish-with-basic-scheme-is-401", run: basic_scheme },
    Case { name: "auth/publish-token-in-query-is-401", run: token_in_query },
    Case { name: "auth/publish-with-token-is-applied", run: with_token },
    Case { name: "auth/refused-before-the-body-is-read", run: refused_before_body },
    Case { name: "auth/bulk-refused-before-the-body-is-read", run: bulk_refused_before_body },
    Case { name: "auth/expect-100-continue-gets-401-not-100", run: expect_continue },
    Case { name: "auth/jobs-need-a-publish-token", run: jobs_need_publish_token },
    Case { name: "auth/reads-need-a-read-token", run: reads_need_read_token },
    Case { name: "auth/live-feed-needs-a-read-token", run: live_needs_read_token },
    Case { name: "auth/health-and-metrics-are-public", run: health_is_public },
];

/// How long a refusal that must not wait for the body may take.
const PROMPT: Duration = Duration::from_secs(3);

/// Publishes a valid event with `request`'s credentials and expects 401
/// with `needle` in the message, a `WWW-Authenticate: Bearer` challenge,
/// and nothing applied.
async fn unauthorized(
    ctx: &Ctx,
    tag: &str,
    request: impl FnOnce(Request) -> Request,
    needle: &str,
) -> anyhow::Result<String> {
    let mut m = ctx.new_match(tag).await?;
    let body = ctx.next_event(&m.id, 2).to_string();
    let response =
        ctx.send(&request(Request::post(ctx.publish_path()).body("application/json", body))).await?;
    let message = expect_401(&response)?;
    ensure!(message.contains(needle), "expected {needle:?} in {message:?}");
    ctx.expect_head(&mut m).await.context("after the refusal")?;
    Ok(format!("401 unauthorized ({message}), WWW-Authenticate: Bearer, nothing applied"))
}

fn expect_401(response: &Response) -> anyhow::Result<String> {
    let message = response.expect_error(401, "unauthorized")?;
    ensure!(
        response.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")),
        "no Bearer challenge: {:?}",
        response.header("www-authenticate")
    );
    Ok(message)
}

fn without_token(ctx: &Ctx) -> Check<'_> {
    Box::pin(unauthorized(ctx, "no-token", |r| r, "missing bearer token"))
}

fn wrong_token(ctx: &Ctx) -> Check<'_> {
    Box::pin(unauthorized(
        ctx,
        "wrong-token",
        |r| r.bearer("not-the-token-but-long-enough"),
        "invalid bearer token",
    ))
}

fn read_token_on_publish(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let token = ctx.require_read_token()?.to_owned();
        unauthorized(ctx, "read-token", |r| r.bearer(&token), "invalid bearer token").await
    })
}

fn basic_scheme(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let credentials = format!("Basic {}", ctx.publish_token());
        unauthorized(ctx, "basic", |r| r.header("Authorization", credentials), "missing bearer token").await
    })
}

fn token_in_query(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let token = ctx.publish_token().to_owned();
        let target = format!("{}?token={token}", ctx.publish_path());
        unauthorized(ctx, "query-token", |r| r.with_target(&target), "missing").await
    })
}

fn with_token(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("with-token").await?;
        ctx.expect_head(&mut m).await?;
        Ok("a first event and one more: 200 applied".into())
    })
}

/// Announces a body of 1,000,000 bytes at `path`, sends a sliver, and
/// expects the 401 without sending the rest.
async fn refused_early(ctx: &Ctx, path: &str, content_type: &str) -> anyhow::Result<String> {
    let mut conn = Conn::open(ctx.addr).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: 1000000\r\n\r\n{{\"match_id\":",
        ctx.addr
    );
    conn.write(head.as_bytes()).await?;
    let head = conn.head_within(PROMPT).await.context("the gateway waited for the body")?;
    ensure!(head.status == 401, "expected 401 before the body, got {}", head.status);
    Ok(format!("401 within {} s with 12 of 1,000,000 announced bytes sent", PROMPT.as_secs()))
}

fn refused_before_body(ctx: &Ctx) -> Check<'_> {
    Box::pin(refused_early(ctx, ctx.publish_path(), "application/json"))
}

fn bulk_refused_before_body(ctx: &Ctx) -> Check<'_> {
    Box::pin(refused_early(ctx, "/v1/events/bulk", "application/x-ndjson"))
}

fn expect_continue(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut conn = Conn::open(ctx.addr).await?;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n",
            ctx.publish_path(),
            ctx.addr
        );
        conn.write(head.as_bytes()).await?;
        let head = conn.head_within(PROMPT).await.context("no answer without the body")?;
        ensure!(head.status == 401, "expected 401 without asking for the body, got {}", head.status);
        Ok("Expect: 100-continue, anonymous: 401 at once, no 100 Continue".into())
    })
}

fn jobs_need_publish_token(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let anonymous = ctx.send(&Request::post("/v1/analytics/jobs")).await?;
        expect_401(&anonymous).context("anonymous")?;
        let mut detail = "POST /v1/analytics/jobs: 401 without a token".to_owned();
        if let Some(token) = ctx.read_token() {
            let reader = ctx.send(&Request::post("/v1/analytics/jobs").bearer(token)).await?;
            expect_401(&reader).context("with the read token")?;
            detail.push_str(" and with the read token");
        }
        Ok(detail)
    })
}

fn reads_need_read_token(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let token = ctx.require_read_token()?;
        let m = ctx.new_match("reader").await?;
        let path = ctx.topic_path(&m.id);
        for (label, request) in [
            ("no token", Request::get(&path)),
            ("wrong token", Request::get(&path).bearer("not-the-token-but-long-enough")),
            ("wrong query token", Request::get(format!("{path}?token=not-the-token-but-long-enough"))),
        ] {
            expect_401(&ctx.send(&request).await?).context(label)?;
        }
        ctx.send(&Request::get(&path).bearer(token)).await?.expect_ok_json().context("bearer read token")?;
        ctx.send(&Request::get(ctx.with_token(&path)))
            .await?
            .expect_ok_json()
            .context("?token= read token")?;
        ctx.send(&Request::get(&path).bearer(ctx.publish_token()))
            .await?
            .expect_ok_json()
            .context("publish token")?;
        Ok("no token, a wrong one, a wrong ?token=: 401; the read token (header or query) and a publish token: 200".into())
    })
}

fn live_needs_read_token(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        ctx.require_read_token()?;
        let m = ctx.new_match("live-reader").await?;
        let sse = ctx.send(&Request::get(ctx.sse_path(&m.id))).await?;
        expect_401(&sse).context("SSE")?;
        if ctx.surface.edge_only {
            return Ok("SSE without a token: 401 JSON".into());
        }
        match Ws::upgrade(ctx.addr, "/v1/live").await? {
            Ok(_) => anyhow::bail!("the WebSocket opened without a token"),
            Err(response) => expect_401(&response).context("WebSocket")?,
        };
        Ws::connect(ctx.addr, &ctx.with_token("/v1/live")).await.context("with ?token=")?;
        Ok("WebSocket and SSE without a token: 401 JSON; with ?token=: upgraded".into())
    })
}

fn health_is_public(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        for path in ["/healthz", "/readyz", "/metrics", "/v1/debug/runtime-fit"] {
            let response = ctx.send(&Request::get(path)).await?;
            ensure!(response.status() == 200, "{path} without a token: {}", response.status());
        }
        Ok("/healthz, /readyz, /metrics, /v1/debug/runtime-fit: 200 without a token, as documented".into())
    })
}
