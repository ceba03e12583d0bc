//! The `rollcall` command: `serve`, `token` and `conformance`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use rollcall::config::Config;

/// Copies each flag that was given (`Some`) over the config's value.
macro_rules! overlay {
    ($args:expr, $cfg:expr; $($field:ident),* $(,)?) => {$(
        if let Some(v) = $args.$field { $cfg.$field = v; }
    )*};
}

#[derive(Parser)]
#[command(
    name = "rollcall",
    version,
    about = "A presence server with pluggable wire-protocol front ends"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default when no command is given).
    Serve(Box<ServeArgs>),
    /// Print a development token signed with the configured secret.
    Token(TokenArgs),
    /// Run a scripted conformance suite against a server.
    Conformance(ConformanceArgs),
}

/// Flags of `serve`; each also reads `ROLLCALL_<NAME>` and overrides the
/// TOML file given with --config.
#[derive(Args, Default)]
struct ServeArgs {
    /// TOML config file (keys as the long flags, e.g. `max-member-bytes = 100000`).
    #[arg(long, env = "ROLLCALL_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:4000].
    #[arg(long, env = "ROLLCALL_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    auth: AuthArgs,
    /// Bearer key for the HTTP API [default: generated and printed at start].
    #[arg(long, env = "ROLLCALL_API_KEY")]
    api_key: Option<String>,
    /// Member-data bytes per presence channel [default: 100000].
    #[arg(long, env = "ROLLCALL_MAX_MEMBER_BYTES")]
    max_member_bytes: Option<usize>,
    /// Distinct members per channel [default: 10000].
    #[arg(long, env = "ROLLCALL_MAX_MEMBERS_PER_CHANNEL")]
    max_members_per_channel: Option<usize>,
    /// Channels per connection [default: 100].
    #[arg(long, env = "ROLLCALL_MAX_CHANNELS_PER_CONNECTION")]
    max_channels_per_connection: Option<usize>,
    /// Subscribes and unsubscribes per second per connection, after a burst of
    /// twice --max-channels-per-connection; a user's connections together: 4x [default: 10].
    #[arg(long, env = "ROLLCALL_MAX_MEMBERSHIP_CHANGES_PER_SECOND")]
    max_membership_changes_per_second: Option<u32>,
    /// Connections per user [default: 100].
    #[arg(long, env = "ROLLCALL_MAX_CONNECTIONS_PER_USER")]
    max_connections_per_user: Option<usize>,
    /// Largest WebSocket message from a client, in bytes [default: 131072].
    #[arg(long, env = "ROLLCALL_MAX_FRAME_BYTES")]
    max_frame_bytes: Option<usize>,
    /// Messages per second per connection [default: 100].
    #[arg(long, env = "ROLLCALL_MAX_MESSAGES_PER_SECOND")]
    max_messages_per_second: Option<u32>,
    /// Outbound queue per connection in bytes [default: 4194304].
    #[arg(long, env = "ROLLCALL_OUTBOX_BYTES")]
    outbox_bytes: Option<usize>,
    /// Maximum connection lifetime [default: 2h].
    #[arg(long, env = "ROLLCALL_CONNECTION_LIFETIME")]
    connection_lifetime: Option<String>,
    /// Hotsock keepAlive interval [default: 570s].
    #[arg(long, env = "ROLLCALL_KEEP_ALIVE_INTERVAL")]
    keep_alive_interval: Option<String>,
    /// WebSocket ping interval [default: 25s].
    #[arg(long, env = "ROLLCALL_PING_INTERVAL")]
    ping_interval: Option<String>,
    /// Close peers silent for this long [default: 60s].
    #[arg(long, env = "ROLLCALL_IDLE_TIMEOUT")]
    idle_timeout: Option<String>,
    /// Open client connections at most [default: the process's file limit less 256].
    #[arg(long, env = "ROLLCALL_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Open client connections from one IP address at most [default: half of --max-connections].
    #[arg(long, env = "ROLLCALL_MAX_CONNECTIONS_PER_ADDRESS")]
    max_connections_per_address: Option<usize>,
    /// A client must send its request head (request line and headers) within this long
    /// [default: 10s].
    #[arg(long, env = "ROLLCALL_HEADER_TIMEOUT")]
    header_timeout: Option<String>,
    #[command(flatten)]
    policy: PolicyArgs,
    #[command(flatten)]
    sgc: SgcArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    services: ServicesArgs,
    /// Socket.IO: RFC 7662 introspection URL (http:// or https://) for tokenType=oauth, e.g.
    /// http://client:secret@127.0.0.1:9000/introspect [default: OAuth off].
    #[arg(long, env = "ROLLCALL_OAUTH_INTROSPECTION_URL")]
    oauth_introspection_url: Option<String>,
    /// Socket.IO: how long an introspection answer is reused [default: 30s].
    #[arg(long, env = "ROLLCALL_OAUTH_CACHE_TTL")]
    oauth_cache_ttl: Option<String>,
    /// Extra root certificates (PEM file) trusted by rollcall's outgoing TLS connections
    /// (rediss:// bus, https webhooks, https OAuth introspection), besides the system's.
    #[arg(long, env = "ROLLCALL_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
    /// SocketCluster: presence `ping` period in ms [default: 10000].
    #[arg(long, env = "ROLLCALL_SC_PRESENCE_INTERVAL")]
    sc_presence_interval: Option<u64>,
    /// SocketCluster: presence `timeout` in ms [default: interval x 1.3].
    #[arg(long, env = "ROLLCALL_SC_PRESENCE_TIMEOUT")]
    sc_presence_timeout: Option<u64>,
    /// SocketCluster: `#1` ping period in ms [default: 8000].
    #[arg(long, env = "ROLLCALL_SC_PING_INTERVAL")]
    sc_ping_interval: Option<u64>,
    /// SocketCluster: pingTimeout in ms, silent clients close with 4001 [default: 20000].
    #[arg(long, env = "ROLLCALL_SC_PING_TIMEOUT")]
    sc_ping_timeout: Option<u64>,
    /// SocketCluster: close with 4005 without #handshake within this many ms [default: 10000].
    #[arg(long, env = "ROLLCALL_SC_HANDSHAKE_TIMEOUT")]
    sc_handshake_timeout: Option<u64>,
}

