//! Malformed and refused events: each answered with a precise 4xx JSON error
//! naming the problem, and nothing applied (proved by the sequencing rule:
//! the next event must still be the one the run expects).

use anyhow::{Context as _, ensure};
use serde_json::{Value, json};

use crate::{
    events::{self, foul, goal, kickoff, pass, red_card, with},
    http::{Request, Response, clip},
    suite::{Case, Check, Ctx, Match},
};

pub(crate) const CASES: &[Case] = &[
    Case { name: "ingest/invalid-json", run: invalid_json },
    Case { name: "ingest/empty-body", run: empty_body },
    Case { name: "ingest/array-of-non-objects", run: array_of_non_objects },
    Case { name: "ingest/positional-point", run: positional_point },
    Case { name: "ingest/positional-17-element-event", run: positional_event },
    Case { name: "ingest/one-bad-element-applies-nothing", run: one_bad_element },
    Case { name: "ingest/wrong-type", run: wrong_type },
    Case { name: "ingest/unknown-kind", run: unknown_kind },
    Case { name: "ingest/unknown-field", run: unknown_field },
    Case { name: "ingest/duplicate-field", run: duplicate_field },
    Case { name: "ingest/seq-beyond-u64", run: seq_too_large },
    Case { name: "ingest/team-beyond-u32", run: team_too_large },
    Case { name: "ingest/float-out-of-range", run: float_out_of_range },
    Case { name: "ingest/negative-seq", run: negative_seq },
    Case { name: "ingest/seq-zero", run: seq_zero },
    Case { name: "ingest/minute-beyond-max", run: minute_beyond_max },
    Case { name: "ingest/minute-beyond-u16", run: minute_beyond_u16 },
    Case { name: "ingest/point-off-the-pitch", run: off_the_pitch },
    Case { name: "ingest/match-id-not-a-slug", run: match_id_not_a_slug },
    Case { name: "ingest/non-utf8-body", run: non_utf8 },
    Case { name: "ingest/deeply-nested-json", run: deeply_nested },
    Case { name: "ingest/form-body", run: form_body },
    Case { name: "ingest/goals-beyond-max-are-422", run: goals_beyond_max },
    Case { name: "ingest/red-cards-beyond-max-are-422", run: red_cards_beyond_max },
    Case { name: "ingest/unknown-team-is-422", run: unknown_team },
    Case { name: "ingest/sequence-gap-is-409", run: sequence_gap },
    Case { name: "ingest/event-before-kickoff-is-409", run: before_kickoff },
    Case { name: "ingest/second-kickoff-is-409", run: second_kickoff },
    Case { name: "ingest/replay-is-a-duplicate", run: replay },
    Case { name: "ingest/ndjson-bad-lines-named-and-skipped", run: ndjson_bad_lines },
    Case { name: "ingest/ndjson-only-bad-lines-apply-nothing", run: ndjson_all_bad },
    Case { name: "ingest/ndjson-line-too-long", run: ndjson_line_too_long },
    Case { name: "ingest/ndjson-wrong-content-type-is-415", run: ndjson_wrong_type },
];

/// Publishes `body` as `content_type`, expects the error `status`/`code`
/// with `needle` in its message, and that nothing was applied.
async fn refused(
    ctx: &Ctx,
    m: &mut Match,
    body: &[u8],
    content_type: &str,
    (status, code): (u16, &str),
    needle: &str,
) -> anyhow::Result<String> {
    let response = ctx.send(&ctx.publisher(body, content_type)).await?;
    let message = response.expect_error(status, code)?;
    ensure!(message.contains(needle), "expected {needle:?} in the message, got {message:?}");
    ctx.expect_head(m).await.context("after the refusal")?;
    Ok(format!("{status} {code}: {}; nothing applied", clip(&message, 100)))
}

async fn refused_json(
    ctx: &Ctx,
    tag: &str,
    body: impl FnOnce(&str) -> Value,
    needle: &str,
) -> anyhow::Result<String> {
    let mut m = ctx.new_match(tag).await?;
    let body = body(&m.id);
    refused(ctx, &mut m, body.to_string().as_bytes(), "application/json", (400, "invalid_event"), needle)
        .await
}

fn invalid_json(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("invalid-json").await?;
        let body = format!("{{\"match_id\": \"{}\", ", m.id);
        refused(ctx, &mut m, body.as_bytes(), "application/json", (400, "invalid_event"), "invalid JSON")
            .await
    })
}

