//! The write side of one WebSocket connection, shared by the hub and the
//! connection's task: whole frames, in order, written straight to the
//! socket when it can take them and queued only when it cannot.
//!
//! The hub writes each update's frame, encoded once, to every subscriber's
//! socket in one loop ([`crate::hub`]), without waking their tasks: a
//! subscriber that keeps up costs one non-blocking send per update, as in
//! Node's `ws`. Only a socket that is full gets a queue, which its
//! connection's task drains when the socket is writable again. The queue is
//! bounded in bytes: past the bound the subscriber is a slow consumer, its
//! unsent updates are dropped and its connection is told so (4008).
//!
//! Order holds because only one writer touches the socket at a time: the
//! hub or the connection's own replies write directly only while the queue
//! is empty (under the lock), and the connection's task writes only the
//! queue's front, removing it after the kernel took it.

use std::{
    collections::VecDeque,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use futures::task::AtomicWaker;
use tokio::{io::AsyncWrite, net::TcpStream, time::Instant};

/// Counts frames that were accepted (and counted delivered) but never
/// written: dropped when the client was cut off, or still queued when the
/// connection ended.
fn count_dropped(frames: usize) {
    if frames > 0 {
        metrics::counter!(crate::metrics::DROPPED, "transport" => "websocket").increment(frames as u64);
    }
}

/// What became of a frame handed to [`Outlet::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// The kernel took it, or it waits in the queue behind earlier frames.
    Accepted,
    /// Not sent: the connection is closing, failed, or its client was cut off.
    Refused,
}

/// Why an outlet stopped taking frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The queue outgrew the bound: this many bytes were waiting.
    Slow(u64),
    /// A write failed: the connection is gone.
    Broken,
}

#[derive(Debug, Default)]
struct Queue {
    /// Frames (or what is left of the front one) the socket has not taken.
    chunks: VecDeque<Bytes>,
    bytes: usize,
    /// Whether the front chunk is partly written: it must then be finished,
    /// whatever else is dropped, or the stream of frames breaks.
    front_started: bool,
    /// Since when the queue has made no progress.
    stalled_since: Option<Instant>,
    fault: Option<Fault>,
    /// A close frame is queued: nothing more is taken.
    closing: bool,
}

/// The write side of one connection.
#[derive(Debug)]
pub(crate) struct Outlet {
    /// The socket, for writes that need no waiting; `None` when the
    /// connection did not come from the edge's server, and every frame goes
    /// through the queue.
    socket: Option<Arc<TcpStream>>,
    queue: Mutex<Queue>,
    /// Wakes the connection's task: frames queued, a fault, or a
    /// subscription handed back. (A waker and a flag rather than a
    /// `Notify`: the connection's future, alive as long as the connection,
    /// then holds no waiting future of its own.)
    waker: AtomicWaker,
    woken: AtomicBool,
    /// A subscription waits for the connection's task ([`Outlet::hand_back`]).
    handed_back: AtomicBool,
    max_queued: usize,
}

impl Drop for Outlet {
    fn drop(&mut self) {
        let queue = self.queue.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        count_dropped(queue.chunks.len());
    }
}

