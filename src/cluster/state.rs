//! The replicated presence state of one node, as plain data.
//!
//! Modelled on Phoenix.Tracker's `State`: each node owns its presences (and
//! its per-channel counts of subscriptions that are not memberships) and
//! is the only one that changes them; every other node keeps a *replica*
//! of them, fed by that node's ordered `ops` frames. Each replica remembers
//! the owner's epoch and the last `ops` seq applied, so a missed frame is
//! noticed (the next `ops` or heartbeat seq jumps) and repaired by asking
//! the owner for its full `state`, which replaces the replica. A replica
//! whose owner goes silent for the node timeout is dropped.
//!
//! Nothing here does I/O or reads a clock: every method takes the time
//! (`now`, monotonic milliseconds) and returns [`Effect`]s — presences to
//! add to or remove from the local core, messages to deliver, frames to
//! publish — which the engine carries out. The merge rules are therefore
//! unit-tested below without a network.
//!
//! The rules that keep member events exact:
//! - A replica changes only by applying the owner's frames in seq order or
//!   by replacing it with the owner's state; each change yields exactly one
//!   add or remove per presence, and the core turns presences into member
//!   events (a member leaves when its last presence, on any node, goes).
//! - A replica is dropped once (timeout, `bye`, or a newer epoch of its
//!   node), removing each of its presences once and setting each of its
//!   subscriber counts to 0 once.
//! - Subscriber counts follow the same path as presences (ordered ops,
//!   replaced by a state, dropped with the replica): each change yields
//!   one [`Effect::Subscribers`] with the node's new count for a channel.
//! - While this node's own bus link is down or stalled (its own heartbeats
//!   do not come back), nobody is timed out: silence then says nothing
//!   about the other nodes. When the link recovers, every replica is marked
//!   stale and replaced by a fresh state, so changes made meanwhile become
//!   exact adds and removes (no ghost, no lost leave, no second join).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use super::wire::{Body, CONNS_CHANNEL, Frame, Op, PresenceRecord, WireDirect, WireMessage};

/// Monotonic time in milliseconds (the engine's clock).
pub type Millis = u64;

/// Timings of the replication protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How often a node sends a heartbeat.
    pub heartbeat: Millis,
    /// A node not heard from for this long is considered dead.
    pub node_timeout: Millis,
    /// An unanswered sync request is repeated after this long.
    pub sync_retry: Millis,
    /// Extra patience after this node's bus link recovers, for the other
    /// nodes to reconnect too before they can be timed out.
    pub recovery_grace: Millis,
    /// At most one full state is published per this many ms; more
    /// requests in between are answered together.
    pub state_min_gap: Millis,
}

impl Timing {
    /// Timings derived from the heartbeat interval and node timeout.
    pub fn new(heartbeat: Millis, node_timeout: Millis) -> Self {
        Timing {
            heartbeat,
            node_timeout,
            sync_retry: (2 * heartbeat).max(500),
            recovery_grace: 2_000,
            state_min_gap: 50,
        }
    }
}

/// A presence's identity in a replica: channel and presence id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PresenceKey {
    /// Channel.
    pub ch: Arc<str>,
    /// Presence id on the owning node.
    pub pid: Arc<str>,
}

/// A presence's member key and data.
#[derive(Clone, Debug, PartialEq)]
pub struct PresenceValue {
    /// Member key (user id).
    pub uid: Arc<str>,
    /// Member data.
    pub info: Arc<Value>,
}

/// What the engine must do after a state change.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Add (or replace the data of) a remote presence in the local core.
    Add {
        /// Owning node.
        node: Arc<str>,
        /// Presence identity.
        key: PresenceKey,
        /// Member key and data.
        value: PresenceValue,
    },
    /// Remove a remote presence from the local core.
    Remove {
        /// Owning node.
        node: Arc<str>,
        /// Presence identity.
        key: PresenceKey,
        /// Member key.
        uid: Arc<str>,
    },
    /// Set another node's number of subscriptions to a channel that are
    /// not memberships (0: it has none left).
    Subscribers {
        /// Owning node.
        node: Arc<str>,
        /// Channel.
        ch: Arc<str>,
        /// The node's count.
        count: usize,
    },
    /// Deliver a message published on another node to local subscribers.
    Deliver(WireMessage),
    /// Deliver a direct message sent on another node's HTTP API to local
    /// connections.
    Direct(WireDirect),
    /// Apply a privacy choice stored by another node.
    Privacy {
        /// The user id.
        uid: String,
        /// The choice; None: back to the default.
        visible: Option<bool>,
    },
    /// Hand a backend's application message from `node` to local readers.
    App {
        /// The node it came from.
        node: Arc<str>,
        /// The message id.
        id: String,
        /// The topic.
        topic: String,
        /// The payload.
        data: serde_json::Value,
    },
    /// Hand an event another node reported about its connections to
    /// local event-stream readers.
    Report {
        /// The node it came from.
        node: Arc<str>,
        /// The event (webhook JSON).
        event: serde_json::Value,
    },
    /// Close this node's connections an operator disconnected on another.
    Kick {
        /// Whose.
        to: super::wire::KickTarget,
        /// What the clients are told.
        reason: String,
    },
    /// A connection of a node that vanished (timed out, or restarted
    /// without saying goodbye) is gone with it.
    ConnectionLost {
        /// The lost node.
        node: Arc<str>,
        /// The connection id.
        pid: Arc<str>,
        /// Its user ("" for an anonymous one).
        uid: Arc<str>,
        /// Its protocol (the replicated `info`).
        protocol: Option<String>,
        /// Time from the node's last frame heard to this removal, in ms
        /// (`rollcall_leave_seconds{reason="node_lost"}`).
        silent_ms: Millis,
    },
    /// Publish a frame on the bus.
    Send(Frame),
    /// Something worth a log line.
    Notice(Notice),
}

