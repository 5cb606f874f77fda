//! The live feed, black-box: ingest over HTTP, delivery over WebSocket and
//! SSE, against real gateways (one or two) and, where it matters, a real
//! Redis shared between them.

use super::helpers;

use gateway::{
    GatewayConfig,
    config::TEST_PUBLISH_TOKEN,
    testing::stand_in::{StandInConfig, StandInWorker},
};
use helpers::{
    error_of,
    live::{SseClient, WsClient, goal, kickoff, pass, publish, publish_ok, start_match},
    spawn_app, spawn_gateway,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use store::StoreArgs;

#[tokio::test]
async fn an_event_is_applied_once_and_replays_are_acknowledged() {
    let app = spawn_app().await;
    let addr = app.gateway.addr;
    let ack = publish_ok(&app.client, addr, &kickoff("derby")).await;
    assert_eq!(ack, json!({"status": "applied", "match": "derby", "seq": 1}));
    publish_ok(&app.client, addr, &goal("derby", 2, 1)).await;

    let replay = publish_ok(&app.client, addr, &goal("derby", 2, 1)).await;
    assert_eq!(replay["status"], "duplicate");

    let state: Value = app.get("/v1/matches/derby").await.json().await.expect("json");
    assert_eq!(state["score"], json!({"home": 1, "away": 0}), "the replayed goal did not count twice");
    assert_eq!(state["seq"], 2);
    assert_eq!(state["home"]["name"], "Rovers");

    let list: Value = app.get("/v1/matches").await.json().await.expect("json");
    assert_eq!(list["matches"][0]["id"], "derby");
}

#[tokio::test]
async fn a_sequence_gap_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    start_match(&app.client, app.gateway.addr, "gappy", 2).await;

    let response = publish(&app.client, app.gateway.addr, &goal("gappy", 5, 1)).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let (code, message) = error_of(response).await;
    assert_eq!(code, "sequence_gap");
    assert!(message.contains("expected seq 3, got 5"), "{message}");

    let state: Value = app.get("/v1/matches/gappy").await.json().await.expect("json");
    assert_eq!((state["seq"].as_u64(), state["score"]["home"].as_u64()), (Some(2), Some(0)));
}

#[tokio::test]
async fn events_before_kickoff_or_for_a_stranger_team_are_refused() {
    let app = spawn_app().await;
    let addr = app.gateway.addr;
    let response = publish(&app.client, addr, &pass("nokick", 1)).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(error_of(response).await.0, "match_not_started");

    publish_ok(&app.client, addr, &kickoff("teams")).await;
    let response = publish(&app.client, addr, &goal("teams", 2, 99)).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (code, message) = error_of(response).await;
    assert_eq!((code.as_str(), message.as_str()), ("unknown_team", "team 99 does not play in match teams"));
}

