//! The WebSocket live feed (`GET /v1/live` on the gateway), for any domain:
//! one connection, any number of topic subscriptions.
//!
//! Protocol (JSON text messages; the topic's key is the domain's,
//! [`Domain::TOPIC`]: `match` on the gateway, as below):
//! - client → server: `{"op":"subscribe","match":"<id>"}`, optionally with
//!   `"since":<seq>` to receive what was missed after that sequence number;
//!   `{"op":"unsubscribe","match":"<id>"}`.
//! - server → client: `subscribed` (the topic's state, and with `since`
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
//! not answered for two intervals. A connection that holds no subscription
//! for `subscribe_grace` (from its opening or its last unsubscribe) is
//! closed: an idle connection must not keep a slot under the caps. Close
//! codes: 1001 when the gateway shuts down, 4000 when the client stopped
//! answering pings, 4001 when it subscribed to nothing within the grace,
//! 4008 when the client fell too far behind or stopped reading (slow
//! consumer), 1011 when the store failed, 1008 after too many failed
//! subscribes, 1009 for a message over the size limit, 1007 for a text
//! message that is not UTF-8 and 1002 for a frame that breaks the protocol.
//! A client's own close frame is answered with one, as RFC 6455 asks.
//!
//! Who writes: live updates are written by the hub itself, straight to the
//! socket ([`crate::outlet`]); the connection's task reads the client's
//! frames (tungstenite, for their parsing and limits), answers them,
//! writes what a subscription sends first, and drains the queue of a socket
//! that was full. Both go through the connection's one outlet, so frames
//! never interleave and keep their order.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    extract::{FromRequestParts as _, MatchedPath, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse as _, Response},
};
use edge::{
    EdgeError,
    auth::TokenQuery,
    extract::Query,
    limits::{ClientKey, Lane},
    socket::ConnectionSocket,
    streams::StreamSlot,
};
use futures::StreamExt as _;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::Instant,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, protocol::Role, protocol::WebSocketConfig},
};

use crate::{
    Domain,
    engine::{Engine, Transport},
    hub::Membership,
    outlet::{Fault, Outlet, Sent, Wire, frame},
    subscription::{Cursor, Disconnect, Outgoing},
};

/// Close code for a subscriber that fell too far behind.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Close code for a client that stopped answering pings.
pub const CLOSE_NO_PONG: u16 = 4000;
/// Close code for a connection that held no subscription for the grace.
pub const CLOSE_NO_SUBSCRIPTION: u16 = 4001;
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
/// The WebSocket feed of `D` (protocol in the module documentation).
/// Refusals before the upgrade, in order: a malformed query (400), no or a
/// wrong read token (401), not a WebSocket handshake (400), the client
/// address's share of live connections (429), the server's connection cap
/// (503).
pub async fn handler<D: Domain>(State(engine): State<Arc<Engine<D>>>, request: Request) -> Response {
    let client = ClientKey::of(&engine.edge.limits, &request);
    // The route template, a closed set, names the route in the rate-limit
    // metric.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let (mut parts, _body) = request.into_parts();
    let query = match Query::<TokenQuery>::from_request_parts(&mut parts, &()).await {
        Ok(Query(query)) => query,
        Err(err) => return err.into_response(),
    };
    // Authorisation first, so a refused client learns why whatever it sent.
    if let Err(err) = engine.edge.auth.authorize_read(&parts.headers, query.token.as_deref()) {
        return EdgeError::from(err).into_response();
    }
    let handshake = match Handshake::read(&mut parts) {
        Ok(handshake) => handshake,
        Err(problem) => return EdgeError::InvalidParameter(problem.into()).into_response(),
    };
    let slot = match engine.edge.streams.open(client) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    // Taken before the upgrade, so a shutdown that starts meanwhile waits
    // for this connection's close frame too.
    let tracked = engine.edge.shutdown.hold();
    let subscriber = Subscriber { client, route };
    // The edge's server hands out the connection's socket, for the hub to
    // write to directly once hyper has let go of it.
    let socket = parts.extensions.get::<ConnectionSocket>().map(|socket| Arc::clone(&socket.0));
    let on_upgrade = handshake.on_upgrade;
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => connection(upgraded, socket, engine, slot, subscriber).await,
            Err(err) => tracing::debug!(%err, "websocket upgrade failed"),
        }
        drop(tracked);
    });
    handshake.accept
}

