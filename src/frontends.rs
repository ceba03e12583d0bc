//! The front ends: what each one gives the server, and the one list where
//! they are registered. The shared server (routes, banner, metrics,
//! `--frontends`) goes through this list and never names an adapter.
//!
//! A front end declares its settings (a `clap::Args` struct, in the
//! adapter) in [`FrontEndSettings`] and reads them when its routes are
//! built, so its settings live in the adapter, not in [`App`].

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
    /// Checks its settings in `config` as `routes` would (`rollcall
    /// config check`).
    pub check: fn(&Config) -> Result<(), String>,
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

/// The settings of every compiled front end: flattened into `serve`'s
/// flags, read from the `[hotsock]`, `[socketio]`, `[sc]` and `[sgc]`
/// sections of the TOML file. Each front end declares its own.
#[derive(clap::Args, Clone, Debug, Default)]
#[group(skip)]
pub struct FrontEndSettings {
    #[cfg(feature = "hotsock")]
    #[command(flatten, next_help_heading = "Hotsock front end")]
    pub hotsock: crate::hotsock::HotsockSettings,
    #[cfg(feature = "socketio")]
    #[command(flatten, next_help_heading = "Socket.IO front end")]
    pub socketio: crate::socketio::SocketIoSettings,
    #[cfg(feature = "sc")]
    #[command(flatten, next_help_heading = "SocketCluster front end")]
    pub sc: crate::sc::ScSettings,
    #[cfg(feature = "sgc")]
    #[command(flatten, next_help_heading = "sgc front end")]
    pub sgc: crate::sgc::SgcSettings,
}

/// The names of the compiled front ends.
pub fn compiled_names() -> Vec<&'static str> {
    COMPILED.iter().map(|f| f.name).collect()
}

/// The front ends to serve: `frontends` from the config (every one
/// compiled in when empty). Err names an unknown one.
pub fn enabled(config: &Config) -> Result<Vec<&'static FrontEnd>, String> {
    let names = &config.listener.frontends;
    if names.is_empty() {
        return Ok(COMPILED.iter().collect());
    }
    let mut enabled: Vec<&'static FrontEnd> = Vec::new();
    for name in names.iter().map(|f| f.trim()).filter(|f| !f.is_empty()) {
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