fn empty_body(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("empty").await?;
        refused(ctx, &mut m, b"", "application/json", (400, "invalid_event"), "invalid JSON").await
    })
}

fn array_of_non_objects(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("non-objects").await?;
        refused(ctx, &mut m, b"[1, 2, 3]", "application/json", (400, "invalid_event"), "[0]").await
    })
}

fn positional_point(ctx: &Ctx) -> Check<'_> {
    Box::pin(refused_json(
        ctx,
        "positional-point",
        |id| with(pass(id, 2), "start", json!([40.0, 30.0])),
        "object",
    ))
}

fn positional_event(ctx: &Ctx) -> Check<'_> {
    Box::pin(refused_json(
        ctx,
        "positional-event",
        |id| {
            json!([[
                id, 2, 3, null, "pass", 1, 7, {"x": 40.0, "y": 30.0}, {"x": 60.5, "y": 20.0},
                true, null, null, null, null, null, null, null
            ]])
        },
        "object",
    ))
}

fn one_bad_element(ctx: &Ctx) -> Check<'_> {
    Box::pin(refused_json(
        ctx,
        "bad-element",
        |id| json!([foul(id, 2), {"match_id": id, "seq": 3, "kind": "goal"}]),
        "event [1]: `team` is required for a goal event",
    ))
}

fn wrong_type(ctx: &Ctx) -> Check<'_> {
    Box::pin(refused_json(
        ctx,
        "wrong-type",
        |id| with(foul(id, 2), "seq", json!("two")),
        "`seq`: invalid type",
    ))
}

fn unknown_kind(ctx: &Ctx) -> Check<'_> {
    Box::pin(refused_json(
        ctx,
        "unknown-kind",
        |id| with(foul(id, 2), "kind", json!("moonwalk")),
        "unknown event kind \"moonwalk\"",
    ))
}

fn unknown_field(ctx: &Ctx) -> Check<'_> {
    Box::pin(refused_json(ctx, "unknown-field", |id| with(goal(id, 2, 1), "sucess", json!(true)), "`sucess`"))
}

fn duplicate_field(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("duplicate-field").await?;
        let body = format!(
            r#"{{"match_id":"{}","seq":2,"seq":3,"kind":"foul","minute":20,"team":2,"player":4}}"#,
            m.id
        );
        refused(ctx, &mut m, body.as_bytes(), "application/json", (400, "invalid_event"), "duplicate field")
            .await
    })
}

/// A foul whose `seq` and `team` are written as raw JSON numbers, beyond
/// what `serde_json::Value` would keep exact.
async fn raw_numbers(ctx: &Ctx, tag: &str, seq: &str, team: &str, needle: &str) -> anyhow::Result<String> {
    let mut m = ctx.new_match(tag).await?;
    let body = format!(
        r#"{{"match_id":"{}","seq":{seq},"kind":"foul","minute":20,"team":{team},"player":4}}"#,
        m.id
    );
    refused(ctx, &mut m, body.as_bytes(), "application/json", (400, "invalid_event"), needle).await
}

fn seq_too_large(ctx: &Ctx) -> Check<'_> {
    Box::pin(raw_numbers(ctx, "seq-large", "18446744073709551616", "2", "`seq`"))
}

fn team_too_large(ctx: &Ctx) -> Check<'_> {
    Box::pin(raw_numbers(ctx, "team-large", "2", "4294967296", "`team`"))
}

fn float_out_of_range(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("float-range").await?;
        let body = pass(&m.id, 2).to_string().replacen("40.0", "1e400", 1);
        let needle = "number out of range";
        refused(ctx, &mut m, body.as_bytes(), "application/json", (400, "invalid_event"), needle).await
    })
}

fn negative_seq(ctx: &Ctx) -> Check<'_> {
    Box::pin(refused_json(ctx, "negative-seq", |id| with(foul(id, 2), "seq", json!(-2)), "`seq`"))
}

fn seq_zero(ctx: &Ctx) -> Check<'_> {
    Box::pin(refused_json(
        ctx,
        "seq-zero",
        |id| with(foul(id, 2), "seq", json!(0)),
        "`seq` must be at least 1",
    ))
}

fn minute_beyond_max(ctx: &Ctx) -> Check<'_> {
    Box::pin(refused_json(
        ctx,
        "minute-max",
        |id| with(foul(id, 2), "minute", json!(151)),
        "`minute` must be at most 150, got 151",
    ))
}

