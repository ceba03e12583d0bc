//! Webhooks: presence events POSTed, signed and batched, to every
//! `--webhook-url`.
//!
//! # Format
//!
//! ```text
//! POST /your/hook HTTP/1.1
//! Content-Type: application/json
//! X-Rollcall-Webhook-Id: 01JA2Z4K8Q3W7E5R9T1Y6U0I2O
//! X-Rollcall-Signature: sha256=5d5b0966...   (HMAC-SHA256 of the body, hex, with --webhook-secret)
//!
//! {"id":"01JA2Z4K8Q3W7E5R9T1Y6U0I2O","time_ms":1728846563000,"events":[
//!   {"id":"01JA2Z4K8MBX...","name":"channel_occupied","channel":"content:42","time_ms":1728846562950},
//!   {"id":"01JA2Z4K8MBY...","name":"member_added","channel":"content:42","user_id":"alice","data":{"name":"Alice"},"time_ms":1728846562950},
//!   {"id":"01JA2Z4K8MBZ...","name":"user_online","user_id":"alice","time_ms":1728846562951}
//! ]}
//! ```
//!
//! Event names: `channel_occupied`, `channel_vacated`, `member_added`,
//! `member_removed`, `member_updated` (with the new `data`), `user_online`,
//! `user_offline`. Events are collected for `--webhook-batch-ms` and sent
//! as one request per URL, in order. A request that fails (connection
//! error, timeout, non-2xx) is retried with the same body and ids after
//! `--webhook-retry-ms`, doubling each time (at most 60 s, with jitter), up
//! to `--webhook-max-attempts`; later batches for that URL wait, so the
//! receiver sees them in order. Receivers drop duplicates by the request
//! or event `id`.
//!
//! Presence work never waits for webhooks: observers only put events on a
//! bounded queue (events beyond it are dropped with a warning).
//!
//! # In a cluster
//!
//! Each node reports only the changes it owns: member events for
//! presences whose origin is a local connection or a lease held on this
//! node (not `Origin::Remote` replicas), occupancy changes caused by such
//! a change or by a local subscription, and user online/offline computed
//! from its own connections and leases. So every member event is sent
//! once; occupancy and user events are per node until the cluster
//! provides cluster-wide occupancy and user presence.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::Uri;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::presence::{MemberChange, Origin, PresenceDelta, PresenceObserver};

/// The signature header: `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Rollcall-Signature";
/// The request id header (the body's `id`).
pub const ID_HEADER: &str = "X-Rollcall-Webhook-Id";

/// Events waiting to be batched; beyond this, new events are dropped.
const QUEUE_EVENTS: usize = 100_000;
/// Batches waiting per URL; beyond this, the oldest waiting is dropped.
const QUEUE_BATCHES: usize = 1_000;
/// Events per request at most.
const MAX_BATCH_EVENTS: usize = 1_000;
/// The longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Webhook settings.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Receivers (http:// URLs).
    pub urls: Vec<String>,
    /// HMAC-SHA256 key; requests are unsigned without it.
    pub secret: Option<String>,
    /// How long events are collected into one request.
    pub batch_window: Duration,
    /// First retry delay; doubles per attempt.
    pub retry_base: Duration,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
}

/// One webhook event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WebhookEvent {
    /// ULID, unique per event.
    pub id: String,
    /// The event name (see the module doc).
    pub name: &'static str,
    /// The channel, for channel and member events.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_deref")]
    pub channel: Option<Arc<str>>,
    /// The user, for member and user events.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_deref")]
    pub user_id: Option<Arc<str>>,
    /// The member's data, for member_added and member_updated.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_deref")]
    pub data: Option<Arc<Value>>,
    /// When it happened (Unix ms).
    pub time_ms: u64,
}

/// Serializes an `Option<Arc<T>>` as the `T` (serde's `rc` feature is off).
fn opt_deref<T: Serialize + ?Sized, S: serde::Serializer>(
    value: &Option<Arc<T>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => (**v).serialize(s),
        None => s.serialize_none(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl WebhookEvent {
    /// A new event with a fresh id, now.
    pub fn new(name: &'static str, channel: Option<Arc<str>>, user_id: Option<Arc<str>>) -> Self {
        WebhookEvent {
            id: crate::ids::ulid(),
            name,
            channel,
            user_id,
            data: None,
            time_ms: now_ms(),
        }
    }
}

/// The webhook queue: cheap to call from observers.
#[derive(Debug)]
pub struct Webhooks {
    tx: mpsc::Sender<WebhookEvent>,
    dropped: AtomicU64,
}

/// One signed request body, sent to every URL.
#[derive(Clone, Debug)]
struct Batch {
    id: String,
    body: Bytes,
    signature: Option<String>,
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256=");
    for b in tag {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// A parsed receiver URL.
#[derive(Clone, Debug)]
struct Target {
    url: String,
    host: String,
    port: u16,
    authority: String,
    path: String,
}

fn parse_target(url: &str) -> Result<Target, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("--webhook-url {url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "--webhook-url {url:?}: https is not supported; use an http:// URL (e.g. a local TLS-terminating proxy)"
            ));
        }
        _ => return Err(format!("--webhook-url {url:?} must start with http://")),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("--webhook-url {url:?} has no host"))?;
    Ok(Target {
        url: url.to_string(),
        host: authority.host().to_string(),
        port: authority.port_u16().unwrap_or(80),
        authority: authority.to_string(),
        path: uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into()),
    })
}

