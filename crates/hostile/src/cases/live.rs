//! The live feed under abuse. WebSocket: bad commands get an `error` reply
//! and the connection stays; a client probing for match ids is closed with
//! 1008 after 64 failures; frames that break RFC 6455 or the size limit end
//! with 1002 or 1009, not a reset. SSE: an unknown match is a JSON 404.

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};

use crate::{
    events,
    http::Conn,
    suite::{Case, Check, Ctx, Match},
    ws::{self, BINARY, CLOSE, Frame, Incoming, PING, TEXT, Ws},
};

pub(crate) const CASES: &[Case] = &[
    Case { name: "ws/plain-get-is-400-json", run: plain_get },
    Case { name: "ws/unknown-match-gets-unknown_match", run: unknown_match },
    Case { name: "ws/64-failed-subscribes-close-1008", run: failed_subscribes },
    Case { name: "ws/oversized-message-closes-1009", run: oversized_message },
    Case { name: "ws/unmasked-frame-closes-1002", run: unmasked_frame },
    Case { name: "ws/reserved-bits-close-1002", run: reserved_bits },
    Case { name: "ws/unknown-opcode-closes-1002", run: unknown_opcode },
    Case { name: "ws/oversized-ping-closes-1002", run: oversized_ping },
    Case { name: "ws/fragmented-ping-closes-1002", run: fragmented_ping },
    Case { name: "ws/stray-continuation-closes-1002", run: stray_continuation },
    Case { name: "ws/invalid-utf8-text-closes-1007", run: invalid_utf8 },
    Case { name: "ws/garbage-json-gets-an-error-reply", run: garbage_json },
    Case { name: "ws/unknown-op-gets-unknown_command", run: unknown_op },
    Case { name: "ws/missing-op-gets-invalid_message", run: missing_op },
    Case { name: "ws/binary-message-gets-invalid_message", run: binary_message },
    Case { name: "ws/bad-match-id-gets-invalid_message", run: bad_match_id },
    Case { name: "ws/double-subscribe-gets-already_subscribed", run: double_subscribe },
    Case { name: "ws/unsubscribe-unknown-gets-not_subscribed", run: unsubscribe_unknown },
    Case { name: "ws/since-beyond-head-gets-since_beyond_head", run: since_beyond_head },
    Case { name: "ws/65th-subscription-is-refused", run: too_many_subscriptions },
    Case { name: "ws/ping-gets-pong", run: ping_pong },
    Case { name: "ws/close-is-answered", run: close_answered },
    Case { name: "ws/no-subscription-closes-4001", run: no_subscription },
    Case { name: "sse/unknown-match-is-404-json", run: sse_unknown_match },
    Case { name: "sse/bad-match-id-is-400-json", run: sse_bad_match_id },
    Case { name: "sse/subscribed-comes-first", run: sse_subscribed },
];

async fn open(ctx: &Ctx) -> anyhow::Result<Ws> {
    Ws::connect(ctx.addr, &ctx.with_token("/v1/live")).await
}

/// Sends `command` and expects an error reply with `code`; the
/// connection must still serve a subscribe afterwards.
async fn error_reply(
    ctx: &Ctx,
    tag: &str,
    send: impl AsyncFnOnce(&mut Ws) -> anyhow::Result<()>,
    code: &str,
) -> anyhow::Result<String> {
    let m = ctx.new_match(tag).await?;
    let mut ws = open(ctx).await?;
    send(&mut ws).await?;
    let reply = ws.reply().await?;
    ensure!(reply["type"] == "error" && reply["code"] == code, "expected an error {code}, got {reply}");
    ensure!(reply["message"].is_string(), "no message: {reply}");
    still_serves(&mut ws, &m).await?;
    Ok(format!(
        "error {code} ({}); the connection still serves",
        crate::http::clip(reply["message"].as_str().unwrap_or_default(), 80)
    ))
}