/// A valid WebSocket opening handshake (RFC 6455, section 4.2.1): the
/// answer to send and the upgrade to wait for.
struct Handshake {
    on_upgrade: OnUpgrade,
    accept: Response,
}

impl Handshake {
    fn read(parts: &mut Parts) -> Result<Handshake, &'static str> {
        fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
            headers
                .get_all(name)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .any(|value| value.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
        }
        if parts.method != axum::http::Method::GET {
            return Err("a websocket handshake must be a GET request");
        }
        if !has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err("not a websocket handshake: the `Connection` header must include `upgrade`");
        }
        if !has_token(&parts.headers, header::UPGRADE, "websocket") {
            return Err("not a websocket handshake: the `Upgrade` header must be `websocket`");
        }
        if parts.headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|version| version != "13") {
            return Err("unsupported websocket version: `Sec-WebSocket-Version` must be 13");
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY) else {
            return Err("not a websocket handshake: `Sec-WebSocket-Key` is missing");
        };
        let accept_key = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return Err("this connection cannot be upgraded to a websocket");
        };
        let mut accept = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = accept.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept_key) = HeaderValue::from_str(&accept_key) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept_key);
        }
        Ok(Handshake { on_upgrade, accept })
    }
}

/// A client's message, parsed: what it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCommand {
    /// `id` passed the domain's check ([`Domain::check_topic`]).
    Subscribe { id: String, since: Option<u64> },
    /// The id is not checked: only an id the connection subscribed to, and
    /// so checked then, can match.
    Unsubscribe { id: String },
}

/// Why a client's message was refused: the `code` and `message` of the
/// `error` reply. The connection stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMessage {
    pub code: &'static str,
    pub message: String,
}

/// Parses a client's text message (the protocol is in the module
/// documentation; the topic's key is `D`'s). Pure, so the fuzz target
/// `ws_client_message` runs exactly what a connection runs on each message.
pub fn parse_client_message<D: Domain>(text: &str) -> Result<ClientCommand, InvalidMessage> {
    let invalid = |code, message: String| InvalidMessage { code, message };
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|err| invalid("invalid_json", format!("not valid JSON: {err}")))?;
    let op = match value.get("op").and_then(|op| op.as_str()) {
        Some(op @ ("subscribe" | "unsubscribe")) => op,
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
    };
    // `op` was found, so the message is an object.
    let fields = value.as_object().map(|object| object.iter()).into_iter().flatten();
    let known: &[&str] = if op == "subscribe" { &["op", D::TOPIC, "since"] } else { &["op", D::TOPIC] };
    let (mut id, mut since) = (None, None);
    for (key, field) in fields {
        match key.as_str() {
            "op" => {}
            "since" if op == "subscribe" => {
                since = match field {
                    serde_json::Value::Null => None,
                    number => Some(number.as_u64().ok_or_else(|| {
                        invalid("invalid_message", "`since` must be a sequence number (0 or more)".into())
                    })?),
                };
            }
            key if key == D::TOPIC => {
                let text = field
                    .as_str()
                    .ok_or_else(|| invalid("invalid_message", format!("`{}` must be a string", D::TOPIC)))?;
                id = Some(text.to_owned());
            }
            unknown => {
                return Err(invalid(
                    "invalid_message",
                    format!(
                        "unknown field `{}`, expected one of {known:?}",
                        unknown.chars().take(40).collect::<String>()
                    ),
                ));
            }
        }
    }
    let id = id.ok_or_else(|| invalid("invalid_message", format!("missing field `{}`", D::TOPIC)))?;
    Ok(if op == "subscribe" {
        D::check_topic(&id).map_err(|reason| invalid("invalid_message", reason))?;
        ClientCommand::Subscribe { id, since }
    } else {
        ClientCommand::Unsubscribe { id }
    })
}

