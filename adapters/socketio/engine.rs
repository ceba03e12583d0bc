//! rollcall's Engine.IO connection: its Engine.IO and Socket.IO packets,
//! its namespace, who it is (a token in the query, or in the CONNECT's
//! `auth` payload), for every client. A WebSocket opened straight away
//! (`transport=websocket` without a `sid`, e.g. socket.io-client with
//! `transports: ['websocket']`) is served here; long-polling and the
//! upgrade from it are `polling.rs`'s, which runs this module's
//! [`EngineSession`] too.
//!
//! On a WebSocket a connection runs on the transport every raw-WebSocket
//! front end shares (`crate::transport`): no Engine.IO or Socket.IO task of
//! its own, broadcasts encoded once per namespace as whole packets
//! (`42/chat,["MESSAGE_SENT",…]`) and written to every recipient without a
//! copy.
//!
//! ```text
//! GET /socket.io/?EIO=4&transport=websocket&tokenType=jwt&token=…
//! < 0{"sid":"…","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1048576}
//! > 40/chat,                      < 40/chat,{"sid":"…"}
//! > 42/chat,["SUBSCRIBE_CHANNEL",{"channel":{"_id":"room"}}]
//! < 42/chat,["CHANNEL_SUBSCRIBED",{…}]
//! < 2 (every pingInterval)        > 3
//! EIO=3: < 0{…} then 40 (the implicit "/"), > 40/chat?<query>, < 40/chat;
//!        the client pings (> 2, < 3).
//! ```
//!
//! One Engine.IO connection carries one namespace (`/chat` or `/`), one
//! core connection.

use std::hash::BuildHasher;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use axum::response::Response;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::{Duration, Instant};

use super::SocketIoConfig;
use super::auth::{self, User};
use super::avaya::Avaya;
use super::wire::{self, Framing, WireError, codes};
use crate::app::App;
use crate::outbox::{CloseReason, Order, Outbound, OutboxReceiver, Utf8Bytes};
use crate::policy::{Access, Pending};
use crate::presence::Connection;
use crate::transport::{Flow, Session, TransportConfig, close};

/// The Engine.IO protocol revision a client speaks (`EIO=` in the query).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// socket.io-client 1.x and 2.x: the client pings, `/` is connected
    /// implicitly, a namespace CONNECT carries the query.
    V3,
    /// socket.io-client 3.x and 4.x: the server pings, every namespace is
    /// connected explicitly, a CONNECT carries the `auth` payload.
    V4,
}

/// A token as a number: the connection remembers which token it was
/// opened with without keeping the token.
fn fingerprint(token: &str) -> u64 {
    FINGERPRINT.hash_one(token)
}

/// One hasher for the process: fingerprints compare within it.
static FINGERPRINT: std::sync::LazyLock<std::hash::RandomState> =
    std::sync::LazyLock::new(std::hash::RandomState::new);

/// The Engine.IO open packet: the session id (a WebSocket opened straight
/// away never uses it again; a polling client sends it with every request),
/// the transports the client may upgrade to, the ping timings.
fn open_packet(version: Version, config: &SocketIoConfig, sid: &str, upgrades: &[&str]) -> String {
    let mut open = serde_json::json!({
        "sid": sid,
        "upgrades": upgrades,
        "pingInterval": config.settings.socketio_ping_interval.as_millis() as u64,
        "pingTimeout": config.settings.socketio_ping_timeout.as_millis() as u64,
    });
    if version == Version::V4 {
        open["maxPayload"] = Value::from(config.max_ws_message_bytes as u64);
    }
    format!("0{open}")
}

/// The namespace's socket: waiting for the client's CONNECT, or connected.
#[derive(Debug)]
enum Socket {
    /// A client that has not signed in: an Engine.IO 4 client with no
    /// token in the query, whose CONNECT's `auth` payload must bring one in
    /// time, or a client whose token was refused.
    Anonymous(Box<Stranger>),
    /// No namespace connected yet; the user it will be for.
    Waiting(User),
    /// Connected to the namespace its Avaya state frames for.
    Connected(Avaya),
    /// Transitional (only while a CONNECT or DISCONNECT is handled).
    Gone,
}