impl Webhooks {
    /// Checks the URLs and starts the batcher and one sender per URL.
    /// Needs a Tokio runtime.
    pub fn start(config: WebhookConfig) -> Result<Arc<Webhooks>, String> {
        let targets = config
            .urls
            .iter()
            .map(|u| parse_target(u))
            .collect::<Result<Vec<_>, _>>()?;
        let (tx, rx) = mpsc::channel(QUEUE_EVENTS);
        let mut senders = Vec::new();
        for target in targets {
            let (btx, brx) = mpsc::channel(QUEUE_BATCHES);
            senders.push(btx);
            tokio::spawn(deliver(target, brx, config.clone()));
        }
        tokio::spawn(batch(rx, senders, config));
        Ok(Arc::new(Webhooks {
            tx,
            dropped: AtomicU64::new(0),
        }))
    }

    /// Queues an event; never waits.
    pub fn push(&self, event: WebhookEvent) {
        if self.tx.try_send(event).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "webhook queue full (receivers too slow or down): events dropped"
                );
            }
        }
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    time_ms: u64,
    events: &'a [WebhookEvent],
}

/// Collects events for the batch window and hands each batch to every
/// URL's sender.
async fn batch(
    mut rx: mpsc::Receiver<WebhookEvent>,
    senders: Vec<mpsc::Sender<Batch>>,
    config: WebhookConfig,
) {
    while let Some(first) = rx.recv().await {
        let mut events = vec![first];
        let until = tokio::time::Instant::now() + config.batch_window;
        while events.len() < MAX_BATCH_EVENTS {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(e)) => events.push(e),
                Ok(None) | Err(_) => break,
            }
        }
        let id = crate::ids::ulid();
        let body = match serde_json::to_vec(&Body {
            id: &id,
            time_ms: now_ms(),
            events: &events,
        }) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a webhook batch");
                continue;
            }
        };
        let signature = config.secret.as_deref().map(|s| sign(s, &body));
        let batch = Batch {
            id,
            body,
            signature,
        };
        for sender in &senders {
            if sender.try_send(batch.clone()).is_err() {
                tracing::warn!(
                    "a webhook receiver is {QUEUE_BATCHES} batches behind: a batch was dropped"
                );
            }
        }
    }
}

