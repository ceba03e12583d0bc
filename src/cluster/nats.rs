//! The NATS transport (not built yet: `--bus` refuses it with a
//! message saying so).

use super::bus::{Bus, TransportEnd};

/// Checks a `--bus` URL of this engine.
pub fn check_url(url: &str) -> Result<(), String> {
    Err(format!(
        "--bus {}: the NATS bus is not built yet; use redis:// (see the README's cluster section)",
        crate::http_client::redact_password(url)
    ))
}

/// The NATS bus.
pub struct NatsBus;

impl NatsBus {
    /// A bus on `url` under `prefix`.
    pub fn new(
        url: &str,
        _prefix: &str,
        _ca_file: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        check_url(url).map(|()| NatsBus)
    }
}

impl Bus for NatsBus {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn describe(&self) -> String {
        "nats".into()
    }

    fn start(self: Box<Self>, _end: TransportEnd) {}
}