async fn still_serves(ws: &mut Ws, m: &Match) -> anyhow::Result<()> {
    ws.json(&json!({"op": "subscribe", "match": m.id})).await?;
    let reply = ws.reply().await.context("after the error")?;
    ensure!(reply["type"] == "subscribed" && reply["seq"] == m.head, "after the error: {reply}");
    Ok(())
}

/// Sends `frame` on a fresh connection and expects the close `code`.
async fn closes_with(ctx: &Ctx, frame: Frame, code: u16, what: &str) -> anyhow::Result<String> {
    let mut ws = open(ctx).await?;
    ws.send(&frame).await?;
    match ws.close_code(ws::WAIT).await? {
        Some(got) if got == code => Ok(format!("{what}: close {code}")),
        Some(got) => bail!("{what}: close {got}, expected {code}"),
        None => bail!("{what}: the connection ended without a close frame, expected {code}"),
    }
}

fn plain_get(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let response = ctx.get("/v1/live").await?;
        response.expect_error(400, "invalid_parameter")?;
        Ok("GET /v1/live without an upgrade: 400 invalid_parameter".into())
    })
}

fn unknown_match(ctx: &Ctx) -> Check<'_> {
    Box::pin(error_reply(
        ctx,
        "ws-unknown",
        async |ws: &mut Ws| ws.json(&json!({"op": "subscribe", "match": "no-such-match-anywhere"})).await,
        "unknown_match",
    ))
}

fn failed_subscribes(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut ws = open(ctx).await?;
        for i in 0..63 {
            ws.json(&json!({"op": "subscribe", "match": format!("{}-nosuch{i}", ctx.run)})).await?;
            let reply = ws.reply().await.with_context(|| format!("failed subscribe #{}", i + 1))?;
            ensure!(reply["code"] == "unknown_match", "reply {reply}");
        }
        ws.json(&json!({"op": "subscribe", "match": format!("{}-nosuch63", ctx.run)})).await?;
        match ws.close_code(ws::WAIT).await? {
            Some(1008) => Ok("63 unknown_match replies, the 64th failure: close 1008".into()),
            other => bail!("after 64 failed subscribes: {other:?}, expected close 1008"),
        }
    })
}

fn oversized_message(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let huge = format!("{{\"op\":\"subscribe\",\"match\":\"{}\"}}", "x".repeat(8 * 1024));
        closes_with(ctx, Frame::new(TEXT, huge), 1009, "an 8 KiB message").await
    })
}

fn unmasked_frame(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let frame = Frame { masked: false, ..Frame::new(TEXT, r#"{"op":"subscribe","match":"x"}"#) };
        closes_with(ctx, frame, 1002, "an unmasked client frame").await
    })
}

fn reserved_bits(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let frame = Frame { rsv: 0b100, ..Frame::new(TEXT, r#"{"op":"subscribe","match":"x"}"#) };
        closes_with(ctx, frame, 1002, "RSV1 set without an extension").await
    })
}

fn unknown_opcode(ctx: &Ctx) -> Check<'_> {
    Box::pin(closes_with(ctx, Frame::new(0x3, "?"), 1002, "reserved opcode 0x3"))
}

fn oversized_ping(ctx: &Ctx) -> Check<'_> {
    Box::pin(closes_with(
        ctx,
        Frame::new(PING, vec![b'p'; 200]),
        1002,
        "a 200-byte ping (control frames stop at 125)",
    ))
}

fn fragmented_ping(ctx: &Ctx) -> Check<'_> {
    Box::pin(closes_with(ctx, Frame { fin: false, ..Frame::new(PING, "x") }, 1002, "a ping without FIN"))
}

fn stray_continuation(ctx: &Ctx) -> Check<'_> {
    Box::pin(closes_with(
        ctx,
        Frame::new(0x0, "orphan"),
        1002,
        "a continuation frame with nothing to continue",
    ))
}

