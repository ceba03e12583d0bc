//! Builds the router from the enabled front ends and runs the server with
//! graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::app::{App, Settings};
use crate::auth::JwtVerifier;
use crate::config::Config;
use crate::outbox::CloseReason;
use crate::presence::Presence;
use crate::shutdown::ShutdownController;
use crate::transport::close;

/// How long shutdown waits for sessions to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The reason every connection is closed with at shutdown (code 1001).
pub const SHUTDOWN_REASON: &str = "server shutting down";

/// A config with its generated parts (secret, API key) filled in.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The config, with `jwt_secret` (unless public keys are used) and
    /// `api_key` set.
    pub config: Config,
    /// True if the JWT secret was generated because none was given.
    pub generated_secret: bool,
    /// True if the API key was generated because none was given.
    pub generated_api_key: bool,
}

/// Fills in a random JWT secret (when no keys are configured) and API key.
pub fn resolve(mut config: Config) -> Resolved {
    let generated_secret = config.auth.jwt_secret.is_none()
        && config.auth.jwt_public_key.is_empty()
        && config.auth.jwt_secrets_file.is_none()
        && config.auth.jwks_url.is_none();
    if generated_secret {
        config.auth.jwt_secret = Some(crate::ids::secret(32));
    }
    if config.cluster.node_id.is_none() {
        config.cluster.node_id = Some(crate::cluster::generated_node_id());
    }
    let generated_api_key = config.auth.api_key.is_none();
    if generated_api_key {
        config.auth.api_key = Some(crate::ids::secret(40));
    }
    Resolved {
        config,
        generated_secret,
        generated_api_key,
    }
}

/// Checks every setting `start` checks, without starting anything
/// (`rollcall config check`): the shared ones and each enabled front
/// end's.
pub fn check(config: &Config) -> Result<(), String> {
    config.check_tls()?;
    JwtVerifier::new(&config.jwt()).map_err(|e| e.to_string())?;
    if let Some(url) = &config.auth.jwks_url {
        crate::http_client::Target::parse(
            "--jwks-url",
            url,
            crate::http_client::UserInfo::BasicAuth,
        )?;
    }
    config.policy()?;
    config.services()?;
    config.cluster()?;
    config.admission()?;
    crate::origins::AllowedOrigins::parse(&config.listener.allowed_origins)?;
    for front_end in crate::frontends::enabled(config)? {
        (front_end.check)(config).map_err(|e| format!("{}: {e}", front_end.name))?;
    }
    Ok(())
}

/// How a node stops on SIGTERM (`--drain-grace`, `--drain-spread`).
#[derive(Clone, Copy, Debug)]
pub struct Drain {
    /// How long it keeps serving after `/readyz` turns 503.
    pub grace: Duration,
    /// Over how long its clients are then closed.
    pub spread: Duration,
}

/// How often a slice of clients is closed during the spread.
const SPREAD_STEP: Duration = Duration::from_millis(100);

/// A running server.
pub struct RunningServer {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    app: App,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the `--metrics-listen` listener, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The presence core (for embedding and tests).
    pub fn presence(&self) -> &Presence {
        &self.app.presence
    }

    /// This node's cluster membership.
    pub fn cluster(&self) -> &crate::cluster::Cluster {
        &self.app.cluster
    }

    /// Drains, then stops (SIGTERM): `/readyz` answers 503 at once, the
    /// node keeps serving for `drain.grace` (a load balancer stops sending
    /// it clients), then closes its WebSocket clients a few at a time over
    /// `drain.spread` (so they do not all reconnect to the other nodes at
    /// the same instant), then stops as [`Self::shutdown`] does.
    pub async fn drain_and_shutdown(self, drain: Drain) {
        self.app.shutdown.draining.begin();
        tracing::info!(
            grace = ?drain.grace,
            spread = ?drain.spread,
            "draining: /readyz answers 503; clients are served for the grace period, then closed over the spread"
        );
        tokio::time::sleep(drain.grace).await;
        // The next oldest node reports the removals from here on.
        self.app.cluster.hand_over().await;
        let reason = CloseReason::new(close::GOING_AWAY, SHUTDOWN_REASON);
        let conns = self.app.presence.closable_one_by_one();
        let steps = (drain.spread.as_millis() / SPREAD_STEP.as_millis()).max(1) as usize;
        let per_step = conns.len().div_ceil(steps).max(1);
        for (i, chunk) in conns.chunks(per_step).enumerate() {
            if i > 0 {
                tokio::time::sleep(SPREAD_STEP).await;
            }
            for &id in chunk {
                self.app.presence.close_connection(id, &reason);
            }
        }
        self.shutdown().await;
    }