fn minute_beyond_u16(ctx: &Ctx) -> Check<'_> {
    Box::pin(refused_json(ctx, "minute-u16", |id| with(foul(id, 2), "minute", json!(70_000)), "`minute`"))
}

fn off_the_pitch(ctx: &Ctx) -> Check<'_> {
    Box::pin(refused_json(
        ctx,
        "off-pitch",
        |id| with(pass(id, 2), "start", json!({"x": 106, "y": 30})),
        "`start.x` must be between 0 and 105 metres, got 106",
    ))
}

fn match_id_not_a_slug(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("slug").await?;
        let body = foul("../../etc/Passwd", 2);
        refused(
            ctx,
            &mut m,
            body.to_string().as_bytes(),
            "application/json",
            (400, "invalid_event"),
            "`match_id`",
        )
        .await
    })
}

fn non_utf8(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("non-utf8").await?;
        let mut body = format!(
            "{{\"match_id\":\"{}\",\"seq\":2,\"minute\":20,\"team\":2,\"player\":4,\"kind\":\"",
            m.id
        )
        .into_bytes();
        body.extend_from_slice(&[b'f', 0xFF, 0xFE, 0xC3, 0x28]);
        body.extend_from_slice(b"\"}");
        refused(ctx, &mut m, &body, "application/json", (400, "invalid_event"), "invalid JSON").await
    })
}

fn deeply_nested(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        // Typed parsing refuses the first level that is not an event, so
        // depth costs nothing; the answer must still be precise.
        let mut m = ctx.new_match("nested").await?;
        let body = "[".repeat(100_000);
        let needle = "`[0]`: invalid type: sequence, expected an event object";
        refused(ctx, &mut m, body.as_bytes(), "application/json", (400, "invalid_event"), needle).await
    })
}

fn form_body(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("form").await?;
        let body = format!("match_id={}&seq=2&kind=foul", m.id);
        let content_type = "application/x-www-form-urlencoded";
        refused(ctx, &mut m, body.as_bytes(), content_type, (400, "invalid_event"), "invalid JSON").await
    })
}

/// Publishes `events` as one array and expects every one applied.
async fn publish_all(ctx: &Ctx, m: &mut Match, events: Vec<Value>) -> anyhow::Result<()> {
    let count = events.len() as u64;
    let report = ctx.publish_ok(&Value::Array(events)).await?;
    ensure!(report["accepted"] == count && report["rejected_count"] == 0, "set-up array: {report}");
    m.head += count;
    Ok(())
}

fn goals_beyond_max(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("goals").await?;
        let goals = (2..=51).map(|seq| goal(&m.id, seq, 1)).collect();
        publish_all(ctx, &mut m, goals).await?;
        let body = goal(&m.id, m.head + 1, 1).to_string();
        let detail =
            refused(ctx, &mut m, body.as_bytes(), "application/json", (422, "too_many_goals"), "at most 50")
                .await?;
        let state = ctx.get(&format!("/v1/matches/{}", m.id)).await?.expect_ok_json()?;
        ensure!(state["score"]["home"].as_u64() <= Some(50), "score past the limit: {}", state["score"]);
        Ok(format!("50 goals accepted, the 51st: {detail}"))
    })
}

fn red_cards_beyond_max(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("reds").await?;
        let reds = (2..=5).map(|seq| red_card(&m.id, seq, 10 + seq as u32)).collect();
        publish_all(ctx, &mut m, reds).await?;
        let body = red_card(&m.id, m.head + 1, 20).to_string();
        let detail = refused(
            ctx,
            &mut m,
            body.as_bytes(),
            "application/json",
            (422, "too_many_red_cards"),
            "at most 4",
        )
        .await?;
        Ok(format!("4 red cards accepted, the 5th: {detail}"))
    })
}

fn unknown_team(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("stranger").await?;
        let body = goal(&m.id, 2, 99).to_string();
        refused(
            ctx,
            &mut m,
            body.as_bytes(),
            "application/json",
            (422, "unknown_team"),
            "team 99 does not play",
        )
        .await
    })
}

fn sequence_gap(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("gap").await?;
        let body = foul(&m.id, 5).to_string();
        refused(
            ctx,
            &mut m,
            body.as_bytes(),
            "application/json",
            (409, "sequence_gap"),
            "expected seq 2, got 5",
        )
        .await
    })
}

