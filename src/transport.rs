//! The WebSocket transport shared by the raw-WebSocket front ends: reading
//! and writing frames, frame-size and message-rate limits, liveness pings,
//! timers, and closing with a reason. Adapters implement [`Session`] and
//! only speak their protocol.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::metrics::{MetricsObserver, ProtocolCounters};
use crate::outbox::{CloseReason, Order, Outbound, OutboxReceiver};
use crate::presence::{Connection, OutboxHandle};
use crate::shutdown::Shutdown;
use crate::websocket::{Incoming, MessageReader, ReadError, WebSocket};

/// Close codes used by the transport (RFC 6455).
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Going away: server shutdown, connection lifetime over, peer silent.
    pub const GOING_AWAY: u16 = 1001;
    /// Unsupported data (binary frame where text is expected).
    pub const UNSUPPORTED: u16 = 1003;
    /// Policy violation (message rate, auth).
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
    /// WebSocket protocol error (e.g. an unmasked client frame).
    pub const PROTOCOL: u16 = 1002;
    /// Invalid payload data (a text frame that is not UTF-8).
    pub const INVALID_DATA: u16 = 1007;
}

/// Transport limits and timings.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Largest accepted WebSocket message (and frame), in bytes.
    pub max_frame_bytes: usize,
    /// Messages per second a client may send; more are refused.
    pub max_messages_per_second: u32,
    /// Interval of WebSocket pings that detect dead peers.
    pub ping_interval: Duration,
    /// A peer that sends nothing (not even a pong) for this long is closed.
    pub idle_timeout: Duration,
    /// A single write that takes longer than this means the peer stopped
    /// reading: the connection is dropped.
    pub write_timeout: Duration,
    /// How long the writer of a busy connection holds a broadcast for more
    /// to share its write (`--write-delay`; zero: written at once).
    pub write_delay: Duration,
    /// Offer permessage-deflate to clients that ask for it
    /// (`--websocket-compression`): large frames go out compressed, each
    /// broadcast compressed once.
    pub compression: bool,
    /// The server's metrics (None: not counted, e.g. in unit tests).
    pub metrics: Option<Arc<MetricsObserver>>,
    /// The byte and rate-limit counters of this connection's protocol,
    /// set once per front end ([`crate::app::Settings::transport_for`]) so
    /// that a frame costs an atomic add.
    pub(crate) counters: ProtocolCounters,
}

impl TransportConfig {
    /// What a WebSocket upgrade accepts under this configuration.
    pub fn websocket(&self) -> crate::websocket::Options {
        crate::websocket::Options {
            max_message_bytes: self.max_frame_bytes,
            compression: self.compression,
        }
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_frame_bytes: 128 * 1024,
            max_messages_per_second: 100,
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            write_delay: Duration::from_millis(10),
            compression: false,
            metrics: None,
            counters: ProtocolCounters::default(),
        }
    }
}

/// How long a write that is in flight when the connection is closed may
/// still take before the peer is dropped without a close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What a session wants after handling an input.
#[derive(Debug)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// Close the connection (queued frames are flushed first).
    Close(CloseReason),
    /// Wait for the channel policy's backend check (reading pauses, so
    /// later frames stay in order), then call [`Session::on_resume`].
    Wait(crate::policy::Pending),
}

impl PartialEq for Flow {
    /// Two waits are never equal (each waits for its own answer).
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Flow::Continue, Flow::Continue) => true,
            (Flow::Close(a), Flow::Close(b)) => a == b,
            _ => false,
        }
    }
}

