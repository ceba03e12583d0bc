//! Hotsock-style front end: `ws://HOST:PORT/hotsock?token=JWT` (any path
//! below `/hotsock` too). Spec: ../shared/specs/hotsock.md.
//!
//! `wire.rs` parses and encodes frames, `session.rs` runs one connection;
//! this file is the route and the adapter's config.

pub mod session;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::websocket::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use crate::app::App;
use crate::frontends::FrontEnd;
use crate::presence::{Codec, Identity};

/// Hotsock front end settings (`[hotsock]` in the TOML file).
#[derive(clap::Args, Clone, Debug)]
#[group(id = "hotsock")]
pub struct HotsockSettings {
    /// How long a connection may live (`connectionExpiresAt`); Hotsock: 2 h.
    #[arg(long, default_value = "2h", value_parser = crate::auth::parse_duration)]
    pub connection_lifetime: Duration,
    /// Interval of `hotsock.keepAlive` for tokens with `keepAlive: true`.
    #[arg(long, default_value = "570s", value_parser = crate::auth::parse_duration)]
    pub keep_alive_interval: Duration,
}

impl Default for HotsockSettings {
    fn default() -> Self {
        crate::config::defaults()
    }
}

/// The protocol name used in logs and listings.
pub const PROTOCOL: &str = "hotsock";

/// The Hotsock front end, as the server registers it.
pub const FRONT_END: FrontEnd = FrontEnd {
    name: "hotsock",
    protocol: PROTOCOL,
    routes: |app, config| Ok(routes(app, config.front_ends.hotsock.clone())),
    check: |_| Ok(()),
    endpoint: |addr| format!("Hotsock     ws://{addr}/hotsock?token=<JWT>"),
};

fn codec() -> Arc<dyn Codec> {
    // One codec instance for every Hotsock connection, so broadcasts are
    // encoded once for all of them.
    static CODEC: OnceLock<Arc<dyn Codec>> = OnceLock::new();
    CODEC.get_or_init(|| Arc::new(wire::HotsockCodec)).clone()
}

/// The adapter's routes, with its settings.
pub fn routes(_app: &App, settings: HotsockSettings) -> Router<App> {
    Router::new()
        .route("/hotsock", get(upgrade))
        .route("/hotsock/", get(upgrade))
        .route("/hotsock/{*rest}", get(upgrade))
        .layer(Extension(Arc::new(settings)))
}

/// A 401 for bad credentials, counted in `rollcall_auth_failures_total`.
fn unauthorized(app: &App, why: String) -> Response {
    app.metrics.live().auth_failure(PROTOCOL);
    refuse(StatusCode::UNAUTHORIZED, why)
}

/// Refuses the upgrade with `status`; the client gets `why` as the body,
/// the access log shows it as the reason.
fn refuse(status: StatusCode, why: String) -> Response {
    let response = (status, why.clone()).into_response();
    crate::access::with_reason(response, why)
}

/// Verifies the connect token, registers the connection, then upgrades.
/// Every token failure is an HTTP 401 before the upgrade (spec §1.2).
async fn upgrade(
    State(app): State<App>,
    Extension(hotsock): Extension<Arc<HotsockSettings>>,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(token) = query.get("token") else {
        return unauthorized(
            &app,
            "missing token: connect to /hotsock?token=<JWT with scope \"connect\">".into(),
        );
    };
    let claims = match app.verifier.verify_hotsock(token).and_then(|claims| {
        claims.ensure_can_connect()?;
        app.single_use.check(&claims)?;
        Ok(claims)
    }) {
        Ok(c) => c,
        Err(e) => return unauthorized(&app, format!("invalid token: {e}")),
    };
    let identity = Identity {
        user_id: claims
            .uid
            .as_deref()
            .filter(|u| !u.is_empty())
            .map(Arc::from),
        info: Arc::new(claims.umd.clone().unwrap_or(serde_json::Value::Null)),
    };
    let (conn, outbox_rx) = match app.presence.connect(identity, codec(), PROTOCOL) {
        Ok(pair) => pair,
        Err(e @ crate::presence::ConnectError::InvalidUserId(_)) => {
            return unauthorized(&app, format!("invalid token: {e}"));
        }
        Err(e) => return refuse(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
    };
    conn.set_access(crate::policy::Access::authenticated(Some(
        claims.channels.clone(),
    )));
    let transport = app.config.transport_for(PROTOCOL);
    let shutdown = app.shutdown.handle();
    let verifier = app.verifier.clone();
    let single_use = app.single_use.clone();
    let rpc = app.services.rpc().cloned();
    // Not an async block: it would keep its own copy of the session for the
    // connection's lifetime; `run` holds everything in one allocation.
    ws.on_upgrade(transport.websocket(), move |socket| {
        let secret = crate::ids::secret(20);
        // Lets the client act on its connection over HTTP (leases, privacy).
        conn.set_secret(&secret);
        let mut session =
            session::HotsockSession::new(conn, claims, verifier, single_use, hotsock, rpc);
        session.open(&secret);
        crate::transport::run(socket, outbox_rx, session, transport, shutdown)
    })
}
