//! Server configuration. Each setting is declared once, as a field of one
//! of the typed groups below (or of a front end's settings struct,
//! registered in [`crate::frontends`]): its flag, its `ROLLCALL_*`
//! environment variable, its TOML key, its default and its help text all
//! come from that field. Precedence, rising: the default, the TOML file
//! (`--config`), the environment, the flag. [`load`] does the layering.
//!
//! TOML keys are the long flag names, at the top level (`max-member-bytes
//! = 5000`) or in their group's section (`[limits] max-member-bytes`;
//! `[sgc] require-token` for `--sgc-require-token`).

mod load;
pub mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args};

use crate::auth::{AuthConfig, parse_duration};
use crate::presence::Limits;
use crate::transport::TransportConfig;

pub use load::{ConfigError, FileSettings, defaults, with_env_vars};

/// Everything `rollcall serve` can be told.
#[derive(Args, Clone, Debug)]
#[group(skip)]
pub struct Config {
    #[command(flatten, next_help_heading = "Listener")]
    pub listener: ListenerSettings,
    #[command(flatten, next_help_heading = "Authentication")]
    pub auth: AuthSettings,
    #[command(flatten, next_help_heading = "Limits")]
    pub limits: LimitSettings,
    #[command(flatten, next_help_heading = "Channel authorization")]
    pub channels: ChannelSettings,
    #[command(flatten, next_help_heading = "Presence services")]
    pub services: ServicesSettings,
    #[command(flatten, next_help_heading = "Cluster")]
    pub cluster: ClusterSettings,
    #[command(flatten)]
    pub front_ends: crate::frontends::FrontEndSettings,
    #[command(flatten, next_help_heading = "Logging")]
    pub log: LogSettings,
    /// Extra root certificates (a PEM file) trusted by rollcall's outgoing TLS connections
    /// (rediss:// bus, https webhooks, channel check, OAuth introspection), besides the
    /// system's.
    #[arg(long, help_heading = "Outgoing TLS")]
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        defaults()
    }
}

/// Where clients connect, how many, and which front ends answer.
#[derive(Args, Clone, Debug)]
#[group(id = "listener")]
pub struct ListenerSettings {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4000")]
    pub listen: SocketAddr,
    /// Open client connections at most [default: the process's file limit less 256].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Open client connections from one IP address at most [default: half of
    /// --max-connections].
    #[arg(long)]
    pub max_connections_per_address: Option<usize>,
    /// A client must send its request head (request line and headers) within this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Front ends to serve, comma-separated: hotsock, socketio, sc, sgc [default: every one
    /// compiled in].
    #[arg(long, value_delimiter = ',')]
    pub frontends: Vec<String>,
    /// Web pages that may open client connections (WebSocket upgrades, Engine.IO polling), by
    /// their Origin, comma-separated: https://app.example.com, https://*.example.com
    /// [default: any; clients authenticate with tokens, not cookies].
    #[arg(long, value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// On SIGTERM, /readyz answers 503 at once and the node keeps serving this long, so a
    /// load balancer stops sending it clients (a second SIGTERM or Ctrl-C stops at once).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain_grace: Duration,
    /// Then its clients are closed over this long, a few at a time, so they do not all
    /// reconnect to the other nodes at the same instant.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain_spread: Duration,
    /// Also serve GET /metrics (and nothing else) on this address, e.g. a port only the
    /// monitoring network reaches; /metrics stays on --listen too.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
}

/// Client tokens and the HTTP API key.
#[derive(Args, Clone, Debug)]
#[group(id = "auth")]
pub struct AuthSettings {
    /// HS256/384/512 secret for client tokens [default: generated and printed at start].
    #[arg(long)]
    pub jwt_secret: Option<String>,
    /// PEM public key file for RS*/PS*/ES*/EdDSA tokens (repeatable; comma-separated in
    /// the environment variable).
    #[arg(long, value_delimiter = ',')]
    pub jwt_public_key: Vec<PathBuf>,
    /// TOML file of HMAC secrets by key id (`"2026-12" = "secret"`, a line each): a token
    /// whose header has a `kid` is verified with that secret. Rotate keys by editing it and
    /// sending SIGHUP (or POST /api/admin/reload-keys); public key files are read again too.
    #[arg(long)]
    pub jwt_secrets_file: Option<PathBuf>,
    /// JSON Web Key Set URL (an identity provider's jwks.json): tokens naming a kid of it are
    /// verified with that key; fetched at start, every --jwks-refresh, and when a token names
    /// an unknown kid (at most every 5 s).
    #[arg(long)]
    pub jwks_url: Option<String>,
    /// How often the JWKS is fetched again.
    #[arg(long, default_value = "10m", value_parser = positive_duration)]
    pub jwks_refresh: Duration,
    /// Required `iss` claim.
    #[arg(long)]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long)]
    pub jwt_audience: Option<String>,
    /// Bearer key for the HTTP API [default: generated and printed at start].
    #[arg(long)]
    pub api_key: Option<String>,
}