fn invalid_utf8(ctx: &Ctx) -> Check<'_> {
    Box::pin(closes_with(
        ctx,
        Frame::new(TEXT, vec![b'{', 0xFF, 0xFE, b'}']),
        1007,
        "a text frame that is not UTF-8",
    ))
}

fn garbage_json(ctx: &Ctx) -> Check<'_> {
    Box::pin(error_reply(ctx, "ws-garbage", async |ws: &mut Ws| ws.text("{nope").await, "invalid_json"))
}

fn unknown_op(ctx: &Ctx) -> Check<'_> {
    Box::pin(error_reply(
        ctx,
        "ws-op",
        async |ws: &mut Ws| ws.json(&json!({"op": "dance"})).await,
        "unknown_command",
    ))
}

fn missing_op(ctx: &Ctx) -> Check<'_> {
    Box::pin(error_reply(
        ctx,
        "ws-no-op",
        async |ws: &mut Ws| ws.json(&json!({"match": "x"})).await,
        "invalid_message",
    ))
}

fn binary_message(ctx: &Ctx) -> Check<'_> {
    Box::pin(error_reply(
        ctx,
        "ws-binary",
        async |ws: &mut Ws| ws.send(&Frame::new(BINARY, r#"{"op":"subscribe","match":"x"}"#)).await,
        "invalid_message",
    ))
}

fn bad_match_id(ctx: &Ctx) -> Check<'_> {
    Box::pin(error_reply(
        ctx,
        "ws-bad-id",
        async |ws: &mut Ws| ws.json(&json!({"op": "subscribe", "match": "../Not A Slug"})).await,
        "invalid_message",
    ))
}

fn double_subscribe(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let m = ctx.new_match("ws-double").await?;
        let mut ws = open(ctx).await?;
        still_serves(&mut ws, &m).await?;
        ws.json(&json!({"op": "subscribe", "match": m.id})).await?;
        let reply = ws.reply().await?;
        ensure!(reply["code"] == "already_subscribed", "second subscribe: {reply}");
        Ok("second subscribe to one match: error already_subscribed".into())
    })
}

fn unsubscribe_unknown(ctx: &Ctx) -> Check<'_> {
    Box::pin(error_reply(
        ctx,
        "ws-unsub",
        async |ws: &mut Ws| ws.json(&json!({"op": "unsubscribe", "match": "never-subscribed"})).await,
        "not_subscribed",
    ))
}

fn since_beyond_head(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let m = ctx.new_match("ws-since").await?;
        let mut ws = open(ctx).await?;
        ws.json(&json!({"op": "subscribe", "match": m.id, "since": 50})).await?;
        let reply = ws.reply().await?;
        ensure!(reply["code"] == "since_beyond_head", "reply {reply}");
        still_serves(&mut ws, &m).await?;
        Ok("since 50 on a match at seq 1: error since_beyond_head; the connection still serves".into())
    })
}

fn too_many_subscriptions(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let ids: Vec<String> = (0..65).map(|i| ctx.match_id(&format!("many{i}"))).collect();
        let kickoffs: Vec<Value> = ids.iter().map(|id| events::kickoff(id)).collect();
        let report = ctx.publish_ok(&Value::Array(kickoffs)).await?;
        ensure!(report["accepted"] == 65, "set-up kickoffs: {report}");
        let mut ws = open(ctx).await?;
        for id in &ids[..64] {
            ws.json(&json!({"op": "subscribe", "match": id})).await?;
            let reply = ws.reply().await?;
            ensure!(reply["type"] == "subscribed", "subscribe {id}: {reply}");
        }
        ws.json(&json!({"op": "subscribe", "match": ids[64]})).await?;
        let reply = ws.reply().await?;
        ensure!(reply["code"] == "too_many_subscriptions", "65th subscribe: {reply}");
        Ok("64 subscriptions held, the 65th: error too_many_subscriptions".into())
    })
}

