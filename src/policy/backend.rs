//! The backend check: for channels no grant or rule settles, rollcall asks
//! the application over HTTP and remembers the answer briefly.
//!
//! ```text
//! POST <--channel-check-url>
//! Content-Type: application/json
//! X-Rollcall-Signature: sha256=<hex HMAC of the body>   (with --webhook-secret)
//!
//! {"action":"subscribe","channel":"space.42","event":null,"user_id":"alice",
//!  "authenticated":true,"connection_id":"01J…","protocol":"socketio"}
//!
//! 200 {"allow":true}
//! 200 {"allow":false,"reason":"not a member of space 42"}
//! ```
//!
//! Any other status, a body that is not such an object, or no answer within
//! the timeout refuses the request (the reason says which); failures are
//! remembered for one second so a broken backend is not hammered.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use super::Requester;
use axum::http::Method;

use crate::http_client::{Body, HttpClient, HttpError, Target, UserInfo};

/// Answers kept at most; beyond that expired ones go first, then the oldest.
const MAX_CACHED: usize = 100_000;
/// Largest answer read.
const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// How long a failed check is remembered.
const FAILURE_TTL: Duration = Duration::from_secs(1);

/// Settings of the backend check.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// `http://` or `https://` URL answered with allow/deny.
    pub url: String,
    /// How long an answer is reused.
    pub cache_ttl: Duration,
    /// How long one request may take.
    pub timeout: Duration,
    /// HMAC-SHA256 key that signs each request (the webhook secret).
    pub secret: Option<String>,
    /// Extra root certificates for https.
    pub ca_file: Option<PathBuf>,
}

/// What the backend is asked. Also the cache key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackendRequest {
    /// `subscribe` or `publish`.
    pub action: &'static str,
    /// The channel.
    pub channel: String,
    /// The event, for `publish`.
    pub event: Option<String>,
    /// The connection's user id.
    pub user_id: Option<String>,
    /// It presented a valid token.
    pub authenticated: bool,
    /// The connection id: the identity of an anonymous connection.
    pub connection_id: String,
    /// The protocol (told to the backend; not part of the cache key's
    /// meaning for authenticated users, who get one answer everywhere).
    pub protocol: &'static str,
    /// The secret the client gave for the channel (a Socket.IO topic
    /// password), if any.
    pub password: Option<ChannelPassword>,
}

/// A client's secret for a channel: sent to the backend, kept in the
/// answer cache only as a SHA-256 digest, never shown in logs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ChannelPassword(String);

impl ChannelPassword {
    fn digest(&self) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(self.0.as_bytes()).into()
    }
}

impl std::fmt::Debug for ChannelPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChannelPassword(hidden)")
    }
}

impl BackendRequest {
    pub(super) fn new(
        who: &Requester<'_>,
        channel: &str,
        action: &'static str,
        event: Option<&str>,
    ) -> Self {
        BackendRequest {
            action,
            channel: channel.to_owned(),
            event: event.map(str::to_owned),
            user_id: who.user_id.map(str::to_owned),
            authenticated: who.access.authenticated,
            connection_id: who.conn.to_string(),
            protocol: who.protocol,
            password: who.password.map(|p| ChannelPassword(p.to_owned())),
        }
    }

    /// The cache key: a user's answer holds for all their connections, an
    /// anonymous connection's for itself only.
    fn key(&self) -> CacheKey {
        let who = match (&self.user_id, self.authenticated) {
            (Some(uid), true) => format!("u:{uid}"),
            _ => format!("c:{}", self.connection_id),
        };
        CacheKey {
            who,
            action: self.action,
            channel: self.channel.clone(),
            event: self.event.clone(),
            password: self.password.as_ref().map(ChannelPassword::digest),
        }
    }

    fn body(&self) -> Bytes {
        let mut body = json!({
            "action": self.action,
            "channel": self.channel,
            "event": self.event,
            "user_id": self.user_id,
            "authenticated": self.authenticated,
            "connection_id": self.connection_id,
            "protocol": self.protocol,
        });
        if let (Some(password), Some(obj)) = (&self.password, body.as_object_mut()) {
            obj.insert(
                "password".into(),
                serde_json::Value::from(password.0.as_str()),
            );
        }
        Bytes::from(body.to_string())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    who: String,
    action: &'static str,
    channel: String,
    event: Option<String>,
    /// SHA-256 of the password: a wrong one never reuses a right one's
    /// answer, and the cache holds no password.
    password: Option<[u8; 32]>,
}

/// An answer and when it stops counting.
type Answer = (Instant, Result<(), String>);

/// What asking the backend gave.
enum Asked {
    /// `{"allow": true}`.
    Allowed,
    /// `{"allow": false}`: cached like an allow.
    Refused(String),
    /// No usable answer: cached for a second only.
    Failed(String),
}

#[derive(Deserialize)]
struct Reply {
    allow: bool,
    #[serde(default)]
    reason: Option<String>,
}

struct Inner {
    /// The URL and its client; Err: refused at start (every check fails,
    /// saying so).
    target: Result<(Target, HttpClient), String>,
    ttl: Duration,
    timeout: Duration,
    secret: Option<String>,
    cache: Mutex<HashMap<CacheKey, Answer>>,
}

/// The backend check with its answer cache.
#[derive(Clone)]
pub struct BackendCheck {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BackendCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendCheck")
            .field("url", &self.display_url())
            .finish_non_exhaustive()
    }
}

