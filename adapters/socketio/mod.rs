//! Socket.IO front end, Avaya Spaces style: path `/socket.io/`, namespaces
//! `/` and `/chat`, socket.io-client 1.x/2.x (Engine.IO 3) and 3.x/4.x
//! (Engine.IO 4). Spec: ../shared/specs/socketio-avaya.md.
//!
//! ```text
//! io.connect("http://HOST:PORT/chat", {query: "tokenType=jwt&token=<JWT>", transports: ["websocket"]})
//! ```
//!
//! rollcall's own Engine.IO serves every client whose token is in the
//! query: `engine.rs` WebSockets opened straight away (on the shared
//! transport), `polling.rs` long-polling and the upgrade from it (after
//! which the session runs on the shared transport too). socketioxide runs
//! the rest (`auth`-payload tokens, refusals), with `shim.rs` and
//! `polling_shim.rs` fixing the 1.x/2.x namespace CONNECT and `session.rs`
//! running one of its sockets. Both run the Avaya events of
//! `avaya.rs`; `auth.rs` checks tokens, `wire.rs` holds the Avaya payloads
//! and the codec. This file is the route, which picks the Engine.IO, and the
//! adapter's config.

pub mod auth;
pub mod avaya;
pub mod engine;
pub mod polling;
pub mod polling_shim;
pub mod session;
pub mod sever;
pub mod shim;
pub mod wire;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::any;
use hyper::service::Service as HyperService;
use serde_json::Value;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::{SocketIo, TransportType};

use crate::app::App;
use crate::frontends::FrontEnd;
use crate::outbox::OutboxReceiver;
use crate::presence::{Codec, ConnectError, Connection, Identity};
use crate::shutdown::ShutdownController;

/// The protocol name used in logs and listings.
pub const PROTOCOL: &str = "socketio";

/// The Socket.IO front end, as the server registers it.
pub const FRONT_END: FrontEnd = FrontEnd {
    name: "socketio",
    protocol: PROTOCOL,
    routes: |app, config| {
        let mut settings = SocketIoConfig::from_settings(config)?;
        settings.rpc = app.services.rpc().cloned();
        Ok(routes(app, settings))
    },
    check: |config| SocketIoConfig::from_settings(config).map(|_| ()),
    endpoint: |addr| format!("Socket.IO   http://{addr}/chat  (?tokenType=jwt&token=<JWT>)"),
};

/// The namespaces served. `/` must exist for Engine.IO 3 clients, which
/// are always connected to it.
pub const NAMESPACES: [&str; 2] = ["/", "/chat"];

/// Socket.IO adapter settings.
#[derive(Clone, Debug)]
pub struct SocketIoConfig {
    /// The front end's declared settings, as given.
    pub settings: SocketIoSettings,
    /// Checks `tokenType=oauth` tokens (None: OAuth tokens are refused).
    pub introspector: Option<Arc<auth::Introspector>>,
    /// Largest SEND_MESSAGE / presence payload, in bytes; bigger ones get
    /// SEND_MESSAGE_FAILED / PRESENCE_EVENT_RESPONSE errors.
    pub max_payload_bytes: usize,
    /// Largest WebSocket message socketioxide reads (larger ones close the
    /// connection); also the polling body limit.
    pub max_ws_message_bytes: usize,
    /// Events per second a socket may send; more get an `error` event.
    pub max_events_per_second: u32,
    /// How long the pump waits for a socket whose buffer is full before
    /// disconnecting it as a slow consumer.
    pub write_timeout: Duration,
    /// How long the pump holds an event for more to be emitted with it, so
    /// that socketioxide writes them together (`--write-delay`).
    pub write_delay: Duration,
    /// The backend that answers custom events (`--rpc-url`).
    pub rpc: Option<Arc<crate::services::rpc::Rpc>>,
    /// The front end's byte and delivery metrics (set in [`routes`]).
    pub counters: crate::metrics::ProtocolCounters,
    /// The server's metrics (set in [`routes`]; None in unit tests).
    pub metrics: Option<Arc<crate::metrics::MetricsObserver>>,
    /// The long-polling sessions of rollcall's own Engine.IO, by `sid`.
    pub polling: Arc<polling::Sessions>,
    /// Checks the tokens clients send in a CONNECT's `auth` payload (set
    /// in [`routes`]).
    pub verifier: Option<crate::auth::JwtVerifier>,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        SocketIoConfig {
            settings: SocketIoSettings::default(),
            introspector: None,
            max_payload_bytes: 128 * 1024,
            max_ws_message_bytes: 1024 * 1024,
            max_events_per_second: 100,
            write_timeout: Duration::from_secs(10),
            write_delay: Duration::ZERO,
            rpc: None,
            counters: Default::default(),
            metrics: None,
            polling: Default::default(),
            verifier: None,
        }
    }
}

