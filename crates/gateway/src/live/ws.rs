//! `GET /v1/live`: the WebSocket live feed.
//!
//! Protocol (JSON text messages):
//! - client → server: `{"op":"subscribe","match":"<id>"}`, optionally with
//!   `"since":<seq>` to receive what was missed after that sequence number;
//!   `{"op":"unsubscribe","match":"<id>"}`.
//! - server → client: `subscribed` (the match's state, and with `since`
//!   whether the missed events follow: `recovered`), then `event` messages
//!   in sequence order, `resync` when the client must start over from the
//!   state it carries, `unsubscribed`, and `error` (`code`, `message`) for a
//!   bad command; the connection stays open after an error. A subscribe over
//!   the client address's rate (the subscribe lane of [`edge::limits`],
//!   which the upgrade itself spent from too) is answered with an `error`
//!   whose `code` is `rate_limited`, naming the `match` and `retry_after`
//!   (seconds); the client sends it again then.
//!
//! The server pings every `ping_interval` and closes a connection that has
//! not answered for two intervals. Close codes: 1001 when the gateway shuts
//! down, 4000 when the client stopped answering pings, 4008 when the client
//! fell too far behind or stopped reading (slow consumer), 1011 when the
//! store failed, 1008 after too many failed subscribes, 1009 for a message
//! over the size limit, 1007 for a text message that is not UTF-8 and 1002
//! for a frame that breaks the protocol. A client's own close frame is
//! answered with one, as RFC 6455 asks.

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{
        State,
        ws::{
            CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
        },
    },
    response::{IntoResponse, Response},
};
use domain::live::MatchId;
use futures::{SinkExt as _, StreamExt as _, stream::SplitSink};
use serde::{Deserialize, Serialize};
use tokio::{sync::OwnedSemaphorePermit, time::Instant};
use tokio_stream::{
    StreamMap,
    wrappers::{BroadcastStream, errors::BroadcastStreamRecvError},
};

use super::{
    LiveState, Transport,
    hub::Frame,
    subscription::{Cursor, Disconnect, Outgoing},
    wire::subscribe_code,
};
use edge::{
    auth::{Auth, TokenQuery},
    extract::Query,
    limits::{ClientKey, Lane, Limits},
};

use crate::error::ApiError;

/// Close code for a subscriber that fell too far behind.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Close code for a client that stopped answering pings.
pub const CLOSE_NO_PONG: u16 = 4000;
/// How long a close frame to a client that stopped reading may take.
const STUCK_CLOSE_TRY: std::time::Duration = std::time::Duration::from_millis(100);
/// How long a connection closed for a bad frame stays open after its close
/// frame. The rest of that frame is still unread in the socket, and closing
/// a socket with unread data sends a reset, which can reach the client
/// before it has read the close frame and so hide the close code from it.
/// Nothing more is read meanwhile: the frame's remaining length is the
/// client's to choose.
const REFUSED_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Largest client message accepted; commands are tiny.
const MAX_CLIENT_MESSAGE: usize = 4 * 1024;
/// Subscriptions one connection may hold.
const MAX_SUBSCRIPTIONS: usize = 64;
/// Failed subscribes (unknown match, bad `since`) one connection may make
/// before it is closed: each costs a store read, and a client probing for
/// match ids should pay with its connection, not with the gateway's time.
const MAX_FAILED_SUBSCRIBES: usize = 64;
/// Close codes of RFC 6455 for a client that broke the protocol or its
/// limits.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;
/// This route's template, as the rate-limit metric names it.
const ROUTE: &str = "/v1/live";

/// The WebSocket live feed (protocol in the module documentation; each
/// message is a [`LiveMessage`](super::wire::LiveMessage)).
#[utoipa::path(get, path = "/v1/live", tag = "live",
    params(("token" = Option<String>, Query, description = "read token, when reads need one")),
    responses(
        (status = 401, description = "read tokens are configured and none (or a wrong one) was given", body = edge::error::ErrorBody),
        (status = 101, description = "switching to the WebSocket protocol", body = super::wire::LiveMessage),
        (status = 429, description = "over the rate limit for this client address; see Retry-After", body = edge::error::ErrorBody, headers(("retry-after" = u64, description = "seconds until a request would be accepted"))),
        (status = 503, description = "connection limit reached", body = edge::error::ErrorBody),
    ))]