/// One Engine.IO connection: its Engine.IO and Socket.IO packets, and the
/// Avaya events of its namespace.
pub struct EngineSession {
    conn: Connection,
    version: Version,
    socket: Socket,
    /// The fingerprint of the token the connection signed in with (in the
    /// query or a CONNECT's `auth`; 0 before): a CONNECT whose `auth`
    /// carries another token is refused.
    token: u64,
    /// What waits for a backend (boxed: most connections never wait).
    held: Option<Box<Held>>,
    config: Arc<SocketIoConfig>,
}

/// What a session put aside until a backend answers.
enum Held {
    /// An event waiting for the channel check.
    Event(String, Value),
    /// A CONNECT to `nsp` whose `auth` token is being checked.
    Connect {
        nsp: String,
        token: u64,
        outcome: oneshot::Receiver<Result<(User, Access), String>>,
    },
}

/// A client that has not signed in yet.
#[derive(Debug)]
struct Stranger {
    /// When it must have sent a CONNECT with its token.
    deadline: Instant,
    /// Where it connected from and the request path, for the access log
    /// line of a refusal.
    client: Option<std::net::SocketAddr>,
    path: String,
    /// Why its query's token was refused: every CONNECT is refused so.
    refusal: Option<Box<str>>,
}

/// How long a client without a query token has to CONNECT a namespace
/// with its `auth` token (socket.io's `connectTimeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(45);

/// Who a new Engine.IO connection is for: the core connection registered
/// for it, and its user if the query's token said (Engine.IO 4 clients
/// may send theirs in the CONNECT's `auth` payload instead).
pub(super) struct Admitted {
    conn: Connection,
    socket: Socket,
    token: u64,
}

/// Admits a connection to rollcall's own Engine.IO: a verified token in
/// the query, or (Engine.IO 4) no token there at all, or a refused one
/// (refused at its CONNECT with the reason); with the queue of what is
/// sent to it. None: no core connection could be made.
pub(super) fn admit<'a>(
    app: &'a App,
    config: &'a SocketIoConfig,
    version: Version,
    req: &'a Request<Body>,
) -> impl Future<Output = Option<(Admitted, OutboxReceiver)>> + Send + 'a {
    // Not the request itself in the future: a body is not `Sync`.
    let query = req.uri().query().unwrap_or("");
    let client = crate::access::client(req.extensions());
    let path = req.uri().path();
    admit_from(app, config, version, query, client, path)
}

async fn admit_from(
    app: &App,
    config: &SocketIoConfig,
    version: Version,
    query: &str,
    client: Option<std::net::SocketAddr>,
    path: &str,
) -> Option<(Admitted, OutboxReceiver)> {
    let has_token = query.split('&').any(|pair| pair.starts_with("token="));
    // Without a token in the query an Engine.IO 4 client signs in with its
    // CONNECT's `auth` payload; any other client without a good one is
    // refused at its CONNECT, with the reason.
    let refusal = match auth::credentials(Some(query), None) {
        Err(_) if !has_token && version == Version::V4 => None,
        Err(why) => Some(why),
        Ok(creds) => {
            let introspector = config.introspector.as_deref();
            match auth::authenticate(&creds, &app.verifier, introspector).await {
                Err(why) => Some(why),
                Ok((user, access)) => match super::register(app, &user, access) {
                    Ok((conn, outbox_rx)) => {
                        let admitted = Admitted {
                            conn,
                            socket: Socket::Waiting(user),
                            token: fingerprint(&creds.token),
                        };
                        return Some((admitted, outbox_rx));
                    }
                    Err(e) => Some(format!("not authorized: {e}")),
                },
            }
        }
    };
    let (conn, outbox_rx) = super::register_anonymous(app).ok()?;
    let stranger = Stranger {
        deadline: Instant::now() + CONNECT_TIMEOUT,
        client,
        path: path.to_string(),
        refusal: refusal.map(String::into_boxed_str),
    };
    let admitted = Admitted {
        conn,
        socket: Socket::Anonymous(Box::new(stranger)),
        token: 0,
    };
    Some((admitted, outbox_rx))
}