fn ping_pong(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut ws = open(ctx).await?;
        ws.send(&Frame::new(PING, "are you there")).await?;
        loop {
            match ws.next(ws::WAIT).await? {
                Some(Incoming::Pong(payload)) if payload == b"are you there" => {
                    return Ok("ping answered with a pong carrying its payload".into());
                }
                Some(Incoming::Ping(_)) => {}
                other => bail!("expected a pong, got {other:?}"),
            }
        }
    })
}

fn close_answered(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut ws = open(ctx).await?;
        ws.send(&Frame::new(CLOSE, 1000u16.to_be_bytes())).await?;
        match ws.close_code(ws::WAIT).await? {
            Some(code) => Ok(format!("close 1000 answered with close {code}")),
            None => bail!("the server dropped the connection without answering the close"),
        }
    })
}

fn no_subscription(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let m = ctx.new_match("unsubscribed").await?;
        let started = std::time::Instant::now();
        let mut idle = open(ctx).await?;
        // One that subscribed and left: the grace starts again.
        let mut left = open(ctx).await?;
        left.json(&json!({"op": "subscribe", "match": m.id})).await?;
        ensure!(left.reply().await?["type"] == "subscribed", "subscribe");
        left.json(&json!({"op": "unsubscribe", "match": m.id})).await?;
        ensure!(left.reply().await?["type"] == "unsubscribed", "unsubscribe");
        let limit = ctx.subscribe_grace + ws::WAIT;
        for (what, ws) in [("never subscribed", &mut idle), ("unsubscribed", &mut left)] {
            match ws.close_code(limit).await? {
                Some(4001) => {}
                Some(code) => bail!("{what}: close {code}, expected 4001"),
                None => bail!("{what}: no close frame within {} s", limit.as_secs()),
            }
        }
        let took = started.elapsed();
        ensure!(took >= ctx.subscribe_grace, "closed after {} ms, before the grace", took.as_millis());
        Ok(format!(
            "closed with 4001 after {} ms (grace {} s), also after an unsubscribe",
            took.as_millis(),
            ctx.subscribe_grace.as_secs()
        ))
    })
}

fn sse_unknown_match(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let id = ctx.match_id("sse-missing");
        let code = ctx.unknown_topic_code();
        ctx.get(&ctx.sse_path(&id)).await?.expect_error(404, &code)?;
        Ok(format!("404 {code}"))
    })
}

fn sse_bad_match_id(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        ctx.get(&ctx.sse_path("Not..A..Slug")).await?.expect_error(400, "invalid_parameter")?;
        Ok("400 invalid_parameter".into())
    })
}

fn sse_subscribed(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let m = ctx.new_match("sse-ok").await?;
        let mut conn = Conn::open(ctx.addr).await?;
        conn.write(&ctx.read(&ctx.sse_path(&m.id)).to_bytes(&ctx.addr.to_string())).await?;
        let head = conn.head_within(ws::WAIT).await?;
        ensure!(head.status == 200, "status {}", head.status);
        let content_type = head.header("content-type").unwrap_or_default();
        ensure!(content_type.starts_with("text/event-stream"), "content-type {content_type:?}");
        let mut text = String::new();
        while !text.contains("\n\n") {
            let chunk = conn.chunk_within(ws::WAIT).await?.context("the stream ended")?;
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        let event = text.split("\n\n").next().unwrap_or_default();
        let field = |name: &str| event.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
        ensure!(field("event:") == Some("subscribed"), "first event: {event:?}");
        ensure!(field("id:") == Some("1"), "first event's id: {event:?}");
        let data: Value =
            serde_json::from_str(field("data:").unwrap_or_default()).context("data is not JSON")?;
        ensure!(
            data["type"] == "subscribed" && data[&ctx.surface.topic] == m.id.as_str() && data["seq"] == 1,
            "data {data}"
        );
        ensure!(data["state"]["id"] == m.id.as_str(), "data without the state: {data}");
        Ok(format!(
            "200 text/event-stream; first event `subscribed`, id 1, with the {} state",
            ctx.surface.topic
        ))
    })
}
