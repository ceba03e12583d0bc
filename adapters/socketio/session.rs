//! One socketioxide Socket.IO socket (one namespace of one client): its
//! core connection, its Avaya state ([`Avaya`]), the event order, and the
//! pump that emits the connection's outbox on the socketioxide socket.
//!
//! Every frame for the client, replies included, goes through the core
//! outbox, so the client sees replies and channel events in one order.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use socketioxide::extract::{AckSender, SocketRef};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::SocketIoConfig;
use super::auth::User;
use super::avaya::{Avaya, Held, lock};
use super::wire::{self, Framing, WireError, codes};
use crate::outbox::{Outbound, OutboxReceiver};
use crate::presence::Connection;
use crate::services::rpc::RpcCall;
use crate::shutdown::Shutdown;

/// Events that may wait behind one that waits for the channel check.
const MAX_WAITING_EVENTS: usize = 256;

/// Counts events in one-second windows.
#[derive(Debug)]
struct RateWindow {
    start: Instant,
    count: u32,
}

/// The state of one socket, shared by its event handlers and its pump.
#[derive(Debug)]
pub struct Session {
    /// The core connection; None once the socket is gone.
    conn: Mutex<Option<Connection>>,
    /// The outbox receiver until the pump takes it.
    outbox_rx: Mutex<Option<OutboxReceiver>>,
    avaya: Avaya,
    /// Events that arrived while an earlier one waits for the channel
    /// check (None: nothing waits, events are handled as they come).
    waiting: Mutex<Option<VecDeque<(String, Value)>>>,
    rate: Mutex<RateWindow>,
    config: Arc<SocketIoConfig>,
    gone: Notify,
}

impl Session {
    /// A session for an authenticated socket.
    pub fn new(
        conn: Connection,
        outbox_rx: OutboxReceiver,
        user: User,
        sid: String,
        config: Arc<SocketIoConfig>,
    ) -> Self {
        // socketioxide writes the Socket.IO packet header itself.
        let avaya = Avaya::new(&conn, user, sid, Framing::Bare, config.clone());
        Session {
            conn: Mutex::new(Some(conn)),
            outbox_rx: Mutex::new(Some(outbox_rx)),
            avaya,
            waiting: Mutex::new(None),
            rate: Mutex::new(RateWindow {
                start: Instant::now(),
                count: 0,
            }),
            config,
            gone: Notify::new(),
        }
    }

    /// Runs `f` with the core connection, unless the socket is gone.
    fn with_conn<R>(&self, f: impl FnOnce(&Connection) -> R) -> Option<R> {
        let guard = lock(&self.conn);
        guard.as_ref().map(f)
    }

    fn send(&self, frame: crate::outbox::Utf8Bytes) {
        self.with_conn(|c| self.avaya.reply(c, frame));
    }

    /// The socket disconnected: leave every channel (others see
    /// `party.leaves` if this was the user's last socket there) and stop
    /// the pump.
    pub fn close(&self) {
        let conn = lock(&self.conn).take();
        drop(conn);
        self.avaya.forget_channels();
        self.gone.notify_one();
    }

    /// True if the event is within the rate limit; otherwise the client
    /// gets an `error`. (Sockets of rollcall's own Engine.IO are limited
    /// by the transport, per frame.)
    fn admit(&self) -> bool {
        let limit = self.config.max_events_per_second;
        let over = {
            let mut rate = lock(&self.rate);
            let now = Instant::now();
            if now.duration_since(rate.start) >= Duration::from_secs(1) {
                rate.start = now;
                rate.count = 0;
            }
            rate.count += 1;
            rate.count > limit
        };
        self.with_conn(|c| {
            if over {
                self.avaya.rate_limited(c, limit);
            }
            !over
        })
        .unwrap_or(false)
    }

