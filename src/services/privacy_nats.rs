//! A [`PrivacyStore`] in NATS JetStream, used when the node runs in a
//! cluster on NATS (`--bus nats://…`): every node reads and writes one
//! key-value bucket, so a choice stored through any node survives a
//! restart of every node. The server needs JetStream (`nats-server -js`).
//!
//! # Format
//!
//! The bucket `<prefix>_privacy` (`--bus-prefix`, default `rollcall`;
//! created with history 1 if missing). KV keys allow only
//! `[-/_=.a-zA-Z0-9]`, so a key is the user id's UTF-8 bytes in base64url
//! without padding (`zed` → `emVk`); the value is `"1"` (visible) or
//! `"0"` (hidden); a delete forgets the choice:
//!
//! ```text
//! nats kv put rollcall_privacy emVk 0
//! nats kv del rollcall_privacy emVk     (back to --default-visible)
//! ```
//!
//! A save returns once JetStream has acknowledged the write (durable as
//! the server's `sync_interval` says; `always` for no loss on a crash).
//! The other nodes learn of the change from a `privacy` op on the bus.
//!
//! The blocking methods run the async client on a small runtime of the
//! store's own (one worker thread), so they can be called from any thread.
//! If NATS is unreachable when the node starts, the node starts anyway
//! with no stored choices, says so in its log, and loads the bucket in the
//! background once NATS answers ([`PrivacyStore::late_load`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{kv, stream};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::oneshot;

use super::privacy::PrivacyStore;
use crate::cluster::nats::{self as nats_bus, NatsTarget};

/// The bucket that holds every user's choice, after `<prefix>_`.
pub const PRIVACY_BUCKET: &str = "privacy";

/// How long a save may take, connecting included.
const SAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long reading every choice may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one JetStream request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a failed start-up load is retried.
const RETRY: Duration = Duration::from_secs(1);

/// Reads of values at once while loading.
const PARALLEL_READS: usize = 32;

/// The bucket's key for `user_id`.
pub fn key_of(user_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(user_id.as_bytes())
}

/// The user id a key stands for, if it is one of [`key_of`]'s.
pub fn user_of(key: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(key).ok()?;
    String::from_utf8(bytes).ok()
}

/// What the async side shares with the blocking one.
struct Inner {
    target: NatsTarget,
    tls: Arc<rustls::ClientConfig>,
    bucket: String,
    describe: String,
    /// The bucket and its client, once reached (the client then
    /// reconnects by itself).
    open: tokio::sync::Mutex<Option<(async_nats::Client, kv::Store)>>,
}

/// How long an operation waits for a reconnecting client (after an outage
/// the bus may be back, and ask for a reread, a moment before it).
const RECONNECT_WAIT: Duration = Duration::from_secs(3);

impl Inner {
    /// The bucket, connecting (and creating it) on first use.
    async fn store(&self) -> Result<kv::Store, String> {
        let mut slot = self.open.lock().await;
        if let Some((client, store)) = slot.as_ref() {
            let deadline = tokio::time::Instant::now() + RECONNECT_WAIT;
            while client.connection_state() != State::Connected
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            return Ok(store.clone());
        }
        let client = self
            .target
            .connect(&self.tls)
            .await
            .map_err(|e| format!("cannot connect to NATS at {}: {e}", self.describe))?;
        let mut js = async_nats::jetstream::new(client.clone());
        js.set_timeout(REQUEST_TIMEOUT);
        let store = match js.get_key_value(&self.bucket).await {
            Ok(store) => store,
            Err(get) => {
                // The bucket's stream as create_key_value makes it, which
                // itself needs account info fields that servers before
                // 2.10 do not send.
                let config = stream::Config {
                    name: format!("KV_{}", self.bucket),
                    description: Some("rollcall: users' privacy choices".into()),
                    subjects: vec![format!("$KV.{}.>", self.bucket)],
                    max_messages_per_subject: 1,
                    discard: stream::DiscardPolicy::New,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    num_replicas: 1,
                    ..Default::default()
                };
                let created = js.create_stream(config).await;
                match js.get_key_value(&self.bucket).await {
                    Ok(store) => store,
                    // Creating fails if another node created it meanwhile.
                    Err(_) => {
                        let create = created.err().map(|e| e.to_string()).unwrap_or_default();
                        return Err(format!(
                            "NATS at {}: cannot open the key-value bucket {} ({get}) nor create it ({create}); the server needs JetStream (nats-server -js)",
                            self.describe, self.bucket
                        ));
                    }
                }
            }
        };
        *slot = Some((client, store.clone()));
        Ok(store)
    }