/// Channel policy flags: who may subscribe and publish where, on every
/// front end (full rules: `[[channel-rules]]` in the TOML file).
#[derive(Args, Default)]
struct PolicyArgs {
    /// Channel patterns anyone may subscribe to (subscribers may publish), comma-separated,
    /// e.g. 'lobby,room.*' [default: none; a channel needs a grant in the token].
    #[arg(long, env = "ROLLCALL_OPEN_CHANNELS", value_delimiter = ',')]
    open_channels: Vec<String>,
    /// Channel patterns any connection with a valid token may subscribe to (subscribers may
    /// publish), comma-separated [default: none].
    #[arg(long, env = "ROLLCALL_AUTHENTICATED_CHANNELS", value_delimiter = ',')]
    authenticated_channels: Vec<String>,
    /// URL (http:// or https://) asked by POST whether a connection may use a channel no grant
    /// or rule settles [default: none; such channels are refused].
    #[arg(long, env = "ROLLCALL_CHANNEL_CHECK_URL", hide_env_values = true)]
    channel_check_url: Option<String>,
    /// How long a channel check answer is reused [default: 10s].
    #[arg(long, env = "ROLLCALL_CHANNEL_CHECK_CACHE_TTL")]
    channel_check_cache_ttl: Option<String>,
    /// How long the channel check may take to answer [default: 2s].
    #[arg(long, env = "ROLLCALL_CHANNEL_CHECK_TIMEOUT")]
    channel_check_timeout: Option<String>,
    /// Front ends to serve, comma-separated: hotsock, socketio, sc, sgc [default: every one
    /// compiled in].
    #[arg(long, env = "ROLLCALL_FRONTENDS", value_delimiter = ',')]
    frontends: Vec<String>,
}

impl PolicyArgs {
    fn overlay(self, cfg: &mut Config) {
        overlay!(self, cfg; channel_check_cache_ttl, channel_check_timeout);
        if self.channel_check_url.is_some() {
            cfg.channel_check_url = self.channel_check_url;
        }
        if !self.open_channels.is_empty() {
            cfg.open_channels = self.open_channels;
        }
        if !self.authenticated_channels.is_empty() {
            cfg.authenticated_channels = self.authenticated_channels;
        }
        if !self.frontends.is_empty() {
            cfg.frontends = self.frontends;
        }
    }
}

