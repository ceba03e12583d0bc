//! sgcWebSockets Presence front end: `ws://HOST:PORT/sgc`, WebSocket
//! subprotocol `presence.esegece.com`. Spec: ../shared/specs/sgc.md; the
//! README next to this file documents the endpoint, the invitation
//! response and the configuration.
//!
//! `lenient.rs` reads sgc's unescaped JSON, `wire.rs` decodes and encodes
//! frames (and holds the codec), `session.rs` runs one connection,
//! `acks.rs` the acknowledgments, `policy.rs` the configurable rules and
//! the hook trait; this file is the route and the adapter's config.

pub mod acks;
pub mod lenient;
pub mod policy;
pub mod session;
pub mod wire;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::websocket::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{Map, Value};

use crate::app::App;
use crate::frontends::FrontEnd;
use crate::presence::{ChannelLimits, Codec, Identity};

pub use policy::{AcceptAll, Decision, HookMember, SgcHooks, SgcRules};

/// The protocol name used in logs and listings.
pub const PROTOCOL: &str = "sgc";

/// The sgc front end, as the server registers it (hooks that accept
/// everything; an embedder passes its own to [`routes`]).
pub const FRONT_END: FrontEnd = FrontEnd {
    name: "sgc",
    protocol: PROTOCOL,
    routes: |app, config| {
        Ok(routes(
            app,
            SgcConfig::from_settings(&config.front_ends.sgc)?,
        ))
    },
    check: |config| SgcConfig::from_settings(&config.front_ends.sgc).map(|_| ()),
    endpoint: |addr| format!("sgc         ws://{addr}/sgc  (subprotocol presence.esegece.com)"),
};

/// The WebSocket subprotocol selected in the upgrade response.
pub const SUBPROTOCOL: &str = "presence.esegece.com";

/// The core channel that holds every joined sgc member: server-wide
/// member events, get@members without a channel and publish without a
/// channel go through it. sgc clients cannot name it (channel names
/// starting with `#` are refused), nor can Hotsock clients.
pub const ROSTER_CHANNEL: &str = "#sgc/members";

/// The core event name of messages published by sgc clients (other front
/// ends see it as the event name; the text is the data).
pub const MESSAGE_EVENT: &str = "message";

/// sgc adapter settings.
#[derive(Clone)]
pub struct SgcConfig {
    /// Refuse connections without a valid `?token=JWT`.
    pub require_token: bool,
    /// How long an invitation waits for an answer.
    pub invitation_ttl: Duration,
    /// Ask every client to acknowledge what the server sends (a client can
    /// also ask with `?acks=1`, or opt out with `?acks=0`).
    pub server_acks: bool,
    /// Re-send a frame not acknowledged within this time.
    pub ack_timeout: Duration,
    /// Re-sends of one frame before the connection is closed (4008).
    pub ack_retries: u32,
    /// Joined sgc members on this server (member@new beyond: error 2).
    pub max_members: usize,
    /// Configurable accept/reject rules.
    pub rules: Arc<SgcRules>,
    /// Embedder hooks, run after the rules.
    pub hooks: Arc<dyn SgcHooks>,
}

impl fmt::Debug for SgcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SgcConfig")
            .field("require_token", &self.require_token)
            .field("invitation_ttl", &self.invitation_ttl)
            .field("server_acks", &self.server_acks)
            .field("ack_timeout", &self.ack_timeout)
            .field("ack_retries", &self.ack_retries)
            .field("max_members", &self.max_members)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

/// sgc front end settings (`[sgc]` in the TOML file).
#[derive(clap::Args, Clone, Debug)]
#[group(id = "sgc")]
pub struct SgcSettings {
    /// Refuse /sgc connections without ?token=JWT.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub sgc_require_token: bool,
    /// How long an invitation waits for an answer.
    #[arg(long, default_value = "60s", value_parser = crate::auth::parse_duration)]
    pub sgc_invitation_ttl: Duration,
    /// Ask every client to acknowledge server frames (per connection: ?acks=1).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub sgc_server_acks: bool,
    /// Re-send an unacknowledged frame after this long.
    #[arg(long, default_value = "10s", value_parser = crate::auth::parse_duration)]
    pub sgc_ack_timeout: Duration,
    /// Re-sends of one frame before closing with 4008.
    #[arg(long, default_value_t = 5)]
    pub sgc_ack_retries: u32,
    /// Joined members on this server.
    #[arg(long, default_value_t = 100_000)]
    pub sgc_max_members: usize,
    /// Allow publish with an empty channel (to every member).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub sgc_global_publish: bool,
    /// get@members for a channel requires being subscribed to it.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub sgc_members_need_subscription: bool,
    /// Inviting to a channel requires being subscribed to it.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub sgc_invite_needs_subscription: bool,
    /// Replaced by --open-channels (kept to say so at startup).
    #[arg(long, value_delimiter = ',', hide = true)]
    pub sgc_channels: Vec<String>,
    /// Replaced by [[channel-rules]] (kept to say so at startup).
    #[arg(long, value_delimiter = ',', hide = true)]
    pub sgc_publish_channels: Vec<String>,
}

