//! The NATS transport: frames go out with core NATS `PUB` on the subject
//! `<prefix>.cluster` (`--bus-prefix`) and come back through a
//! subscription to it on the same connection (NATS echoes a client's own
//! messages, and keeps one publisher's order on one connection).
//!
//! It only moves bytes and watches the link. Until a first connection
//! succeeds, [`super::bus::run_reconnecting`] retries with its backoff
//! (100 ms doubling to 2 s, with jitter); then the client (async-nats)
//! reconnects by itself with the same backoff and resubscribes. Its
//! connection events drive the link state: `Up` once connected (the
//! subscription is then written ahead of anything this node publishes),
//! `Down` on a disconnect. Frames queued while the link is down are
//! dropped (the replication protocol resyncs). A reset request (the engine
//! sees its own heartbeats stop) makes the client reconnect.
//!
//! URLs: `nats://[user:password@|token@]host[:port][,host2[:port2]…]`
//! (port 4222 by default; several hosts are seeds of one NATS cluster),
//! `tls://…` for TLS, trusting the system's roots plus `--tls-ca-file`'s
//! (also used when a `nats://` server asks for TLS).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{ConnectOptions, Event, ServerAddr, Subject};
use futures_util::StreamExt;
use rand::Rng;
use tokio::sync::mpsc;

use super::bus::{BACKOFF_MAX, Bus, BusEvent, Ended, Outgoing, TransportEnd, announce_up, batch};

/// Time allowed to connect, or to publish and flush one batch.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// First wait between the client's reconnection attempts (the first retry
/// is at once), as [`super::bus::run_reconnecting`]'s.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// How often the client pings the server: two unanswered pings take a
/// half-open connection down.
const PING_INTERVAL: Duration = Duration::from_secs(5);

/// How a NATS URL authenticates.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// No user info.
    None,
    /// `user:password@` (percent-decoded).
    UserPassword(String, String),
    /// `token@` (percent-decoded).
    Token(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::UserPassword(user, _) => write!(f, "UserPassword({user:?}, ***)"),
            Credentials::Token(_) => f.write_str("Token(***)"),
        }
    }
}

/// A parsed `--bus` URL of the NATS engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsTarget {
    /// `scheme://host:port` of each seed server, without credentials.
    pub servers: Vec<String>,
    /// What the URL's user info says.
    pub credentials: Credentials,
    /// `tls://`: TLS required.
    pub tls: bool,
}

fn decode(part: &str, url: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("--bus {}: the user info is not UTF-8", redact(url)))
}