/// Socket.IO front end settings (`[socketio]` in the TOML file).
#[derive(clap::Args, Clone, Debug)]
#[group(id = "socketio")]
pub struct SocketIoSettings {
    /// RFC 7662 introspection URL (http:// or https://) for tokenType=oauth, e.g.
    /// http://client:secret@127.0.0.1:9000/introspect [default: none; OAuth tokens are
    /// refused].
    #[arg(long)]
    pub oauth_introspection_url: Option<String>,
    /// How long an introspection answer is reused.
    #[arg(long, default_value = "30s", value_parser = crate::auth::parse_duration)]
    pub oauth_cache_ttl: std::time::Duration,
    /// Engine.IO `pingInterval`: how often the server pings each client (socket.io's default).
    #[arg(long, default_value = "25s", value_parser = crate::config::positive_duration)]
    pub socketio_ping_interval: std::time::Duration,
    /// Engine.IO `pingTimeout`: a client that does not answer a ping within this long is
    /// disconnected (socket.io's default).
    #[arg(long, default_value = "20s", value_parser = crate::config::positive_duration)]
    pub socketio_ping_timeout: std::time::Duration,
}

impl Default for SocketIoSettings {
    fn default() -> Self {
        crate::config::defaults()
    }
}

impl SocketIoConfig {
    /// The settings from the server config: the payload limit is
    /// `max-frame-bytes`, the event rate `max-messages-per-second`; an
    /// OAuth introspection URL must be a valid http:// or https:// URL.
    pub fn from_settings(config: &crate::config::Config) -> Result<Self, String> {
        let settings = &config.front_ends.socketio;
        let introspector = settings
            .oauth_introspection_url
            .as_deref()
            .filter(|u| !u.is_empty())
            .map(|url| {
                auth::Introspector::new(
                    url,
                    settings.oauth_cache_ttl,
                    config.tls_ca_file.as_deref(),
                )
                .map(Arc::new)
            })
            .transpose()?;
        let defaults = SocketIoConfig::default();
        let max_frame_bytes = config.limits.max_frame_bytes;
        Ok(SocketIoConfig {
            settings: settings.clone(),
            introspector,
            max_payload_bytes: max_frame_bytes,
            max_ws_message_bytes: defaults.max_ws_message_bytes.max(max_frame_bytes),
            max_events_per_second: config.limits.max_messages_per_second,
            write_delay: config.limits.write_delay,
            ..defaults
        })
    }
}

/// See `routes`: socketioxide's own per-socket queue, in packets.
const SOCKETIOXIDE_BUFFER: usize = 32;

/// Bytes tungstenite (inside socketioxide) reads per syscall: it zeroes
/// this much buffer on every read and keeps it for the socket's life, so
/// 512 bytes instead of its 128 KiB default; clients are rate-limited.
const WS_READ_BUFFER_BYTES: usize = 512;
/// At shutdown, how long the Engine.IO connections stay open for the pumps
/// to send their going-away errors.
const PUMPS_GRACE: Duration = Duration::from_secs(1);

