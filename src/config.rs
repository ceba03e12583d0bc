//! Server configuration: defaults, an optional TOML file (`--config`), and
//! flags / `ROLLCALL_*` environment variables, in rising precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{AuthConfig, parse_duration};
use crate::presence::Limits;
use crate::transport::TransportConfig;

/// Everything `rollcall serve` can be told. Field names are the TOML keys
/// (kebab-case) and, upper-cased with `ROLLCALL_`, the environment variables.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// HS256/384/512 secret for client tokens. Generated at start if unset.
    pub jwt_secret: Option<String>,
    /// PEM public keys (RSA / EC / Ed25519) for RS*/PS*/ES*/EdDSA tokens.
    pub jwt_public_key: Vec<PathBuf>,
    /// Required `iss` claim, if set.
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, if set.
    pub jwt_audience: Option<String>,
    /// Bearer key for the HTTP API. Generated at start if unset.
    pub api_key: Option<String>,
    /// Member-data bytes per presence channel (JSON size of uid+umd).
    pub max_member_bytes: usize,
    /// Distinct members per channel.
    pub max_members_per_channel: usize,
    /// Channels per connection.
    pub max_channels_per_connection: usize,
    /// Subscribes and unsubscribes per second per connection (a user's
    /// connections together: four times as many).
    pub max_membership_changes_per_second: u32,
    /// Connections per user on one node.
    pub max_connections_per_user: usize,
    /// Largest WebSocket message a client may send, in bytes.
    pub max_frame_bytes: usize,
    /// Messages per second a client may send.
    pub max_messages_per_second: u32,
    /// Outbound queue per connection, in bytes; a client that falls further
    /// behind is disconnected.
    pub outbox_bytes: usize,
    /// Maximum connection lifetime, e.g. "2h".
    pub connection_lifetime: String,
    /// Hotsock keepAlive interval, e.g. "570s".
    pub keep_alive_interval: String,
    /// WebSocket ping interval for dead-peer detection, e.g. "25s".
    pub ping_interval: String,
    /// Close a peer silent for this long, e.g. "60s".
    pub idle_timeout: String,
    /// sgc: refuse /sgc connections without `?token=JWT`.
    pub sgc_require_token: bool,
    /// sgc: how long an invitation waits for an answer, e.g. "60s".
    pub sgc_invitation_ttl: String,
    /// sgc: ask every client to acknowledge server frames (`?acks=1` per connection).
    pub sgc_server_acks: bool,
    /// sgc: re-send an unacknowledged frame after this long, e.g. "10s".
    pub sgc_ack_timeout: String,
    /// sgc: re-sends of one frame before the connection is closed (4008).
    pub sgc_ack_retries: u32,
    /// sgc: joined members on this server.
    pub sgc_max_members: usize,
    /// Replaced by the channel policy (`open-channels`); set: a startup
    /// error that says so.
    pub sgc_channels: Option<Vec<String>>,
    /// Replaced by the channel policy (`[[channel-rules]]` `publish`).
    pub sgc_publish_channels: Option<Vec<String>>,
    /// sgc: allow publish with an empty channel (to every member).
    pub sgc_global_publish: bool,
    /// sgc: get@members for a channel requires being subscribed to it.
    pub sgc_members_need_subscription: bool,
    /// sgc: inviting to a channel requires being subscribed to it.
    pub sgc_invite_needs_subscription: bool,
    /// Socket.IO: RFC 7662 introspection URL (http(s)://[id:secret@]host/path)
    /// that checks `tokenType=oauth` tokens; unset: OAuth tokens are refused.
    pub oauth_introspection_url: Option<String>,
    /// Socket.IO: how long an introspection answer is reused, e.g. "30s".
    pub oauth_cache_ttl: String,
    /// SocketCluster: period of sc-stateless-presence `ping` packets, in ms.
    pub sc_presence_interval: u64,
    /// SocketCluster: `timeout` of presence packets in ms (default: the
    /// interval × 1.3).
    pub sc_presence_timeout: Option<u64>,
    /// SocketCluster: period of `#1` pings, in ms.
    pub sc_ping_interval: u64,
    /// SocketCluster: `pingTimeout` in ms; a silent client is closed with 4001.
    pub sc_ping_timeout: u64,
    /// SocketCluster: a socket without `#handshake` this long (ms) is closed with 4005.
    pub sc_handshake_timeout: u64,
    /// Cluster bus: `memory` (one standalone node) or a Redis URL
    /// (`redis://`, `rediss://`, `redis+cluster://host1:port1,host2:port2`).
    pub bus: String,
    /// This node's id in the cluster (generated when unset).
    pub node_id: Option<String>,
    /// Cluster heartbeat period, e.g. "500ms".
    pub heartbeat_interval: String,
    /// A cluster node silent this long is removed with its members, e.g. "2500ms".
    pub node_timeout: String,
    /// Presence services: "on" tracks presence; "off" hides every user.
    pub presence_tracking: String,
    /// Presence services: users may hide themselves (privacy API).
    pub allow_user_toggle: bool,
    /// Presence services: visibility of users who did not choose.
    pub default_visible: bool,
    /// Presence services: directory of the durable privacy store (none:
    /// privacy choices are kept in memory only).
    pub data_dir: Option<PathBuf>,
    /// Presence services: lease TTL when a refresh gives none, e.g. "30s".
    pub lease_ttl: String,
    /// Webhooks: receiver URLs (http:// or https://).
    pub webhook_url: Vec<String>,
    /// Webhooks: HMAC-SHA256 key for the `X-Rollcall-Signature` header.
    pub webhook_secret: Option<String>,
    /// Webhooks: how long events are collected into one request, in ms.
    pub webhook_batch_ms: u64,
    /// Webhooks: first retry delay in ms (doubles per attempt).
    pub webhook_retry_ms: u64,
    /// Webhooks: attempts per request, the first included.
    pub webhook_max_attempts: u32,
    /// Channel patterns anyone may subscribe to, whose subscribers may
    /// publish (`*` wildcards, `#regex:`).
    pub open_channels: Vec<String>,
    /// Channel patterns any authenticated connection may subscribe to,
    /// whose subscribers may publish.
    pub authenticated_channels: Vec<String>,
    /// Full channel rules (`[[channel-rules]]` tables), tried before the
    /// two lists above.
    pub channel_rules: Vec<crate::policy::RuleConfig>,
    /// URL asked about channels no grant or rule settles (none: refused).
    pub channel_check_url: Option<String>,
    /// How long an answer of the channel check is reused, e.g. "10s".
    pub channel_check_cache_ttl: String,
    /// How long the channel check may take to answer, e.g. "2s".
    pub channel_check_timeout: String,
    /// Front ends to serve (empty: every one compiled in).
    pub frontends: Vec<String>,
    /// Open client connections at most (none: the file limit less 256).
    pub max_connections: Option<usize>,
    /// Open client connections per client IP address at most (none: half
    /// of `max-connections`).
    pub max_connections_per_address: Option<usize>,
    /// A client must send its request head (the HTTP request line and
    /// headers, e.g. of a WebSocket upgrade) within this long, e.g. "10s".
    pub header_timeout: String,
    /// Extra root certificates (a PEM file) trusted by rollcall's outgoing
    /// TLS connections (rediss:// bus, https webhooks, https OAuth
    /// introspection), on top of the system's.
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        let limits = Limits::default();
        let transport = TransportConfig::default();
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 4000)),
            jwt_secret: None,
            jwt_public_key: Vec::new(),
            jwt_issuer: None,
            jwt_audience: None,
            api_key: None,
            max_member_bytes: limits.max_member_bytes,
            max_members_per_channel: limits.max_members_per_channel,
            max_channels_per_connection: limits.max_channels_per_connection,
            max_connections_per_user: limits.max_connections_per_user,
            max_frame_bytes: transport.max_frame_bytes,
            max_messages_per_second: transport.max_messages_per_second,
            outbox_bytes: limits.outbox_bytes,
            max_membership_changes_per_second: limits.max_membership_changes_per_second,
            connection_lifetime: "2h".into(),
            keep_alive_interval: "570s".into(),
            ping_interval: "25s".into(),
            idle_timeout: "60s".into(),
            sgc_require_token: false,
            sgc_invitation_ttl: "60s".into(),
            sgc_server_acks: false,
            sgc_ack_timeout: "10s".into(),
            sgc_ack_retries: 5,
            sgc_max_members: 100_000,
            sgc_channels: None,
            sgc_publish_channels: None,
            sgc_global_publish: true,
            sgc_members_need_subscription: false,
            sgc_invite_needs_subscription: false,
            oauth_introspection_url: None,
            oauth_cache_ttl: "30s".into(),
            sc_presence_interval: 10_000,
            sc_presence_timeout: None,
            sc_ping_interval: 8_000,
            sc_ping_timeout: 20_000,
            sc_handshake_timeout: 10_000,
            bus: "memory".into(),
            node_id: None,
            heartbeat_interval: "500ms".into(),
            node_timeout: "2500ms".into(),
            presence_tracking: "on".into(),
            allow_user_toggle: true,
            default_visible: true,
            data_dir: None,
            lease_ttl: "30s".into(),
            webhook_url: Vec::new(),
            webhook_secret: None,
            webhook_batch_ms: 100,
            webhook_retry_ms: 500,
            webhook_max_attempts: 8,
            open_channels: Vec::new(),
            authenticated_channels: Vec::new(),
            channel_rules: Vec::new(),
            channel_check_url: None,
            channel_check_cache_ttl: "10s".into(),
            channel_check_timeout: "2s".into(),
            frontends: Vec::new(),
            max_connections: None,
            max_connections_per_address: None,
            header_timeout: "10s".into(),
            tls_ca_file: None,
        }
    }
}