impl NatsTarget {
    /// Parses a `--bus` URL. Errors say what is wrong with it.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let shown = redact(url);
        let form = "use nats://[user:password@]host:port[,host2:port2] or tls://…";
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("--bus {shown:?} is not a URL; {form}"))?;
        let tls = match scheme {
            "nats" => false,
            "tls" => true,
            _ => return Err(format!("--bus {shown}: unknown scheme {scheme:?}; {form}")),
        };
        let (userinfo, hosts) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
        if hosts.contains(['/', '?', '#']) {
            return Err(format!(
                "--bus {shown}: a NATS URL has no path or query; {form}"
            ));
        }
        let credentials = match userinfo {
            None => Credentials::None,
            Some("") => {
                return Err(format!("--bus {shown}: empty user info before '@'; {form}"));
            }
            Some(u) => match u.split_once(':') {
                Some((user, password)) => {
                    Credentials::UserPassword(decode(user, url)?, decode(password, url)?)
                }
                None => Credentials::Token(decode(u, url)?),
            },
        };
        let mut servers = Vec::new();
        for host in hosts.split(',').map(str::trim) {
            if host.is_empty() {
                return Err(format!("--bus {shown}: names an empty host; {form}"));
            }
            let server = format!("{scheme}://{host}");
            let addr: ServerAddr = server
                .parse()
                .map_err(|e| format!("--bus {shown}: {host:?}: {e}"))?;
            if addr.host().is_empty() {
                return Err(format!("--bus {shown}: {host:?} names no host; {form}"));
            }
            servers.push(server);
        }
        Ok(NatsTarget {
            servers,
            credentials,
            tls,
        })
    }

    /// The seed servers for the client.
    fn addrs(&self) -> Vec<ServerAddr> {
        // Each was parsed in [`NatsTarget::parse`].
        self.servers.iter().filter_map(|s| s.parse().ok()).collect()
    }

    /// Client options: credentials, TLS with `tls`'s roots, timeouts, and
    /// this module's reconnection backoff.
    pub fn options(&self, tls: &rustls::ClientConfig) -> ConnectOptions {
        let mut options = ConnectOptions::new()
            .name("rollcall")
            .connection_timeout(IO_TIMEOUT)
            .request_timeout(Some(IO_TIMEOUT))
            .ping_interval(PING_INTERVAL)
            .reconnect_delay_callback(reconnect_delay)
            .tls_client_config(tls.clone());
        match &self.credentials {
            Credentials::None => {}
            Credentials::UserPassword(user, password) => {
                options = options.user_and_password(user.clone(), password.clone());
            }
            Credentials::Token(token) => options = options.token(token.clone()),
        }
        if self.tls {
            options = options.require_tls(true);
        }
        options
    }

    /// Connects once (no retry): an error if no server answers.
    pub async fn connect(&self, tls: &rustls::ClientConfig) -> Result<async_nats::Client, String> {
        self.options(tls)
            .connect(self.addrs())
            .await
            .map_err(|e| describe(&e.to_string()))
    }
}

/// Checks a `--bus` URL of this engine.
pub fn check_url(url: &str) -> Result<(), String> {
    NatsTarget::parse(url).map(|_| ())
}

/// The URL with any password or token replaced by `***`, for logs.
pub fn redact(url: &str) -> String {
    crate::http_client::redact_password(url)
}

/// A NATS error, with what to do about the common ones.
pub fn describe(e: &str) -> String {
    if e.contains("UnknownIssuer") {
        format!(
            "{e} (the NATS server's certificate is not trusted; pass --tls-ca-file with the CA certificate that signed it)"
        )
    } else if e.to_ascii_lowercase().contains("authorization") {
        format!("{e} (check the user and password or token in --bus)")
    } else {
        e.to_string()
    }
}

/// 0 for the first attempt, then 100 ms doubling to 2 s, ±25%.
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = (attempts - 2).min(5) as u32;
    let base = (BACKOFF_MIN * 2u32.pow(exp)).min(BACKOFF_MAX);
    base.mul_f64(rand::rng().random_range(0.75..1.25))
}

/// The NATS bus.
#[derive(Debug)]
pub struct NatsBus {
    target: NatsTarget,
    subject: Subject,
    described: String,
    tls: Arc<rustls::ClientConfig>,
}

impl NatsBus {
    /// A bus on the subject `<prefix>.cluster` of the NATS server(s) at
    /// `url` (see [`NatsTarget::parse`]), trusting `ca_file`'s roots too
    /// for TLS.
    pub fn new(url: &str, prefix: &str, ca_file: Option<&Path>) -> Result<Self, String> {
        Ok(NatsBus {
            target: NatsTarget::parse(url)?,
            subject: Subject::from(format!("{prefix}.{}", super::BUS_CHANNEL)),
            described: redact(url.trim()),
            tls: crate::tls::client_config(ca_file)?,
        })
    }
}

impl Bus for NatsBus {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn describe(&self) -> String {
        self.described.clone()
    }

    fn start(self: Box<Self>, end: TransportEnd) {
        let described = self.described.clone();
        tokio::spawn(super::bus::run_reconnecting("NATS", described, *self, end));
    }
}

/// One client, connected or reconnecting.
struct Session<'a> {
    bus: &'a NatsBus,
    end: &'a mut TransportEnd,
    client: async_nats::Client,
    up: bool,
    /// Failed connection attempts since the link was last up.
    failures: u64,
}

