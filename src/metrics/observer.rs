//! Counts what the presence core does, for `/metrics`. Called under the
//! core's channel locks: every update is an atomic add.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::ids::ConnId;
use crate::presence::{ChannelMessage, MemberChange, Origin, PresenceDelta, PresenceObserver};

/// Distinct protocol names counted separately; more than that (none in
/// practice: the names are the front ends' constants) share `other`.
const PROTOCOL_SLOTS: usize = 16;

/// The label of protocols beyond [`PROTOCOL_SLOTS`].
const OTHER_PROTOCOL: &str = "other";

/// The `change` label values of member events, in counter order.
pub const CHANGES: [&str; 3] = ["added", "updated", "removed"];

/// The `origin` label values of member events, in counter order.
pub const ORIGINS: [&str; 3] = ["local", "remote", "lease"];

#[derive(Debug, Default)]
struct ProtocolSlot {
    name: OnceLock<&'static str>,
    opened: AtomicU64,
    closed: AtomicU64,
}

/// Connection counts of one protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolCounts {
    /// The protocol's name, e.g. `hotsock`.
    pub protocol: &'static str,
    /// Connections opened since start.
    pub opened: u64,
    /// Connections closed since start.
    pub closed: u64,
}

impl ProtocolCounts {
    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.opened.saturating_sub(self.closed)
    }
}

/// The observer's numbers at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Per protocol, the compiled-in front ends first.
    pub protocols: Vec<ProtocolCounts>,
    /// Member events by [`CHANGES`] then [`ORIGINS`].
    pub member_events: [[u64; 3]; 3],
    /// Channel messages published on this node.
    pub published: u64,
    /// Channels that got their first subscriber or member.
    pub occupied: u64,
    /// Channels that lost their last subscriber and member.
    pub vacated: u64,
}

/// The presence observer behind `/metrics`.
#[derive(Debug)]
pub struct MetricsObserver {
    protocols: [ProtocolSlot; PROTOCOL_SLOTS],
    other: ProtocolSlot,
    member_events: [[AtomicU64; 3]; 3],
    published: AtomicU64,
    occupied: AtomicU64,
    vacated: AtomicU64,
    /// When the server started (Unix seconds).
    started: f64,
    /// The histograms and labelled counters fed outside the core.
    live: super::Live,
}

impl Default for MetricsObserver {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsObserver {
    /// Counters at zero, with a series for every compiled-in front end.
    pub fn new() -> Self {
        let metrics = MetricsObserver {
            protocols: Default::default(),
            other: ProtocolSlot::default(),
            member_events: Default::default(),
            published: AtomicU64::new(0),
            occupied: AtomicU64::new(0),
            vacated: AtomicU64::new(0),
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            live: super::Live::new(),
        };
        // Known front ends report 0 before their first client, so a
        // dashboard or alert sees the series from the start.
        for front_end in crate::frontends::COMPILED {
            metrics.slot(front_end.protocol);
        }
        metrics
    }

    /// The observer, shared, ready for `Presence::with_observers`.
    pub fn shared() -> Arc<Self> {
        Arc::new(Self::new())
    }

    /// When the server started, in Unix seconds.
    pub fn started(&self) -> f64 {
        self.started
    }

    /// The live metrics (histograms, labelled counters).
    pub fn live(&self) -> &super::Live {
        &self.live
    }

    /// The slot of `protocol`, claiming a free one on first use.
    fn slot(&self, protocol: &'static str) -> &ProtocolSlot {
        for slot in &self.protocols {
            // Another thread may claim the same free slot for another
            // name first; then the scan goes on.
            let name = slot.name.get_or_init(|| protocol);
            if *name == protocol {
                return slot;
            }
        }
        &self.other
    }