    /// After a failed operation: if the client is connected, the bucket
    /// itself is the problem (e.g. the server lost its storage), so the
    /// next operation opens (or creates) it again. A client still
    /// reconnecting is kept: dropping it would leave its retries running.
    async fn check_bucket(&self) {
        let mut slot = self.open.lock().await;
        if slot
            .as_ref()
            .is_some_and(|(client, _)| client.connection_state() == State::Connected)
        {
            *slot = None;
        }
    }

    async fn read_all(&self) -> Result<HashMap<String, bool>, String> {
        let read = self.try_read_all().await;
        if read.is_err() {
            self.check_bucket().await;
        }
        read
    }

    async fn save(&self, user_id: String, visible: Option<bool>) -> Result<(), String> {
        if user_id.is_empty() {
            return Err("an empty user id has no privacy choice".into());
        }
        let saved = self.try_save(user_id, visible).await;
        if saved.is_err() {
            self.check_bucket().await;
        }
        saved
    }

    async fn try_read_all(&self) -> Result<HashMap<String, bool>, String> {
        let store = self.store().await?;
        let failed = |e: &dyn std::fmt::Display| {
            format!(
                "NATS at {}: cannot read the bucket {}: {e}",
                self.describe, self.bucket
            )
        };
        let keys: Vec<String> = store
            .keys()
            .await
            .map_err(|e| failed(&e))?
            .try_collect()
            .await
            .map_err(|e| failed(&e))?;
        let mut reads = futures_util::stream::iter(keys)
            .map(|key| {
                let store = store.clone();
                async move {
                    let value = store.get(key.as_str()).await;
                    (key, value)
                }
            })
            .buffer_unordered(PARALLEL_READS);
        let mut map = HashMap::new();
        while let Some((key, value)) = reads.next().await {
            let value = value.map_err(|e| failed(&e))?;
            let Some(uid) = user_of(&key) else {
                tracing::warn!(%key, bucket = %self.bucket, "ignored a privacy key that is not a base64url user id");
                continue;
            };
            // None: deleted since the keys were listed.
            match value.as_deref() {
                Some(b"1") => map.insert(uid, true),
                Some(b"0") => map.insert(uid, false),
                Some(other) => {
                    tracing::warn!(%uid, value = %String::from_utf8_lossy(other), bucket = %self.bucket, "ignored a privacy value that is not 0 or 1");
                    None
                }
                None => None,
            };
        }
        Ok(map)
    }

    async fn try_save(&self, user_id: String, visible: Option<bool>) -> Result<(), String> {
        let store = self.store().await?;
        let key = key_of(&user_id);
        let failed = |e: &dyn std::fmt::Display| format!("NATS at {}: {e}", self.describe);
        match visible {
            Some(v) => {
                let value = if v { "1" } else { "0" };
                store
                    .put(key, value.into())
                    .await
                    .map(|_| ())
                    .map_err(|e| failed(&e))
            }
            None => store.delete(key).await.map_err(|e| failed(&e)),
        }
    }
}

/// Privacy choices in a JetStream key-value bucket (see the module doc).
pub struct NatsStore {
    inner: Arc<Inner>,
    /// Runs the client; None only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    late: Mutex<Option<oneshot::Receiver<HashMap<String, bool>>>>,
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStore")
            .field("target", &self.inner.describe)
            .field("bucket", &self.inner.bucket)
            .finish_non_exhaustive()
    }
}