/// What one client, user or channel may hold or send.
#[derive(Args, Clone, Debug)]
#[group(id = "limits")]
pub struct LimitSettings {
    /// Member-data bytes per presence channel (JSON size of uid + umd).
    #[arg(long, default_value_t = Limits::default().max_member_bytes)]
    pub max_member_bytes: usize,
    /// Distinct members per channel.
    #[arg(long, default_value_t = Limits::default().max_members_per_channel)]
    pub max_members_per_channel: usize,
    /// Channels per connection.
    #[arg(long, default_value_t = Limits::default().max_channels_per_connection)]
    pub max_channels_per_connection: usize,
    /// Subscribes and unsubscribes per second per connection, after a burst of twice
    /// --max-channels-per-connection; a user's connections together: 4x.
    #[arg(long, default_value_t = Limits::default().max_membership_changes_per_second)]
    pub max_membership_changes_per_second: u32,
    /// Connections per user on one node.
    #[arg(long, default_value_t = Limits::default().max_connections_per_user)]
    pub max_connections_per_user: usize,
    /// Largest WebSocket message a client may send, in bytes.
    #[arg(long, default_value_t = TransportConfig::default().max_frame_bytes)]
    pub max_frame_bytes: usize,
    /// Messages per second a client may send.
    #[arg(long, default_value_t = TransportConfig::default().max_messages_per_second)]
    pub max_messages_per_second: u32,
    /// Outbound queue per connection, in bytes; a client that falls further behind is
    /// disconnected.
    #[arg(long, default_value_t = Limits::default().outbox_bytes)]
    pub outbox_bytes: usize,
    /// WebSocket ping interval for dead-peer detection.
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    pub ping_interval: Duration,
    /// Close a peer silent for this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// On a busy connection (written to within the last four delays), hold broadcast frames
    /// (channel events, messages) up to this long, or until 8 wait, so that several go out in
    /// one write: fewer system calls per message, at most this much more latency. A quiet connection's frames,
    /// and replies to a client's own requests, go at once. 0 writes every frame at once; at
    /// most 1s.
    #[arg(long, default_value = "10ms", value_parser = write_delay)]
    pub write_delay: Duration,
    /// Offer permessage-deflate to WebSocket clients that ask for it (browsers, Node's ws):
    /// frames of 512 bytes and more go out compressed, each broadcast compressed once for all
    /// its recipients; no compression context is kept between messages. Off by default: it
    /// costs CPU, and a compressed frame's length says something about its content.
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub websocket_compression: bool,
}

/// Who may subscribe and publish where, on every front end (full rules:
/// `[[channel-rules]]` in the TOML file).
#[derive(Args, Clone, Debug)]
#[group(id = "channels")]
pub struct ChannelSettings {
    /// Channel patterns whose client messages also go to the backend (webhook receivers and
    /// GET /api/events, as client_message events), comma-separated [default: none].
    #[arg(long, value_delimiter = ',')]
    pub forward_channels: Vec<String>,
    /// Channel patterns whose client messages go only to the backend, not to the channel's
    /// subscribers, comma-separated [default: none].
    #[arg(long, value_delimiter = ',')]
    pub forward_only_channels: Vec<String>,
    /// Channel patterns anyone may subscribe to (subscribers may publish), comma-separated,
    /// e.g. 'lobby,room.*' [default: none; a channel needs a grant in the token].
    #[arg(long, value_delimiter = ',')]
    pub open_channels: Vec<String>,
    /// Channel patterns any connection with a valid token may subscribe to (subscribers may
    /// publish), comma-separated [default: none].
    #[arg(long, value_delimiter = ',')]
    pub authenticated_channels: Vec<String>,
    /// URL (http:// or https://) asked by POST whether a connection may use a channel no
    /// grant or rule settles [default: none; such channels are refused].
    #[arg(long)]
    pub channel_check_url: Option<String>,
    /// How long a channel check answer is reused.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub channel_check_cache_ttl: Duration,
    /// How long the channel check may take to answer.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub channel_check_timeout: Duration,
    /// Full channel rules (`[[channel-rules]]` tables of the TOML file),
    /// tried before the two lists above.
    #[arg(skip)]
    pub channel_rules: Vec<crate::policy::RuleConfig>,
    /// Forwarding rules by channel and event (`[[forward-rules]]` tables
    /// of the TOML file), tried before the two forward lists above.
    #[arg(skip)]
    pub forward_rules: Vec<crate::policy::ForwardRuleConfig>,
}

