//! Cluster mode: several rollcall nodes act as one through a bus (Redis).
//!
//! Every node keeps the presences of its own connections and a replica of
//! every other node's, fed by that node's ordered deltas, heartbeats and,
//! on a gap or a new node, its full state (the Phoenix.Tracker model; see
//! [`state`]). Remote presences enter the local core as
//! [`Origin::Remote`](crate::presence::Origin) presences in the same member
//! lists, so per-user dedup, member events, the HTTP API and every front
//! end work unchanged across nodes. Messages published on a node travel in
//! the same ordered stream and are delivered with
//! [`Presence::deliver_remote`].
//!
//! - [`wire`]: the frames (JSON), [`state`]: the replica state and its merge
//!   rules (pure, unit-tested), [`engine`]: the task that connects the
//!   state to the core and the bus, [`backlog`]: messages waiting while
//!   the bus is down, [`bus`]: the transport trait, [`memory`] and
//!   [`redis`]: transports.
//!
//! With `--bus memory` (the default) a node is standalone: no replication
//! runs and nothing is added to the core's work.

pub mod backlog;
pub mod bus;
pub mod engine;
pub mod http;
pub mod memory;
pub mod nats;
pub mod postgres;
pub mod redis;
pub mod state;
pub mod wire;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::presence::{DirectMessage, Presence, PresenceObserver};
use bus::Bus;
use engine::{ClusterObserver, Command, Engine, LeaseUsers};
use state::{ClusterState, Counters, PeerInfo, Timing};
use wire::{DirectTarget, KickTarget, Op, WireDirect};

/// The Redis pub/sub channel the nodes share.
pub const BUS_CHANNEL: &str = "cluster";

/// The default `--bus-prefix`: the Redis channel is `rollcall:cluster` and
/// the privacy hash `rollcall:privacy`.
pub const DEFAULT_BUS_PREFIX: &str = "rollcall";

/// Checks a `--bus-prefix`: 1-64 letters, digits, `-` or `_` (it names
/// keys, channels, subjects and tables on every engine).
pub fn check_bus_prefix(prefix: &str) -> Result<(), String> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    match ok {
        true => Ok(()),
        false => Err(format!(
            "bus-prefix {prefix:?}: use 1 to 64 letters, digits, '-' or '_'"
        )),
    }
}

/// Which bus to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusSpec {
    /// One standalone node, no bus.
    Memory,
    /// Redis (or Redis Cluster) at this URL.
    Redis(String),
    /// PostgreSQL at this URL (LISTEN/NOTIFY).
    Postgres(String),
    /// NATS at this URL (core subjects).
    Nats(String),
}

impl BusSpec {
    /// Parses `--bus`: `memory` or an engine's URL (checked here, so a
    /// typo stops the server at start instead of retrying forever).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s == "memory" {
            return Ok(BusSpec::Memory);
        }
        let scheme = s.split_once("://").map(|(scheme, _)| scheme);
        match scheme {
            Some("postgres" | "postgresql") => {
                postgres::check_url(s)?;
                Ok(BusSpec::Postgres(s.to_string()))
            }
            Some("nats" | "tls") => {
                nats::check_url(s)?;
                Ok(BusSpec::Nats(s.to_string()))
            }
            _ => {
                redis::RedisTarget::parse(s)?;
                Ok(BusSpec::Redis(s.to_string()))
            }
        }
    }

    /// The `--bus` value for the banner and logs, password hidden.
    pub fn describe(bus: &str) -> String {
        match bus.trim() {
            "" | "memory" => "memory (standalone)".into(),
            url => crate::http_client::redact_password(url),
        }
    }
}

/// Cluster settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The bus.
    pub bus: BusSpec,
    /// This node's id, unique in the cluster.
    pub node_id: String,
    /// How often heartbeats are sent.
    pub heartbeat: Duration,
    /// A node silent this long is removed with all its members.
    pub node_timeout: Duration,
    /// Extra roots for a `rediss://` bus (`--tls-ca-file`).
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// What the bus's channel and keys start with (`--bus-prefix`):
    /// deployments with different prefixes share an engine unseen.
    pub prefix: String,
}