    /// Stops the server: stops accepting, closes every client with 1001
    /// (removing their members at once) and waits for sessions to end.
    pub async fn shutdown(self) {
        shutdown_now(&self.app).await;
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.task).await;
    }

    /// A handle on the server's state, to stop it with [`shutdown_now`]
    /// while a drain is under way.
    pub fn app_handle(&self) -> App {
        self.app.clone()
    }
}

/// Stops `app` at once: closes every client with 1001 (removing their
/// members), waits for their sessions, leaves the cluster and flushes the
/// webhooks.
pub async fn shutdown_now(app: &App) {
    // The next oldest node reports this node's members' removal.
    app.cluster.hand_over().await;
    // The signal first: a session whose outbox is closed below must
    // already know it is a shutdown (a Socket.IO pump would otherwise end
    // its socket with a namespace DISCONNECT, which tells the client not
    // to reconnect).
    app.shutdown.trigger();
    app.presence
        .close_all(CloseReason::new(close::GOING_AWAY, SHUTDOWN_REASON));
    let drained = app.shutdown.drain(SHUTDOWN_GRACE).await;
    if !drained {
        tracing::warn!("some sessions did not end within {SHUTDOWN_GRACE:?}");
    }
    // The other nodes got the removals as the sessions ended (and the
    // closes, for their event-stream readers); now the goodbye, which
    // drops whatever is left.
    app.cluster.leave().await;
    // The members just removed are reported before the process ends.
    if let Some(hooks) = app.services.webhooks()
        && !hooks.flush(SHUTDOWN_GRACE).await
    {
        tracing::warn!(
            "some webhook events were not delivered within {SHUTDOWN_GRACE:?} of shutdown"
        );
    }
}

/// The full router for an app: the shared routes and those of the front
/// ends the config enables, each with its settings read from `config`.
pub fn router(app: App, config: &Config) -> Result<Router, String> {
    let mut router = Router::new()
        .merge(crate::http_api::routes(app.clone()))
        .merge(crate::cluster::http::routes())
        .merge(crate::metrics::routes());
    for front_end in crate::frontends::enabled(config)? {
        router = router.merge((front_end.routes)(&app, config)?);
    }
    let origins = crate::origins::AllowedOrigins::parse(&config.listener.allowed_origins)?;
    // Outermost: the access log sees every route's answer, fallbacks and
    // refused origins too.
    Ok(router
        .layer(axum::middleware::from_fn_with_state(
            origins,
            crate::origins::check,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.metrics.clone(),
            crate::access::log,
        ))
        .with_state(app))
}

/// Why the server did not start. The kinds differ in what fixes them,
/// and so in `rollcall serve`'s exit status (see [`StartError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is invalid: fix the configuration; starting again as is
    /// fails again.
    #[error("{0}")]
    Settings(String),
    /// The listening address cannot be bound (in use, not local, not
    /// permitted); may pass once the other process lets go of it.
    #[error(
        "cannot listen on {addr}: {source}; choose a free address with --listen, or stop what holds it"
    )]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// Durable state cannot be opened (the privacy store in --data-dir).
    #[error("{0}")]
    Storage(String),
}

impl StartError {
    /// The exit status for this kind, from sysexits.h, so a supervisor
    /// can tell them apart (e.g. systemd `RestartPreventExitStatus=78`
    /// stops restarting a server whose configuration is wrong).
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Settings(_) => EX_CONFIG,
            StartError::Listen { .. } => EX_UNAVAILABLE,
            StartError::Storage(_) => EX_CANTCREAT,
        }
    }
}

/// sysexits.h: configuration error.
pub const EX_CONFIG: u8 = 78;
/// sysexits.h: service unavailable.
pub const EX_UNAVAILABLE: u8 = 69;
/// sysexits.h: cannot create (user) output file.
pub const EX_CANTCREAT: u8 = 73;