#[tokio::test]
async fn bad_input_gets_a_precise_4xx_and_applies_nothing() {
    let app = spawn_app().await;
    let addr = app.gateway.addr;
    let url = format!("http://{addr}/v1/events");
    publish_ok(&app.client, addr, &kickoff("strict")).await;

    let raw = |body: &'static str| {
        app.client
            .post(&url)
            .bearer_auth(TEST_PUBLISH_TOKEN)
            .header("content-type", "application/json")
            .body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str, &str)> = vec![
        (raw("{\"match_id\": \"strict\", "), StatusCode::BAD_REQUEST, "invalid_event", "invalid JSON"),
        (
            raw(r#"{"match_id":"strict","seq":"two","kind":"pass"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_event",
            "`seq`: invalid type",
        ),
        (
            raw(r#"{"match_id":"strict","seq":2,"kind":"moonwalk"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_event",
            "unknown event kind \"moonwalk\"",
        ),
        (
            raw(
                r#"{"match_id":"strict","seq":2,"kind":"shot","team":1,"player":9,"start":{"x":106,"y":30},"on_target":true}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid_event",
            "`start.x` must be between 0 and 105 metres, got 106",
        ),
        (
            raw(r#"{"match_id":"strict","seq":2,"kind":"goal","team":1,"sucess":true}"#),
            StatusCode::BAD_REQUEST,
            "invalid_event",
            "`sucess`: unknown field",
        ),
        (
            app.client.post(&url).json(&goal("strict", 2, 1)),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token",
        ),
        (
            app.client.post(&url).bearer_auth("wrong-token-but-long-enough").json(&goal("strict", 2, 1)),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid bearer token",
        ),
        (
            app.client
                .post(&url)
                .bearer_auth(TEST_PUBLISH_TOKEN)
                .header("content-type", "application/json")
                .body(vec![b' '; 2 * 1024 * 1024]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body exceeds the limit of 1048576 bytes",
        ),
        (
            app.client
                .post(&url)
                .bearer_auth(TEST_PUBLISH_TOKEN)
                .json(&json!([goal("strict", 2, 1), {"match_id": "strict", "seq": 3, "kind": "goal"}])),
            StatusCode::BAD_REQUEST,
            "invalid_event",
            "event [1]: `team` is required for a goal event",
        ),
    ];
    for (request, status, code, message) in cases {
        let response = request.send().await.expect("answer");
        assert_eq!(response.status(), status, "{message}");
        let (got_code, got_message) = error_of(response).await;
        assert_eq!(got_code, code, "{got_message}");
        assert!(got_message.contains(message), "expected {message:?} in {got_message:?}");
    }

    let state: Value = app.get("/v1/matches/strict").await.json().await.expect("json");
    assert_eq!(state["seq"], 1, "no bad request applied anything, not even the valid half of the array");
}

#[tokio::test]
async fn an_array_is_applied_in_order_with_a_per_event_report() {
    let app = spawn_app().await;
    let body = json!([
        kickoff("batch"),
        pass("batch", 2),
        pass("batch", 2),
        goal("batch", 3, 2),
        goal("batch", 9, 1)
    ]);
    let report = publish_ok(&app.client, app.gateway.addr, &body).await;
    assert_eq!(report["accepted"], 4);
    assert_eq!(report["duplicates"], 1);
    assert_eq!(report["rejected_count"], 1);
    assert_eq!(report["rejected"][0]["index"], 4);
    assert_eq!(report["rejected"][0]["code"], "sequence_gap");
    let state: Value = app.get("/v1/matches/batch").await.json().await.expect("json");
    assert_eq!(state["score"], json!({"home": 0, "away": 1}));
}

#[tokio::test]
async fn bulk_ndjson_reports_bad_lines_by_number_and_applies_the_rest() {
    let app = spawn_app().await;
    let long_line = format!("{{\"match_id\":\"bulk\",\"pad\":\"{}\"}}", "x".repeat(70 * 1024));
    let body = [
        kickoff("bulk").to_string(),
        pass("bulk", 2).to_string(),
        "{not json".to_owned(),
        String::new(),
        long_line,
        pass("bulk", 3).to_string(),
        json!({"match_id": "bulk", "seq": 4, "kind": "pass", "team": 1}).to_string(),
    ]
    .join("\n");
    let response = app
        .client
        .post(app.url("/v1/events/bulk"))
        .bearer_auth(TEST_PUBLISH_TOKEN)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    let report: Value = response.json().await.expect("json");
    assert_eq!(report["accepted"], 3);
    let rejected: Vec<(u64, &str)> = report["rejected"]
        .as_array()
        .expect("list")
        .iter()
        .map(|r| (r["line"].as_u64().expect("line"), r["code"].as_str().expect("code")))
        .collect();
    assert_eq!(rejected, vec![(3, "invalid_event"), (5, "line_too_long"), (7, "invalid_event")]);

    let wrong_type = app
        .client
        .post(app.url("/v1/events/bulk"))
        .bearer_auth(TEST_PUBLISH_TOKEN)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("answer");
    assert_eq!(wrong_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn a_websocket_subscriber_gets_the_state_then_every_update_in_order() {
    let app = spawn_app().await;
    let addr = app.gateway.addr;
    start_match(&app.client, addr, "live1", 3).await;

    let mut ws = WsClient::connect(addr).await;
    let subscribed = ws.subscribe("live1", None).await;
    assert_eq!(subscribed["type"], "subscribed");
    assert_eq!(subscribed["seq"], 3);
    assert_eq!(subscribed["state"]["id"], "live1");

    for seq in 4..=8 {
        publish_ok(&app.client, addr, &pass("live1", seq)).await;
    }
    publish_ok(&app.client, addr, &goal("live1", 9, 2)).await;
    for seq in 4..=9 {
        let update = ws.recv().await;
        assert_eq!((update["type"].as_str(), update["seq"].as_u64()), (Some("event"), Some(seq)));
    }
    let last = ws.recv_or_none().await;
    assert!(last.is_none(), "no extra messages: {last:?}");
}

#[tokio::test]
async fn a_resuming_subscriber_receives_exactly_what_it_missed() {
    let app = spawn_app().await;
    let addr = app.gateway.addr;
    start_match(&app.client, addr, "resume", 4).await;

    let mut ws = WsClient::connect(addr).await;
    ws.subscribe("resume", None).await;
    publish_ok(&app.client, addr, &pass("resume", 5)).await;
    let seen = ws.recv().await["seq"].as_u64().expect("seq");
    drop(ws);

    for seq in 6..=10 {
        publish_ok(&app.client, addr, &pass("resume", seq)).await;
    }
    let mut ws = WsClient::connect(addr).await;
    let subscribed = ws.subscribe("resume", Some(seen)).await;
    assert_eq!((subscribed["recovered"].as_bool(), subscribed["replayed"].as_u64()), (Some(true), Some(5)));
    let replayed: Vec<u64> = {
        let mut seqs = Vec::new();
        for _ in 0..5 {
            seqs.push(ws.recv().await["seq"].as_u64().expect("seq"));
        }
        seqs
    };
    assert_eq!(replayed, vec![6, 7, 8, 9, 10]);

    publish_ok(&app.client, addr, &pass("resume", 11)).await;
    assert_eq!(ws.recv().await["seq"], 11, "live updates continue after the replay, none twice");
}

#[tokio::test]
async fn resuming_past_the_history_says_recovery_was_incomplete() {
    let app = helpers::spawn_app_with(|_| {}, |gateway, _| gateway.history_events = 3).await;
    let addr = app.gateway.addr;
    start_match(&app.client, addr, "short", 10).await;
    let mut ws = WsClient::connect(addr).await;
    let subscribed = ws.subscribe("short", Some(2)).await;
    assert_eq!(subscribed["recovered"], false);
    assert_eq!(subscribed["replayed"], 0);
    assert_eq!(subscribed["state"]["seq"], 10, "the state replaces the events history lost");
}

#[tokio::test]
async fn bad_websocket_messages_get_an_error_and_the_connection_stays() {
    let app = spawn_app().await;
    let addr = app.gateway.addr;
    start_match(&app.client, addr, "wsbad", 2).await;
    let mut ws = WsClient::connect(addr).await;

    ws.send_raw("{nope").await;
    assert_eq!(ws.recv().await["code"], "invalid_json");
    ws.send(json!({"op": "dance"})).await;
    assert_eq!(ws.recv().await["code"], "unknown_command");
    ws.send(json!({"op": "subscribe"})).await;
    assert_eq!(ws.recv().await["code"], "invalid_message");
    let reply = ws.subscribe("nosuchmatch", None).await;
    assert_eq!((reply["type"].as_str(), reply["code"].as_str()), (Some("error"), Some("unknown_match")));
    let reply = ws.subscribe("wsbad", Some(50)).await;
    assert_eq!(reply["code"], "since_beyond_head");
    assert_eq!(reply["message"], "since 50 is beyond the head of match wsbad (2)");

    // Still usable.
    assert_eq!(ws.subscribe("wsbad", None).await["type"], "subscribed");
}

#[tokio::test]
async fn sse_delivers_the_same_updates_and_resumes_from_last_event_id() {
    let app = spawn_app().await;
    let addr = app.gateway.addr;
    start_match(&app.client, addr, "sse1", 2).await;
    let url = app.url("/v1/matches/sse1/live");

    let mut sse = SseClient::connect(&app.client, &url, None).await;
    let first = sse.next().await;
    assert_eq!((first.event.as_str(), first.id.as_deref()), ("subscribed", Some("2")));
    publish_ok(&app.client, addr, &goal("sse1", 3, 1)).await;
    let update = sse.next().await;
    assert_eq!((update.event.as_str(), update.id.as_deref()), ("event", Some("3")));
    assert_eq!(update.data["state"]["score"]["home"], 1);
    drop(sse);

    publish_ok(&app.client, addr, &pass("sse1", 4)).await;
    publish_ok(&app.client, addr, &pass("sse1", 5)).await;
    let mut sse = SseClient::connect(&app.client, &url, Some(3)).await;
    assert_eq!(sse.next().await.data["recovered"], true);
    assert_eq!(sse.next().await.id.as_deref(), Some("4"));
    assert_eq!(sse.next().await.id.as_deref(), Some("5"));

    let missing = app.get("/v1/matches/nosuch/live").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_of(missing).await.0, "unknown_match");
}

#[tokio::test]
async fn the_connection_limit_refuses_with_a_clear_503() {
    let app = helpers::spawn_app_with(|_| {}, |gateway, _| gateway.edge.max_connections = 1).await;
    start_match(&app.client, app.gateway.addr, "full", 1).await;
    let _first = WsClient::connect(app.gateway.addr).await;
    let refused = app.get("/v1/matches/full/live").await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_of(refused).await.0, "too_many_connections");
}

#[tokio::test]
async fn two_gateways_sharing_redis_deliver_to_subscribers_on_both_in_order() {
    let Some(redis) = store::testing::redis_config().await else { return };
    let store = StoreArgs {
        redis_url: Some(redis.url.clone().into()),
        redis_prefix: redis.key_prefix.clone(),
        ..StoreArgs::default()
    };
    two_gateways_deliver_to_subscribers_on_both_in_order(&store).await;
}

#[tokio::test]
async fn two_gateways_sharing_a_redis_cluster_deliver_to_subscribers_on_both_in_order() {
    let Some(cluster) = store::testing::cluster_config().await else { return };
    two_gateways_deliver_to_subscribers_on_both_in_order(&cluster_args(&cluster)).await;
}

/// The settings a gateway needs for a test cluster.
pub(crate) fn cluster_args(cluster: &store::ClusterConfig) -> StoreArgs {
    StoreArgs {
        redis_url: Some(cluster.nodes.join(",").into()),
        redis_prefix: cluster.key_prefix.clone(),
        redis_cluster: true,
        redis_partitions: cluster.partitions,
        redis_wait_replicas: cluster.wait_replicas,
        ..StoreArgs::default()
    }
}

async fn two_gateways_deliver_to_subscribers_on_both_in_order(store: &StoreArgs) {
    let worker = StandInWorker::spawn(StandInConfig::default()).await;
    let a = spawn_gateway(GatewayConfig::for_tests(worker.url()), store).await;
    let b = spawn_gateway(GatewayConfig::for_tests(worker.url()), store).await;
    let client = reqwest::Client::new();
    start_match(&client, a.addr, "shared", 1).await;

    let mut ws_on_b = WsClient::connect(b.addr).await;
    assert_eq!(ws_on_b.subscribe("shared", None).await["seq"], 1);
    let mut sse_on_a =
        SseClient::connect(&client, &format!("http://{}/v1/matches/shared/live", a.addr), None).await;
    assert_eq!(sse_on_a.next().await.event, "subscribed");

    for seq in 2..=20 {
        publish_ok(&client, a.addr, &pass("shared", seq)).await;
    }
    for seq in 2..=20 {
        assert_eq!(ws_on_b.recv().await["seq"], seq, "websocket on B, in order");
        assert_eq!(sse_on_a.next().await.id, Some(seq.to_string()), "sse on A, in order");
    }
    // B reads the state A wrote.
    let state: Value = client
        .get(format!("http://{}/v1/matches/shared", b.addr))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(state["seq"], 20);
}

/// A rolling upgrade: a gateway writing the format older releases write
/// (one live message per event) next to one writing the newest (a store call's
/// events in one message). Each reads what the other writes: subscribers on
/// both see every update of bulk bodies published to either, in order.
#[tokio::test]
async fn gateways_writing_the_old_and_the_new_live_format_read_each_other() {
    let Some(redis) = store::testing::redis_config().await else { return };
    let store = |format: store::WriteFormat| StoreArgs {
        redis_url: Some(redis.url.clone().into()),
        redis_prefix: redis.key_prefix.clone(),
        store_write_format: format.number(),
        ..StoreArgs::default()
    };
    let worker = StandInWorker::spawn(StandInConfig::default()).await;
    let old = spawn_gateway(GatewayConfig::for_tests(worker.url()), &store(store::WriteFormat::V1)).await;
    let new = spawn_gateway(GatewayConfig::for_tests(worker.url()), &store(store::WriteFormat::V3)).await;
    let client = reqwest::Client::new();
    for id in ["upgrade-a", "upgrade-b"] {
        start_match(&client, old.addr, id, 1).await;
    }
    let mut on_old = WsClient::connect(old.addr).await;
    let mut on_new = WsClient::connect(new.addr).await;
    for ws in [&mut on_old, &mut on_new] {
        for id in ["upgrade-a", "upgrade-b"] {
            assert_eq!(ws.subscribe(id, None).await["seq"], 1);
        }
    }

    // Bodies of interleaved events, so one store call holds several.
    for (writer, seqs) in [(new.addr, 2..=11), (old.addr, 12..=21), (new.addr, 22..=31)] {
        let body: Vec<String> =
            seqs.flat_map(|seq| ["upgrade-a", "upgrade-b"].map(|id| pass(id, seq).to_string())).collect();
        let response = client
            .post(format!("http://{writer}/v1/events/bulk"))
            .bearer_auth(TEST_PUBLISH_TOKEN)
            .header("content-type", "application/x-ndjson")
            .body(body.join("\n"))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::OK);
        let report: Value = response.json().await.expect("json");
        assert_eq!(report["accepted"], 20, "{report}");
    }
    for (name, ws) in [("the old writer", &mut on_old), ("the new writer", &mut on_new)] {
        let mut next = std::collections::HashMap::from([("upgrade-a", 2), ("upgrade-b", 2)]);
        for _ in 0..60 {
            let update = ws.recv().await;
            let id = update["match"].as_str().expect("a match id").to_owned();
            let expected = next.get_mut(id.as_str()).expect("a subscribed match");
            assert_eq!(update["seq"], *expected, "on {name}, {id} in order");
            assert_eq!(update["state"]["seq"], *expected, "on {name}, the state after the event");
            *expected += 1;
        }
    }
}

#[tokio::test]
async fn with_read_tokens_every_read_needs_one() {
    const READER: &str = "reader-token-0123456789";
    let app = helpers::spawn_app_with(|_| {}, |gateway, _| gateway.edge.read_tokens = READER.into()).await;
    start_match(&app.client, app.gateway.addr, "private", 1).await;

    for path in [
        "/v1/matches",
        "/v1/matches/private",
        "/v1/matches/private/live",
        "/v1/matches/private/impact",
        "/v1/matches/private/win-probability",
        "/v1/players/7/impact",
        "/v1/live",
    ] {
        let refused = app.get(path).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{path} without a token");
        assert_eq!(error_of(refused).await.0, "unauthorized");
    }
    let allowed = app.get(&format!("/v1/matches/private?token={READER}")).await;
    assert_eq!(allowed.status(), StatusCode::OK);
    let with_header =
        app.client.get(app.url("/v1/matches")).bearer_auth(READER).send().await.expect("answer");
    assert_eq!(with_header.status(), StatusCode::OK);
    // Browsers pass the token in the query string of the WebSocket URL.
    let (socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/live?token={READER}", app.gateway.addr))
            .await
            .expect("websocket with a read token");
    drop(socket);
}

#[tokio::test]
async fn live_messages_match_their_documented_schema() {
    let app = spawn_app().await;
    let addr = app.gateway.addr;
    start_match(&app.client, addr, "schema", 3).await;
    let document: Value = app.get("/openapi.json").await.json().await.expect("json");
    let responses = |path: &str| document["paths"][path]["get"]["responses"].clone();
    let sse_schema =
        responses("/v1/matches/{id}/live")["200"]["content"]["text/event-stream"]["schema"].clone();
    let ws_schema = responses("/v1/live")["101"]["content"]["application/json"]["schema"].clone();
    assert!(sse_schema.is_object() && ws_schema.is_object(), "live messages are undocumented");

    // SSE: `subscribed` with a resume, then the events it replays.
    let mut sse = SseClient::connect(&app.client, &app.url("/v1/matches/schema/live?since=1"), None).await;
    for _ in 0..3 {
        let message = sse.next().await;
        if let Err(err) = conforms(&message.data, &sse_schema, &document) {
            panic!("SSE `{}` does not match its schema: {err}\n{}", message.event, message.data);
        }
    }

    // WebSocket: the `subscribed` reply, then a live update.
    let mut ws = WsClient::connect(addr).await;
    let subscribed = ws.subscribe("schema", None).await;
    publish_ok(&app.client, addr, &pass("schema", 4)).await;
    let update = ws.recv().await;
    for message in [subscribed, update] {
        if let Err(err) = conforms(&message, &ws_schema, &document) {
            panic!("WebSocket message does not match its schema: {err}\n{message}");
        }
    }
}

/// Checks `value` against an OpenAPI schema closely enough to catch a
/// message that strays from its documentation: references, `oneOf`,
/// objects (no undocumented field, every required one), arrays and JSON
/// types.
fn conforms(value: &Value, schema: &Value, document: &Value) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or_default();
        return conforms(value, &document["components"]["schemas"][name], document);
    }
    if let Some(variants) = schema["oneOf"].as_array().or_else(|| schema["anyOf"].as_array()) {
        let errors: Vec<String> =
            variants.iter().filter_map(|variant| conforms(value, variant, document).err()).collect();
        return if errors.len() < variants.len() { Ok(()) } else { Err(errors.join(" | ")) };
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        conforms(value, part, document)?;
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let actual = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let documented_type =
        types.is_empty() || types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
    if !documented_type {
        return Err(format!("{value} is {actual}, documented as {types:?}"));
    }
    if let (Some(object), Some(properties)) = (value.as_object(), schema["properties"].as_object()) {
        for (key, field) in object {
            let documented = properties.get(key).ok_or_else(|| format!("undocumented field {key:?}"))?;
            conforms(field, documented, document).map_err(|err| format!("{key}: {err}"))?;
        }
        for required in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !object.contains_key(required) {
                return Err(format!("required field {required:?} is missing"));
            }
        }
    }
    if let (Some(items), Some(item)) = (value.as_array(), schema.get("items")) {
        for value in items {
            conforms(value, item, document)?;
        }
    }
    Ok(())
}

/// Publishes events one at a time and reads the match back after each
/// acknowledgement, from the same gateway.
async fn every_acknowledged_write_is_read_back(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    id: &str,
) {
    start_match(client, addr, id, 1).await;
    let mut stale = Vec::new();
    for seq in 2..=200 {
        publish_ok(client, addr, &pass(id, seq)).await;
        let state: Value = client
            .get(format!("http://{addr}/v1/matches/{id}"))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if state["seq"] != seq {
            stale.push((seq, state["seq"].clone()));
        }
    }
    assert!(stale.is_empty(), "reads after a 200 returned an earlier state: {stale:?}");
}

#[tokio::test]
async fn a_read_after_an_acknowledged_write_sees_it_in_process() {
    let app = spawn_app().await;
    every_acknowledged_write_is_read_back(&app.client, app.gateway.addr, "ryw-memory").await;
}

#[tokio::test]
async fn a_read_after_an_acknowledged_write_sees_it_with_redis() {
    let Some(redis) = store::testing::redis_config().await else { return };
    let worker = StandInWorker::spawn(StandInConfig::default()).await;
    let store = StoreArgs {
        redis_url: Some(redis.url.clone().into()),
        redis_prefix: redis.key_prefix.clone(),
        ..StoreArgs::default()
    };
    let gateway = spawn_gateway(GatewayConfig::for_tests(worker.url()), &store).await;
    every_acknowledged_write_is_read_back(&reqwest::Client::new(), gateway.addr, "ryw-redis").await;
}

#[tokio::test]
async fn a_read_after_an_acknowledged_write_sees_it_on_a_redis_cluster() {
    let Some(cluster) = store::testing::cluster_config().await else { return };
    let worker = StandInWorker::spawn(StandInConfig::default()).await;
    let gateway = spawn_gateway(GatewayConfig::for_tests(worker.url()), &cluster_args(&cluster)).await;
    every_acknowledged_write_is_read_back(&reqwest::Client::new(), gateway.addr, "ryw-cluster").await;
}

/// A match whose state a previous release stored: `red_cards` and `format`
/// missing, as before the state carried a format number.
const PREVIOUS_STATE: &str = r#"{"id":"legacy","home":{"id":1,"name":"Rovers"},"away":{"id":2,"name":"United"},"status":"first_half","minute":3,"score":{"home":1,"away":0},"seq":1,"updated_ms":0}"#;

/// Stores `state` as match `id`'s state at seq 1, as another release would.
async fn store_state_directly(redis: &store::RedisConfig, id: &str, state: &str) {
    let direct = store::RedisStore::connect_lazy(redis).expect("config");
    let append = store::LogAppend {
        log: id.into(),
        seq: 1,
        entry: bytes::Bytes::from_static(b"{}"),
        state: bytes::Bytes::from(state.to_owned()),
        stream_entry: bytes::Bytes::new(),
    };
    let outcome =
        store::StateStore::append(&direct, &append, store::HistoryLimits::default()).await.expect("append");
    assert_eq!(outcome, store::AppendOutcome::Applied);
}

#[tokio::test]
async fn a_match_stored_by_the_previous_release_takes_new_events() {
    let Some(redis) = store::testing::redis_config().await else { return };
    store_state_directly(&redis, "legacy", PREVIOUS_STATE).await;
    let url = redis.url.clone();
    let prefix = redis.key_prefix.clone();
    let app = helpers::spawn_app_with(
        |_| {},
        |_, store| {
            store.redis_url = Some(url.into());
            store.redis_prefix = prefix;
        },
    )
    .await;
    publish_ok(&app.client, app.gateway.addr, &pass("legacy", 2)).await;
    let state: Value = app.get("/v1/matches/legacy").await.json().await.expect("json");
    assert_eq!((state["seq"].clone(), state["score"]["home"].clone()), (json!(2), json!(1)));
    assert_eq!(state["red_cards"], json!({"home": 0, "away": 0}), "{state}");
    assert_eq!(
        state["format"],
        json!(gateway::live::wire::STATE_FORMAT),
        "written back in the current format"
    );
}

#[tokio::test]
async fn a_match_stored_by_a_newer_release_is_a_retryable_503_not_a_guess() {
    let Some(redis) = store::testing::redis_config().await else { return };
    let newer = PREVIOUS_STATE.replace(r#""seq":1"#, r#""seq":1,"format":99"#);
    store_state_directly(&redis, "future", &newer.replace("legacy", "future")).await;
    let url = redis.url.clone();
    let prefix = redis.key_prefix.clone();
    let app = helpers::spawn_app_with(
        |_| {},
        |_, store| {
            store.redis_url = Some(url.into());
            store.redis_prefix = prefix;
        },
    )
    .await;
    let refused = publish(&app.client, app.gateway.addr, &pass("future", 2)).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    // The store answers: the 503 comes from the state it cannot read,
    // which the gateway's log names (the client is not told store details).
    assert_eq!(error_of(refused).await.0, "store_unavailable");
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK, "redis itself is up");
}

/// The gateway's router served by plain `axum::serve`, as a service built
/// on these crates might serve it: no edge server, so the live feed cannot
/// write to the socket itself and writes through the upgraded connection
/// instead. The feed keeps its promises all the same: every update in
/// order, resume from a sequence number, pongs echoing the ping, and the
/// client's close answered.
#[tokio::test]
async fn the_live_feed_keeps_its_promises_on_a_router_served_by_plain_axum() {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::{Message, protocol::CloseFrame};

    let worker = StandInWorker::spawn(StandInConfig::default()).await;
    let store = store::open(&StoreArgs::default()).expect("store opens");
    let app =
        gateway::Application::build(GatewayConfig::for_tests(worker.url()), store).await.expect("builds");
    app.live().start_bridge();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = app.router().into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let client = reqwest::Client::new();
    start_match(&client, addr, "plain", 1).await;
    let mut ws = WsClient::connect(addr).await;
    assert_eq!(ws.subscribe("plain", None).await["seq"], 1);
    for seq in 2..=40 {
        publish_ok(&client, addr, &pass("plain", seq)).await;
    }
    for seq in 2..=40 {
        let update = ws.recv().await;
        assert_eq!((update["type"].as_str(), update["seq"].as_u64()), (Some("event"), Some(seq)), "{update}");
    }

    let mut late = WsClient::connect(addr).await;
    let replayed = late.subscribe("plain", Some(35)).await;
    assert_eq!(replayed["type"], "subscribed", "{replayed}");
    for seq in 36..=40 {
        assert_eq!(late.recv().await["seq"], seq, "replayed from history");
    }

    let (mut raw, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/v1/live")).await.expect("websocket");
    raw.send(Message::Ping(b"are you there".to_vec().into())).await.expect("ping");
    let within = std::time::Duration::from_secs(5);
    let pong =
        tokio::time::timeout(within, raw.next()).await.expect("in time").expect("open").expect("frame");
    assert_eq!(pong, Message::Pong(b"are you there".to_vec().into()));
    let close = CloseFrame { code: 1000.into(), reason: "bye".into() };
    raw.send(Message::Close(Some(close))).await.expect("close");
    match tokio::time::timeout(within, raw.next()).await.expect("in time") {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1000),
        other => panic!("the close was not answered: {other:?}"),
    }
}
