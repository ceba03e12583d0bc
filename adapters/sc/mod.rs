//! SocketCluster front end: protocol v1 (socketcluster-client 14.x) with
//! the sc-stateless-presence server semantics, at
//! `ws://HOST:PORT/socketcluster/`. Spec: ../shared/specs/socketcluster.md;
//! user guide: adapters/sc/README.md.
//!
//! `wire.rs` decodes and encodes frames, `session.rs` runs one connection;
//! this file is the route, the adapter's config and the presence `ping`
//! timer.

pub mod session;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::websocket::WebSocketUpgrade;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::value::RawValue;

use crate::app::App;
use crate::auth::JwtVerifier;
use crate::frontends::FrontEnd;
use crate::presence::{ChannelMessage, Codec, Identity, Presence};

/// The protocol name used in logs and listings.
pub const PROTOCOL: &str = "socketcluster";

/// The SocketCluster front end, as the server registers it.
pub const FRONT_END: FrontEnd = FrontEnd {
    name: "sc",
    protocol: PROTOCOL,
    routes: |app, config| Ok(routes(app, ScConfig::from_settings(&config.front_ends.sc)?)),
    check: |config| ScConfig::from_settings(&config.front_ends.sc).map(|_| ()),
    endpoint: |addr| format!("SocketCluster ws://{addr}/socketcluster/  (token in #handshake)"),
};

/// The WebSocket path (socketcluster-client's default).
pub const PATH: &str = "/socketcluster/";

/// SocketCluster adapter settings (SC's own option names in brackets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScConfig {
    /// Period of the presence `ping` packets [`presenceInterval`, 10 s].
    pub presence_interval: Duration,
    /// `timeout` of join and ping packets: clients drop a user not seen for
    /// this long [`presenceTimeout`, interval × 1.3].
    pub presence_timeout: Duration,
    /// Period of the `#1` pings [`pingInterval`, 8 s].
    pub ping_interval: Duration,
    /// A client silent this long is closed with 4001; sent in the handshake
    /// reply [`pingTimeout`, 20 s].
    pub ping_timeout: Duration,
    /// A socket that sends no `#handshake` this long is closed with 4005
    /// [`handshakeTimeout`, 10 s].
    pub handshake_timeout: Duration,
}

/// SocketCluster front end settings (`[sc]` in the TOML file), in
/// milliseconds as SocketCluster's own options are.
#[derive(clap::Args, Clone, Debug)]
#[group(id = "sc")]
pub struct ScSettings {
    /// Presence `ping` period in ms.
    #[arg(long, default_value_t = 10_000)]
    pub sc_presence_interval: u64,
    /// Presence `timeout` in ms [default: the interval x 1.3].
    #[arg(long)]
    pub sc_presence_timeout: Option<u64>,
    /// `#1` ping period in ms.
    #[arg(long, default_value_t = 8_000)]
    pub sc_ping_interval: u64,
    /// PingTimeout in ms; a silent client is closed with 4001.
    #[arg(long, default_value_t = 20_000)]
    pub sc_ping_timeout: u64,
    /// A socket without `#handshake` this long (ms) is closed with 4005.
    #[arg(long, default_value_t = 10_000)]
    pub sc_handshake_timeout: u64,
}

impl Default for ScSettings {
    fn default() -> Self {
        crate::config::defaults()
    }
}

impl Default for ScConfig {
    fn default() -> Self {
        match ScConfig::from_settings(&ScSettings::default()) {
            Ok(config) => config,
            Err(e) => panic!("the default SocketCluster settings are invalid: {e}"),
        }
    }
}

impl ScConfig {
    /// Checks the settings; the presence timeout defaults to the interval × 1.3.
    pub fn from_settings(cfg: &ScSettings) -> Result<ScConfig, String> {
        let interval = cfg.sc_presence_interval;
        let timeout = cfg
            .sc_presence_timeout
            .unwrap_or_else(|| (interval as f64 * 1.3).round() as u64);
        if interval == 0 {
            return Err("sc-presence-interval must be at least 1 ms".into());
        }
        if timeout <= interval {
            return Err(format!(
                "sc-presence-timeout ({timeout} ms) must be longer than sc-presence-interval \
                 ({interval} ms), or clients drop users between two pings; leave it unset for interval × 1.3"
            ));
        }
        if cfg.sc_ping_interval == 0 || cfg.sc_ping_interval >= cfg.sc_ping_timeout {
            return Err(format!(
                "sc-ping-interval ({} ms) must be between 1 ms and sc-ping-timeout ({} ms), \
                 or clients close with 4000 between two pings",
                cfg.sc_ping_interval, cfg.sc_ping_timeout
            ));
        }
        if cfg.sc_handshake_timeout == 0 {
            return Err("sc-handshake-timeout must be at least 1 ms".into());
        }
        Ok(ScConfig {
            presence_interval: Duration::from_millis(interval),
            presence_timeout: Duration::from_millis(timeout),
            ping_interval: Duration::from_millis(cfg.sc_ping_interval),
            ping_timeout: Duration::from_millis(cfg.sc_ping_timeout),
            handshake_timeout: Duration::from_millis(cfg.sc_handshake_timeout),
        })
    }

