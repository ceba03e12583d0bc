//! The PostgreSQL transport, for teams that run PostgreSQL and nothing
//! else: frames go out with `pg_notify` on the channel `<prefix>_cluster`
//! and come back through a `LISTEN` connection. PostgreSQL delivers a
//! notification to every listening session (the sender's own included) in
//! commit order, so one node's frames arrive in the order it sent them.
//!
//! A NOTIFY payload is at most 8,000 bytes. A larger frame is stored in
//! the table `<prefix>_frames` and the notification carries `@<row id>`;
//! receivers read the row before handing on the next frame (so the order
//! holds), and rows older than [`FRAME_RETENTION`] are deleted. A row a
//! receiver could not read in time is a lost frame, which the replication
//! protocol repairs like any other.
//!
//! URLs: `postgres://[user[:password]@]host[:port]/database[?sslmode=…]`
//! (`postgresql://` too). `sslmode=require` connects with TLS, trusting the
//! platform's roots plus `--tls-ca-file`; the default `prefer` uses TLS
//! when the server offers it.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::bus::{Bus, BusEvent, Ended, TransportEnd, announce_up, batch};

/// Time allowed to connect, or to run one statement.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest frame sent in the notification itself (PostgreSQL's limit is
/// 8,000 bytes).
const MAX_NOTIFY_BYTES: usize = 7_900;
/// How long a stored large frame is kept for receivers to read.
const FRAME_RETENTION: Duration = Duration::from_secs(60);
/// How often old stored frames are deleted.
const CLEANUP_EVERY: Duration = Duration::from_secs(10);

/// Checks a `--bus` URL of PostgreSQL.
pub fn check_url(url: &str) -> Result<(), String> {
    parse(url).map(|_| ())
}

fn parse(url: &str) -> Result<Config, String> {
    Config::from_str(url).map_err(|e| {
        format!(
            "--bus {}: not a PostgreSQL URL ({e}); use postgres://user:password@host:5432/database",
            crate::http_client::redact_password(url)
        )
    })
}

/// A quoted SQL identifier: `<prefix>_<name>` (the prefix is checked to be
/// letters, digits, `-` and `_`, so quoting is all it needs).
pub fn identifier(prefix: &str, name: &str) -> String {
    format!("\"{prefix}_{name}\"")
}

/// How to reach the server: its settings and whether to speak TLS.
#[derive(Clone)]
pub struct Target {
    config: Config,
    tls: Option<MakeRustlsConnect>,
    described: String,
}

impl Target {
    /// The target of `url`, trusting `ca_file`'s roots too for TLS.
    pub fn new(url: &str, ca_file: Option<&Path>) -> Result<Target, String> {
        let mut config = parse(url)?;
        config
            .connect_timeout(IO_TIMEOUT)
            .keepalives_idle(Duration::from_secs(5))
            .application_name("rollcall");
        let tls = match config.get_ssl_mode() {
            SslMode::Disable => None,
            _ => {
                let tls = crate::tls::client_config(ca_file)?;
                Some(MakeRustlsConnect::new((*tls).clone()))
            }
        };
        Ok(Target {
            config,
            tls,
            described: crate::http_client::redact_password(url),
        })
    }

    /// The URL without its password.
    pub fn describe(&self) -> &str {
        &self.described
    }

    /// A connected client; its connection runs on a task that hands
    /// notifications to `notify` (if given) and ends with the connection
    /// (dropping `notify`'s sender tells the caller).
    pub async fn connect(
        &self,
        notify: Option<mpsc::UnboundedSender<String>>,
    ) -> Result<Client, String> {
        let what = format!("PostgreSQL at {}", self.described);
        match &self.tls {
            Some(tls) => {
                let (client, conn) = timed(&what, self.config.connect(tls.clone())).await?;
                tokio::spawn(drive(conn, notify));
                Ok(client)
            }
            None => {
                let (client, conn) = timed(&what, self.config.connect(NoTls)).await?;
                tokio::spawn(drive(conn, notify));
                Ok(client)
            }
        }
    }
}

/// Polls a connection until it ends, handing notifications on.
async fn drive<S, T>(
    mut conn: tokio_postgres::Connection<S, T>,
    notify: Option<mpsc::UnboundedSender<String>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    while let Some(message) = messages.next().await {
        match message {
            Ok(AsyncMessage::Notification(n)) => {
                if let Some(tx) = &notify
                    && tx.send(n.payload().to_string()).is_err()
                {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "a PostgreSQL connection ended");
                return;
            }
        }
    }
}

/// Runs `fut` within [`IO_TIMEOUT`]; errors say `what` failed.
pub async fn timed<T>(
    what: &str,
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(IO_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {}", describe(&e))),
        Err(_) => Err(format!("{what}: no answer within {IO_TIMEOUT:?}")),
    }
}

/// A PostgreSQL error with the server's own message when there is one.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let text = e.to_string();
            match std::error::Error::source(e) {
                Some(source) => format!("{text}: {source}"),
                None => text,
            }
        }
    }
}

/// Runs a statement that creates something if it is missing; another
/// node creating it at the same moment is not an error.
pub async fn create_if_missing(client: &Client, sql: &str) -> Result<(), String> {
    match timed("create table", client.batch_execute(sql)).await {
        Ok(()) => Ok(()),
        // unique_violation / duplicate_table: a concurrent CREATE won.
        Err(e) if e.contains("(23505)") || e.contains("(42P07)") => Ok(()),
        Err(e) => Err(e),
    }
}

/// The PostgreSQL bus.
pub struct PostgresBus {
    target: Target,
    channel: String,
    frames: String,
}

