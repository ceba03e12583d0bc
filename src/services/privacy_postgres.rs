//! Privacy choices kept in PostgreSQL when the cluster's bus is PostgreSQL
//! (`--bus postgres://…`), so every node reads and writes the same ones:
//!
//! ```sql
//! CREATE TABLE "rollcall_privacy" (uid text PRIMARY KEY, visible boolean NOT NULL);
//! -- a row per user who chose; no row: --default-visible
//! ```
//!
//! (`<prefix>_privacy` with `--bus-prefix`.) The store's calls block (the
//! services call them off the async runtime); each runs on a runtime of
//! its own, on a thread of its own, so it may be called from anywhere.
//! When PostgreSQL cannot be reached at start, users have the default
//! visibility and the choices are loaded once it answers (as with Redis).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::oneshot;

use super::privacy::PrivacyStore;
use crate::cluster::postgres::{Target, create_if_missing, identifier, timed};

/// The store.
pub struct PostgresStore {
    target: Target,
    table: String,
    late: Mutex<Option<oneshot::Receiver<HashMap<String, bool>>>>,
    /// The table is known to exist (created once, not on every call).
    created: AtomicBool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target.describe())
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// A store in the database of `url` (the `--bus` URL), table
    /// `<prefix>_privacy`, trusting `ca_file`'s roots too for TLS.
    /// Connects on each call.
    pub fn new(url: &str, prefix: &str, ca_file: Option<&std::path::Path>) -> Result<Self, String> {
        Ok(PostgresStore {
            target: Target::new(url, ca_file)?,
            table: identifier(prefix, "privacy"),
            late: Mutex::new(None),
            created: Default::default(),
        })
    }

    /// Runs `job` with a connected client, blocking until it is done.
    fn blocking<T: Send>(
        &self,
        job: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, String> + Send,
    ) -> Result<T, String> {
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the privacy store's runtime: {e}"))?;
                runtime.block_on(async {
                    let client = self.target.connect(None).await?;
                    if !self.created.load(Ordering::Relaxed) {
                        create_if_missing(
                            &client,
                            &format!(
                                "CREATE TABLE IF NOT EXISTS {} (uid text PRIMARY KEY, visible boolean NOT NULL)",
                                self.table
                            ),
                        )
                        .await?;
                        self.created.store(true, Ordering::Relaxed);
                    }
                    let result = job(&client).await;
                    // A server that lost its storage lost the table too:
                    // after a failure the next call makes sure again.
                    if result.is_err() {
                        self.created.store(false, Ordering::Relaxed);
                    }
                    result
                })
            });
            handle
                .join()
                .unwrap_or_else(|_| Err("the privacy store's thread panicked".into()))
        })
    }

    fn read_all(&self) -> Result<HashMap<String, bool>, String> {
        let sql = format!("SELECT uid, visible FROM {}", self.table);
        self.blocking(async |client| {
            let rows = timed("read the privacy choices", client.query(&sql, &[])).await?;
            Ok(rows
                .iter()
                .filter_map(|r| Some((r.try_get::<_, String>(0).ok()?, r.try_get(1).ok()?)))
                .collect())
        })
    }
}

impl PrivacyStore for PostgresStore {
    fn load(&self) -> Result<HashMap<String, bool>, String> {
        match self.read_all() {
            Ok(map) => Ok(map),
            Err(e) => {
                let retry = PostgresStore {
                    target: self.target.clone(),
                    table: self.table.clone(),
                    late: Mutex::new(None),
                    created: Default::default(),
                };
                let later = super::privacy::load_later("PostgreSQL", &e, move || retry.read_all())?;
                *self.late.lock().unwrap_or_else(|p| p.into_inner()) = Some(later);
                Ok(HashMap::new())
            }
        }
    }

    fn save(&self, user_id: &str, visible: Option<bool>) -> Result<(), String> {
        let uid = user_id.to_string();
        let sql = match visible {
            Some(_) => format!(
                "INSERT INTO {} (uid, visible) VALUES ($1, $2) ON CONFLICT (uid) DO UPDATE SET visible = EXCLUDED.visible",
                self.table
            ),
            None => format!("DELETE FROM {} WHERE uid = $1", self.table),
        };
        self.blocking(async move |client| {
            let result = match visible {
                Some(v) => client.execute(&sql, &[&uid, &v]).await,
                None => client.execute(&sql, &[&uid]).await,
            };
            result
                .map(|_| ())
                .map_err(|e| crate::cluster::postgres::describe(&e))
        })
    }

    fn reread(&self) -> Result<Option<HashMap<String, bool>>, String> {
        self.read_all().map(Some)
    }

    fn late_load(&self) -> Option<oneshot::Receiver<HashMap<String, bool>>> {
        self.late.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}
