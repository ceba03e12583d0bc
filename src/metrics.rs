//! `GET /metrics` (Prometheus text format 0.0.4) and `GET /dashboard` (a
//! live page over the HTTP API). Both are open, like `/healthz`: the
//! metrics carry counts only, and the page asks for the API key before it
//! reads anything else.
//!
//! The presence numbers come from [`MetricsObserver`], registered with the
//! core; the rest (current counts, cluster, webhooks, process) is read at
//! scrape time.

mod observer;
mod text;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

pub use observer::{CHANGES, MetricsObserver, ORIGINS, ProtocolCounts, Snapshot};
pub use text::{CONTENT_TYPE, Exposition, Family, Number};

use crate::app::App;
use crate::cluster::{BusState, ClusterStats};
use crate::presence::Stats;

/// The dashboard page: static, inline CSS and JS, no external resources.
const DASHBOARD: &str = include_str!("../web/dashboard.html");

/// The page may only run its own inline code and talk to this server.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The routes (open: no API key).
pub fn routes() -> Router<App> {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/dashboard", get(dashboard))
}

async fn scrape(State(app): State<App>) -> impl IntoResponse {
    let body = render(&Scrape {
        observed: app.metrics.snapshot(),
        presence: app.presence.stats(),
        cluster: app.cluster.stats(),
        webhooks_dropped: app.services.webhooks().map(|w| w.dropped()),
        admission: app.admission.stats(),
        started: app.metrics.started(),
        process: ProcessStats::read(),
    });
    (
        [
            (header::CONTENT_TYPE, CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
}

async fn dashboard() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, DASHBOARD_CSP),
            (header::CACHE_CONTROL, "no-store"),
        ],
        DASHBOARD,
    )
}

/// Everything one scrape reports.
#[derive(Clone, Debug)]
pub struct Scrape {
    /// What the observer counted.
    pub observed: Snapshot,
    /// The core's current counts.
    pub presence: Stats,
    /// The cluster numbers.
    pub cluster: ClusterStats,
    /// Webhook events dropped, when webhooks are configured.
    pub webhooks_dropped: Option<u64>,
    /// Connections refused or cut at the listener.
    pub admission: crate::listener::AdmissionStats,
    /// When the server started (Unix seconds).
    pub started: f64,
    /// The process's resources, where the platform tells.
    pub process: ProcessStats,
}

/// The scrape answer.
pub fn render(s: &Scrape) -> String {
    let mut out = Exposition::new();
    write_presence(&mut out, s);
    write_cluster(&mut out, &s.cluster);
    if let Some(dropped) = s.webhooks_dropped {
        out.counter(
            "rollcall_webhook_events_dropped_total",
            "Webhook events dropped because the delivery queue was full (receivers slow or down).",
        )
        .value(dropped);
    }
    let a = &s.admission;
    let mut refused = out.counter(
        "rollcall_connections_refused_total",
        "Client connections refused at the listener: over --max-connections (total_cap), over --max-connections-per-address (address_cap), or closed for not sending a request head within --header-timeout (header_timeout).",
    );
    refused.sample(&[("reason", "total_cap")], a.refused_total_cap);
    refused.sample(&[("reason", "address_cap")], a.refused_address_cap);
    refused.sample(&[("reason", "header_timeout")], a.header_timeouts);
    write_process(&mut out, s);
    out.finish()
}

fn write_presence(out: &mut Exposition, s: &Scrape) {
    let o = &s.observed;
    let mut opened = out.counter(
        "rollcall_connections_opened_total",
        "Client connections opened on this node, per wire protocol.",
    );
    for p in &o.protocols {
        opened.sample(&[("protocol", p.protocol)], p.opened);
    }
    let mut closed = out.counter(
        "rollcall_connections_closed_total",
        "Client connections closed on this node, per wire protocol.",
    );
    for p in &o.protocols {
        closed.sample(&[("protocol", p.protocol)], p.closed);
    }
    let mut open = out.gauge(
        "rollcall_connections",
        "Client connections open on this node, per wire protocol.",
    );
    for p in &o.protocols {
        open.sample(&[("protocol", p.protocol)], p.open());
    }
    out.gauge(
        "rollcall_node_connections",
        "Client connections open on this node, all protocols.",
    )
    .value(s.presence.connections);
    out.gauge(
        "rollcall_channels",
        "Channels with at least one subscriber or member (members on other nodes included).",
    )
    .value(s.presence.channels);
    let mut events = out.counter(
        "rollcall_member_events_total",
        "Member changes others see (added, updated, removed), by where the presence comes from: a local connection, another node, or a lease.",
    );
    for (c, change) in CHANGES.iter().enumerate() {
        for (i, origin) in ORIGINS.iter().enumerate() {
            events.sample(
                &[("change", change), ("origin", origin)],
                o.member_events[c][i],
            );
        }
    }
    out.counter(
        "rollcall_messages_published_total",
        "Channel messages published on this node by clients or the HTTP API.",
    )
    .value(o.published);
    out.counter(
        "rollcall_channels_occupied_total",
        "Times a channel got its first subscriber or member.",
    )
    .value(o.occupied);
    out.counter(
        "rollcall_channels_vacated_total",
        "Times a channel lost its last subscriber and member.",
    )
    .value(o.vacated);
}