pub async fn live_ws(
    State(live): State<Arc<LiveState>>,
    State(auth): State<Arc<Auth>>,
    State(limits): State<Arc<Limits>>,
    client: ClientKey,
    headers: axum::http::HeaderMap,
    Query(query): Query<TokenQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // Authorisation first, so a refused client learns why whatever it sent.
    if let Err(err) = auth.authorize_read(&headers, query.token.as_deref()) {
        return ApiError::from(err).into_response();
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return ApiError::invalid_parameter(rejection.body_text()).into_response(),
    };
    let Ok(permit) = live.connections.clone().try_acquire_owned() else {
        return ApiError::Edge(edge::EdgeError::TooManyConnections(live.config.max_connections))
            .into_response();
    };
    // Taken before the upgrade, so a shutdown that starts meanwhile waits
    // for this connection's close frame too.
    let tracked = live.shutdown.hold();
    upgrade
        // Buffers sized for the small commands clients send instead of
        // tungstenite's 128 KiB default, which would dominate memory per
        // connection; a larger message is simply read in several chunks.
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_write_buffer_size(live.config.max_lag_bytes as usize + 64 * 1024)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            connection(socket, live, permit, Subscriber { limits, client }).await;
            drop(tracked);
        })
}

/// A client's message, parsed: what it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCommand {
    Subscribe {
        id: MatchId,
        since: Option<u64>,
    },
    /// The id is not checked: only an id the connection subscribed to, and
    /// so checked then, can match.
    Unsubscribe {
        match_id: String,
    },
}

/// Why a client's message was refused: the `code` and `message` of the
/// `error` reply. The connection stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMessage {
    pub code: &'static str,
    pub message: String,
}

/// Parses a client's text message (the protocol is in the module
/// documentation). Pure, so the fuzz target `ws_client_message` runs
/// exactly what a connection runs on each message.
pub fn parse_client_message(text: &str) -> Result<ClientCommand, InvalidMessage> {
    let invalid = |code, message: String| InvalidMessage { code, message };
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|err| invalid("invalid_json", format!("not valid JSON: {err}")))?;
    match value.get("op").and_then(|op| op.as_str()) {
        Some("subscribe" | "unsubscribe") => {}
        Some(other) => {
            return Err(invalid(
                "unknown_command",
                format!(
                    "unknown op {:?}, expected \"subscribe\" or \"unsubscribe\"",
                    other.chars().take(40).collect::<String>()
                ),
            ));
        }
        None => return Err(invalid("invalid_message", "`op` is required".into())),
    }
    let command: Command =
        serde_json::from_value(value).map_err(|err| invalid("invalid_message", err.to_string()))?;
    Ok(match command {
        Command::Subscribe { match_id, since } => ClientCommand::Subscribe {
            id: MatchId::parse(&match_id).map_err(|err| invalid("invalid_message", err.to_string()))?,
            since,
        },
        Command::Unsubscribe { match_id } => ClientCommand::Unsubscribe { match_id },
    })
}

/// The commands as JSON spells them; [`parse_client_message`] checks them
/// further.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Command {
    Subscribe {
        #[serde(rename = "match")]
        match_id: String,
        since: Option<u64>,
    },
    Unsubscribe {
        #[serde(rename = "match")]
        match_id: String,
    },
}

/// Who is subscribing, for the subscribe lane's rate.
struct Subscriber {
    limits: Arc<Limits>,
    client: ClientKey,
}

#[derive(Debug, Serialize)]
struct Reply<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    match_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    /// Seconds until a refused subscribe would be accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
    /// A subscribe the store refused; counted against the connection.
    #[serde(skip)]
    failed_subscribe: bool,
}

