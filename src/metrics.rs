//! `GET /metrics` (Prometheus text format 0.0.4, written by the
//! `prometheus-client` crate's encoder) and `GET /dashboard` (a
//! live page over the HTTP API). Both are open, like `/healthz`: the
//! metrics carry counts only, and the page asks for the API key before it
//! reads anything else.
//!
//! The presence numbers come from [`MetricsObserver`], registered with the
//! core; the rest (current counts, cluster, webhooks, process) is read at
//! scrape time.

mod live;
mod observer;

use std::fmt;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

pub use live::{LEAVE_REASONS, Live, ProtocolCounters};
pub use observer::{CHANGES, MetricsObserver, ORIGINS, ProtocolCounts, Snapshot};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The `Content-Type` of a scrape answer: the Prometheus text format
/// 0.0.4, which every scraper reads (Prometheus, VictoriaMetrics, the
/// Datadog and OpenTelemetry receivers), rather than OpenMetrics 1.0.0,
/// so nothing that scraped the hand-written text before needs a change.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

use crate::app::App;
use crate::cluster::{BusState, ClusterStats};
use crate::presence::Stats;

/// The dashboard page: static, inline CSS and JS, no external resources.
const DASHBOARD: &str = include_str!("../web/dashboard.html");

/// The page may only run its own inline code and talk to this server.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// `/metrics` alone, for `--metrics-listen`.
pub fn scrape_routes() -> Router<App> {
    Router::new().route("/metrics", get(scrape))
}

/// The routes (open: no API key).
pub fn routes() -> Router<App> {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/dashboard", get(dashboard))
}

async fn scrape(State(app): State<App>) -> impl IntoResponse {
    let body = render(
        &Scrape {
            observed: app.metrics.snapshot(),
            presence: app.presence.stats(),
            cluster: app.cluster_stats(),
            webhooks_dropped: app.services.webhooks().map(|w| w.dropped()),
            webhook_stats: app.services.webhooks().map(|w| w.stats().clone()),
            admission: app.admission.stats(),
            started: app.metrics.started(),
            process: ProcessStats::read(),
        },
        app.metrics.live(),
    );
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
    /// The webhook delivery histograms, when webhooks are configured.
    pub webhook_stats: Option<crate::services::webhooks::DeliveryStats>,
    /// Connections refused or cut at the listener.
    pub admission: crate::listener::AdmissionStats,
    /// When the server started (Unix seconds).
    pub started: f64,
    /// The process's resources, where the platform tells.
    pub process: ProcessStats,
}

/// The scrape answer, in the Prometheus text format 0.0.4 (see
/// [`CONTENT_TYPE`]): the scrape-time figures of `s`, then the live
/// metrics of `live`.
pub fn render(s: &Scrape, live: &Live) -> String {
    // A registry per scrape: the scrape-time figures are a collector over
    // this snapshot, the live metrics are shared handles (clones of the
    // same atomics and histograms), so nothing global and no copy of them.
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ScrapeCollector(s.clone())));
    live.register(&mut registry);
    if let Some(stats) = &s.webhook_stats {
        registry.register(
            "rollcall_webhook_delivery_seconds",
            "Webhook batches, per URL: time from the first attempt to success or give-up",
            stats.seconds.clone(),
        );
        registry.register(
            "rollcall_webhook_attempts",
            "Webhook batches, per URL: attempts until success or give-up",
            stats.attempts.clone(),
        );
    }
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail; an encoder error would only cut
    // the answer short.
    if let Err(e) = prometheus_text::encode(&mut out, &registry) {
        tracing::warn!("metrics encoding failed: {e}");
    }
    out
}

/// The scrape-time figures, written when the registry is encoded.
#[derive(Debug)]
struct ScrapeCollector(Scrape);

impl Collector for ScrapeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        write_presence(&mut enc, s)?;
        write_cluster(&mut enc, &s.cluster)?;
        if let Some(dropped) = s.webhooks_dropped {
            counter(
                &mut enc,
                "rollcall_webhook_events_dropped",
                "Webhook events dropped because the delivery queue was full (receivers slow or down).",
                dropped,
            )?;
        }
        let a = &s.admission;
        let mut refused = enc.encode_descriptor(
            "rollcall_connections_refused",
            "Client connections refused at the listener: over --max-connections (total_cap), over --max-connections-per-address (address_cap), or closed for not sending a request head within --header-timeout (header_timeout).",
            None,
            MetricType::Counter,
        )?;
        for (reason, n) in [
            ("total_cap", a.refused_total_cap),
            ("address_cap", a.refused_address_cap),
            ("header_timeout", a.header_timeouts),
        ] {
            ConstCounter::new(n).encode(refused.encode_family(&[("reason", reason)])?)?;
        }
        write_process(&mut enc, s)
    }
}