/// One protocol's per-connection logic.
pub trait Session: Send + 'static {
    /// The core connection this session drives.
    fn connection(&self) -> &Connection;

    /// A text frame arrived.
    fn on_text(&mut self, text: &str) -> Flow;

    /// A binary frame arrived.
    fn on_binary(&mut self, _data: &[u8]) -> Flow {
        Flow::Close(CloseReason::new(
            close::UNSUPPORTED,
            "binary frames are not supported; send JSON text frames",
        ))
    }

    /// A frame was dropped because the client exceeded its message rate.
    fn on_rate_limited(&mut self, limit: u32) -> Flow;

    /// The server removed the connection from the core channel `channel`
    /// (an operator's action): unsubscribe from it as if the client had
    /// asked, and tell the client `reason` in the protocol's own way.
    fn on_removed(&mut self, channel: &str, reason: &str) -> Flow;

    /// The backend check a [`Flow::Wait`] waited for has answered: handle
    /// what was put aside.
    fn on_resume(&mut self) -> Flow {
        Flow::Continue
    }

    /// The next time [`Session::on_timer`] should run, if any.
    fn next_timer(&self) -> Option<Instant> {
        None
    }

    /// The time from [`Session::next_timer`] has come.
    fn on_timer(&mut self, _now: Instant) -> Flow {
        Flow::Continue
    }

    /// The frame of the transport's liveness check, sent every ping
    /// interval: a WebSocket ping, or a protocol's own (Engine.IO 4's `2`).
    fn keepalive(&self) -> Outbound {
        Outbound::Ping
    }

    /// The frames the client gets after what is queued and before the
    /// close frame when the connection closes for `reason` (e.g. Socket.IO's
    /// error event and Engine.IO close packet), even a slow consumer.
    fn farewell(&self, _reason: &CloseReason) -> Vec<Outbound> {
        Vec::new()
    }
}

pub use crate::rate::RateLimiter;

/// Maps why reading stopped to the close it calls for.
fn read_error(e: ReadError, limit: usize, conn: crate::ids::ConnId) -> Flow {
    match e {
        ReadError::TooBig => Flow::Close(CloseReason::new(
            close::TOO_BIG,
            format!("message too big: the limit is {limit} bytes"),
        )),
        ReadError::InvalidUtf8 => Flow::Close(CloseReason::new(
            close::INVALID_DATA,
            "a text frame was not valid UTF-8",
        )),
        ReadError::Protocol(violation) => Flow::Close(CloseReason::new(
            close::PROTOCOL,
            format!("WebSocket protocol error: {violation}"),
        )),
        ReadError::Eof => Flow::Close(CloseReason::new(close::NORMAL, "client disconnected")),
        ReadError::Io(e) => {
            tracing::debug!(%conn, error = %e, "websocket read error");
            Flow::Close(CloseReason::new(close::NORMAL, "connection error"))
        }
    }
}

/// Where the writer puts frames: the client's socket, or a test's
/// recorder.
pub(crate) trait FrameSink {
    /// Writes `items` in order; done when the kernel has taken them all.
    fn write<'a>(
        &'a mut self,
        items: &'a [Outbound],
    ) -> impl Future<Output = std::io::Result<()>> + Send + 'a;
}

/// A client's socket, and whether its frames may go out compressed.
#[derive(Clone, Copy)]
pub(crate) struct SocketSink<'s> {
    pub stream: &'s TcpStream,
    pub compression: bool,
}

impl FrameSink for SocketSink<'_> {
    fn write<'a>(
        &'a mut self,
        items: &'a [Outbound],
    ) -> impl Future<Output = std::io::Result<()>> + Send + 'a {
        crate::websocket::FrameWrite::items(self.stream, items, self.compression)
    }
}

/// Most frames written in one flush.
const WRITE_BATCH: usize = 64;

/// A held write goes as soon as it has this many frames: most of the
/// system call's cost is shared by then, and at high rates the frames
/// wait less than the whole delay (at 1,000 frames a second, p99 8.5 ms
/// instead of 12 ms with the default delay, for 2.4 instead of 1.9 µs of
/// CPU per delivery).
const HELD_WRITE_FRAMES: usize = 8;

/// A connection written to less than this many write delays ago is busy:
/// its next broadcasts wait up to the delay to share a write. With the
/// default 10 ms, a connection that gets 25 frames a second or more.
const BUSY_WRITES_WITHIN: u32 = 4;