/// Who is subscribing, for the subscribe lane's rate and its metric.
struct Subscriber {
    client: ClientKey,
    route: Option<MatchedPath>,
}

/// A reply of the server's own (not an update): `error`, `unsubscribed`.
/// Serialised by hand because the topic's key is the domain's.
#[derive(Debug)]
struct Reply {
    kind: &'static str,
    /// The topic it concerns, under the domain's key.
    topic: Option<(&'static str, String)>,
    code: Option<&'static str>,
    message: Option<String>,
    /// Seconds until a refused subscribe would be accepted.
    retry_after: Option<u64>,
    /// A subscribe the store refused; counted against the connection.
    failed_subscribe: bool,
}

impl Serialize for Reply {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("type", self.kind)?;
        if let Some((key, id)) = &self.topic {
            map.serialize_entry(key, id)?;
        }
        if let Some(code) = self.code {
            map.serialize_entry("code", code)?;
        }
        if let Some(message) = &self.message {
            map.serialize_entry("message", message)?;
        }
        if let Some(retry_after) = self.retry_after {
            map.serialize_entry("retry_after", &retry_after)?;
        }
        map.end()
    }
}

impl Reply {
    fn error(code: &'static str, message: impl Into<String>) -> Reply {
        Reply {
            kind: "error",
            topic: None,
            code: Some(code),
            message: Some(message.into()),
            retry_after: None,
            failed_subscribe: false,
        }
    }

    /// A subscribe to `id` refused for the client address's rate.
    fn rate_limited<D: Domain>(id: &str, limited: &edge::limits::RateLimited) -> Reply {
        Reply {
            topic: Some((D::TOPIC, id.to_owned())),
            retry_after: Some(limited.retry_after_secs()),
            ..Reply::error("rate_limited", limited.to_string())
        }
    }
}

/// Why the connection loop ended, and how to say so.
enum Ending {
    ClientGone,
    /// The client sent a close frame: answered with its status code.
    ClientClosed(Option<u16>),
    Close(u16, String),
    /// The client broke the protocol or a limit: closed like `Close`, then
    /// held open a moment (see [`REFUSED_LINGER`]).
    Refused(u16, String),
    /// Queued frames made no progress within the write timeout: a client
    /// that stopped reading.
    Stuck,
}

/// One subscription of a connection.
struct Following {
    cursor: Cursor,
    membership: Membership,
}

/// The client's side of the socket, read by tungstenite. Everything the
/// server sends goes through the connection's [`Outlet`] instead, so
/// tungstenite's own writes (its automatic pong and close replies, which
/// the connection sends itself) are dropped here.
struct ReadOnly(Box<dyn AsyncRead + Send + Unpin>);

impl AsyncRead for ReadOnly {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadOnly {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

async fn connection<D: Domain>(
    upgraded: Upgraded,
    socket: Option<Arc<TcpStream>>,
    engine: Arc<Engine<D>>,
    _slot: StreamSlot,
    subscriber: Subscriber,
) {
    let settings = &engine.settings;
    let upgraded = TokioIo::new(upgraded);
    let (reader, mut wire): (Box<dyn AsyncRead + Send + Unpin>, Wire) = match &socket {
        // Reads go through the upgraded stream, which starts with whatever
        // hyper had read past the handshake; writes go to the socket.
        Some(socket) => (Box::new(upgraded), Wire::Socket(Arc::clone(socket))),
        None => {
            let (reader, writer) = tokio::io::split(upgraded);
            (Box::new(reader), Wire::Stream(Box::new(writer)))
        }
    };
    let outlet = Arc::new(Outlet::new(socket, usize::try_from(settings.max_lag_bytes).unwrap_or(usize::MAX)));
    // A read buffer sized for the small commands clients send (128 bytes)
    // instead of tungstenite's 128 KiB default, which would dominate memory per
    // connection; a larger message is simply read in several chunks.
    let config = WebSocketConfig::default()
        .read_buffer_size(128)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE));
    let mut incoming =
        Box::pin(WebSocketStream::from_raw_socket(ReadOnly(reader), Role::Server, Some(config))).await;

