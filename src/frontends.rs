//! The front ends: what each one gives the server, and the one list where
//! they are registered. The shared server (routes, banner, metrics,
//! `--frontends`) goes through this list and never names an adapter.
//!
//! A front end reads its own settings from the server config when its
//! routes are built, so its settings live in the adapter, not in [`App`].

use std::net::SocketAddr;

use axum::Router;

use crate::app::App;
use crate::config::Config;

/// One wire-protocol front end.
pub struct FrontEnd {
    /// The name `--frontends` takes.
    pub name: &'static str,
    /// The protocol name of its connections (metrics label, logs,
    /// `GET /api/channels`).
    pub protocol: &'static str,
    /// Its routes, with its settings read from `config`. Err: a setting
    /// is invalid (the server does not start).
    pub routes: fn(&App, &Config) -> Result<Router<App>, String>,
    /// The banner line saying where a client connects.
    pub endpoint: fn(SocketAddr) -> String,
}

/// Every front end compiled into this build (one Cargo feature each), in
/// the order the banner lists them.
pub const COMPILED: &[FrontEnd] = &[
    #[cfg(feature = "hotsock")]
    crate::hotsock::FRONT_END,
    #[cfg(feature = "socketio")]
    crate::socketio::FRONT_END,
    #[cfg(feature = "sc")]
    crate::sc::FRONT_END,
    #[cfg(feature = "sgc")]
    crate::sgc::FRONT_END,
];

/// The names of the compiled front ends.
pub fn compiled_names() -> Vec<&'static str> {
    COMPILED.iter().map(|f| f.name).collect()
}

/// The front ends to serve: `frontends` from the config (every one
/// compiled in when empty). Err names an unknown one.
pub fn enabled(config: &Config) -> Result<Vec<&'static FrontEnd>, String> {
    if config.frontends.is_empty() {
        return Ok(COMPILED.iter().collect());
    }
    let mut enabled: Vec<&'static FrontEnd> = Vec::new();
    for name in config
        .frontends
        .iter()
        .map(|f| f.trim())
        .filter(|f| !f.is_empty())
    {
        match COMPILED.iter().find(|c| c.name == name) {
            Some(c) if !enabled.iter().any(|e| e.name == c.name) => enabled.push(c),
            Some(_) => {}
            None => {
                return Err(format!(
                    "--frontends: {name:?} is not a front end of this build; choose from {}",
                    compiled_names().join(", ")
                ));
            }
        }
    }
    if enabled.is_empty() {
        return Err(format!(
            "--frontends names no front end; choose from {}",
            compiled_names().join(", ")
        ));
    }
    Ok(enabled)
}
