//! The Redis transport: frames go out with `PUBLISH` on one channel and
//! come back through a `SUBSCRIBE` connection; on Redis Cluster with
//! `SPUBLISH`/`SSUBSCRIBE` (sharded pub/sub) over RESP3.
//!
//! It only moves bytes and watches the link. Any error (connect, subscribe,
//! publish, the subscription closing) takes the link down: it tells the
//! engine, drops the frames queued meanwhile (the replication protocol
//! resyncs), and reconnects with exponential backoff (100 ms doubling to
//! 2 s, with jitter) for as long as the node runs.
//!
//! URLs: `redis://[user:password@]host:port[/db]`, `rediss://…` (TLS with
//! the system's root certificates plus those of `--tls-ca-file`), and for
//! Redis Cluster
//! `redis+cluster://[user:password@]host1:port1,host2:port2` (or
//! `rediss+cluster://…`), which lists seed nodes.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::bus::{Bus, BusEvent, Ended, TransportEnd, announce_up, batch};

/// Time allowed to connect, subscribe, or publish one batch.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the Redis bus connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisTarget {
    /// One Redis server (`redis://` or `rediss://` URL).
    Single(String),
    /// Seed nodes of a Redis Cluster (`redis://` or `rediss://` URLs).
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// Parses a `--bus` URL. Errors say what is wrong with it.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("--bus {url:?} is not a URL"))?;
        let target = match scheme {
            "redis" | "rediss" => RedisTarget::Single(url.to_string()),
            "redis+cluster" | "rediss+cluster" => {
                let base = scheme.trim_end_matches("+cluster");
                let (userinfo, hosts) = match rest.rsplit_once('@') {
                    Some((u, h)) => (format!("{u}@"), h),
                    None => (String::new(), rest),
                };
                let (hosts, path) = match hosts.split_once('/') {
                    Some((h, p)) => (h, format!("/{p}")),
                    None => (hosts, String::new()),
                };
                let nodes: Vec<String> = hosts
                    .split(',')
                    .filter(|h| !h.trim().is_empty())
                    .map(|h| format!("{base}://{userinfo}{}{path}", h.trim()))
                    .collect();
                if nodes.is_empty() {
                    return Err(format!(
                        "--bus {url:?} names no cluster node; use redis+cluster://host1:port1,host2:port2"
                    ));
                }
                RedisTarget::Cluster(nodes)
            }
            _ => {
                return Err(format!(
                    "--bus {url:?}: unknown scheme {scheme:?}; use memory, redis://, rediss://, redis+cluster:// or rediss+cluster://"
                ));
            }
        };
        // Let the client check the rest (host, port, db, credentials).
        match &target {
            RedisTarget::Single(u) => {
                redis::Client::open(u.as_str()).map_err(|e| format!("--bus {}: {e}", redact(u)))?;
            }
            RedisTarget::Cluster(nodes) => {
                redis::cluster::ClusterClient::new(nodes.iter().map(String::as_str))
                    .map_err(|e| format!("--bus {}: {e}", redact(url)))?;
            }
        }
        Ok(target)
    }
}

/// The URL with any password replaced by `***`, for logs.
pub fn redact(url: &str) -> String {
    crate::http_client::redact_password(url)
}

/// For a `rediss://` URL (or `rediss+cluster://`) and a `--tls-ca-file`,
/// the PEM roots to give the redis client (the platform's plus the
/// file's); None when the client's default (the platform's) will do.
pub fn tls_roots(url: &str, ca_file: Option<&Path>) -> Result<Option<Vec<u8>>, String> {
    match ca_file {
        Some(path) if url.trim_start().starts_with("rediss") => {
            crate::tls::roots_pem(path).map(Some)
        }
        _ => Ok(None),
    }
}

fn certs(roots: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(roots.to_vec()),
    }
}

/// A client for one server, trusting `roots` (from [`tls_roots`]) if any.
pub fn single_client(url: &str, roots: Option<&[u8]>) -> redis::RedisResult<redis::Client> {
    match roots {
        Some(roots) => redis::Client::build_with_tls(url, certs(roots)),
        None => redis::Client::open(url),
    }
}

