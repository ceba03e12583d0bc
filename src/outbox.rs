//! The bounded outbound queue of one connection.
//!
//! The core pushes encoded frames (shared `Bytes`) into a connection's
//! outbox from whatever task produced the event; the connection's writer
//! drains it. The queue is bounded in bytes: a client that stops reading
//! fills it, and the push that would overflow closes the connection with a
//! reason instead of letting the server buffer without limit.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

pub use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use tokio::sync::Notify;

/// Fixed per-item overhead counted against the budget, so that a flood of
/// tiny frames is bounded too.
const ITEM_OVERHEAD: usize = 64;

/// WebSocket close code for "the server is overloaded / try again later"
/// (RFC 6455 registry: 1013 Try Again Later), used for slow consumers.
pub const CLOSE_SLOW_CONSUMER: u16 = 1013;

/// The close code of a connection an operator disconnected (the HTTP API's
/// disconnect routes); the close reason is the operator's. Outside the
/// codes SocketCluster reserves (4000-4009, 4500).
pub const CLOSE_KICKED: u16 = 4100;

/// One item queued for a connection.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A text frame. `Utf8Bytes`, not `Bytes`: a frame made from a
    /// `String` is known to be UTF-8, so it is not checked again for every
    /// recipient (checking a 1,000-member list for each of 1,000 members
    /// was 15 % of the server's CPU in a join storm).
    Text(Utf8Bytes),
    /// A large text frame of a broadcast, one for all its recipients (see
    /// [`SharedText`]).
    Shared(Arc<SharedText>),
    /// A binary frame.
    Binary(Bytes),
    /// A WebSocket ping (liveness check).
    Ping,
    /// A WebSocket pong answering the client's ping (its payload).
    Pong(Bytes),
}

/// A broadcast's text frame shared by its recipients, with its
/// permessage-deflate form, made once by the first writer whose
/// connection negotiated the extension and then sent to each of them.
#[derive(Debug)]
pub struct SharedText {
    text: Utf8Bytes,
    deflated: std::sync::OnceLock<Option<Bytes>>,
}

impl SharedText {
    /// The frame's text.
    pub fn text(&self) -> &Utf8Bytes {
        &self.text
    }

    /// The compressed payload, if compressing makes it shorter.
    pub fn deflated(&self) -> Option<&Bytes> {
        self.deflated
            .get_or_init(|| crate::websocket::deflate::compress(self.text.as_bytes()))
            .as_ref()
    }
}

impl Outbound {
    /// `frame` as a broadcast's frame: shared with its compressed form
    /// when it is long enough to be sent compressed.
    pub fn broadcast(frame: Outbound) -> Outbound {
        match frame {
            Outbound::Text(text) if crate::websocket::deflate::worth_compressing(text.len()) => {
                Outbound::Shared(Arc::new(SharedText {
                    text,
                    deflated: std::sync::OnceLock::new(),
                }))
            }
            other => other,
        }
    }

    /// The text of a text frame.
    pub fn text(&self) -> Option<&Utf8Bytes> {
        match self {
            Outbound::Text(text) => Some(text),
            Outbound::Shared(shared) => Some(&shared.text),
            Outbound::Binary(_) | Outbound::Ping | Outbound::Pong(_) => None,
        }
    }

    /// Bytes of payload (a ping has none), for the byte counters.
    pub fn payload_len(&self) -> u64 {
        match self {
            Outbound::Text(text) => text.len() as u64,
            Outbound::Shared(shared) => shared.text.len() as u64,
            Outbound::Binary(b) | Outbound::Pong(b) => b.len() as u64,
            Outbound::Ping => 0,
        }
    }

    fn cost(&self) -> usize {
        match self {
            Outbound::Text(text) => text.len() + ITEM_OVERHEAD,
            Outbound::Shared(shared) => shared.text.len() + ITEM_OVERHEAD,
            Outbound::Binary(b) | Outbound::Pong(b) => b.len() + ITEM_OVERHEAD,
            Outbound::Ping => ITEM_OVERHEAD,
        }
    }
}

/// Something the server asks a connection's session to do that is more
/// than a frame to send: the session changes its own state and tells its
/// client in its protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// End the subscription to this core channel (an operator removed the
    /// user from it): unsubscribe as if the client had asked, and tell the
    /// client why.
    LeaveChannel {
        /// The core channel.
        channel: Arc<str>,
        /// What the client is told.
        reason: Arc<str>,
    },
}