/// Leases, user presence, privacy and webhooks.
#[derive(Args, Clone, Debug)]
#[group(id = "services")]
pub struct ServicesSettings {
    /// Track presence: on, or off to hide every user.
    #[arg(long, default_value = "on", value_parser = ["on", "off", "true", "false"])]
    pub presence_tracking: String,
    /// Users may hide themselves (privacy API).
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_user_toggle: bool,
    /// Visibility of users who did not choose.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub default_visible: bool,
    /// Report hidden users' connection_opened / connection_closed events too (they still appear
    /// in no presence event).
    #[arg(long)]
    pub hidden_connection_events: bool,
    /// Directory for durable state (privacy choices) [default: none, in memory].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Lease TTL when a refresh gives no ttl_ms.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// Webhook receiver, http:// or https:// (repeatable; comma-separated in the environment
    /// variable).
    #[arg(long, value_delimiter = ',')]
    pub webhook_url: Vec<String>,
    /// HMAC-SHA256 key for the X-Rollcall-Signature header of webhooks and channel checks
    /// [default: unsigned].
    #[arg(long)]
    pub webhook_secret: Option<String>,
    /// Collect webhook events this long into one request, in ms.
    #[arg(long, default_value_t = 100)]
    pub webhook_batch_ms: u64,
    /// First webhook retry delay in ms, doubling per attempt.
    #[arg(long, default_value_t = 500)]
    pub webhook_retry_ms: u64,
    /// Attempts per webhook request, the first included.
    #[arg(long, default_value_t = 8)]
    pub webhook_max_attempts: u32,
    /// Send connection_opened / connection_closed webhooks too (one per connection: off by
    /// default; GET /api/events always carries them).
    #[arg(long)]
    pub webhook_connection_events: bool,
    /// Events a reader of GET /api/events may fall behind; a reader further behind loses the
    /// oldest and gets a `gap` event saying how many.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub events_backlog: u32,
    /// Backend URL (http:// or https://) that answers clients' calls: SocketCluster custom
    /// events with a cid, Socket.IO events with an acknowledgment, Hotsock rollcall.call
    /// [default: none; such calls get an error].
    #[arg(long)]
    pub rpc_url: Option<String>,
    /// How long the backend may take to answer a call.
    #[arg(long, default_value = "10s", value_parser = crate::config::positive_duration)]
    pub rpc_timeout: Duration,
    /// The custom events that are calls for the backend (names, * globs, #regex:),
    /// comma-separated; others get the protocol's unknown-event error.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub rpc_events: Vec<String>,
}

/// Scale-out: the bus that makes several nodes one.
#[derive(Args, Clone, Debug)]
#[group(id = "cluster")]
pub struct ClusterSettings {
    /// Cluster bus: memory (standalone), redis://[:password@]host:port, rediss://…,
    /// redis+cluster://host1:port1,host2:port2, postgres://user:password@host:5432/db, or
    /// nats://[user:password@|token@]host:4222[,host2:4222] (tls://… for TLS; JetStream on).
    #[arg(long, default_value = "memory")]
    pub bus: String,
    /// What the bus's channel and keys start with (Redis: `<prefix>:cluster`,
    /// `<prefix>:privacy`): deployments with different prefixes share one engine without
    /// seeing each other.
    #[arg(long, default_value = crate::cluster::DEFAULT_BUS_PREFIX)]
    pub bus_prefix: String,
    /// This node's id, unique in the cluster [default: generated].
    #[arg(long)]
    pub node_id: Option<String>,
    /// Cluster heartbeat period.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// Remove a silent node's members after this long.
    #[arg(long, default_value = "2500ms", value_parser = parse_duration)]
    pub node_timeout: Duration,
}