impl Default for SgcSettings {
    fn default() -> Self {
        crate::config::defaults()
    }
}

impl Default for SgcConfig {
    fn default() -> Self {
        match SgcConfig::from_settings(&SgcSettings::default()) {
            Ok(config) => config,
            Err(e) => panic!("the default sgc settings are invalid: {e}"),
        }
    }
}

impl SgcConfig {
    /// Checks the settings, with hooks that accept everything.
    pub fn from_settings(settings: &SgcSettings) -> Result<Self, String> {
        for (key, given) in [
            ("sgc-channels", &settings.sgc_channels),
            ("sgc-publish-channels", &settings.sgc_publish_channels),
        ] {
            if !given.is_empty() {
                return Err(format!(
                    "{key} was replaced by the channel policy, which holds for every front end: \
                     use --open-channels / --authenticated-channels or [[channel-rules]] \
                     (README, \"Channel authorization\")"
                ));
            }
        }
        if settings.sgc_ack_timeout.is_zero() {
            return Err("sgc-ack-timeout must be longer than 0s".into());
        }
        let rules = SgcRules {
            global_publish: settings.sgc_global_publish,
            members_need_subscription: settings.sgc_members_need_subscription,
            invite_needs_subscription: settings.sgc_invite_needs_subscription,
        };
        Ok(SgcConfig {
            require_token: settings.sgc_require_token,
            invitation_ttl: settings.sgc_invitation_ttl,
            server_acks: settings.sgc_server_acks,
            ack_timeout: settings.sgc_ack_timeout,
            ack_retries: settings.sgc_ack_retries,
            max_members: settings.sgc_max_members,
            rules: Arc::new(rules),
            hooks: Arc::new(AcceptAll),
        })
    }
}

fn shared_codec() -> Arc<wire::SgcCodec> {
    // One codec for every connection without server-side acks, so that a
    // broadcast is encoded once (per flavor) for all of them.
    static CODEC: OnceLock<Arc<wire::SgcCodec>> = OnceLock::new();
    CODEC
        .get_or_init(|| Arc::new(wire::SgcCodec::default()))
        .clone()
}

/// The adapter's routes. Also sets the member limit of the server-wide
/// member list ([`ROSTER_CHANNEL`]).
pub fn routes(app: &App, settings: SgcConfig) -> Router<App> {
    app.presence.set_channel_limits(
        ROSTER_CHANNEL,
        Some(ChannelLimits {
            max_members: settings.max_members,
            max_member_bytes: usize::MAX,
        }),
    );
    Router::new()
        .route("/sgc", get(upgrade))
        .route("/sgc/", get(upgrade))
        .layer(Extension(settings))
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

fn flag(query: &HashMap<String, String>, key: &str) -> Option<bool> {
    query.get(key).map(|v| {
        matches!(
            v.to_ascii_lowercase().as_str(),
            "" | "1" | "true" | "yes" | "on"
        )
    })
}

/// The member a verified token describes: id from `uid` (or `sub`), name
/// from `name` (default: the id), info from `info` (a string, or any JSON
/// as its text), publish permission from `publish` (default true).
pub fn token_member(claims: &Map<String, Value>) -> Result<(String, session::TokenMember), String> {
    let text = |key: &str| match claims.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    let id = match (claims.get("uid"), claims.get("sub")) {
        (Some(Value::String(s)), _) | (None, Some(Value::String(s))) if !s.is_empty() => s.clone(),
        _ => {
            return Err(
                "the token needs a uid (or sub) claim: a non-empty string naming the member".into(),
            );
        }
    };
    let publish = match claims.get("publish") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("the publish claim must be true or false".into()),
    };
    let member = session::TokenMember {
        name: text("name").unwrap_or_else(|| id.clone()),
        info: text("info").unwrap_or_default(),
        publish,
    };
    Ok((id, member))
}

