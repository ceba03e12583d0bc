//! Messages waiting for the bus.
//!
//! Presence changes need no queue: when frames are lost, the other nodes
//! notice the seq gap and the sender's full state repairs their replicas.
//! Messages (`msg`, `direct`, `privacy` ops) are delivered once and would
//! be lost instead, so the engine keeps them here while they cannot go
//! out: while the bus link is down, when the transport's queue is full,
//! and when the transport reports that a frame holding them was not
//! published (the link broke with it queued). They go out again, in
//! publish order, once the link is back and the other nodes have resynced
//! (so they are subscribed again and receive them).
//!
//! Every message gets a number when the engine first sees it, so a frame
//! that fails after newer messages were queued is put back in its place.
//! The queue is bounded by count and bytes; beyond that the oldest
//! messages are dropped (and counted).
//!
//! Plain data, no I/O: the engine sends, this module keeps the books.

use std::collections::VecDeque;
use std::ops::Range;

use tokio::sync::oneshot;

use super::state::Millis;
use super::wire::Op;

/// Messages kept at most while they cannot be published.
pub const MAX_MESSAGES: usize = 10_000;
/// Bytes (JSON) of messages kept at most while they cannot be published.
pub const MAX_BYTES: usize = 16 * 1024 * 1024;

/// A message and its place in this node's publish order.
#[derive(Debug)]
struct Waiting {
    n: u64,
    op: Op,
    bytes: usize,
}

/// A published frame's messages, until the transport says it went out.
#[derive(Debug)]
struct InFlight {
    done: oneshot::Receiver<bool>,
    msgs: Vec<(u64, Op)>,
}

/// The messages this node could not publish yet.
#[derive(Debug)]
pub struct Backlog {
    max_messages: usize,
    max_bytes: usize,
    /// Sorted by number.
    queue: VecDeque<Waiting>,
    bytes: usize,
    in_flight: VecDeque<InFlight>,
    next: u64,
    /// Messages dropped because the queue was full (this run).
    pub dropped: u64,
    /// Set once the queue overflowed, until it is empty again (one warning
    /// per episode).
    overflowed: bool,
    /// After a reconnect: wait for the other nodes' states until then.
    hold_until: Option<Millis>,
}

/// The JSON size of an op, without building the JSON.
fn json_size(op: &Op) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Cannot fail: every map key is a string and Count never fails.
    let _ = serde_json::to_writer(&mut count, op);
    count.0
}

impl Default for Backlog {
    fn default() -> Self {
        Backlog::new(MAX_MESSAGES, MAX_BYTES)
    }
}

impl Backlog {
    /// An empty backlog holding at most `max_messages` messages and
    /// `max_bytes` bytes.
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        Backlog {
            max_messages,
            max_bytes,
            queue: VecDeque::new(),
            bytes: 0,
            in_flight: VecDeque::new(),
            next: 0,
            dropped: 0,
            overflowed: false,
            hold_until: None,
        }
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when no message waits: new ones may be published directly.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Numbers for the next `count` messages, in publish order.
    pub fn numbers(&mut self, count: usize) -> Range<u64> {
        let first = self.next;
        self.next += count as u64;
        first..self.next
    }

    /// Keeps message `n`, in its place. Returns true the first time the
    /// queue overflows since it was last empty (the caller warns once).
    pub fn push(&mut self, n: u64, op: Op) -> bool {
        let bytes = json_size(&op);
        let at = self.queue.partition_point(|w| w.n < n);
        self.queue.insert(at, Waiting { n, op, bytes });
        self.bytes += bytes;
        let mut first_overflow = false;
        while self.queue.len() > self.max_messages || self.bytes > self.max_bytes {
            let Some(old) = self.queue.pop_front() else {
                break;
            };
            self.bytes -= old.bytes;
            self.dropped += 1;
            first_overflow |= !self.overflowed;
            self.overflowed = true;
        }
        first_overflow
    }

    /// Takes up to `max` of the oldest messages to publish.
    pub fn take(&mut self, max: usize) -> Vec<(u64, Op)> {
        let count = max.min(self.queue.len());
        let taken: Vec<(u64, Op)> = self
            .queue
            .drain(..count)
            .map(|w| {
                self.bytes -= w.bytes;
                (w.n, w.op)
            })
            .collect();
        if self.queue.is_empty() {
            self.overflowed = false;
            self.hold_until = None;
        }
        taken
    }

    /// Remembers messages handed to the transport until `done` says
    /// whether they were published.
    pub fn track(&mut self, done: oneshot::Receiver<bool>, msgs: Vec<(u64, Op)>) {
        self.in_flight.push_back(InFlight { done, msgs });
    }

    /// Frames handed to the transport whose outcome is not known yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Forgets what was published and queues again what was not (the
    /// transport reports in order). Returns (messages queued again, true
    /// if the queue overflowed for the first time).
    pub fn settle(&mut self) -> (usize, bool) {
        let mut requeued = 0;
        let mut first_overflow = false;
        while let Some(front) = self.in_flight.front_mut() {
            let published = match front.done.try_recv() {
                Ok(published) => published,
                Err(oneshot::error::TryRecvError::Empty) => break,
                // The transport is gone without saying: not published.
                Err(oneshot::error::TryRecvError::Closed) => false,
            };
            let Some(frame) = self.in_flight.pop_front() else {
                break;
            };
            if !published {
                for (n, op) in frame.msgs {
                    requeued += 1;
                    first_overflow |= self.push(n, op);
                }
            }
        }
        (requeued, first_overflow)
    }