    /// The current numbers. Closes are read before opens, so a connection
    /// closing during the read never makes `open` negative.
    pub fn snapshot(&self) -> Snapshot {
        let read = |slot: &ProtocolSlot, protocol: &'static str| {
            let closed = slot.closed.load(Ordering::SeqCst);
            let opened = slot.opened.load(Ordering::SeqCst);
            ProtocolCounts {
                protocol,
                opened,
                closed,
            }
        };
        let mut protocols: Vec<ProtocolCounts> = self
            .protocols
            .iter()
            .filter_map(|slot| slot.name.get().map(|name| read(slot, name)))
            .collect();
        let other = read(&self.other, OTHER_PROTOCOL);
        if other.opened > 0 {
            protocols.push(other);
        }
        let member_events = std::array::from_fn(|c| {
            std::array::from_fn(|o| self.member_events[c][o].load(Ordering::Relaxed))
        });
        Snapshot {
            protocols,
            member_events,
            published: self.published.load(Ordering::Relaxed),
            occupied: self.occupied.load(Ordering::Relaxed),
            vacated: self.vacated.load(Ordering::Relaxed),
        }
    }
}

fn origin_index(origin: &Origin) -> usize {
    match origin {
        Origin::Local(_) => 0,
        Origin::Remote { .. } => 1,
        Origin::Lease(_) => 2,
    }
}

impl PresenceObserver for MetricsObserver {
    fn published(&self, _msg: &ChannelMessage) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    fn fanned_out(&self, recipients: usize) {
        self.live.fanout(recipients);
    }

    fn connection_lost(&self, silent_ms: u64) {
        self.live.leave("node_lost", silent_ms as f64 / 1000.0);
    }

    fn connected(&self, _conn: ConnId, _user_id: Option<&Arc<str>>, protocol: &'static str) {
        self.slot(protocol).opened.fetch_add(1, Ordering::SeqCst);
    }

    fn disconnected(
        &self,
        _conn: ConnId,
        _user_id: Option<&Arc<str>>,
        protocol: &'static str,
        reason: Option<&crate::outbox::CloseReason>,
    ) {
        self.slot(protocol).closed.fetch_add(1, Ordering::SeqCst);
        // Its members were removed just before this call: the time since
        // the server decided the close. A client that went away decided
        // nothing here (0: its removal follows the read of its close at once).
        let seconds = reason.map_or(0.0, |r| r.since_decided().as_secs_f64());
        self.live
            .leave(crate::services::webhooks::close_kind(reason), seconds);
    }

    fn channel_batch(
        &self,
        _channel: &str,
        occupied: bool,
        vacated: bool,
        deltas: &[PresenceDelta],
    ) {
        if occupied {
            self.occupied.fetch_add(1, Ordering::Relaxed);
        }
        if vacated {
            self.vacated.fetch_add(1, Ordering::Relaxed);
        }
        for delta in deltas {
            let change = match delta.change {
                MemberChange::Added => 0,
                MemberChange::Updated => 1,
                MemberChange::Removed => 2,
                MemberChange::Unchanged => continue,
            };
            self.member_events[change][origin_index(&delta.origin)].fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_get_their_own_slots_then_share_other() {
        let m = MetricsObserver::new();
        let names: Vec<&'static str> = (0..PROTOCOL_SLOTS + 2)
            .map(|i| &*Box::leak(format!("p{i}").into_boxed_str()))
            .collect();
        for name in &names {
            m.connected(ConnId::next(), None, name);
        }
        m.disconnected(ConnId::next(), None, names[0], None);
        let snap = m.snapshot();
        assert_eq!(snap.protocols.len(), PROTOCOL_SLOTS + 1);
        let other = snap.protocols.last().map(|p| (p.protocol, p.opened));
        // The compiled-in front ends took some slots, so more than two overflow.
        assert_eq!(other.map(|o| o.0), Some(OTHER_PROTOCOL));
        let total: u64 = snap.protocols.iter().map(|p| p.opened).sum();
        assert_eq!(total, names.len() as u64);
        let p0 = snap.protocols.iter().find(|p| p.protocol == "p0");
        assert_eq!(p0.map(ProtocolCounts::open), Some(0));
    }
}