/// Writes queued frames until the outbox is closed or the peer is gone.
/// Frames that are already queued are written together with one flush, and
/// a write that completes at once costs no timer. Returns true if the peer
/// is gone (nothing more can be written).
// Not an `async fn`: it would keep each argument twice (see `read_side`).
#[allow(clippy::manual_async_fn)]
fn write_loop<'a, W: FrameSink>(
    sink: &'a mut W,
    rx: &'a mut OutboxReceiver,
    outbox: &'a crate::outbox::Outbox,
    cfg: &'a TransportConfig,
) -> impl Future<Output = bool> + 'a {
    async move {
        let mut batch = Batch::default();
        // When this connection was last written to: a connection written to
        // within BUSY_WRITES_WITHIN write delays is busy, and only a busy
        // connection's broadcasts are held.
        let mut last_write: Option<Instant> = None;
        loop {
            // None once the outbox is closed: a close ends the wait (the
            // outbox wakes the writer), with no future of its own.
            match rx.recv_open().await {
                Some(item) => batch.push(item),
                None => return false,
            }
            fill(&mut batch, rx);
            // --write-delay: on a busy connection, frames queued meanwhile
            // (up to HELD_WRITE_FRAMES) share this write; a quiet
            // connection's frame goes at once. A close ends the wait early;
            // what is held is still written. A reply (not a broadcast) is
            // never held, nor frames with it. Boxed: a connection pays for
            // the timer only while it waits. Without a delay `last_write`
            // stays None: no clock read.
            let mut closing = false;
            let busy =
                last_write.is_some_and(|at| at.elapsed() < cfg.write_delay * BUSY_WRITES_WITHIN);
            if busy && batch.len() < HELD_WRITE_FRAMES {
                let more = HELD_WRITE_FRAMES - batch.len();
                Box::pin(rx.hold_for_more(cfg.write_delay, more)).await;
                closing = outbox.is_closed();
                fill(&mut batch, rx);
            }
            let result = {
                let write = sink.write(batch.as_slice());
                tokio::pin!(write);
                // Most writes complete at once; only a blocked one needs the
                // timers, boxed so that an idle connection does not keep them.
                let first =
                    std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx)))
                        .await;
                match first {
                    std::task::Poll::Ready(r) => Ok(r),
                    std::task::Poll::Pending => {
                        let (result, closed) =
                            Box::pin(finish_blocked_write(write.as_mut(), outbox, cfg, closing))
                                .await;
                        closing |= closed;
                        result
                    }
                }
            };
            for item in batch.as_slice() {
                if matches!(result, Ok(Ok(()))) {
                    cfg.counters.bytes_sent.inc_by(item.payload_len());
                }
                outbox.sent(item);
            }
            batch = Batch::default();
            if !cfg.write_delay.is_zero() {
                last_write = Some(Instant::now());
            }
            // The sampled frame, if this batch had it, is written now.
            if let (Ok(Ok(())), Some(queued)) = (&result, rx.take_sample()) {
                cfg.counters
                    .delivery
                    .observe(queued.elapsed().as_secs_f64());
            }
            match result {
                Ok(Ok(())) if closing => return false,
                Ok(Ok(())) => {}
                Ok(Err(_)) => return true,
                Err(()) => {
                    outbox.close(CloseReason::new(
                        crate::outbox::CLOSE_SLOW_CONSUMER,
                        "client is not reading: a write did not complete in time",
                    ));
                    return true;
                }
            }
        }
    }
}

/// A write the kernel could not take at once: waits for it up to the
/// write timeout, or, once the connection is closing (`closing`, or closed
/// meanwhile, e.g. as a slow consumer), for a moment more, then gives up
/// on a peer that may never read again rather than keep its members for
/// the whole write timeout. Returns the write's result (`Err(())`: it did
/// not complete in time) and whether the connection closed meanwhile.
async fn finish_blocked_write<F: Future<Output = std::io::Result<()>>>(
    mut write: std::pin::Pin<&mut F>,
    outbox: &crate::outbox::Outbox,
    cfg: &TransportConfig,
    closing: bool,
) -> (Result<std::io::Result<()>, ()>, bool) {
    if closing {
        return (timeout(CLOSE_GRACE, write).await.map_err(|_| ()), true);
    }
    tokio::select! {
        r = &mut write => (Ok(r), false),
        _ = sleep(cfg.write_timeout) => (Err(()), false),
        _ = outbox.closed() => {
            (timeout(CLOSE_GRACE, &mut write).await.map_err(|_| ()), true)
        }
    }
}

/// The frames of one write: one inline (at a steady rate most writes
/// have one), more in a vector allocated only then and freed after the
/// write, so that an idle connection keeps none (a kept vector was 160
/// bytes per connection).
#[derive(Default)]
enum Batch {
    #[default]
    Empty,
    One(Outbound),
    Many(Vec<Outbound>),
}