    // At most 64, each looked up by its topic: a list costs less than a map.
    let mut subscriptions: Vec<Following> = Vec::new();
    // One timer per connection, for whichever comes first: the next ping,
    // the end of the grace of a connection without subscriptions, or the
    // write timeout of frames waiting for a full socket.
    let mut next_ping = Instant::now() + settings.ping_interval;
    let mut unsubscribed_until = Some(Instant::now() + settings.subscribe_grace);
    let mut deadline = next_ping.min(unsubscribed_until.unwrap_or(next_ping));
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    let mut last_heard = Instant::now();
    let mut failed_subscribes = 0usize;
    engine.count_connection(Transport::WebSocket, 1);

    let ending = loop {
        let queued = outlet.has_queued();
        tokio::select! {
            message = incoming.next() => {
                let message = match message {
                    Some(Ok(message)) => message,
                    Some(Err(err)) => break ending_after(err),
                    None => break Ending::ClientGone,
                };
                last_heard = Instant::now();
                let was_idle = subscriptions.is_empty();
                // Boxed, as the other rare paths below: the connection's
                // future, alive as long as the connection, stays small.
                let handled = Box::pin(on_message(message, &engine, &subscriber, &outlet, &mut subscriptions, &mut failed_subscribes)).await;
                if was_idle != subscriptions.is_empty() {
                    unsubscribed_until = subscriptions.is_empty().then(|| Instant::now() + settings.subscribe_grace);
                }
                if let Err(ending) = handled {
                    break ending;
                }
            }
            () = std::future::poll_fn(|cx| outlet.poll_woken(cx)) => {
                match outlet.fault() {
                    Some(Fault::Slow(behind)) => {
                        let slow = Disconnect::SlowConsumer(behind);
                        tracing::info!(reason = %slow, "disconnecting a slow consumer");
                        engine.count_slow_disconnect(Transport::WebSocket);
                        break Ending::Close(CLOSE_SLOW_CONSUMER, slow.to_string());
                    }
                    Some(Fault::Broken) => break Ending::ClientGone,
                    None => {}
                }
                // A subscription the hub handed back (a gap to fill).
                if outlet.take_handed_back()
                    && let Err(ending) = Box::pin(catch_up_all(&engine, &outlet, &mut subscriptions)).await
                {
                    break ending;
                }
            }
            drained = std::future::poll_fn(|cx| outlet.poll_drain(cx, &mut wire)), if queued => {
                if drained.is_err() {
                    break Ending::ClientGone;
                }
            }
            () = &mut timer => {
                let now = Instant::now();
                if outlet.stalled_since().is_some_and(|since| since + settings.write_timeout <= now) {
                    break Ending::Stuck;
                }
                if unsubscribed_until.is_some_and(|until| until <= now) {
                    engine.count_unsubscribed_close();
                    break Ending::Close(
                        CLOSE_NO_SUBSCRIPTION,
                        format!("no subscription within {} s", settings.subscribe_grace.as_secs()),
                    );
                }
                if next_ping <= now {
                    if last_heard.elapsed() > settings.ping_interval * 2 {
                        break Ending::Close(CLOSE_NO_PONG, "no answer to pings".into());
                    }
                    next_ping = now + settings.ping_interval;
                    outlet.send(&frame::ping());
                }
            }
            () = engine.edge.shutdown.closing().cancelled() => break Ending::Close(1001, "server shutting down".into()),
        }
        let stalled_until = outlet.stalled_since().map(|since| since + settings.write_timeout);
        let next = [Some(next_ping), unsubscribed_until, stalled_until].into_iter().flatten().min();
        if let Some(next) = next
            && next != deadline
        {
            deadline = next;
            timer.as_mut().reset(deadline);
        }
    };