impl ClusterConfig {
    /// Checks the timings: the timeout must allow a few lost heartbeats.
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat < Duration::from_millis(10) {
            return Err("heartbeat-interval must be at least 10ms".into());
        }
        if self.node_timeout < self.heartbeat * 2 {
            return Err(format!(
                "node-timeout ({:?}) must be at least twice heartbeat-interval ({:?}), or a single late heartbeat removes a live node",
                self.node_timeout, self.heartbeat
            ));
        }
        if self.node_id.is_empty() || self.node_id.len() > 128 {
            return Err("node-id must be 1 to 128 characters".into());
        }
        check_bus_prefix(&self.prefix)
    }

    fn timing(&self) -> Timing {
        Timing::new(
            self.heartbeat.as_millis() as u64,
            self.node_timeout.as_millis() as u64,
        )
    }
}

/// A generated node id, `node-` and six random characters.
pub fn generated_node_id() -> String {
    format!("node-{}", crate::ids::secret(6).to_lowercase())
}

/// The state of this node's bus link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusState {
    /// `--bus memory`: a single node, nothing to connect to.
    Standalone,
    /// Not connected yet.
    Connecting,
    /// Connected and subscribed; this node's heartbeats come back.
    Connected,
    /// Connected, but this node's own heartbeats stopped coming back.
    Stalled,
    /// Not connected; retrying with backoff.
    Disconnected,
    /// The node left the cluster (shutting down).
    Left,
}

impl BusState {
    /// The state as `/readyz` and `/metrics` spell it.
    pub fn name(self) -> &'static str {
        match self {
            BusState::Standalone => "standalone",
            BusState::Connecting => "connecting",
            BusState::Connected => "connected",
            BusState::Stalled => "stalled",
            BusState::Disconnected => "disconnected",
            BusState::Left => "left",
        }
    }
}

impl Serialize for BusState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Cluster numbers for `/readyz` and metrics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterStats {
    /// This node's id.
    pub node_id: String,
    /// This node's epoch (start time in µs; grows with each restart).
    pub epoch: u64,
    /// `memory`, `redis` or `redis-cluster`.
    pub bus: &'static str,
    /// Where the bus connects (password hidden).
    pub bus_target: String,
    /// The link's state.
    pub bus_state: BusState,
    /// True when the node sees the whole cluster (or is standalone).
    pub ready: bool,
    /// Why the link is down, if it is.
    pub last_error: Option<String>,
    /// Nodes alive, this one included.
    pub nodes: usize,
    /// True on the one node that reports the cluster's presence events
    /// (webhooks): the oldest live node that is connected and synced.
    pub event_sender: bool,
    /// Open connections on all nodes (others as last reported).
    pub cluster_connections: usize,
    /// Last round trip of this node's heartbeat over the bus, in ms.
    pub bus_lag_ms: Option<u64>,
    /// Delta frames this node has sent in this run.
    pub seq: u64,
    /// Frames handed to the transport.
    pub frames_sent: u64,
    /// Frames received (this node's own included).
    pub frames_received: u64,
    /// Frames dropped because the transport queue was full.
    pub frames_dropped: u64,
    /// Messages (publishes, direct sends, privacy changes) waiting to be
    /// published on the bus (while it is down, until the other nodes are
    /// back).
    pub messages_waiting: usize,
    /// Messages dropped because too many waited for the bus.
    pub messages_dropped: u64,
    /// Frames that could not be parsed.
    pub malformed_frames: u64,
    /// Replication counters (resyncs, gaps, timeouts, …).
    #[serde(flatten)]
    pub counters: Counters,
    /// The other nodes.
    pub peers: Vec<PeerInfo>,
}