impl Batch {
    fn push(&mut self, item: Outbound) {
        *self = match std::mem::take(self) {
            Batch::Empty => Batch::One(item),
            Batch::One(first) => {
                let mut items = Vec::with_capacity(4);
                items.push(first);
                items.push(item);
                Batch::Many(items)
            }
            Batch::Many(mut items) => {
                items.push(item);
                Batch::Many(items)
            }
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn as_slice(&self) -> &[Outbound] {
        match self {
            Batch::Empty => &[],
            Batch::One(item) => std::slice::from_ref(item),
            Batch::Many(items) => items,
        }
    }
}

/// Moves already queued frames into `batch`, up to [`WRITE_BATCH`].
fn fill(batch: &mut Batch, rx: &mut OutboxReceiver) {
    while batch.len() < WRITE_BATCH {
        match rx.try_recv() {
            Some(item) => batch.push(item),
            None => break,
        }
    }
}

/// Runs a session over an upgraded socket until either side closes. When it
/// completes, the session (and so its core connection) has been dropped,
/// which removes the connection's memberships at once.
///
/// Not an `async fn`: an async fn keeps each argument twice (as the
/// argument and as the local it is moved into), and a future bound to a
/// local and then awaited once more; that made this future 4.3 KB per
/// connection. Here everything the connection needs is moved once into one
/// heap-allocated future (1.8 KB), and the reader and writer only borrow
/// from it.
pub fn run<S: Session>(
    socket: WebSocket,
    outbox_rx: OutboxReceiver,
    session: S,
    cfg: Arc<TransportConfig>,
    shutdown: Shutdown,
) -> impl Future<Output = ()> + Send + 'static {
    let mut socket = socket;
    let conn_id = session.connection().id();
    let protocol = session.connection().protocol();
    let outbox = session.connection().outbox_handle();
    tracing::debug!(
        conn = %conn_id,
        protocol = session.connection().protocol(),
        user = session.connection().user_id().as_deref().unwrap_or("-"),
        "connection opened"
    );
    let mut outbox_rx = outbox_rx;
    let mut session = Some(session);
    Box::pin(async move {
        let (stream, reader) = socket.parts();
        let sink = SocketSink {
            stream,
            compression: reader.compression(),
        };
        let (session_gone_tx, session_gone_rx) = tokio::sync::oneshot::channel::<Vec<Outbound>>();
        // Called in place (not bound to locals first), so that each side's
        // future is stored once, inside the join. A delivery wakes only the
        // writer, a frame from the client only the reader.
        crate::woken::join(
            read_side(
                stream,
                reader,
                &mut session,
                &outbox,
                &cfg,
                &shutdown,
                session_gone_tx,
            ),
            write_side(sink, &mut outbox_rx, &outbox, &cfg, session_gone_rx),
        )
        .await;
        let reason = outbox.close_reason();
        if let Some(metrics) = &cfg.metrics {
            // No reason: the peer vanished without a close (1006).
            metrics
                .live()
                .closed(protocol, reason.as_ref().map_or(1006, |r| r.code));
        }
        tracing::debug!(
            conn = %conn_id,
            code = reason.as_ref().map(|r| r.code),
            reason = reason.as_ref().map(|r| &*r.reason).unwrap_or(""),
            "connection closed"
        );
        // Finish the closing handshake: read (and drop) what the peer still
        // sends until its close frame. Closing a socket with unread input makes
        // the kernel reset the connection, and the peer would lose our close
        // frame and its reason.
        // Not when the peer's close frame has come: it waits for us to
        // close the TCP connection.
        if reader.peer_closed() {
            return;
        }
        let _ = timeout(CLOSE_GRACE, async {
            while let Ok(msg) = reader.read(stream).await {
                if matches!(msg, Incoming::Close(_)) {
                    break;
                }
            }
        })
        .await;
    })
}

/// Writes the outbox until the connection closes, then, once the session
/// is gone, what is still queued and the close frame ([`finish_closing`]).
// Not an `async fn`: it would keep each argument twice (see `read_side`).
#[allow(clippy::manual_async_fn)]
fn write_side<'a>(
    sink: SocketSink<'a>,
    outbox_rx: &'a mut OutboxReceiver,
    outbox: &'a OutboxHandle,
    cfg: &'a TransportConfig,
    session_gone: tokio::sync::oneshot::Receiver<Vec<Outbound>>,
) -> impl Future<Output = ()> + 'a {
    async move {
        let mut sink = sink;
        let client_gone = write_loop(&mut sink, outbox_rx, outbox, cfg).await;
        if client_gone {
            return;
        }
        // Boxed: the closing steps' timers and writes would otherwise be part
        // of every connection's future for its whole life.
        Box::pin(finish_closing(sink, outbox_rx, outbox, cfg, session_gone)).await;
    }
}