fn codec() -> Arc<dyn Codec> {
    // One codec instance for every Socket.IO connection, so broadcasts are
    // encoded once for all of them.
    static CODEC: OnceLock<Arc<dyn Codec>> = OnceLock::new();
    CODEC.get_or_init(|| Arc::new(wire::SocketIoCodec)).clone()
}

/// Registers the core connection of an authenticated `user`, with the
/// grants its token carries (`access`); its profile is the identity's
/// member data, one value for both.
fn register(
    app: &App,
    user: &auth::User,
    access: crate::policy::Access,
) -> Result<(Connection, OutboxReceiver), ConnectError> {
    let identity = Identity {
        user_id: Some(user.user_id.clone()),
        info: user.profile.clone(),
    };
    let (conn, rx) = app.presence.connect(identity, codec(), PROTOCOL)?;
    conn.set_access(access);
    Ok((conn, rx))
}

/// Registers the core connection of a client that has not said who it is
/// yet (its token comes with its namespace CONNECT).
fn register_anonymous(app: &App) -> Result<(Connection, OutboxReceiver), ConnectError> {
    let identity = Identity {
        user_id: None,
        info: Arc::new(Value::Null),
    };
    app.presence.connect(identity, codec(), PROTOCOL)
}

/// Checks the handshake token, registers the core connection and stores
/// the session in the socket's extensions. An Err refuses the namespace
/// connect: 1.x/2.x clients get an `error` event, 4.x `connect_error`,
/// with this message.
async fn authenticate(
    app: &App,
    cfg: &Arc<SocketIoConfig>,
    s: &SocketRef,
    auth_payload: Option<&Value>,
) -> Result<(), String> {
    let checked = match auth::credentials(s.req_parts().uri.query(), auth_payload) {
        Ok(creds) => auth::authenticate(&creds, &app.verifier, cfg.introspector.as_deref()).await,
        Err(e) => Err(e),
    };
    let (user, access) = checked.inspect_err(|_| app.metrics.live().auth_failure(PROTOCOL))?;
    let (conn, rx) = register(app, &user, access).map_err(|e| format!("not authorized: {e}"))?;
    // Without a switch (polling, or upgraded from polling) socketioxide
    // can close this client only with all the others.
    if s.req_parts().extensions.get::<sever::Sever>().is_none() {
        conn.set_closes_with_server();
    }
    let session = session::Session::new(conn, rx, user, s.id.to_string(), cfg.clone());
    s.extensions.insert(Arc::new(session));
    // Wired here, before socketioxide sends the connect acknowledgment: an
    // event the client sends right after it finds its handler in place
    // (the connect handler, which starts the pump, runs later).
    on_connect(s.clone());
    Ok(())
}

/// Logs a refused namespace connect (the Socket.IO counterpart of a
/// refused WebSocket upgrade) on the access log, with the reason.
fn refused(s: &SocketRef, why: &str) {
    let parts = s.req_parts();
    tracing::info!(
        target: crate::access::TARGET,
        path = %parts.uri.path(),
        namespace = %s.ns(),
        client = crate::access::client(&parts.extensions).map(tracing::field::display),
        reason = %why,
        "socket.io connect refused"
    );
}

/// Wires a socket the middleware accepted: its event and disconnect
/// handlers (the pump starts later, in [`start_pump`]).
fn on_connect(s: SocketRef) {
    let Some(session) = s.extensions.get::<Arc<session::Session>>() else {
        let _ = s.disconnect();
        return;
    };
    // socketioxide calls the handler synchronously for each packet, in
    // arrival order, then runs the future it returns in a task of its own:
    // the event is handled in the call, so events keep their order.
    let handler = session.clone();
    let counted = session.counters().clone();
    s.on_fallback(
        move |Event(event): Event, data: TryData<Value>, ack: AckSender| {
            let payload = data.0.unwrap_or_else(|e| malformed(&e));
            counted.bytes_received.inc_by(event_len(&event, &payload));
            match wire::client::is_avaya(&event) {
                true => handler.on_event(event, payload),
                false => handler.on_call(event, payload, ack),
            }
            async {}
        },
    );
    let closer = session.clone();
    s.on_disconnect(move || {
        let session = closer.clone();
        async move { session.close() }
    });
}