impl From<String> for StartError {
    fn from(message: String) -> Self {
        StartError::Settings(message)
    }
}

impl From<crate::services::ServicesError> for StartError {
    fn from(e: crate::services::ServicesError) -> Self {
        match e {
            crate::services::ServicesError::Settings(m) => StartError::Settings(m),
            crate::services::ServicesError::Store(m) => StartError::Storage(m),
        }
    }
}

/// Binds and starts serving. The config must be resolved (see [`resolve`]).
pub async fn start(config: &Config) -> Result<RunningServer, StartError> {
    // Every setting, front ends' included, is checked below before the
    // port is taken; a CA file is checked even when nothing uses it yet.
    config.check_tls()?;
    let mut verifier = JwtVerifier::new(&config.jwt()).map_err(|e| e.to_string())?;
    if let Some(url) = &config.auth.jwks_url {
        let jwks = crate::auth::jwks::Jwks::start(
            url,
            config.auth.jwks_refresh,
            config.tls_ca_file.as_deref(),
        )
        .await?;
        verifier = verifier.with_jwks(jwks);
    }
    let settings = Settings {
        transport: config.transport(),
        api_key: config
            .auth
            .api_key
            .clone()
            .ok_or_else(|| "no API key configured (--api-key)".to_string())?,
        transports: Arc::default(),
    };
    let policy = Arc::new(crate::policy::ChannelPolicy::new(config.policy()?));
    let services = crate::services::Services::new(config.services()?)?;
    let cluster_config = config.cluster()?;
    let cluster = crate::cluster::prepare(&cluster_config)?;
    let mut observers: Vec<Arc<dyn crate::presence::PresenceObserver>> = Vec::new();
    observers.extend(services.observers());
    observers.extend(cluster.as_ref().map(|c| c.observer()));
    let metrics = crate::metrics::MetricsObserver::shared();
    observers.push(metrics.clone());
    let mut settings = settings;
    settings.transport.metrics = Some(metrics.clone());
    let presence = Presence::with_observers(config.presence_limits(), observers);
    presence.set_policy(policy);
    services.start(&presence);
    let handler: Arc<dyn crate::cluster::RemoteHandler> = Arc::new(services.clone());
    let cluster = crate::cluster::start(cluster, &presence, &cluster_config.node_id, Some(handler));
    services.attach_cluster(&cluster);
    let app = App {
        admission: crate::listener::Admission::new(config.admission()?),
        presence,
        services,
        cluster,
        metrics,
        verifier,
        single_use: Arc::new(crate::auth::SingleUseGuard::new()),
        config: Arc::new(settings),
        shutdown: Arc::new(ShutdownController::new()),
    };
    // Every front end's settings are checked before the port is taken.
    let service = router(app.clone(), config)?;
    let addr = config.listener.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Listen { addr, source })?;
    let stop = app.shutdown.handle();
    let admission = app.admission.clone();
    let metrics_addr = match config.listener.metrics_listen {
        Some(at) => Some(serve_metrics(&app, config, at).await?),
        None => None,
    };
    let task = tokio::spawn(crate::listener::serve(listener, service, admission, stop));
    tracing::info!(%addr, "rollcall listening");
    Ok(RunningServer {
        addr,
        metrics_addr,
        app,
        task,
    })
}

/// `--metrics-listen`: a listener with GET /metrics only (no API, no
/// dashboard, no front ends), so a scraper can reach it on a port that
/// clients cannot. Its own admission caps, so that clients filling the
/// main listener's never refuse a scrape; it stops with the server.
async fn serve_metrics(
    app: &App,
    config: &Config,
    at: SocketAddr,
) -> Result<SocketAddr, StartError> {
    let listener = TcpListener::bind(at)
        .await
        .map_err(|source| StartError::Listen { addr: at, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Listen { addr: at, source })?;
    let router = crate::metrics::scrape_routes()
        .layer(axum::middleware::from_fn_with_state(
            app.metrics.clone(),
            crate::access::log,
        ))
        .with_state(app.clone());
    let admission = crate::listener::Admission::new(config.admission()?);
    tokio::spawn(crate::listener::serve(
        listener,
        router,
        admission,
        app.shutdown.handle(),
    ));
    tracing::info!(%addr, "metrics listening");
    Ok(addr)
}