/// Once the session is gone (its members removed), flushes what is
/// already queued (e.g. a final error), then says why the connection
/// closes. Bounded in time: a peer that stopped reading gets dropped.
async fn finish_closing(
    sink: SocketSink<'_>,
    outbox_rx: &mut OutboxReceiver,
    outbox: &OutboxHandle,
    cfg: &TransportConfig,
    session_gone: tokio::sync::oneshot::Receiver<Vec<Outbound>>,
) {
    let farewell = timeout(CLOSE_GRACE, session_gone)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let reason = outbox
        .close_reason()
        .unwrap_or_else(|| CloseReason::new(close::NORMAL, "closing"));
    // A slow consumer gets no more of its backlog, only the close frame, so
    // that a client that reads again learns why (1013) instead of seeing
    // the connection drop.
    let slow = reason.code == crate::outbox::CLOSE_SLOW_CONSUMER;
    let mut sink = sink;
    let flush = async {
        while let Some(item) = outbox_rx.try_recv().filter(|_| !slow) {
            if sink.write(std::slice::from_ref(&item)).await.is_err() {
                return;
            }
            cfg.counters.bytes_sent.inc_by(item.payload_len());
            outbox.sent(&item);
        }
        if !farewell.is_empty() && sink.write(&farewell).await.is_err() {
            return;
        }
        let _ = crate::websocket::FrameWrite::close(sink.stream, reason.code, &reason.reason).await;
    };
    let _ = timeout(Duration::from_secs(2), flush).await;
}

/// Reads frames into the session, runs its timers and the liveness pings,
/// until either side closes. Then drops the session (ending its
/// memberships) and tells the writer.
///
/// This, [`read_loop`], [`write_side`] and [`write_loop`] return `async`
/// blocks rather than being `async fn`s: an `async fn` keeps each argument
/// twice in its future (see [`run`]), and these live in every connection's.
#[allow(clippy::manual_async_fn)]
fn read_side<'a, S: Session>(
    stream: &'a TcpStream,
    reader: &'a mut MessageReader,
    session: &'a mut Option<S>,
    outbox: &'a OutboxHandle,
    cfg: &'a TransportConfig,
    shutdown: &'a Shutdown,
    session_gone: tokio::sync::oneshot::Sender<Vec<Outbound>>,
) -> impl Future<Output = ()> + 'a {
    async move {
        if let Some(session) = session.as_mut() {
            read_loop(stream, reader, session, outbox, cfg, shutdown).await;
        }
        let farewell = match (session.as_ref(), outbox.close_reason()) {
            (Some(session), Some(reason)) => session.farewell(&reason),
            _ => Vec::new(),
        };
        // Memberships end before the close frame goes out, so a peer that
        // saw our close frame knows the others were told it left.
        drop(session.take());
        let _ = session_gone.send(farewell);
    }
}