/// What a client sent, as Engine.IO and Socket.IO packets.
#[derive(Debug, PartialEq)]
pub enum Packet<'a> {
    /// Engine.IO close (`1`).
    Close,
    /// Engine.IO ping (`2`, `2probe`): answered with a pong.
    Ping(&'a str),
    /// Engine.IO pong, upgrade or noop (`3`, `5`, `6`): nothing to do.
    Ignored,
    /// Socket.IO CONNECT (`40`): namespace, then the EIO 4 `auth` payload
    /// (EIO 3 sends the query instead, which the handshake already read).
    Connect { nsp: &'a str, auth: &'a str },
    /// Socket.IO DISCONNECT (`41`): the client leaves the namespace.
    Disconnect { nsp: &'a str },
    /// Socket.IO EVENT (`42`): namespace, acknowledgment id, JSON array.
    Event {
        nsp: &'a str,
        ack: Option<u64>,
        data: &'a str,
    },
    /// Socket.IO ACK (`43`) or CONNECT_ERROR (`44`): the server asks for no
    /// acknowledgments, so there is nothing to do.
    Answer,
    /// Socket.IO BINARY_EVENT or BINARY_ACK (`45`, `46`).
    Binary,
}

/// Why a text frame is not a packet this server reads.
#[derive(Debug, PartialEq)]
pub struct Malformed(pub &'static str);

/// Parses one text frame.
pub fn parse(text: &str) -> Result<Packet<'_>, Malformed> {
    let mut chars = text.chars();
    match chars.next() {
        Some('1') => Ok(Packet::Close),
        Some('2') => Ok(Packet::Ping(&text[1..])),
        Some('3' | '5' | '6') => Ok(Packet::Ignored),
        Some('4') => parse_socketio(&text[1..]),
        Some('0') => Err(Malformed(
            "a client does not send the Engine.IO open packet",
        )),
        _ => Err(Malformed("not an Engine.IO packet")),
    }
}

/// Parses a Socket.IO packet (what follows the Engine.IO message type).
fn parse_socketio(text: &str) -> Result<Packet<'_>, Malformed> {
    let kind = match text.as_bytes().first() {
        Some(&b) if b.is_ascii_digit() => b as char,
        Some(_) => return Err(Malformed("not a Socket.IO packet type")),
        None => return Err(Malformed("an empty Engine.IO message")),
    };
    // After one ASCII byte: a character boundary.
    let rest = &text[1..];
    // `/nsp` up to a `,` (or an EIO 3 CONNECT's `?query`); `/` without one.
    let (nsp, rest) = match rest.strip_prefix('/') {
        Some(_) => {
            let end = rest.find([',', '?']).unwrap_or(rest.len());
            let after = &rest[end..];
            let after = match after.strip_prefix('?') {
                // The query: up to the packet's `,`, or the end.
                Some(query) => query.find(',').map_or("", |i| &query[i..]),
                None => after,
            };
            (&rest[..end], after.strip_prefix(',').unwrap_or(after))
        }
        None => ("/", rest),
    };
    match kind {
        '0' => Ok(Packet::Connect { nsp, auth: rest }),
        '1' => Ok(Packet::Disconnect { nsp }),
        '2' => {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let ack = match digits {
                0 => None,
                _ => Some(
                    rest[..digits]
                        .parse()
                        .map_err(|_| Malformed("an acknowledgment id out of range"))?,
                ),
            };
            Ok(Packet::Event {
                nsp,
                ack,
                data: &rest[digits..],
            })
        }
        '3' | '4' => Ok(Packet::Answer),
        '5' | '6' => Ok(Packet::Binary),
        _ => Err(Malformed("not a Socket.IO packet type")),
    }
}