/// Events of the replication protocol, for logs and counters.
#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    /// A node was heard from for the first time (or after it was dropped).
    NodeSeen { node: Arc<str> },
    /// A node's replica was replaced by its full state.
    Resynced {
        node: Arc<str>,
        added: usize,
        removed: usize,
    },
    /// A node's frames skipped a seq; its state was requested.
    Gap {
        node: Arc<str>,
        expected: u64,
        got: u64,
    },
    /// A node was silent for the node timeout; its presences were removed.
    NodeTimedOut { node: Arc<str>, presences: usize },
    /// A node said goodbye; its presences were removed.
    NodeLeft { node: Arc<str>, presences: usize },
    /// A node restarted (new epoch); the old life's presences were removed.
    NodeRestarted { node: Arc<str>, presences: usize },
    /// Another process uses this node's id.
    DuplicateNodeId { epoch: u64 },
    /// This node's own heartbeats stopped coming back over the bus.
    BusStalled,
    /// The bus works again; all replicas are being refreshed.
    BusRecovered,
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Replicas replaced by a full state.
    pub resyncs: u64,
    /// Seq gaps detected.
    pub gaps: u64,
    /// Sync requests sent.
    pub sync_requests: u64,
    /// Full states published.
    pub states_sent: u64,
    /// Nodes dropped after the node timeout.
    pub nodes_timed_out: u64,
    /// Nodes that said goodbye.
    pub nodes_left: u64,
    /// Times this node's bus link recovered (connect or reconnect).
    pub bus_recoveries: u64,
    /// Frames ignored because they came from an older life of a node or
    /// from a node that already left.
    pub stale_frames: u64,
}

/// One replica of another node.
#[derive(Debug)]
struct Replica {
    epoch: u64,
    /// Last `ops` seq applied.
    seq: u64,
    /// False until a full state was applied, and again after a gap.
    synced: bool,
    last_heard: Millis,
    sync_asked: Option<Millis>,
    conns: usize,
    /// It said it is leaving (it reports no events any more).
    leaving: bool,
    /// The node's subscriptions that are not memberships, per channel
    /// (only channels that have some).
    subs: HashMap<Arc<str>, usize>,
    presences: HashMap<PresenceKey, PresenceValue>,
}

impl Replica {
    fn new(epoch: u64, now: Millis) -> Self {
        Replica {
            epoch,
            seq: 0,
            synced: false,
            last_heard: now,
            sync_asked: None,
            conns: 0,
            leaving: false,
            subs: HashMap::new(),
            presences: HashMap::new(),
        }
    }
}

/// What one replica looks like, for stats.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PeerInfo {
    /// Node id.
    pub node: String,
    /// Its epoch.
    pub epoch: u64,
    /// Last seq applied.
    pub seq: u64,
    /// Whether the replica is complete.
    pub synced: bool,
    /// Presences held for it.
    pub presences: usize,
    /// Its subscriptions that are not memberships, all channels together.
    pub subscriptions: usize,
    /// Open connections it last reported.
    pub connections: usize,
    /// Ms since it was last heard from.
    pub silent_ms: u64,
    /// It is closing its clients to leave.
    pub leaving: bool,
}

/// A connection on another node, as replicated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteConnection {
    /// Its node.
    pub node: String,
    /// Its id.
    pub id: String,
    /// Its protocol.
    pub protocol: String,
    /// The channels it is a member of (not those it only subscribes to:
    /// those are replicated as counts).
    pub channels: Vec<String>,
}

/// This node's presences, its replicas of the other nodes and the
/// protocol's bookkeeping.
#[derive(Debug)]
pub struct ClusterState {
    node: Arc<str>,
    epoch: u64,
    timing: Timing,
    seq: u64,
    local: HashMap<PresenceKey, PresenceValue>,
    /// This node's subscriptions that are not memberships, per channel.
    local_subs: HashMap<Arc<str>, usize>,
    remotes: HashMap<Arc<str>, Replica>,
    /// (node, epoch) that said goodbye, with when.
    departed: HashMap<(Arc<str>, u64), Millis>,
    bus_up: bool,
    stalled: bool,
    last_echo: Millis,
    all_sync_asked: Option<Millis>,
    state_wanted: bool,
    last_state_at: Option<Millis>,
    /// Closing its clients to leave (said in heartbeats).
    leaving: bool,
    /// Counters for metrics.
    pub counters: Counters,
    /// The last measured bus round trip (own heartbeat echo), in ms.
    pub bus_lag_ms: Option<u64>,
}

/// How long a `bye` is remembered, so late frames of that life are ignored.
const DEPARTED_MEMORY: Millis = 10 * 60 * 1000;

impl ClusterState {
    /// The state of node `node` in its life `epoch`, bus link down.
    pub fn new(node: &str, epoch: u64, timing: Timing) -> Self {
        ClusterState {
            node: Arc::from(node),
            epoch,
            timing,
            seq: 0,
            local: HashMap::new(),
            local_subs: HashMap::new(),
            remotes: HashMap::new(),
            departed: HashMap::new(),
            bus_up: false,
            stalled: false,
            last_echo: 0,
            all_sync_asked: None,
            state_wanted: false,
            last_state_at: None,
            leaving: false,
            counters: Counters::default(),
            bus_lag_ms: None,
        }
    }

    /// This node's id.
    pub fn node(&self) -> &Arc<str> {
        &self.node
    }

    /// This node's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The timings in force.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// The last `ops` seq of this node.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// True while the bus link is up and this node's heartbeats come back.
    pub fn healthy(&self) -> bool {
        self.bus_up && !self.stalled
    }

    /// Nodes known alive, this one included.
    pub fn node_count(&self) -> usize {
        self.remotes.len() + 1
    }

    /// True when every other node known alive has its replica complete:
    /// after a recovery, each has shown its state since, so each is
    /// subscribed to the bus again.
    pub fn all_synced(&self) -> bool {
        self.remotes.values().all(|r| r.synced)
    }

    /// Connections on the other nodes, as they last reported them.
    pub fn remote_connections(&self) -> usize {
        self.remotes.values().map(|r| r.conns).sum()
    }

    /// The replicas, sorted by node id.
    pub fn peers(&self, now: Millis) -> Vec<PeerInfo> {
        let mut peers: Vec<PeerInfo> = self
            .remotes
            .iter()
            .map(|(node, r)| PeerInfo {
                node: node.to_string(),
                epoch: r.epoch,
                seq: r.seq,
                synced: r.synced,
                presences: r.presences.len(),
                subscriptions: r.subs.values().sum(),
                connections: r.conns,
                silent_ms: now.saturating_sub(r.last_heard),
                leaving: r.leaving,
            })
            .collect();
        peers.sort_by(|a, b| a.node.cmp(&b.node));
        peers
    }

    /// `uid`'s connections on the other nodes: (node, connection id,
    /// protocol, the channels it is a member of), sorted.
    pub fn remote_connections_of(&self, uid: &str) -> Vec<RemoteConnection> {
        let mut out = Vec::new();
        for (node, r) in &self.remotes {
            for (key, value) in &r.presences {
                if &*key.ch != CONNS_CHANNEL || &*value.uid != uid {
                    continue;
                }
                let mut channels: Vec<String> = r
                    .presences
                    .keys()
                    .filter(|k| k.pid == key.pid && &*k.ch != CONNS_CHANNEL)
                    .map(|k| k.ch.to_string())
                    .collect();
                channels.sort();
                out.push(RemoteConnection {
                    node: node.to_string(),
                    id: key.pid.to_string(),
                    protocol: value.info.as_str().unwrap_or_default().to_string(),
                    channels,
                });
            }
        }
        out.sort_by(|a, b| (&a.node, &a.id).cmp(&(&b.node, &b.id)));
        out
    }