impl ClusterStats {
    /// The numbers of a node that has just started: alone, nothing sent or
    /// received; ready only when standalone.
    fn initial(
        node_id: String,
        epoch: u64,
        bus: &'static str,
        bus_target: String,
        bus_state: BusState,
    ) -> Self {
        ClusterStats {
            node_id,
            epoch,
            bus,
            bus_target,
            bus_state,
            ready: bus_state == BusState::Standalone,
            last_error: None,
            nodes: 1,
            event_sender: bus_state == BusState::Standalone,
            cluster_connections: 0,
            bus_lag_ms: None,
            seq: 0,
            frames_sent: 0,
            frames_received: 0,
            frames_dropped: 0,
            messages_waiting: 0,
            messages_dropped: 0,
            malformed_frames: 0,
            counters: Counters::default(),
            peers: Vec::new(),
        }
    }
}

/// What the presence services do with what other nodes report; set with
/// [`Prepared::start`]. Called on the replication task, in bus order:
/// implementations must be quick and must not block.
pub trait RemoteHandler: Send + Sync + 'static {
    /// A direct message for everyone present to `channel` came from
    /// another node: deliver it to this node's lease holders that are not
    /// subscribed, and to this node's connections of `lease_users` (users
    /// holding a lease on `channel` on other nodes).
    fn send_to_present(&self, channel: &str, msg: &DirectMessage, lease_users: &[Arc<str>]);
    /// Another node stored a privacy choice for `uid`.
    fn privacy_changed(&self, uid: &str, visible: Option<bool>);
    /// A connection (`conn`) or a lease presence (`!conn`) of `uid` on
    /// another node appeared (`up`) or went away.
    fn remote_user(&self, uid: &Arc<str>, conn: bool, up: bool);
    /// This node became (`sending`) or stopped being the one that reports
    /// the cluster's presence events (webhooks): the oldest live node that
    /// is connected and synced. On becoming it, events seen since
    /// `replay_from_ms` (Unix ms) may not have been reported by anyone.
    fn event_sender_changed(&self, sending: bool, replay_from_ms: u64);
    /// The bus link came (back) up: anything shared that other nodes
    /// changed meanwhile (privacy choices) must be re-read.
    fn bus_reconnected(&self);
    /// A backend on `node` sent an application message (`id`) on `topic`.
    fn app_message(&self, node: &str, id: String, topic: &str, data: serde_json::Value);
    /// `node` reported an event about its own connections (see
    /// [`Cluster::report`]).
    fn remote_report(&self, node: &str, event: serde_json::Value);
    /// Connection `conn` (of `uid`, or anonymous; speaking `protocol`) was
    /// on `node`, which vanished without closing it.
    fn connection_lost(
        &self,
        node: &str,
        conn: &str,
        uid: Option<&Arc<str>>,
        protocol: Option<&str>,
    );
}

struct Shared {
    stats: Arc<Mutex<ClusterStats>>,
    commands: Option<mpsc::Sender<Command>>,
    /// This node's ordered op stream (the one the observer feeds).
    ops: Option<mpsc::UnboundedSender<Op>>,
    lease_users: LeaseUsers,
}

/// A handle on this node's cluster membership. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("stats", &self.stats())
            .finish()
    }
}