/// The event name and first argument of an EVENT's JSON array (Avaya
/// events carry one; a missing one is `null`, which the handlers refuse
/// with the event's own error).
pub fn event_of(data: &str) -> Option<(String, Value)> {
    let Ok(Value::Array(args)) = serde_json::from_str::<Value>(data) else {
        return None;
    };
    let mut args = args.into_iter();
    let Some(Value::String(event)) = args.next() else {
        return None;
    };
    Some((event, args.next().unwrap_or(Value::Null)))
}

/// Serves `req`, a WebSocket opened straight away: the connection is
/// admitted (signed in, or waiting for its CONNECT's token, or refused at
/// its CONNECT with the reason) and runs on the shared transport.
pub async fn accept(
    app: &App,
    config: &Arc<SocketIoConfig>,
    transport: &Arc<TransportConfig>,
    version: Version,
    req: Request<Body>,
) -> Response {
    let (ws, req) = match super::route::websocket_of(req).await {
        Ok(upgrade) => upgrade,
        Err(refused) => return refused,
    };
    let Some((admitted, outbox_rx)) = admit(app, config, version, &req).await else {
        return super::route::server_busy();
    };
    let sid = crate::ids::secret(20);
    let session = EngineSession::opened(admitted, version, config.clone(), &sid, &[]);
    let transport = transport.clone();
    let shutdown = app.shutdown.handle();
    ws.on_upgrade(transport.websocket(), move |socket| {
        crate::transport::run(socket, outbox_rx, session, transport, shutdown)
    })
}

impl EngineSession {
    /// The session of an admitted client, known to it as `sid`; queues the
    /// Engine.IO open packet offering `upgrades` (and, for EIO 3, the
    /// implicit connect of `/`).
    pub(super) fn opened(
        admitted: Admitted,
        version: Version,
        config: Arc<SocketIoConfig>,
        sid: &str,
        upgrades: &[&str],
    ) -> Self {
        let Admitted {
            conn,
            socket,
            token,
        } = admitted;
        conn.send_text(open_packet(version, &config, sid, upgrades));
        let session = EngineSession {
            conn,
            version,
            socket,
            token,
            held: None,
            config,
        };
        match version {
            // `/` is connected without asking (or refused so, with the
            // reason: 1.x/2.x clients emit `error`).
            Version::V3 => match &session.socket {
                Socket::Anonymous(stranger) => {
                    let why = stranger.refusal.as_deref().unwrap_or("not authorized");
                    session.refuse_sign_in("/", why.to_string());
                }
                _ => {
                    session.conn.send_text("40");
                }
            },
            // The first ping at once (as socketioxide, which served these
            // clients before, sent it): the client's pong shows it is
            // there.
            Version::V4 => {
                session.conn.send_text("2");
            }
        }
        session
    }

    /// Connects the namespace `nsp`; a second namespace or an unknown one
    /// is refused with a CONNECT_ERROR. A client without a query token is
    /// signed in with its `auth` payload's first.
    fn connect(&mut self, nsp: &str, auth_payload: &str) -> Flow {
        let Some(framing) = Framing::of_namespace(nsp) else {
            self.refuse_connect(nsp, "Invalid namespace".into());
            return Flow::Continue;
        };
        if let Socket::Anonymous(stranger) = &self.socket {
            if let Some(why) = &stranger.refusal {
                self.refuse_sign_in(nsp, why.to_string());
                return Flow::Continue;
            }
            return self.sign_in(nsp, auth_payload);
        }
        let refusal = match &self.socket {
            Socket::Connected(avaya) if avaya.framing() != framing => Some(format!(
                "this connection is on namespace {}; open another connection for {nsp}",
                avaya.framing().namespace()
            )),
            _ => self.other_token(auth_payload),
        };
        if let Some(why) = refusal {
            self.refuse_connect(nsp, why);
            return Flow::Continue;
        }
        self.bind(framing);
        let ack = match (&self.socket, self.version) {
            (Socket::Connected(avaya), Version::V4) => {
                let body = serde_json::json!({ "sid": avaya.session_id() });
                format!("40{}{body}", framing.namespace_part())
            }
            _ => format!("40{}", namespace_of(nsp)),
        };
        self.conn.send_text(ack);
        Flow::Continue
    }

