//! The HTTP server under the router: accepts connections and serves each
//! with hyper, bounding what an anonymous client can hold before any
//! handler runs.
//!
//! - Open HTTP connections are capped: past the cap a new connection is
//!   closed at once, so a flood of idle sockets cannot use up the process's
//!   file descriptors. (Upgraded WebSocket connections leave this count and
//!   are capped by the live feed's own limit, after authentication.)
//! - A client must send a request's headers within the header-read timeout,
//!   which also closes an HTTP/1 keep-alive connection that stays idle that
//!   long, and a new connection that sends nothing at all; HTTP/2
//!   connections are pinged and closed when the peer is gone.
//! - A trusted load balancer's PROXY protocol header (v1 or v2) names the
//!   client whose address the request extensions carry (`ConnectInfo`);
//!   from anyone else such a header is refused ([`crate::proxy`]). Reading
//!   it counts against the header-read timeout.
//! - On shutdown the listener closes, each connection finishes its
//!   in-flight requests and then closes.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{ConnectInfo, Request},
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::{
    limits::TrustedProxies,
    proxy::{self, Preface},
    socket::{ConnectionSocket, SharedTcp},
};

/// How the server treats connections.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Open HTTP connections at most.
    pub max_connections: usize,
    /// Time to send a request's headers; also the idle limit of an HTTP/1
    /// keep-alive connection.
    pub header_read_timeout: Duration,
    /// Kernel send buffer of each connection.
    pub send_buffer_bytes: usize,
    /// Peers whose PROXY protocol header is believed.
    pub trusted_proxies: TrustedProxies,
}

/// Serves `app` on `listener` until `stop` fires, then waits for open
/// connections to finish their in-flight requests.
pub fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    stop: CancellationToken,
) -> impl Future<Output = std::io::Result<()>> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Small responses and live updates: do not wait to fill a segment.
        .writev(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let refused = metrics::counter!(crate::metrics::HTTP_CONNECTIONS_REFUSED);
    let connections = metrics::gauge!(crate::metrics::HTTP_CONNECTIONS);
    let proxied = metrics::counter!(crate::metrics::PROXY_HEADERS, "outcome" => "accepted");
    let (header_read_timeout, send_buffer_bytes) = (limits.header_read_timeout, limits.send_buffer_bytes);
    let trusted_proxies = Arc::new(limits.trusted_proxies);

    async move {
        let graceful = GracefulShutdown::new();
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of descriptors or a connection reset before
                        // accept: wait a moment rather than spin.
                        tracing::debug!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                },
                () = stop.cancelled() => break,
            };
            let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
                refused.increment(1);
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            if let Err(err) = socket2::SockRef::from(&tcp).set_send_buffer_size(send_buffer_bytes) {
                tracing::debug!(%err, "cannot set the socket send buffer");
            }
            // One clone of the router (an Arc) per connection: serving the
            // router itself would rebuild its route table per connection.
            let app = app.clone();
            let trusted = !trusted_proxies.is_empty() && trusted_proxies.contains(peer.ip());
            let (builder, watcher, stop) = (Arc::clone(&builder), graceful.watcher(), stop.clone());
            let (connections, proxied) = (connections.clone(), proxied.clone());
            connections.increment(1.0);
            tokio::spawn(async move {
                let mut tcp = tcp;
                // hyper's header-read timer starts only once the first bytes
                // have told HTTP/1 from HTTP/2; until then nothing bounds
                // the wait. A client that sends nothing must not hold its
                // connection (and a slot under the cap) for longer.
                let opened = tokio::select! {
                    opened = tokio::time::timeout(header_read_timeout, opening(&mut tcp, peer, trusted)) => opened,
                    () = stop.cancelled() => Ok(Ok(Opened::Closed)),
                };
                match opened {
                    Ok(Ok(Opened::Serve { client, proxied: by_proxy })) => {
                        if by_proxy {
                            proxied.increment(1);
                        }
                        // Each request carries the client's address, as
                        // axum's own server does it (`ConnectInfo`): the
                        // rate limits count per client. And a handle to the
                        // socket, for a transport that writes to it itself
                        // after an upgrade (the live feed's fan-out).
                        let tcp = Arc::new(tcp);
                        let socket = ConnectionSocket(Arc::clone(&tcp));
                        let service = TowerToHyperService::new(tower::service_fn(
                            move |mut request: Request<Incoming>| {
                                request.extensions_mut().insert(ConnectInfo(client));
                                request.extensions_mut().insert(socket.clone());
                                app.clone().oneshot(request)
                            },
                        ));
                        let connection = watcher.watch(
                            builder
                                .serve_connection_with_upgrades(TokioIo::new(SharedTcp(tcp)), service)
                                .into_owned(),
                        );
                        if let Err(err) = connection.await {
                            tracing::debug!(error = %err, "connection ended with an error");
                        }
                    }
                    Ok(Ok(Opened::Refused(refusal))) => {
                        tracing::debug!(%peer, %refusal, "proxy header refused");
                        metrics::counter!(crate::metrics::PROXY_HEADERS, "outcome" => refusal.label())
                            .increment(1);
                        proxy::refuse(tcp, &refusal).await;
                    }
                    Ok(Ok(Opened::Closed)) | Ok(Err(_)) | Err(_) => {}
                }
                connections.decrement(1.0);
                drop(permit);
            });
        }
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    }
}

/// What a new connection's first bytes decided.
enum Opened {
    /// Serve it, for `client`: the peer, or the one a trusted proxy's
    /// header named (`proxied`).
    Serve { client: SocketAddr, proxied: bool },
    /// A PROXY header that is not to be believed.
    Refused(proxy::Refusal),
    /// Closed before sending a request.
    Closed,
}

/// Reads what comes before the first request: a trusted proxy's header,
/// then enough to tell HTTP/1 from HTTP/2.
async fn opening(
    tcp: &mut tokio::net::TcpStream,
    peer: SocketAddr,
    trusted: bool,
) -> std::io::Result<Opened> {
    let (client, proxied) = match proxy::read_preface(tcp, peer, trusted).await? {
        Ok(Preface::Client(client)) => (client, true),
        Ok(Preface::None) => (peer, false),
        Err(refusal) => return Ok(Opened::Refused(refusal)),
    };
    Ok(if first_bytes(tcp).await? { Opened::Serve { client, proxied } } else { Opened::Closed })
}

/// The HTTP/2 connection preface, which hyper-util reads in full before it
/// decides how to serve a connection.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits, without consuming anything, until the client has sent enough to
/// tell HTTP/1 from HTTP/2: `false` if it closed first.
async fn first_bytes(tcp: &tokio::net::TcpStream) -> std::io::Result<bool> {
    let mut seen = [0u8; 24];
    loop {
        let n = tcp.peek(&mut seen).await?;
        if n == 0 {
            return Ok(false);
        }
        if n == seen.len() || seen[..n] != H2_PREFACE[..n] {
            return Ok(true);
        }
        // Only the start of the HTTP/2 preface so far; peeking again at once
        // would see the same bytes, so wait a moment for the rest.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
