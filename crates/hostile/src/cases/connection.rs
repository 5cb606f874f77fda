//! The connection layer: clients that never finish their headers, sit idle,
//! speak HTTP/1.0, pipeline, or send what is not HTTP at all. A connection
//! must not outlive the header-read timeout without sending a request, and
//! what the HTTP parser refuses must end the connection, not the server.
//!
//! The parser's own refusals (431, 400) come from hyper before any handler
//! runs, so they carry no JSON body; those cases check the status and that
//! the connection is closed.
//!
//! A PROXY protocol header (a load balancer's word for who the client is)
//! is believed only from the gateway's trusted proxies: from anyone else it
//! is a `400` naming why, and from a trusted one (`--proxy-source`) the
//! client it names is who the rate limits count.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{
    http::{self, Conn, Request, Response},
    suite::{Case, Check, Ctx, Rate, Skip},
};

pub(crate) const CASES: &[Case] = &[
    Case { name: "conn/half-sent-headers-are-closed", run: slow_loris },
    Case { name: "conn/dribbled-headers-are-closed", run: dribbled_headers },
    Case { name: "conn/idle-keep-alive-is-closed", run: idle_keep_alive },
    Case { name: "conn/http-1.0-is-served-and-closed", run: http_10 },
    Case { name: "conn/pipelined-requests-answered-in-order", run: pipelined },
    Case { name: "conn/huge-header-is-431", run: huge_header },
    Case { name: "conn/too-many-headers-is-431", run: too_many_headers },
    Case { name: "conn/raw-bytes-in-request-line-are-400", run: raw_bytes_in_target },
    Case { name: "conn/folded-header-is-400", run: folded_header },
    Case { name: "conn/not-http-is-closed", run: not_http },
    Case { name: "conn/length-and-chunked-together-are-not-smuggled", run: length_and_chunked },
    Case { name: "conn/bad-chunk-size-is-400-json", run: bad_chunk_size },
    Case { name: "conn/proxy-header-from-anyone-is-400-json", run: untrusted_proxy_header },
    Case { name: "conn/proxy-header-from-a-trusted-proxy-names-the-client", run: trusted_proxy_header },
];

/// A PROXY protocol v1 header naming `client` as the connection's source.
fn proxy_v1(client: Ipv4Addr, ctx: &Ctx) -> Vec<u8> {
    format!("PROXY TCP4 {client} {} 40000 {}\r\n", destination(ctx), ctx.addr.port()).into_bytes()
}

/// The same as a v2 header, byte by byte: the signature, PROXY over TCP/IPv4,
/// twelve bytes of addresses and ports.
fn proxy_v2(client: Ipv4Addr, ctx: &Ctx) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11]);
    header.extend_from_slice(&12u16.to_be_bytes());
    header.extend_from_slice(&client.octets());
    header.extend_from_slice(&destination(ctx).octets());
    header.extend_from_slice(&40000u16.to_be_bytes());
    header.extend_from_slice(&ctx.addr.port().to_be_bytes());
    header
}

fn destination(ctx: &Ctx) -> Ipv4Addr {
    match ctx.addr.ip() {
        std::net::IpAddr::V4(ip) => ip,
        std::net::IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
    }
}

/// Addresses from the benchmarking range (198.18.0.0/15) no other run
/// names: the gateway remembers a named client's bucket across runs.
fn made_up_clients(ctx: &Ctx) -> (Ipv4Addr, Ipv4Addr) {
    let seed = ctx.run.bytes().fold(0u32, |hash, byte| hash.wrapping_mul(31).wrapping_add(u32::from(byte)));
    let [_, a, b, c] = seed.to_be_bytes();
    (Ipv4Addr::new(198, 18 | (a & 1), b, c & 0x7f), Ipv4Addr::new(198, 18 | (a & 1), b, c | 0x80))
}

/// Sends `preface` and then `request` on a new connection; the answer.
async fn after_preface(ctx: &Ctx, preface: &[u8], request: &Request) -> anyhow::Result<(Conn, Response)> {
    let mut conn = Conn::open(ctx.addr).await?;
    let mut bytes = preface.to_vec();
    bytes.extend_from_slice(&request.to_bytes(&ctx.addr.to_string()));
    let response = conn.exchange(&bytes).await?;
    Ok((conn, response))
}

fn untrusted_proxy_header(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let claimed = made_up_clients(ctx).0;
        for (version, header) in [("v1", proxy_v1(claimed, ctx)), ("v2", proxy_v2(claimed, ctx))] {
            let (mut conn, response) = after_preface(ctx, &header, &Request::get("/healthz")).await?;
            response
                .expect_error(400, "proxy_header_not_trusted")
                .with_context(|| format!("a {version} header"))?;
            conn.closed_within(Duration::from_secs(3))
                .await
                .with_context(|| format!("after the {version} refusal"))?;
        }
        let plain = ctx.send(&Request::get("/healthz")).await?;
        ensure!(plain.status() == 200, "a plain request afterwards: {}", plain.status());
        Ok("v1 and v2 headers naming another client: 400 proxy_header_not_trusted, closed".into())
    })
}

