//! The metrics fed as things happen (histograms, counters by label), as
//! `prometheus-client` typed families. Each handle is an `Arc` inside:
//! [`Live::register`] puts clones of them in a scrape's registry.
//!
//! Hot paths (a delivery, a frame) use a counter handle taken once per
//! connection ([`Live::protocol`]): an atomic add, no label lookup. A
//! histogram observe takes the histogram's own short mutex
//! (`prometheus-client` has no atomic histogram); they are fed once per
//! request, publish or leave, never per recipient. The webhook histograms
//! live with the webhooks (`services::webhooks::DeliveryStats`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `route` and status class of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route template (`/api/channels/{channel}`), or `unmatched`.
    pub route: String,
    /// `2xx`, `4xx`, ...
    pub status: &'static str,
}

/// A wire protocol.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    /// The front end's protocol name.
    pub protocol: &'static str,
}

/// The close code a connection ended with, by protocol.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    /// The front end's protocol name.
    pub protocol: &'static str,
    /// The WebSocket close code the server sent (or decided on).
    pub code: u16,
}

/// Why a member left.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// One of [`LEAVE_REASONS`].
    pub reason: &'static str,
}

/// The `reason` values of `rollcall_leave_seconds`.
pub const LEAVE_REASONS: [&str; 8] = [
    "client_closed",
    "timeout",
    "slow_consumer",
    "kicked",
    "server_shutdown",
    "policy",
    "protocol_error",
    "node_lost",
];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request durations: 1 ms to about 16 s.
fn http_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Leave times: 1 ms to about 65 s (a node timeout is tens of seconds).
fn leave_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The live metrics of one server.
#[derive(Debug)]
pub struct Live {
    http: HistogramFamily<HttpLabels>,
    fanout: Histogram,
    /// The recipients of `fanout` added up: the dashboard's deliveries/s.
    deliveries: Counter,
    leave: HistogramFamily<ReasonLabel>,
    auth_failures: Family<ProtocolLabel, Counter>,
    rate_limited: Family<ProtocolLabel, Counter>,
    bytes_received: Family<ProtocolLabel, Counter>,
    bytes_sent: Family<ProtocolLabel, Counter>,
    delivery: HistogramFamily<ProtocolLabel>,
    close_codes: Family<CloseLabels, Counter>,
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

/// Delivery latencies: 100 µs to about 3 s.
fn delivery_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

/// The counters of one protocol, taken once (per connection or front end)
/// so that the hot path is an atomic add.
#[derive(Clone, Debug)]
pub struct ProtocolCounters {
    /// Queue-to-write time of sampled frames (1 in 64 per connection).
    pub delivery: Histogram,
    /// Bytes of WebSocket frames received.
    pub bytes_received: Counter,
    /// Bytes of WebSocket frames sent.
    pub bytes_sent: Counter,
    /// Frames refused by the rate limit.
    pub rate_limited: Counter,
    /// Refused logins / tokens.
    pub auth_failures: Counter,
}

/// Detached handles (counted nowhere): transports without metrics.
impl Default for ProtocolCounters {
    fn default() -> Self {
        ProtocolCounters {
            delivery: delivery_buckets(),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            rate_limited: Counter::default(),
            auth_failures: Counter::default(),
        }
    }
}

impl Live {
    /// Everything at zero.
    pub fn new() -> Self {
        let live = Live {
            http: Family::new_with_constructor(http_buckets as fn() -> Histogram),
            // 1 to 65536 recipients.
            fanout: Histogram::new(exponential_buckets(1.0, 2.0, 17)),
            deliveries: Counter::default(),
            leave: Family::new_with_constructor(leave_buckets as fn() -> Histogram),
            auth_failures: Family::default(),
            close_codes: Family::default(),
            rate_limited: Family::default(),
            bytes_received: Family::default(),
            bytes_sent: Family::default(),
            delivery: Family::new_with_constructor(delivery_buckets as fn() -> Histogram),
        };
        // Series for every compiled-in front end from the start, so that
        // rate() and alerts see a 0 before the first event.
        for front_end in crate::frontends::COMPILED {
            live.protocol(front_end.protocol);
        }
        live
    }