/// Checks the token (if any, or if required), registers the connection,
/// then upgrades, selecting the `presence.esegece.com` subprotocol.
async fn upgrade(
    State(app): State<App>,
    Extension(config): Extension<SgcConfig>,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let token = match query.get("token").filter(|t| !t.is_empty()) {
        Some(token) => {
            match app
                .verifier
                .verify(token)
                .map_err(|e| e.to_string())
                .and_then(|claims| {
                    let (id, member) = token_member(&claims)?;
                    let access =
                        crate::auth::access_from_claims(&claims).map_err(|e| e.to_string())?;
                    Ok((id, member, access))
                }) {
                Ok(pair) => Some(pair),
                Err(e) => return unauthorized(&app, format!("invalid token: {e}")),
            }
        }
        None if config.require_token => {
            return unauthorized(
                &app,
                "missing token: this server requires /sgc?token=<JWT with a uid claim>".into(),
            );
        }
        None => None,
    };
    let identity = match &token {
        Some((id, m, _)) => {
            Identity::user(id.as_str(), wire::WireMember::core_data(&m.name, &m.info))
        }
        None => Identity::anonymous(),
    };
    let acks_wanted = flag(&query, "acks").unwrap_or(config.server_acks);
    let base64 = flag(&query, "base64").unwrap_or(false);
    let (codec, tracker) = if acks_wanted {
        let tracker = Arc::new(acks::AckTracker::new(app.presence.limits().outbox_bytes));
        (
            Arc::new(wire::SgcCodec::with_acks(tracker.clone())),
            Some(tracker),
        )
    } else {
        (shared_codec(), None)
    };
    let core_codec: Arc<dyn Codec> = codec.clone();
    let (conn, outbox_rx) = match app.presence.connect(identity, core_codec, PROTOCOL) {
        Ok(pair) => pair,
        Err(e @ crate::presence::ConnectError::InvalidUserId(_)) => {
            return unauthorized(&app, format!("invalid token: {e}"));
        }
        Err(e) => return refuse(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
    };
    if let Some((_, _, access)) = &token {
        conn.set_access(access.clone());
    }
    if let Some(t) = &tracker {
        t.attach(conn.outbox_handle());
    }
    let transport = app.config.transport_for(PROTOCOL);
    let shutdown = app.shutdown.handle();
    // Not an async block: it would keep its own copy of the session for the
    // connection's lifetime; `run` holds everything in one allocation.
    ws.protocols([SUBPROTOCOL])
        .on_upgrade(transport.websocket(), move |socket| {
            let mut session = session::SgcSession::new(
                conn,
                config,
                codec,
                tracker,
                token.map(|(_, m, _)| m),
                base64,
            );
            session.open();
            crate::transport::run(socket, outbox_rx, session, transport, shutdown)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn token_claims_map_to_a_member() {
        let (id, m) = token_member(&claims(
            json!({"uid": "alice", "name": "Alice", "info": "a@x"}),
        ))
        .unwrap();
        assert_eq!(id, "alice");
        assert_eq!(
            (m.name.as_str(), m.info.as_str(), m.publish),
            ("Alice", "a@x", true)
        );
        let (id, m) = token_member(&claims(
            json!({"sub": "bob", "info": {"k": 1}, "publish": false}),
        ))
        .unwrap();
        assert_eq!(id, "bob");
        assert_eq!(
            (m.name.as_str(), m.info.as_str(), m.publish),
            ("bob", r#"{"k":1}"#, false)
        );
        assert!(token_member(&claims(json!({"name": "x"}))).is_err());
        assert!(token_member(&claims(json!({"uid": ""}))).is_err());
        assert!(token_member(&claims(json!({"uid": "a", "publish": "yes"}))).is_err());
    }

    #[test]
    fn query_flags() {
        let q: HashMap<String, String> = [("acks", "1"), ("base64", "false"), ("x", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(flag(&q, "acks"), Some(true));
        assert_eq!(flag(&q, "base64"), Some(false));
        assert_eq!(flag(&q, "x"), Some(true));
        assert_eq!(flag(&q, "missing"), None);
    }
}