    /// A CONNECT from a client without a query token: the token of its
    /// `auth` payload is checked (an OAuth token by the introspection
    /// endpoint, so the session waits), then [`Self::signed_in`].
    fn sign_in(&mut self, nsp: &str, auth_payload: &str) -> Flow {
        let auth: Option<Value> = serde_json::from_str(auth_payload).ok();
        let creds = match auth::credentials(None, auth.as_ref()) {
            Ok(creds) => creds,
            Err(why) => {
                self.refuse_sign_in(nsp, why);
                return Flow::Continue;
            }
        };
        let Some(verifier) = self.config.verifier.clone() else {
            self.refuse_sign_in(nsp, "not authorized: this server checks no tokens".into());
            return Flow::Continue;
        };
        let config = self.config.clone();
        let (answer, outcome) = oneshot::channel();
        let token = fingerprint(&creds.token);
        let check = async move {
            let introspector = config.introspector.as_deref();
            let _ = answer.send(auth::authenticate(&creds, &verifier, introspector).await);
        };
        let nsp = nsp.to_string();
        self.held = Some(Box::new(Held::Connect {
            nsp,
            token,
            outcome,
        }));
        Flow::Wait(Pending::new(check))
    }

    /// The `auth` token of a CONNECT to `nsp` was checked: the connection
    /// becomes the user's and the CONNECT goes on, or it is refused (the
    /// client may try again).
    fn signed_in(&mut self, nsp: &str, token: u64, checked: Result<(User, Access), String>) {
        let (user, access) = match checked {
            Ok(signed) => signed,
            Err(why) => return self.refuse_sign_in(nsp, why),
        };
        let presence = self.conn.presence();
        if let Err(e) = presence.set_user(&self.conn, Some(user.user_id.clone())) {
            return self.refuse_sign_in(nsp, format!("not authorized: {e}"));
        }
        presence.set_connection_info(&self.conn, user.profile.clone(), false);
        self.conn.set_access(access);
        self.token = token;
        self.socket = Socket::Waiting(user);
        self.connect(nsp, "");
    }

    /// A refused sign-in: counted, logged with the reason, and the
    /// CONNECT_ERROR saying it.
    fn refuse_sign_in(&self, nsp: &str, why: String) {
        if let Some(metrics) = &self.config.metrics {
            metrics.live().auth_failure(super::PROTOCOL);
        }
        if let Socket::Anonymous(stranger) = &self.socket {
            tracing::info!(
                target: crate::access::TARGET,
                path = %stranger.path,
                namespace = %nsp,
                client = stranger.client.map(tracing::field::display),
                reason = %why,
                "socket.io connect refused"
            );
        }
        self.refuse_connect(nsp, why);
    }

    /// A CONNECT_ERROR for namespace `nsp`, saying `why`.
    fn refuse_connect(&self, nsp: &str, why: String) {
        let body = serde_json::json!({ "message": why });
        let nsp = match namespace_of(nsp) {
            "" => String::new(),
            nsp => format!("{nsp},"),
        };
        self.conn.send_text(format!("44{nsp}{body}"));
    }