/// Sends batches to one URL in order, retrying each with backoff.
async fn deliver(target: Target, mut rx: mpsc::Receiver<Batch>, config: WebhookConfig) {
    while let Some(batch) = rx.recv().await {
        let mut delay = config.retry_base;
        for attempt in 1..=config.max_attempts.max(1) {
            let result =
                tokio::time::timeout(REQUEST_TIMEOUT, post(&target, &batch, attempt)).await;
            let error = match result {
                Ok(Ok(status)) if (200..300).contains(&status) => None,
                Ok(Ok(status)) => Some(format!("HTTP {status}")),
                Ok(Err(e)) => Some(e),
                Err(_) => Some(format!("no answer within {REQUEST_TIMEOUT:?}")),
            };
            let Some(error) = error else {
                break;
            };
            if attempt >= config.max_attempts {
                tracing::error!(url = %target.url, batch = %batch.id, %error, attempts = attempt, "webhook batch dropped after the last attempt");
                break;
            }
            tracing::warn!(url = %target.url, batch = %batch.id, %error, attempt, retry_in = ?delay, "webhook failed; retrying");
            // Up to 25% jitter so many nodes do not retry in lockstep.
            let jitter = delay.mul_f64(rand::random::<f64>() * 0.25);
            tokio::time::sleep(delay + jitter).await;
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }
}

/// One POST; returns the status code.
async fn post(target: &Target, batch: &Batch, attempt: u32) -> Result<u16, String> {
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;

    let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = hyper::Request::post(target.path.as_str())
        .header(hyper::header::HOST, target.authority.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("rollcall/", env!("CARGO_PKG_VERSION")),
        )
        .header(ID_HEADER, batch.id.as_str())
        .header("X-Rollcall-Attempt", attempt.to_string());
    if let Some(sig) = &batch.signature {
        req = req.header(SIGNATURE_HEADER, sig.as_str());
    }
    let req = req
        .body(Full::new(batch.body.clone()))
        .map_err(|e| format!("bad request: {e}"))?;
    let result = sender.send_request(req).await;
    driver.abort();
    result
        .map(|resp| resp.status().as_u16())
        .map_err(|e| format!("request failed: {e}"))
}

/// Turns core changes into webhook events (see "In a cluster" above).
#[derive(Debug)]
pub struct WebhookObserver {
    hooks: Arc<Webhooks>,
}

impl WebhookObserver {
    /// An observer feeding `hooks`.
    pub fn new(hooks: Arc<Webhooks>) -> Self {
        WebhookObserver { hooks }
    }
}

fn owned_here(origin: &Origin) -> bool {
    !matches!(origin, Origin::Remote { .. })
}

impl PresenceObserver for WebhookObserver {
    fn channel_batch(
        &self,
        channel: &str,
        occupied: bool,
        vacated: bool,
        deltas: &[PresenceDelta],
    ) {
        // No delta: a local subscription changed occupancy.
        let caused_here = deltas.is_empty() || deltas.iter().any(|d| owned_here(&d.origin));
        let channel: Arc<str> = Arc::from(channel);
        if occupied && caused_here {
            self.hooks.push(WebhookEvent::new(
                "channel_occupied",
                Some(channel.clone()),
                None,
            ));
        }
        for d in deltas.iter().filter(|d| owned_here(&d.origin)) {
            let name = match d.change {
                MemberChange::Added => "member_added",
                MemberChange::Removed => "member_removed",
                MemberChange::Updated => "member_updated",
                MemberChange::Unchanged => continue,
            };
            let mut event = WebhookEvent::new(name, Some(channel.clone()), Some(d.user_id.clone()));
            if d.change != MemberChange::Removed {
                event.data = d.info.clone();
            }
            self.hooks.push(event);
        }
        if vacated && caused_here {
            self.hooks
                .push(WebhookEvent::new("channel_vacated", Some(channel), None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc_4231_test_case_2() {
        // RFC 4231 §4.3: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn urls_are_checked() {
        let t = parse_target("http://127.0.0.1:9000/hooks?x=1").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 9000));
        assert_eq!(t.path, "/hooks?x=1");
        assert_eq!(parse_target("http://example.com").unwrap().port, 80);
        assert!(
            parse_target("https://example.com")
                .unwrap_err()
                .contains("https")
        );
        assert!(parse_target("ftp://x").is_err());
        assert!(parse_target("not a url").is_err());
    }

    #[test]
    fn events_serialize_as_documented() {
        let mut e = WebhookEvent::new(
            "member_added",
            Some(Arc::from("content:42")),
            Some(Arc::from("alice")),
        );
        e.data = Some(Arc::new(serde_json::json!({"name": "Alice"})));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["name"], "member_added");
        assert_eq!(v["channel"], "content:42");
        assert_eq!(v["user_id"], "alice");
        assert_eq!(v["data"]["name"], "Alice");
        let e = WebhookEvent::new("user_online", None, Some(Arc::from("alice")));
        let v = serde_json::to_value(&e).unwrap();
        assert!(v.get("channel").is_none() && v.get("data").is_none());
    }

    #[tokio::test]
    async fn remote_origins_are_not_reported() {
        let (tx, mut rx) = mpsc::channel(16);
        let hooks = Arc::new(Webhooks {
            tx,
            dropped: AtomicU64::new(0),
        });
        let obs = WebhookObserver::new(hooks);
        let remote = PresenceDelta {
            user_id: Arc::from("bob"),
            origin: Origin::Remote {
                node: Arc::from("n2"),
                conn: crate::ids::ConnId(1),
            },
            info: None,
            change: MemberChange::Added,
        };
        obs.channel_batch("room", true, false, std::slice::from_ref(&remote));
        assert!(
            rx.try_recv().is_err(),
            "a replica's join is the other node's to report"
        );
        let local = PresenceDelta {
            origin: Origin::Local(crate::ids::ConnId(2)),
            user_id: Arc::from("carol"),
            ..remote
        };
        obs.channel_batch("room", false, true, &[local]);
        assert_eq!(rx.try_recv().unwrap().name, "member_added");
        assert_eq!(rx.try_recv().unwrap().name, "channel_vacated");
        obs.channel_batch("solo", true, false, &[]);
        assert_eq!(rx.try_recv().unwrap().name, "channel_occupied");
    }
}