#[allow(clippy::manual_async_fn)]
fn read_loop<'a, S: Session>(
    stream: &'a TcpStream,
    reader: &'a mut MessageReader,
    session: &'a mut S,
    outbox: &'a OutboxHandle,
    cfg: &'a TransportConfig,
    shutdown: &'a Shutdown,
) -> impl Future<Output = ()> + 'a {
    async move {
        let conn_id = session.connection().id();
        let mut limiter = RateLimiter::new(cfg.max_messages_per_second);
        let mut last_heard = Instant::now();
        // The next liveness ping shares the session's timer: a tokio
        // `Interval` of its own kept a boxed timer per idle connection.
        let mut next_ping = Instant::now() + cfg.ping_interval;
        // Created once: re-creating them on every frame costs a waiter
        // registration each time. One future for a close and an order (both
        // rare, both on the outbox's one signal) keeps the connection smaller.
        let signalled = outbox.closed_or_ordered();
        tokio::pin!(signalled);
        // A shutdown closes every outbox (`Presence::close_all`), which ends
        // this loop through `signalled`: no future of its own per connection.
        // A connection registered after that began closes here.
        if closed_for_shutdown(shutdown, outbox) {
            return;
        }
        loop {
            let timer = session.next_timer().map_or(next_ping, |t| t.min(next_ping));
            let mut flow = tokio::select! {
                _ = &mut signalled => {
                    if outbox.is_closed() {
                        break;
                    }
                    signalled.set(outbox.closed_or_ordered());
                    obey(session, outbox.take_orders())
                }
                _ = sleep_until(timer) => {
                    let now = Instant::now();
                    if now < next_ping {
                        session.on_timer(now)
                    } else if last_heard.elapsed() > cfg.idle_timeout {
                        Flow::Close(CloseReason::new(close::GOING_AWAY, "no traffic from the client within the idle timeout"))
                    } else {
                        // A session timer due at the same time fires on the
                        // next turn (its deadline has passed).
                        next_ping = now + cfg.ping_interval;
                        outbox.push(session.keepalive());
                        Flow::Continue
                    }
                }
                msg = reader.read(stream) => {
                    last_heard = Instant::now();
                    match msg {
                        Err(e) => read_error(e, cfg.max_frame_bytes, conn_id),
                        // Text and binary messages share one rate limit, and a
                        // flood of either ends in the same policy close.
                        Ok(msg @ (Incoming::Text(_) | Incoming::Binary(_))) => {
                            let len = match &msg {
                                Incoming::Text(text) => text.len(),
                                Incoming::Binary(data) => data.len(),
                                _ => 0,
                            };
                            cfg.counters.bytes_received.inc_by(len as u64);
                            within_rate(&mut limiter, cfg, session, |session| match &msg {
                                Incoming::Text(text) => session.on_text(text),
                                Incoming::Binary(data) => session.on_binary(data),
                                _ => Flow::Continue,
                            })
                        }
                        Ok(Incoming::Ping(payload)) => {
                            outbox.push(Outbound::Pong(payload));
                            Flow::Continue
                        }
                        Ok(Incoming::Pong) => Flow::Continue,
                        Ok(Incoming::Close(_)) => Flow::Close(CloseReason::new(close::NORMAL, "client closed")),
                    }
                }
            };
            while let Flow::Wait(pending) = flow {
                // Orders wait for the pending step; only a close ends it.
                let closed = outbox.closed();
                flow = tokio::select! {
                    _ = closed => return,
                    _ = pending => session.on_resume(),
                };
            }
            if let Flow::Close(reason) = flow {
                tracing::debug!(conn = %conn_id, code = reason.code, reason = %reason.reason, "closing connection");
                outbox.close(reason);
                break;
            }
        }
    }
}

/// Closes a connection registered after the server's shutdown began (the
/// shutdown closed every outbox it knew of); true if it did.
pub(crate) fn closed_for_shutdown(shutdown: &Shutdown, outbox: &OutboxHandle) -> bool {
    if !shutdown.is_shutting_down() {
        return false;
    }
    outbox.close(CloseReason::new(
        close::GOING_AWAY,
        crate::server::SHUTDOWN_REASON,
    ));
    true
}

/// One client message through the message-rate limit: handled by
/// `handle`, or, over the limit, dropped (the session tells its client),
/// and a flood or a sustained excess closes the connection. Every
/// transport (WebSocket, Engine.IO long-polling) counts client messages
/// here.
pub(crate) fn within_rate<S: Session>(
    limiter: &mut RateLimiter,
    cfg: &TransportConfig,
    session: &mut S,
    handle: impl FnOnce(&mut S) -> Flow,
) -> Flow {
    if limiter.allow(Instant::now()) {
        return handle(session);
    }
    cfg.counters.rate_limited.inc();
    if limiter.flooding() || limiter.sustained_abuse(Instant::now()) {
        Flow::Close(CloseReason::new(
            close::POLICY,
            format!(
                "message rate over {} per second for too long",
                cfg.max_messages_per_second
            ),
        ))
    } else {
        session.on_rate_limited(cfg.max_messages_per_second)
    }
}