    /// Why a CONNECT's `auth` payload cannot be used: it carries a token
    /// other than the query's, which was checked.
    fn other_token(&self, auth_payload: &str) -> Option<String> {
        let auth: Value = serde_json::from_str(auth_payload).ok()?;
        let creds = auth::credentials(None, Some(&auth)).ok()?;
        (fingerprint(&creds.token) != self.token).then(|| {
            "the auth payload carries a token other than the query's; send one token, in the query or in auth".to_string()
        })
    }

    /// Makes the socket one of namespace `framing` (nothing if it is).
    fn bind(&mut self, framing: Framing) {
        if let Socket::Waiting(_) = self.socket
            && let Socket::Waiting(user) = std::mem::replace(&mut self.socket, Socket::Gone)
        {
            let sid = crate::ids::secret(20);
            let avaya = Avaya::new(&self.conn, user, sid, framing, self.config.clone());
            self.socket = Socket::Connected(avaya);
        }
    }

    /// The client left the namespace: its channels end; it may connect
    /// again on this connection.
    fn disconnect(&mut self, nsp: &str) {
        let Socket::Connected(avaya) = &self.socket else {
            return;
        };
        if Framing::of_namespace(nsp) != Some(avaya.framing()) {
            return;
        }
        let presence = self.conn.presence();
        for channel in self.conn.channels() {
            presence.unsubscribe(&self.conn, &channel, |_| {});
        }
        if let Socket::Connected(avaya) = std::mem::replace(&mut self.socket, Socket::Gone) {
            self.socket = Socket::Waiting(avaya.into_user());
        }
    }

    /// An EVENT on `nsp`: an Avaya event, or with `--rpc-url` a call the
    /// backend answers through the acknowledgment.
    fn event(&mut self, nsp: &str, ack: Option<u64>, data: &str) -> Flow {
        // EIO 3 clients are connected to `/` without asking.
        if self.version == Version::V3 && matches!(self.socket, Socket::Waiting(_)) && nsp == "/" {
            self.bind(Framing::Root);
        }
        let Socket::Connected(avaya) = &self.socket else {
            // A namespace the client never connected: ignored, as
            // socket.io does.
            return Flow::Continue;
        };
        if Framing::of_namespace(nsp) != Some(avaya.framing()) {
            return Flow::Continue;
        }
        let Some((event, payload)) = event_of(data) else {
            avaya.reply(
                &self.conn,
                wire::error(&WireError::new(
                    codes::INVALID_PARAMETERS,
                    "an event must be a JSON array [\"EVENT\", payload]",
                )),
            );
            return Flow::Continue;
        };
        if let (Some(id), false) = (ack, wire::client::is_avaya(&event))
            && let Some(rpc) = avaya.rpc_for(&event)
        {
            let call = crate::services::rpc::RpcCall::new(event, payload, &self.conn);
            let outbox = self.conn.outbox_handle();
            let head = format!("43{}{id}", avaya.framing().namespace_part());
            tokio::spawn(async move {
                let answer = super::avaya::rpc_answer(&rpc, &call).await;
                outbox.push_text(Utf8Bytes::from(format!("{head}[{answer}]")));
            });
            return Flow::Continue;
        }
        match avaya.try_handle(&self.conn, event, payload) {
            None => Flow::Continue,
            Some(held) => {
                let pending = self.conn.presence().consult(*held.question);
                self.held = Some(Box::new(Held::Event(held.event, held.payload)));
                Flow::Wait(pending)
            }
        }
    }
}

/// `/chat` as a packet's namespace part before its `,`; `/` as nothing.
fn namespace_of(nsp: &str) -> &str {
    if nsp == "/" { "" } else { nsp }
}

impl Session for EngineSession {
    fn connection(&self) -> &Connection {
        &self.conn
    }