/// A backend question in flight: the transport awaits it, then the session
/// asks the policy again.
pub struct Pending(Pin<Box<dyn Future<Output = ()> + Send>>);

impl Pending {
    /// Waits for `work` (e.g. a call to the backend whose answer the
    /// session reads when it resumes).
    pub fn new(work: impl Future<Output = ()> + Send + 'static) -> Self {
        Pending(Box::pin(work))
    }

    /// A future that is done at once.
    pub fn ready() -> Self {
        Pending(Box::pin(async {}))
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

impl Future for Pending {
    type Output = ();

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

/// Checks a `--channel-check-url` at startup.
pub fn check_url(url: &str, ca_file: Option<&std::path::Path>) -> Result<(), String> {
    build_target(url, ca_file).map(|_| ())
}

fn build_target(
    url: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<(Target, HttpClient), String> {
    let target = Target::parse(
        "--channel-check-url",
        url,
        UserInfo::Refused("use --webhook-secret, which signs each request"),
    )?;
    let client = HttpClient::for_targets([&target], ca_file)?;
    Ok((target, client))
}

impl BackendCheck {
    /// A check for a URL already validated by [`check_url`] (an invalid
    /// one refuses every request with the reason).
    pub fn new(cfg: BackendConfig) -> Self {
        let target = build_target(&cfg.url, cfg.ca_file.as_deref());
        if let Err(e) = &target {
            tracing::error!(error = %e, "the channel check URL is unusable");
        }
        BackendCheck {
            inner: Arc::new(Inner {
                target,
                ttl: cfg.cache_ttl.max(Duration::from_secs(1)),
                timeout: cfg.timeout,
                secret: cfg.secret,
                cache: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The URL for the banner and logs (scheme, host and path only).
    pub fn display_url(&self) -> String {
        match &self.inner.target {
            Ok((t, _)) => t.display().to_string(),
            Err(_) => "(unusable)".into(),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Answer>> {
        self.inner.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The remembered answer, if still fresh.
    pub(super) fn cached(&self, req: &BackendRequest) -> Option<Result<(), String>> {
        let cache = self.cache();
        let (until, answer) = cache.get(&req.key())?;
        (*until > Instant::now()).then(|| answer.clone())
    }

    fn remember(&self, key: CacheKey, asked: Asked) {
        let (ttl, answer) = match asked {
            Asked::Allowed => (self.inner.ttl, Ok(())),
            Asked::Refused(why) => (self.inner.ttl, Err(why)),
            Asked::Failed(why) => (self.inner.ttl.min(FAILURE_TTL), Err(why)),
        };
        let now = Instant::now();
        let mut cache = self.cache();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (until, _)| *until > now);
        }
        if cache.len() >= MAX_CACHED {
            // Still full of fresh answers: forget the half that expires first.
            let mut untils: Vec<Instant> = cache.values().map(|(u, _)| *u).collect();
            untils.sort_unstable();
            let cut = untils[untils.len() / 2];
            cache.retain(|_, (until, _)| *until > cut);
        }
        cache.insert(key, (now + ttl, answer));
    }

    /// Asks the backend and remembers the answer.
    pub(super) fn consult(&self, req: BackendRequest) -> Pending {
        let check = self.clone();
        Pending(Box::pin(async move {
            let asked = check.ask(&req).await;
            if let Asked::Failed(why) = &asked {
                tracing::warn!(channel = %req.channel, action = req.action, reason = %why, "channel check failed");
            }
            check.remember(req.key(), asked);
        }))
    }

    async fn ask(&self, req: &BackendRequest) -> Asked {
        let body = req.body();
        let signature = self
            .inner
            .secret
            .as_deref()
            .map(|secret| crate::services::webhooks::sign(secret, &body));
        let mut headers = Vec::new();
        if let Some(sig) = &signature {
            headers.push((crate::services::webhooks::SIGNATURE_HEADER, sig.as_str()));
        }
        let (target, client) = match &self.inner.target {
            Ok(pair) => pair,
            Err(e) => return Asked::Failed(format!("the channel check could not be asked: {e}")),
        };
        let sent = client
            .send(
                target,
                Method::POST,
                &headers,
                Some(Body::json(body)),
                MAX_ANSWER_BYTES,
                self.inner.timeout,
            )
            .await;
        let (status, body) = match sent {
            Err(HttpError::Timeout { .. }) => {
                return Asked::Failed(format!(
                    "the channel check did not answer within {} ms; try again later",
                    self.inner.timeout.as_millis()
                ));
            }
            Err(e) => {
                return Asked::Failed(format!("the channel check could not be asked: {e}"));
            }
            Ok(answer) => (answer.status, answer.body),
        };
        if status != 200 {
            return Asked::Failed(format!(
                "the channel check answered HTTP {status} instead of 200 {{\"allow\": …}}"
            ));
        }
        match serde_json::from_slice::<Reply>(&body) {
            Ok(Reply { allow: true, .. }) => Asked::Allowed,
            Ok(Reply {
                allow: false,
                reason,
            }) => Asked::Refused(match reason {
                Some(r) if !r.is_empty() => format!("the channel check refused: {r}"),
                _ => format!(
                    "the channel check refused {} on {}",
                    req.action, req.channel
                ),
            }),
            Err(e) => Asked::Failed(format!(
                "the channel check's answer is not {{\"allow\": true|false}}: {e}"
            )),
        }
    }
}
