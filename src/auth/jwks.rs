//! `--jwks-url`: public keys from a JSON Web Key Set (an identity
//! provider's `/.well-known/jwks.json`), fetched at start and again every
//! `--jwks-refresh`, and at once (at most every [`MIN_REFETCH`]) when a
//! token names a `kid` the set does not have, so a provider's new key is
//! accepted without a restart. A token that names a `kid` is verified
//! with that key only. Fetching uses the outgoing HTTP client (https with
//! the platform's roots plus `--tls-ca-file`); a failed fetch keeps the
//! keys already known and is retried.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use tokio::sync::Notify;

use crate::http_client::{HttpClient, Target, UserInfo};

/// Fetches for an unknown `kid` come at most this often.
pub const MIN_REFETCH: Duration = Duration::from_secs(5);
/// Time allowed for one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest key set read.
const MAX_BYTES: usize = 1024 * 1024;

/// The keys of the set by `kid`.
pub type JwksKeys = Arc<HashMap<String, DecodingKey>>;

/// The key set and its refresher.
pub struct Jwks {
    target: Target,
    client: HttpClient,
    keys: RwLock<JwksKeys>,
    /// Asks the refresher for a fetch now (an unknown `kid`).
    wanted: Notify,
    last_fetch: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.target.display())
            .finish_non_exhaustive()
    }
}

impl Jwks {
    /// Fetches the set at `url` once (a failure is logged; the refresher
    /// retries) and starts refreshing it every `refresh`.
    pub async fn start(
        url: &str,
        refresh: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Arc<Jwks>, String> {
        let target = Target::parse("--jwks-url", url, UserInfo::BasicAuth)?;
        let client = HttpClient::for_targets([&target], ca_file)?;
        let jwks = Arc::new(Jwks {
            target,
            client,
            keys: RwLock::new(Arc::new(HashMap::new())),
            wanted: Notify::new(),
            last_fetch: Mutex::new(None),
        });
        jwks.fetch().await;
        tokio::spawn(refresher(Arc::downgrade(&jwks), refresh));
        Ok(jwks)
    }

    /// The keys known now.
    pub fn keys(&self) -> JwksKeys {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A token named a `kid` the set lacks: fetch again soon.
    pub fn want_refresh(&self) {
        self.wanted.notify_one();
    }

    /// Where the set comes from, for messages.
    pub fn url(&self) -> &str {
        self.target.display()
    }

    async fn fetch(&self) {
        *self.last_fetch.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        match self.read().await {
            Ok(keys) => {
                let mut ids: Vec<&String> = keys.keys().collect();
                ids.sort();
                tracing::debug!(url = %self.url(), kids = ?ids, "fetched the JWKS");
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
            }
            Err(e) => {
                tracing::warn!(url = %self.url(), error = %e, "cannot fetch the JWKS; the keys already known stay in use, retrying");
            }
        }
    }

    async fn read(&self) -> Result<HashMap<String, DecodingKey>, String> {
        let response = self
            .client
            .send(
                &self.target,
                hyper::Method::GET,
                &[("accept", "application/json")],
                None,
                MAX_BYTES,
                FETCH_TIMEOUT,
            )
            .await
            .map_err(|e| e.to_string())?;
        if response.status != 200 {
            return Err(format!("HTTP {}", response.status));
        }
        let set: JwkSet = serde_json::from_slice(&response.body)
            .map_err(|e| format!("not a JSON Web Key Set ({e})"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            // Keys without an id cannot be picked by a token; keys of a
            // type jsonwebtoken does not verify with are skipped.
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid, key);
                }
                Err(e) => tracing::debug!(%kid, error = %e, "skipped a JWKS key"),
            }
        }
        Ok(keys)
    }
}

async fn refresher(jwks: std::sync::Weak<Jwks>, refresh: Duration) {
    loop {
        let Some(strong) = jwks.upgrade() else { return };
        let since = strong
            .last_fetch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
            .unwrap_or(refresh);
        let wait_periodic = refresh.saturating_sub(since);
        let wanted = async {
            strong.wanted.notified().await;
            // Not more often than MIN_REFETCH.
            tokio::time::sleep(MIN_REFETCH.saturating_sub(since)).await;
        };
        tokio::select! {
            _ = tokio::time::sleep(wait_periodic) => {}
            _ = wanted => {}
        }
        strong.fetch().await;
    }
}
