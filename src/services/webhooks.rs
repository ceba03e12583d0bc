//! Webhooks: presence events POSTed, signed and batched, to every
//! `--webhook-url` (http:// or https://, see [`super::webhook_http`]).
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
//! Every node sees every change (other nodes' presences are replicas in the
//! same member lists), so one node reports them all: the oldest live node
//! that is connected and synced. The others hold their events and replay
//! them if they take over ([`super::webhook_handover`]). So each event is
//! sent once, channel occupancy and user online/offline are cluster-wide,
//! and a node that dies still gets its members' `member_removed` and
//! `user_offline` (sent by the node that sees it time out).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::{mpsc, oneshot};

use super::webhook_handover::Handover;
use super::webhook_http::{Signed, parse_targets, post};
use crate::http_client::{HttpClient, Target};
use crate::presence::{ChannelMessage, MemberChange, PresenceDelta};

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
    /// Receivers (http:// or https:// URLs).
    pub urls: Vec<String>,
    /// Extra roots for https receivers (`--tls-ca-file`).
    pub tls_ca_file: Option<PathBuf>,
    /// HMAC-SHA256 key; requests are unsigned without it.
    pub secret: Option<String>,
    /// How long events are collected into one request.
    pub batch_window: Duration,
    /// First retry delay; doubles per attempt.
    pub retry_base: Duration,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Connection events are sent too (`--webhook-connection-events`).
    pub connection_events: bool,
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
    /// The event name of a client message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The topic of a backend's application message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The node an application message came from.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_deref")]
    pub node: Option<Arc<str>>,
    /// The connection id, for connection events and client messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// The connection's protocol, for connection events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'static str>,
    /// Why a connection closed ([`close_kind`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
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
            event: None,
            topic: None,
            node: None,
            connection: None,
            protocol: None,
            reason: None,
            time_ms: now_ms(),
        }
    }
}

/// The webhook queue: cheap to call from observers.
#[derive(Debug)]
pub struct Webhooks {
    stats: DeliveryStats,
    tx: mpsc::Sender<Queued>,
    dropped: AtomicU64,
    /// Whether this node sends (always, unless clustered), and what it holds.
    handover: Mutex<Handover>,
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

impl Webhooks {
    /// Checks the URLs and starts the batcher and one sender per URL.
    /// `handover` says whether this node sends from the start (see "In a
    /// cluster"). Needs a Tokio runtime.
    pub fn start(config: WebhookConfig, handover: Handover) -> Result<Arc<Webhooks>, String> {
        let (targets, client) = parse_targets(&config.urls, config.tls_ca_file.as_deref())?;
        let (tx, rx) = mpsc::channel(QUEUE_EVENTS);
        let stats = DeliveryStats::new();
        let mut senders = Vec::new();
        for target in targets {
            let (btx, brx) = mpsc::channel(QUEUE_BATCHES);
            senders.push(btx);
            tokio::spawn(deliver(
                client.clone(),
                target,
                brx,
                config.clone(),
                stats.clone(),
            ));
        }
        tokio::spawn(batch(rx, senders, config));
        Ok(Arc::new(Webhooks {
            stats,
            tx,
            dropped: AtomicU64::new(0),
            handover: Mutex::new(handover),
        }))
    }

    /// Queues an event (or holds it on a node that does not send); never
    /// waits.
    pub fn push(&self, event: WebhookEvent) {
        let mut handover = self.handover.lock().unwrap_or_else(|p| p.into_inner());
        // Queued under the lock, so a replay on takeover stays in order.
        if let Some(event) = handover.admit(event) {
            self.queue(event);
        }
    }

    /// Queues an event now, on any node (sender or standby): for events
    /// only this node sees, such as its clients' forwarded messages.
    pub fn push_now(&self, event: WebhookEvent) {
        self.queue(event);
    }

    /// Makes this node the cluster's webhook sender (replaying what it
    /// holds from `replay_from_ms`, Unix ms) or a standby.
    pub fn set_sending(&self, sending: bool, replay_from_ms: u64) {
        let mut handover = self.handover.lock().unwrap_or_else(|p| p.into_inner());
        let replay = handover.set_sending(sending, replay_from_ms);
        if !replay.is_empty() {
            tracing::info!(
                events = replay.len(),
                "this node now sends the cluster's webhooks; replaying the events another node may not have sent"
            );
        }
        for event in replay {
            self.queue(event);
        }
    }

    /// Whether this node sends webhooks.
    pub fn is_sending(&self) -> bool {
        self.handover
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_sending()
    }