impl Reply<'_> {
    fn error(code: &'static str, message: impl Into<String>) -> Reply<'static> {
        Reply {
            kind: "error",
            match_id: None,
            code: Some(code),
            message: Some(message.into()),
            retry_after: None,
            failed_subscribe: false,
        }
    }

    /// A subscribe to `match_id` refused for the client address's rate.
    fn rate_limited(match_id: &MatchId, limited: &edge::limits::RateLimited) -> Reply<'static> {
        Reply {
            match_id: Some(match_id.to_string().into()),
            retry_after: Some(limited.retry_after_secs()),
            ..Reply::error("rate_limited", limited.to_string())
        }
    }
}

type Sink = SplitSink<WebSocket, Message>;

/// Why the connection loop ended, and how to say so.
enum Ending {
    ClientGone,
    /// The client sent a close frame; the reply is queued, to be flushed.
    ClientClosed,
    Close(u16, String),
    /// The client broke the protocol or a limit: closed like `Close`, then
    /// held open a moment (see [`REFUSED_LINGER`]).
    Refused(u16, String),
    /// A send did not complete within the write timeout: a client that
    /// stopped reading.
    Stuck,
}

/// Why a send failed.
enum SendFailed {
    /// The connection is gone.
    Gone,
    /// The client's socket stayed full for the write timeout.
    Stuck,
}

impl SendFailed {
    fn ending(self) -> Ending {
        match self {
            Self::Gone => Ending::ClientGone,
            Self::Stuck => Ending::Stuck,
        }
    }
}