/// sgc front end flags (`sgc-*` keys in the TOML file).
#[derive(Args, Default)]
struct SgcArgs {
    /// sgc: refuse /sgc connections without ?token=JWT [default: false].
    #[arg(long, env = "ROLLCALL_SGC_REQUIRE_TOKEN", num_args = 0..=1, default_missing_value = "true")]
    sgc_require_token: Option<bool>,
    /// sgc: how long an invitation waits for an answer [default: 60s].
    #[arg(long, env = "ROLLCALL_SGC_INVITATION_TTL")]
    sgc_invitation_ttl: Option<String>,
    /// sgc: ask every client to acknowledge server frames [default: false; per connection: ?acks=1].
    #[arg(long, env = "ROLLCALL_SGC_SERVER_ACKS", num_args = 0..=1, default_missing_value = "true")]
    sgc_server_acks: Option<bool>,
    /// sgc: re-send an unacknowledged frame after this long [default: 10s].
    #[arg(long, env = "ROLLCALL_SGC_ACK_TIMEOUT")]
    sgc_ack_timeout: Option<String>,
    /// sgc: re-sends of one frame before closing with 4008 [default: 5].
    #[arg(long, env = "ROLLCALL_SGC_ACK_RETRIES")]
    sgc_ack_retries: Option<u32>,
    /// sgc: joined members on this server [default: 100000].
    #[arg(long, env = "ROLLCALL_SGC_MAX_MEMBERS")]
    sgc_max_members: Option<usize>,
    /// Replaced by --open-channels (kept to say so at startup).
    #[arg(
        long,
        env = "ROLLCALL_SGC_CHANNELS",
        value_delimiter = ',',
        hide = true
    )]
    sgc_channels: Vec<String>,
    /// Replaced by [[channel-rules]] (kept to say so at startup).
    #[arg(
        long,
        env = "ROLLCALL_SGC_PUBLISH_CHANNELS",
        value_delimiter = ',',
        hide = true
    )]
    sgc_publish_channels: Vec<String>,
    /// sgc: allow publish with an empty channel (to every member) [default: true].
    #[arg(long, env = "ROLLCALL_SGC_GLOBAL_PUBLISH")]
    sgc_global_publish: Option<bool>,
    /// sgc: get@members for a channel requires being subscribed [default: false].
    #[arg(long, env = "ROLLCALL_SGC_MEMBERS_NEED_SUBSCRIPTION")]
    sgc_members_need_subscription: Option<bool>,
    /// sgc: inviting to a channel requires being subscribed [default: false].
    #[arg(long, env = "ROLLCALL_SGC_INVITE_NEEDS_SUBSCRIPTION")]
    sgc_invite_needs_subscription: Option<bool>,
}

impl SgcArgs {
    fn overlay(self, cfg: &mut Config) {
        overlay!(
            self, cfg;
            sgc_require_token,
            sgc_invitation_ttl,
            sgc_server_acks,
            sgc_ack_timeout,
            sgc_ack_retries,
            sgc_max_members,
            sgc_global_publish,
            sgc_members_need_subscription,
            sgc_invite_needs_subscription
        );
        if !self.sgc_channels.is_empty() {
            cfg.sgc_channels = Some(self.sgc_channels);
        }
        if !self.sgc_publish_channels.is_empty() {
            cfg.sgc_publish_channels = Some(self.sgc_publish_channels);
        }
    }
}