impl Outlet {
    pub(crate) fn new(socket: Option<Arc<TcpStream>>, max_queued: usize) -> Self {
        Self {
            socket,
            queue: Mutex::new(Queue::default()),
            waker: AtomicWaker::new(),
            woken: AtomicBool::new(false),
            handed_back: AtomicBool::new(false),
            max_queued,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Each critical section leaves the queue consistent at every step.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends one whole frame: written at once when nothing is queued and the
    /// socket takes it, queued otherwise.
    pub(crate) fn send(&self, frame: &Bytes) -> Sent {
        let mut queue = self.lock();
        if queue.fault.is_some() || queue.closing {
            return Sent::Refused;
        }
        let mut rest = frame.clone();
        if queue.chunks.is_empty() {
            if let Some(socket) = &self.socket {
                match socket.try_write(&rest) {
                    Ok(n) if n == rest.len() => return Sent::Accepted,
                    Ok(n) => {
                        rest = rest.slice(n..);
                        queue.front_started = n > 0;
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        queue.fault = Some(Fault::Broken);
                        drop(queue);
                        self.wake();
                        return Sent::Refused;
                    }
                }
            }
            queue.stalled_since = Some(Instant::now());
        }
        queue.bytes += rest.len();
        queue.chunks.push_back(rest);
        if queue.bytes > self.max_queued {
            let waiting = queue.bytes as u64;
            queue.fault = Some(Fault::Slow(waiting));
            Self::drop_unstarted(&mut queue);
        }
        drop(queue);
        self.wake();
        Sent::Accepted
    }

    /// Queues the connection's last frame (a close frame): behind what is
    /// being written, ahead of anything not yet started when the client is
    /// cut off, and nothing after it.
    pub(crate) fn finish(&self, frame: Bytes) {
        let mut queue = self.lock();
        if queue.closing || queue.fault == Some(Fault::Broken) {
            return;
        }
        if queue.fault.is_some() {
            Self::drop_unstarted(&mut queue);
        }
        queue.closing = true;
        if queue.chunks.is_empty() {
            queue.stalled_since = Some(Instant::now());
        }
        queue.bytes += frame.len();
        queue.chunks.push_back(frame);
        drop(queue);
        self.wake();
    }

    fn drop_unstarted(queue: &mut Queue) {
        let keep = usize::from(queue.front_started);
        let mut dropped = 0;
        while queue.chunks.len() > keep {
            if let Some(chunk) = queue.chunks.pop_back() {
                queue.bytes -= chunk.len();
                dropped += 1;
            }
        }
        count_dropped(dropped);
        if queue.chunks.is_empty() {
            queue.stalled_since = None;
        }
    }

    /// Cuts the client off as a slow consumer, `behind` bytes behind: what
    /// is not yet started is dropped, nothing more is taken, and the
    /// connection's task is woken to close it.
    pub(crate) fn cut_off(&self, behind: u64) {
        let mut queue = self.lock();
        if queue.fault.is_none() {
            queue.fault = Some(Fault::Slow(behind));
            Self::drop_unstarted(&mut queue);
        }
        drop(queue);
        self.wake();
    }

    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Hands a subscription back to the connection's task (a gap to fill
    /// from history) and wakes it.
    pub(crate) fn hand_back(&self) {
        self.handed_back.store(true, Ordering::Release);
        self.wake();
    }

    /// Whether a subscription was handed back since the last call.
    pub(crate) fn take_handed_back(&self) -> bool {
        self.handed_back.swap(false, Ordering::AcqRel)
    }

    /// Ready once there is something for the connection's task to do
    /// (since the last time it was ready).
    pub(crate) fn poll_woken(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.woken.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A wake between the check and the registration found no waker.
        if self.woken.swap(false, Ordering::AcqRel) { Poll::Ready(()) } else { Poll::Pending }
    }

    /// Why the outlet stopped taking frames, if it did.
    pub(crate) fn fault(&self) -> Option<Fault> {
        self.lock().fault
    }

    /// Since when queued frames have waited without progress, if any wait.
    pub(crate) fn stalled_since(&self) -> Option<Instant> {
        self.lock().stalled_since
    }

    /// Writes the front of the queue, as far as the socket takes it now or
    /// once it is writable: ready after one write that made progress (so the
    /// caller can look around), or at once if nothing is queued. A write
    /// that did not happen leaves the queue as it was.
    pub(crate) fn poll_drain(&self, cx: &mut Context<'_>, wire: &mut Wire) -> Poll<io::Result<()>> {
        let Some(front) = self.lock().chunks.front().cloned() else { return Poll::Ready(Ok(())) };
        let written = match wire {
            Wire::Socket(socket) => loop {
                ready!(socket.poll_write_ready(cx))?;
                match socket.try_write(&front) {
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    written => break written?,
                }
            },
            Wire::Stream(stream) => {
                let written = ready!(Pin::new(&mut **stream).poll_write(cx, &front))?;
                // A stream of the edge's server does not buffer; another
                // may, and a frame must not wait in it.
                let _ = Pin::new(&mut **stream).poll_flush(cx)?;
                written
            }
        };
        let mut queue = self.lock();
        if written == 0 {
            queue.fault = Some(Fault::Broken);
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        queue.bytes -= written;
        if written == front.len() {
            queue.chunks.pop_front();
            queue.front_started = false;
        } else if let Some(chunk) = queue.chunks.front_mut() {
            *chunk = chunk.slice(written..);
            queue.front_started = true;
        }
        queue.stalled_since = (!queue.chunks.is_empty()).then(Instant::now);
        Poll::Ready(Ok(()))
    }

    /// [`Outlet::poll_drain`] as a future.
    pub(crate) async fn drain(&self, wire: &mut Wire) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_drain(cx, wire)).await
    }

    /// Whether frames wait in the queue.
    pub(crate) fn has_queued(&self) -> bool {
        !self.lock().chunks.is_empty()
    }

    /// Marks the connection gone: nothing more is taken.
    pub(crate) fn broken(&self) {
        self.lock().fault = Some(Fault::Broken);
    }
}

/// Where the connection's task writes the queue: the socket itself, or,
/// for a connection the edge's server did not accept, the upgraded stream.
pub(crate) enum Wire {
    Socket(Arc<TcpStream>),
    Stream(Box<dyn AsyncWrite + Send + Unpin>),
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Socket(_) => "Wire::Socket",
            Self::Stream(_) => "Wire::Stream",
        })
    }
}

