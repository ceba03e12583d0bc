//! The server-wide shutdown signal and the count of sessions still running.
//!
//! Every session holds a [`Shutdown`] clone. When the server stops, it fires
//! the signal and waits until every clone has been dropped, so that each
//! client got its going-away close and its members were removed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// A session's view of the shutdown signal. Holding one keeps the server's
/// [`ShutdownController::drain`] waiting.
#[derive(Clone, Debug)]
pub struct Shutdown {
    signal: watch::Receiver<bool>,
    _alive: Arc<mpsc::Sender<()>>,
}

/// Whether the server is draining: asked to stop, it still serves its
/// clients while the load balancer notices (`/readyz` answers 503).
#[derive(Debug, Default)]
pub struct Draining(std::sync::atomic::AtomicBool);

impl Draining {
    /// From now on the server is draining.
    pub fn begin(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// True once draining began.
    pub fn is_draining(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Shutdown {
    /// Resolves when the server starts shutting down.
    pub async fn wait(&mut self) {
        // An error means the controller is gone, which is also a shutdown.
        let _ = self.signal.wait_for(|stop| *stop).await;
    }

    /// True once shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.signal.borrow()
    }
}

/// The server's side: fires the signal and waits for sessions to end.
#[derive(Debug)]
pub struct ShutdownController {
    /// Set when a drain begins, before the signal.
    pub draining: Draining,
    signal: watch::Sender<bool>,
    alive_tx: std::sync::Mutex<Option<Arc<mpsc::Sender<()>>>>,
    alive_rx: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

impl Default for ShutdownController {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownController {
    /// A controller with no sessions.
    pub fn new() -> Self {
        let (signal, _) = watch::channel(false);
        let (alive_tx, alive_rx) = mpsc::channel(1);
        ShutdownController {
            draining: Draining::default(),
            signal,
            alive_tx: std::sync::Mutex::new(Some(Arc::new(alive_tx))),
            alive_rx: tokio::sync::Mutex::new(alive_rx),
        }
    }

    /// A handle for a new session (or any task that must finish first).
    pub fn handle(&self) -> Shutdown {
        Shutdown {
            signal: self.signal.subscribe(),
            _alive: self
                .alive_tx
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_else(|| Arc::new(mpsc::channel(1).0)),
        }
    }

    /// Fires the signal.
    pub fn trigger(&self) {
        self.signal.send_replace(true);
    }

    /// Fires the signal and waits up to `grace` for every handle to drop.
    /// Returns false if some were still alive when the time ran out.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.trigger();
        self.alive_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut rx = self.alive_rx.lock().await;
        tokio::time::timeout(grace, rx.recv()).await.is_ok()
    }
}
