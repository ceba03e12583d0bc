//! The integration tests, as one test binary (`cargo test --test it`):
//! one module per area, over real sockets against in-process servers or
//! `rollcall serve` child processes. One binary links the crate once
//! instead of once per file. A test's full name is `module::test`, so
//! `cargo test --all-features --test it cluster_redis::` runs one area (a
//! filter matches any part of the name: `sc::` also runs `abuse_sc::`;
//! `-- sc:: --skip abuse_sc::` does not).
//!
//! The harness is `common`: the in-process `TestServer`, clients, tokens,
//! HTTP; `common::process`, a `rollcall serve` child process (one server,
//! or a node of a cluster); `common::protocols`, one client API over every
//! front end; `common::cluster`, nodes on a bus and the waits that check
//! they agree; `common::redis`, private redis-server / Redis Cluster
//! engines. Beside it: `webhook_support` (a webhook receiver), `tls_support` (a
//! private CA made with `openssl`) and `fuzz_support` (the bounded-time
//! property-test harness, and the checks shared with `fuzz/`).
//!
//! Every test runs in this one process, next to tests of other modules.
//! So no test changes the environment, the current directory or the
//! global tracing subscriber; temporary files and directories carry the
//! module's prefix, the process id and, where a module makes several, a
//! counter, a port or a random suffix; the fuzz harness's panic hook is
//! quiet only on the thread running a check; a port
//! bound later (a Redis that restarts) comes from below the ephemeral
//! range (`common::redis::free_port`), where no other test's sockets
//! land; and the tests that must not run two at a time take their group's
//! lock (`common::cluster::serial`, `large_channels`'s `HEAVY`).

mod common;
mod fuzz_support;
#[cfg(feature = "hotsock")]
mod tls_support;
#[cfg(feature = "hotsock")]
mod webhook_support;

mod abuse_connections;
#[cfg(feature = "sc")]
mod abuse_memory;
#[cfg(all(feature = "hotsock", feature = "sc", feature = "socketio"))]
mod abuse_names;
#[cfg(all(feature = "sc", feature = "hotsock"))]
mod abuse_sc;
#[cfg(all(
    feature = "socketio",
    feature = "hotsock",
    feature = "sc",
    feature = "sgc"
))]
mod abuse_socketio;
#[cfg(all(feature = "hotsock", feature = "sc", feature = "socketio"))]
mod admin;
#[cfg(all(
    feature = "hotsock",
    feature = "socketio",
    feature = "sc",
    feature = "sgc"
))]
mod authorization;
#[cfg(all(feature = "hotsock", feature = "sc"))]
mod backend_example;
#[cfg(feature = "hotsock")]
mod channel_policy;
mod cli;
#[cfg(feature = "hotsock")]
mod cluster_auth;
#[cfg(all(feature = "hotsock", feature = "sc"))]
mod cluster_connections;
#[cfg(all(feature = "hotsock", feature = "sc"))]
mod cluster_nats;
#[cfg(all(feature = "hotsock", feature = "sc"))]
mod cluster_outage;
#[cfg(feature = "hotsock")]
mod cluster_partition;
#[cfg(all(feature = "hotsock", feature = "sc"))]
mod cluster_postgres;
#[cfg(all(feature = "hotsock", feature = "sc"))]
mod cluster_random;
#[cfg(all(feature = "hotsock", feature = "sc"))]
mod cluster_redis;
#[cfg(feature = "hotsock")]
mod cluster_services;
#[cfg(all(feature = "hotsock", feature = "sc"))]
mod cluster_sharded;
#[cfg(feature = "socketio")]
mod cluster_socketio;
#[cfg(all(feature = "hotsock", feature = "sc"))]
mod cluster_subscribers;
#[cfg(feature = "hotsock")]
mod cluster_tls;
#[cfg(feature = "hotsock")]
mod cluster_webhooks;
mod core_rules;
#[cfg(feature = "hotsock")]
mod dashboard;
#[cfg(all(feature = "hotsock", feature = "sc"))]
mod drain;
#[cfg(feature = "hotsock")]
mod event_stream;
#[cfg(all(
    feature = "hotsock",
    feature = "sc",
    feature = "socketio",
    feature = "sgc"
))]
mod forwarding;
mod fuzz_decoders;
mod hotsock_bad_input;
mod hotsock_http_api;
#[cfg(feature = "hotsock")]
mod hotsock_protocol;
mod hotsock_smoke;
#[cfg(feature = "hotsock")]
mod jwks;
#[cfg(feature = "hotsock")]
mod keys;
#[cfg(all(feature = "socketio", feature = "sc"))]
mod large_channels;
#[cfg(feature = "hotsock")]
mod logs;
#[cfg(feature = "hotsock")]
mod metrics;
#[cfg(feature = "hotsock")]
mod openapi;
#[cfg(all(
    feature = "hotsock",
    feature = "sc",
    feature = "socketio",
    feature = "sgc"
))]
mod origins;
#[cfg(all(feature = "sc", feature = "socketio"))]
mod rpc;
#[cfg(feature = "sc")]
mod sc;
#[cfg(feature = "sc")]
mod sc_node;
#[cfg(feature = "hotsock")]
mod services_leases;
#[cfg(all(
    feature = "hotsock",
    feature = "socketio",
    feature = "sc",
    feature = "sgc"
))]
mod services_privacy;
#[cfg(feature = "hotsock")]
mod services_webhooks;
#[cfg(feature = "sgc")]
mod sgc;
#[cfg(all(feature = "sgc", feature = "hotsock"))]
mod sgc_conformance;
#[cfg(all(feature = "socketio", feature = "hotsock"))]
mod socketio;
#[cfg(feature = "socketio")]
mod socketio_node;
#[cfg(all(feature = "socketio", feature = "hotsock"))]
mod socketio_order;
#[cfg(feature = "socketio")]
mod socketio_polling;
#[cfg(feature = "hotsock")]
mod webhooks_tls;
#[cfg(feature = "hotsock")]
mod websocket;
#[cfg(feature = "hotsock")]
mod write_delay;