    /// Sends what is queued and waits, at most `within`, until every
    /// receiver has had it (or its attempts ran out). For shutdown, so the
    /// last events (members removed as clients close) are not lost.
    /// Returns false if time ran out.
    pub async fn flush(&self, within: Duration) -> bool {
        let (done, flushed) = oneshot::channel();
        tokio::time::timeout(within, async {
            self.tx.send(Queued::Flush(done)).await.is_ok() && flushed.await.is_ok()
        })
        .await
        .unwrap_or(false)
    }

    fn queue(&self, event: WebhookEvent) {
        if self.tx.try_send(Queued::Event(event)).is_err() {
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

    /// The delivery histograms (shared handles).
    pub fn stats(&self) -> &DeliveryStats {
        &self.stats
    }
}

/// What the batcher receives.
#[derive(Debug)]
enum Queued {
    Event(WebhookEvent),
    /// Send what is collected now; tell `done` once every receiver has
    /// had everything queued before (or given up on it).
    Flush(oneshot::Sender<()>),
}

/// What a URL's sender receives.
enum Work {
    Batch(Batch),
    /// Tell the flusher once the batches before this are done.
    Flush(oneshot::Sender<()>),
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
    mut rx: mpsc::Receiver<Queued>,
    senders: Vec<mpsc::Sender<Work>>,
    config: WebhookConfig,
) {
    while let Some(first) = rx.recv().await {
        let mut events = Vec::new();
        let mut flush = None;
        match first {
            Queued::Event(e) => events.push(e),
            Queued::Flush(done) => flush = Some(done),
        }
        let until = tokio::time::Instant::now() + config.batch_window;
        while flush.is_none() && events.len() < MAX_BATCH_EVENTS {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(Queued::Event(e))) => events.push(e),
                Ok(Some(Queued::Flush(done))) => flush = Some(done),
                Ok(None) | Err(_) => break,
            }
        }
        if let Some(batch) = encode(&events, &config) {
            for sender in &senders {
                if sender.try_send(Work::Batch(batch.clone())).is_err() {
                    tracing::warn!(
                        "a webhook receiver is {QUEUE_BATCHES} batches behind: a batch was dropped"
                    );
                }
            }
        }
        if let Some(done) = flush {
            // Off the batcher, so events keep being collected meanwhile.
            let senders = senders.clone();
            tokio::spawn(async move {
                for sender in senders {
                    let (reached, ack) = oneshot::channel();
                    if sender.send(Work::Flush(reached)).await.is_ok() {
                        let _ = ack.await;
                    }
                }
                let _ = done.send(());
            });
        }
    }
}

/// One signed request body for `events`, or None if there are none.
fn encode(events: &[WebhookEvent], config: &WebhookConfig) -> Option<Batch> {
    if events.is_empty() {
        return None;
    }
    let id = crate::ids::ulid();
    let body = match serde_json::to_vec(&Body {
        id: &id,
        time_ms: now_ms(),
        events,
    }) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a webhook batch");
            return None;
        }
    };
    let signature = config.secret.as_deref().map(|s| sign(s, &body));
    Some(Batch {
        id,
        body,
        signature,
    })
}

/// The delivery histograms of `/metrics` (`rollcall_webhook_delivery_seconds`,
/// `rollcall_webhook_attempts`): one observe each per batch, when it is
/// delivered or given up, by the URL's sender.
#[derive(Clone, Debug)]
pub struct DeliveryStats {
    /// From the first attempt to success or give-up, in seconds.
    pub seconds: Histogram,
    /// Attempts it took.
    pub attempts: Histogram,
}

impl DeliveryStats {
    fn new() -> Self {
        DeliveryStats {
            // 5 ms to about 10 s; a batch that is retried spends longer
            // (+Inf then, with its attempts in the other histogram).
            seconds: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            attempts: Histogram::new([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0]),
        }
    }
}

/// Sends batches to one URL in order, retrying each with backoff.
async fn deliver(
    client: HttpClient,
    target: Target,
    mut rx: mpsc::Receiver<Work>,
    config: WebhookConfig,
    stats: DeliveryStats,
) {
    while let Some(work) = rx.recv().await {
        let batch = match work {
            Work::Batch(batch) => batch,
            Work::Flush(reached) => {
                let _ = reached.send(());
                continue;
            }
        };
        let mut delay = config.retry_base;
        let started = tokio::time::Instant::now();
        let mut attempts = 0;
        for attempt in 1..=config.max_attempts.max(1) {
            attempts = attempt;
            let request = Signed {
                id: &batch.id,
                signature: batch.signature.as_deref(),
                attempt,
                body: &batch.body,
            };
            let error = match post(&client, &target, request, REQUEST_TIMEOUT).await {
                Ok(status) if (200..300).contains(&status) => None,
                Ok(status) => Some(format!("HTTP {status}")),
                Err(e) => Some(e),
            };
            let Some(error) = error else {
                break;
            };
            if attempt >= config.max_attempts {
                tracing::error!(url = %target.display(), batch = %batch.id, %error, attempts = attempt, "webhook batch dropped after the last attempt");
                break;
            }
            tracing::warn!(url = %target.display(), batch = %batch.id, %error, attempt, retry_in = ?delay, "webhook failed; retrying");
            // Up to 25% jitter so many nodes do not retry in lockstep.
            let jitter = delay.mul_f64(rand::random::<f64>() * 0.25);
            tokio::time::sleep(delay + jitter).await;
            delay = (delay * 2).min(MAX_BACKOFF);
        }
        stats.attempts.observe(f64::from(attempts));
        stats.seconds.observe(started.elapsed().as_secs_f64());
    }
}