    /// Handles one client event, in arrival order: at once (socketioxide
    /// calls this synchronously, packet after packet), or, while an
    /// earlier event waits for the channel check, after it. Over the event
    /// rate, or with too many events waiting, it is refused.
    pub fn on_event(self: &Arc<Self>, event: String, payload: Value) {
        if !self.admit() {
            return;
        }
        let mut waiting = lock(&self.waiting);
        if let Some(queue) = waiting.as_mut() {
            if queue.len() >= MAX_WAITING_EVENTS {
                drop(waiting);
                self.send(wire::error(&WireError::new(
                    codes::RATE_LIMITED,
                    format!(
                        "more than {MAX_WAITING_EVENTS} events are waiting for a channel check; this event was dropped, slow down"
                    ),
                )));
                return;
            }
            queue.push_back((event, payload));
            return;
        }
        if let Some(held) = self.try_handle(event, payload) {
            *waiting = Some(VecDeque::new());
            drop(waiting);
            tokio::spawn(self.clone().resume(held));
        }
    }

    /// Any event that is not Avaya's: with `--rpc-url`, a call the backend
    /// answers; its answer goes to the client's acknowledgment callback as
    /// `{"data": …}` or `{"error": {"code", "message"}}` (without a
    /// callback, the answer is dropped). Without a backend, the unknown
    /// event's `error`.
    pub fn on_call(self: &Arc<Self>, event: String, payload: Value, ack: AckSender) {
        let Some(rpc) = self.avaya.rpc_for(&event) else {
            return self.on_event(event, payload);
        };
        if !self.admit() {
            return;
        }
        let Some(call) = self.with_conn(|c| RpcCall::new(event, payload, c)) else {
            return;
        };
        tokio::spawn(async move {
            let answer = super::avaya::rpc_answer(&rpc, &call).await;
            let _ = ack.send(&answer);
        });
    }

    fn try_handle(&self, event: String, payload: Value) -> Option<Held> {
        self.with_conn(|c| self.avaya.try_handle(c, event, payload))
            .flatten()
    }

    /// Asks the channel check, handles the held event again, then the
    /// events that arrived meanwhile, in order (pausing again if one of
    /// them needs the check too).
    async fn resume(self: Arc<Self>, first: Held) {
        let mut held = first;
        loop {
            let Some(pending) = self.with_conn(|c| c.presence().consult(*held.question)) else {
                *lock(&self.waiting) = None;
                return;
            };
            pending.await;
            self.with_conn(|c| self.avaya.dispatch(c, &held.event, held.payload, true));
            loop {
                let next = {
                    let mut waiting = lock(&self.waiting);
                    match waiting.as_mut().and_then(VecDeque::pop_front) {
                        Some(next) => next,
                        None => {
                            *waiting = None;
                            return;
                        }
                    }
                };
                if let Some(again) = self.try_handle(next.0, next.1) {
                    held = again;
                    break;
                }
            }
        }
    }