impl super::bus::Connect for NatsBus {
    /// One client: the first connection is made here (an error says why it
    /// failed); the client then reconnects on its own, its events taking
    /// the link down and up, until it gives up or the engine goes.
    async fn session(&self, end: &mut TransportEnd) -> Result<Ended, String> {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let options = self.target.options(&self.tls).event_callback(move |event| {
            let tx = events_tx.clone();
            async move {
                let _ = tx.send(event);
            }
        });
        let client = options
            .connect(self.target.addrs())
            .await
            .map_err(|e| describe(&e.to_string()))?;
        // Written first on every (re)connection, so this node's frames come
        // back.
        let mut sub = client
            .subscribe(self.subject.clone())
            .await
            .map_err(|e| format!("SUB {}: {e}", self.subject))?;
        if !announce_up(end) {
            return Ok(Ended::Stop);
        }
        let mut s = Session {
            bus: self,
            end,
            client,
            up: true,
            failures: 0,
        };
        loop {
            tokio::select! {
                Some(reason) = s.end.reset.recv() => s.reset(reason).await,
                event = events.recv() => match event {
                    Some(event) => {
                        if !s.on_event(event) {
                            return Ok(Ended::Stop);
                        }
                    }
                    None => return Ok(Ended::Lost("the client's events stopped".into())),
                },
                msg = sub.next() => match msg {
                    Some(msg) => {
                        if s.end.tx.send(BusEvent::Frame(msg.payload.to_vec())).is_err() {
                            return Ok(Ended::Stop);
                        }
                    }
                    None => return Ok(Ended::Lost("the subscription ended".into())),
                },
                out = s.end.rx.recv() => match out {
                    None => return Ok(Ended::Stop),
                    Some(out) if !s.up => out.finish(false),
                    Some(first) => {
                        let batch = batch(first, s.end);
                        s.publish(batch).await;
                    }
                },
            }
        }
    }
}