/// A client's message forwarded to the backend: `client_message` with the
/// message's id, channel, event and data, and the sender's user id,
/// connection and protocol.
pub fn client_message(msg: &ChannelMessage, protocol: &'static str) -> WebhookEvent {
    let user_id = msg.sender.as_ref().and_then(|s| s.user_id.clone());
    let mut event = WebhookEvent::new("client_message", Some(msg.channel.clone()), user_id);
    event.id = msg.id.clone();
    event.event = Some(msg.event.clone());
    event.data = msg
        .data
        .as_ref()
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .map(Arc::new);
    event.connection = msg.sender.as_ref().map(|s| s.conn.to_string());
    event.protocol = Some(protocol);
    event
}

/// Why a connection closed, as `connection_closed` reports it:
/// `client_closed` (the client closed or went away), `timeout` (no traffic,
/// no heartbeat or pong, or the connection's lifetime), `slow_consumer`
/// (its outbound queue overflowed), `kicked` (an operator disconnected it
/// through the HTTP API), `server_shutdown`, `policy` (rate
/// limits and abuse) or `protocol_error` (and, reported by the other nodes,
/// `node_lost`: see [`connection_lost`]).
pub fn close_kind(reason: Option<&crate::outbox::CloseReason>) -> &'static str {
    use crate::transport::close;
    let Some(r) = reason else {
        return "client_closed";
    };
    match r.code {
        crate::outbox::CLOSE_SLOW_CONSUMER => "slow_consumer",
        crate::outbox::CLOSE_KICKED => "kicked",
        close::GOING_AWAY if r.reason == crate::server::SHUTDOWN_REASON => "server_shutdown",
        close::GOING_AWAY | 4000 | 4001 | 4005 => "timeout",
        close::POLICY => "policy",
        close::NORMAL => "client_closed",
        _ => "protocol_error",
    }
}

/// What `connection_closed` may give as its `reason`.
const CLOSE_KINDS: [&str; 8] = [
    "client_closed",
    "kicked",
    "timeout",
    "slow_consumer",
    "server_shutdown",
    "policy",
    "protocol_error",
    "node_lost",
];

/// The events a node reports to the others about its own connections.
const REPORTED: [&str; 3] = ["connection_opened", "connection_closed", "client_message"];

/// The `connection_closed` of a connection whose node (`node`) vanished.
pub fn connection_lost(
    node: &str,
    conn: &str,
    uid: Option<&Arc<str>>,
    protocol: Option<&str>,
) -> WebhookEvent {
    let mut event = WebhookEvent::new("connection_closed", None, uid.cloned());
    event.connection = Some(conn.to_string());
    event.protocol = protocol.and_then(known_protocol);
    event.node = Some(Arc::from(node));
    event.reason = Some("node_lost");
    event
}

fn known_protocol(name: &str) -> Option<&'static str> {
    crate::frontends::COMPILED
        .iter()
        .map(|f| f.protocol)
        .find(|p| *p == name)
}

/// A reported event as another node serialized it.
#[derive(Deserialize)]
struct Reported {
    id: String,
    name: String,
    channel: Option<String>,
    user_id: Option<String>,
    data: Option<Value>,
    event: Option<String>,
    node: Option<String>,
    connection: Option<String>,
    protocol: Option<String>,
    reason: Option<String>,
    time_ms: u64,
}

impl WebhookEvent {
    /// An event another node reported ([`REPORTED`]), or None if it is
    /// not one of them.
    pub fn from_report(json: Value) -> Option<WebhookEvent> {
        let r: Reported = serde_json::from_value(json).ok()?;
        Some(WebhookEvent {
            id: r.id,
            name: REPORTED.into_iter().find(|n| *n == r.name)?,
            channel: r.channel.map(Arc::from),
            user_id: r.user_id.map(Arc::from),
            data: r.data.map(Arc::new),
            event: r.event,
            topic: None,
            node: r.node.map(Arc::from),
            connection: r.connection,
            protocol: r.protocol.as_deref().and_then(known_protocol),
            reason: r
                .reason
                .and_then(|k| CLOSE_KINDS.into_iter().find(|c| *c == k)),
            time_ms: r.time_ms,
        })
    }
}