    /// The `timeout` field of presence packets, in ms.
    pub fn presence_timeout_ms(&self) -> u64 {
        millis(self.presence_timeout)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// State shared by the SC sessions of one server: settings, the codec, and
/// which channels have presence trackers (for the `ping` timer).
pub struct ScShared {
    config: ScConfig,
    verifier: JwtVerifier,
    codec: Arc<dyn Codec>,
    /// Channel C → number of local SC subscriptions to `presence>C`.
    watched: Mutex<HashMap<String, usize>>,
    ticker_started: AtomicBool,
    /// The backend that answers custom events (`--rpc-url`).
    rpc: Option<Arc<crate::services::rpc::Rpc>>,
    /// `rollcall_auth_failures_total{protocol="socketcluster"}`: tokens
    /// refused at the handshake, `#authenticate` or a backend's login.
    pub(crate) auth_failures: prometheus_client::metrics::counter::Counter,
    /// `rollcall_rate_limited_frames_total{protocol="socketcluster"}`:
    /// requests (packets, several may share a frame) over the message rate
    /// too, besides whole frames.
    pub(crate) rate_limited: prometheus_client::metrics::counter::Counter,
}

impl ScShared {
    fn new(
        config: ScConfig,
        verifier: JwtVerifier,
        rpc: Option<Arc<crate::services::rpc::Rpc>>,
        counters: crate::metrics::ProtocolCounters,
    ) -> Self {
        let codec = Arc::new(wire::ScCodec {
            presence_timeout_ms: config.presence_timeout_ms(),
        });
        ScShared {
            config,
            verifier,
            codec,
            watched: Mutex::new(HashMap::new()),
            ticker_started: AtomicBool::new(false),
            rpc,
            auth_failures: counters.auth_failures,
            rate_limited: counters.rate_limited,
        }
    }

    fn watched(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session started tracking the presence of `channel`.
    fn watch(&self, channel: &str) {
        *self.watched().entry(channel.to_string()).or_insert(0) += 1;
    }

    /// A session stopped tracking the presence of `channel`.
    fn unwatch(&self, channel: &str) {
        let mut watched = self.watched();
        if let Some(n) = watched.get_mut(channel) {
            *n -= 1;
            if *n == 0 {
                watched.remove(channel);
            }
        }
    }

    /// Publishes `{"type":"ping","timeout":T,"users":[…]}` on `presence>C`
    /// for every tracked channel C that has members (any front end's), once
    /// for all its trackers. Returns the number of pings sent.
    pub fn ping_all(&self, presence: &Presence) -> usize {
        let channels: Vec<String> = self.watched().keys().cloned().collect();
        let timeout = self.config.presence_timeout_ms();
        let mut sent = 0;
        for channel in channels {
            if !presence.members_shown(&channel) {
                // The channel's rule hides its member list.
                continue;
            }
            let members = presence.members(&channel);
            if members.is_empty() {
                continue;
            }
            let users: Vec<&str> = members.iter().map(|m| &*m.user_id).collect();
            let Ok(data) = RawValue::from_string(wire::packet::ping(timeout, &users)) else {
                continue;
            };
            presence.publish(&ChannelMessage {
                id: crate::ids::ulid(),
                channel: Arc::from(wire::presence_channel(&channel)),
                event: wire::PUBLISH_EVENT.to_string(),
                data: Some(data),
                sender: None,
            });
            sent += 1;
        }
        sent
    }

    /// Starts the presence `ping` timer once (on the first connection); it
    /// stops at server shutdown.
    fn ensure_ticker(self: &Arc<Self>, app: &App) {
        if self.ticker_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<ScShared> = Arc::downgrade(self);
        let presence = app.presence.clone();
        let mut shutdown = app.shutdown.handle();
        let period = self.config.presence_interval;
        tokio::spawn(async move {
            let start = tokio::time::Instant::now() + period;
            let mut tick = tokio::time::interval_at(start, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = tick.tick() => {}
                }
                let Some(shared) = weak.upgrade() else { break };
                shared.ping_all(&presence);
            }
        });
    }
}

/// The adapter's routes, with its settings: `/socketcluster/` (and
/// `/socketcluster`).
pub fn routes(app: &App, settings: ScConfig) -> Router<App> {
    let shared = Arc::new(ScShared::new(
        settings,
        app.verifier.clone(),
        app.services.rpc().cloned(),
        app.metrics.live().protocol(PROTOCOL),
    ));
    let handler = move |State(app): State<App>, ws: WebSocketUpgrade| {
        let shared = shared.clone();
        async move { upgrade(app, shared, ws) }
    };
    Router::new()
        .route(PATH, get(handler.clone()))
        .route("/socketcluster", get(handler))
}

/// Registers an anonymous core connection (the token comes in
/// `#handshake`) and upgrades.
fn upgrade(app: App, shared: Arc<ScShared>, ws: WebSocketUpgrade) -> Response {
    let (conn, outbox_rx) =
        match app
            .presence
            .connect(Identity::anonymous(), shared.codec.clone(), PROTOCOL)
        {
            Ok(pair) => pair,
            Err(e) => {
                let why = e.to_string();
                let response = (StatusCode::SERVICE_UNAVAILABLE, why.clone()).into_response();
                return crate::access::with_reason(response, why);
            }
        };
    shared.ensure_ticker(&app);
    let transport = app.config.transport_for(PROTOCOL);
    let shutdown = app.shutdown.handle();
    // Not an async block: it would keep its own copy of the session for the
    // connection's lifetime; `run` holds everything in one allocation.
    ws.on_upgrade(transport.websocket(), move |socket| {
        let session = session::ScSession::new(conn, shared, transport.max_messages_per_second);
        crate::transport::run(socket, outbox_rx, session, transport, shutdown)
    })
}
