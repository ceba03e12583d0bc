//! An in-process bus: several nodes in one process (tests, embedding).
//!
//! Frames are handed to every attached node, the sender included, in one
//! global order, as Redis pub/sub does. [`MemoryHub::set_up`] simulates an
//! outage: while down, frames are lost and every node is told its link is
//! down.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::bus::{Bus, BusEvent, TransportEnd};

#[derive(Default)]
struct HubInner {
    nodes: Vec<mpsc::UnboundedSender<BusEvent>>,
    down: bool,
}

/// The shared medium. Clone it to attach more nodes.
#[derive(Clone, Default)]
pub struct MemoryHub {
    inner: Arc<Mutex<HubInner>>,
}

impl std::fmt::Debug for MemoryHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryHub").finish_non_exhaustive()
    }
}

impl MemoryHub {
    /// A hub with no nodes, up.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A bus attached to this hub.
    pub fn bus(&self) -> MemoryBus {
        MemoryBus { hub: self.clone() }
    }

    /// Takes the medium down (frames are lost, nodes are told) or up.
    pub fn set_up(&self, up: bool) {
        let mut inner = self.lock();
        if inner.down != up {
            return;
        }
        inner.down = !up;
        inner.nodes.retain(|n| {
            n.send(if up {
                BusEvent::Up
            } else {
                BusEvent::Down("memory hub taken down".into())
            })
            .is_ok()
        });
    }

    fn attach(&self, tx: mpsc::UnboundedSender<BusEvent>) {
        let mut inner = self.lock();
        if !inner.down {
            let _ = tx.send(BusEvent::Up);
        }
        inner.nodes.push(tx);
    }

    fn broadcast(&self, frame: &[u8]) -> bool {
        let mut inner = self.lock();
        if inner.down {
            return false;
        }
        inner
            .nodes
            .retain(|n| n.send(BusEvent::Frame(frame.to_vec())).is_ok());
        true
    }
}

/// One node's attachment to a [`MemoryHub`].
#[derive(Debug)]
pub struct MemoryBus {
    hub: MemoryHub,
}

impl Bus for MemoryBus {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn describe(&self) -> String {
        "in-process hub".into()
    }

    fn start(self: Box<Self>, mut end: TransportEnd) {
        self.hub.attach(end.tx.clone());
        tokio::spawn(async move {
            while let Some(out) = end.rx.recv().await {
                let sent = self.hub.broadcast(&out.frame);
                out.finish(sent);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::bus::{Outgoing, link};

    #[tokio::test]
    async fn frames_reach_every_node_in_order_and_outages_are_reported() {
        let hub = MemoryHub::new();
        let (mut a, a_end) = link();
        let (mut b, b_end) = link();
        Box::new(hub.bus()).start(a_end);
        Box::new(hub.bus()).start(b_end);
        assert!(matches!(a.rx.recv().await, Some(BusEvent::Up)));
        assert!(matches!(b.rx.recv().await, Some(BusEvent::Up)));
        for i in 0..3u8 {
            a.tx.send(Outgoing {
                frame: vec![i],
                done: None,
            })
            .await
            .unwrap();
        }
        for i in 0..3u8 {
            assert!(matches!(b.rx.recv().await, Some(BusEvent::Frame(f)) if f == [i]));
            assert!(matches!(a.rx.recv().await, Some(BusEvent::Frame(f)) if f == [i]));
        }
        hub.set_up(false);
        assert!(matches!(b.rx.recv().await, Some(BusEvent::Down(_))));
        let (done, result) = tokio::sync::oneshot::channel();
        a.tx.send(Outgoing {
            frame: vec![9],
            done: Some(done),
        })
        .await
        .unwrap();
        assert!(!result.await.unwrap(), "lost while down");
        hub.set_up(true);
        assert!(matches!(b.rx.recv().await, Some(BusEvent::Up)));
    }
}