/// How the log on stderr is written (read by the `rollcall` command, which
/// sets up the subscriber before the server starts).
#[derive(Args, Clone, Debug)]
#[group(id = "log")]
pub struct LogSettings {
    /// Log format on stderr: text (coloured only when stderr is a terminal) or json (one JSON
    /// object a line: timestamp, level, target, fields). The level is RUST_LOG's.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The log's format (`--log-format`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A duration longer than zero (a value parser for settings where 0
/// would mean "never" or spin).
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("must be longer than 0s".into()),
        d => Ok(d),
    }
}

/// The most `--write-delay` may hold a frame: it is latency added to
/// every message, and more than a second would look like a stalled server.
const MAX_WRITE_DELAY: Duration = Duration::from_secs(1);

/// A `--write-delay`: 0 (off) up to [`MAX_WRITE_DELAY`].
fn write_delay(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d > MAX_WRITE_DELAY => Err(format!(
            "must be at most {} (every message waits up to this long; 5ms to 20ms saves most \
             of the writes)",
            humantime::format_duration(MAX_WRITE_DELAY)
        )),
        d => Ok(d),
    }
}

impl Config {
    /// The settings of a TOML file over the defaults, without the
    /// environment or flags (tests, `rollcall token --config`).
    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        load::from_file(path)
    }

    /// Cluster settings (the node id must have been filled in, see
    /// [`crate::server::resolve`], or one is generated).
    pub fn cluster(&self) -> Result<crate::cluster::ClusterConfig, String> {
        let settings = &self.cluster;
        let config = crate::cluster::ClusterConfig {
            bus: crate::cluster::BusSpec::parse(&settings.bus)?,
            node_id: settings
                .node_id
                .clone()
                .unwrap_or_else(crate::cluster::generated_node_id),
            heartbeat: settings.heartbeat_interval,
            node_timeout: settings.node_timeout,
            tls_ca_file: self.tls_ca_file.clone(),
            prefix: settings.bus_prefix.clone(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Limits for the presence core.
    pub fn presence_limits(&self) -> Limits {
        let limits = &self.limits;
        Limits {
            max_member_bytes: limits.max_member_bytes,
            max_members_per_channel: limits.max_members_per_channel,
            max_channels_per_connection: limits.max_channels_per_connection,
            max_connections_per_user: limits.max_connections_per_user,
            outbox_bytes: limits.outbox_bytes,
            max_membership_changes_per_second: limits.max_membership_changes_per_second,
        }
    }

    /// Connection caps and the request-head deadline.
    pub fn admission(&self) -> Result<crate::listener::ListenerConfig, String> {
        let settings = &self.listener;
        if settings.header_timeout.is_zero() {
            return Err("header-timeout must be longer than 0s".into());
        }
        for (key, value) in [
            ("max-connections", settings.max_connections),
            (
                "max-connections-per-address",
                settings.max_connections_per_address,
            ),
        ] {
            if value == Some(0) {
                return Err(format!("{key} must be at least 1"));
            }
        }
        Ok(crate::listener::ListenerConfig::new(
            settings.max_connections,
            settings.max_connections_per_address,
            settings.header_timeout,
        ))
    }

    /// Settings for the WebSocket transport.
    pub fn transport(&self) -> TransportConfig {
        TransportConfig {
            max_frame_bytes: self.limits.max_frame_bytes,
            max_messages_per_second: self.limits.max_messages_per_second,
            ping_interval: self.limits.ping_interval,
            idle_timeout: self.limits.idle_timeout,
            write_delay: self.limits.write_delay,
            compression: self.limits.websocket_compression,
            ..TransportConfig::default()
        }
    }

    /// Settings of the presence services (leases, user presence, privacy,
    /// webhooks), or an error naming the bad key.
    pub fn services(&self) -> Result<crate::services::ServicesConfig, String> {
        let settings = &self.services;
        let tracking = matches!(settings.presence_tracking.as_str(), "on" | "true");
        if settings.webhook_max_attempts == 0 {
            return Err("webhook-max-attempts must be at least 1".into());
        }
        let defaults = crate::services::ServicesConfig::default();
        let lease_ttl = settings.lease_ttl;
        if lease_ttl.is_zero() || lease_ttl > defaults.max_lease_ttl {
            return Err(format!(
                "lease-ttl = {}: must be more than 0 and at most {}",
                humantime::format_duration(lease_ttl),
                humantime::format_duration(defaults.max_lease_ttl)
            ));
        }
        let bus = crate::cluster::BusSpec::parse(&self.cluster.bus)?;
        Ok(crate::services::ServicesConfig {
            privacy: crate::services::privacy::PrivacySettings {
                tracking,
                allow_user_toggle: settings.allow_user_toggle,
                default_visible: settings.default_visible,
            },
            data_dir: settings.data_dir.clone(),
            tls_ca_file: self.tls_ca_file.clone(),
            clustered: bus != crate::cluster::BusSpec::Memory,
            bus_prefix: self.cluster.bus_prefix.clone(),
            shared_privacy: match bus {
                crate::cluster::BusSpec::Memory => None,
                engine => Some(engine),
            },
            lease_ttl,
            max_lease_ids: self.limits.max_channels_per_connection,
            webhooks: crate::services::webhooks::WebhookConfig {
                urls: settings.webhook_url.clone(),
                tls_ca_file: self.tls_ca_file.clone(),
                secret: settings.webhook_secret.clone(),
                batch_window: Duration::from_millis(settings.webhook_batch_ms),
                retry_base: Duration::from_millis(settings.webhook_retry_ms),
                max_attempts: settings.webhook_max_attempts,
                connection_events: settings.webhook_connection_events,
            },
            events_backlog: settings.events_backlog as usize,
            hidden_connection_events: settings.hidden_connection_events,
            rpc: settings
                .rpc_url
                .clone()
                .filter(|u| !u.is_empty())
                .map(|url| crate::services::rpc::RpcConfig {
                    url,
                    timeout: settings.rpc_timeout,
                    secret: settings.webhook_secret.clone(),
                    ca_file: self.tls_ca_file.clone(),
                    events: settings.rpc_events.clone(),
                }),
            ..defaults
        })
    }

    /// Checks `tls-ca-file`: readable, and holding PEM certificates usable
    /// as roots. Errors say what is wrong and what the file must hold.
    pub fn check_tls(&self) -> Result<(), String> {
        match &self.tls_ca_file {
            Some(path) => crate::tls::read_ca_file(path).map(|_| ()),
            None => Ok(()),
        }
    }

    /// The channel policy's settings, or an error naming the bad key.
    pub fn policy(&self) -> Result<crate::policy::PolicyConfig, String> {
        let settings = &self.channels;
        let rules = crate::policy::PolicyConfig::rules_from(
            &settings.channel_rules,
            &settings.open_channels,
            &settings.authenticated_channels,
        )?;
        let backend = match &settings.channel_check_url {
            None => None,
            Some(url) => {
                crate::policy::check_url(url, self.tls_ca_file.as_deref())?;
                Some(crate::policy::BackendConfig {
                    url: url.clone(),
                    cache_ttl: settings.channel_check_cache_ttl,
                    timeout: settings.channel_check_timeout,
                    secret: self.services.webhook_secret.clone(),
                    ca_file: self.tls_ca_file.clone(),
                })
            }
        };
        Ok(crate::policy::PolicyConfig {
            rules,
            forward: crate::policy::forward::rules_from(
                &settings.forward_rules,
                &settings.forward_channels,
                &settings.forward_only_channels,
            )?,
            backend,
            presence_member_bytes: self.limits.max_member_bytes,
            max_members: self.limits.max_members_per_channel,
        })
    }

    /// How the node stops on SIGTERM.
    pub fn drain(&self) -> crate::server::Drain {
        crate::server::Drain {
            grace: self.listener.drain_grace,
            spread: self.listener.drain_spread,
        }
    }

    /// Settings for JWT verification.
    pub fn jwt(&self) -> AuthConfig {
        AuthConfig {
            jwt_secret: self.auth.jwt_secret.clone(),
            public_keys: self.auth.jwt_public_key.clone(),
            secrets_file: self.auth.jwt_secrets_file.clone(),
            jwks_url: self.auth.jwks_url.clone(),
            issuer: self.auth.jwt_issuer.clone(),
            audience: self.auth.jwt_audience.clone(),
            leeway_secs: 0,
        }
    }
}

#[cfg(test)]
mod tests;
