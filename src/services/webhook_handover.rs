//! Which node sends webhooks, and what a standby node holds for a handover.
//!
//! In a cluster every node sees every presence change (its replicas feed
//! the same member lists), so one node is enough to report them, and only
//! one may, or each event would reach receivers once per node. The sender
//! is the oldest live node (smallest epoch) that is connected to the bus and
//! synced; the cluster engine decides and tells the services
//! ([`crate::cluster::RemoteHandler::event_sender_changed`]).
//!
//! A node that is not the sender holds the events it sees for a while. When
//! it takes over (the sender died, left, or the bus came back), it sends the
//! held events from the last moment it knew someone was sending, less a
//! margin: a sender that died may not have sent its last batch. So around a
//! handover, delivery is at least once (a replayed event has a new id);
//! otherwise each event is sent once.

use std::collections::VecDeque;
use std::time::Duration;

use super::webhooks::WebhookEvent;

/// Events a standby node holds at most.
const MAX_HELD: usize = 100_000;

/// The sending role and the held events.
#[derive(Debug)]
pub struct Handover {
    sending: bool,
    held: VecDeque<WebhookEvent>,
    /// How long held events are kept.
    retain_ms: u64,
    /// Held events dropped because there were too many.
    pub overflowed: u64,
}

impl Handover {
    /// A standalone node: sends from the start.
    pub fn sending() -> Self {
        Handover {
            sending: true,
            held: VecDeque::new(),
            retain_ms: 0,
            overflowed: 0,
        }
    }

    /// A cluster node: holds events until told to send; keeps them
    /// `retain` long (longer than any expected outage to replay).
    pub fn standby(retain: Duration) -> Self {
        Handover {
            sending: false,
            held: VecDeque::new(),
            retain_ms: retain.as_millis() as u64,
            overflowed: 0,
        }
    }

    /// Whether this node sends.
    pub fn is_sending(&self) -> bool {
        self.sending
    }

    /// The event back if it is to be sent now; otherwise it is held.
    pub fn admit(&mut self, event: WebhookEvent) -> Option<WebhookEvent> {
        if self.sending {
            return Some(event);
        }
        let oldest_kept = event.time_ms.saturating_sub(self.retain_ms);
        while self.held.front().is_some_and(|e| e.time_ms < oldest_kept) {
            self.held.pop_front();
        }
        if self.held.len() >= MAX_HELD {
            self.held.pop_front();
            self.overflowed += 1;
        }
        self.held.push_back(event);
        None
    }

    /// Starts or stops sending. On starting, returns the held events seen
    /// at or after `replay_from_ms` (Unix ms), oldest first, to send now.
    pub fn set_sending(&mut self, sending: bool, replay_from_ms: u64) -> Vec<WebhookEvent> {
        let was = std::mem::replace(&mut self.sending, sending);
        let held = std::mem::take(&mut self.held);
        if sending && !was {
            held.into_iter()
                .filter(|e| e.time_ms >= replay_from_ms)
                .collect()
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(time_ms: u64) -> WebhookEvent {
        let mut e = WebhookEvent::new("member_added", None, None);
        e.time_ms = time_ms;
        e
    }

    fn times(events: &[WebhookEvent]) -> Vec<u64> {
        events.iter().map(|e| e.time_ms).collect()
    }

    #[test]
    fn a_standalone_node_sends_everything_at_once() {
        let mut h = Handover::sending();
        assert!(h.admit(event(1)).is_some());
    }

    #[test]
    fn a_standby_node_holds_and_replays_from_the_given_time() {
        let mut h = Handover::standby(Duration::from_secs(60));
        for t in [1_000, 2_000, 3_000] {
            assert!(h.admit(event(t)).is_none());
        }
        assert_eq!(times(&h.set_sending(true, 2_000)), [2_000, 3_000]);
        assert!(h.admit(event(4_000)).is_some(), "now it sends");
        assert!(
            h.set_sending(true, 0).is_empty(),
            "still sending: no replay"
        );
    }

    #[test]
    fn stopping_drops_what_was_held_and_holds_again() {
        let mut h = Handover::standby(Duration::from_secs(60));
        h.admit(event(1_000));
        h.set_sending(true, 0);
        assert!(h.set_sending(false, 0).is_empty());
        assert!(h.admit(event(2_000)).is_none());
        assert_eq!(times(&h.set_sending(true, 0)), [2_000]);
    }

    #[test]
    fn held_events_expire_after_the_retention() {
        let mut h = Handover::standby(Duration::from_secs(10));
        h.admit(event(1_000));
        h.admit(event(5_000));
        h.admit(event(12_000));
        assert_eq!(times(&h.set_sending(true, 0)), [5_000, 12_000]);
    }
}