    // Nothing reaches this connection from the hub any more.
    drop(subscriptions);
    Box::pin(close(ending, &engine, &outlet, &mut wire)).await;
    engine.count_connection(Transport::WebSocket, -1);
}

/// Answers one message from the client.
async fn on_message<D: Domain>(
    message: Message,
    engine: &Engine<D>,
    subscriber: &Subscriber,
    outlet: &Arc<Outlet>,
    subscriptions: &mut Vec<Following>,
    failed_subscribes: &mut usize,
) -> Result<(), Ending> {
    let text = match message {
        Message::Text(text) => text,
        Message::Close(frame) => return Err(Ending::ClientClosed(frame.map(|frame| frame.code.into()))),
        Message::Binary(_) => {
            send_json(outlet, &Reply::error("invalid_message", "messages must be JSON text"));
            return Ok(());
        }
        Message::Ping(payload) => {
            outlet.send(&frame::pong(&payload));
            return Ok(());
        }
        Message::Pong(_) | Message::Frame(_) => return Ok(()),
    };
    let opened = match handle_command(text.as_str(), engine, subscriber, outlet, subscriptions).await {
        Ok((outgoing, opened)) => {
            send_all(outlet, outgoing, engine);
            opened
        }
        Err(reply) => {
            send_json(outlet, &reply);
            if reply.failed_subscribe {
                *failed_subscribes += 1;
                if *failed_subscribes >= MAX_FAILED_SUBSCRIBES {
                    return Err(Ending::Close(
                        CLOSE_POLICY_VIOLATION,
                        format!("more than {MAX_FAILED_SUBSCRIBES} failed subscribes"),
                    ));
                }
            }
            false
        }
    };
    match subscriptions.last_mut().filter(|_| opened) {
        Some(following) => catch_up(engine, outlet, following).await,
        None => Ok(()),
    }
}

/// [`catch_up`] for each subscription the hub handed back.
async fn catch_up_all<D: Domain>(
    engine: &Engine<D>,
    outlet: &Outlet,
    subscriptions: &mut [Following],
) -> Result<(), Ending> {
    for following in subscriptions {
        catch_up(engine, outlet, following).await?;
    }
    Ok(())
}

/// Says goodbye as `ending` asks: the close frame, written within its time.
async fn close<D: Domain>(ending: Ending, engine: &Engine<D>, outlet: &Outlet, wire: &mut Wire) {
    let write_timeout = engine.settings.write_timeout;
    match ending {
        Ending::Close(code, reason) => {
            outlet.finish(frame::close(Some((code, &reason))));
            flush(outlet, wire, write_timeout).await;
        }
        Ending::Refused(code, reason) => {
            outlet.finish(frame::close(Some((code, &reason))));
            if flush(outlet, wire, write_timeout).await {
                tokio::select! {
                    () = tokio::time::sleep(REFUSED_LINGER) => {}
                    () = engine.edge.shutdown.closing().cancelled() => {}
                }
            }
        }
        Ending::Stuck => {
            // A slow consumer like one that fell behind: counted, logged, and
            // told so if a close frame still fits (its socket is full, so
            // only a short try).
            tracing::info!(
                timeout_ms = write_timeout.as_millis(),
                "disconnecting a subscriber that stopped reading"
            );
            engine.count_slow_disconnect(Transport::WebSocket);
            outlet.cut_off(0);
            outlet.finish(frame::close(Some((CLOSE_SLOW_CONSUMER, "stopped reading"))));
            flush(outlet, wire, STUCK_CLOSE_TRY).await;
        }
        Ending::ClientClosed(code) => {
            // RFC 6455 asks for a close frame back, echoing the status.
            outlet.finish(frame::close(code.map(|code| (code, ""))));
            flush(outlet, wire, STUCK_CLOSE_TRY).await;
        }
        Ending::ClientGone => outlet.broken(),
    }
}