/// A counter family of one series. `name` without `_total`: the encoder
/// adds it.
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    ConstCounter::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// A gauge family of one series.
fn gauge<N: EncodeGaugeValue + fmt::Debug>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> fmt::Result {
    ConstGauge::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A counter family with one label.
fn counter_by<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (v, n) in values {
        ConstCounter::new(n).encode(family.encode_family(&[(label, v)])?)?;
    }
    Ok(())
}

fn write_presence(enc: &mut DescriptorEncoder, s: &Scrape) -> fmt::Result {
    let o = &s.observed;
    counter_by(
        enc,
        "rollcall_connections_opened",
        "Client connections opened on this node, per wire protocol.",
        "protocol",
        o.protocols.iter().map(|p| (p.protocol, p.opened)),
    )?;
    counter_by(
        enc,
        "rollcall_connections_closed",
        "Client connections closed on this node, per wire protocol.",
        "protocol",
        o.protocols.iter().map(|p| (p.protocol, p.closed)),
    )?;
    let mut open = enc.encode_descriptor(
        "rollcall_connections",
        "Client connections open on this node, per wire protocol.",
        None,
        MetricType::Gauge,
    )?;
    for p in &o.protocols {
        ConstGauge::new(p.open()).encode(open.encode_family(&[("protocol", p.protocol)])?)?;
    }
    gauge(
        enc,
        "rollcall_node_connections",
        "Client connections open on this node, all protocols.",
        s.presence.connections,
    )?;
    gauge(
        enc,
        "rollcall_channels",
        "Channels with at least one subscriber or member (members on other nodes included).",
        s.presence.channels,
    )?;
    let mut events = enc.encode_descriptor(
        "rollcall_member_events",
        "Member changes others see (added, updated, removed), by where the presence comes from: a local connection, another node, or a lease.",
        None,
        MetricType::Counter,
    )?;
    for (c, change) in CHANGES.iter().enumerate() {
        for (i, origin) in ORIGINS.iter().enumerate() {
            ConstCounter::new(o.member_events[c][i])
                .encode(events.encode_family(&[("change", *change), ("origin", *origin)])?)?;
        }
    }
    counter(
        enc,
        "rollcall_messages_published",
        "Channel messages published on this node by clients or the HTTP API.",
        o.published,
    )?;
    counter(
        enc,
        "rollcall_channels_occupied",
        "Times a channel got its first subscriber or member.",
        o.occupied,
    )?;
    counter(
        enc,
        "rollcall_channels_vacated",
        "Times a channel lost its last subscriber and member.",
        o.vacated,
    )
}