    /// Emits the connection's outbox on the socket until the socket goes
    /// away, the core closes the connection (slow consumer, shutdown) or
    /// the server shuts down. `_pumping` is held until the goodbye is sent.
    pub async fn pump(
        self: Arc<Self>,
        socket: SocketRef,
        mut shutdown: Shutdown,
        _pumping: Shutdown,
    ) {
        let Some(mut rx) = lock(&self.outbox_rx).take() else {
            return;
        };
        let Some(outbox) = self.with_conn(|c| c.outbox_handle()) else {
            return;
        };
        let reason = {
            // Created once, and polled only when they were woken: a
            // `Notified` locks its `Notify` whenever it is polled, and made
            // anew per item it also did so when dropped; the pump wakes
            // for every delivery (`perf`: 8 % of the server's CPU in the
            // steady fan-out benchmark).
            use crate::woken::on_wake;
            let ordered = on_wake(outbox.ordered());
            tokio::pin!(ordered);
            let closed = on_wake(outbox.closed());
            tokio::pin!(closed);
            let gone = on_wake(self.gone.notified());
            tokio::pin!(gone);
            let stopping = on_wake(shutdown.wait());
            tokio::pin!(stopping);
            // Nothing was queued when the last item had been emitted.
            let mut was_idle = true;
            loop {
                tokio::select! {
                    _ = &mut ordered => {
                        ordered.set(on_wake(outbox.ordered()));
                        for order in outbox.take_orders() {
                            self.with_conn(|c| self.avaya.obey(c, order));
                        }
                    }
                    item = rx.recv() => {
                        let Some(item) = item else { break None };
                        if was_idle {
                            // --write-delay: broadcasts queued meanwhile are
                            // emitted right after this one, and socketioxide's
                            // writer sends them all at once. A reply ends the
                            // wait; a close waits at most this long.
                            rx.hold_for_more(self.config.write_delay).await;
                        }
                        let ok = tokio::select! {
                            ok = self.emit(&socket, &item) => ok,
                            // The core gave up on a client that fell behind
                            // (--outbox-bytes): stop waiting for it at once.
                            _ = &mut closed => false,
                        };
                        outbox.sent(&item);
                        was_idle = outbox.queued_bytes() == 0;
                        if ok {
                            // Handed to socketioxide, which writes it next.
                            self.config.counters.bytes_sent.inc_by(item.payload_len());
                            if let Some(queued) = rx.take_sample() {
                                self.config.counters.delivery.observe(queued.elapsed().as_secs_f64());
                            }
                        }
                        if !ok {
                            // A close decided meanwhile wins (first reason).
                            outbox.close(crate::outbox::CloseReason::new(
                                crate::outbox::CLOSE_SLOW_CONSUMER,
                                format!(
                                    "the client did not read its events within {:?}; reconnect",
                                    self.config.write_timeout
                                ),
                            ));
                            break outbox.close_reason().map(|r| r.reason.to_string());
                        }
                    }
                    _ = &mut closed => {
                        // Flush what was queued before the close.
                        while let Some(item) = rx.try_recv() {
                            let _ = self.emit(&socket, &item).await;
                            outbox.sent(&item);
                        }
                        break Some(outbox
                            .close_reason()
                            .map(|r| r.reason.to_string())
                            .unwrap_or_else(|| "closed by the server".into()));
                    }
                    _ = &mut gone => break None,
                    _ = &mut stopping => break Some("server shutting down".into()),
                }
            }
        };
        if let Some(metrics) = &self.config.metrics {
            // The socket went by itself: a normal close (1000).
            let code = match &reason {
                None => crate::transport::close::NORMAL,
                Some(_) => outbox
                    .close_reason()
                    .map_or(crate::transport::close::GOING_AWAY, |r| r.code),
            };
            metrics.live().closed(super::PROTOCOL, code);
        }
        if let Some(why) = reason {
            let err = WireError::new(codes::CLOSING, why);
            if let Some((event, payload)) = wire::split_event(&wire::error(&err)) {
                let _ = socket.emit(event, &payload);
            }
            // A client the server is going away from (a drain) must see
            // its transport close and reconnect elsewhere: a namespace
            // DISCONNECT would tell it not to. A WebSocket client's stream
            // is cut alone (`sever.rs`); the others' Engine.IO connections
            // close with all the rest at shutdown, once every pump is done
            // (see `routes`).
            let going_away = outbox
                .close_reason()
                .is_some_and(|r| r.code == crate::transport::close::GOING_AWAY);
            match socket.req_parts().extensions.get::<super::sever::Sever>() {
                Some(sever) if going_away && !shutdown.is_shutting_down() => sever.cut(),
                _ if !shutdown.is_shutting_down() => {
                    let _ = socket.disconnect();
                }
                _ => {}
            }
            self.close();
        }
    }

    /// The front end's metrics.
    pub fn counters(&self) -> &crate::metrics::ProtocolCounters {
        &self.config.counters
    }

    /// Emits one outbox item. Waits (up to the write timeout) while the
    /// socket's own buffer is full; false if it stayed full.
    async fn emit(&self, socket: &SocketRef, item: &Outbound) -> bool {
        let Outbound::Text(bytes) = item else {
            return true;
        };
        let Some(split) = wire::split_shared(bytes) else {
            tracing::warn!("socket.io outbox item is not [event, payload]; dropped");
            return true;
        };
        let (event, payload) = &*split;
        let deadline = Instant::now() + self.config.write_timeout;
        loop {
            match socket.emit(event, payload) {
                Ok(()) => return true,
                Err(socketioxide::SendError::Socket(
                    socketioxide::SocketError::InternalChannelFull,
                )) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // Closed socket or an encoding problem: nothing to retry.
                Err(_) => return true,
            }
        }
    }
}
