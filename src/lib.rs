//! rollcall: a presence server with pluggable wire-protocol front ends.
//!
//! The presence core ([`presence`]) knows who is connected, which channels
//! each connection is in and what member data it carries. Front ends
//! (`adapters/`, one Cargo feature each) translate their wire protocol into
//! core calls and core events into frames; each registers itself in
//! [`frontends`]. Shared machinery: [`auth`] (JWT),
//! [`transport`] (WebSocket loop and limits), [`http_api`], [`server`],
//! [`access`] (the access log), [`tls`] (outgoing TLS).

pub mod access;
pub mod app;
pub mod auth;
pub mod channel_map;
pub mod cluster;
pub mod config;
pub mod conformance;
pub mod frontends;
pub mod http_api;
pub mod http_client;
pub mod ids;
pub mod listener;
pub mod metrics;
pub mod names;
pub mod origins;
pub mod outbox;
pub mod policy;
pub mod presence;
pub mod rate;
pub mod server;
pub mod services;
pub mod shutdown;
pub mod time;
pub mod tls;
pub mod transport;
pub mod websocket;
pub mod woken;

#[cfg(feature = "hotsock")]
#[path = "../adapters/hotsock/mod.rs"]
pub mod hotsock;

#[cfg(feature = "socketio")]
#[path = "../adapters/socketio/mod.rs"]
pub mod socketio;

#[cfg(feature = "sc")]
#[path = "../adapters/sc/mod.rs"]
pub mod sc;

#[cfg(feature = "sgc")]
#[path = "../adapters/sgc/mod.rs"]
pub mod sgc;
