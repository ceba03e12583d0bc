//! Privacy choices kept in PostgreSQL (not built yet: the bus refuses
//! `--bus` URLs of this engine before this is reached).

use std::collections::HashMap;

use super::privacy::PrivacyStore;

/// The store.
#[derive(Debug)]
pub struct PostgresStore;

impl PostgresStore {
    /// A store on `url` under `prefix`.
    pub fn new(
        url: &str,
        _prefix: &str,
        _ca_file: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        crate::cluster::postgres::check_url(url).map(|()| PostgresStore)
    }
}

impl PrivacyStore for PostgresStore {
    fn load(&self) -> Result<HashMap<String, bool>, String> {
        Err("not built yet".into())
    }

    fn save(&self, _user_id: &str, _visible: Option<bool>) -> Result<(), String> {
        Err("not built yet".into())
    }
}