/// Why and how a connection is being closed by the server.
#[derive(Debug, Clone)]
pub struct CloseReason {
    /// WebSocket close code.
    pub code: u16,
    /// Human-readable reason (sent in the close frame, at most 123 bytes).
    pub reason: Cow<'static, str>,
    /// When the close was decided (reasons are built where it is), for
    /// `rollcall_leave_seconds`: one clock read per close.
    decided: std::time::Instant,
}

/// Two reasons are the same close whenever they were decided.
impl PartialEq for CloseReason {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code && self.reason == other.reason
    }
}

impl Eq for CloseReason {}

impl CloseReason {
    /// Builds a close reason, decided now.
    pub fn new(code: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        CloseReason {
            code,
            reason: reason.into(),
            decided: std::time::Instant::now(),
        }
    }

    /// Time since the close was decided.
    pub fn since_decided(&self) -> std::time::Duration {
        self.decided.elapsed()
    }
}

/// The sending half, shared by the core and the connection's session.
///
/// The queue is a plain `VecDeque` under a mutex rather than a tokio mpsc
/// channel: an idle connection then holds no queue memory at all (the
/// channel kept about 1.8 KB per connection: its first block and its
/// cache-padded state), and only the writer ever waits on it.
#[derive(Debug)]
pub struct Outbox {
    queue: Arc<Queue>,
    queued: AtomicUsize,
    limit: usize,
    closed: AtomicBool,
    close_reason: Mutex<Option<CloseReason>>,
    /// Orders for the session ([`Outbox::order`]); empty almost always.
    orders: Mutex<Vec<Order>>,
    /// Notified on a close and on an order: one `Notify` for both keeps an
    /// idle connection small, and both are rare.
    signal: Notify,
}

/// The receiving half, owned by the connection's writer.
#[derive(Debug)]
pub struct OutboxReceiver {
    queue: Arc<Queue>,
    /// When the sampled item received last was queued (see
    /// [`OutboxReceiver::take_sample`]).
    sample: Option<Instant>,
}

/// The queue shared by both halves.
#[derive(Debug, Default)]
struct Queue {
    state: Mutex<QueueState>,
}

#[derive(Debug, Default)]
struct QueueState {
    items: Items,
    /// The writer waiting in [`OutboxReceiver::recv`].
    waker: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
    /// The outbox was closed ([`Outbox::close`]); the writer is woken.
    closed: bool,
    /// A frame that may not be held by `--write-delay` (anything but a
    /// broadcast: replies, errors, member lists) was queued since the
    /// writer last asked ([`OutboxReceiver::take_reply_queued`]).
    reply_queued: bool,
    /// Nonzero while `waker` is the write delay's
    /// ([`OutboxReceiver::reply_or_enough_queued`]): only such a frame
    /// wakes it, or a broadcast that makes the queue this long.
    hold_until_len: u8,
    /// Items pushed and popped (wrapping), for the delivery-latency
    /// sample: one item in [`SAMPLE_EVERY`] carries a queue time.
    pushed: u32,
    popped: u32,
    /// The sampled item (its push number) and when it was queued.
    sample: Option<(u32, Instant)>,
}

/// One item in this many (the first, the 65th, ...) is timed from queue
/// to write: a clock read per 64 pushes, none per delivery otherwise.
const SAMPLE_EVERY: u32 = 64;

/// The queued items: one inline (at a steady rate a connection rarely
/// has more), more in a `VecDeque` that is freed once drained, so that an
/// idle connection holds no queue memory (a kept `VecDeque` was 160 bytes
/// per connection) and a connection at a steady rate allocates nothing.
#[derive(Debug, Default)]
enum Items {
    #[default]
    Empty,
    One(Outbound),
    Many(VecDeque<Outbound>),
}