    /// The subscriber counts this node holds for `node`, sorted by channel.
    pub fn subscribers_of(&self, node: &str) -> Vec<(Arc<str>, usize)> {
        let mut list: Vec<_> = self
            .remotes
            .get(node)
            .map(|r| r.subs.iter().map(|(c, n)| (c.clone(), *n)).collect())
            .unwrap_or_default();
        list.sort();
        list
    }

    /// The presences this node holds for `node` (empty if unknown).
    pub fn replica_of(&self, node: &str) -> Vec<(PresenceKey, PresenceValue)> {
        let mut list: Vec<_> = self
            .remotes
            .get(node)
            .map(|r| {
                r.presences
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        list.sort_by(|a, b| (&a.0.ch, &a.0.pid).cmp(&(&b.0.ch, &b.0.pid)));
        list
    }

    fn frame(&self, body: Body) -> Frame {
        Frame {
            node: self.node.to_string(),
            epoch: self.epoch,
            body,
        }
    }

    /// Records a batch of this node's own changes and returns the `ops`
    /// frame that tells the others.
    pub fn local_ops(&mut self, ops: Vec<Op>) -> Frame {
        for op in &ops {
            match op {
                Op::Put(rec) => {
                    self.local.insert(
                        PresenceKey {
                            ch: Arc::from(rec.ch.as_str()),
                            pid: Arc::from(rec.pid.as_str()),
                        },
                        PresenceValue {
                            uid: Arc::from(rec.uid.as_str()),
                            info: Arc::new(rec.info.clone()),
                        },
                    );
                }
                Op::Del { ch, pid, .. } => {
                    self.local.remove(&PresenceKey {
                        ch: Arc::from(ch.as_str()),
                        pid: Arc::from(pid.as_str()),
                    });
                }
                Op::Subs { ch, n } => {
                    set_count(&mut self.local_subs, ch, *n);
                }
                Op::Msg(_)
                | Op::Direct(_)
                | Op::Privacy { .. }
                | Op::App { .. }
                | Op::Report { .. }
                | Op::Kick { .. } => {}
            }
        }
        self.seq += 1;
        self.frame(Body::Ops { seq: self.seq, ops })
    }

    /// A heartbeat frame (`wall_ms`: this node's wall clock).
    pub fn heartbeat(&self, wall_ms: u64, conns: usize) -> Frame {
        self.frame(Body::Hb {
            seq: self.seq,
            sent: wall_ms,
            conns,
            leaving: self.leaving,
        })
    }

    /// From now on this node's heartbeats say it is leaving.
    pub fn set_leaving(&mut self) {
        self.leaving = true;
    }

    /// The goodbye frame.
    pub fn bye(&self) -> Frame {
        self.frame(Body::Bye)
    }

    /// The full state of this node (clears a pending state request).
    pub fn state_frame(&mut self, now: Millis) -> Frame {
        self.state_wanted = false;
        self.last_state_at = Some(now);
        self.counters.states_sent += 1;
        let mut presences: Vec<PresenceRecord> = self
            .local
            .iter()
            .map(|(k, v)| PresenceRecord {
                ch: k.ch.to_string(),
                pid: k.pid.to_string(),
                uid: v.uid.to_string(),
                info: (*v.info).clone(),
            })
            .collect();
        presences.sort_by(|a, b| (&a.ch, &a.pid).cmp(&(&b.ch, &b.pid)));
        let subs = self
            .local_subs
            .iter()
            .map(|(ch, n)| (ch.to_string(), *n))
            .collect();
        self.frame(Body::State {
            seq: self.seq,
            presences,
            subs,
        })
    }

    /// The bus link is up (first connect or reconnect).
    pub fn bus_up(&mut self, now: Millis) -> Vec<Effect> {
        self.bus_up = true;
        self.stalled = false;
        self.last_echo = now;
        self.recover(now)
    }

    /// The bus link is down: nobody is timed out until it is back.
    pub fn bus_down(&mut self) {
        self.bus_up = false;
    }

    /// After the link was down or stalled: every replica may have missed
    /// frames, so all are refreshed from full states; ours goes out too.
    fn recover(&mut self, now: Millis) -> Vec<Effect> {
        self.counters.bus_recoveries += 1;
        let grace_until = now + self.timing.recovery_grace;
        for r in self.remotes.values_mut() {
            r.synced = false;
            r.last_heard = grace_until;
            r.sync_asked = Some(now);
        }
        self.all_sync_asked = Some(now);
        self.counters.sync_requests += 1;
        let state = self.state_frame(now);
        vec![
            Effect::Notice(Notice::BusRecovered),
            Effect::Send(self.frame(Body::Sync { target: None })),
            Effect::Send(state),
        ]
    }

    /// Applies a frame received from the bus.
    pub fn receive(&mut self, frame: Frame, now: Millis, wall_ms: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        if *frame.node == *self.node {
            if frame.epoch != self.epoch {
                fx.push(Effect::Notice(Notice::DuplicateNodeId {
                    epoch: frame.epoch,
                }));
            } else if let Body::Hb { sent, .. } = frame.body {
                self.bus_lag_ms = Some(wall_ms.saturating_sub(sent));
                self.last_echo = now;
                if self.stalled && self.bus_up {
                    self.stalled = false;
                    fx.extend(self.recover(now));
                }
            }
            return fx;
        }
        let node: Arc<str> = match self.remotes.get_key_value(frame.node.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(frame.node.as_str()),
        };
        if self.departed.contains_key(&(node.clone(), frame.epoch)) {
            self.counters.stale_frames += 1;
            return fx;
        }
        match self.remotes.get(&node).map(|r| r.epoch) {
            Some(known) if frame.epoch < known => {
                self.counters.stale_frames += 1;
                return fx;
            }
            Some(known) if frame.epoch > known => {
                if let Some(old) = self.remotes.remove(&node) {
                    let presences = old.presences.len();
                    let silent = now.saturating_sub(old.last_heard);
                    remove_all(&node, old, Some(silent), &mut fx);
                    fx.push(Effect::Notice(Notice::NodeRestarted {
                        node: node.clone(),
                        presences,
                    }));
                }
                self.remotes
                    .insert(node.clone(), Replica::new(frame.epoch, now));
            }
            Some(_) => {}
            None => {
                if matches!(frame.body, Body::Bye) {
                    return fx;
                }
                let mut replica = Replica::new(frame.epoch, now);
                // A node that appears right after our request to all has
                // been asked already.
                if let Some(at) = self.all_sync_asked
                    && now.saturating_sub(at) < self.timing.sync_retry
                {
                    replica.sync_asked = Some(at);
                }
                self.remotes.insert(node.clone(), replica);
                fx.push(Effect::Notice(Notice::NodeSeen { node: node.clone() }));
            }
        }
        let mut need_sync = false;
        let mut want_state = false;
        let mut left = false;
        let Some(r) = self.remotes.get_mut(&node) else {
            return fx;
        };
        r.last_heard = r.last_heard.max(now);
        match frame.body {
            Body::Ops { seq, ops } => {
                if r.synced && seq <= r.seq {
                    // A frame seen already.
                    return fx;
                }
                if r.synced && seq == r.seq + 1 {
                    r.seq = seq;
                    for op in ops {
                        apply_op(&node, r, op, &mut fx);
                    }
                    return fx;
                }
                if r.synced {
                    missed_frames(&mut self.counters, &node, r, seq, &mut fx);
                }
                // Presence changes wait for the state; messages go out now.
                for op in ops {
                    match op {
                        Op::Msg(m) => fx.push(Effect::Deliver(m)),
                        Op::Direct(d) => fx.push(Effect::Direct(d)),
                        Op::Privacy { uid, visible } => fx.push(Effect::Privacy { uid, visible }),
                        Op::App { id, topic, data } => fx.push(Effect::App {
                            node: node.clone(),
                            id,
                            topic,
                            data,
                        }),
                        Op::Report { event } => fx.push(Effect::Report {
                            node: node.clone(),
                            event,
                        }),
                        Op::Kick { to, reason } => fx.push(Effect::Kick { to, reason }),
                        Op::Put(_) | Op::Del { .. } | Op::Subs { .. } => {}
                    }
                }
                need_sync = true;
            }
            Body::Hb {
                seq,
                conns,
                leaving,
                ..
            } => {
                r.conns = conns;
                r.leaving = leaving;
                if r.synced && seq > r.seq {
                    missed_frames(&mut self.counters, &node, r, seq, &mut fx);
                }
                need_sync = !r.synced;
            }
            Body::Sync { target } => {
                want_state = target.as_deref().is_none_or(|t| *t == *self.node);
            }
            Body::State {
                seq,
                presences,
                subs,
            } => {
                if r.synced && seq <= r.seq {
                    return fx;
                }
                let (added, removed) = replace_replica(&node, r, presences, subs, &mut fx);
                r.seq = seq;
                r.synced = true;
                r.sync_asked = None;
                self.counters.resyncs += 1;
                fx.push(Effect::Notice(Notice::Resynced {
                    node: node.clone(),
                    added,
                    removed,
                }));
            }
            Body::Bye => left = true,
        }
        if need_sync {
            self.ask_sync(&node, now, &mut fx);
        }
        if want_state {
            self.state_wanted = true;
            if let Some(frame) = self.state_if_due(now) {
                fx.push(Effect::Send(frame));
            }
        }
        if left && let Some(old) = self.remotes.remove(&node) {
            let presences = old.presences.len();
            remove_all(&node, old, None, &mut fx);
            self.departed.insert((node.clone(), frame.epoch), now);
            self.counters.nodes_left += 1;
            fx.push(Effect::Notice(Notice::NodeLeft { node, presences }));
        }
        fx
    }

    /// Asks `node` for its state unless a request is still fresh.
    fn ask_sync(&mut self, node: &Arc<str>, now: Millis, fx: &mut Vec<Effect>) {
        let retry = self.timing.sync_retry;
        let Some(r) = self.remotes.get_mut(node) else {
            return;
        };
        if r.sync_asked
            .is_some_and(|at| now.saturating_sub(at) < retry)
        {
            return;
        }
        r.sync_asked = Some(now);
        self.counters.sync_requests += 1;
        let frame = self.frame(Body::Sync {
            target: Some(node.to_string()),
        });
        fx.push(Effect::Send(frame));
    }

    fn state_if_due(&mut self, now: Millis) -> Option<Frame> {
        if !self.state_wanted {
            return None;
        }
        let due = self
            .last_state_at
            .is_none_or(|at| now.saturating_sub(at) >= self.timing.state_min_gap);
        due.then(|| self.state_frame(now))
    }

    /// Periodic work: detects a stalled bus, times out silent nodes,
    /// repeats unanswered sync requests, answers deferred state requests.
    pub fn tick(&mut self, now: Millis) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.departed
            .retain(|_, at| now.saturating_sub(*at) < DEPARTED_MEMORY);
        if let Some(frame) = self.state_if_due(now) {
            fx.push(Effect::Send(frame));
        }
        if !self.bus_up {
            return fx;
        }
        if !self.stalled && now.saturating_sub(self.last_echo) > self.timing.node_timeout {
            self.stalled = true;
            fx.push(Effect::Notice(Notice::BusStalled));
        }
        if self.stalled {
            return fx;
        }
        let dead: Vec<Arc<str>> = self
            .remotes
            .iter()
            .filter(|(_, r)| now.saturating_sub(r.last_heard) > self.timing.node_timeout)
            .map(|(n, _)| n.clone())
            .collect();
        for node in dead {
            if let Some(old) = self.remotes.remove(&node) {
                let presences = old.presences.len();
                let silent = now.saturating_sub(old.last_heard);
                remove_all(&node, old, Some(silent), &mut fx);
                self.counters.nodes_timed_out += 1;
                fx.push(Effect::Notice(Notice::NodeTimedOut { node, presences }));
            }
        }
        let unsynced: Vec<Arc<str>> = self
            .remotes
            .iter()
            .filter(|(_, r)| !r.synced)
            .map(|(n, _)| n.clone())
            .collect();
        for node in unsynced {
            self.ask_sync(&node, now, &mut fx);
        }
        fx
    }
}

/// A synced replica of `node` learned that frames up to `seq` exist that it
/// never got: it is no longer synced, and asks for the node's state again.
fn missed_frames(
    counters: &mut Counters,
    node: &Arc<str>,
    r: &mut Replica,
    seq: u64,
    fx: &mut Vec<Effect>,
) {
    counters.gaps += 1;
    fx.push(Effect::Notice(Notice::Gap {
        node: node.clone(),
        expected: r.seq + 1,
        got: seq,
    }));
    r.synced = false;
    r.sync_asked = None;
}

fn apply_op(node: &Arc<str>, r: &mut Replica, op: Op, fx: &mut Vec<Effect>) {
    match op {
        Op::Put(rec) => {
            let key = PresenceKey {
                ch: Arc::from(rec.ch.as_str()),
                pid: Arc::from(rec.pid.as_str()),
            };
            let value = PresenceValue {
                uid: Arc::from(rec.uid.as_str()),
                info: Arc::new(rec.info),
            };
            match r.presences.get(&key) {
                Some(prev) if *prev == value => return,
                Some(prev) if prev.uid != value.uid => fx.push(Effect::Remove {
                    node: node.clone(),
                    key: key.clone(),
                    uid: prev.uid.clone(),
                }),
                _ => {}
            }
            r.presences.insert(key.clone(), value.clone());
            fx.push(Effect::Add {
                node: node.clone(),
                key,
                value,
            });
        }
        Op::Del { ch, pid, .. } => {
            let key = PresenceKey {
                ch: Arc::from(ch.as_str()),
                pid: Arc::from(pid.as_str()),
            };
            if let Some(prev) = r.presences.remove(&key) {
                fx.push(Effect::Remove {
                    node: node.clone(),
                    key,
                    uid: prev.uid,
                });
            }
        }
        Op::Subs { ch, n } => {
            if set_count(&mut r.subs, &ch, n) {
                fx.push(Effect::Subscribers {
                    node: node.clone(),
                    ch: Arc::from(ch.as_str()),
                    count: n,
                });
            }
        }
        Op::Msg(m) => fx.push(Effect::Deliver(m)),
        Op::Direct(d) => fx.push(Effect::Direct(d)),
        Op::Privacy { uid, visible } => fx.push(Effect::Privacy { uid, visible }),
        Op::App { id, topic, data } => fx.push(Effect::App {
            node: node.clone(),
            id,
            topic,
            data,
        }),
        Op::Report { event } => fx.push(Effect::Report {
            node: node.clone(),
            event,
        }),
        Op::Kick { to, reason } => fx.push(Effect::Kick { to, reason }),
    }
}

/// Sets a channel's count in `counts` (0 removes it); true if it changed.
fn set_count(counts: &mut HashMap<Arc<str>, usize>, ch: &str, n: usize) -> bool {
    let old = match n {
        0 => counts.remove(ch),
        _ => match counts.get_mut(ch) {
            Some(count) => Some(std::mem::replace(count, n)),
            None => counts.insert(Arc::from(ch), n),
        },
    };
    old.unwrap_or(0) != n
}

/// Replaces a replica's presences and subscriber counts with a full
/// state; returns the presences (added or changed, removed). Adds and new
/// counts come first, then removes and counts gone to 0: a user who moved
/// from one connection to another on that node stays a member throughout,
/// and a channel that stays occupied is not vacated on the way.
fn replace_replica(
    node: &Arc<str>,
    r: &mut Replica,
    presences: Vec<PresenceRecord>,
    subs: BTreeMap<String, usize>,
    fx: &mut Vec<Effect>,
) -> (usize, usize) {
    let mut fresh = HashMap::with_capacity(presences.len());
    for rec in presences {
        fresh.insert(
            PresenceKey {
                ch: Arc::from(rec.ch.as_str()),
                pid: Arc::from(rec.pid.as_str()),
            },
            PresenceValue {
                uid: Arc::from(rec.uid.as_str()),
                info: Arc::new(rec.info),
            },
        );
    }
    let old = std::mem::replace(&mut r.presences, fresh);
    let mut added = 0;
    for (key, value) in &r.presences {
        match old.get(key) {
            Some(prev) if prev == value => continue,
            Some(prev) if prev.uid != value.uid => fx.push(Effect::Remove {
                node: node.clone(),
                key: key.clone(),
                uid: prev.uid.clone(),
            }),
            _ => {}
        }
        added += 1;
        fx.push(Effect::Add {
            node: node.clone(),
            key: key.clone(),
            value: value.clone(),
        });
    }
    let fresh_subs: HashMap<Arc<str>, usize> = subs
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(ch, n)| (Arc::from(ch.as_str()), n))
        .collect();
    let old_subs = std::mem::replace(&mut r.subs, fresh_subs);
    for (ch, n) in &r.subs {
        if old_subs.get(ch) != Some(n) {
            fx.push(Effect::Subscribers {
                node: node.clone(),
                ch: ch.clone(),
                count: *n,
            });
        }
    }
    let mut removed = 0;
    for (key, prev) in old {
        if !r.presences.contains_key(&key) {
            removed += 1;
            fx.push(Effect::Remove {
                node: node.clone(),
                key,
                uid: prev.uid,
            });
        }
    }
    for ch in old_subs.into_keys() {
        if !r.subs.contains_key(&ch) {
            fx.push(Effect::Subscribers {
                node: node.clone(),
                ch,
                count: 0,
            });
        }
    }
    (added, removed)
}