fn epoch_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Cluster {
    /// A standalone node (`--bus memory`).
    pub fn standalone(node_id: &str) -> Self {
        let stats = ClusterStats::initial(
            node_id.to_string(),
            epoch_now(),
            "memory",
            "none (standalone)".into(),
            BusState::Standalone,
        );
        Cluster {
            shared: Arc::new(Shared {
                stats: Arc::new(Mutex::new(stats)),
                commands: None,
                ops: None,
                lease_users: LeaseUsers::default(),
            }),
        }
    }

    /// A snapshot of the cluster numbers.
    pub fn stats(&self) -> ClusterStats {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// This node's id.
    pub fn node_id(&self) -> String {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .node_id
            .clone()
    }

    /// True when this node can serve the whole cluster's presence.
    pub fn ready(&self) -> bool {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ready
    }

    /// Sends `msg` to the connections `to` names on every other node
    /// (after this node's earlier publishes). Returns false on a
    /// standalone node, where there is nobody else to tell.
    pub fn forward_direct(&self, to: DirectTarget, msg: &DirectMessage) -> bool {
        self.send_op(Op::Direct(WireDirect::from_message(to, msg)))
    }

    /// Tells the other nodes that `uid`'s privacy choice, already in the
    /// shared store, is now `visible`.
    pub fn forward_privacy(&self, uid: &str, visible: Option<bool>) -> bool {
        self.send_op(Op::Privacy {
            uid: uid.to_string(),
            visible,
        })
    }

    /// Sends a backend's application message to the other nodes (after
    /// this node's earlier publishes).
    pub fn forward_app(&self, id: &str, topic: &str, data: serde_json::Value) -> bool {
        self.send_op(Op::App {
            id: id.to_string(),
            topic: topic.to_string(),
            data,
        })
    }

    /// Whether other nodes may exist (false for a standalone node).
    pub fn replicates(&self) -> bool {
        self.shared.ops.is_some()
    }

    /// Hands an event this node reported about its own connections (its
    /// webhook JSON) to the other nodes' event-stream readers.
    pub fn report(&self, event: serde_json::Value) -> bool {
        self.send_op(Op::Report { event })
    }

    fn send_op(&self, op: Op) -> bool {
        match &self.shared.ops {
            Some(ops) => ops.send(op).is_ok(),
            None => false,
        }
    }

    /// The users holding a lease on `channel` on other nodes.
    pub fn remote_lease_users(&self, channel: &str) -> Vec<Arc<str>> {
        engine::remote_lease_users(&self.shared.lease_users, channel)
    }

    /// Has the other nodes close their connections of `to` with `reason`
    /// (this node closes its own itself).
    pub fn forward_kick(&self, to: KickTarget, reason: &str) -> bool {
        self.send_op(Op::Kick {
            to,
            reason: reason.to_string(),
        })
    }

    /// `uid`'s connections on the other nodes (none when standalone).
    pub async fn remote_connections_of(&self, uid: &str) -> Vec<state::RemoteConnection> {
        let Some(commands) = &self.shared.commands else {
            return Vec::new();
        };
        let (reply, answer) = oneshot::channel();
        if commands
            .send(Command::ConnectionsOf(uid.to_string(), reply))
            .await
            .is_err()
        {
            return Vec::new();
        }
        tokio::time::timeout(Duration::from_secs(2), answer)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }

    /// Stops reporting the cluster's events before this node closes its
    /// clients and leaves: the next oldest node reports their removal,
    /// from the changes this node still replicates until [`Self::leave`].
    pub async fn hand_over(&self) {
        let Some(commands) = &self.shared.commands else {
            return;
        };
        let (reply, done) = oneshot::channel();
        if commands.send(Command::HandOver(reply)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), done).await;
        }
    }

    /// Sends what this node still has to replicate, tells the other nodes
    /// it is leaving (they drop what is left of its members at once) and
    /// stops replicating. Waits at most about a second.
    pub async fn leave(&self) {
        let Some(commands) = &self.shared.commands else {
            return;
        };
        let (reply, done) = oneshot::channel();
        if commands.send(Command::Leave(reply)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), done).await;
        }
    }
}

/// A cluster member that has its observer but is not running yet: build
/// the core with [`Prepared::observer`], then [`Prepared::start`] it.
pub struct Prepared {
    config: ClusterConfig,
    bus: Box<dyn Bus>,
    observer: Arc<ClusterObserver>,
    local_rx: mpsc::UnboundedReceiver<wire::Op>,
}

impl Prepared {
    /// The observer to pass to [`Presence::with_observers`].
    pub fn observer(&self) -> Arc<dyn PresenceObserver> {
        self.observer.clone()
    }