    /// Puts the metrics in `registry` (clones of the same handles). HELP
    /// texts end without a period: `Registry::register` adds one.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "rollcall_http_request_duration_seconds",
            "HTTP requests (API, upgrades, polling) by route template and status class: time to the response head",
            self.http.clone(),
        );
        registry.register(
            "rollcall_fanout_size",
            "Recipients on this node per channel message delivered here (published here or on another node)",
            self.fanout.clone(),
        );
        registry.register(
            "rollcall_leave_seconds",
            "Connections removed with their members, by reason: from the moment the close was decided (or a lost node last heard) to the removal",
            self.leave.clone(),
        );
        // Counters are named without _total: the encoder adds it.
        registry.register(
            "rollcall_deliveries",
            "Channel messages delivered to connections on this node (the recipients of rollcall_fanout_size added up)",
            self.deliveries.clone(),
        );
        registry.register(
            "rollcall_auth_failures",
            "Connections or logins refused for bad credentials, per wire protocol",
            self.auth_failures.clone(),
        );
        registry.register(
            "rollcall_closes",
            "Connections ended, by wire protocol and the close code the server sent (1000 normal or client closed, 1001 going away, 1008 policy, 1009 too big, 1013 slow consumer, 4100 kicked, ...)",
            self.close_codes.clone(),
        );
        registry.register(
            "rollcall_rate_limited_frames",
            "Client frames refused by the rate limit, per wire protocol",
            self.rate_limited.clone(),
        );
        registry.register(
            "rollcall_bytes_received",
            "Bytes of WebSocket frames received from clients, per wire protocol",
            self.bytes_received.clone(),
        );
        registry.register(
            "rollcall_delivery_seconds",
            "Frames from queued for a connection to written to its socket, 1 in 64 per connection sampled (the first, the 65th, ...), per wire protocol",
            self.delivery.clone(),
        );
        registry.register(
            "rollcall_bytes_sent",
            "Bytes of WebSocket frames sent to clients, per wire protocol",
            self.bytes_sent.clone(),
        );
    }

    /// The counter handles of `protocol` (a lookup under a read lock: take
    /// them once, not per frame).
    pub fn protocol(&self, protocol: &'static str) -> ProtocolCounters {
        let label = ProtocolLabel { protocol };
        ProtocolCounters {
            delivery: self.delivery.get_or_create_owned(&label),
            bytes_received: self.bytes_received.get_or_create_owned(&label),
            bytes_sent: self.bytes_sent.get_or_create_owned(&label),
            rate_limited: self.rate_limited.get_or_create_owned(&label),
            auth_failures: self.auth_failures.get_or_create_owned(&label),
        }
    }

    /// A connection or login of `protocol` was refused for bad
    /// credentials.
    pub fn auth_failure(&self, protocol: &'static str) {
        self.auth_failures
            .get_or_create(&ProtocolLabel { protocol })
            .inc();
    }

    /// An HTTP request took `seconds` to its response head.
    pub fn http_request(&self, route: &str, status: u16, seconds: f64) {
        let status = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let labels = HttpLabels {
            route: route.to_owned(),
            status,
        };
        self.http.get_or_create(&labels).observe(seconds);
    }

    /// A channel message reached `recipients` connections on this node.
    pub fn fanout(&self, recipients: usize) {
        self.fanout.observe(recipients as f64);
        self.deliveries.inc_by(recipients as u64);
    }

    /// Deliveries of channel messages to connections on this node since
    /// start (`rollcall_deliveries_total`).
    pub fn deliveries(&self) -> u64 {
        self.deliveries.get()
    }

    /// A connection of `protocol` ended with close code `code`.
    pub fn closed(&self, protocol: &'static str, code: u16) {
        self.close_codes
            .get_or_create(&CloseLabels { protocol, code })
            .inc();
    }

    /// A member left for `reason` (one of [`LEAVE_REASONS`]), `seconds`
    /// after the leave was decided.
    pub fn leave(&self, reason: &'static str, seconds: f64) {
        self.leave
            .get_or_create(&ReasonLabel { reason })
            .observe(seconds);
    }
}