impl Items {
    fn push_back(&mut self, item: Outbound) {
        *self = match std::mem::take(self) {
            Items::Empty => Items::One(item),
            Items::One(first) => {
                let mut queue = VecDeque::with_capacity(4);
                queue.push_back(first);
                queue.push_back(item);
                Items::Many(queue)
            }
            Items::Many(mut queue) => {
                queue.push_back(item);
                Items::Many(queue)
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Items::Empty => 0,
            Items::One(_) => 1,
            Items::Many(queue) => queue.len(),
        }
    }

    fn pop_front(&mut self) -> Option<Outbound> {
        match std::mem::take(self) {
            Items::Empty => None,
            Items::One(item) => Some(item),
            Items::Many(mut queue) => {
                let item = queue.pop_front();
                if !queue.is_empty() {
                    *self = Items::Many(queue);
                }
                item
            }
        }
    }

    /// Bytes of queue memory held (not counting the items' payloads).
    #[cfg(test)]
    fn heap_capacity(&self) -> usize {
        match self {
            Items::Many(queue) => queue.capacity(),
            _ => 0,
        }
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl QueueState {
    fn push(&mut self, item: Outbound) {
        self.items.push_back(item);
        self.pushed = self.pushed.wrapping_add(1);
        if self.pushed % SAMPLE_EVERY == 1 && self.sample.is_none() {
            self.sample = Some((self.pushed, Instant::now()));
        }
    }

    /// The queue time of the sample, if the item just popped was it.
    fn popped_sample(&mut self) -> Option<Instant> {
        self.popped = self.popped.wrapping_add(1);
        match self.sample {
            Some((n, at)) if n == self.popped => {
                self.sample = None;
                Some(at)
            }
            _ => None,
        }
    }

    /// Registers the writer's waker: woken by the next push, or with a
    /// nonzero `hold_until_len` by the next push that is not a broadcast
    /// or that makes the queue that long.
    fn wait(&mut self, cx: &Context<'_>, hold_until_len: u8) {
        self.hold_until_len = hold_until_len;
        match &mut self.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
    }

    fn pop(&mut self) -> Option<Outbound> {
        self.items.pop_front()
    }
}

impl Outbox {
    /// Creates an outbox that holds at most `limit_bytes` of queued frames.
    pub fn new(limit_bytes: usize) -> (Outbox, OutboxReceiver) {
        let queue = Arc::new(Queue::default());
        (
            Outbox {
                queue: queue.clone(),
                queued: AtomicUsize::new(0),
                limit: limit_bytes,
                closed: AtomicBool::new(false),
                close_reason: Mutex::new(None),
                orders: Mutex::new(Vec::new()),
                signal: Notify::new(),
            },
            OutboxReceiver {
                queue,
                sample: None,
            },
        )
    }

    /// Queues a frame that is written without waiting out `--write-delay`
    /// (a reply, an error, a member list). Returns false (and closes the
    /// connection as a slow consumer) if the frame would exceed the byte
    /// budget, or false if the connection is already closing.
    pub fn push(&self, item: Outbound) -> bool {
        self.enqueue(item, false)
    }

    /// Queues a broadcast frame (a channel event, a direct message): one
    /// that `--write-delay` may hold for others to share its write. See
    /// [`Outbox::push`].
    pub fn push_deferrable(&self, item: Outbound) -> bool {
        self.enqueue(item, true)
    }

    fn enqueue(&self, item: Outbound, deferrable: bool) -> bool {
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
        let waker = {
            let mut state = self.queue.lock();
            if state.receiver_gone {
                drop(state);
                self.queued.fetch_sub(cost, Ordering::AcqRel);
                return false;
            }
            state.push(item);
            state.reply_queued |= !deferrable;
            let held = deferrable
                && state.hold_until_len > 0
                && state.items.len() < usize::from(state.hold_until_len);
            match held {
                true => None,
                false => state.waker.take(),
            }
        };
        // Woken outside the lock, so the writer does not wait on it.
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// Queues a text frame; see [`Outbox::push`].
    pub fn push_text(&self, frame: Utf8Bytes) -> bool {
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
        // The writer learns it in `recv_open`, without a future of its own.
        self.tell_writer(|state| state.closed = true);
        self.signal.notify_waiters();
    }

    /// Marks the queue's state (closed, sender gone) and wakes the writer,
    /// outside the lock so that it does not wait on it.
    fn tell_writer(&self, mark: impl FnOnce(&mut QueueState)) {
        let waker = {
            let mut state = self.queue.lock();
            mark(&mut state);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Gives the session an order (see [`Order`]); false if the connection
    /// is closing (its subscriptions end anyway).
    pub fn order(&self, order: Order) -> bool {
        if self.is_closed() {
            return false;
        }
        self.orders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(order);
        self.signal.notify_waiters();
        true
    }

    /// The orders given since the last call, oldest first.
    pub fn take_orders(&self) -> Vec<Order> {
        std::mem::take(&mut *self.orders.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Resolves once the outbox is closed or an order is waiting
    /// ([`Outbox::take_orders`]), whichever comes first.
    pub async fn closed_or_ordered(&self) {
        self.signalled_until(|o| o.is_closed() || o.has_orders())
            .await;
    }

    /// Resolves once an order is waiting ([`Outbox::take_orders`]).
    pub async fn ordered(&self) {
        self.signalled_until(Outbox::has_orders).await;
    }

    fn has_orders(&self) -> bool {
        !self
            .orders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Resolves once `ready` holds, checked again whenever the outbox's
    /// signal (a close or an order) fires.
    async fn signalled_until(&self, ready: impl Fn(&Outbox) -> bool) {
        loop {
            // A `Notified` sees `notify_waiters` calls made after its
            // creation, so a close or an order between this line and the
            // check is not missed.
            let notified = self.signal.notified();
            if ready(self) {
                return;
            }
            notified.await;
        }
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

    /// Resolves once the connection has been asked to close (an order
    /// wakes it too; it then waits again).
    pub async fn closed(&self) {
        self.signalled_until(Outbox::is_closed).await;
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.tell_writer(|state| state.sender_gone = true);
    }
}

impl OutboxReceiver {
    /// The next queued item, or None when the sender is gone and the queue
    /// is empty. Cancel-safe: dropping the future loses no item.
    pub async fn recv(&mut self) -> Option<Outbound> {
        poll_fn(|cx| self.poll_next(cx, false)).await
    }

    /// The next item, or None once the outbox is closed (even with items
    /// queued: the caller decides what of them to flush) or its sender is
    /// gone.
    pub async fn recv_open(&mut self) -> Option<Outbound> {
        poll_fn(|cx| self.poll_next(cx, true)).await
    }

    /// [`Self::recv`], and with `until_closed` [`Self::recv_open`].
    fn poll_next(&mut self, cx: &Context<'_>, until_closed: bool) -> Poll<Option<Outbound>> {
        let mut state = self.queue.lock();
        if until_closed && state.closed {
            return Poll::Ready(None);
        }
        if let Some(item) = state.pop() {
            if let Some(at) = state.popped_sample() {
                self.sample = Some(at);
            }
            return Poll::Ready(Some(item));
        }
        if state.sender_gone {
            return Poll::Ready(None);
        }
        state.wait(cx, 0);
        Poll::Pending
    }

    /// `--write-delay`: waits up to `delay` for `more` broadcasts to join
    /// what the writer took, unless a frame other than a broadcast was
    /// queued since the last wait or is queued meanwhile (a client waiting
    /// for a reply gets it at once), or until the outbox is closed.
    /// Returns at once for a zero delay or `more`.
    pub async fn hold_for_more(&mut self, delay: std::time::Duration, more: usize) {
        let more = u8::try_from(more).unwrap_or(u8::MAX);
        if delay.is_zero() || more == 0 || self.take_reply_queued() {
            return;
        }
        tokio::select! {
            _ = self.reply_or_enough_queued(more) => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }

    /// Whether a frame other than a broadcast was queued since the last
    /// call; clears the mark.
    fn take_reply_queued(&mut self) -> bool {
        std::mem::take(&mut self.queue.lock().reply_queued)
    }

    /// Completes when a frame other than a broadcast is queued, or `more`
    /// frames are (or the sender is gone); fewer broadcasts queued
    /// meanwhile do not wake the writer.
    async fn reply_or_enough_queued(&mut self, more: u8) {
        poll_fn(|cx| {
            let mut state = self.queue.lock();
            if state.reply_queued
                || state.sender_gone
                || state.closed
                || state.items.len() >= usize::from(more)
            {
                return Poll::Ready(());
            }
            state.wait(cx, more);
            Poll::Pending
        })
        .await
    }

    /// A queued item if one is ready now.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let mut state = self.queue.lock();
        let item = state.pop()?;
        if let Some(at) = state.popped_sample() {
            self.sample = Some(at);
        }
        Some(item)
    }

    /// When the sampled item among those received so far was queued, once
    /// (the writer calls it after writing them: queue-to-write latency).
    pub fn take_sample(&mut self) -> Option<Instant> {
        self.sample.take()
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        // Later pushes are refused; what is queued will never be written.
        let items = {
            let mut state = self.queue.lock();
            state.receiver_gone = true;
            state.waker = None;
            std::mem::take(&mut state.items)
        };
        drop(items);
    }
}

/// The text frames queued now, in order (for tests of what the core
/// queued).
#[cfg(test)]
pub(crate) fn drain_text(rx: &mut OutboxReceiver) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(item) = rx.try_recv() {
        if let Some(b) = item.text() {
            out.push(b.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_item_in_64_is_timed() {
        let (outbox, mut rx) = Outbox::new(1 << 20);
        let mut sampled = Vec::new();
        for i in 1..=130 {
            assert!(outbox.push_text(Utf8Bytes::from_static("x")));
            assert!(rx.try_recv().is_some());
            if rx.take_sample().is_some() {
                sampled.push(i);
            }
        }
        assert_eq!(sampled, vec![1, 65, 129]);
        // Queued together: the sample waits for its own item.
        for _ in 0..70 {
            assert!(outbox.push_text(Utf8Bytes::from_static("x")));
        }
        let mut at = Vec::new();
        for i in 131..=200 {
            assert!(rx.try_recv().is_some());
            if rx.take_sample().is_some() {
                at.push(i);
            }
        }
        assert_eq!(at, vec![193]);
    }

    #[tokio::test]
    async fn overflow_closes_with_a_reason() {
        let (outbox, mut rx) = Outbox::new(1000);
        assert!(outbox.push_text(Utf8Bytes::from("a".repeat(500))));
        assert!(!outbox.push_text(Utf8Bytes::from("a".repeat(500))));
        assert!(outbox.is_closed());
        let reason = outbox.close_reason().unwrap();
        assert_eq!(reason.code, CLOSE_SLOW_CONSUMER);
        assert!(reason.reason.contains("not reading"));
        // Nothing more is accepted once closed.
        assert!(!outbox.push_text(Utf8Bytes::from_static("x")));
        let item = rx.recv().await.unwrap();
        outbox.sent(&item);
        assert_eq!(outbox.queued_bytes(), 0);
        outbox.closed().await;
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_push() {
        let (outbox, mut rx) = Outbox::new(1 << 20);
        let outbox = Arc::new(outbox);
        let pusher = outbox.clone();
        let push = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            pusher.push_text(Utf8Bytes::from_static("late"))
        });
        let item = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("the push wakes the receiver");
        assert!(matches!(item, Some(Outbound::Text(b)) if b == "late"));
        assert!(push.await.unwrap());
    }

    /// The writer learns of a close in `recv_open` (no future of its own),
    /// even with items still queued, and a write-delay wait ends with it.
    #[tokio::test]
    async fn a_close_wakes_the_writer_and_ends_its_waits() {
        let (outbox, mut rx) = Outbox::new(1 << 20);
        let outbox = Arc::new(outbox);
        let closer = outbox.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            closer.close(CloseReason::new(1001, "bye"));
        });
        let waited = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv_open()).await;
        assert!(matches!(waited, Ok(None)), "the close woke the writer");
        assert!(
            !outbox.push(Outbound::Ping),
            "nothing is queued after a close"
        );
        let (outbox, mut rx) = Outbox::new(1 << 20);
        outbox.push_deferrable(Outbound::Ping);
        outbox.close(CloseReason::new(1001, "bye"));
        assert!(
            rx.recv_open().await.is_none(),
            "closed first, queued or not"
        );
        assert!(
            rx.try_recv().is_some(),
            "what was queued is still there to flush"
        );
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            rx.hold_for_more(std::time::Duration::from_secs(60), 8),
        )
        .await
        .expect("a closed outbox holds nothing back");
    }

    /// A writer waiting out `--write-delay` is woken by a reply, or by
    /// the broadcast that makes enough to write: broadcasts queued before
    /// that cost it no wake-up.
    #[test]
    fn only_a_reply_or_enough_broadcasts_wake_a_writer_waiting_for_more() {
        use std::future::Future;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::{Context, Wake, Waker};
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let (outbox, mut rx) = Outbox::new(1 << 20);
        let broadcast = || Outbound::Text(Utf8Bytes::from_static("b"));
        outbox.push_deferrable(broadcast());
        assert!(!rx.take_reply_queued());
        {
            // One queued; waiting for five.
            let mut wait = std::pin::pin!(rx.reply_or_enough_queued(5));
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            outbox.push_deferrable(broadcast());
            assert_eq!(count.0.load(Ordering::SeqCst), 0, "a broadcast woke it");
            outbox.push_text(Utf8Bytes::from_static("reply"));
            assert_eq!(count.0.load(Ordering::SeqCst), 1);
            assert!(wait.as_mut().poll(&mut cx).is_ready());
        }
        assert!(rx.take_reply_queued());
        assert!(!rx.take_reply_queued(), "taking the mark clears it");
        while rx.try_recv().is_some() {}
        {
            // Three broadcasts wake a writer waiting for three, on the third.
            let mut wait = std::pin::pin!(rx.reply_or_enough_queued(3));
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            outbox.push_deferrable(broadcast());
            outbox.push_deferrable(broadcast());
            assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken too early");
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            outbox.push_deferrable(broadcast());
            assert_eq!(count.0.load(Ordering::SeqCst), 2);
            assert!(wait.as_mut().poll(&mut cx).is_ready());
        }
        // Waiting in recv again, any push wakes the writer.
        while rx.try_recv().is_some() {}
        {
            let mut next = std::pin::pin!(rx.recv());
            assert!(next.as_mut().poll(&mut cx).is_pending());
            outbox.push_deferrable(broadcast());
            assert_eq!(count.0.load(Ordering::SeqCst), 3);
        }
    }

    #[tokio::test]
    async fn pushes_after_the_receiver_is_gone_are_refused() {
        let (outbox, rx) = Outbox::new(1 << 20);
        drop(rx);
        assert!(!outbox.push_text(Utf8Bytes::from_static("x")));
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn an_order_wakes_its_waiter_but_not_the_close_waiter() {
        let (outbox, _rx) = Outbox::new(1 << 20);
        let order = Order::LeaveChannel {
            channel: "room".into(),
            reason: "why".into(),
        };
        let ordered = outbox.ordered();
        let closed = outbox.closed();
        tokio::pin!(ordered, closed);
        assert!(outbox.order(order.clone()));
        tokio::time::timeout(std::time::Duration::from_secs(1), &mut ordered)
            .await
            .expect("the order is seen");
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), &mut closed)
                .await
                .is_err(),
            "an order is no close"
        );
        assert_eq!(outbox.take_orders(), vec![order.clone()]);
        assert!(outbox.take_orders().is_empty());
        outbox.close(CloseReason::new(1000, "bye"));
        closed.await;
        assert!(!outbox.order(order), "a closing connection takes no orders");
    }

    #[tokio::test]
    async fn recv_ends_when_the_sender_is_gone() {
        let (outbox, mut rx) = Outbox::new(1 << 20);
        assert!(outbox.push_text(Utf8Bytes::from_static("x")));
        drop(outbox);
        assert!(
            rx.recv().await.is_some(),
            "queued items are still delivered"
        );
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_drained_queue_gives_back_its_memory() {
        let (outbox, mut rx) = Outbox::new(1 << 20);
        for _ in 0..1000 {
            assert!(outbox.push_text(Utf8Bytes::from_static("x")));
        }
        while rx.try_recv().is_some() {}
        assert_eq!(rx.queue.lock().items.heap_capacity(), 0);
        // One item at a time (a steady rate) needs no queue memory at all.
        assert!(outbox.push_text(Utf8Bytes::from_static("x")));
        assert_eq!(rx.queue.lock().items.heap_capacity(), 0);
        assert!(outbox.push_text(Utf8Bytes::from_static("y")));
        assert!(rx.queue.lock().items.heap_capacity() > 0);
        assert!(matches!(rx.try_recv(), Some(Outbound::Text(t)) if t == "x"));
        assert!(matches!(rx.try_recv(), Some(Outbound::Text(t)) if t == "y"));
        assert_eq!(rx.queue.lock().items.heap_capacity(), 0);
    }
}