impl PostgresBus {
    /// A bus on the channel `<prefix>_cluster` of the server at `url`,
    /// trusting `ca_file`'s roots too for TLS.
    pub fn new(url: &str, prefix: &str, ca_file: Option<&Path>) -> Result<Self, String> {
        Ok(PostgresBus {
            target: Target::new(url, ca_file)?,
            channel: format!("{prefix}_{}", super::BUS_CHANNEL),
            frames: identifier(prefix, "frames"),
        })
    }
}

impl Bus for PostgresBus {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn describe(&self) -> String {
        self.target.described.clone()
    }

    fn start(self: Box<Self>, end: TransportEnd) {
        let described = self.target.described.clone();
        tokio::spawn(super::bus::run_reconnecting(
            "PostgreSQL",
            described,
            *self,
            end,
        ));
    }
}

impl super::bus::Connect for PostgresBus {
    async fn session(&self, end: &mut TransportEnd) -> Result<Ended, String> {
        let (notify_tx, mut notifications) = mpsc::unbounded_channel();
        let listener = self.target.connect(Some(notify_tx)).await?;
        let publisher = self.target.connect(None).await?;
        // The stored frames are a hand-over, not data worth an fsync each.
        timed(
            "SET synchronous_commit",
            publisher.batch_execute("SET synchronous_commit = off"),
        )
        .await?;
        create_if_missing(
            &publisher,
            &format!(
                "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, body text NOT NULL, \
                 created_at timestamptz NOT NULL DEFAULT now())",
                self.frames
            ),
        )
        .await?;
        timed(
            "LISTEN",
            listener.batch_execute(&format!("LISTEN \"{}\"", self.channel)),
        )
        .await?;
        let insert = timed(
            "prepare",
            publisher.prepare(&format!(
                "INSERT INTO {} (body) VALUES ($1) RETURNING id",
                self.frames
            )),
        )
        .await?;
        let fetch = timed(
            "prepare",
            publisher.prepare(&format!("SELECT body FROM {} WHERE id = $1", self.frames)),
        )
        .await?;
        let notify = timed(
            "prepare",
            publisher.prepare("SELECT pg_notify($1, payload) FROM unnest($2::text[]) WITH ORDINALITY AS t(payload, n) ORDER BY n"),
        )
        .await?;
        let cleanup = format!(
            "DELETE FROM {} WHERE created_at < now() - interval '{} seconds'",
            self.frames,
            FRAME_RETENTION.as_secs()
        );
        if !announce_up(end) {
            return Ok(Ended::Stop);
        }
        let mut cleanup_timer = tokio::time::interval(CLEANUP_EVERY);
        loop {
            tokio::select! {
                Some(reason) = end.reset.recv() => return Ok(Ended::Lost(reason)),
                payload = notifications.recv() => {
                    let Some(payload) = payload else {
                        return Ok(Ended::Lost("the LISTEN connection closed".into()));
                    };
                    let frame = match payload.strip_prefix('@').map(str::parse::<i64>) {
                        None => payload.into_bytes(),
                        Some(Ok(id)) => {
                            let rows = timed("read a stored frame", publisher.query(&fetch, &[&id])).await?;
                            match rows.first().and_then(|r| r.try_get::<_, String>(0).ok()) {
                                Some(body) => body.into_bytes(),
                                // Cleaned up already: a lost frame.
                                None => continue,
                            }
                        }
                        Some(Err(_)) => continue,
                    };
                    if end.tx.send(BusEvent::Frame(frame)).is_err() {
                        return Ok(Ended::Stop);
                    }
                }
                _ = cleanup_timer.tick() => {
                    timed("delete old stored frames", publisher.batch_execute(&cleanup)).await?;
                }
                out = end.rx.recv() => {
                    let Some(first) = out else { return Ok(Ended::Stop) };
                    let batch = batch(first, end);
                    let mut payloads = Vec::with_capacity(batch.len());
                    let mut failed = None;
                    for out in &batch {
                        // Frames are JSON text; anything else cannot be a
                        // notification payload.
                        let Ok(text) = std::str::from_utf8(&out.frame) else {
                            continue;
                        };
                        if text.len() <= MAX_NOTIFY_BYTES {
                            payloads.push(text.to_string());
                            continue;
                        }
                        match timed("store a large frame", publisher.query_one(&insert, &[&text])).await {
                            Ok(row) => match row.try_get::<_, i64>(0) {
                                Ok(id) => payloads.push(format!("@{id}")),
                                Err(e) => { failed = Some(describe(&e)); break; }
                            },
                            Err(e) => { failed = Some(e); break; }
                        }
                    }
                    if failed.is_none() {
                        let result = timed("NOTIFY", publisher.execute(&notify, &[&self.channel, &payloads])).await;
                        failed = result.err();
                    }
                    let published = failed.is_none();
                    for out in batch {
                        out.finish(published);
                    }
                    if let Some(reason) = failed {
                        return Ok(Ended::Lost(reason));
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
    fn urls_are_checked_and_described_without_the_password() {
        assert!(check_url("postgres://rc:s3cret@127.0.0.1:5432/rollcall").is_ok());
        assert!(check_url("postgresql://localhost/db?sslmode=disable").is_ok());
        let err = check_url("postgres://rc:s3cret@127.0.0.1:notaport/db").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
        let target =
            Target::new("postgres://rc:s3cret@127.0.0.1/db?sslmode=disable", None).expect("valid");
        assert!(
            !target.describe().contains("s3cret"),
            "{}",
            target.describe()
        );
        assert!(target.tls.is_none());
        assert_eq!(identifier("two-a", "frames"), "\"two-a_frames\"");
    }
}