    fn on_text(&mut self, text: &str) -> Flow {
        match parse(text) {
            Ok(Packet::Close) => Flow::Close(CloseReason::new(close::NORMAL, "client closed")),
            Ok(Packet::Ping(probe)) => {
                self.conn.send_text(format!("3{probe}"));
                Flow::Continue
            }
            Ok(Packet::Ignored | Packet::Answer) => Flow::Continue,
            Ok(Packet::Connect { nsp, auth }) => self.connect(nsp, auth),
            Ok(Packet::Disconnect { nsp }) => {
                self.disconnect(nsp);
                Flow::Continue
            }
            Ok(Packet::Event { nsp, ack, data }) => self.event(nsp, ack, data),
            Ok(Packet::Binary) => Flow::Close(CloseReason::new(
                close::UNSUPPORTED,
                "binary Socket.IO events are not supported; send JSON",
            )),
            Err(Malformed(why)) => Flow::Close(CloseReason::new(
                close::INVALID_DATA,
                format!("{why}; this server speaks Engine.IO 3 and 4"),
            )),
        }
    }

    fn on_rate_limited(&mut self, limit: u32) -> Flow {
        if let Socket::Connected(avaya) = &self.socket {
            avaya.rate_limited(&self.conn, limit);
        }
        Flow::Continue
    }

    fn on_removed(&mut self, channel: &str, reason: &str) -> Flow {
        if let Socket::Connected(avaya) = &self.socket {
            let order = Order::LeaveChannel {
                channel: channel.into(),
                reason: reason.into(),
            };
            avaya.obey(&self.conn, order);
        }
        Flow::Continue
    }

    fn on_resume(&mut self) -> Flow {
        match self.held.take().map(|held| *held) {
            Some(Held::Event(event, payload)) => {
                if let Socket::Connected(avaya) = &self.socket {
                    avaya.dispatch(&self.conn, &event, payload, true);
                }
            }
            Some(Held::Connect {
                nsp,
                token,
                mut outcome,
            }) => {
                let checked = outcome.try_recv().unwrap_or_else(|_| {
                    Err("not authorized: the token could not be checked; try again".into())
                });
                self.signed_in(&nsp, token, checked);
            }
            None => {}
        }
        Flow::Continue
    }

    /// A client without a query token must CONNECT with one in time.
    fn next_timer(&self) -> Option<Instant> {
        match &self.socket {
            Socket::Anonymous(stranger) if self.held.is_none() => Some(stranger.deadline),
            _ => None,
        }
    }