/// Presence services flags: privacy, leases, webhooks.
#[derive(Args, Default)]
struct ServicesArgs {
    /// Track presence: on, or off to hide every user [default: on].
    #[arg(long, env = "ROLLCALL_PRESENCE_TRACKING", value_parser = ["on", "off"])]
    presence_tracking: Option<String>,
    /// Users may hide themselves (privacy API) [default: true].
    #[arg(long, env = "ROLLCALL_ALLOW_USER_TOGGLE", num_args = 0..=1, default_missing_value = "true")]
    allow_user_toggle: Option<bool>,
    /// Visibility of users who did not choose [default: true].
    #[arg(long, env = "ROLLCALL_DEFAULT_VISIBLE", num_args = 0..=1, default_missing_value = "true")]
    default_visible: Option<bool>,
    /// Directory for durable state (privacy choices) [default: none, in memory].
    #[arg(long, env = "ROLLCALL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Lease TTL when a refresh gives no ttl_ms [default: 30s].
    #[arg(long, env = "ROLLCALL_LEASE_TTL")]
    lease_ttl: Option<String>,
    /// Webhook receiver, http:// or https:// (repeatable; comma-separated in the env var).
    #[arg(long, env = "ROLLCALL_WEBHOOK_URL", value_delimiter = ',')]
    webhook_url: Vec<String>,
    /// HMAC-SHA256 key for the X-Rollcall-Signature header [default: unsigned].
    #[arg(long, env = "ROLLCALL_WEBHOOK_SECRET")]
    webhook_secret: Option<String>,
    /// Collect webhook events this long into one request, in ms [default: 100].
    #[arg(long, env = "ROLLCALL_WEBHOOK_BATCH_MS")]
    webhook_batch_ms: Option<u64>,
    /// First webhook retry delay in ms, doubling per attempt [default: 500].
    #[arg(long, env = "ROLLCALL_WEBHOOK_RETRY_MS")]
    webhook_retry_ms: Option<u64>,
    /// Attempts per webhook request [default: 8].
    #[arg(long, env = "ROLLCALL_WEBHOOK_MAX_ATTEMPTS")]
    webhook_max_attempts: Option<u32>,
}

impl ServicesArgs {
    fn overlay(self, cfg: &mut Config) {
        overlay!(
            self, cfg;
            presence_tracking,
            allow_user_toggle,
            default_visible,
            lease_ttl,
            webhook_batch_ms,
            webhook_retry_ms,
            webhook_max_attempts
        );
        if self.data_dir.is_some() {
            cfg.data_dir = self.data_dir;
        }
        if self.webhook_secret.is_some() {
            cfg.webhook_secret = self.webhook_secret;
        }
        if !self.webhook_url.is_empty() {
            cfg.webhook_url = self.webhook_url;
        }
    }
}

/// Cluster flags.
#[derive(Args, Default)]
struct ClusterArgs {
    /// Cluster bus: memory (standalone), redis://[:password@]host:port, rediss://…,
    /// or redis+cluster://host1:port1,host2:port2 [default: memory].
    #[arg(long, env = "ROLLCALL_BUS")]
    bus: Option<String>,
    /// This node's id, unique in the cluster [default: generated].
    #[arg(long, env = "ROLLCALL_NODE_ID")]
    node_id: Option<String>,
    /// Cluster heartbeat period [default: 500ms].
    #[arg(long, env = "ROLLCALL_HEARTBEAT_INTERVAL")]
    heartbeat_interval: Option<String>,
    /// Remove a silent node's members after this long [default: 2500ms].
    #[arg(long, env = "ROLLCALL_NODE_TIMEOUT")]
    node_timeout: Option<String>,
}

impl ClusterArgs {
    fn overlay(self, cfg: &mut Config) {
        if let Some(v) = self.bus {
            cfg.bus = v;
        }
        if self.node_id.is_some() {
            cfg.node_id = self.node_id;
        }
        if let Some(v) = self.heartbeat_interval {
            cfg.heartbeat_interval = v;
        }
        if let Some(v) = self.node_timeout {
            cfg.node_timeout = v;
        }
    }
}

#[derive(Args, Default)]
struct AuthArgs {
    /// HS256/384/512 secret for tokens [default: generated and printed at start].
    #[arg(long, env = "ROLLCALL_JWT_SECRET")]
    jwt_secret: Option<String>,
    /// PEM public key file for RS*/ES* tokens (repeatable; comma-separated in the env var).
    #[arg(long, env = "ROLLCALL_JWT_PUBLIC_KEY", value_delimiter = ',')]
    jwt_public_key: Vec<PathBuf>,
    /// Required `iss` claim.
    #[arg(long, env = "ROLLCALL_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "ROLLCALL_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
}

