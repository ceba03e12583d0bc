//! The bus: a thin transport that carries [`super::wire::Frame`] bytes
//! between nodes, with no knowledge of what they mean.
//!
//! A bus is a broadcast medium: every frame published reaches every node
//! that is connected at that moment, the publisher included, and frames of
//! one publisher arrive in the order they were published (Redis pub/sub
//! gives both). It may lose frames while a link is down: the replication
//! protocol repairs that. A transport reports its link going up and down
//! so the protocol can stop timing nodes out and resync afterwards.

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