    fn on_timer(&mut self, now: Instant) -> Flow {
        match &self.socket {
            Socket::Anonymous(stranger) if now >= stranger.deadline && self.held.is_none() => {
                Flow::Close(CloseReason::new(
                    close::POLICY,
                    format!(
                        "no namespace CONNECT with a token within {} s; send auth: {{token, tokenType}} or the token in the query",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                ))
            }
            _ => Flow::Continue,
        }
    }

    fn keepalive(&self) -> Outbound {
        match self.version {
            // Engine.IO 4 clients expect the server's ping packet and
            // close a connection that sends none.
            Version::V4 => Outbound::Text(Utf8Bytes::from_static("2")),
            // Engine.IO 3 clients ping themselves; the WebSocket ping
            // finds a dead peer.
            Version::V3 => Outbound::Ping,
        }
    }

    /// When the server closes: the `connection.closing` error event with
    /// the reason, then, for a server going away (shutdown, drain), the
    /// Engine.IO close packet: socket.io-client reports "transport close"
    /// and reconnects, to another node; for any other reason (an
    /// operator's disconnect, a slow consumer), the namespace DISCONNECT:
    /// "io server disconnect", which it does not retry.
    fn farewell(&self, reason: &CloseReason) -> Vec<Outbound> {
        if reason.code == close::NORMAL {
            return Vec::new();
        }
        let Socket::Connected(avaya) = &self.socket else {
            return vec![Outbound::Text(Utf8Bytes::from_static("1"))];
        };
        let err = WireError::new(codes::CLOSING, reason.reason.to_string());
        let event = avaya.framing().frame(wire::error(&err));
        let last = match reason.code {
            close::GOING_AWAY => Utf8Bytes::from_static("1"),
            _ => Utf8Bytes::from(format!("41{}", avaya.framing().namespace_part())),
        };
        vec![Outbound::Text(event), Outbound::Text(last)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_packets_clients_send() {
        assert_eq!(parse("1"), Ok(Packet::Close));
        assert_eq!(parse("2"), Ok(Packet::Ping("")));
        assert_eq!(parse("2probe"), Ok(Packet::Ping("probe")));
        assert_eq!(parse("3"), Ok(Packet::Ignored));
        assert_eq!(parse("6"), Ok(Packet::Ignored));
        assert_eq!(parse("40"), Ok(Packet::Connect { nsp: "/", auth: "" }));
        assert_eq!(
            parse("40{\"token\":\"t\"}"),
            Ok(Packet::Connect {
                nsp: "/",
                auth: "{\"token\":\"t\"}"
            })
        );
        assert_eq!(
            parse("40/chat,"),
            Ok(Packet::Connect {
                nsp: "/chat",
                auth: ""
            })
        );
        assert_eq!(
            parse("40/chat,{\"a\":1}"),
            Ok(Packet::Connect {
                nsp: "/chat",
                auth: "{\"a\":1}"
            })
        );
        // EIO 3: the query after the namespace, with or without a comma.
        assert_eq!(
            parse("40/chat?tokenType=jwt&token=a.b.c"),
            Ok(Packet::Connect {
                nsp: "/chat",
                auth: ""
            })
        );
        assert_eq!(
            parse("40/chat?tokenType=jwt&token=a.b.c,"),
            Ok(Packet::Connect {
                nsp: "/chat",
                auth: ""
            })
        );
        assert_eq!(parse("41/chat,"), Ok(Packet::Disconnect { nsp: "/chat" }));
        assert_eq!(parse("41"), Ok(Packet::Disconnect { nsp: "/" }));
        assert_eq!(
            parse("42/chat,[\"E\",{}]"),
            Ok(Packet::Event {
                nsp: "/chat",
                ack: None,
                data: "[\"E\",{}]"
            })
        );
        assert_eq!(
            parse("42/chat,17[\"E\"]"),
            Ok(Packet::Event {
                nsp: "/chat",
                ack: Some(17),
                data: "[\"E\"]"
            })
        );
        assert_eq!(
            parse("423[\"E\",1]"),
            Ok(Packet::Event {
                nsp: "/",
                ack: Some(3),
                data: "[\"E\",1]"
            })
        );
        assert_eq!(parse("43/chat,1[]"), Ok(Packet::Answer));
        assert_eq!(
            parse("451-[\"E\",{\"_placeholder\":true,\"num\":0}]"),
            Ok(Packet::Binary)
        );
    }

    #[test]
    fn refuses_what_is_not_a_packet() {
        for bad in [
            "",
            "0{}",
            "x",
            "4",
            "47",
            "4é",
            "é",
            "42/chat,99999999999999999999999[\"E\"]",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        // Whatever follows a valid start, multi-byte characters included,
        // parses without a panic.
        for start in ["4", "40", "42", "42/", "40/chat?", "42/chat,1"] {
            for tail in ["é", "/é,", "?é", "1é[", "€,€", "/chat?é,é"] {
                let _ = parse(&format!("{start}{tail}"));
            }
        }
    }

    #[test]
    fn reads_an_events_name_and_first_argument() {
        assert_eq!(
            event_of("[\"SEND_MESSAGE\",{\"a\":1},2]"),
            Some(("SEND_MESSAGE".into(), serde_json::json!({"a": 1})))
        );
        assert_eq!(
            event_of("[\"SEND_MESSAGE\"]"),
            Some(("SEND_MESSAGE".into(), Value::Null))
        );
        assert_eq!(event_of("[1,2]"), None);
        assert_eq!(event_of("{}"), None);
        assert_eq!(event_of("[\"E\""), None);
    }
}