/// Starts the socket's pump, from the namespace's connect handler. Not
/// from the middleware: socketioxide sends the connect acknowledgment,
/// then marks the socket connected, then calls this handler, and refuses
/// an emit before it is marked. A pump started in the middleware could
/// take the reply to an event the client sent right after the
/// acknowledgment in that gap, and the reply was lost (a loaded machine
/// lost a `CHANNEL_SUBSCRIBED` about once in ten 1,000-client runs).
fn start_pump(app: &App, pumps: &ShutdownController, s: SocketRef) {
    let Some(session) = s.extensions.get::<Arc<session::Session>>() else {
        return;
    };
    tokio::spawn(session.pump(s, app.shutdown.handle(), pumps.handle()));
}

/// The length of `[event, payload]` as JSON: what the client sent, less
/// the packet header socketioxide read (counted without a copy).
fn event_len(event: &str, payload: &Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing JSON into a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, &(event, payload));
    count.0
}

/// Starts socketioxide's session on an upgraded stream.
fn start_session<S, St, E>(svc: S) -> impl FnOnce(St, Request<()>) + Send + 'static
where
    S: HyperService<(St, Request<()>), Future = std::future::Ready<Result<(), E>>> + Send + 'static,
    E: std::fmt::Display,
{
    move |stream, head| {
        if let Err(e) = svc.call((stream, head)).into_inner() {
            tracing::debug!(error = %e, "socket.io websocket refused");
        }
    }
}

/// A payload socketioxide could not parse: handed to the handlers as a
/// value no decoder accepts, so the client gets the event's own error.
fn malformed(e: &dyn std::fmt::Display) -> Value {
    tracing::debug!(error = %e, "socket.io payload could not be read");
    Value::Null
}