fn trusted_proxy_header(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let Some(balancer) = ctx.proxy_source else {
            return Err(Skip("no --proxy-source (an address the gateway trusts as a proxy)".into()).into());
        };
        let Rate::Limited { count: burst, window } = ctx.rates.ingest else {
            return Err(Skip("the ingest lane is off".into()).into());
        };
        let (first, second) = made_up_clients(ctx);
        let anonymous = Request::post(ctx.publish_path()).body("application/json", "{}").keep_alive();
        http::from_source(Some(balancer), async {
            // The first client spends its whole burst on one connection.
            let (mut conn, mut response) = after_preface(ctx, &proxy_v2(first, ctx), &anonymous).await?;
            let mut sent = 1u64;
            while response.status() == 401 {
                ensure!(sent <= u64::from(burst) * 2 + 10, "no 429 after {sent} requests");
                response = conn.request(&anonymous).await?;
                sent += 1;
            }
            response.expect_error(429, "rate_limited").context("the named client over its burst")?;
            let emptied = std::time::Instant::now();
            ensure!(sent > u64::from(burst), "refused at request {sent}, within the burst of {burst}");
            // Its bucket is its own: a new connection naming it is refused
            // once the tokens refilled meanwhile are spent (a new bucket
            // would serve a whole burst), while one naming another client
            // and the balancer's own request are served.
            let (mut conn, mut again) = after_preface(ctx, &proxy_v1(first, ctx), &anonymous).await?;
            let per_token = window / burst.max(1);
            let mut served = 0u32;
            while again.status() == 401 {
                served += 1;
                let refilled = emptied.elapsed().as_nanos() / per_token.as_nanos().max(1) + 1;
                ensure!(
                    u128::from(served) <= refilled,
                    "the same client on a new connection: {served} requests served, \
                     {refilled} tokens refilled since its 429"
                );
                again = conn.request(&anonymous).await?;
            }
            again.expect_error(429, "rate_limited").context("the same client on a new connection")?;
            let (_, other) = after_preface(ctx, &proxy_v1(second, ctx), &anonymous).await?;
            ensure!(other.status() == 401, "another named client: {} {}", other.status(), other.text());
            let (_, own) = after_preface(ctx, b"", &anonymous).await?;
            ensure!(own.status() == 401, "the balancer's own request: {} {}", own.status(), own.text());
            Ok(format!(
                "from {balancer}: {first} refused at request {sent} (burst {burst}), and on a new connection; \
                 {second} and the balancer itself served"
            ))
        })
        .await
    })
}

/// How much longer than the configured timeout a close may take: timers
/// fire late on a busy machine, never early.
fn slack(ctx: &Ctx) -> Duration {
    (ctx.header_read_timeout / 2).max(Duration::from_secs(2))
}

fn slow_loris(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut conn = Conn::open(ctx.addr).await?;
        conn.write(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Slow: ", ctx.addr).as_bytes()).await?;
        let took = conn
            .closed_within(ctx.header_read_timeout + slack(ctx))
            .await
            .context("half-sent headers kept the connection")?;
        Ok(format!(
            "closed after {} ms (header-read timeout {} ms)",
            took.as_millis(),
            ctx.header_read_timeout.as_millis()
        ))
    })
}

fn dribbled_headers(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let conn = Conn::open(ctx.addr).await?;
        let (mut reader, mut writer) = conn.into_parts();
        writer
            .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Slow: ", ctx.addr).as_bytes())
            .await?;
        let started = Instant::now();
        let limit = ctx.header_read_timeout + slack(ctx);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut sink = [0u8; 1024];
        loop {
            tokio::select! {
                read = reader.read(&mut sink) => {
                    if matches!(read, Ok(0) | Err(_)) { break; }
                }
                _ = tick.tick() => {
                    if started.elapsed() > limit {
                        bail!("a byte every 100 ms kept the connection open for {} ms", limit.as_millis());
                    }
                    // A write error means the server has closed; the read
                    // side sees it next.
                    let _ = writer.write_all(b"a").await;
                }
            }
        }
        Ok(format!("a header byte every 100 ms: closed after {} ms", started.elapsed().as_millis()))
    })
}

fn idle_keep_alive(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut conn = Conn::open(ctx.addr).await?;
        let response = conn.request(&Request::get("/healthz").keep_alive()).await?;
        ensure!(response.status() == 200, "/healthz answered {}", response.status());
        let took = conn
            .closed_within(ctx.header_read_timeout + slack(ctx))
            .await
            .context("an idle keep-alive connection stayed open")?;
        Ok(format!("idle after one request: closed after {} ms", took.as_millis()))
    })
}

fn http_10(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut conn = Conn::open(ctx.addr).await?;
        let response = conn.request(&Request::get("/healthz").version("HTTP/1.0").without_host()).await?;
        ensure!(response.status() == 200, "HTTP/1.0 /healthz answered {}", response.status());
        let body = response.json()?;
        ensure!(body["status"] == "ok", "body {body}");
        conn.closed_within(Duration::from_secs(2))
            .await
            .context("HTTP/1.0 without keep-alive stayed open")?;
        Ok(format!("HTTP/1.0 without Host: 200 ({}), then closed", response.head.version))
    })
}

