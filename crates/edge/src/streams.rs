//! Long-lived connections (WebSocket, SSE): the server's cap and a cap per
//! client address, paid for after the token check, as a slot the connection
//! holds until it ends.
//!
//! The server's cap keeps the process within its file descriptors; past it,
//! `503 too_many_connections` sends the client to another replica. The
//! per-address cap keeps one address from taking the server's cap for
//! itself (thousands of connections that never subscribe): past it,
//! `429 too_many_connections_from_address`. Behind a load balancer the
//! address is the client's own only with the PROXY protocol or a trusted
//! `X-Forwarded-For` ([`crate::limits`]); IPv6 addresses count per /64.
//!
//! The table of addresses holds only addresses with a connection open, so
//! it is bounded by the server's cap.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use metrics::{Counter, Gauge, counter, gauge};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{EdgeError, limits::ClientKey, metrics as names};

/// Live connections one client address may hold, by default: a venue's
/// viewers behind one NAT address fit (a few hundred), and twenty addresses
/// are needed to fill the server's default cap of 20,000.
pub const DEFAULT_PER_ADDRESS: usize = 1_000;

/// The caps on long-lived connections. Shared as `Arc<Streams>`.
#[derive(Debug)]
pub struct Streams {
    permits: Arc<Semaphore>,
    max: usize,
    /// `None`: no cap per address (rate limits off, for load tests).
    per_address: Option<usize>,
    held: Mutex<HashMap<ClientKey, usize>>,
    refused_server: Counter,
    refused_address: Counter,
    addresses: Gauge,
}

impl Streams {
    /// At most `max` connections, and `per_address` from one client address.
    pub fn new(max: usize, per_address: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
            per_address,
            held: Mutex::new(HashMap::new()),
            refused_server: counter!(names::STREAMS_REFUSED, "reason" => "server_cap"),
            refused_address: counter!(names::STREAMS_REFUSED, "reason" => "address_cap"),
            addresses: gauge!(names::STREAM_ADDRESSES),
        })
    }

    /// A slot for one connection of `client`, held until the slot drops.
    /// Refused with `429` when the address holds its share already, `503`
    /// when the server is full.
    pub fn open(self: &Arc<Self>, client: ClientKey) -> Result<StreamSlot, EdgeError> {
        if let Some(cap) = self.per_address {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            let count = held.entry(client).or_insert(0);
            if *count >= cap {
                self.refused_address.increment(1);
                return Err(EdgeError::TooManyConnectionsFromAddress(cap));
            }
            *count += 1;
            self.addresses.set(held.len() as f64);
        }
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => Ok(StreamSlot { streams: Arc::clone(self), client, _permit: permit }),
            Err(_) => {
                self.release(client);
                self.refused_server.increment(1);
                Err(EdgeError::TooManyConnections(self.max))
            }
        }
    }

    /// Gives one connection of `client` back to its address's count.
    fn release(&self, client: ClientKey) {
        if self.per_address.is_none() {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&client) {
            *count -= 1;
            if *count == 0 {
                held.remove(&client);
            }
        }
        self.addresses.set(held.len() as f64);
    }

    /// Connections `client` holds now (0 when the per-address cap is off).
    #[cfg(test)]
    fn held_by(&self, client: ClientKey) -> usize {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).get(&client).copied().unwrap_or(0)
    }
}

/// One open long-lived connection's share of the caps.
#[derive(Debug)]
pub struct StreamSlot {
    streams: Arc<Streams>,
    client: ClientKey,
    _permit: OwnedSemaphorePermit,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.streams.release(self.client);
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn client(ip: &str) -> ClientKey {
        ClientKey::from_ip(ip.parse::<IpAddr>().expect("ip"))
    }

    #[test]
    fn an_address_holds_its_share_and_no_more_and_a_close_gives_it_back() {
        let streams = Streams::new(10, Some(3));
        let (a, b) = (client("192.0.2.1"), client("192.0.2.2"));
        let mut held: Vec<_> = (0..3).map(|_| streams.open(a).expect("within the share")).collect();
        let refused = streams.open(a).expect_err("over the share");
        assert!(matches!(refused, EdgeError::TooManyConnectionsFromAddress(3)), "{refused:?}");
        assert_eq!(streams.held_by(a), 3);
        let other = streams.open(b).expect("another address has its own share");
        drop(held.pop());
        assert_eq!(streams.held_by(a), 2);
        let _again = streams.open(a).expect("a closed connection frees a slot");
        drop(other);
        assert_eq!(streams.held_by(b), 0);
        assert_eq!(streams.held.lock().expect("lock").len(), 1, "an address with nothing open is forgotten");
    }

    #[test]
    fn a_full_server_refuses_with_503_and_leaves_the_address_count_as_it_was() {
        let streams = Streams::new(2, Some(5));
        let (a, b) = (client("192.0.2.1"), client("2001:db8::1"));
        let _one = streams.open(a).expect("room");
        let _two = streams.open(b).expect("room");
        let refused = streams.open(a).expect_err("server full");
        assert!(matches!(refused, EdgeError::TooManyConnections(2)), "{refused:?}");
        assert_eq!(streams.held_by(a), 1);
    }

    #[test]
    fn ipv6_addresses_share_their_64_and_no_cap_means_only_the_servers() {
        let streams = Streams::new(10, Some(1));
        let _one = streams.open(client("2001:db8::1")).expect("room");
        assert!(streams.open(client("2001:db8::2")).is_err(), "the same /64");
        let open = Streams::new(3, None);
        let held: Vec<_> =
            (0..3).map(|_| open.open(client("192.0.2.1")).expect("no per-address cap")).collect();
        assert!(matches!(open.open(client("192.0.2.1")), Err(EdgeError::TooManyConnections(3))));
        assert_eq!(held.len(), 3);
    }
}
