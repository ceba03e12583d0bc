//! rollcall's own Engine.IO long-polling (`transport=polling`), and the
//! upgrade from it to a WebSocket: what socket.io-client does by default
//! (every 1.x and 2.x client, and 3.x/4.x unless told `transports:
//! ['websocket']`). A session runs the same [`EngineSession`] as a
//! WebSocket opened straight away, so the Avaya events, the channel policy
//! and the once-encoded broadcasts are the same; after the upgrade it runs
//! on the shared WebSocket transport like one, and its RSS is that of one.
//!
//! ```text
//! GET  /socket.io/?EIO=4&transport=polling&token=…   < 0{"sid":"S","upgrades":["websocket"],…}
//! POST /socket.io/?EIO=4&transport=polling&sid=S     > 40/chat,          < ok
//! GET  …&sid=S  (held until something is queued)     < 40/chat,{"sid":…}\x1e42/chat,[…]
//! GET  …&transport=websocket&sid=S (upgrade)         > 2probe  < 3probe  (a held GET gets 6)
//!                                                    > 5       (from now on: the WebSocket)
//! ```
//!
//! Payloads: Engine.IO 4 separates packets with `\x1e`; Engine.IO 3 prefixes
//! each with its length in UTF-16 code units (`7:40/chat`). One task per
//! session (the driver) owns the session and its outbox; the HTTP requests
//! talk to it over a channel, so a session's packets are handled one at a
//! time, in order, whichever request brought them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};

use super::SocketIoConfig;
use super::engine::{EngineSession, Version};
use crate::app::App;
use crate::outbox::{CloseReason, Outbound, OutboxReceiver, Utf8Bytes};
use crate::rate::RateLimiter;
use crate::shutdown::Shutdown;
use crate::transport::{Flow, Session, TransportConfig, close};
use crate::websocket::{FrameWrite, Incoming, WebSocket};

/// The polling sessions of this front end, by `sid`. A session leaves the
/// table when it ends or upgrades; a request for a `sid` not here gets
/// Engine.IO's "Session ID unknown".
#[derive(Debug, Default)]
pub struct Sessions {
    by_sid: Mutex<HashMap<String, Handle>>,
}

impl Sessions {
    /// The session known as `sid`, if this module runs it.
    pub fn get(&self, sid: &str) -> Option<Handle> {
        self.lock().get(sid).cloned()
    }

    fn insert(&self, sid: String, handle: Handle) {
        self.lock().insert(sid, handle);
    }