/// Writes what the outlet still holds, within `limit`: whether all of it
/// went.
async fn flush(outlet: &Outlet, wire: &mut Wire, limit: std::time::Duration) -> bool {
    let drained = tokio::time::timeout(limit, async {
        while outlet.has_queued() {
            outlet.drain(wire).await?;
        }
        io::Result::Ok(())
    });
    matches!(drained.await, Ok(Ok(())))
}

/// Sends what a held subscription's frames call for (a replay's rest, a
/// gap filled from history), then hands the subscription back to the hub.
async fn catch_up<D: Domain>(
    engine: &Engine<D>,
    outlet: &Outlet,
    following: &mut Following,
) -> Result<(), Ending> {
    while let Some((next_seq, frames)) = following.membership.take_held() {
        following.cursor.expect(next_seq);
        for frame in frames {
            match engine.subscriptions.next_for(&mut following.cursor, &frame).await {
                Ok(outgoing) => send_all(outlet, outgoing, engine),
                Err(Disconnect::StoreUnavailable) => {
                    return Err(Ending::Close(1011, Disconnect::StoreUnavailable.to_string()));
                }
                Err(slow) => {
                    engine.count_slow_disconnect(Transport::WebSocket);
                    return Err(Ending::Close(CLOSE_SLOW_CONSUMER, slow.to_string()));
                }
            }
        }
        following.membership.expect(following.cursor.next_seq());
    }
    Ok(())
}

/// How to end a connection whose client broke the protocol: RFC 6455's
/// close codes, so the client learns why instead of seeing a reset.
fn ending_after(err: tokio_tungstenite::tungstenite::Error) -> Ending {
    use tokio_tungstenite::tungstenite::Error;
    match err {
        Error::Capacity(reason) => Ending::Refused(CLOSE_TOO_BIG, format!("message too big: {reason}")),
        Error::Protocol(reason) => Ending::Refused(CLOSE_PROTOCOL_ERROR, format!("protocol error: {reason}")),
        Error::Utf8(_) => Ending::Refused(CLOSE_INVALID_PAYLOAD, "text message is not UTF-8".into()),
        _ => Ending::ClientGone,
    }
}

/// Carries out a client's command: what to send, and whether it opened a
/// subscription (the last of the list, to hand to the hub once that is
/// sent).
async fn handle_command<D: Domain>(
    text: &str,
    engine: &Engine<D>,
    subscriber: &Subscriber,
    outlet: &Arc<Outlet>,
    subscriptions: &mut Vec<Following>,
) -> Result<(Vec<Outgoing>, bool), Reply> {
    let command =
        parse_client_message::<D>(text).map_err(|invalid| Reply::error(invalid.code, invalid.message))?;
    match command {
        ClientCommand::Subscribe { id, since } => {
            if subscriptions.iter().any(|following| following.cursor.topic() == id) {
                return Err(Reply::error("already_subscribed", format!("already subscribed to {id}")));
            }
            if subscriptions.len() >= MAX_SUBSCRIPTIONS {
                return Err(Reply::error(
                    "too_many_subscriptions",
                    format!("at most {MAX_SUBSCRIPTIONS} subscriptions per connection"),
                ));
            }
            // Before the store is read: that read, and the replay, are what
            // the rate protects.
            if let Err(limited) = engine.edge.limits.check(Lane::Subscribe, subscriber.client) {
                if let Some(route) = &subscriber.route {
                    edge::limits::count_rate_limited(route.as_str(), Lane::Subscribe);
                }
                return Err(Reply::rate_limited::<D>(&id, &limited));
            }
            let (first, cursor, membership) =
                engine.subscriptions.open_member(id.as_str(), since, outlet).await.map_err(|err| Reply {
                    failed_subscribe: true,
                    ..Reply::error(err.code::<D>(), err.to_string())
                })?;
            subscriptions.push(Following { cursor, membership });
            Ok((first, true))
        }
        ClientCommand::Unsubscribe { id } => {
            let Some(at) = subscriptions.iter().position(|following| following.cursor.topic() == id) else {
                return Err(Reply::error(
                    "not_subscribed",
                    format!("not subscribed to {}", id.chars().take(64).collect::<String>()),
                ));
            };
            subscriptions.swap_remove(at);
            let reply = Reply {
                kind: "unsubscribed",
                topic: Some((D::TOPIC, id)),
                code: None,
                message: None,
                retry_after: None,
                failed_subscribe: false,
            };
            let text = serde_json::to_string(&reply).unwrap_or_default();
            Ok((vec![Outgoing { seq: 0, kind: "unsubscribed", text: text.into(), received: None }], false))
        }
    }
}