fn write_cluster(enc: &mut DescriptorEncoder, c: &ClusterStats) -> fmt::Result {
    let state = c.bus_state.name();
    let mut info = enc.encode_descriptor(
        "rollcall_cluster_info",
        "This node's id, bus kind and bus state (value always 1).",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(1u64).encode(info.encode_family(&[
        ("node", c.node_id.as_str()),
        ("bus", c.bus),
        ("state", state),
    ])?)?;
    let up = matches!(c.bus_state, BusState::Connected | BusState::Standalone);
    gauge(
        enc,
        "rollcall_bus_up",
        "1 when the cluster bus link works (connected, or standalone), else 0.",
        u64::from(up),
    )?;
    gauge(
        enc,
        "rollcall_ready",
        "1 when this node sees the whole cluster (what /readyz answers 200 for).",
        u64::from(c.ready),
    )?;
    gauge(
        enc,
        "rollcall_event_sender",
        "1 on the node that reports the cluster's presence events (webhooks).",
        u64::from(c.event_sender),
    )?;
    gauge(
        enc,
        "rollcall_cluster_nodes",
        "Live cluster nodes, this one included.",
        c.nodes,
    )?;
    gauge(
        enc,
        "rollcall_cluster_connections",
        "Client connections on all nodes (other nodes as last reported).",
        c.cluster_connections,
    )?;
    // No sample until a heartbeat made the round trip (standalone: never);
    // the family's HELP and TYPE are still written.
    let lag = enc.encode_descriptor(
        "rollcall_bus_lag_seconds",
        "Last round trip of this node's heartbeat over the bus.",
        None,
        MetricType::Gauge,
    )?;
    if let Some(ms) = c.bus_lag_ms {
        ConstGauge::new(ms as f64 / 1000.0).encode(lag)?;
    }
    gauge(
        enc,
        "rollcall_bus_messages_waiting",
        "Messages waiting for the bus (while it is down).",
        c.messages_waiting,
    )?;
    let counters: [(&str, &str, u64); 14] = [
        (
            "rollcall_bus_frames_sent",
            "Frames handed to the bus transport.",
            c.frames_sent,
        ),
        (
            "rollcall_bus_frames_received",
            "Frames received from the bus (this node's own included).",
            c.frames_received,
        ),
        (
            "rollcall_bus_frames_dropped",
            "Frames dropped because the bus transport queue was full.",
            c.frames_dropped,
        ),
        (
            "rollcall_bus_malformed_frames",
            "Bus frames that could not be parsed.",
            c.malformed_frames,
        ),
        (
            "rollcall_bus_messages_dropped",
            "Messages dropped because too many waited for the bus.",
            c.messages_dropped,
        ),
        (
            "rollcall_bus_recoveries",
            "Times the bus link came (back) up.",
            c.counters.bus_recoveries,
        ),
        (
            "rollcall_bus_stale_frames",
            "Frames ignored as coming from an older life of a node or from a node that left.",
            c.counters.stale_frames,
        ),
        (
            "rollcall_cluster_deltas_sent",
            "Presence delta frames this node sent.",
            c.seq,
        ),
        (
            "rollcall_cluster_resyncs",
            "Replicas of other nodes replaced by a full state.",
            c.counters.resyncs,
        ),
        (
            "rollcall_cluster_gaps",
            "Sequence gaps detected in other nodes' deltas.",
            c.counters.gaps,
        ),
        (
            "rollcall_cluster_sync_requests",
            "Full-state requests sent.",
            c.counters.sync_requests,
        ),
        (
            "rollcall_cluster_states_sent",
            "Full states published.",
            c.counters.states_sent,
        ),
        (
            "rollcall_cluster_nodes_timed_out",
            "Nodes dropped after the node timeout.",
            c.counters.nodes_timed_out,
        ),
        (
            "rollcall_cluster_nodes_left",
            "Nodes that said goodbye.",
            c.counters.nodes_left,
        ),
    ];
    for (name, help, value) in counters {
        counter(enc, name, help, value)?;
    }
    Ok(())
}

fn write_process(enc: &mut DescriptorEncoder, s: &Scrape) -> fmt::Result {
    gauge(
        enc,
        "rollcall_start_time_seconds",
        "When the server started, in Unix seconds.",
        s.started,
    )?;
    if let Some(bytes) = s.process.resident_bytes {
        gauge(
            enc,
            "process_resident_memory_bytes",
            "Resident memory size.",
            bytes,
        )?;
    }
    if let Some(fds) = s.process.open_fds {
        gauge(enc, "process_open_fds", "Open file descriptors.", fds)?;
    }
    if let Some(cpu) = s.process.cpu_seconds {
        // A counter of seconds: a float, so the f64 counter value.
        ConstCounter::new(cpu).encode(enc.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            MetricType::Counter,
        )?)?;
    }
    if let Some(start) = s.process.start_time {
        gauge(
            enc,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            start,
        )?;
    }
    let mut build = enc.encode_descriptor(
        "rollcall_build_info",
        "The running build (value always 1).",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(1u64)
        .encode(build.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;
    Ok(())
}

/// The process's resources, from `/proc/self` (Linux; None elsewhere).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// Resident memory in bytes.
    pub resident_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<usize>,
    /// User and system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// When the process started, in Unix seconds.
    pub start_time: Option<f64>,
}

impl ProcessStats {
    /// Reads them now (procfs is in memory: no disk wait).
    #[cfg(target_os = "linux")]
    pub fn read() -> Self {
        let resident_bytes = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| vm_rss_bytes(&status));
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count());
        let times = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| stat_times(&stat));
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| boot_time(&stat));
        ProcessStats {
            resident_bytes,
            open_fds,
            cpu_seconds: times.map(|t| t.0),
            start_time: times.zip(boot_time).map(|(t, boot)| boot + t.1),
        }
    }

    /// Nothing outside Linux.
    #[cfg(not(target_os = "linux"))]
    pub fn read() -> Self {
        Self::default()
    }
}

