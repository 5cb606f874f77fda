//! The auction domain: lots, bids, and the leading bid. Pure: no I/O, no
//! engine types beyond the [`livefeed::Domain`] impl at the end.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One event on a lot, as sellers and bidders publish it:
/// `{"lot":"l1","seq":2,"kind":"bid","bidder":"ann","amount":120}`. A field
/// the kind does not have (a typo: `"amuont"`) is refused, not ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "WireEvent")]
pub struct LotEvent {
    pub lot: String,
    pub seq: u64,
    #[serde(flatten)]
    pub action: Action,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Puts a lot up for auction. Its first event.
    Open {
        item: String,
        reserve: u64,
    },
    Bid {
        bidder: String,
        amount: u64,
    },
    /// Ends the auction; the leading bid, if at or above the reserve, wins.
    Close,
}

/// [`LotEvent`] as it arrives: one flat object per kind, so unknown fields
/// can be refused (serde cannot refuse them across a `flatten`).
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum WireEvent {
    Open { lot: String, seq: u64, item: String, reserve: u64 },
    Bid { lot: String, seq: u64, bidder: String, amount: u64 },
    Close { lot: String, seq: u64 },
}

impl TryFrom<WireEvent> for LotEvent {
    type Error = String;

    fn try_from(wire: WireEvent) -> Result<Self, String> {
        let (lot, seq, action) = match wire {
            WireEvent::Open { lot, seq, item, reserve } => (lot, seq, Action::Open { item, reserve }),
            WireEvent::Bid { lot, seq, bidder, amount } => (lot, seq, Action::Bid { bidder, amount }),
            WireEvent::Close { lot, seq } => (lot, seq, Action::Close),
        };
        if seq == 0 {
            return Err("seq starts at 1".to_owned());
        }
        <Auction as livefeed::Domain>::check_topic(&lot)?;
        Ok(Self { lot, seq, action })
    }
}

/// A lot as readers and subscribers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lot {
    pub id: String,
    pub item: String,
    pub reserve: u64,
    pub leading: Option<Leading>,
    pub bids: u64,
    pub closed: bool,
    /// Set when a closed lot's leading bid met the reserve.
    pub sold: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leading {
    pub bidder: String,
    pub amount: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BidError {
    #[error("lot {0} is not open: its first event must be `open`")]
    NotOpen(String),
    #[error("lot {0} is already open")]
    AlreadyOpen(String),
    #[error("lot {0} is closed")]
    Closed(String),
    #[error("a bid of {amount} does not beat the leading bid of {leading}")]
    TooLow { amount: u64, leading: u64 },
}

impl BidError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotOpen(_) => "lot_not_open",
            Self::AlreadyOpen(_) => "lot_already_open",
            Self::Closed(_) => "lot_closed",
            Self::TooLow { .. } => "bid_too_low",
        }
    }
}

impl Lot {
    pub fn open(event: &LotEvent) -> Result<Self, BidError> {
        let Action::Open { item, reserve } = &event.action else {
            return Err(BidError::NotOpen(event.lot.clone()));
        };
        Ok(Self {
            id: event.lot.clone(),
            item: item.clone(),
            reserve: *reserve,
            leading: None,
            bids: 0,
            closed: false,
            sold: false,
        })
    }

    pub fn apply(&self, event: &LotEvent) -> Result<Self, BidError> {
        if self.closed {
            return Err(BidError::Closed(self.id.clone()));
        }
        let mut next = self.clone();
        match &event.action {
            Action::Open { .. } => return Err(BidError::AlreadyOpen(self.id.clone())),
            Action::Bid { bidder, amount } => {
                let leading = self.leading.as_ref().map_or(0, |l| l.amount);
                if *amount <= leading {
                    return Err(BidError::TooLow { amount: *amount, leading });
                }
                next.leading = Some(Leading { bidder: bidder.clone(), amount: *amount });
                next.bids += 1;
            }
            Action::Close => {
                next.closed = true;
                next.sold = self.leading.as_ref().is_some_and(|l| l.amount >= self.reserve);
            }
        }
        Ok(next)
    }
}

/// The auction on the live-feed engine: a topic is a lot.
#[derive(Debug, Clone, Copy)]
pub struct Auction;

impl livefeed::Domain for Auction {
    type Event = LotEvent;
    type State = Lot;
    type Rejection = BidError;

    const TOPIC: &'static str = "lot";
    const UNKNOWN_TOPIC: &'static str = "unknown_lot";

    fn topic(event: &LotEvent) -> &str {
        &event.lot
    }

    fn seq(event: &LotEvent) -> u64 {
        event.seq
    }

    fn start(event: &LotEvent) -> Result<Lot, BidError> {
        Lot::open(event)
    }

    fn apply(state: &Lot, event: &LotEvent) -> Result<Lot, BidError> {
        state.apply(event)
    }

    fn event_json(event: &LotEvent) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&event.action)
    }

    fn state_json(state: &Lot) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(state)
    }

    fn state_from_json(json: &[u8]) -> anyhow::Result<Lot> {
        Ok(serde_json::from_slice(json)?)
    }

    /// The durable stream gets the event as published: JSON, for whatever
    /// settles the sales later.
    fn stream_entry(event: &LotEvent, _before: Option<&Lot>, _traceparent: &str) -> Bytes {
        // Strings and numbers only: serialising cannot fail.
        Bytes::from(serde_json::to_vec(event).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_parses_from_its_flat_shape() {
        let event: LotEvent =
            serde_json::from_str(r#"{"lot":"l1","seq":2,"kind":"bid","bidder":"ann","amount":120}"#)
                .expect("valid");
        assert_eq!((event.lot.as_str(), event.seq), ("l1", 2));
        assert!(matches!(event.action, Action::Bid { amount: 120, .. }));
    }

    #[test]
    fn a_misspelt_field_a_bad_lot_id_and_seq_zero_are_refused() {
        for (body, says) in [
            (r#"{"lot":"l1","seq":2,"kind":"bid","bidder":"ann","amount":1,"gat":1}"#, "unknown field `gat`"),
            (r#"{"lot":"L 1","seq":2,"kind":"close"}"#, "lot id must be"),
            (r#"{"lot":"l1","seq":0,"kind":"close"}"#, "seq starts at 1"),
            (r#"{"lot":"l1","seq":1,"kind":"shout"}"#, "unknown variant `shout`"),
        ] {
            let err = serde_json::from_str::<LotEvent>(body).expect_err(body).to_string();
            assert!(err.contains(says), "{body}: {err}");
        }
    }
}
