//! A [`PrivacyStore`] in Redis, used when the node runs in a cluster
//! (`--bus redis://…`): every node reads and writes one hash, so a choice
//! stored through any node survives a restart of every node.
//!
//! # Format
//!
//! One hash, `<prefix>:privacy` (`--bus-prefix`, default `rollcall`), user id → `"1"` (visible) or `"0"` (hidden):
//!
//! ```text
//! HSET rollcall:privacy zed 0
//! HDEL rollcall:privacy zed        (back to --default-visible)
//! ```
//!
//! A save returns once Redis has acknowledged the write (with Redis
//! persistence configured as the operator chose: AOF `appendfsync always`
//! for no loss on a Redis crash). The other nodes learn of the change from
//! a `privacy` op on the cluster bus.
//!
//! If Redis is unreachable when the node starts, the node starts anyway
//! (as the cluster bus does) with no stored choices, says so in its log,
//! and loads the hash in the background once Redis answers
//! ([`PrivacyStore::late_load`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use redis::ConnectionLike;
use tokio::sync::oneshot;

use super::privacy::PrivacyStore;
use crate::cluster::redis::{self as redis_bus, RedisTarget};

/// The Redis hash that holds every user's choice, after `<prefix>:`.
pub const PRIVACY_KEY: &str = "privacy";

/// How long a connection attempt or a command may take.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The client for the `--bus` target (both boxed: clippy's variant-size
/// rule; there is one per node).
enum Client {
    Single(Box<redis::Client>),
    Cluster(Box<redis::cluster::ClusterClient>),
}

enum Conn {
    Single(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl Client {
    fn connect(&self) -> Result<Conn, String> {
        match self {
            Client::Single(c) => {
                let conn = c
                    .get_connection_with_timeout(TIMEOUT)
                    .map_err(|e| format!("cannot connect to Redis: {}", redis_bus::describe(&e)))?;
                conn.set_read_timeout(Some(TIMEOUT))
                    .and_then(|_| conn.set_write_timeout(Some(TIMEOUT)))
                    .map_err(|e| format!("cannot set Redis timeouts: {e}"))?;
                Ok(Conn::Single(conn))
            }
            Client::Cluster(c) => c
                .get_connection()
                .map(|c| Conn::Cluster(Box::new(c)))
                .map_err(|e| {
                    format!(
                        "cannot connect to Redis Cluster: {}",
                        redis_bus::describe(&e)
                    )
                }),
        }
    }
}

impl Conn {
    fn get(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Conn::Single(c) => c,
            Conn::Cluster(c) => &mut **c,
        }
    }
}

/// Privacy choices in a Redis hash (see the module doc).
pub struct RedisStore {
    client: Client,
    conn: Mutex<Option<Conn>>,
    late: Mutex<Option<oneshot::Receiver<HashMap<String, bool>>>>,
    describe: String,
    /// `<prefix>:privacy`.
    key: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.describe)
            .finish_non_exhaustive()
    }
}

/// Parses the hash's values: `"1"` visible, `"0"` hidden; anything else
/// is skipped with a warning.
fn parse_hash(raw: HashMap<String, String>, key: &str) -> HashMap<String, bool> {
    raw.into_iter()
        .filter_map(|(uid, v)| match v.as_str() {
            "1" => Some((uid, true)),
            "0" => Some((uid, false)),
            other => {
                tracing::warn!(%uid, value = %other, %key, "ignored a privacy value that is not 0 or 1");
                None
            }
        })
        .collect()
}