fn write_cluster(out: &mut Exposition, c: &ClusterStats) {
    let state = c.bus_state.name();
    out.gauge(
        "rollcall_cluster_info",
        "This node's id, bus kind and bus state (value always 1).",
    )
    .sample(
        &[("node", &c.node_id), ("bus", c.bus), ("state", state)],
        1u64,
    );
    let up = matches!(c.bus_state, BusState::Connected | BusState::Standalone);
    out.gauge(
        "rollcall_bus_up",
        "1 when the cluster bus link works (connected, or standalone), else 0.",
    )
    .value(up);
    out.gauge(
        "rollcall_ready",
        "1 when this node sees the whole cluster (what /readyz answers 200 for).",
    )
    .value(c.ready);
    out.gauge(
        "rollcall_event_sender",
        "1 on the node that reports the cluster's presence events (webhooks).",
    )
    .value(c.event_sender);
    out.gauge(
        "rollcall_cluster_nodes",
        "Live cluster nodes, this one included.",
    )
    .value(c.nodes);
    out.gauge(
        "rollcall_cluster_connections",
        "Client connections on all nodes (other nodes as last reported).",
    )
    .value(c.cluster_connections);
    // No sample until a heartbeat made the round trip (standalone: never).
    let mut lag = out.gauge(
        "rollcall_bus_lag_seconds",
        "Last round trip of this node's heartbeat over the bus.",
    );
    if let Some(ms) = c.bus_lag_ms {
        lag.value(ms as f64 / 1000.0);
    }
    out.gauge(
        "rollcall_bus_messages_waiting",
        "Messages waiting for the bus (while it is down).",
    )
    .value(c.messages_waiting);
    let counters: [(&'static str, &str, u64); 14] = [
        (
            "rollcall_bus_frames_sent_total",
            "Frames handed to the bus transport.",
            c.frames_sent,
        ),
        (
            "rollcall_bus_frames_received_total",
            "Frames received from the bus (this node's own included).",
            c.frames_received,
        ),
        (
            "rollcall_bus_frames_dropped_total",
            "Frames dropped because the bus transport queue was full.",
            c.frames_dropped,
        ),
        (
            "rollcall_bus_malformed_frames_total",
            "Bus frames that could not be parsed.",
            c.malformed_frames,
        ),
        (
            "rollcall_bus_messages_dropped_total",
            "Messages dropped because too many waited for the bus.",
            c.messages_dropped,
        ),
        (
            "rollcall_bus_recoveries_total",
            "Times the bus link came (back) up.",
            c.counters.bus_recoveries,
        ),
        (
            "rollcall_bus_stale_frames_total",
            "Frames ignored as coming from an older life of a node or from a node that left.",
            c.counters.stale_frames,
        ),
        (
            "rollcall_cluster_deltas_sent_total",
            "Presence delta frames this node sent.",
            c.seq,
        ),
        (
            "rollcall_cluster_resyncs_total",
            "Replicas of other nodes replaced by a full state.",
            c.counters.resyncs,
        ),
        (
            "rollcall_cluster_gaps_total",
            "Sequence gaps detected in other nodes' deltas.",
            c.counters.gaps,
        ),
        (
            "rollcall_cluster_sync_requests_total",
            "Full-state requests sent.",
            c.counters.sync_requests,
        ),
        (
            "rollcall_cluster_states_sent_total",
            "Full states published.",
            c.counters.states_sent,
        ),
        (
            "rollcall_cluster_nodes_timed_out_total",
            "Nodes dropped after the node timeout.",
            c.counters.nodes_timed_out,
        ),
        (
            "rollcall_cluster_nodes_left_total",
            "Nodes that said goodbye.",
            c.counters.nodes_left,
        ),
    ];
    for (name, help, value) in counters {
        out.counter(name, help).value(value);
    }
}

fn write_process(out: &mut Exposition, s: &Scrape) {
    out.gauge(
        "rollcall_start_time_seconds",
        "When the server started, in Unix seconds.",
    )
    .value(s.started);
    if let Some(bytes) = s.process.resident_bytes {
        out.gauge("process_resident_memory_bytes", "Resident memory size.")
            .value(bytes);
    }
    if let Some(fds) = s.process.open_fds {
        out.gauge("process_open_fds", "Open file descriptors.")
            .value(fds);
    }
}

/// The process's resources, from `/proc/self` (Linux; None elsewhere).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessStats {
    /// Resident memory in bytes.
    pub resident_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<usize>,
}

impl ProcessStats {
    /// Reads them now (procfs is in memory: no disk wait).
    pub fn read() -> Self {
        let resident_bytes = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| vm_rss_bytes(&status));
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count());
        ProcessStats {
            resident_bytes,
            open_fds,
        }
    }
}

/// `VmRSS:   1234 kB` of `/proc/self/status`, in bytes.
fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_parses() {
        let status = "Name:\trollcall\nVmRSS:\t   2048 kB\nThreads:\t4\n";
        assert_eq!(vm_rss_bytes(status), Some(2048 * 1024));
        assert_eq!(vm_rss_bytes("Name: x\n"), None);
    }

    #[test]
    fn webhook_family_only_with_webhooks() {
        let scrape = |webhooks_dropped| Scrape {
            admission: Default::default(),
            observed: MetricsObserver::new().snapshot(),
            presence: Stats::default(),
            cluster: crate::cluster::Cluster::standalone("n1").stats(),
            webhooks_dropped,
            started: 1.5,
            process: ProcessStats::default(),
        };
        let without = render(&scrape(None));
        assert!(!without.contains("rollcall_webhook_events_dropped_total"));
        assert!(without.contains("rollcall_bus_up 1\n"));
        assert!(without.contains(
            "rollcall_cluster_info{node=\"n1\",bus=\"memory\",state=\"standalone\"} 1\n"
        ));
        assert!(without.contains("rollcall_start_time_seconds 1.5\n"));
        assert!(!without.contains("\nrollcall_bus_lag_seconds "));
        let with = render(&scrape(Some(7)));
        assert!(with.contains("\nrollcall_webhook_events_dropped_total 7\n"));
    }
}