    /// Starts replication for `presence` (which must have been built with
    /// [`Prepared::observer`]) on the current Tokio runtime; `handler`
    /// (the presence services) learns what the other nodes report.
    pub fn start(self, presence: Presence, handler: Option<Arc<dyn RemoteHandler>>) -> Cluster {
        let handler_cell = Arc::new(OnceLock::new());
        if let Some(h) = handler {
            let _ = handler_cell.set(h);
        }
        let lease_users = LeaseUsers::default();
        let ops = self.observer.sender();
        let epoch = epoch_now();
        let stats = Arc::new(Mutex::new(ClusterStats::initial(
            self.config.node_id.clone(),
            epoch,
            self.bus.kind(),
            self.bus.describe(),
            BusState::Connecting,
        )));
        let (link, end) = bus::link();
        tracing::info!(node = %self.config.node_id, bus = %self.bus.describe(), "joining the cluster");
        self.bus.start(end);
        let (commands, commands_rx) = mpsc::channel(4);
        let engine = Engine {
            state: ClusterState::new(&self.config.node_id, epoch, self.config.timing()),
            presence,
            local_rx: self.local_rx,
            link,
            commands: commands_rx,
            stats: stats.clone(),
            clock: tokio::time::Instant::now(),
            bus_state: BusState::Connecting,
            last_error: None,
            frames_sent: 0,
            frames_received: 0,
            frames_dropped: 0,
            malformed_frames: 0,
            local_conns: 0,
            last_duplicate_warning: None,
            handler: handler_cell,
            counted: Default::default(),
            event_sender: false,
            leaving: false,
            replay_from_ms: 0,
            lease_users: lease_users.clone(),
            backlog: Default::default(),
        };
        tokio::spawn(engine.run());
        Cluster {
            shared: Arc::new(Shared {
                stats,
                commands: Some(commands),
                ops: Some(ops),
                lease_users,
            }),
        }
    }
}

/// Prepares cluster membership over `bus` (any transport, e.g. a
/// [`memory::MemoryHub`] for several nodes in one process).
pub fn prepare_with_bus(config: ClusterConfig, bus: Box<dyn Bus>) -> Prepared {
    let (observer, local_rx) = ClusterObserver::new();
    Prepared {
        config,
        bus,
        observer: Arc::new(observer),
        local_rx,
    }
}

/// Starts a prepared membership for `presence` (see [`Prepared::start`]),
/// or a standalone one.
pub fn start(
    prepared: Option<Prepared>,
    presence: &Presence,
    node_id: &str,
    handler: Option<Arc<dyn RemoteHandler>>,
) -> Cluster {
    match prepared {
        Some(prepared) => prepared.start(presence.clone(), handler),
        None => Cluster::standalone(node_id),
    }
}

/// Prepares cluster membership as configured, or None for a standalone
/// node (`--bus memory`).
pub fn prepare(config: &ClusterConfig) -> Result<Option<Prepared>, String> {
    config.validate()?;
    match &config.bus {
        BusSpec::Memory => Ok(None),
        BusSpec::Redis(url) => {
            let channel = format!("{}:{BUS_CHANNEL}", config.prefix);
            let bus = redis::RedisBus::new(url, &channel, config.tls_ca_file.as_deref())?;
            Ok(Some(prepare_with_bus(config.clone(), Box::new(bus))))
        }
        BusSpec::Postgres(url) => {
            let bus =
                postgres::PostgresBus::new(url, &config.prefix, config.tls_ca_file.as_deref())?;
            Ok(Some(prepare_with_bus(config.clone(), Box::new(bus))))
        }
        BusSpec::Nats(url) => {
            let bus = nats::NatsBus::new(url, &config.prefix, config.tls_ca_file.as_deref())?;
            Ok(Some(prepare_with_bus(config.clone(), Box::new(bus))))
        }
    }
}
