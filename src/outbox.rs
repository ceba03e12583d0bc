//! The bounded outbound queue of one connection.
//!
//! The core pushes encoded frames (shared `Bytes`) into a connection's
//! outbox from whatever task produced the event; the connection's writer
//! drains it. The queue is bounded in bytes: a client that stops reading
//! fills it, and the push that would overflow closes the connection with a
//! reason instead of letting the server buffer without limit.

use std::borrow::Cow;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

/// Fixed per-item overhead counted against the budget, so that a flood of
/// tiny frames is bounded too.
const ITEM_OVERHEAD: usize = 64;

/// WebSocket close code for "the server is overloaded / try again later"
/// (RFC 6455 registry: 1013 Try Again Later), used for slow consumers.
pub const CLOSE_SLOW_CONSUMER: u16 = 1013;

/// One item queued for a connection.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A text frame (always valid UTF-8).
    Text(Bytes),
    /// A binary frame.
    Binary(Bytes),
    /// A WebSocket ping (liveness check).
    Ping,
}

impl Outbound {
    fn cost(&self) -> usize {
        match self {
            Outbound::Text(b) | Outbound::Binary(b) => b.len() + ITEM_OVERHEAD,
            Outbound::Ping => ITEM_OVERHEAD,
        }
    }
}

/// Why and how a connection is being closed by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// WebSocket close code.
    pub code: u16,
    /// Human-readable reason (sent in the close frame, at most 123 bytes).
    pub reason: Cow<'static, str>,
}

impl CloseReason {
    /// Builds a close reason.
    pub fn new(code: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        CloseReason {
            code,
            reason: reason.into(),
        }
    }
}

/// The sending half, shared by the core and the connection's session.
#[derive(Debug)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Outbound>,
    queued: AtomicUsize,
    limit: usize,
    closed: AtomicBool,
    close_reason: Mutex<Option<CloseReason>>,
    close_signal: watch::Sender<bool>,
}

/// The receiving half, owned by the connection's writer.
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: mpsc::UnboundedReceiver<Outbound>,
}

impl Outbox {
    /// Creates an outbox that holds at most `limit_bytes` of queued frames.
    pub fn new(limit_bytes: usize) -> (Outbox, OutboxReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Outbox {
                tx,
                queued: AtomicUsize::new(0),
                limit: limit_bytes,
                closed: AtomicBool::new(false),
                close_reason: Mutex::new(None),
                close_signal: watch::Sender::new(false),
            },
            OutboxReceiver { rx },
        )
    }

    /// Queues a frame. Returns false (and closes the connection as a slow
    /// consumer) if the frame would exceed the byte budget, or false if the
    /// connection is already closing.
    pub fn push(&self, item: Outbound) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let cost = item.cost();
        let before = self.queued.fetch_add(cost, Ordering::AcqRel);
        if before + cost > self.limit {
            self.queued.fetch_sub(cost, Ordering::AcqRel);
            self.close(CloseReason::new(
                CLOSE_SLOW_CONSUMER,
                format!(
                    "outbound queue over {} bytes: client is not reading fast enough",
                    self.limit
                ),
            ));
            return false;
        }
        if self.tx.send(item).is_err() {
            self.queued.fetch_sub(cost, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Queues a text frame; see [`Outbox::push`].
    pub fn push_text(&self, frame: Bytes) -> bool {
        self.push(Outbound::Text(frame))
    }

    /// Called by the writer once an item has left the process.
    pub fn sent(&self, item: &Outbound) {
        self.queued.fetch_sub(item.cost(), Ordering::AcqRel);
    }

    /// Bytes currently queued.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Asks the connection to close. The first reason wins; later calls are
    /// ignored. Frames pushed afterwards are dropped.
    pub fn close(&self, reason: CloseReason) {
        {
            let mut slot = self.close_reason.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_some() {
                return;
            }
            *slot = Some(reason);
        }
        self.closed.store(true, Ordering::Release);
        self.close_signal.send_replace(true);
    }

    /// True once [`Outbox::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The reason given to [`Outbox::close`], if any.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Resolves once the connection has been asked to close.
    pub async fn closed(&self) {
        let mut rx = self.close_signal.subscribe();
        // The sender lives in `self`, so this only ends when closed.
        let _ = rx.wait_for(|closed| *closed).await;
    }
}

impl OutboxReceiver {
    /// The next queued item, or None when every sender is gone.
    pub async fn recv(&mut self) -> Option<Outbound> {
        self.rx.recv().await
    }

    /// A queued item if one is ready now.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        self.rx.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overflow_closes_with_a_reason() {
        let (outbox, mut rx) = Outbox::new(1000);
        assert!(outbox.push_text(Bytes::from(vec![b'a'; 500])));
        assert!(!outbox.push_text(Bytes::from(vec![b'a'; 500])));
        assert!(outbox.is_closed());
        let reason = outbox.close_reason().unwrap();
        assert_eq!(reason.code, CLOSE_SLOW_CONSUMER);
        assert!(reason.reason.contains("not reading"));
        // Nothing more is accepted once closed.
        assert!(!outbox.push_text(Bytes::from_static(b"x")));
        let item = rx.recv().await.unwrap();
        outbox.sent(&item);
        assert_eq!(outbox.queued_bytes(), 0);
        outbox.closed().await;
    }
}