async fn connection(
    socket: WebSocket,
    live: Arc<LiveState>,
    _permit: OwnedSemaphorePermit,
    subscriber: Subscriber,
) {
    let (mut sink, mut incoming) = socket.split();
    let mut streams: StreamMap<String, BroadcastStream<Arc<Frame>>> = StreamMap::new();
    let mut cursors: HashMap<String, Cursor> = HashMap::new();
    let mut ping = tokio::time::interval(live.config.ping_interval);
    let mut last_heard = Instant::now();
    let mut failed_subscribes = 0usize;
    live.metrics_connections(Transport::WebSocket, 1);

    let ending = loop {
        tokio::select! {
            message = incoming.next() => {
                let message = match message {
                    Some(Ok(message)) => message,
                    Some(Err(err)) => break ending_after(err),
                    None => break Ending::ClientGone,
                };
                last_heard = Instant::now();
                let text = match message {
                    Message::Text(text) => text,
                    Message::Close(_) => break Ending::ClientClosed,
                    Message::Binary(_) => {
                        let reply = Reply::error("invalid_message", "messages must be JSON text");
                        if let Err(failed) = send_json(&mut sink, &reply, &live).await { break failed.ending() }
                        continue;
                    }
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                match handle_command(&text, &live, &subscriber, &mut streams, &mut cursors).await {
                    Ok(outgoing) => {
                        if let Err(failed) = send_all(&mut sink, outgoing, &live).await { break failed.ending() }
                    }
                    Err(reply) => {
                        if let Err(failed) = send_json(&mut sink, &reply, &live).await { break failed.ending() }
                        if reply.failed_subscribe {
                            failed_subscribes += 1;
                            if failed_subscribes >= MAX_FAILED_SUBSCRIBES {
                                break Ending::Close(CLOSE_POLICY_VIOLATION, format!("more than {MAX_FAILED_SUBSCRIBES} failed subscribes"));
                            }
                        }
                    }
                }
            }
            Some((match_id, item)) = streams.next(), if !streams.is_empty() => {
                let Some(cursor) = cursors.get_mut(&match_id) else { continue };
                let outgoing = match item {
                    Ok(frame) => live.subscriptions.on_frame(cursor, &frame).await,
                    Err(BroadcastStreamRecvError::Lagged(missed)) => Err(Disconnect::Lagged(missed)),
                };
                match outgoing {
                    Ok(outgoing) => {
                        if let Err(failed) = send_all(&mut sink, outgoing, &live).await { break failed.ending() }
                    }
                    Err(Disconnect::StoreUnavailable) => break Ending::Close(1011, Disconnect::StoreUnavailable.to_string()),
                    Err(slow) => {
                        tracing::info!(match_id, reason = %slow, "disconnecting a slow consumer");
                        live.metrics_slow_disconnect(Transport::WebSocket);
                        break Ending::Close(CLOSE_SLOW_CONSUMER, slow.to_string());
                    }
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > live.config.ping_interval * 2 {
                    break Ending::Close(CLOSE_NO_PONG, "no answer to pings".into());
                }
                if let Err(failed) = send(&mut sink, Message::Ping(Default::default()), &live).await { break failed.ending() }
            }
            () = live.stop.cancelled() => break Ending::Close(1001, "server shutting down".into()),
        }
    };

    match ending {
        Ending::Close(code, reason) => {
            let frame = CloseFrame { code, reason: Utf8Bytes::from(reason) };
            let _ = send(&mut sink, Message::Close(Some(frame)), &live).await;
        }
        Ending::Refused(code, reason) => {
            let frame = CloseFrame { code, reason: Utf8Bytes::from(reason) };
            if send(&mut sink, Message::Close(Some(frame)), &live).await.is_ok() {
                tokio::select! {
                    () = tokio::time::sleep(REFUSED_LINGER) => {}
                    () = live.stop.cancelled() => {}
                }
            }
        }
        Ending::Stuck => {
            // A slow consumer like one that fell behind: counted, logged, and
            // told so if a close frame still fits (its socket is full, so
            // only a short try).
            tracing::info!(
                timeout_ms = live.config.write_timeout.as_millis(),
                "disconnecting a subscriber that stopped reading"
            );
            live.metrics_slow_disconnect(Transport::WebSocket);
            let frame =
                CloseFrame { code: CLOSE_SLOW_CONSUMER, reason: Utf8Bytes::from_static("stopped reading") };
            let _ = tokio::time::timeout(STUCK_CLOSE_TRY, sink.send(Message::Close(Some(frame)))).await;
        }
        Ending::ClientClosed => {
            // tungstenite queued the answering close frame when it read the
            // client's; it goes out with the next flush.
            let _ = tokio::time::timeout(STUCK_CLOSE_TRY, sink.flush()).await;
        }
        Ending::ClientGone => {}
    }
    drop(streams);
    live.subscriptions.hub.prune();
    live.metrics_connections(Transport::WebSocket, -1);
}

/// How to end a connection whose client broke the protocol: RFC 6455's
/// close codes, so the client learns why instead of seeing a reset.
fn ending_after(err: axum::Error) -> Ending {
    use tokio_tungstenite::tungstenite::Error;
    match err.into_inner().downcast::<Error>().map(|err| *err) {
        Ok(Error::Capacity(reason)) => Ending::Refused(CLOSE_TOO_BIG, format!("message too big: {reason}")),
        Ok(Error::Protocol(reason)) => {
            Ending::Refused(CLOSE_PROTOCOL_ERROR, format!("protocol error: {reason}"))
        }
        Ok(Error::Utf8(_)) => Ending::Refused(CLOSE_INVALID_PAYLOAD, "text message is not UTF-8".into()),
        _ => Ending::ClientGone,
    }
}

async fn handle_command(
    text: &str,
    live: &LiveState,
    subscriber: &Subscriber,
    streams: &mut StreamMap<String, BroadcastStream<Arc<Frame>>>,
    cursors: &mut HashMap<String, Cursor>,
) -> Result<Vec<Outgoing>, Reply<'static>> {
    let command =
        parse_client_message(text).map_err(|invalid| Reply::error(invalid.code, invalid.message))?;
    match command {
        ClientCommand::Subscribe { id, since } => {
            if cursors.contains_key(id.as_str()) {
                return Err(Reply::error("already_subscribed", format!("already subscribed to {id}")));
            }
            if cursors.len() >= MAX_SUBSCRIPTIONS {
                return Err(Reply::error(
                    "too_many_subscriptions",
                    format!("at most {MAX_SUBSCRIPTIONS} subscriptions per connection"),
                ));
            }
            // Before the store is read: that read, and the replay, are what
            // the rate protects.
            if let Err(limited) = subscriber.limits.check(Lane::Subscribe, subscriber.client) {
                edge::limits::count_rate_limited(ROUTE, Lane::Subscribe);
                return Err(Reply::rate_limited(&id, &limited));
            }
            let opened = live.subscriptions.open(id.as_str(), since).await.map_err(|err| Reply {
                failed_subscribe: true,
                ..Reply::error(subscribe_code(&err), err.to_string())
            })?;
            streams.insert(id.to_string(), BroadcastStream::new(opened.receiver));
            cursors.insert(id.to_string(), opened.cursor);
            Ok(opened.first)
        }
        ClientCommand::Unsubscribe { match_id } => {
            if cursors.remove(&match_id).is_none() {
                return Err(Reply::error(
                    "not_subscribed",
                    format!("not subscribed to {}", match_id.chars().take(64).collect::<String>()),
                ));
            }
            streams.remove(&match_id);
            let reply = Reply {
                kind: "unsubscribed",
                match_id: Some(match_id.as_str().into()),
                code: None,
                message: None,
                retry_after: None,
                failed_subscribe: false,
            };
            let text = serde_json::to_string(&reply).unwrap_or_default();
            Ok(vec![Outgoing { seq: 0, kind: "unsubscribed", text: Utf8Bytes::from(text), received: None }])
        }
    }
}

async fn send_all(sink: &mut Sink, outgoing: Vec<Outgoing>, live: &LiveState) -> Result<(), SendFailed> {
    for message in outgoing {
        send(sink, Message::Text(message.text.clone()), live).await?;
        live.metrics_delivered(Transport::WebSocket, &message);
    }
    Ok(())
}

async fn send_json<T: Serialize>(sink: &mut Sink, message: &T, live: &LiveState) -> Result<(), SendFailed> {
    let text = serde_json::to_string(message).map_err(|_| SendFailed::Gone)?;
    send(sink, Message::Text(Utf8Bytes::from(text)), live).await
}

/// Sends one message, giving up on a client that does not take it within the
/// write timeout: a socket that stays full is a consumer that stopped
/// reading.
async fn send(sink: &mut Sink, message: Message, live: &LiveState) -> Result<(), SendFailed> {
    match tokio::time::timeout(live.config.write_timeout, sink.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(SendFailed::Gone),
        Err(_) => Err(SendFailed::Stuck),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_refusals_carry_the_documented_codes() {
        let id = MatchId::parse("m1").expect("valid id");
        assert_eq!(
            parse_client_message(r#"{"op":"subscribe","match":"m1","since":4}"#),
            Ok(ClientCommand::Subscribe { id, since: Some(4) })
        );
        // Unsubscribing checks no id: an id never subscribed to just misses.
        assert_eq!(
            parse_client_message(r#"{"op":"unsubscribe","match":"Not An Id"}"#),
            Ok(ClientCommand::Unsubscribe { match_id: "Not An Id".into() })
        );
        let refusals = [
            ("subscribe m1", "invalid_json"),
            (r#"{"op":"dance"}"#, "unknown_command"),
            (r#"{"match":"m1"}"#, "invalid_message"),
            (r#"{"op":"subscribe","match":"Bad Id!"}"#, "invalid_message"),
            (r#"{"op":"subscribe","match":"m1","since":-1}"#, "invalid_message"),
            (r#"{"op":"subscribe","match":"m1","extra":1}"#, "invalid_message"),
        ];
        for (text, code) in refusals {
            let refused = parse_client_message(text).expect_err(text);
            assert_eq!(refused.code, code, "{text}: {}", refused.message);
            assert!(!refused.message.is_empty(), "{text}");
        }
    }
}