/// WebSocket frames as a server sends them (RFC 6455, section 5: final,
/// unmasked), encoded once and shared.
pub(crate) mod frame {
    use bytes::{BufMut as _, Bytes, BytesMut};

    const TEXT: u8 = 0x1;
    const CLOSE: u8 = 0x8;
    const PING: u8 = 0x9;
    const PONG: u8 = 0xA;
    /// Control frames carry at most this much (section 5.5).
    const MAX_CONTROL_PAYLOAD: usize = 125;

    fn encode(opcode: u8, parts: &[&[u8]]) -> Bytes {
        let len: usize = parts.iter().map(|part| part.len()).sum();
        let mut out = BytesMut::with_capacity(len + 10);
        out.put_u8(0x80 | opcode);
        if len < 126 {
            out.put_u8(len as u8);
        } else if let Ok(len) = u16::try_from(len) {
            out.put_u8(126);
            out.put_u16(len);
        } else {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
        for part in parts {
            out.put_slice(part);
        }
        out.freeze()
    }

    pub(crate) fn text(payload: &str) -> Bytes {
        encode(TEXT, &[payload.as_bytes()])
    }

    pub(crate) fn ping() -> Bytes {
        Bytes::from_static(&[0x80 | PING, 0])
    }

    /// A pong echoing a ping's payload (at most 125 bytes, as the reader
    /// enforces for pings).
    pub(crate) fn pong(payload: &[u8]) -> Bytes {
        encode(PONG, &[&payload[..payload.len().min(MAX_CONTROL_PAYLOAD)]])
    }

    /// A close frame with `code` and as much of `reason` as fits, cut at a
    /// character boundary; `None` for one without a status.
    pub(crate) fn close(status: Option<(u16, &str)>) -> Bytes {
        let Some((code, reason)) = status else { return encode(CLOSE, &[]) };
        let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        encode(CLOSE, &[&code.to_be_bytes(), &reason.as_bytes()[..end]])
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;

    #[test]
    fn frames_carry_their_length_in_the_shortest_form() {
        assert_eq!(&frame::text("hi")[..], b"\x81\x02hi");
        let medium = "x".repeat(300);
        assert_eq!(&frame::text(&medium)[..4], &[0x81, 126, 1, 44]);
        let large = "y".repeat(70_000);
        let encoded = frame::text(&large);
        assert_eq!(&encoded[..10], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(encoded.len(), 70_010);
        assert_eq!(&frame::ping()[..], b"\x89\x00");
        assert_eq!(&frame::pong(b"abc")[..], b"\x8a\x03abc");
        assert_eq!(&frame::close(None)[..], b"\x88\x00");
        assert_eq!(&frame::close(Some((4008, "slow")))[..], b"\x88\x06\x0f\xa8slow");
        // A long reason is cut to fit a control frame, at a character.
        let cut = frame::close(Some((1011, &"é".repeat(100))));
        assert_eq!(cut[1], 124);
        assert!(std::str::from_utf8(&cut[4..]).is_ok());
    }

    async fn pair(send_buffer: usize) -> (Arc<TcpStream>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        socket2::SockRef::from(&server).set_send_buffer_size(send_buffer).expect("send buffer");
        socket2::SockRef::from(&client).set_recv_buffer_size(send_buffer).expect("recv buffer");
        server.writable().await.expect("writable");
        (Arc::new(server), client)
    }

    #[tokio::test]
    async fn a_reader_that_keeps_up_gets_every_frame_without_a_queue() {
        let (server, mut client) = pair(64 * 1024).await;
        let outlet = Outlet::new(Some(Arc::clone(&server)), 1024 * 1024);
        for n in 0..100 {
            assert_eq!(outlet.send(&frame::text(&format!("{n:03}"))), Sent::Accepted);
        }
        assert!(!outlet.has_queued(), "a socket with room needed a queue");
        let mut got = vec![0u8; 500];
        client.read_exact(&mut got).await.expect("read");
        let expected: Vec<u8> = (0..100).flat_map(|n| frame::text(&format!("{n:03}")).to_vec()).collect();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn a_full_socket_queues_in_order_and_the_queue_drains_when_the_client_reads() {
        let (server, mut client) = pair(4096).await;
        let outlet = Arc::new(Outlet::new(Some(Arc::clone(&server)), 4 * 1024 * 1024));
        let frames: Vec<Bytes> = (0..2_000).map(|n| frame::text(&format!("{n:0>500}"))).collect();
        for frame in &frames {
            assert_eq!(outlet.send(frame), Sent::Accepted);
        }
        assert!(outlet.has_queued(), "a 1 MB burst fit a small socket buffer");
        assert!(outlet.stalled_since().is_some());

        let expected: Vec<u8> = frames.iter().flat_map(|frame| frame.to_vec()).collect();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; expected.len()];
            client.read_exact(&mut got).await.expect("read");
            assert!(got == expected, "frames arrived out of order or torn");
        });
        let mut wire = Wire::Socket(server);
        while outlet.has_queued() {
            outlet.drain(&mut wire).await.expect("drain");
        }
        reader.await.expect("reader");
        assert_eq!(outlet.stalled_since(), None);
    }

    #[tokio::test]
    async fn past_the_bound_the_unsent_frames_go_and_the_close_frame_follows_the_started_one() {
        let (server, mut client) = pair(4096).await;
        let outlet = Outlet::new(Some(Arc::clone(&server)), 64 * 1024);
        let big = frame::text(&"z".repeat(10_000));
        let mut sent = 0;
        while outlet.fault().is_none() {
            assert_eq!(outlet.send(&big), Sent::Accepted);
            sent += 1;
            assert!(sent < 1_000, "never cut off");
        }
        let Some(Fault::Slow(waiting)) = outlet.fault() else { panic!("not slow: {:?}", outlet.fault()) };
        assert!(waiting > 64 * 1024, "{waiting}");
        assert_eq!(outlet.send(&big), Sent::Refused, "a slow consumer's outlet took more");

        outlet.finish(frame::close(Some((4008, "slow consumer"))));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.expect("read");
            got
        });
        let mut wire = Wire::Socket(Arc::clone(&server));
        while outlet.has_queued() {
            outlet.drain(&mut wire).await.expect("drain");
        }
        drop(wire);
        drop(outlet);
        drop(server);
        let got = reader.await.expect("reader");
        // Whole frames, then the close frame: none torn.
        let mut at = 0;
        while got[at] == 0x81 {
            assert_eq!(&got[at..at + 4], &big[..4]);
            at += big.len();
        }
        assert_eq!(&got[at..], &frame::close(Some((4008, "slow consumer")))[..]);
    }
}