/// From `/proc/self/stat`: (utime + stime, starttime), in seconds (the
/// start since boot). The command name (field 2) may hold spaces and
/// parentheses, so the fields are counted after its last `)`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn stat_times(stat: &str) -> Option<(f64, f64)> {
    let (_, rest) = stat.rsplit_once(')')?;
    // rest starts at field 3 (state): utime is field 14, stime 15,
    // starttime 22.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field =
        |n: usize| -> Option<f64> { fields.get(n - 3)?.parse::<u64>().ok().map(|t| t as f64) };
    let cpu = field(14)? + field(15)?;
    Some((cpu / USER_HZ, field(22)? / USER_HZ))
}

/// The unit of the times in `/proc/self/stat`: USER_HZ, which the kernel
/// fixes at 100 for user space on every architecture Linux runs on (what
/// `sysconf(_SC_CLK_TCK)` answers), so no libc call is needed.
const USER_HZ: f64 = 100.0;

/// `btime N` of `/proc/stat`: when the machine booted, in Unix seconds.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn boot_time(stat: &str) -> Option<f64> {
    let line = stat.lines().find(|l| l.starts_with("btime "))?;
    line["btime ".len()..]
        .trim()
        .parse::<u64>()
        .ok()
        .map(|t| t as f64)
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
    fn stat_parses() {
        // A command name with a space and a parenthesis.
        let stat = "1234 (roll )call) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 4200 1000 10";
        assert_eq!(stat_times(stat), Some((3.0, 42.0)));
        assert_eq!(stat_times("1 (x) S 1"), None);
        assert_eq!(boot_time("cpu 1 2\nbtime 1700000000\n"), Some(1.7e9));
    }

    #[test]
    fn webhook_family_only_with_webhooks() {
        let scrape = |webhooks_dropped| Scrape {
            admission: Default::default(),
            observed: MetricsObserver::new().snapshot(),
            presence: Stats::default(),
            cluster: crate::cluster::Cluster::standalone("n1").stats(),
            webhooks_dropped,
            webhook_stats: None,
            started: 1.5,
            process: ProcessStats::default(),
        };
        let live = Live::new();
        let without = render(&scrape(None), &live);
        assert!(!without.contains("rollcall_webhook_events_dropped_total"));
        assert!(without.contains("rollcall_bus_up 1\n"));
        assert!(without.contains(
            "rollcall_cluster_info{node=\"n1\",bus=\"memory\",state=\"standalone\"} 1\n"
        ));
        assert!(without.contains("rollcall_start_time_seconds 1.5\n"));
        assert!(!without.contains("\nrollcall_bus_lag_seconds "));
        let with = render(&scrape(Some(7)), &live);
        assert!(with.contains("\nrollcall_webhook_events_dropped_total 7\n"));
    }

    #[test]
    fn counters_keep_their_names() {
        let scrape = Scrape {
            admission: Default::default(),
            observed: MetricsObserver::new().snapshot(),
            presence: Stats::default(),
            cluster: crate::cluster::Cluster::standalone("n1").stats(),
            webhooks_dropped: None,
            webhook_stats: None,
            started: 1.5,
            process: ProcessStats::default(),
        };
        let text = render(&scrape, &Live::new());
        // The encoder adds _total to counters named without it: the
        // exposition keeps the names of the hand-written one.
        for family in [
            "rollcall_connections_opened_total counter",
            "rollcall_member_events_total counter",
            "rollcall_connections_refused_total counter",
            "rollcall_cluster_nodes_left_total counter",
            "rollcall_auth_failures_total counter",
            "rollcall_connections gauge",
            "rollcall_fanout_size histogram",
        ] {
            assert!(text.contains(&format!("\n# TYPE {family}\n")), "{family}");
        }
        assert!(!text.contains("_total_total"));
        // Registry::register adds a period to HELP; ours have none.
        let doubled = text
            .lines()
            .find(|l| l.starts_with("# HELP") && l.ends_with(".."));
        assert_eq!(doubled, None);
        assert!(text.contains("\nrollcall_messages_published_total 0\n"));
        assert!(text.contains("\nrollcall_fanout_size_bucket{le=\"+Inf\"} 0\n"));
    }
}