impl Session<'_> {
    fn down(&mut self, reason: String) -> bool {
        self.up = false;
        self.end.tx.send(BusEvent::Down(reason)).is_ok()
    }

    /// Applies a client event; false if the engine is gone.
    fn on_event(&mut self, event: Event) -> bool {
        let described = &self.bus.described;
        match event {
            // The first connection's event comes after the session went up.
            Event::Connected if self.up => true,
            Event::Connected => {
                tracing::info!(bus = %described, attempts = self.failures, "connected to NATS again");
                self.up = true;
                self.failures = 0;
                announce_up(self.end)
            }
            Event::Disconnected if self.up => {
                self.failures = 1;
                tracing::warn!(bus = %described, "lost the NATS bus; reconnecting (local clients are still served)");
                self.down("disconnected from NATS".into())
            }
            Event::ClientError(e) if !self.up => {
                let reason = describe(&e.to_string());
                self.failures += 1;
                if self.failures.is_multiple_of(20) {
                    tracing::warn!(bus = %described, %reason, attempts = self.failures, "still cannot reach NATS; retrying");
                } else {
                    tracing::debug!(bus = %described, %reason, "NATS connect attempt failed");
                }
                true
            }
            Event::ServerError(e) => {
                // E.g. a permissions violation on the subject: the link
                // then looks up but carries nothing, which the engine
                // notices.
                tracing::warn!(bus = %described, error = %e, "the NATS server reported an error");
                true
            }
            Event::SlowConsumer(_) => {
                tracing::warn!(bus = %described, "frames from NATS were dropped (this node read too slowly); the nodes resync");
                true
            }
            Event::LameDuckMode => {
                tracing::info!(bus = %described, "the NATS server is shutting down (lame duck mode); the client will move");
                true
            }
            other => {
                tracing::debug!(bus = %described, event = %other, "NATS client event");
                true
            }
        }
    }

    /// The engine says the link carries nothing: reconnect.
    async fn reset(&mut self, reason: String) {
        if !self.up {
            return;
        }
        tracing::warn!(bus = %self.bus.described, %reason, "reconnecting to NATS");
        let _ = self.down(reason);
        self.failures = 1;
        let _ = tokio::time::timeout(IO_TIMEOUT, self.client.force_reconnect()).await;
    }

    /// Publishes a batch and flushes it to the socket; done = true once
    /// flushed.
    async fn publish(&mut self, mut batch: Vec<Outgoing>) {
        let subject = &self.bus.subject;
        let client = &self.client;
        let mut ok = vec![true; batch.len()];
        let sent = tokio::time::timeout(IO_TIMEOUT, async {
            for (i, out) in batch.iter_mut().enumerate() {
                let frame = bytes::Bytes::from(std::mem::take(&mut out.frame));
                let len = frame.len();
                if let Err(e) = client.publish(subject.clone(), frame).await {
                    ok[i] = false;
                    if e.kind() == async_nats::client::PublishErrorKind::MaxPayloadExceeded {
                        tracing::error!(
                            bytes = len,
                            max_payload = client.server_info().max_payload,
                            "a cluster frame is larger than the NATS server's max_payload and was dropped; raise max_payload in nats-server's configuration"
                        );
                    } else {
                        return Err(format!("PUB: {e}"));
                    }
                }
            }
            client.flush().await.map_err(|e| format!("flush: {e}"))
        })
        .await
        .unwrap_or_else(|_| Err(format!("publishing took over {IO_TIMEOUT:?}")));
        let failed = sent.is_err();
        for (out, ok) in batch.into_iter().zip(ok) {
            out.finish(ok && !failed);
        }
        if let Err(reason) = sent {
            tracing::warn!(bus = %self.bus.described, %reason, "cannot publish on NATS; reconnecting");
            let _ = self.down(reason);
            self.failures = 1;
            let _ = tokio::time::timeout(IO_TIMEOUT, self.client.force_reconnect()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_checked() {
        let t = NatsTarget::parse("nats://127.0.0.1:4222").unwrap();
        assert_eq!(t.servers, ["nats://127.0.0.1:4222"]);
        assert_eq!(t.credentials, Credentials::None);
        assert!(!t.tls);
        let t = NatsTarget::parse("tls://app:p%40ss@n1:4222,n2/").unwrap();
        assert_eq!(t.servers, ["tls://n1:4222", "tls://n2"]);
        assert_eq!(
            t.credentials,
            Credentials::UserPassword("app".into(), "p@ss".into())
        );
        assert!(t.tls);
        let t = NatsTarget::parse("nats://s3cr3t@h").unwrap();
        assert_eq!(t.credentials, Credentials::Token("s3cr3t".into()));
        for (bad, says) in [
            ("http://h", "unknown scheme"),
            ("nats://", "empty host"),
            ("nats://a,,b", "empty host"),
            ("nats://h:99999", "h:99999"),
            ("nats://h/sub", "no path"),
            ("nats://@h", "empty user info"),
            ("nats://u:pw@:4222", "\":4222\""),
        ] {
            let err = NatsTarget::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(!err.contains("pw"), "{bad}: {err}");
        }
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(redact("nats://app:pw@h:1,h:2"), "nats://app:***@h:1,h:2");
        assert_eq!(redact("tls://s3cr3t@h:1"), "tls://***@h:1");
        assert_eq!(redact("nats://h:1"), "nats://h:1");
        let bus = NatsBus::new("nats://tok@127.0.0.1:4222", "rollcall", None).unwrap();
        assert_eq!(bus.describe(), "nats://***@127.0.0.1:4222");
        assert_eq!(bus.kind(), "nats");
        assert_eq!(bus.subject.as_str(), "rollcall.cluster");
        assert!(!format!("{bus:?}").contains("tok@"));
    }

    #[test]
    fn reconnect_delays_grow_to_the_cap() {
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        let d = reconnect_delay(2);
        assert!(d >= Duration::from_millis(75) && d <= Duration::from_millis(125));
        let d = reconnect_delay(50);
        assert!(d >= BACKOFF_MAX.mul_f64(0.75) && d <= BACKOFF_MAX.mul_f64(1.25));
    }
}
