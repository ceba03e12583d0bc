//! Acknowledgments (spec §4.10), in both directions.
//!
//! Client to server: a frame with a top-level `id` is acknowledged with
//!
//! ```text
//! {"jsonrpc":"2.0","method":"sgc@presence@acknowledgment","id":"<same id>"}
//! ```
//!
//! before it is processed. Unlike sgc, a re-sent id is acknowledged again
//! but not processed twice: [`RecentIds`] remembers the last ids.
//!
//! Server to client (when the connection asks for it): every frame the
//! server sends gets a fresh top-level `id` and is kept in an
//! [`AckTracker`] until the client acknowledges it. A frame not
//! acknowledged within the timeout is re-sent unchanged (same text, same
//! id); after the configured number of re-sends the connection is closed
//! with code [`CLOSE_ACK_TIMEOUT`]. sgc retries forever; we do not.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::outbox::Utf8Bytes;
use indexmap::IndexMap;
use rand::Rng;
use tokio::time::Instant;

use crate::outbox::CloseReason;
use crate::presence::OutboxHandle;

/// Close code when a client does not acknowledge frames (ours, in the
/// application range 4000-4999).
pub const CLOSE_ACK_TIMEOUT: u16 = 4008;

/// Incoming ids remembered for de-duplication.
pub const RECENT_IDS: usize = 256;
/// How long an incoming id is remembered.
pub const RECENT_IDS_TTL: Duration = Duration::from_secs(600);

/// A new ack id: 32 upper-case hex digits, like sgc's `NewGuid`.
pub fn new_id() -> String {
    format!("{:032X}", rand::rng().random::<u128>())
}

/// The ids of the last frames a client sent, to process each id once.
#[derive(Debug, Default)]
pub struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<(String, Instant)>,
}

impl RecentIds {
    /// Records `id`; returns false if it was already seen (a re-send).
    pub fn first_time(&mut self, id: &str, now: Instant) -> bool {
        while let Some((old, at)) = self.order.front() {
            if self.order.len() >= RECENT_IDS || now.saturating_duration_since(*at) > RECENT_IDS_TTL
            {
                self.set.remove(old);
                self.order.pop_front();
            } else {
                break;
            }
        }
        if self.set.contains(id) {
            return false;
        }
        self.set.insert(id.to_string());
        self.order.push_back((id.to_string(), now));
        true
    }
}

#[derive(Debug)]
struct Pending {
    frame: Utf8Bytes,
    sent_at: Instant,
    resends: u32,
}

#[derive(Debug, Default)]
struct State {
    /// Oldest send first (a re-sent frame moves to the back).
    pending: IndexMap<String, Pending>,
    bytes: usize,
}

/// What [`AckTracker::due`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    /// Frames to send again (possibly none).
    Resend(Vec<Utf8Bytes>),
    /// A frame was re-sent `max_resends` times without an ack.
    GaveUp {
        /// Frames still unacknowledged.
        unacked: usize,
    },
}

/// The frames sent to one connection and not yet acknowledged.
#[derive(Debug)]
pub struct AckTracker {
    state: Mutex<State>,
    /// Unacknowledged bytes allowed before the connection is closed.
    max_bytes: usize,
    /// Set once the connection exists, to close it on overflow.
    outbox: OnceLock<OutboxHandle>,
}

impl AckTracker {
    /// A tracker that closes the connection when more than `max_bytes`
    /// are waiting for acknowledgment.
    pub fn new(max_bytes: usize) -> Self {
        AckTracker {
            state: Mutex::new(State::default()),
            max_bytes,
            outbox: OnceLock::new(),
        }
    }