#[derive(Args)]
struct TokenArgs {
    /// User id (`uid`; also `sub` and `username`).
    #[arg(long)]
    uid: Option<String>,
    /// User metadata, JSON (`umd`).
    #[arg(long)]
    umd: Option<String>,
    /// Channel pattern to allow subscribing to (repeatable), e.g. 'presence.*'.
    #[arg(long = "channel")]
    channels: Vec<String>,
    /// Also allow sending client messages of any event on those channels.
    #[arg(long)]
    messages: bool,
    /// Lifetime, e.g. 90s, 15m, 1h, 2d.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Extra claims as a JSON object, merged last.
    #[arg(long)]
    claims: Option<String>,
    /// Secret to sign with (or ROLLCALL_JWT_SECRET, or jwt-secret in --config).
    #[arg(long, env = "ROLLCALL_JWT_SECRET")]
    jwt_secret: Option<String>,
    /// TOML config file to read jwt-secret from.
    #[arg(long, env = "ROLLCALL_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct ConformanceArgs {
    /// Suite directory or file, e.g. conformance/hotsock.
    #[arg(long)]
    suite: PathBuf,
    /// Server base URL, e.g. ws://127.0.0.1:4000.
    #[arg(long)]
    url: String,
    /// The server's JWT secret, to mint the suite's tokens.
    #[arg(long, env = "ROLLCALL_JWT_SECRET")]
    jwt_secret: String,
    /// The server's HTTP API key, for HTTP steps.
    #[arg(long, env = "ROLLCALL_API_KEY")]
    api_key: Option<String>,
    /// Only run cases whose name contains this text.
    #[arg(long)]
    filter: Option<String>,
}

/// Overlays flags (and their env vars) on the file config.
fn build_config(args: ServeArgs) -> Result<Config, String> {
    let mut cfg = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    overlay!(
        args, cfg;
        listen,
        max_member_bytes,
        max_members_per_channel,
        max_channels_per_connection,
        max_membership_changes_per_second,
        max_connections_per_user,
        max_frame_bytes,
        max_messages_per_second,
        outbox_bytes,
        connection_lifetime,
        keep_alive_interval,
        ping_interval,
        idle_timeout,
        sc_presence_interval,
        sc_ping_interval,
        sc_ping_timeout,
        sc_handshake_timeout,
        header_timeout
    );
    if args.max_connections.is_some() {
        cfg.max_connections = args.max_connections;
    }
    if args.max_connections_per_address.is_some() {
        cfg.max_connections_per_address = args.max_connections_per_address;
    }
    if args.sc_presence_timeout.is_some() {
        cfg.sc_presence_timeout = args.sc_presence_timeout;
    }
    if args.oauth_introspection_url.is_some() {
        cfg.oauth_introspection_url = args.oauth_introspection_url;
    }
    if let Some(ttl) = args.oauth_cache_ttl {
        cfg.oauth_cache_ttl = ttl;
    }
    if args.tls_ca_file.is_some() {
        cfg.tls_ca_file = args.tls_ca_file;
    }
    args.policy.overlay(&mut cfg);
    args.sgc.overlay(&mut cfg);
    args.cluster.overlay(&mut cfg);
    args.services.overlay(&mut cfg);
    if args.api_key.is_some() {
        cfg.api_key = args.api_key;
    }
    if args.auth.jwt_secret.is_some() {
        cfg.jwt_secret = args.auth.jwt_secret;
    }
    if !args.auth.jwt_public_key.is_empty() {
        cfg.jwt_public_key = args.auth.jwt_public_key;
    }
    if args.auth.jwt_issuer.is_some() {
        cfg.jwt_issuer = args.auth.jwt_issuer;
    }
    if args.auth.jwt_audience.is_some() {
        cfg.jwt_audience = args.auth.jwt_audience;
    }
    cfg.timings()?;
    cfg.cluster()?;
    cfg.services()?;
    cfg.check_tls()?;
    cfg.policy()?;
    cfg.listener()?;
    rollcall::frontends::enabled(&cfg)?;
    Ok(cfg)
}

