//! Privacy choices kept in NATS (not built yet: the bus refuses
//! `--bus` URLs of this engine before this is reached).

use std::collections::HashMap;

use super::privacy::PrivacyStore;

/// The store.
#[derive(Debug)]
pub struct NatsStore;

impl NatsStore {
    /// A store on `url` under `prefix`.
    pub fn new(
        url: &str,
        _prefix: &str,
        _ca_file: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        crate::cluster::nats::check_url(url).map(|()| NatsStore)
    }
}

impl PrivacyStore for NatsStore {
    fn load(&self) -> Result<HashMap<String, bool>, String> {
        Err("not built yet".into())
    }

    fn save(&self, _user_id: &str, _visible: Option<bool>) -> Result<(), String> {
        Err("not built yet".into())
    }
}