/// The adapter's routes, with its settings: everything under `/socket.io`.
pub fn routes(app: &App, mut settings: SocketIoConfig) -> Router<App> {
    settings.counters = app.metrics.live().protocol(PROTOCOL);
    settings.metrics = Some(app.metrics.clone());
    settings.verifier = Some(app.verifier.clone());
    let cfg = Arc::new(settings);
    let (svc, io) = SocketIo::builder()
        .ping_interval(cfg.settings.socketio_ping_interval)
        .ping_timeout(cfg.settings.socketio_ping_timeout)
        // Packets socketioxide queues per socket before `emit` reports the
        // buffer full: small, so a client that stops reading backs up into
        // the core outbox, which --outbox-bytes bounds.
        .max_buffer_size(SOCKETIOXIDE_BUFFER)
        // Client frames are small: tungstenite allocates this read buffer
        // up front for every socket and keeps it (the default 4 KiB cost
        // 3.5 KiB per idle socket); a larger frame is still read whole.
        .ws_read_buffer_size(WS_READ_BUFFER_BYTES)
        .max_payload(cfg.max_ws_message_bytes as u64)
        .ws_max_message_size(cfg.max_ws_message_bytes)
        .ws_max_frame_size(cfg.max_ws_message_bytes)
        .transports([TransportType::Polling, TransportType::Websocket])
        .build_svc();
    let pumps = Arc::new(ShutdownController::new());
    for ns in NAMESPACES {
        let mw_app = app.clone();
        let mw_cfg = cfg.clone();
        let middleware = move |s: SocketRef, auth: TryData<Value>| {
            let app = mw_app.clone();
            let cfg = mw_cfg.clone();
            async move {
                let result = authenticate(&app, &cfg, &s, auth.0.as_ref().ok()).await;
                if let Err(why) = &result {
                    refused(&s, why);
                }
                result
            }
        };
        // Everything else is wired by the middleware (see `authenticate`).
        let (pump_app, pump_pumps) = (app.clone(), pumps.clone());
        let handler = move |s: SocketRef| {
            start_pump(&pump_app, &pump_pumps, s);
            async {}
        };
        io.ns(ns, handler.with(middleware));
    }
    // On shutdown, close every Engine.IO connection once the pumps have
    // sent their going-away errors (each pump holds a handle of `pumps`).
    let mut stop = app.shutdown.handle();
    let closer = io.clone();
    let pumps_done = pumps.clone();
    tokio::spawn(async move {
        stop.wait().await;
        pumps_done.drain(PUMPS_GRACE).await;
        closer.close().await;
    });
    // rollcall's own Engine.IO for WebSockets opened straight away (see
    // `engine.rs`), on the transport the other front ends share: its
    // liveness check is the Engine.IO ping, and a client that sends
    // nothing (not even a pong) for a ping interval and timeout is gone.
    let mut transport = (*app.config.transport_for(PROTOCOL)).clone();
    transport.ping_interval = cfg.settings.socketio_ping_interval;
    transport.idle_timeout =
        cfg.settings.socketio_ping_interval + cfg.settings.socketio_ping_timeout;
    transport.max_frame_bytes = cfg.max_ws_message_bytes;
    let transport = Arc::new(transport);
    let engine_app = app.clone();
    // EIO3 WebSocket upgrades and polling POSTs go through the CONNECT
    // shims; everything else (EIO4) straight to socketioxide.
    let polling_limit = cfg.max_ws_message_bytes;
    let handle = move |req: Request<Body>| {
        let svc = svc.clone();
        let (app, cfg, transport) = (engine_app.clone(), cfg.clone(), transport.clone());
        async move {
            let query = req.uri().query().unwrap_or("");
            // A request of one of rollcall's own polling sessions (a GET, a
            // POST, or the WebSocket it upgrades to).
            if let Some(session) = polling::sid_of(query).and_then(|sid| cfg.polling.get(sid)) {
                return polling::serve(&app, &cfg, &transport, session, req).await;
            }
            let req = match polling::serves(req.method(), query) {
                Some(version) => {
                    match polling::handshake(&app, &cfg, &transport, version, req).await {
                        Ok(response) => return response,
                        Err(req) => req,
                    }
                }
                None => req,
            };
            let version = engine::serves(req.uri().query().unwrap_or(""));
            let req = match version.filter(|_| shim::is_websocket(&req)) {
                Some(version) => match engine::accept(&app, &cfg, &transport, version, req).await {
                    Ok(response) => return response,
                    Err(req) => req,
                },
                None => req,
            };
            let req = match polling_shim::is_eio3_polling_post(&req) {
                true => polling_shim::rewrite_request(req, polling_limit).await,
                false => req,
            };
            if shim::is_websocket(&req) {
                // Each WebSocket client's stream can be cut alone, for the
                // drain spread (`sever.rs`): the session finds the switch
                // in the request's extensions.
                let mut req = req;
                let sever = sever::Sever::default();
                req.extensions_mut().insert(sever.clone());
                return match shim::is_eio3_websocket(&req) {
                    true => shim::upgrade(
                        move |io| sever::Severable::new(shim::ConnectRewrite::new(io), sever),
                        start_session(svc),
                        req,
                    ),
                    false => shim::upgrade(
                        move |io| sever::Severable::new(io, sever),
                        start_session(svc),
                        req,
                    ),
                };
            }
            match HyperService::call(&svc, req).await {
                Ok(resp) => resp.map(Body::new),
                Err(e) => match e {},
            }
        }
    };
    Router::new()
        .route("/socket.io", any(handle.clone()))
        .route("/socket.io/", any(handle.clone()))
        .route("/socket.io/{*rest}", any(handle))
}