/// A Redis Cluster client builder for the seed `nodes`, trusting `roots`
/// (from [`tls_roots`]) if any.
pub fn cluster_builder(
    nodes: &[String],
    roots: Option<&[u8]>,
) -> redis::cluster::ClusterClientBuilder {
    let builder = redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str));
    match roots {
        Some(roots) => builder.certs(certs(roots)),
        None => builder,
    }
}

/// A redis error, with what to do when it is an untrusted certificate.
pub fn describe(e: &redis::RedisError) -> String {
    let text = e.to_string();
    if text.contains("UnknownIssuer") {
        format!(
            "{text} (the Redis server's certificate is not trusted; pass --tls-ca-file with the CA certificate that signed it)"
        )
    } else {
        text
    }
}

/// The Redis bus.
#[derive(Debug)]
pub struct RedisBus {
    target: RedisTarget,
    channel: String,
    described: String,
    /// PEM roots for `rediss://` with `--tls-ca-file` (see [`tls_roots`]).
    roots: Option<Vec<u8>>,
}

impl RedisBus {
    /// A bus on `channel` of the Redis server(s) at `url` (see
    /// [`RedisTarget::parse`]), trusting `ca_file`'s roots too for TLS.
    pub fn new(url: &str, channel: &str, ca_file: Option<&Path>) -> Result<Self, String> {
        Ok(RedisBus {
            target: RedisTarget::parse(url)?,
            channel: channel.to_string(),
            described: redact(url),
            roots: tls_roots(url, ca_file)?,
        })
    }
}

impl Bus for RedisBus {
    fn kind(&self) -> &'static str {
        match self.target {
            RedisTarget::Single(_) => "redis",
            RedisTarget::Cluster(_) => "redis-cluster",
        }
    }

    fn describe(&self) -> String {
        self.described.clone()
    }

    fn start(self: Box<Self>, end: TransportEnd) {
        let described = self.described.clone();
        tokio::spawn(super::bus::run_reconnecting("Redis", described, *self, end));
    }
}

impl super::bus::Connect for RedisBus {
    async fn session(&self, end: &mut TransportEnd) -> Result<Ended, String> {
        match &self.target {
            RedisTarget::Single(url) => {
                single_session(url, self.roots.as_deref(), &self.channel, end).await
            }
            RedisTarget::Cluster(nodes) => {
                cluster_session(nodes, self.roots.as_deref(), &self.channel, end).await
            }
        }
    }
}

async fn timed<T>(
    what: &str,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(IO_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {}", describe(&e))),
        Err(_) => Err(format!("{what}: no answer within {IO_TIMEOUT:?}")),
    }
}

/// One connected session on a single Redis server.
async fn single_session(
    url: &str,
    roots: Option<&[u8]>,
    channel: &str,
    end: &mut TransportEnd,
) -> Result<Ended, String> {
    let client = single_client(url, roots).map_err(|e| e.to_string())?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(IO_TIMEOUT))
        .set_response_timeout(Some(IO_TIMEOUT));
    let mut publisher = timed(
        "connect",
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await?;
    let pubsub = timed("connect for SUBSCRIBE", client.get_async_pubsub()).await?;
    let (mut sink, mut stream) = pubsub.split();
    timed("SUBSCRIBE", sink.subscribe(channel)).await?;
    if !announce_up(end) {
        return Ok(Ended::Stop);
    }
    loop {
        tokio::select! {
            Some(reason) = end.reset.recv() => return Ok(Ended::Lost(reason)),
            msg = stream.next() => match msg {
                Some(msg) => {
                    if end.tx.send(BusEvent::Frame(msg.get_payload_bytes().to_vec())).is_err() {
                        return Ok(Ended::Stop);
                    }
                }
                None => return Ok(Ended::Lost("the SUBSCRIBE connection closed".into())),
            },
            out = end.rx.recv() => {
                let Some(first) = out else {
                    return Ok(Ended::Stop);
                };
                let batch = batch(first, end);
                let mut pipe = redis::pipe();
                for out in &batch {
                    pipe.cmd("PUBLISH").arg(channel).arg(&out.frame[..]).ignore();
                }
                let result = timed("PUBLISH", pipe.query_async::<()>(&mut publisher)).await;
                let ok = result.is_ok();
                for out in batch {
                    out.finish(ok);
                }
                if let Err(e) = result {
                    return Ok(Ended::Lost(e));
                }
            }
        }
    }
}

