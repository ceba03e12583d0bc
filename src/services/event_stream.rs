//! The backends' event stream (`GET /api/events`): the presence, channel,
//! user and connection events of the webhooks, pushed to any number of
//! readers at once. Each reader may fall at most `backlog` events behind;
//! a reader further behind loses the oldest and is told how many (a gap),
//! so a slow reader never makes the server hold more.
//!
//! Presence, channel and user events are the cluster's: every node sees
//! every node's members (as the webhooks' sender does), so a reader on any
//! node sees them all. Connection events are the node's own.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::webhooks::WebhookEvent;

/// The fan-out to the stream's readers.
#[derive(Debug)]
pub struct EventStream {
    tx: broadcast::Sender<Arc<WebhookEvent>>,
}

impl EventStream {
    /// A stream whose readers may each fall `backlog` events behind.
    pub fn new(backlog: usize) -> Self {
        let (tx, _) = broadcast::channel(backlog.max(1));
        EventStream { tx }
    }

    /// Hands a copy of `event` to every reader (none is made without
    /// readers, the usual case).
    pub fn push(&self, event: &WebhookEvent) {
        if self.has_readers() {
            let _ = self.tx.send(Arc::new(event.clone()));
        }
    }

    /// Whether anyone reads the stream now.
    pub fn has_readers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// A new reader, which sees the events pushed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WebhookEvent>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reader_too_far_behind_is_told_what_it_missed() {
        let stream = EventStream::new(4);
        stream.push(&WebhookEvent::new(
            "user_online",
            None,
            Some(Arc::from("before")),
        ));
        let mut rx = stream.subscribe();
        for i in 0..10 {
            stream.push(&WebhookEvent::new(
                "user_online",
                None,
                Some(Arc::from(format!("u{i}"))),
            ));
        }
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(6))
        ));
        let next = rx.recv().await.expect("the newest four are kept");
        assert_eq!(next.user_id.as_deref(), Some("u6"));
    }
}
