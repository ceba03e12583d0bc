//! The bus: a thin transport that carries [`super::wire::Frame`] bytes
//! between nodes, with no knowledge of what they mean.
//!
//! A bus is a broadcast medium: every frame published reaches every node
//! that is connected at that moment, the publisher included, and frames of
//! one publisher arrive in the order they were published (Redis pub/sub
//! gives both). It may lose frames while a link is down: the replication
//! protocol repairs that. A transport reports its link going up and down
//! so the protocol can stop timing nodes out and resync afterwards.

use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, oneshot};

/// What a transport tells the engine.
#[derive(Debug)]
pub enum BusEvent {
    /// The link is (again) connected and subscribed.
    Up,
    /// The link is down; the reason is for logs and `/readyz`.
    Down(String),
    /// A frame from the bus (possibly one this node published).
    Frame(Vec<u8>),
}

/// A frame to publish, with an optional notice of whether it went out.
#[derive(Debug)]
pub struct Outgoing {
    /// The encoded frame.
    pub frame: Vec<u8>,
    /// Told true once published, false if it was dropped.
    pub done: Option<oneshot::Sender<bool>>,
}

impl Outgoing {
    /// Reports the outcome to whoever waits for it.
    pub fn finish(self, published: bool) {
        if let Some(done) = self.done {
            let _ = done.send(published);
        }
    }
}

/// The engine's end of a running transport.
#[derive(Debug)]
pub struct BusLink {
    /// Frames to publish. Bounded: when full, the engine drops frames and
    /// the other nodes resync.
    pub tx: mpsc::Sender<Outgoing>,
    /// Link state and received frames.
    pub rx: mpsc::UnboundedReceiver<BusEvent>,
    /// Asks the transport to drop its connection and connect again (the
    /// reason is for its logs): the link looks up but delivers nothing.
    pub reset: mpsc::UnboundedSender<String>,
}

/// The transport's end of a link.
#[derive(Debug)]
pub struct TransportEnd {
    /// Frames the engine wants published.
    pub rx: mpsc::Receiver<Outgoing>,
    /// Where to report link state and received frames.
    pub tx: mpsc::UnboundedSender<BusEvent>,
    /// Requests to reconnect (see [`BusLink::reset`]); a transport that
    /// cannot go stale may ignore them.
    pub reset: mpsc::UnboundedReceiver<String>,
}

/// Frames that may wait to be published before new ones are dropped.
pub const OUTGOING_CAPACITY: usize = 4096;

/// A connected pair of ends.
pub fn link() -> (BusLink, TransportEnd) {
    let (out_tx, out_rx) = mpsc::channel(OUTGOING_CAPACITY);
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (reset_tx, reset_rx) = mpsc::unbounded_channel();
    (
        BusLink {
            tx: out_tx,
            rx: in_rx,
            reset: reset_tx,
        },
        TransportEnd {
            rx: out_rx,
            tx: in_tx,
            reset: reset_rx,
        },
    )
}

/// A transport between nodes.
pub trait Bus: Send + 'static {
    /// A short name for stats: `memory`, `redis`, `redis-cluster`.
    fn kind(&self) -> &'static str;
    /// Where it connects, without credentials, for logs.
    fn describe(&self) -> String;
    /// Starts the transport's task(s) on the current Tokio runtime. The
    /// transport stops when the engine drops its [`BusLink`].
    fn start(self: Box<Self>, end: TransportEnd);
}

/// First and largest wait between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// See [`BACKOFF_MIN`].
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Frames published in one batch.
pub const MAX_BATCH: usize = 64;

/// Why a connected session ended.
pub enum Ended {
    /// The engine is gone: stop.
    Stop,
    /// The link broke: reconnect.
    Lost(String),
}

/// One engine's connected session: connect, subscribe, call
/// [`announce_up`], then move frames until the link breaks (`Ok(Lost)`),
/// the engine goes (`Ok(Stop)`), or connecting fails (`Err`).
pub trait Connect: Send + Sync + 'static {
    /// Runs one session.
    fn session(
        &self,
        end: &mut TransportEnd,
    ) -> impl std::future::Future<Output = Result<Ended, String>> + Send;
}

/// Runs `connect`'s sessions for as long as the engine runs: any error
/// takes the link down (the engine is told, frames queued meanwhile are
/// dropped: the replication protocol resyncs), then it reconnects with
/// exponential backoff (100 ms doubling to 2 s, with jitter). `engine`
/// names it in logs ("Redis"), `described` is its URL without secrets.
pub async fn run_reconnecting<C: Connect>(
    engine: &'static str,
    described: String,
    connect: C,
    mut end: TransportEnd,
) {
    let mut backoff = BACKOFF_MIN;
    let mut failures: u64 = 0;
    loop {
        match connect.session(&mut end).await {
            Ok(Ended::Stop) => return,
            Ok(Ended::Lost(reason)) => {
                // It was up: the first retry comes quickly.
                backoff = BACKOFF_MIN;
                failures = 1;
                tracing::warn!(bus = %described, %reason, "lost the {engine} bus; reconnecting (local clients are still served)");
                if end.tx.send(BusEvent::Down(reason)).is_err() {
                    return;
                }
            }
            Err(reason) => {
                failures += 1;
                if failures == 1 {
                    if end.tx.send(BusEvent::Down(reason.clone())).is_err() {
                        return;
                    }
                    tracing::warn!(bus = %described, %reason, "cannot reach {engine}; serving local clients only and retrying every {BACKOFF_MAX:?} at most");
                } else if failures.is_multiple_of(20) {
                    tracing::warn!(bus = %described, %reason, attempts = failures, "still cannot reach {engine}; retrying");
                } else {
                    tracing::debug!(bus = %described, %reason, "{engine} connect attempt failed");
                }
            }
        }
        let jitter = rand::rng().random_range(0.75..1.25);
        if !discard_for(&mut end, backoff.mul_f64(jitter)).await {
            return;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Drops queued frames for `wait`; false if the engine is gone.
async fn discard_for(end: &mut TransportEnd, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    // Not connected: there is nothing to reset.
    while end.reset.try_recv().is_ok() {}
    loop {
        match tokio::time::timeout_at(deadline, end.rx.recv()).await {
            Err(_) => return true,
            Ok(None) => return false,
            Ok(Some(out)) => out.finish(false),
        }
    }
}

/// A new session is connected and subscribed: drops what was queued while
/// the link was down and tells the engine. False if the engine is gone.
pub fn announce_up(end: &mut TransportEnd) -> bool {
    discard_queued(end);
    end.tx.send(BusEvent::Up).is_ok()
}

/// Drops whatever was queued while the link was down (frames, and requests
/// to reset a connection that is new anyway).
pub fn discard_queued(end: &mut TransportEnd) {
    while end.reset.try_recv().is_ok() {}
    while let Ok(out) = end.rx.try_recv() {
        out.finish(false);
    }
}

/// Takes up to [`MAX_BATCH`] queued frames after `first`.
pub fn batch(first: Outgoing, end: &mut TransportEnd) -> Vec<Outgoing> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match end.rx.try_recv() {
            Ok(out) => batch.push(out),
            Err(_) => break,
        }
    }
    batch
}