    /// Attaches the connection's outbox (once it exists).
    pub fn attach(&self, outbox: OutboxHandle) {
        let _ = self.outbox.set(outbox);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a frame sent with ack id `id`.
    pub fn track(&self, id: String, frame: Utf8Bytes, now: Instant) {
        let over = {
            let mut st = self.state();
            st.bytes += frame.len();
            st.pending.insert(
                id,
                Pending {
                    frame,
                    sent_at: now,
                    resends: 0,
                },
            );
            st.bytes > self.max_bytes
        };
        if over && let Some(outbox) = self.outbox.get() {
            outbox.close(CloseReason::new(
                CLOSE_ACK_TIMEOUT,
                format!(
                    "more than {} bytes of frames not acknowledged: send sgc@presence@acknowledgment for each id",
                    self.max_bytes
                ),
            ));
        }
    }

    /// An acknowledgment for `id` arrived; returns false for an unknown id.
    pub fn ack(&self, id: &str) -> bool {
        let mut st = self.state();
        match st.pending.shift_remove(id) {
            Some(p) => {
                st.bytes -= p.frame.len();
                true
            }
            None => false,
        }
    }

    /// Frames waiting for acknowledgment.
    pub fn pending(&self) -> usize {
        self.state().pending.len()
    }

    /// When the oldest unacknowledged frame is due for a re-send.
    pub fn next_due(&self, timeout: Duration) -> Option<Instant> {
        self.state()
            .pending
            .first()
            .map(|(_, p)| p.sent_at + timeout)
    }

    /// Frames sent at least `timeout` ago are due: returns them for a
    /// re-send (and restarts their clock), or [`Due::GaveUp`] if one of
    /// them was already re-sent `max_resends` times.
    pub fn due(&self, now: Instant, timeout: Duration, max_resends: u32) -> Due {
        let mut st = self.state();
        let mut out = Vec::new();
        // Re-sent frames move to the back with a fresh clock, so the loop
        // ends at the first frame that is not due (the timeout is > 0).
        while let Some((_, first)) = st.pending.first() {
            if first.sent_at + timeout > now {
                break;
            }
            if first.resends >= max_resends {
                return Due::GaveUp {
                    unacked: st.pending.len(),
                };
            }
            let Some((id, mut p)) = st.pending.shift_remove_index(0) else {
                break;
            };
            p.resends += 1;
            p.sent_at = now;
            out.push(p.frame.clone());
            st.pending.insert(id, p);
        }
        Due::Resend(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_sgc_guids() {
        let id = new_id();
        assert_eq!(id.len(), 32);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        );
        assert_ne!(new_id(), id);
    }

    #[test]
    fn recent_ids_detect_resends_within_bounds() {
        let now = Instant::now();
        let mut recent = RecentIds::default();
        assert!(recent.first_time("a", now));
        assert!(!recent.first_time("a", now));
        assert!(recent.first_time("b", now));
        // Forgotten after the TTL.
        assert!(recent.first_time("a", now + RECENT_IDS_TTL + Duration::from_secs(1)));
        // And after RECENT_IDS newer ids.
        let mut recent = RecentIds::default();
        recent.first_time("old", now);
        for i in 0..RECENT_IDS {
            recent.first_time(&i.to_string(), now);
        }
        assert!(recent.first_time("old", now));
        assert!(recent.set.len() <= RECENT_IDS);
    }

    #[test]
    fn unacked_frames_are_resent_then_given_up() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(10);
        let tracker = AckTracker::new(1 << 20);
        tracker.track("A".into(), Utf8Bytes::from_static("a"), t0);
        tracker.track(
            "B".into(),
            Utf8Bytes::from_static("b"),
            t0 + Duration::from_secs(5),
        );
        assert_eq!(tracker.next_due(timeout), Some(t0 + timeout));
        assert_eq!(
            tracker.due(t0 + Duration::from_secs(9), timeout, 2),
            Due::Resend(vec![])
        );
        let t1 = t0 + timeout;
        assert_eq!(
            tracker.due(t1, timeout, 2),
            Due::Resend(vec![Utf8Bytes::from_static("a")])
        );
        // B is now the oldest.
        assert_eq!(
            tracker.next_due(timeout),
            Some(t0 + Duration::from_secs(15))
        );
        assert!(tracker.ack("B"));
        assert!(!tracker.ack("B"));
        let t2 = t1 + timeout;
        assert_eq!(
            tracker.due(t2, timeout, 2),
            Due::Resend(vec![Utf8Bytes::from_static("a")])
        );
        assert_eq!(
            tracker.due(t2 + timeout, timeout, 2),
            Due::GaveUp { unacked: 1 }
        );
        assert!(tracker.ack("A"));
        assert_eq!(tracker.pending(), 0);
        assert_eq!(tracker.next_due(timeout), None);
        assert_eq!(tracker.state().bytes, 0);
    }
}