impl NatsStore {
    /// A store on the NATS of `url` (the `--bus` URL) under `prefix`
    /// (`--bus-prefix`), trusting `ca_file`'s roots too for TLS. Connects
    /// lazily.
    pub fn new(url: &str, prefix: &str, ca_file: Option<&std::path::Path>) -> Result<Self, String> {
        let target = NatsTarget::parse(url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("privacy-nats")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the NATS privacy store's runtime: {e}"))?;
        Ok(NatsStore {
            inner: Arc::new(Inner {
                target,
                tls: crate::tls::client_config(ca_file)?,
                bucket: format!("{prefix}_{PRIVACY_BUCKET}"),
                describe: nats_bus::redact(url.trim()),
                open: tokio::sync::Mutex::new(None),
            }),
            runtime: Some(runtime),
            late: Mutex::new(None),
        })
    }

    /// Runs `f` on the store's runtime and waits for it, at most `limit`.
    fn call<T, F>(
        &self,
        limit: Duration,
        f: impl FnOnce(Arc<Inner>) -> F + Send + 'static,
    ) -> Result<T, String>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, String>> + Send + 'static,
    {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or("the NATS privacy store is closed")?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let inner = self.inner.clone();
        let describe = inner.describe.clone();
        runtime.spawn(async move {
            let result = tokio::time::timeout(limit, f(inner))
                .await
                .unwrap_or_else(|_| Err(format!("NATS at {describe}: no answer within {limit:?}")));
            let _ = tx.send(result);
        });
        rx.recv()
            .map_err(|_| "the NATS privacy store stopped".to_string())?
    }
}

impl Drop for NatsStore {
    fn drop(&mut self) {
        // May be dropped on an async thread, where a blocking shutdown panics.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PrivacyStore for NatsStore {
    fn load(&self) -> Result<HashMap<String, bool>, String> {
        match self.call(READ_TIMEOUT, |inner| async move { inner.read_all().await }) {
            Ok(map) => Ok(map),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the privacy choices from NATS; every user has the default visibility until NATS answers (retrying every second)");
                let (tx, rx) = oneshot::channel();
                *self.late.lock().unwrap_or_else(|p| p.into_inner()) = Some(rx);
                let inner = self.inner.clone();
                let runtime = self
                    .runtime
                    .as_ref()
                    .ok_or("the NATS privacy store is closed")?;
                runtime.spawn(async move {
                    loop {
                        tokio::time::sleep(RETRY).await;
                        if tx.is_closed() {
                            return;
                        }
                        let read = tokio::time::timeout(READ_TIMEOUT, inner.read_all()).await;
                        if let Ok(Ok(map)) = read {
                            tracing::info!(
                                users = map.len(),
                                "loaded the privacy choices from NATS"
                            );
                            let _ = tx.send(map);
                            return;
                        }
                    }
                });
                Ok(HashMap::new())
            }
        }
    }

    fn save(&self, user_id: &str, visible: Option<bool>) -> Result<(), String> {
        let user_id = user_id.to_string();
        self.call(SAVE_TIMEOUT, move |inner| async move {
            inner.save(user_id, visible).await
        })
    }

    fn late_load(&self) -> Option<oneshot::Receiver<HashMap<String, bool>>> {
        self.late.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn reread(&self) -> Result<Option<HashMap<String, bool>>, String> {
        self.call(READ_TIMEOUT, |inner| async move { inner.read_all().await })
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_base64url_user_ids() {
        for uid in ["zed", "a.b c/é", "user@example.com", "x"] {
            let key = key_of(uid);
            assert!(
                key.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)),
                "{key}"
            );
            assert_eq!(user_of(&key).as_deref(), Some(uid));
        }
        assert_eq!(key_of("zed"), "emVk");
        assert_eq!(user_of("not base64!"), None);
    }

    #[test]
    fn bad_urls_are_refused_and_nothing_connects_early() {
        assert!(NatsStore::new("http://x", "rollcall", None).is_err());
        let store = NatsStore::new("nats://127.0.0.1:1", "rollcall", None).unwrap();
        assert_eq!(store.inner.bucket, "rollcall_privacy");
        assert!(store.save("", Some(true)).is_err());
    }
}