fn before_kickoff(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let id = ctx.match_id("no-kickoff");
        let response = ctx.publish(&pass(&id, 1)).await?;
        response.expect_error(409, "match_not_started")?;
        let read = ctx.get(&format!("/v1/matches/{id}")).await?;
        read.expect_error(404, "unknown_match").context("the refused event created the match")?;
        Ok("409 match_not_started; the match still does not exist (404 unknown_match)".into())
    })
}

fn second_kickoff(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("rekick").await?;
        let again = with(kickoff(&m.id), "seq", json!(2));
        let body = again.to_string();
        refused(ctx, &mut m, body.as_bytes(), "application/json", (409, "match_already_started"), "already")
            .await
    })
}

fn replay(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("replay").await?;
        let ack = ctx.publish_ok(&events::kickoff(&m.id)).await?;
        ensure!(ack["status"] == "duplicate", "a replayed kickoff answered {ack}");
        ctx.expect_head(&mut m).await?;
        Ok("replayed kickoff: 200 duplicate, applied once".into())
    })
}

async fn bulk(ctx: &Ctx, body: Vec<u8>, content_type: &str) -> anyhow::Result<Response> {
    let request = Request::post("/v1/events/bulk").bearer(ctx.publish_token()).body(content_type, body);
    ctx.send(&request).await
}

/// `(line, code)` of each rejected line in a bulk report.
fn rejected_lines(report: &Value) -> Vec<(u64, String)> {
    report["rejected"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|r| (r["line"].as_u64().unwrap_or(0), r["code"].as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn ndjson_bad_lines(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("ndjson").await?;
        let mut body = format!("{}\n{{not json\n", foul(&m.id, 2)).into_bytes();
        body.extend_from_slice(&[b'{', 0xFF, b'}', b'\n']);
        body.extend_from_slice(format!("{}\n", foul(&m.id, 3)).as_bytes());
        let report = bulk(ctx, body, "application/x-ndjson").await?.expect_ok_json()?;
        let rejected = rejected_lines(&report);
        let expected = vec![(2, "invalid_event".to_owned()), (3, "invalid_event".to_owned())];
        ensure!(rejected == expected, "rejected lines {rejected:?}, expected {expected:?}: {report}");
        ensure!(report["accepted"] == 2, "accepted {}", report["accepted"]);
        m.head = 3;
        ctx.expect_head(&mut m).await?;
        Ok("lines 2 (not JSON) and 3 (not UTF-8) reported as invalid_event, lines 1 and 4 applied".into())
    })
}

fn ndjson_all_bad(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("ndjson-bad").await?;
        let body = format!(
            "{{bad\n[1,2]\n{}\n{}\n",
            with(foul(&m.id, 2), "kind", json!("moonwalk")),
            foul(&m.id, 9)
        );
        let report = bulk(ctx, body.into_bytes(), "application/x-ndjson").await?.expect_ok_json()?;
        ensure!(report["accepted"] == 0 && report["rejected_count"] == 4, "report {report}");
        let codes: Vec<String> = rejected_lines(&report).into_iter().map(|(_, code)| code).collect();
        ensure!(
            codes[..3].iter().all(|c| c == "invalid_event") && codes[3] == "sequence_gap",
            "codes {codes:?}"
        );
        ctx.expect_head(&mut m).await?;
        Ok("4 bad lines (3 invalid_event, 1 sequence_gap) reported, nothing applied".into())
    })
}

fn ndjson_line_too_long(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("ndjson-long").await?;
        let long =
            format!("{{\"match_id\":\"{}\",\"pad\":\"{}\"}}", m.id, "x".repeat(ctx.max_line_bytes + 1024));
        let body = format!("{long}\n{}\n", foul(&m.id, 2));
        let report = bulk(ctx, body.into_bytes(), "application/x-ndjson").await?.expect_ok_json()?;
        let rejected = rejected_lines(&report);
        ensure!(rejected == vec![(1, "line_too_long".to_owned())], "rejected {rejected:?}: {report}");
        m.head = 2;
        ctx.expect_head(&mut m).await?;
        Ok(format!("a {} KiB line: line_too_long, the next line applied", ctx.max_line_bytes / 1024 + 1))
    })
}

fn ndjson_wrong_type(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("ndjson-type").await?;
        let body = foul(&m.id, 2).to_string().into_bytes();
        let response = bulk(ctx, body, "application/json").await?;
        let message = response.expect_error(415, "unsupported_media_type")?;
        ensure!(message.contains("application/x-ndjson"), "message {message:?}");
        ctx.expect_head(&mut m).await?;
        Ok("application/json on the NDJSON route: 415 unsupported_media_type, nothing applied".into())
    })
}