/// Durations parsed from a [`Config`].
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// See [`Config::connection_lifetime`].
    pub connection_lifetime: Duration,
    /// See [`Config::keep_alive_interval`].
    pub keep_alive_interval: Duration,
    /// See [`Config::ping_interval`].
    pub ping_interval: Duration,
    /// See [`Config::idle_timeout`].
    pub idle_timeout: Duration,
}

impl Config {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("config file {} is invalid: {e}", path.display()))
    }

    /// The parsed durations, or an error naming the bad key.
    pub fn timings(&self) -> Result<Timings, String> {
        let parse = |key: &str, value: &str| {
            parse_duration(value).map_err(|e| format!("{key} = {value:?}: {e}"))
        };
        Ok(Timings {
            connection_lifetime: parse("connection-lifetime", &self.connection_lifetime)?,
            keep_alive_interval: parse("keep-alive-interval", &self.keep_alive_interval)?,
            ping_interval: parse("ping-interval", &self.ping_interval)?,
            idle_timeout: parse("idle-timeout", &self.idle_timeout)?,
        })
    }

    /// Cluster settings (the node id must have been filled in, see
    /// [`crate::server::resolve`], or one is generated).
    pub fn cluster(&self) -> Result<crate::cluster::ClusterConfig, String> {
        let parse = |key: &str, value: &str| {
            parse_duration(value).map_err(|e| format!("{key} = {value:?}: {e}"))
        };
        let config = crate::cluster::ClusterConfig {
            bus: crate::cluster::BusSpec::parse(&self.bus)?,
            node_id: self
                .node_id
                .clone()
                .unwrap_or_else(crate::cluster::generated_node_id),
            heartbeat: parse("heartbeat-interval", &self.heartbeat_interval)?,
            node_timeout: parse("node-timeout", &self.node_timeout)?,
            tls_ca_file: self.tls_ca_file.clone(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Limits for the presence core.
    pub fn limits(&self) -> Limits {
        Limits {
            max_member_bytes: self.max_member_bytes,
            max_members_per_channel: self.max_members_per_channel,
            max_channels_per_connection: self.max_channels_per_connection,
            max_connections_per_user: self.max_connections_per_user,
            outbox_bytes: self.outbox_bytes,
            max_membership_changes_per_second: self.max_membership_changes_per_second,
        }
    }

    /// Connection caps and the request-head deadline.
    pub fn listener(&self) -> Result<crate::listener::ListenerConfig, String> {
        let header_timeout = parse_duration(&self.header_timeout)
            .map_err(|e| format!("header-timeout = {:?}: {e}", self.header_timeout))?;
        if header_timeout.is_zero() {
            return Err("header-timeout must be longer than 0s".into());
        }
        for (key, value) in [
            ("max-connections", self.max_connections),
            (
                "max-connections-per-address",
                self.max_connections_per_address,
            ),
        ] {
            if value == Some(0) {
                return Err(format!("{key} must be at least 1"));
            }
        }
        Ok(crate::listener::ListenerConfig::new(
            self.max_connections,
            self.max_connections_per_address,
            header_timeout,
        ))
    }

    /// Settings for the WebSocket transport.
    pub fn transport(&self) -> Result<TransportConfig, String> {
        let t = self.timings()?;
        Ok(TransportConfig {
            max_frame_bytes: self.max_frame_bytes,
            max_messages_per_second: self.max_messages_per_second,
            ping_interval: t.ping_interval,
            idle_timeout: t.idle_timeout,
            ..TransportConfig::default()
        })
    }

    /// Settings of the presence services (leases, user presence, privacy,
    /// webhooks), or an error naming the bad key.
    pub fn services(&self) -> Result<crate::services::ServicesConfig, String> {
        let tracking = match self.presence_tracking.as_str() {
            "on" | "true" => true,
            "off" | "false" => false,
            other => {
                return Err(format!(
                    "presence-tracking = {other:?}: use \"on\" or \"off\""
                ));
            }
        };
        let lease_ttl = parse_duration(&self.lease_ttl)
            .map_err(|e| format!("lease-ttl = {:?}: {e}", self.lease_ttl))?;
        if self.webhook_max_attempts == 0 {
            return Err("webhook-max-attempts must be at least 1".into());
        }
        let defaults = crate::services::ServicesConfig::default();
        if lease_ttl.is_zero() || lease_ttl > defaults.max_lease_ttl {
            return Err(format!(
                "lease-ttl = {:?}: must be more than 0 and at most {:?}",
                self.lease_ttl, defaults.max_lease_ttl
            ));
        }
        Ok(crate::services::ServicesConfig {
            privacy: crate::services::privacy::PrivacySettings {
                tracking,
                allow_user_toggle: self.allow_user_toggle,
                default_visible: self.default_visible,
            },
            data_dir: self.data_dir.clone(),
            tls_ca_file: self.tls_ca_file.clone(),
            privacy_redis: match crate::cluster::BusSpec::parse(&self.bus)? {
                crate::cluster::BusSpec::Redis(url) => Some(url),
                crate::cluster::BusSpec::Memory => None,
            },
            lease_ttl,
            max_lease_ids: self.max_channels_per_connection,
            webhooks: crate::services::webhooks::WebhookConfig {
                urls: self.webhook_url.clone(),
                tls_ca_file: self.tls_ca_file.clone(),
                secret: self.webhook_secret.clone(),
                batch_window: Duration::from_millis(self.webhook_batch_ms),
                retry_base: Duration::from_millis(self.webhook_retry_ms),
                max_attempts: self.webhook_max_attempts,
            },
            clustered: crate::cluster::BusSpec::parse(&self.bus)?
                != crate::cluster::BusSpec::Memory,
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
        for (key, set) in [
            ("sgc-channels", self.sgc_channels.is_some()),
            ("sgc-publish-channels", self.sgc_publish_channels.is_some()),
        ] {
            if set {
                return Err(format!(
                    "{key} was replaced by the channel policy, which holds for every front end: \
                     use --open-channels / --authenticated-channels or [[channel-rules]] \
                     (README, \"Channel authorization\")"
                ));
            }
        }
        let rules = crate::policy::PolicyConfig::rules_from(
            &self.channel_rules,
            &self.open_channels,
            &self.authenticated_channels,
        )?;
        let backend = match &self.channel_check_url {
            None => None,
            Some(url) => {
                crate::policy::check_url(url, self.tls_ca_file.as_deref())?;
                let parse = |key: &str, value: &str| {
                    parse_duration(value).map_err(|e| format!("{key} = {value:?}: {e}"))
                };
                Some(crate::policy::BackendConfig {
                    url: url.clone(),
                    cache_ttl: parse("channel-check-cache-ttl", &self.channel_check_cache_ttl)?,
                    timeout: parse("channel-check-timeout", &self.channel_check_timeout)?,
                    secret: self.webhook_secret.clone(),
                    ca_file: self.tls_ca_file.clone(),
                })
            }
        };
        Ok(crate::policy::PolicyConfig {
            rules,
            backend,
            presence_member_bytes: self.max_member_bytes,
            max_members: self.max_members_per_channel,
        })
    }

    /// Settings for JWT verification.
    pub fn auth(&self) -> AuthConfig {
        AuthConfig {
            jwt_secret: self.jwt_secret.clone(),
            public_keys: self.jwt_public_key.clone(),
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            leeway_secs: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults() {
        let cfg: Config = toml::from_str(
            r#"
            listen = "0.0.0.0:9000"
            jwt-secret = "s"
            max-member-bytes = 5000
            connection-lifetime = "30m"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.max_member_bytes, 5000);
        assert_eq!(cfg.max_frame_bytes, Config::default().max_frame_bytes);
        assert_eq!(
            cfg.timings().unwrap().connection_lifetime,
            Duration::from_secs(1800)
        );
    }

    #[test]
    fn tls_ca_file_reaches_every_outgoing_client() {
        let cfg: Config = toml::from_str(r#"tls-ca-file = "/etc/rollcall/ca.pem""#).unwrap();
        let path = Some(PathBuf::from("/etc/rollcall/ca.pem"));
        assert_eq!(cfg.cluster().unwrap().tls_ca_file, path);
        let services = cfg.services().unwrap();
        assert_eq!(services.tls_ca_file, path);
        assert_eq!(services.webhooks.tls_ca_file, path);
        let err = cfg.check_tls().unwrap_err();
        assert!(err.contains("no such file"), "{err}");
        assert!(Config::default().check_tls().is_ok());
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_errors() {
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
        let cfg = Config {
            idle_timeout: "soon".into(),
            ..Config::default()
        };
        let err = cfg.timings().unwrap_err();
        assert!(err.contains("idle-timeout"), "{err}");
    }
}