    /// After a reconnect, waits for the other nodes to resync (see
    /// [`Backlog::may_flush`]) but not past `until`.
    pub fn hold(&mut self, until: Millis) {
        if !self.queue.is_empty() {
            self.hold_until = Some(until);
        }
    }

    /// Stops waiting for the other nodes (this node is leaving).
    pub fn release(&mut self) {
        self.hold_until = None;
    }

    /// Whether the waiting messages may go out now (the link being up):
    /// not while holding after a reconnect, unless every other node has
    /// resynced (`all_synced`) or the hold expired.
    pub fn may_flush(&mut self, now: Millis, all_synced: bool) -> bool {
        if self.queue.is_empty() {
            return false;
        }
        match self.hold_until {
            Some(until) if !all_synced && now < until => false,
            _ => {
                self.hold_until = None;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: u64) -> Op {
        Op::Privacy {
            uid: format!("u{i}"),
            visible: None,
        }
    }

    fn uids(taken: &[(u64, Op)]) -> Vec<String> {
        taken
            .iter()
            .map(|(_, op)| match op {
                Op::Privacy { uid, .. } => uid.clone(),
                _ => String::new(),
            })
            .collect()
    }

    #[test]
    fn messages_come_out_in_publish_order() {
        let mut b = Backlog::default();
        for n in b.numbers(3) {
            assert!(!b.push(n, msg(n)));
        }
        assert_eq!(b.len(), 3);
        assert_eq!(uids(&b.take(2)), ["u0", "u1"]);
        assert_eq!(uids(&b.take(10)), ["u2"]);
        assert!(b.is_empty());
    }

    #[test]
    fn the_oldest_are_dropped_beyond_the_count_or_the_bytes() {
        let mut b = Backlog::new(3, usize::MAX);
        let warned: Vec<bool> = b.numbers(5).map(|n| b.push(n, msg(n))).collect();
        assert_eq!(warned, [false, false, false, true, false], "one warning");
        assert_eq!(b.dropped, 2);
        assert_eq!(uids(&b.take(10)), ["u2", "u3", "u4"]);
        // Empty again: the next overflow warns again.
        let warned: Vec<bool> = b.numbers(4).map(|n| b.push(n, msg(n))).collect();
        assert_eq!(warned, [false, false, false, true]);

        let size = json_size(&msg(0));
        let mut b = Backlog::new(100, 2 * size);
        for n in b.numbers(3) {
            b.push(n, msg(n));
        }
        assert_eq!(b.dropped, 1);
        assert_eq!(uids(&b.take(10)), ["u1", "u2"]);
    }

    #[test]
    fn unpublished_frames_go_back_in_their_place() {
        let mut b = Backlog::default();
        // Two frames in flight: m0 and m1.
        let (tx0, rx0) = oneshot::channel();
        let (tx1, rx1) = oneshot::channel();
        let mut numbers = b.numbers(2);
        let n0 = numbers.next().unwrap();
        let n1 = numbers.next().unwrap();
        b.track(rx0, vec![(n0, msg(n0))]);
        b.track(rx1, vec![(n1, msg(n1))]);
        assert_eq!(b.settle(), (0, false), "nothing known yet");
        // m0 fails; m2 comes and waits behind it.
        tx0.send(false).unwrap();
        assert_eq!(b.settle(), (1, false));
        let n2 = b.numbers(1).start;
        b.push(n2, msg(n2));
        // m1 fails too: it goes between m0 and m2.
        tx1.send(false).unwrap();
        assert_eq!(b.settle(), (1, false));
        assert_eq!(b.in_flight(), 0);
        assert_eq!(uids(&b.take(10)), ["u0", "u1", "u2"]);
        // Published frames are forgotten; a vanished transport counts as
        // not published.
        let (tx, rx) = oneshot::channel();
        b.track(rx, vec![(9, msg(9))]);
        tx.send(true).unwrap();
        let (tx, rx) = oneshot::channel::<bool>();
        b.track(rx, vec![(10, msg(10))]);
        drop(tx);
        assert_eq!(b.settle(), (1, false));
        assert_eq!(uids(&b.take(10)), ["u10"]);
    }

    #[test]
    fn after_a_reconnect_the_queue_waits_for_the_others_or_the_deadline() {
        let mut b = Backlog::default();
        b.hold(1000);
        assert!(!b.may_flush(0, false), "nothing to send");
        let n = b.numbers(1).start;
        b.push(n, msg(n));
        assert!(b.may_flush(0, false), "no hold set while it was empty");
        b.hold(1000);
        assert!(!b.may_flush(500, false), "others not resynced yet");
        assert!(b.may_flush(500, true), "everyone resynced");
        assert!(b.may_flush(501, false), "the hold is over once released");
        b.hold(1000);
        assert!(b.may_flush(1000, false), "deadline");
        b.hold(2000);
        b.release();
        assert!(b.may_flush(0, false), "leaving");
    }
}