/// One connected session on a Redis Cluster (sharded pub/sub, RESP3).
async fn cluster_session(
    nodes: &[String],
    roots: Option<&[u8]>,
    channel: &str,
    end: &mut TransportEnd,
) -> Result<Ended, String> {
    let (push_tx, mut push_rx) = mpsc::unbounded_channel::<redis::PushInfo>();
    let client = cluster_builder(nodes, roots)
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(push_tx)
        .connection_timeout(IO_TIMEOUT)
        .response_timeout(IO_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let mut conn = timed("connect", client.get_async_connection()).await?;
    // Fails while the master serving the channel's slot is down.
    let what = format!("SSUBSCRIBE {channel} (on the master serving its slot)");
    timed(&what, conn.ssubscribe(channel)).await?;
    if !announce_up(end) {
        return Ok(Ended::Stop);
    }
    loop {
        tokio::select! {
            Some(reason) = end.reset.recv() => return Ok(Ended::Lost(reason)),
            push = push_rx.recv() => match push {
                Some(push) => match push.kind {
                    redis::PushKind::SMessage | redis::PushKind::Message => {
                        if let Some(redis::Value::BulkString(payload)) = push.data.into_iter().nth(1)
                            && end.tx.send(BusEvent::Frame(payload)).is_err()
                        {
                            return Ok(Ended::Stop);
                        }
                    }
                    redis::PushKind::Disconnection => {
                        // Maybe not the channel's shard, but frames may have been lost:
                        // reconnect and let the nodes resync.
                        return Ok(Ended::Lost("a Redis Cluster node closed its connection".into()));
                    }
                    // This node never unsubscribes: the shard dropped the
                    // subscription because the channel's slot moved (resharding,
                    // failover). Subscribe again where the slot now lives.
                    redis::PushKind::SUnsubscribe | redis::PushKind::Unsubscribe => {
                        return Ok(Ended::Lost(
                            "the Redis Cluster node dropped the bus subscription (the channel's slot moved)".into(),
                        ));
                    }
                    _ => {}
                },
                None => return Ok(Ended::Lost("the cluster connection closed".into())),
            },
            out = end.rx.recv() => {
                let Some(first) = out else {
                    return Ok(Ended::Stop);
                };
                // One at a time: every frame goes to the channel's shard in order.
                for out in batch(first, end) {
                    let result = timed(
                        "SPUBLISH",
                        redis::cmd("SPUBLISH").arg(channel).arg(&out.frame[..]).query_async::<i64>(&mut conn),
                    )
                    .await;
                    let ok = result.is_ok();
                    out.finish(ok);
                    if let Err(e) = result {
                        return Ok(Ended::Lost(e));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_checked() {
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:6379"),
            Ok(RedisTarget::Single("redis://127.0.0.1:6379".into()))
        );
        assert_eq!(
            RedisTarget::parse("rediss+cluster://u:pw@10.0.0.1:7000,10.0.0.2:7001/0"),
            Ok(RedisTarget::Cluster(vec![
                "rediss://u:pw@10.0.0.1:7000/0".into(),
                "rediss://u:pw@10.0.0.2:7001/0".into()
            ]))
        );
        let err = RedisTarget::parse("http://x").unwrap_err();
        assert!(err.contains("unknown scheme"), "{err}");
        assert!(RedisTarget::parse("redis+cluster://").is_err());
        assert!(RedisTarget::parse("localhost:6379").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://:s3cret@127.0.0.1:6379/1"),
            "redis://:***@127.0.0.1:6379/1"
        );
        assert_eq!(redact("rediss://app:pw@h:1"), "rediss://app:***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