fn pipelined(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let host = ctx.addr.to_string();
        let mut bytes = Request::get("/healthz").keep_alive().to_bytes(&host);
        bytes.extend(Request::get("/v1/nope").keep_alive().to_bytes(&host));
        bytes.extend(Request::new("QZXPIPE", "/healthz").to_bytes(&host));
        let mut conn = Conn::open(ctx.addr).await?;
        conn.write(&bytes).await?;
        let first = conn.response().await.context("first response")?;
        ensure!(first.status() == 200, "first: {}", first.status());
        conn.response().await.context("second response")?.expect_error(404, "not_found")?;
        conn.response().await.context("third response")?.expect_error(405, "method_not_allowed")?;
        Ok("three requests in one write: 200, 404 not_found, 405 method_not_allowed, in order".into())
    })
}

/// Sends `bytes` and expects the HTTP layer's `status` and the connection
/// closed afterwards.
async fn parser_refuses(ctx: &Ctx, bytes: &[u8], status: u16, what: &str) -> anyhow::Result<String> {
    let mut conn = Conn::open(ctx.addr).await?;
    let response = conn.exchange(bytes).await.with_context(|| format!("{what}: no answer"))?;
    ensure!(response.status() == status, "{what}: expected {status}, got {}", response.status());
    conn.closed_within(Duration::from_secs(5))
        .await
        .with_context(|| format!("{what}: connection kept open"))?;
    Ok(format!("{what}: {status} from the HTTP layer, connection closed"))
}

fn huge_header(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let request = Request::get("/healthz").header("X-Huge", "a".repeat(512 * 1024));
        parser_refuses(ctx, &request.to_bytes(&ctx.addr.to_string()), 431, "a 512 KiB header").await
    })
}

fn too_many_headers(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let request = (0..200).fold(Request::get("/healthz"), |r, i| r.header(&format!("X-H{i}"), "1"));
        parser_refuses(ctx, &request.to_bytes(&ctx.addr.to_string()), 431, "200 headers").await
    })
}

fn raw_bytes_in_target(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut bytes = format!("GET {}/", ctx.publish_path()).into_bytes();
        bytes.extend_from_slice(&[0xFF, 0xFE, 0x00, 0x7F]);
        bytes.extend_from_slice(format!(" HTTP/1.1\r\nHost: {}\r\n\r\n", ctx.addr).as_bytes());
        parser_refuses(ctx, &bytes, 400, "raw 0xFF 0xFE 0x00 0x7F in the path").await
    })
}

fn folded_header(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let bytes = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Folded: a\r\n b\r\n\r\n", ctx.addr);
        parser_refuses(ctx, bytes.as_bytes(), 400, "an obs-fold continuation line").await
    })
}

fn not_http(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        // The start of a TLS ClientHello: a client speaking HTTPS to a
        // plain-HTTP port.
        let mut bytes = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
        bytes.extend_from_slice(&[0u8; 64]);
        let mut conn = Conn::open(ctx.addr).await?;
        conn.write(&bytes).await?;
        let answer = match conn.response().await {
            Ok(response) => {
                ensure!(response.status() == 400, "answered {}", response.status());
                "400, then closed"
            }
            Err(_) => "closed without an answer",
        };
        conn.closed_within(Duration::from_secs(5)).await.context("kept open")?;
        Ok(format!("a TLS ClientHello: {answer}"))
    })
}

fn length_and_chunked(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        // Read by its length, the body would swallow the second request;
        // read as chunked, the second request is a request. RFC 9112 6.1
        // lets a server refuse such a message, and requires it to close the
        // connection after answering it either way.
        let smuggled = format!("GET /v1/smuggled HTTP/1.1\r\nHost: {}\r\n\r\n", ctx.addr);
        let body = format!("0\r\n\r\n{smuggled}");
        let bytes = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
            ctx.publish_path(),
            ctx.addr,
            body.len()
        );
        let mut conn = Conn::open(ctx.addr).await?;
        conn.write(bytes.as_bytes()).await?;
        let first = conn.response().await.context("no answer")?;
        ensure!(matches!(first.status(), 400 | 401), "first answer {}", first.status());
        if let Ok(second) = conn.response().await {
            bail!("answered a second, smuggled request: {} {}", second.status(), second.text());
        }
        Ok(format!(
            "Content-Length with Transfer-Encoding: {}, then closed; nothing smuggled",
            first.status()
        ))
    })
}

fn bad_chunk_size(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut m = ctx.new_match("bad-chunk").await?;
        let event = ctx.next_event(&m.id, 2).to_string();
        let bytes = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{event}\r\n0\r\n\r\n",
            ctx.publish_path(),
            ctx.addr,
            ctx.publish_token()
        );
        let mut conn = Conn::open(ctx.addr).await?;
        ctx.pace_publisher().await;
        let response = conn.exchange(bytes.as_bytes()).await?;
        response.expect_error(400, "invalid_event")?;
        ctx.expect_head(&mut m).await?;
        Ok("chunk size `zz`: 400 invalid_event, nothing applied".into())
    })
}