/// Hands the server's orders to the session, stopping at the first that
/// ends the connection or waits.
pub(crate) fn obey<S: Session>(session: &mut S, orders: Vec<Order>) -> Flow {
    for order in orders {
        let flow = match order {
            Order::LeaveChannel { channel, reason } => session.on_removed(&channel, &reason),
        };
        if flow != Flow::Continue {
            return flow;
        }
    }
    Flow::Continue
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Waker};

    use super::*;
    use crate::outbox::Outbox;
    use axum::extract::ws::Utf8Bytes;

    /// A sink that accepts nothing until it is opened.
    #[derive(Clone, Default)]
    struct Gate {
        state: Arc<Mutex<(bool, Option<Waker>, usize)>>,
    }

    impl Gate {
        fn open(&self) {
            let mut s = self.state.lock().unwrap();
            s.0 = true;
            if let Some(w) = s.1.take() {
                w.wake();
            }
        }
        fn written(&self) -> usize {
            self.state.lock().unwrap().2
        }
    }

    impl FrameSink for Gate {
        fn write<'a>(
            &'a mut self,
            items: &'a [Outbound],
        ) -> impl Future<Output = std::io::Result<()>> + Send + 'a {
            std::future::poll_fn(move |cx: &mut Context<'_>| {
                let mut s = self.state.lock().unwrap();
                if s.0 {
                    s.2 += items.len();
                    Poll::Ready(Ok(()))
                } else {
                    s.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
        }
    }

    #[tokio::test]
    async fn a_write_that_finishes_during_close_ends_the_loop_cleanly() {
        let (outbox, mut rx) = Outbox::new(1 << 20);
        let mut gate = Gate::default();
        outbox.push_text(Utf8Bytes::from_static("{}"));
        let cfg = TransportConfig::default();
        let opener = gate.clone();
        let closer = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            outbox.close(CloseReason::new(close::GOING_AWAY, "bye"));
            tokio::time::sleep(Duration::from_millis(50)).await;
            // The peer reads again within the grace period.
            opener.open();
        };
        let (gone, ()) = tokio::join!(write_loop(&mut gate, &mut rx, &outbox, &cfg), closer);
        assert!(
            !gone,
            "the peer is still there: the caller sends the close frame"
        );
        assert_eq!(gate.written(), 1);
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn a_peer_that_never_reads_is_dropped_after_the_grace_period() {
        let (outbox, mut rx) = Outbox::new(1 << 20);
        let mut gate = Gate::default();
        outbox.push_text(Utf8Bytes::from_static("{}"));
        let cfg = TransportConfig::default();
        let closer = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            outbox.close(CloseReason::new(close::GOING_AWAY, "bye"));
        };
        let started = Instant::now();
        let (gone, ()) = tokio::join!(write_loop(&mut gate, &mut rx, &outbox, &cfg), closer);
        assert!(gone);
        assert!(started.elapsed() < CLOSE_GRACE + Duration::from_millis(500));
    }
    /// A sink that is always ready and records how many frames each write
    /// had.
    #[derive(Default)]
    struct Flushes {
        flushed: Vec<usize>,
    }

    impl FrameSink for Flushes {
        fn write<'a>(
            &'a mut self,
            items: &'a [Outbound],
        ) -> impl Future<Output = std::io::Result<()>> + Send + 'a {
            self.flushed.push(items.len());
            std::future::ready(Ok(()))
        }
    }

    fn delayed(ms: u64) -> TransportConfig {
        TransportConfig {
            write_delay: Duration::from_millis(ms),
            ..TransportConfig::default()
        }
    }

    fn broadcast() -> Outbound {
        Outbound::Text(Utf8Bytes::from_static("{}"))
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connections_frames_share_a_write_and_a_quiet_ones_go_at_once() {
        let (outbox, mut rx) = Outbox::new(1 << 20);
        let mut sink = Flushes::default();
        let cfg = delayed(20);
        let publisher = async {
            // Quiet: the first frame is written at once. Then the
            // connection is busy: the next three share one write, 20 ms
            // after the first of them.
            for _ in 0..4 {
                outbox.push_deferrable(broadcast());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Quiet again (nothing written for more than four delays):
            // at once.
            tokio::time::sleep(Duration::from_millis(200)).await;
            outbox.push_deferrable(broadcast());
            tokio::time::sleep(Duration::from_millis(1)).await;
            assert_eq!(
                outbox.queued_bytes(),
                0,
                "a quiet connection's frame was held"
            );
            tokio::time::sleep(Duration::from_millis(40)).await;
            outbox.close(CloseReason::new(close::NORMAL, "done"));
        };
        let (gone, ()) = tokio::join!(write_loop(&mut sink, &mut rx, &outbox, &cfg), publisher);
        assert!(!gone);
        assert_eq!(sink.flushed, vec![1, 3, 1]);
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_write_goes_once_it_has_enough_frames() {
        let (outbox, mut rx) = Outbox::new(1 << 20);
        let mut sink = Flushes::default();
        let cfg = delayed(1000);
        let started = Instant::now();
        let publisher = async {
            // The first makes the connection busy; the next are held
            // until there are HELD_WRITE_FRAMES, long before the delay.
            for _ in 0..=HELD_WRITE_FRAMES {
                outbox.push_deferrable(broadcast());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(outbox.queued_bytes(), 0, "the full write was held");
            outbox.close(CloseReason::new(close::NORMAL, "done"));
        };
        let (gone, ()) = tokio::join!(write_loop(&mut sink, &mut rx, &outbox, &cfg), publisher);
        assert!(!gone);
        assert_eq!(sink.flushed, vec![1, HELD_WRITE_FRAMES]);
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_write_delay_each_frame_is_written_at_once() {
        let (outbox, mut rx) = Outbox::new(1 << 20);
        let mut sink = Flushes::default();
        let cfg = delayed(0);
        let publisher = async {
            for _ in 0..3 {
                outbox.push_deferrable(broadcast());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            outbox.close(CloseReason::new(close::NORMAL, "done"));
        };
        let (gone, ()) = tokio::join!(write_loop(&mut sink, &mut rx, &outbox, &cfg), publisher);
        assert!(!gone);
        assert_eq!(sink.flushed, vec![1, 1, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_close_during_the_write_delay_still_writes_the_held_frames() {
        let (outbox, mut rx) = Outbox::new(1 << 20);
        let mut sink = Flushes::default();
        let cfg = delayed(1000);
        let started = Instant::now();
        let closer = async {
            // The first frame makes the connection busy; the next two are
            // held until the close.
            outbox.push_deferrable(broadcast());
            tokio::time::sleep(Duration::from_millis(1)).await;
            outbox.push_deferrable(broadcast());
            outbox.push_deferrable(broadcast());
            tokio::time::sleep(Duration::from_millis(10)).await;
            outbox.close(CloseReason::new(close::GOING_AWAY, "bye"));
        };
        let (gone, ()) = tokio::join!(write_loop(&mut sink, &mut rx, &outbox, &cfg), closer);
        assert!(!gone, "the caller still sends the close frame");
        assert_eq!(sink.flushed, vec![1, 2]);
        assert_eq!(outbox.queued_bytes(), 0);
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "the close ended the wait"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_is_not_held_by_the_write_delay() {
        let (outbox, mut rx) = Outbox::new(1 << 20);
        let mut sink = Flushes::default();
        let cfg = delayed(1000);
        let started = Instant::now();
        let client = async {
            // A reply alone: written at once.
            outbox.push_text(Utf8Bytes::from_static("{}"));
            tokio::time::sleep(Duration::from_millis(10)).await;
            // Busy: a reply on its own is still written at once.
            outbox.push_text(Utf8Bytes::from_static("{}"));
            tokio::time::sleep(Duration::from_millis(10)).await;
            // A broadcast is held until a reply comes, then both go.
            outbox.push_deferrable(broadcast());
            tokio::time::sleep(Duration::from_millis(10)).await;
            outbox.push_text(Utf8Bytes::from_static("{}"));
            tokio::time::sleep(Duration::from_millis(10)).await;
            outbox.close(CloseReason::new(close::NORMAL, "done"));
        };
        let (gone, ()) = tokio::join!(write_loop(&mut sink, &mut rx, &outbox, &cfg), client);
        assert!(!gone);
        assert_eq!(sink.flushed, vec![1, 1, 2]);
        assert!(started.elapsed() < Duration::from_millis(100));
    }
}
