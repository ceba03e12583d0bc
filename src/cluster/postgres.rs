//! The PostgreSQL transport (not built yet: `--bus` refuses it with a
//! message saying so).

use super::bus::{Bus, TransportEnd};

/// Checks a `--bus` URL of this engine.
pub fn check_url(url: &str) -> Result<(), String> {
    Err(format!(
        "--bus {}: the PostgreSQL bus is not built yet; use redis:// (see the README's cluster section)",
        crate::http_client::redact_password(url)
    ))
}

/// The PostgreSQL bus.
pub struct PostgresBus;

impl PostgresBus {
    /// A bus on `url` under `prefix`.
    pub fn new(
        url: &str,
        _prefix: &str,
        _ca_file: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        check_url(url).map(|()| PostgresBus)
    }
}

impl Bus for PostgresBus {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn describe(&self) -> String {
        "postgres".into()
    }

    fn start(self: Box<Self>, _end: TransportEnd) {}
}