impl RedisStore {
    /// A store on the Redis of `url` (the `--bus` URL) under `prefix`
    /// (`--bus-prefix`), trusting `ca_file`'s roots too for TLS. Connects
    /// lazily.
    pub fn new(url: &str, prefix: &str, ca_file: Option<&std::path::Path>) -> Result<Self, String> {
        let roots = redis_bus::tls_roots(url, ca_file)?;
        let client = match RedisTarget::parse(url)? {
            RedisTarget::Single(u) => Client::Single(Box::new(
                redis_bus::single_client(&u, roots.as_deref())
                    .map_err(|e| format!("--bus: {e}"))?,
            )),
            RedisTarget::Cluster(urls) => Client::Cluster(Box::new(
                redis_bus::cluster_builder(&urls, roots.as_deref())
                    .connection_timeout(TIMEOUT)
                    .response_timeout(TIMEOUT)
                    .build()
                    .map_err(|e| format!("--bus: {e}"))?,
            )),
        };
        Ok(RedisStore {
            client,
            conn: Mutex::new(None),
            late: Mutex::new(None),
            describe: crate::cluster::redis::redact(url),
            key: format!("{prefix}:{PRIVACY_KEY}"),
        })
    }

    /// Runs `f` on a connection, reconnecting once if the cached one fails.
    fn with_conn<T>(
        &self,
        f: impl Fn(&mut dyn ConnectionLike) -> redis::RedisResult<T>,
    ) -> Result<T, String> {
        let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = String::new();
        for _ in 0..2 {
            if slot.is_none() {
                *slot = Some(self.client.connect()?);
            }
            let Some(conn) = slot.as_mut() else {
                continue;
            };
            match f(conn.get()) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    last = format!("Redis at {}: {e}", self.describe);
                    *slot = None;
                }
            }
        }
        Err(last)
    }

    fn read_all(&self) -> Result<HashMap<String, bool>, String> {
        let raw: HashMap<String, String> =
            self.with_conn(|c| redis::cmd("HGETALL").arg(&self.key).query(c))?;
        Ok(parse_hash(raw, &self.key))
    }
}

impl PrivacyStore for RedisStore {
    fn reread(&self) -> Result<Option<HashMap<String, bool>>, String> {
        self.read_all().map(Some)
    }

    fn load(&self) -> Result<HashMap<String, bool>, String> {
        match self.read_all() {
            Ok(map) => Ok(map),
            Err(e) => {
                let retry = RedisStore {
                    client: match &self.client {
                        Client::Single(c) => Client::Single(c.clone()),
                        Client::Cluster(c) => Client::Cluster(c.clone()),
                    },
                    conn: Mutex::new(None),
                    late: Mutex::new(None),
                    describe: self.describe.clone(),
                    key: self.key.clone(),
                };
                let later = super::privacy::load_later("Redis", &e, move || retry.read_all())?;
                *self.late.lock().unwrap_or_else(|p| p.into_inner()) = Some(later);
                Ok(HashMap::new())
            }
        }
    }

    fn save(&self, user_id: &str, visible: Option<bool>) -> Result<(), String> {
        match visible {
            Some(v) => self.with_conn(|c| {
                redis::cmd("HSET")
                    .arg(&self.key)
                    .arg(user_id)
                    .arg(if v { "1" } else { "0" })
                    .query::<()>(c)
            }),
            None => self.with_conn(|c| {
                redis::cmd("HDEL")
                    .arg(&self.key)
                    .arg(user_id)
                    .query::<()>(c)
            }),
        }
    }

    fn late_load(&self) -> Option<oneshot::Receiver<HashMap<String, bool>>> {
        self.late.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_values_are_0_or_1() {
        let raw = HashMap::from([
            ("zed".to_string(), "0".to_string()),
            ("amy".to_string(), "1".to_string()),
            ("odd".to_string(), "yes".to_string()),
        ]);
        let map = parse_hash(raw, "rollcall:privacy");
        assert_eq!(map.len(), 2);
        assert_eq!(map.get("zed"), Some(&false));
        assert_eq!(map.get("amy"), Some(&true));
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(RedisStore::new("http://x", "rollcall", None).is_err());
        assert!(RedisStore::new("redis://127.0.0.1:1", "rollcall", None).is_ok());
    }
}