    fn remove(&self, sid: &str) {
        self.lock().remove(sid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Handle>> {
        // The map is never left half-changed: a panic elsewhere does not
        // make it unusable.
        self.by_sid.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What requests send a session's driver.
#[derive(Clone, Debug)]
pub struct Handle {
    requests: mpsc::Sender<ToDriver>,
}

/// What a request asks of a session's driver.
enum ToDriver {
    /// A GET: the queued packets, when there are some.
    Poll(oneshot::Sender<Reply>),
    /// A POST's body: packets to handle.
    Data(Bytes, oneshot::Sender<Reply>),
    /// A WebSocket answered the probe: a held GET gets a noop, and no more
    /// packets go to GETs (the client is about to upgrade).
    Probed,
    /// The probing WebSocket went away before the upgrade: polling goes on.
    ProbeFailed,
    /// A POST over the payload limit: the session closes.
    TooBig,
    /// The client sent the upgrade packet on the WebSocket: the session
    /// and its queue move there.
    Upgrade(oneshot::Sender<(EngineSession, OutboxReceiver)>),
}

/// The driver's answer to a GET or a POST.
#[derive(Debug)]
enum Reply {
    /// A GET's payload.
    Payload(String),
    /// A POST was handled.
    Handled,
    /// Refused: the status and Engine.IO's error body.
    Refused(StatusCode, &'static str),
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let text = [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")];
        match self {
            Reply::Payload(payload) => (text, payload).into_response(),
            Reply::Handled => ([(header::CONTENT_TYPE, "text/html")], "ok").into_response(),
            Reply::Refused(status, why) => bad_request(status, why),
        }
    }
}

/// Engine.IO's error answer: `{"code":3,"message":"Bad request"}` and why.
fn bad_request(status: StatusCode, why: &'static str) -> Response {
    super::route::engine_error(status, 3, "Bad request", why)
}

/// Requests a session's channel holds: a GET, a POST and a probe at most,
/// with room to spare.
const REQUESTS_QUEUED: usize = 8;

/// Most bytes of packets one GET carries; the rest waits for the next.
const POLL_BYTES: usize = 1024 * 1024;

/// How long a closing session waits for the GET that takes its last
/// packets (the reason) before it is gone.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Opens a polling session for `req`, a handshake (the connection is
/// admitted: signed in, or waiting for its CONNECT's token, or refused at
/// its CONNECT with the reason), and answers with the open packet.
pub async fn handshake(
    app: &App,
    config: &Arc<SocketIoConfig>,
    transport: &Arc<TransportConfig>,
    version: Version,
    req: Request<Body>,
) -> Response {
    let Some((admitted, outbox_rx)) = super::engine::admit(app, config, version, &req).await else {
        return super::route::server_busy();
    };
    let sid = crate::ids::secret(20);
    let session = EngineSession::opened(admitted, version, config.clone(), &sid, &["websocket"]);
    let (requests, inbox) = mpsc::channel(REQUESTS_QUEUED);
    let handle = Handle { requests };
    config.polling.insert(sid.clone(), handle.clone());
    let driver = Driver {
        sid,
        version,
        inbox,
        held: None,
        sessions: config.polling.clone(),
        transport: transport.clone(),
        shutdown: app.shutdown.handle(),
    };
    tokio::spawn(driver.run(session, outbox_rx));
    // The open packet is queued: this first GET takes it.
    poll(&handle).await
}

/// Serves a request for the polling session `handle`: a GET, a POST, or
/// the WebSocket it upgrades to.
pub async fn serve(
    app: &App,
    config: &Arc<SocketIoConfig>,
    transport: &Arc<TransportConfig>,
    handle: Handle,
    req: Request<Body>,
) -> Response {
    if super::route::is_upgrade(&req) {
        return upgrade(app, transport, handle, req).await;
    }
    match *req.method() {
        Method::GET => poll(&handle).await,
        Method::POST => {
            let limit = config.max_ws_message_bytes;
            let body = match http_body_util::Limited::new(req.into_body(), limit)
                .collect()
                .await
            {
                Ok(body) => body.to_bytes(),
                Err(_) => {
                    // Too big, or the client went away mid-body: either way
                    // this session's packets can no longer be trusted.
                    let _ = handle.requests.send(ToDriver::TooBig).await;
                    return bad_request(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "the payload is over the server's maxPayload",
                    );
                }
            };
            ask(&handle, |reply| ToDriver::Data(body, reply)).await
        }
        _ => bad_request(
            StatusCode::METHOD_NOT_ALLOWED,
            "Engine.IO polling takes GET and POST",
        ),
    }
}

/// A GET: waits for the driver's payload.
async fn poll(handle: &Handle) -> Response {
    ask(handle, ToDriver::Poll).await
}

/// Sends the driver `request` (made with the channel of its reply) and
/// answers with that reply; a session that ended meanwhile is unknown.
async fn ask(
    handle: &Handle,
    request: impl FnOnce(oneshot::Sender<Reply>) -> ToDriver,
) -> Response {
    let (reply, answer) = oneshot::channel();
    if handle.requests.send(request(reply)).await.is_err() {
        return super::route::session_unknown();
    }
    answer.await.map_or_else(
        |_| super::route::session_unknown(),
        IntoResponse::into_response,
    )
}

/// The WebSocket a polling session upgrades to: the probe, then the
/// session moves onto the shared transport.
async fn upgrade(
    app: &App,
    transport: &Arc<TransportConfig>,
    handle: Handle,
    req: Request<Body>,
) -> Response {
    let ws = match super::route::websocket_of(req).await {
        Ok((ws, _)) => ws,
        Err(refused) => return refused,
    };
    let transport = transport.clone();
    let shutdown = app.shutdown.handle();
    ws.on_upgrade(transport.websocket(), move |mut socket| async move {
        let probed = timeout(transport.idle_timeout, probe(&mut socket, &handle)).await;
        match probed {
            Ok(Some((session, outbox_rx))) => {
                crate::transport::run(socket, outbox_rx, session, transport, shutdown).await
            }
            _ => {
                let _ = handle.requests.send(ToDriver::ProbeFailed).await;
            }
        }
    })
}

/// The upgrade handshake on the new WebSocket: `2probe` is answered
/// `3probe`, then `5` hands the session over.
async fn probe(socket: &mut WebSocket, handle: &Handle) -> Option<(EngineSession, OutboxReceiver)> {
    let (stream, reader) = socket.parts();
    loop {
        match reader.read(stream).await.ok()? {
            Incoming::Text(text) if text == "2probe" => {
                let pong = [Outbound::Text(Utf8Bytes::from_static("3probe"))];
                FrameWrite::items(stream, &pong, false).await.ok()?;
                handle.requests.send(ToDriver::Probed).await.ok()?;
            }
            Incoming::Text(text) if text == "5" => {
                let (reply, answer) = oneshot::channel();
                handle.requests.send(ToDriver::Upgrade(reply)).await.ok()?;
                return answer.await.ok();
            }
            Incoming::Ping(payload) => {
                FrameWrite::items(stream, &[Outbound::Pong(payload)], false)
                    .await
                    .ok()?;
            }
            Incoming::Close(_) => return None,
            // Anything else before the upgrade is not the handshake.
            _ => return None,
        }
    }
}

/// One polling session's task: owns the session and its queue until the
/// session ends or moves to a WebSocket.
struct Driver {
    sid: String,
    version: Version,
    inbox: mpsc::Receiver<ToDriver>,
    /// The GET waiting for packets, if one is.
    held: Option<oneshot::Sender<Reply>>,
    sessions: Arc<Sessions>,
    transport: Arc<TransportConfig>,
    shutdown: Shutdown,
}

impl Driver {
    async fn run(mut self, session: EngineSession, outbox_rx: OutboxReceiver) {
        if let Some((session, rx)) = self.drive(session, outbox_rx).await {
            self.finish(session, rx).await;
        }
        self.sessions.remove(&self.sid);
    }

    /// Handles requests, queued packets, pings and the server's orders
    /// until the session closes (returned, with its queue) or moves to a
    /// WebSocket (None).
    async fn drive(
        &mut self,
        mut session: EngineSession,
        mut rx: OutboxReceiver,
    ) -> Option<(EngineSession, OutboxReceiver)> {
        let outbox = session.connection().outbox_handle();
        let cfg = self.transport.clone();
        if crate::transport::closed_for_shutdown(&self.shutdown, &outbox) {
            return Some((session, rx));
        }
        let mut limiter = RateLimiter::new(cfg.max_messages_per_second);
        let mut probing = false;
        let mut last_heard = Instant::now();
        let mut next_ping = Instant::now() + cfg.ping_interval;
        let signalled = outbox.closed_or_ordered();
        tokio::pin!(signalled);
        loop {
            let timer = session.next_timer().map_or(next_ping, |t| t.min(next_ping));
            let waiting = self.held.is_some() && !probing;
            let flow = tokio::select! {
                _ = &mut signalled => {
                    if outbox.is_closed() {
                        return Some((session, rx));
                    }
                    signalled.set(outbox.closed_or_ordered());
                    crate::transport::obey(&mut session, outbox.take_orders())
                }
                first = rx.recv_open(), if waiting => {
                    let Some(first) = first else { return Some((session, rx)) };
                    let payload = self.payload(first, &mut rx, &outbox);
                    match self.held.take().map(|get| get.send(Reply::Payload(payload))) {
                        // The client gave up the GET (its connection closed):
                        // what it carried is lost, so the session ends, as
                        // engine.io ends it.
                        Some(Err(_)) => Flow::Close(CloseReason::new(close::GOING_AWAY, "the client abandoned a polling request")),
                        _ => Flow::Continue,
                    }
                }
                _ = sleep_until(timer) => {
                    let now = Instant::now();
                    if now < next_ping {
                        session.on_timer(now)
                    } else if last_heard.elapsed() > cfg.idle_timeout {
                        Flow::Close(CloseReason::new(close::GOING_AWAY, "no request from the client within the ping interval and timeout"))
                    } else {
                        next_ping = now + cfg.ping_interval;
                        if let Outbound::Text(ping) = session.keepalive() {
                            outbox.push_text(ping);
                        }
                        Flow::Continue
                    }
                }
                request = self.inbox.recv() => {
                    last_heard = Instant::now();
                    match request {
                        None => return Some((session, rx)),
                        Some(ToDriver::Poll(get)) => {
                            if let Some(first) = self.held.replace(get) {
                                // Two GETs at once: the client is confused.
                                let overlap = || Reply::Refused(StatusCode::BAD_REQUEST, "a GET came while another was held");
                                let _ = first.send(overlap());
                                self.answer_poll(overlap());
                                Flow::Close(CloseReason::new(close::PROTOCOL, "overlapping polling requests"))
                            } else {
                                if probing {
                                    self.answer_poll(Reply::Payload(noop(self.version)));
                                }
                                Flow::Continue
                            }
                        }
                        Some(ToDriver::Data(body, done)) => {
                            let flow = self.handle_data(&mut session, &body, &mut limiter).await;
                            let _ = done.send(match &flow {
                                Flow::Close(reason) if reason.code != close::NORMAL => Reply::Refused(StatusCode::BAD_REQUEST, "the payload was refused; the session is closed"),
                                _ => Reply::Handled,
                            });
                            flow
                        }
                        Some(ToDriver::TooBig) => Flow::Close(CloseReason::new(
                            close::TOO_BIG,
                            format!("payload too big: the limit is {} bytes", cfg.max_frame_bytes),
                        )),
                        Some(ToDriver::Probed) => {
                            probing = true;
                            self.answer_poll(Reply::Payload(noop(self.version)));
                            Flow::Continue
                        }
                        Some(ToDriver::ProbeFailed) => {
                            probing = false;
                            Flow::Continue
                        }
                        Some(ToDriver::Upgrade(to)) => {
                            self.answer_poll(Reply::Payload(noop(self.version)));
                            // The session leaves the table before it moves:
                            // a late GET or POST finds no session.
                            self.sessions.remove(&self.sid);
                            return match to.send((session, rx)) {
                                Ok(()) => None,
                                // The WebSocket is gone meanwhile.
                                Err((session, rx)) => {
                                    outbox.close(CloseReason::new(close::GOING_AWAY, "the upgrade's WebSocket closed"));
                                    Some((session, rx))
                                }
                            };
                        }
                    }
                }
            };
            if let Flow::Close(reason) = flow {
                outbox.close(reason);
                return Some((session, rx));
            }
        }
    }

    /// Answers the held GET, if there is one.
    fn answer_poll(&mut self, reply: Reply) {
        if let Some(get) = self.held.take() {
            let _ = get.send(reply);
        }
    }

    /// The packets of a POST, handled in order; a backend check pauses the
    /// rest until it answers.
    async fn handle_data(
        &self,
        session: &mut EngineSession,
        body: &[u8],
        limiter: &mut RateLimiter,
    ) -> Flow {
        let cfg = &self.transport;
        let outbox = session.connection().outbox_handle();
        cfg.counters.bytes_received.inc_by(body.len() as u64);
        let packets = match std::str::from_utf8(body)
            .ok()
            .and_then(|text| decode(self.version, text))
        {
            Some(packets) => packets,
            None => {
                return Flow::Close(CloseReason::new(
                    close::INVALID_DATA,
                    "a polling payload that is not Engine.IO text packets; this server speaks Engine.IO 3 and 4",
                ));
            }
        };
        for packet in packets {
            let mut flow = crate::transport::within_rate(limiter, cfg, session, |session| {
                session.on_text(packet)
            });
            while let Flow::Wait(pending) = flow {
                flow = tokio::select! {
                    _ = outbox.closed() => return Flow::Continue,
                    _ = pending => session.on_resume(),
                };
            }
            if let Flow::Close(_) = flow {
                return flow;
            }
        }
        Flow::Continue
    }

    /// `first` and what else is queued (up to [`POLL_BYTES`]), as one
    /// payload.
    fn payload(
        &self,
        first: Outbound,
        rx: &mut OutboxReceiver,
        outbox: &crate::presence::OutboxHandle,
    ) -> String {
        let mut payload = Payload::new(self.version);
        let mut next = Some(first);
        while let Some(item) = next.take() {
            if let Some(text) = item.text() {
                payload.push(text);
                self.transport
                    .counters
                    .bytes_sent
                    .inc_by(item.payload_len());
            }
            outbox.sent(&item);
            if payload.len() < POLL_BYTES {
                next = rx.try_recv();
            }
        }
        rx.take_sample();
        payload.finish()
    }

    /// The session closed: its memberships end, then the held GET (or the
    /// next one, for a while) gets what is still queued and the reason.
    async fn finish(&mut self, session: EngineSession, mut rx: OutboxReceiver) {
        let outbox = session.connection().outbox_handle();
        let protocol = session.connection().protocol();
        let reason = outbox
            .close_reason()
            .unwrap_or_else(|| CloseReason::new(close::NORMAL, "closing"));
        tracing::debug!(sid = %self.sid, code = reason.code, reason = %reason.reason, "polling session closed");
        if let Some(metrics) = &self.transport.metrics {
            metrics.live().closed(protocol, reason.code);
        }
        let farewell = session.farewell(&reason);
        drop(session);
        let slow = reason.code == crate::outbox::CLOSE_SLOW_CONSUMER;
        let mut payload = Payload::new(self.version);
        while let Some(item) = rx.try_recv().filter(|_| !slow) {
            if let Some(text) = item.text() {
                payload.push(text);
            }
            outbox.sent(&item);
        }
        for item in &farewell {
            if let Some(text) = item.text() {
                payload.push(text);
            }
        }
        // A client that closed the session itself expects nothing more.
        if reason.code == close::NORMAL && payload.is_empty() {
            return;
        }
        let mut last = Some(Reply::Payload(payload.finish()));
        if self.held.is_some() {
            return self.answer_poll(last.take().unwrap_or(Reply::Handled));
        }
        let deadline = Instant::now() + CLOSE_GRACE;
        while let Ok(Some(request)) = tokio::time::timeout_at(deadline, self.inbox.recv()).await {
            match request {
                ToDriver::Poll(get) => {
                    if let Some(last) = last.take() {
                        let _ = get.send(last);
                        return;
                    }
                }
                ToDriver::Data(_, done) => {
                    let _ = done.send(Reply::Refused(
                        StatusCode::BAD_REQUEST,
                        "the session is closed",
                    ));
                }
                ToDriver::TooBig
                | ToDriver::Upgrade(_)
                | ToDriver::Probed
                | ToDriver::ProbeFailed => {}
            }
        }
    }
}

/// The noop packet a held GET gets when the client upgrades.
fn noop(version: Version) -> String {
    let mut payload = Payload::new(version);
    payload.push("6");
    payload.finish()
}

/// A payload of text packets in a version's framing.
struct Payload {
    version: Version,
    text: String,
}

impl Payload {
    fn new(version: Version) -> Self {
        Payload {
            version,
            text: String::new(),
        }
    }

    fn push(&mut self, packet: &str) {
        match self.version {
            Version::V4 => {
                if !self.text.is_empty() {
                    self.text.push('\x1e');
                }
            }
            Version::V3 => {
                let units = packet.encode_utf16().count();
                self.text.push_str(&units.to_string());
                self.text.push(':');
            }
        }
        self.text.push_str(packet);
    }

    fn len(&self) -> usize {
        self.text.len()
    }

    fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    fn finish(self) -> String {
        match self.text.is_empty() {
            // Engine.IO 3's empty payload; Engine.IO 4 has none, so a noop.
            true => match self.version {
                Version::V3 => "0:".into(),
                Version::V4 => "6".into(),
            },
            false => self.text,
        }
    }
}

/// The packets of a POST body, or None if it is not a payload of the
/// version (an Engine.IO 3 length that does not fit, binary packets).
pub fn decode(version: Version, body: &str) -> Option<Vec<&str>> {
    match version {
        Version::V4 => {
            let packets: Vec<&str> = body.split('\x1e').collect();
            // `b…`: a base64 binary packet, which this server does not read.
            packets
                .iter()
                .all(|p| !p.is_empty() && !p.starts_with('b'))
                .then_some(packets)
        }
        Version::V3 => {
            let mut packets = Vec::new();
            let mut rest = body;
            while !rest.is_empty() {
                let (len, after) = rest.split_once(':')?;
                if len.is_empty() || len.len() > 10 || !len.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let units: usize = len.parse().ok()?;
                // `units` UTF-16 code units, as a byte offset.
                let mut counted = 0;
                let mut end = 0;
                for c in after.chars() {
                    if counted == units {
                        break;
                    }
                    counted += c.len_utf16();
                    end += c.len_utf8();
                }
                if counted != units || units == 0 {
                    return None;
                }
                packets.push(&after[..end]);
                rest = &after[end..];
            }
            Some(packets)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_in_each_framing() {
        let mut v4 = Payload::new(Version::V4);
        v4.push("40/chat,");
        v4.push("2");
        assert_eq!(v4.finish(), "40/chat,\x1e2");
        let mut v3 = Payload::new(Version::V3);
        v3.push("40");
        // "é" is one UTF-16 unit, "😀" two.
        v3.push("42[\"é😀\"]");
        assert_eq!(v3.finish(), "2:409:42[\"é😀\"]");
        assert_eq!(Payload::new(Version::V3).finish(), "0:");
        assert_eq!(Payload::new(Version::V4).finish(), "6");
    }

    #[test]
    fn decodes_what_clients_post() {
        assert_eq!(
            decode(Version::V4, "40/chat,\x1e3"),
            Some(vec!["40/chat,", "3"])
        );
        assert_eq!(decode(Version::V4, "bAQID"), None);
        assert_eq!(decode(Version::V4, "2\x1e"), None);
        assert_eq!(
            decode(Version::V3, "2:409:42[\"é😀\"]1:2"),
            Some(vec!["40", "42[\"é😀\"]", "2"])
        );
        assert_eq!(decode(Version::V3, "5:40"), None);
        assert_eq!(decode(Version::V3, "x:40"), None);
        assert_eq!(decode(Version::V3, "0:"), None);
        assert_eq!(decode(Version::V3, "40"), None);
        // A length that splits a surrogate pair does not fit.
        assert_eq!(decode(Version::V3, "4:42[😀]"), None);
        assert_eq!(decode(Version::V3, "99999999999:4"), None);
    }
}