/// Sends a subscription's messages. One the outlet refuses (its client was
/// cut off, or is gone) is dropped: the connection's task learns why from
/// the outlet and closes.
fn send_all<D: Domain>(outlet: &Outlet, outgoing: Vec<Outgoing>, engine: &Engine<D>) {
    for message in outgoing {
        if outlet.send(&frame::text(message.text.as_str())) == Sent::Refused {
            return;
        }
        engine.count_delivered(Transport::WebSocket, &message);
    }
}

fn send_json<T: Serialize>(outlet: &Outlet, message: &T) {
    if let Ok(text) = serde_json::to_string(message) {
        outlet.send(&frame::text(&text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Lots;

    #[test]
    fn commands_parse_under_the_domains_key_and_refusals_carry_the_documented_codes() {
        assert_eq!(
            parse_client_message::<Lots>(r#"{"op":"subscribe","lot":"l1","since":4}"#),
            Ok(ClientCommand::Subscribe { id: "l1".into(), since: Some(4) })
        );
        assert_eq!(
            parse_client_message::<Lots>(r#"{"op":"subscribe","lot":"l1","since":null}"#),
            Ok(ClientCommand::Subscribe { id: "l1".into(), since: None })
        );
        // Unsubscribing checks no id: an id never subscribed to just misses.
        assert_eq!(
            parse_client_message::<Lots>(r#"{"op":"unsubscribe","lot":"Not An Id"}"#),
            Ok(ClientCommand::Unsubscribe { id: "Not An Id".into() })
        );
        let refusals = [
            ("subscribe l1", "invalid_json"),
            (r#"{"op":"dance"}"#, "unknown_command"),
            (r#"{"lot":"l1"}"#, "invalid_message"),
            (r#"[1, 2]"#, "invalid_message"),
            (r#"{"op":"subscribe","topic":"l1"}"#, "invalid_message"),
            (r#"{"op":"subscribe"}"#, "invalid_message"),
            (r#"{"op":"subscribe","lot":7}"#, "invalid_message"),
            (r#"{"op":"subscribe","lot":"Bad Id!"}"#, "invalid_message"),
            (r#"{"op":"subscribe","lot":"l1","since":-1}"#, "invalid_message"),
            (r#"{"op":"subscribe","lot":"l1","since":"4"}"#, "invalid_message"),
            (r#"{"op":"subscribe","lot":"l1","extra":1}"#, "invalid_message"),
            (r#"{"op":"unsubscribe","lot":"l1","since":1}"#, "invalid_message"),
        ];
        for (text, code) in refusals {
            let refused = parse_client_message::<Lots>(text).expect_err(text);
            assert_eq!(refused.code, code, "{text}: {}", refused.message);
            assert!(!refused.message.is_empty(), "{text}");
        }
    }

    #[test]
    fn a_reply_names_its_topic_under_the_domains_key() {
        let reply = Reply {
            kind: "unsubscribed",
            topic: Some((Lots::TOPIC, "l1".into())),
            code: None,
            message: None,
            retry_after: None,
            failed_subscribe: false,
        };
        assert_eq!(serde_json::to_string(&reply).expect("json"), r#"{"type":"unsubscribed","lot":"l1"}"#);
    }
}
