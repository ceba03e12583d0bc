//! Socket.IO front end, Avaya Spaces style: path `/socket.io/`, namespaces
//! `/` and `/chat`, socket.io-client 1.x/2.x (Engine.IO 3) and 3.x/4.x
//! (Engine.IO 4). Spec: ../shared/specs/socketio-avaya.md.
//!
//! ```text
//! io.connect("http://HOST:PORT/chat", {query: "tokenType=jwt&token=<JWT>", transports: ["websocket"]})
//! ```
//!
//! rollcall's own Engine.IO serves every client: `route.rs` reads what a
//! request asks for, `engine.rs` is a connection's Engine.IO and Socket.IO
//! packets (on the WebSocket transport the other front ends share, for a
//! WebSocket opened straight away), `polling.rs` long-polling and the
//! upgrade from it to a WebSocket; `avaya.rs` the Avaya events of a
//! connected namespace, `auth.rs` the tokens, `wire.rs` the Avaya payloads
//! and the codec. This file is the route and the adapter's config.

pub mod auth;
pub mod avaya;
pub mod engine;
pub mod polling;
pub mod route;
pub mod wire;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::response::IntoResponse;
use axum::routing::any;
use serde_json::Value;

use crate::app::App;
use crate::frontends::FrontEnd;
use crate::outbox::OutboxReceiver;
use crate::presence::{Codec, ConnectError, Connection, Identity};

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
    /// Largest Engine.IO packet a client may send (`maxPayload`): a larger
    /// WebSocket message closes the connection, a larger polling body ends
    /// the session.
    pub max_ws_message_bytes: usize,
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
    /// `max-frame-bytes` (the event rate, `max-messages-per-second`, is the
    /// transport's); an OAuth introspection URL must be a valid http:// or
    /// https:// URL.
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
            ..defaults
        })
    }
}

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

/// The adapter's routes, with its settings: everything under `/socket.io`.
pub fn routes(app: &App, mut settings: SocketIoConfig) -> Router<App> {
    settings.counters = app.metrics.live().protocol(PROTOCOL);
    settings.metrics = Some(app.metrics.clone());
    settings.verifier = Some(app.verifier.clone());
    let cfg = Arc::new(settings);
    // Once on a WebSocket, a connection runs on the transport the other
    // front ends share: its liveness check is the Engine.IO ping, and a
    // client that sends nothing (not even a pong) for a ping interval and
    // timeout is gone.
    let mut transport = (*app.config.transport_for(PROTOCOL)).clone();
    transport.ping_interval = cfg.settings.socketio_ping_interval;
    transport.idle_timeout =
        cfg.settings.socketio_ping_interval + cfg.settings.socketio_ping_timeout;
    transport.max_frame_bytes = cfg.max_ws_message_bytes;
    let transport = Arc::new(transport);
    let engine_app = app.clone();
    let handle = move |req: Request<Body>| {
        let (app, cfg, transport) = (engine_app.clone(), cfg.clone(), transport.clone());
        async move {
            match route::Route::of(&req) {
                Err(refusal) => refusal.into_response(),
                Ok(route::Route::Open { version, websocket }) => match websocket {
                    true => engine::accept(&app, &cfg, &transport, version, req).await,
                    false => polling::handshake(&app, &cfg, &transport, version, req).await,
                },
                Ok(route::Route::Session { sid }) => match cfg.polling.get(sid) {
                    Some(session) => polling::serve(&app, &cfg, &transport, session, req).await,
                    None => route::session_unknown(),
                },
            }
        }
    };
    Router::new()
        .route("/socket.io", any(handle.clone()))
        .route("/socket.io/", any(handle.clone()))
        .route("/socket.io/{*rest}", any(handle))
}