/// A backend's application message (`bus_message`) from `node`.
pub fn bus_message(node: Arc<str>, topic: &str, data: Value) -> WebhookEvent {
    let mut event = WebhookEvent::new("bus_message", None, None);
    event.topic = Some(topic.to_string());
    event.node = Some(node);
    event.data = Some(Arc::new(data));
    event
}

/// The events of one locked change of a channel, in order: occupied, each
/// member added, updated or removed, vacated.
pub fn channel_events(
    channel: &str,
    occupied: bool,
    vacated: bool,
    deltas: &[PresenceDelta],
) -> Vec<WebhookEvent> {
    let channel: Arc<str> = Arc::from(channel);
    let mut events = Vec::with_capacity(deltas.len() + 2);
    if occupied {
        events.push(WebhookEvent::new(
            "channel_occupied",
            Some(channel.clone()),
            None,
        ));
    }
    for d in deltas {
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
        events.push(event);
    }
    if vacated {
        events.push(WebhookEvent::new("channel_vacated", Some(channel), None));
    }
    events
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
    fn a_reported_event_reads_back_as_it_was_sent() {
        let protocol = crate::frontends::COMPILED.first().map(|f| f.protocol);
        for reason in CLOSE_KINDS {
            let mut sent = connection_lost("node-a", "00ff", Some(&Arc::from("jim")), protocol);
            sent.reason = Some(reason);
            let json = serde_json::to_value(&sent).unwrap();
            assert_eq!(WebhookEvent::from_report(json), Some(sent));
        }
        let bus = bus_message(Arc::from("a"), "t", Value::Null);
        assert_eq!(
            WebhookEvent::from_report(serde_json::to_value(&bus).unwrap()),
            None,
            "only connection events and client messages are reported"
        );
    }

    #[test]
    fn close_reasons_have_a_kind() {
        use crate::outbox::CloseReason;
        let kind = |code, why: &'static str| close_kind(Some(&CloseReason::new(code, why)));
        assert_eq!(close_kind(None), "client_closed");
        assert_eq!(kind(1000, "client closed"), "client_closed");
        assert_eq!(kind(1013, "outbound queue over 1 bytes"), "slow_consumer");
        assert_eq!(kind(4100, "account suspended"), "kicked");
        assert_eq!(
            kind(1001, crate::server::SHUTDOWN_REASON),
            "server_shutdown"
        );
        assert_eq!(
            kind(1001, "no traffic from the client within the idle timeout"),
            "timeout"
        );
        assert_eq!(kind(4000, "Server ping timed out"), "timeout");
        assert_eq!(
            kind(1008, "message rate over 10 per second for too long"),
            "policy"
        );
        assert_eq!(kind(1009, "message too big"), "protocol_error");
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

    fn name(queued: Result<Queued, mpsc::error::TryRecvError>) -> &'static str {
        match queued {
            Ok(Queued::Event(e)) => e.name,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn every_origin_is_reported_by_the_sender_and_held_by_a_standby() {
        use crate::presence::Origin;
        let (tx, mut rx) = mpsc::channel(16);
        let hooks = Arc::new(Webhooks {
            stats: DeliveryStats::new(),
            tx,
            dropped: AtomicU64::new(0),
            handover: Mutex::new(Handover::standby(Duration::from_secs(60))),
        });
        // What the services' observer does with a channel's change.
        let report = |occupied, vacated, deltas: &[PresenceDelta]| {
            for event in channel_events("room", occupied, vacated, deltas) {
                hooks.push(event);
            }
        };
        let remote = PresenceDelta {
            user_id: Arc::from("bob"),
            origin: Origin::Remote {
                node: Arc::from("n2"),
                conn: crate::ids::ConnId(1),
            },
            info: None,
            change: MemberChange::Added,
        };
        report(true, false, std::slice::from_ref(&remote));
        assert!(rx.try_recv().is_err(), "a standby holds its events");
        hooks.set_sending(true, 0);
        assert_eq!(name(rx.try_recv()), "channel_occupied");
        assert_eq!(name(rx.try_recv()), "member_added");
        let local = PresenceDelta {
            origin: Origin::Local(crate::ids::ConnId(2)),
            user_id: Arc::from("carol"),
            change: MemberChange::Removed,
            ..remote
        };
        report(false, true, &[local]);
        assert_eq!(name(rx.try_recv()), "member_removed");
        assert_eq!(name(rx.try_recv()), "channel_vacated");
    }
}