/// Removes a node's whole replica; `lost`: it vanished without saying
/// goodbye (silent for that long), so its connections are reported lost too.
fn remove_all(node: &Arc<str>, replica: Replica, lost: Option<Millis>, fx: &mut Vec<Effect>) {
    for (key, value) in replica.presences {
        if let Some(silent_ms) = lost
            && &*key.ch == CONNS_CHANNEL
        {
            fx.push(Effect::ConnectionLost {
                node: node.clone(),
                pid: key.pid.clone(),
                uid: value.uid.clone(),
                protocol: value.info.as_str().map(String::from),
                silent_ms,
            });
        }
        fx.push(Effect::Remove {
            node: node.clone(),
            key,
            uid: value.uid,
        });
    }
    for ch in replica.subs.into_keys() {
        fx.push(Effect::Subscribers {
            node: node.clone(),
            ch,
            count: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: Timing = Timing {
        heartbeat: 500,
        node_timeout: 2500,
        sync_retry: 1000,
        recovery_grace: 2000,
        state_min_gap: 50,
    };

    fn put(ch: &str, pid: &str, uid: &str) -> Op {
        Op::Put(PresenceRecord {
            ch: ch.into(),
            pid: pid.into(),
            uid: uid.into(),
            info: json!({"n": uid}),
        })
    }

    fn del(ch: &str, pid: &str, uid: &str) -> Op {
        Op::Del {
            ch: ch.into(),
            pid: pid.into(),
            uid: uid.into(),
        }
    }

    /// Adds and removes as (sign, channel, pid, uid), in order.
    fn changes(fx: &[Effect]) -> Vec<(char, String, String, String)> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Add { key, value, .. } => Some((
                    '+',
                    key.ch.to_string(),
                    key.pid.to_string(),
                    value.uid.to_string(),
                )),
                Effect::Remove { key, uid, .. } => Some((
                    '-',
                    key.ch.to_string(),
                    key.pid.to_string(),
                    uid.to_string(),
                )),
                _ => None,
            })
            .collect()
    }

    fn sent(fx: &[Effect]) -> Vec<Frame> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Send(f) => Some(f.clone()),
                _ => None,
            })
            .collect()
    }

    fn c(sign: char, ch: &str, pid: &str, uid: &str) -> (char, String, String, String) {
        (sign, ch.into(), pid.into(), uid.into())
    }

    /// Two nodes on a perfect bus: b gets a's frames.
    fn pair() -> (ClusterState, ClusterState) {
        let mut a = ClusterState::new("a", 1, T);
        let mut b = ClusterState::new("b", 1, T);
        a.bus_up(0);
        b.bus_up(0);
        (a, b)
    }

    /// Delivers `frame` to `to` and returns the effects.
    fn deliver(to: &mut ClusterState, frame: &Frame, now: Millis) -> Vec<Effect> {
        to.receive(frame.clone(), now, 0)
    }

    /// Makes b hold a synced replica of a.
    fn sync(a: &mut ClusterState, b: &mut ClusterState, now: Millis) -> Vec<Effect> {
        let state = a.state_frame(now);
        deliver(b, &state, now)
    }

    #[test]
    fn ordered_ops_are_applied_and_replicate_exactly() {
        let (mut a, mut b) = pair();
        sync(&mut a, &mut b, 0);
        let f1 = a.local_ops(vec![put("c", "p1", "jim"), put("c", "p2", "ann")]);
        let f2 = a.local_ops(vec![del("c", "p1", "jim")]);
        assert_eq!(
            changes(&deliver(&mut b, &f1, 10)),
            [c('+', "c", "p1", "jim"), c('+', "c", "p2", "ann")]
        );
        assert_eq!(
            changes(&deliver(&mut b, &f2, 11)),
            [c('-', "c", "p1", "jim")]
        );
        // A duplicate changes nothing.
        assert!(changes(&deliver(&mut b, &f2, 12)).is_empty());
        assert_eq!(b.replica_of("a").len(), 1);
        assert_eq!(b.peers(12)[0].seq, 2);
    }

    #[test]
    fn a_gap_asks_for_the_state_and_the_state_repairs_the_replica() {
        let (mut a, mut b) = pair();
        sync(&mut a, &mut b, 0);
        let f1 = a.local_ops(vec![put("c", "p1", "jim"), put("c", "p2", "ann")]);
        deliver(&mut b, &f1, 100);
        // Frame 2 is lost: jim leaves, bob joins.
        let _lost = a.local_ops(vec![del("c", "p1", "jim"), put("c", "p3", "bob")]);
        let f3 = a.local_ops(vec![put("d", "p2", "ann")]);
        let fx = deliver(&mut b, &f3, 200);
        assert!(changes(&fx).is_empty(), "nothing applied past a gap");
        let asked = sent(&fx);
        assert_eq!(asked.len(), 1);
        assert_eq!(
            asked[0].body,
            Body::Sync {
                target: Some("a".into())
            }
        );
        assert_eq!(b.counters.gaps, 1);
        // a answers with its state.
        let fx = deliver(&mut a, &asked[0], 300);
        let state = sent(&fx);
        assert!(matches!(state[0].body, Body::State { seq: 3, .. }));
        let fx = deliver(&mut b, &state[0], 400);
        let mut got = changes(&fx);
        got.sort();
        assert_eq!(
            got,
            [
                c('+', "c", "p3", "bob"),
                c('+', "d", "p2", "ann"),
                c('-', "c", "p1", "jim")
            ]
        );
        assert_eq!(b.counters.resyncs, 2);
        // The next frame applies normally.
        let f4 = a.local_ops(vec![del("c", "p3", "bob")]);
        assert_eq!(
            changes(&deliver(&mut b, &f4, 500)),
            [c('-', "c", "p3", "bob")]
        );
    }

    #[test]
    fn a_lost_last_frame_is_noticed_by_the_heartbeat() {
        let (mut a, mut b) = pair();
        sync(&mut a, &mut b, 0);
        let _lost = a.local_ops(vec![put("c", "p1", "jim")]);
        let fx = deliver(&mut b, &a.heartbeat(0, 3), 100);
        assert_eq!(sent(&fx).len(), 1, "sync requested");
        assert_eq!(b.peers(100)[0].connections, 3);
        let state = a.state_frame(101);
        assert_eq!(
            changes(&deliver(&mut b, &state, 102)),
            [c('+', "c", "p1", "jim")]
        );
    }

    #[test]
    fn a_new_node_is_synced_from_its_state_and_ops_before_it_are_skipped() {
        let mut a = ClusterState::new("a", 1, T);
        a.bus_up(0);
        let f1 = a.local_ops(vec![put("c", "p1", "jim")]);
        let mut b = ClusterState::new("b", 1, T);
        let fx = b.bus_up(0);
        // b asks everyone and shows its own state.
        let frames = sent(&fx);
        assert_eq!(frames[0].body, Body::Sync { target: None });
        assert!(matches!(frames[1].body, Body::State { .. }));
        // An ops frame from a before the state: not applied, no second request.
        let fx = deliver(&mut b, &f1, 10);
        assert!(changes(&fx).is_empty());
        assert!(sent(&fx).is_empty());
        // a answers the request to all (its last state went out long ago).
        let reply = sent(&deliver(&mut a, &frames[0], 100));
        assert_eq!(
            changes(&deliver(&mut b, &reply[0], 12)),
            [c('+', "c", "p1", "jim")]
        );
        // A repeated old frame does not apply twice.
        assert!(changes(&deliver(&mut b, &f1, 13)).is_empty());
    }

    #[test]
    fn messages_are_delivered_even_while_the_replica_is_stale() {
        let (mut a, mut b) = pair();
        let msg = WireMessage {
            id: "01J".into(),
            ch: "c".into(),
            event: "e".into(),
            data: None,
            sender: None,
        };
        let f1 = a.local_ops(vec![Op::Msg(msg.clone())]);
        let fx = deliver(&mut b, &f1, 1);
        assert!(fx.contains(&Effect::Deliver(msg)));
    }

    #[test]
    fn a_silent_node_is_removed_once_after_the_timeout() {
        let (mut a, mut b) = pair();
        sync(&mut a, &mut b, 0);
        let f1 = a.local_ops(vec![put("c", "p1", "jim"), put("c", "p2", "jim")]);
        deliver(&mut b, &f1, 0);
        // b keeps hearing itself.
        let own = b.heartbeat(0, 0);
        for now in (500..=2500).step_by(500) {
            deliver(&mut b, &own, now);
            assert!(changes(&b.tick(now)).is_empty(), "too early at {now}");
        }
        deliver(&mut b, &own, 2600);
        let mut got = changes(&b.tick(2600));
        got.sort();
        assert_eq!(got, [c('-', "c", "p1", "jim"), c('-', "c", "p2", "jim")]);
        assert_eq!(b.node_count(), 1);
        assert!(changes(&b.tick(2700)).is_empty(), "removed only once");
        assert_eq!(b.counters.nodes_timed_out, 1);
    }

    #[test]
    fn nobody_is_timed_out_while_the_own_bus_link_is_down_or_stalled() {
        let (mut a, mut b) = pair();
        sync(&mut a, &mut b, 0);
        deliver(&mut b, &a.local_ops(vec![put("c", "p1", "jim")]), 0);
        b.bus_down();
        assert!(changes(&b.tick(10_000)).is_empty());
        // Up again: everything is refreshed, with grace for the others.
        let fx = b.bus_up(10_000);
        assert_eq!(sent(&fx)[0].body, Body::Sync { target: None });
        let own = b.heartbeat(0, 0);
        deliver(&mut b, &own, 12_600);
        assert!(changes(&b.tick(12_600)).is_empty(), "grace after recovery");
        // Link up but own heartbeats never come back: stalled, no timeouts.
        let fx = b.tick(20_000);
        assert!(fx.contains(&Effect::Notice(Notice::BusStalled)));
        assert!(changes(&fx).is_empty());
        assert!(!b.healthy());
        // The echo returns: recovery, then a's state replaces the replica.
        let fx = deliver(&mut b, &own, 20_100);
        assert!(fx.contains(&Effect::Notice(Notice::BusRecovered)));
        assert!(b.healthy());
        let state = a.state_frame(20_101);
        assert!(changes(&deliver(&mut b, &state, 20_102)).is_empty());
    }

    #[test]
    fn changes_made_during_an_outage_become_exact_adds_and_removes() {
        let (mut a, mut b) = pair();
        sync(&mut a, &mut b, 0);
        deliver(
            &mut b,
            &a.local_ops(vec![
                put("c", "p1", "jim"),
                put("c", "p2", "ann"),
                put("c", "p4", "eve"),
            ]),
            0,
        );
        b.bus_down();
        // Lost while b was cut off: jim moves to another connection, ann
        // leaves, bob joins, eve changes her data.
        let _ = a.local_ops(vec![
            put("c", "p5", "jim"),
            del("c", "p1", "jim"),
            del("c", "p2", "ann"),
            put("c", "p3", "bob"),
        ]);
        let _ = a.local_ops(vec![Op::Put(PresenceRecord {
            ch: "c".into(),
            pid: "p4".into(),
            uid: "eve".into(),
            info: json!({"away": true}),
        })]);
        b.bus_up(5000);
        // An ops frame before the state is not applied.
        let f = a.local_ops(vec![put("x", "p9", "zed")]);
        assert!(changes(&deliver(&mut b, &f, 5001)).is_empty());
        let state = a.state_frame(5002);
        let fx = deliver(&mut b, &state, 5003);
        let got = changes(&fx);
        // Adds come before removes, so jim never stops being a member.
        let first_remove = got.iter().position(|x| x.0 == '-').unwrap();
        assert!(got[..first_remove].iter().all(|x| x.0 == '+'));
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                c('+', "c", "p3", "bob"),
                c('+', "c", "p4", "eve"),
                c('+', "c", "p5", "jim"),
                c('+', "x", "p9", "zed"),
                c('-', "c", "p1", "jim"),
                c('-', "c", "p2", "ann"),
            ]
        );
        let mut want = a.replica_of_self();
        want.sort_by(|x, y| (&x.0.ch, &x.0.pid).cmp(&(&y.0.ch, &y.0.pid)));
        assert_eq!(b.replica_of("a"), want);
    }

    #[test]
    fn bye_removes_at_once_and_late_frames_of_that_life_are_ignored() {
        let (mut a, mut b) = pair();
        sync(&mut a, &mut b, 0);
        deliver(&mut b, &a.local_ops(vec![put("c", "p1", "jim")]), 0);
        let fx = deliver(&mut b, &a.bye(), 1);
        assert_eq!(changes(&fx), [c('-', "c", "p1", "jim")]);
        let late = a.local_ops(vec![put("c", "p2", "ann")]);
        assert!(deliver(&mut b, &late, 2).is_empty());
        assert_eq!(b.node_count(), 1);
        assert_eq!(b.counters.nodes_left, 1);
    }

    #[test]
    fn a_restarted_node_replaces_its_previous_life() {
        let (mut a, mut b) = pair();
        sync(&mut a, &mut b, 0);
        deliver(&mut b, &a.local_ops(vec![put("c", "p1", "jim")]), 0);
        let mut a2 = ClusterState::new("a", 2, T);
        let fx = a2.bus_up(100);
        let mut got = Vec::new();
        for f in sent(&fx) {
            got.extend(changes(&deliver(&mut b, &f, 100)));
        }
        assert_eq!(got, [c('-', "c", "p1", "jim")]);
        // Frames of the old life are ignored from now on.
        assert!(
            changes(&deliver(
                &mut b,
                &a.local_ops(vec![put("c", "p7", "x")]),
                101
            ))
            .is_empty()
        );
        assert_eq!(b.counters.stale_frames, 1);
        assert_eq!(b.peers(101)[0].epoch, 2);
    }

    #[test]
    fn state_requests_are_answered_together() {
        let (mut a, _) = pair();
        let ask = |from: &str| Frame {
            node: from.into(),
            epoch: 1,
            body: Body::Sync {
                target: Some("a".into()),
            },
        };
        let first = a.receive(ask("b"), 1000, 0);
        assert_eq!(sent(&first).len(), 1);
        let second = a.receive(ask("c"), 1010, 0);
        assert!(sent(&second).is_empty(), "deferred");
        let later = a.tick(1060);
        assert!(matches!(sent(&later)[0].body, Body::State { .. }));
        // Requests for other nodes are not ours to answer.
        let other = a.receive(
            Frame {
                node: "b".into(),
                epoch: 1,
                body: Body::Sync {
                    target: Some("c".into()),
                },
            },
            2000,
            0,
        );
        assert!(sent(&other).is_empty());
    }

    fn subs(ch: &str, n: usize) -> Op {
        Op::Subs { ch: ch.into(), n }
    }

    /// Subscriber count changes as (node, channel, count), in order.
    fn counts(fx: &[Effect]) -> Vec<(String, String, usize)> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Subscribers { node, ch, count } => {
                    Some((node.to_string(), ch.to_string(), *count))
                }
                _ => None,
            })
            .collect()
    }

    fn n(node: &str, ch: &str, count: usize) -> (String, String, usize) {
        (node.into(), ch.into(), count)
    }

    #[test]
    fn subscriber_counts_replicate_as_ordered_ops() {
        let (mut a, mut b) = pair();
        sync(&mut a, &mut b, 0);
        let f1 = a.local_ops(vec![subs("news", 1), subs("sport", 2)]);
        assert_eq!(
            counts(&deliver(&mut b, &f1, 10)),
            [n("a", "news", 1), n("a", "sport", 2)]
        );
        // The same count again is no change; 0 removes the channel.
        let f2 = a.local_ops(vec![subs("news", 1), subs("news", 3), subs("sport", 0)]);
        assert_eq!(
            counts(&deliver(&mut b, &f2, 11)),
            [n("a", "news", 3), n("a", "sport", 0)]
        );
        assert_eq!(b.subscribers_of("a"), [(Arc::from("news"), 3)]);
        assert_eq!(b.peers(11)[0].subscriptions, 3);
        // The owner's state lists what is left, and nothing at 0.
        let Body::State { subs: listed, .. } = a.state_frame(12).body else {
            panic!("not a state")
        };
        assert_eq!(listed, BTreeMap::from([("news".to_string(), 3)]));
    }

    #[test]
    fn subscriber_counts_past_a_gap_wait_for_the_state_which_repairs_them() {
        let (mut a, mut b) = pair();
        sync(&mut a, &mut b, 0);
        deliver(
            &mut b,
            &a.local_ops(vec![subs("news", 1), subs("old", 4)]),
            10,
        );
        // Lost: news grows, old empties, fresh appears.
        let _lost = a.local_ops(vec![subs("news", 2), subs("old", 0)]);
        let f3 = a.local_ops(vec![subs("fresh", 5)]);
        assert!(
            counts(&deliver(&mut b, &f3, 20)).is_empty(),
            "not past a gap"
        );
        let fx = deliver(&mut b, &a.state_frame(30), 31);
        let got = counts(&fx);
        // New counts first, counts gone to 0 last.
        assert_eq!(got.last(), Some(&n("a", "old", 0)));
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [n("a", "fresh", 5), n("a", "news", 2), n("a", "old", 0)]
        );
        // A later state with the same counts changes nothing.
        let _ = a.local_ops(vec![put("c", "p1", "jim")]);
        let fx = deliver(&mut b, &a.state_frame(40), 41);
        assert!(counts(&fx).is_empty(), "{fx:?}");
    }

    #[test]
    fn subscriber_counts_go_with_their_node() {
        // Timeout.
        let (mut a, mut b) = pair();
        sync(&mut a, &mut b, 0);
        deliver(&mut b, &a.local_ops(vec![subs("news", 2)]), 0);
        let own = b.heartbeat(0, 0);
        deliver(&mut b, &own, 2600);
        assert_eq!(counts(&b.tick(2600)), [n("a", "news", 0)]);
        assert!(counts(&b.tick(2700)).is_empty(), "only once");
        // Goodbye.
        let (mut a, mut b) = pair();
        sync(&mut a, &mut b, 0);
        deliver(&mut b, &a.local_ops(vec![subs("news", 2)]), 0);
        assert_eq!(counts(&deliver(&mut b, &a.bye(), 1)), [n("a", "news", 0)]);
        // Restart: the old life's counts go, the new life's state brings its own.
        let (mut a, mut b) = pair();
        sync(&mut a, &mut b, 0);
        deliver(&mut b, &a.local_ops(vec![subs("news", 2)]), 0);
        let mut a2 = ClusterState::new("a", 2, T);
        a2.local_ops(vec![subs("sport", 1)]);
        let mut got = Vec::new();
        for f in sent(&a2.bus_up(100)) {
            got.extend(counts(&deliver(&mut b, &f, 100)));
        }
        assert_eq!(got, [n("a", "news", 0), n("a", "sport", 1)]);
    }

    #[test]
    fn all_synced_waits_for_every_node_state_after_a_recovery() {
        let (mut a, mut b) = pair();
        assert!(b.all_synced(), "nobody known yet");
        sync(&mut a, &mut b, 0);
        assert!(b.all_synced());
        b.bus_down();
        b.bus_up(1000);
        assert!(!b.all_synced(), "a's replica is stale after the outage");
        deliver(&mut b, &a.state_frame(1001), 1002);
        assert!(b.all_synced());
    }

    #[test]
    fn unanswered_sync_requests_are_repeated() {
        let (mut a, mut b) = pair();
        let _ = a.local_ops(vec![put("c", "p1", "jim")]);
        let hb = a.heartbeat(0, 0);
        let own = b.heartbeat(0, 0);
        // First contact at 2000, after the request to all at 0 went stale.
        let fx = deliver(&mut b, &hb, 2000);
        assert_eq!(sent(&fx).len(), 1);
        deliver(&mut b, &own, 2500);
        deliver(&mut b, &hb, 2500);
        assert!(sent(&b.tick(2500)).is_empty());
        // No answer within sync_retry: the tick asks again.
        deliver(&mut b, &own, 3100);
        assert_eq!(sent(&b.tick(3100)).len(), 1);
        assert_eq!(b.counters.sync_requests, 3);
    }

    #[test]
    fn own_frames_measure_the_lag_and_duplicate_ids_are_reported() {
        let (mut a, _) = pair();
        let hb = a.heartbeat(1_000, 0);
        a.receive(hb, 10, 1_007);
        assert_eq!(a.bus_lag_ms, Some(7));
        let fx = a.receive(
            Frame {
                node: "a".into(),
                epoch: 9,
                body: Body::Bye,
            },
            11,
            0,
        );
        assert_eq!(fx, [Effect::Notice(Notice::DuplicateNodeId { epoch: 9 })]);
    }

    impl ClusterState {
        fn replica_of_self(&self) -> Vec<(PresenceKey, PresenceValue)> {
            self.local
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }
    }
}
