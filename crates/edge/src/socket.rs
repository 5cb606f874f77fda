//! A connection's TCP socket, shared: hyper reads and writes it through
//! [`SharedTcp`], and each request carries a handle to it
//! ([`ConnectionSocket`]) for a transport that writes to it itself once
//! hyper has handed the connection over (an HTTP/1 upgrade).
//!
//! Why: the live feed writes one update to thousands of WebSockets. Going
//! through each connection's own task and stream would wake a task per
//! subscriber per update; writing the already-encoded frame straight to
//! each socket, without blocking, is what Node's `ws` and uWebSockets do,
//! and costs little more than the kernel's send.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// The handle to a connection's socket in each request's extensions.
///
/// Only for a connection hyper no longer serves: after an HTTP/1 upgrade has
/// completed, the upgraded stream's reads and this handle's writes are the
/// only users of the socket. Writing before then would interleave with
/// hyper's own responses.
#[derive(Debug, Clone)]
pub struct ConnectionSocket(pub Arc<TcpStream>);

/// A TCP stream that more than one owner can read and write (through
/// `&TcpStream`'s readiness and non-blocking calls, as tokio's own stream
/// does internally).
#[derive(Debug, Clone)]
pub struct SharedTcp(pub Arc<TcpStream>);

impl AsyncRead for SharedTcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            // Into the buffer as it is: hyper hands a fresh, uninitialised
            // view of its read buffer on every read, and zeroing it first
            // would cost a memset of the whole buffer each time.
            match self.0.try_read_buf(buf) {
                Ok(_) => return Poll::Ready(Ok(())),
                // Readiness was stale: wait for the next edge.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                written => return Poll::Ready(written),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                written => return Poll::Ready(written),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the kernel: nothing is buffered here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shut = socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write);
        Poll::Ready(match shut {
            // Already reset by the peer: nothing left to shut.
            Err(err) if err.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn both_owners_write_to_the_same_connection_in_turn() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let socket = Arc::new(server);
        let mut shared = SharedTcp(Arc::clone(&socket));

        client.write_all(b"ping").await.expect("client write");
        let mut four = [0u8; 4];
        shared.read_exact(&mut four).await.expect("read through the shared stream");
        assert_eq!(&four, b"ping");

        shared.write_all(b"hyper's answer;").await.expect("write through the shared stream");
        let handle = ConnectionSocket(socket);
        handle.0.writable().await.expect("writable");
        assert_eq!(handle.0.try_write(b"the feed's frame").expect("direct write"), 16);
        shared.shutdown().await.expect("shutdown");

        let mut all = String::new();
        client.read_to_string(&mut all).await.expect("client read");
        assert_eq!(all, "hyper's answer;the feed's frame");
    }
}