/// Prints where every endpoint is. Written in one go, ignoring errors: a
/// closed stdout must not take the server down.
fn banner(
    resolved: &rollcall::server::Resolved,
    addr: std::net::SocketAddr,
    policy: &rollcall::policy::ChannelPolicy,
) {
    use std::fmt::Write as _;
    use std::io::Write as _;
    let cfg = &resolved.config;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rollcall {} listening on {addr}",
        env!("CARGO_PKG_VERSION")
    );
    for front_end in rollcall::frontends::enabled(cfg).unwrap_or_default() {
        let _ = writeln!(out, "  {}", (front_end.endpoint)(addr));
    }
    let _ = writeln!(
        out,
        "  HTTP API    http://{addr}/api/  (Authorization: Bearer <api key>)"
    );
    let _ = writeln!(
        out,
        "  Health      http://{addr}/healthz  http://{addr}/readyz"
    );
    let _ = writeln!(
        out,
        "  Cluster     bus {} as node {}",
        rollcall::cluster::BusSpec::describe(&cfg.bus),
        cfg.node_id.as_deref().unwrap_or("?")
    );
    let _ = writeln!(out, "  OpenAPI     http://{addr}/api/openapi.json");
    // The policy the server runs with, not a second one built for show.
    for (i, line) in policy.describe().iter().enumerate() {
        let label = if i == 0 { "Channels" } else { "" };
        let _ = writeln!(out, "  {label:<11} {line}");
    }
    let _ = writeln!(
        out,
        "  Metrics     http://{addr}/metrics  dashboard http://{addr}/dashboard"
    );
    if resolved.generated_api_key {
        let _ = writeln!(
            out,
            "  API key     {} (generated; set --api-key to choose one)",
            cfg.api_key.as_deref().unwrap_or("")
        );
    }
    if let Some(secret) = &cfg.jwt_secret {
        if resolved.generated_secret {
            let _ = writeln!(
                out,
                "  JWT secret  {secret} (generated; set --jwt-secret to choose one)"
            );
        }
        let shown = if resolved.generated_secret {
            secret.as_str()
        } else {
            "$ROLLCALL_JWT_SECRET"
        };
        let _ = writeln!(out, "Mint a token:");
        let _ = writeln!(
            out,
            "  rollcall token --jwt-secret {shown} --uid alice --umd '{{\"name\":\"Alice\"}}' --channel 'presence.*' --messages"
        );
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let resolved = rollcall::server::resolve(build_config(args)?);
    let server = rollcall::server::start(&resolved.config).await?;
    banner(&resolved, server.local_addr(), server.presence().policy());
    wait_for_signal().await;
    tracing::info!("shutting down: closing every connection with 1001");
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn token(args: TokenArgs) -> Result<(), String> {
    let secret = match (args.jwt_secret, &args.config) {
        (Some(s), _) => s,
        (None, Some(path)) => Config::from_file(path)?
            .jwt_secret
            .ok_or_else(|| format!("{} has no jwt-secret", path.display()))?,
        (None, None) => {
            return Err("no secret to sign with: pass --jwt-secret (the one `rollcall serve` printed or was started with), set ROLLCALL_JWT_SECRET, or --config".into());
        }
    };
    let umd = args
        .umd
        .map(|s| serde_json::from_str(&s).map_err(|e| format!("--umd is not valid JSON: {e}")))
        .transpose()?;
    let extra_claims = match args.claims {
        Some(s) => match serde_json::from_str(&s) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => return Err("--claims must be a JSON object".into()),
            Err(e) => return Err(format!("--claims is not valid JSON: {e}")),
        },
        None => Default::default(),
    };
    let request = rollcall::auth::TokenRequest {
        uid: args.uid,
        umd,
        channels: args.channels,
        ttl: rollcall::auth::parse_duration(&args.ttl).map_err(|e| format!("--ttl: {e}"))?,
        allow_messages: args.messages,
        extra_claims,
    };
    let claims = rollcall::auth::dev_token_claims(&request);
    let token = rollcall::auth::mint_hs256(&secret, &claims).map_err(|e| e.to_string())?;
    println!("{token}");
    Ok(())
}

async fn conformance(args: ConformanceArgs) -> Result<bool, String> {
    let summary = rollcall::conformance::run(&rollcall::conformance::RunOptions {
        suite: args.suite,
        url: args.url,
        jwt_secret: args.jwt_secret,
        api_key: args.api_key,
        filter: args.filter,
    })
    .await?;
    Ok(summary.failed == 0)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // No command means `serve`, with its environment variables read as usual.
    let command = match cli.command {
        Some(command) => command,
        None => Cli::parse_from(["rollcall", "serve"])
            .command
            .unwrap_or_else(|| Command::Serve(Box::default())),
    };
    let result = match command {
        Command::Serve(args) => runtime.block_on(serve(*args)).map(|_| true),
        Command::Token(args) => token(args).map(|_| true),
        Command::Conformance(args) => runtime.block_on(conformance(args)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
