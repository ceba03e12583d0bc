//! The replication task: one per node. It owns the [`ClusterState`] and
//! moves things between it, the local presence core and the bus:
//! - this node's presence changes, subscriber counts and publishes (from
//!   [`ClusterObserver`]) become `ops` frames, in the order the core
//!   reported them; messages that cannot go out wait in the [`Backlog`];
//! - frames from the bus go through the state, whose effects are applied
//!   to the core as `Origin::Remote` presences and remote deliveries;
//! - a timer sends heartbeats and runs the state's periodic checks.
//!
//! Everything happens on this one task, so the state needs no lock and the
//! effects reach the core in the order the state produced them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use super::backlog::Backlog;
use super::bus::{BusEvent, BusLink, Outgoing};
use super::state::{ClusterState, Effect, Notice, PresenceKey};
use super::wire::{
    Body, CONNS_CHANNEL, DirectTarget, Frame, KickTarget, Op, PresenceRecord, WireMessage,
    pid_to_conn,
};
use super::{BusState, ClusterStats, RemoteHandler};
use crate::ids::ConnId;
use crate::outbox::{CLOSE_KICKED, CloseReason};
use crate::presence::{ChannelMessage, Origin, Presence, PresenceDelta, PresenceObserver};

/// The presence id prefix of a user's lease on another node.
const USER_LEASE_PREFIX: &str = "lease:user:";

/// Users holding a lease on other nodes: channel → user → presences.
pub(super) type LeaseUsers = Arc<Mutex<HashMap<String, HashMap<Arc<str>, usize>>>>;

/// Ops sent in one frame at most.
const MAX_OPS_PER_FRAME: usize = 512;
/// How long leaving waits for the goodbye frame to go out.
const BYE_WAIT: Duration = Duration::from_secs(1);

/// Feeds this node's presence changes and publishes to the engine. Only
/// local presences (connections, leases) are replicated; presences of
/// other nodes come from the bus and are not sent back.
pub struct ClusterObserver {
    tx: mpsc::UnboundedSender<Op>,
}

impl ClusterObserver {
    pub(super) fn new() -> (Self, mpsc::UnboundedReceiver<Op>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (ClusterObserver { tx }, rx)
    }

    /// Another sender into the same ordered op stream.
    pub(super) fn sender(&self) -> mpsc::UnboundedSender<Op> {
        self.tx.clone()
    }
}

/// The presence id of a local origin, or None for a remote one.
fn local_pid(origin: &Origin) -> Option<String> {
    match origin {
        Origin::Local(conn) => Some(conn.to_string()),
        Origin::Lease(id) => Some(format!("lease:{id}")),
        Origin::Remote { .. } => None,
    }
}

impl PresenceObserver for ClusterObserver {
    fn presence_changed(&self, channel: &str, delta: &PresenceDelta) {
        let Some(pid) = local_pid(&delta.origin) else {
            return;
        };
        let op = match &delta.info {
            Some(info) => Op::Put(PresenceRecord {
                ch: channel.to_string(),
                pid,
                uid: delta.user_id.to_string(),
                info: (**info).clone(),
            }),
            None => Op::Del {
                ch: channel.to_string(),
                pid,
                uid: delta.user_id.to_string(),
            },
        };
        // Fails only once the engine has stopped (node leaving).
        let _ = self.tx.send(op);
    }

    fn published(&self, msg: &ChannelMessage) {
        let _ = self.tx.send(Op::Msg(WireMessage::from_message(msg)));
    }

    fn subscribers_changed(&self, channel: &str, count: usize) {
        let _ = self.tx.send(Op::Subs {
            ch: channel.to_string(),
            n: count,
        });
    }

    fn connected(&self, conn: ConnId, user_id: Option<&Arc<str>>, protocol: &'static str) {
        let _ = self.tx.send(Op::Put(PresenceRecord {
            ch: CONNS_CHANNEL.to_string(),
            pid: conn.to_string(),
            uid: user_id.map(|u| u.to_string()).unwrap_or_default(),
            info: serde_json::Value::String(protocol.to_string()),
        }));
    }

    fn user_changed(
        &self,
        conn: ConnId,
        _old: Option<&Arc<str>>,
        new: Option<&Arc<str>>,
        protocol: &'static str,
    ) {
        // A put with another uid replaces the record (receivers see the
        // old user's connection go and the new one's come).
        self.connected(conn, new, protocol);
    }

    fn disconnected(
        &self,
        conn: ConnId,
        user_id: Option<&Arc<str>>,
        _protocol: &'static str,
        _reason: Option<&crate::outbox::CloseReason>,
    ) {
        let _ = self.tx.send(Op::Del {
            ch: CONNS_CHANNEL.to_string(),
            pid: conn.to_string(),
            uid: user_id.map(|u| u.to_string()).unwrap_or_default(),
        });
    }
}

/// Requests to the engine.
pub(super) enum Command {
    /// Stop reporting the cluster's events: this node is about to close
    /// its clients and leave, and the next oldest node reports their
    /// removal (as it would after the goodbye).
    HandOver(oneshot::Sender<()>),
    /// Say goodbye to the cluster and stop.
    Leave(oneshot::Sender<()>),
    /// A user's connections on the other nodes.
    ConnectionsOf(String, oneshot::Sender<Vec<super::state::RemoteConnection>>),
}

/// The replication task's state.
pub(super) struct Engine {
    pub(super) state: ClusterState,
    pub(super) presence: Presence,
    pub(super) local_rx: mpsc::UnboundedReceiver<Op>,
    pub(super) link: BusLink,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) stats: Arc<Mutex<ClusterStats>>,
    pub(super) clock: Instant,
    pub(super) bus_state: BusState,
    pub(super) last_error: Option<String>,
    pub(super) frames_sent: u64,
    pub(super) frames_received: u64,
    pub(super) frames_dropped: u64,
    pub(super) malformed_frames: u64,
    pub(super) local_conns: usize,
    pub(super) last_duplicate_warning: Option<Instant>,
    /// The services that act on remote users (set once the node runs).
    pub(super) handler: Arc<OnceLock<Arc<dyn RemoteHandler>>>,
    /// Remote connections and user leases counted for user presence.
    pub(super) counted: HashSet<(Arc<str>, PresenceKey)>,
    /// Whether this node reports the cluster's presence events.
    pub(super) event_sender: bool,
    /// Handed over ([`Command::HandOver`]): never the sender again.
    pub(super) leaving: bool,
    /// The last moment (Unix ms) this node knew some node was reporting
    /// events: a node taking over replays what it saw since then.
    pub(super) replay_from_ms: u64,
    /// Users holding a lease on other nodes, per channel.
    pub(super) lease_users: LeaseUsers,
    /// Messages that could not be published yet.
    pub(super) backlog: Backlog,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Engine {
    fn now(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    pub(super) async fn run(mut self) {
        let timing = self.state.timing();
        let mut heartbeat = tokio::time::interval(Duration::from_millis(timing.heartbeat));
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let tick_every = Duration::from_millis((timing.heartbeat / 5).clamp(20, 100));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut link_open = true;
        loop {
            tokio::select! {
                op = self.local_rx.recv() => match op {
                    Some(op) => self.local(op),
                    // The core is gone: nothing left to replicate.
                    None => {
                        self.leave().await;
                        return;
                    }
                },
                event = self.link.rx.recv(), if link_open => match event {
                    Some(event) => self.on_bus(event),
                    None => {
                        link_open = false;
                        self.bus_state = BusState::Disconnected;
                        self.last_error = Some("the bus transport stopped".into());
                        self.state.bus_down();
                        tracing::error!("the cluster bus transport stopped; this node now serves local clients only");
                    }
                },
                _ = heartbeat.tick() => {
                    self.local_conns = self.presence.stats().connections;
                    if self.bus_state != BusState::Disconnected && self.bus_state != BusState::Connecting {
                        let frame = self.state.heartbeat(wall_ms(), self.local_conns);
                        self.send(frame, None);
                    }
                },
                _ = tick.tick() => {
                    let now = self.now();
                    let fx = self.state.tick(now);
                    self.apply(fx);
                    self.flush();
                    self.update_event_sender(now);
                    self.publish_stats();
                },
                cmd = self.commands.recv() => match cmd {
                    Some(Command::HandOver(reply)) => {
                        // Said at once, before the clients' removals: the
                        // next oldest node reports them.
                        self.leaving = true;
                        self.state.set_leaving();
                        if self.bus_state == BusState::Connected {
                            let frame = self.state.heartbeat(wall_ms(), self.local_conns);
                            self.send(frame, None);
                        }
                        self.update_event_sender(self.now());
                        self.publish_stats();
                        let _ = reply.send(());
                    }
                    Some(Command::ConnectionsOf(uid, reply)) => {
                        let _ = reply.send(self.state.remote_connections_of(&uid));
                    }
                    Some(Command::Leave(reply)) => {
                        self.leave().await;
                        let _ = reply.send(());
                        return;
                    }
                    None => {
                        self.leave().await;
                        return;
                    }
                },
            }
        }
    }

    /// Sends this node's changes, batching what is already queued.
    /// Messages go out with them unless older ones wait in the backlog or
    /// the link is down: then they wait too, in order.
    fn local(&mut self, first: Op) {
        let mut ops = vec![first];
        while ops.len() < MAX_OPS_PER_FRAME {
            match self.local_rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        self.settle();
        let count = ops.iter().filter(|op| op.is_message()).count();
        let numbers = self.backlog.numbers(count);
        if self.link_up() && self.backlog.is_empty() {
            let frame = self.state.local_ops(ops);
            self.send_ops(frame, numbers.collect());
            return;
        }
        let (msgs, changes): (Vec<Op>, Vec<Op>) = ops.into_iter().partition(Op::is_message);
        for (n, op) in numbers.zip(msgs) {
            self.keep(n, op);
        }
        if !changes.is_empty() {
            let frame = self.state.local_ops(changes);
            self.send(frame, None);
        }
        self.flush();
    }

    /// True while frames can reach the bus.
    fn link_up(&self) -> bool {
        matches!(self.bus_state, BusState::Connected | BusState::Stalled)
    }

    /// Puts message `n` in the backlog.
    fn keep(&mut self, n: u64, op: Op) {
        if self.backlog.push(n, op) {
            self.warn_overflow();
        }
    }

    fn warn_overflow(&self) {
        tracing::warn!(
            max_messages = super::backlog::MAX_MESSAGES,
            max_bytes = super::backlog::MAX_BYTES,
            "too many messages wait for the cluster bus; dropping the oldest (other nodes will not get them)"
        );
    }

    /// Learns which frames with messages were published; the others'
    /// messages go back to the backlog.
    fn settle(&mut self) {
        let (requeued, overflow) = self.backlog.settle();
        if requeued > 0 {
            tracing::debug!(
                messages = requeued,
                "messages not published on the cluster bus; kept to send again"
            );
        }
        if overflow {
            self.warn_overflow();
        }
    }

    /// Publishes waiting messages, oldest first, while the link is up and
    /// the transport has room (after a reconnect, once the other nodes
    /// have resynced: see [`Backlog::may_flush`]).
    fn flush(&mut self) {
        self.settle();
        if !self.link_up() || !self.backlog.may_flush(self.now(), self.state.all_synced()) {
            return;
        }
        let waiting = self.backlog.len();
        while !self.backlog.is_empty() && self.link.tx.capacity() > 0 {
            let (numbers, ops): (Vec<u64>, Vec<Op>) =
                self.backlog.take(MAX_OPS_PER_FRAME).into_iter().unzip();
            let frame = self.state.local_ops(ops);
            if !self.send_ops(frame, numbers) {
                break;
            }
        }
        if self.backlog.is_empty() {
            tracing::info!(
                messages = waiting,
                "published the messages that waited for the cluster bus"
            );
        }
    }

    /// Sends an `ops` frame whose messages are numbered `numbers` (in
    /// order), keeping them until the transport says they went out.
    /// Returns false if the frame could not be handed to the transport
    /// (its messages are back in the backlog).
    fn send_ops(&mut self, frame: Frame, numbers: Vec<u64>) -> bool {
        if numbers.is_empty() {
            return self.send(frame, None);
        }
        let bytes = frame.encode();
        let Body::Ops { ops, .. } = frame.body else {
            return self.send(frame, None);
        };
        let msgs: Vec<(u64, Op)> = numbers
            .into_iter()
            .zip(ops.into_iter().filter(Op::is_message))
            .collect();
        let (done, outcome) = oneshot::channel();
        let out = Outgoing {
            frame: bytes,
            done: Some(done),
        };
        if self.link_up() && self.try_send(out) {
            self.backlog.track(outcome, msgs);
            return true;
        }
        for (n, op) in msgs {
            self.keep(n, op);
        }
        false
    }

    fn on_bus(&mut self, event: BusEvent) {
        let now = self.now();
        match event {
            BusEvent::Up => {
                tracing::info!(node = %self.state.node(), "connected to the cluster bus");
                self.bus_state = BusState::Connected;
                self.last_error = None;
                let fx = self.state.bus_up(now);
                self.apply(fx);
                if let Some(h) = self.handler.get() {
                    h.bus_reconnected();
                }
                // Messages published meanwhile go after the resync frames,
                // once the other nodes are back too.
                self.settle();
                let timing = self.state.timing();
                self.backlog
                    .hold(now + timing.recovery_grace + timing.node_timeout);
                self.flush();
                self.publish_stats();
            }
            BusEvent::Down(reason) => {
                self.bus_state = BusState::Disconnected;
                self.last_error = Some(reason);
                self.state.bus_down();
                self.publish_stats();
            }
            BusEvent::Frame(bytes) => {
                self.frames_received += 1;
                match Frame::decode(&bytes) {
                    Ok(frame) => {
                        let fx = self.state.receive(frame, now, wall_ms());
                        self.apply(fx);
                        // A state may be the last one waited for.
                        if !self.backlog.is_empty() {
                            self.flush();
                        }
                    }
                    Err(e) => {
                        self.malformed_frames += 1;
                        tracing::debug!(error = %e, "ignored a frame on the cluster bus");
                    }
                }
            }
        }
    }

    /// Hands a frame to the transport; false if it was dropped.
    fn send(&mut self, frame: Frame, done: Option<oneshot::Sender<bool>>) -> bool {
        let out = Outgoing {
            frame: frame.encode(),
            done,
        };
        if self.bus_state == BusState::Disconnected {
            out.finish(false);
            return false;
        }
        self.try_send(out)
    }

    fn try_send(&mut self, out: Outgoing) -> bool {
        match self.link.tx.try_send(out) {
            Ok(()) => {
                self.frames_sent += 1;
                true
            }
            Err(mpsc::error::TrySendError::Full(out) | mpsc::error::TrySendError::Closed(out)) => {
                // The other nodes notice the seq gap and resync; messages
                // in it are kept by the caller.
                self.frames_dropped += 1;
                out.finish(false);
                false
            }
        }
    }

    fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Add { node, key, value } if &*key.ch == CONNS_CHANNEL => {
                    self.count_remote(node, key, &value.uid, true);
                }
                Effect::Remove { node, key, uid } if &*key.ch == CONNS_CHANNEL => {
                    self.count_remote(node, key, &uid, false);
                }
                Effect::Add { node, key, value } => {
                    if key.pid.starts_with(USER_LEASE_PREFIX) {
                        self.count_remote(node.clone(), key.clone(), &value.uid, true);
                    }
                    let origin = Origin::Remote {
                        node: node.clone(),
                        conn: pid_to_conn(&key.pid),
                    };
                    if let Err(e) = self
                        .presence
                        .add_external_presence(&key.ch, &value.uid, origin, value.info)
                    {
                        tracing::warn!(%node, channel = %key.ch, user = %value.uid, error = %e, "a member of another node does not fit in this node's channel limits; make the limits equal on every node");
                    }
                }
                Effect::Remove { node, key, uid } => {
                    if key.pid.starts_with(USER_LEASE_PREFIX) {
                        self.count_remote(node.clone(), key.clone(), &uid, false);
                    }
                    let origin = Origin::Remote {
                        node,
                        conn: pid_to_conn(&key.pid),
                    };
                    self.presence
                        .remove_external_presence(&key.ch, &uid, &origin);
                }
                Effect::Subscribers { node, ch, count } => {
                    self.presence.set_remote_subscribers(&ch, &node, count);
                }
                Effect::Deliver(msg) => match msg.to_message() {
                    Some(msg) => {
                        self.presence.deliver_remote(&msg);
                    }
                    None => self.malformed_frames += 1,
                },
                Effect::Direct(d) => {
                    let Some(msg) = d.to_message() else {
                        self.malformed_frames += 1;
                        continue;
                    };
                    match d.to {
                        DirectTarget::User(uid) => {
                            self.presence.send_to_user(&uid, &msg);
                        }
                        DirectTarget::All => {
                            self.presence.broadcast(&msg);
                        }
                        DirectTarget::Present(ch) => {
                            if let Some(h) = self.handler.get() {
                                let users = remote_lease_users(&self.lease_users, &ch);
                                h.send_to_present(&ch, &msg, &users);
                            }
                        }
                    }
                }
                Effect::Privacy { uid, visible } => {
                    if let Some(h) = self.handler.get() {
                        h.privacy_changed(&uid, visible);
                    }
                }
                Effect::App {
                    node,
                    id,
                    topic,
                    data,
                } => {
                    if let Some(h) = self.handler.get() {
                        h.app_message(&node, id, &topic, data);
                    }
                }
                Effect::Kick { to, reason } => match to {
                    KickTarget::User(uid) => {
                        let reason = CloseReason::new(CLOSE_KICKED, reason);
                        self.presence.close_user(&uid, &reason);
                    }
                    KickTarget::Connection(id) => {
                        if let Some(id) = ConnId::parse(&id) {
                            let reason = CloseReason::new(CLOSE_KICKED, reason);
                            self.presence.close_connection(id, &reason);
                        }
                    }
                    KickTarget::Membership { user, channel } => {
                        self.presence.remove_from_channel(&user, &channel, &reason);
                    }
                },
                Effect::Report { node, event } => {
                    if let Some(h) = self.handler.get() {
                        h.remote_report(&node, event);
                    }
                }
                Effect::ConnectionLost {
                    node,
                    pid,
                    uid,
                    protocol,
                    silent_ms,
                } => {
                    self.presence.connection_lost(silent_ms);
                    if let Some(h) = self.handler.get() {
                        let uid = Some(&uid).filter(|u| !u.is_empty());
                        h.connection_lost(&node, &pid, uid, protocol.as_deref());
                    }
                }
                Effect::Send(frame) => {
                    self.send(frame, None);
                }
                Effect::Notice(notice) => self.log(notice),
            }
        }
    }

    /// Counts a remote connection or user lease presence once, however
    /// often its data changes, and tells user presence.
    fn count_remote(&mut self, node: Arc<str>, key: PresenceKey, uid: &Arc<str>, up: bool) {
        let is_conn = &*key.ch == CONNS_CHANNEL;
        let ch = key.ch.to_string();
        let changed = if up {
            self.counted.insert((node, key))
        } else {
            self.counted.remove(&(node, key))
        };
        if !changed {
            return;
        }
        if !is_conn {
            let mut map = self.lease_users.lock().unwrap_or_else(|p| p.into_inner());
            let users = map.entry(ch.clone()).or_default();
            if up {
                *users.entry(uid.clone()).or_default() += 1;
            } else if let Some(n) = users.get_mut(uid) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    users.remove(uid);
                }
            }
            if users.is_empty() {
                map.remove(&ch);
            }
        }
        // An anonymous connection ("") is nobody's presence.
        if let Some(h) = self.handler.get()
            && !uid.is_empty()
        {
            h.remote_user(uid, is_conn, up);
        }
    }

    fn log(&mut self, notice: Notice) {
        let timeout = self.state.timing().node_timeout;
        match notice {
            Notice::NodeSeen { node } => tracing::info!(%node, "node joined the cluster"),
            Notice::Resynced {
                node,
                added,
                removed,
            } => {
                tracing::debug!(%node, added, removed, "replica replaced by the node's full state")
            }
            Notice::Gap {
                node,
                expected,
                got,
            } => {
                tracing::info!(%node, expected, got, "missed frames of a node; asked for its full state")
            }
            Notice::NodeTimedOut { node, presences } => {
                tracing::warn!(%node, presences, "node silent for over {timeout} ms; removed its members")
            }
            Notice::NodeLeft { node, presences } => {
                tracing::info!(%node, presences, "node left the cluster; removed its members")
            }
            Notice::NodeRestarted { node, presences } => {
                tracing::info!(%node, presences, "node restarted; removed the members of its previous run")
            }
            Notice::DuplicateNodeId { epoch } => {
                let due = self
                    .last_duplicate_warning
                    .is_none_or(|at| at.elapsed() > Duration::from_secs(10));
                if due {
                    self.last_duplicate_warning = Some(Instant::now());
                    tracing::error!(node = %self.state.node(), other_epoch = epoch, "another process uses this node id; give every node its own --node-id");
                }
            }
            Notice::BusStalled => {
                self.bus_state = BusState::Stalled;
                tracing::warn!(
                    "this node's heartbeats stopped coming back over the bus; no node is timed out until they do, and the bus reconnects"
                );
                // A connection can hang without closing: start afresh.
                let _ = self
                    .link
                    .reset
                    .send("this node's own heartbeats stopped coming back".into());
            }
            Notice::BusRecovered => {
                if self.bus_state == BusState::Stalled {
                    self.bus_state = BusState::Connected;
                    tracing::info!("the bus delivers again; resyncing with every node");
                }
            }
        }
    }

    /// Decides whether this node reports the cluster's presence events: the
    /// oldest live node (smallest epoch, then id) that is connected and
    /// synced. Every node runs the same rule on the same membership, so one
    /// node sends, and a node that dies or leaves is replaced once the
    /// others drop it.
    fn update_event_sender(&mut self, now: u64) {
        let wall = wall_ms();
        let connected = self.bus_state == BusState::Connected && self.state.healthy();
        let me = (self.state.epoch(), self.state.node().to_string());
        let peers = self.state.peers(now);
        let older: Vec<_> = peers
            .iter()
            .filter(|p| (p.epoch, p.node.clone()) < me && !p.leaving)
            .collect();
        let sending = connected && older.is_empty() && !self.leaving;
        if self.event_sender {
            self.replay_from_ms = wall;
        } else if connected && let Some(silent) = older.iter().map(|p| p.silent_ms).min() {
            // An older node is sending; it was last heard `silent` ms ago.
            self.replay_from_ms = wall.saturating_sub(silent);
        }
        if sending != self.event_sender {
            self.event_sender = sending;
            // A sender that died may not have sent its last batch: replay
            // from one heartbeat before it was last heard.
            let from = self
                .replay_from_ms
                .saturating_sub(self.state.timing().heartbeat);
            if sending {
                tracing::info!(node = %self.state.node(), "this node now reports the cluster's presence events (webhooks)");
            }
            if let Some(h) = self.handler.get() {
                h.event_sender_changed(sending, from);
            }
        }
    }

    fn publish_stats(&self) {
        let now = self.now();
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.bus_state = self.bus_state;
        stats.ready = self.bus_state == BusState::Connected && self.state.healthy();
        stats.last_error = self.last_error.clone();
        stats.nodes = self.state.node_count();
        stats.event_sender = self.event_sender;
        stats.cluster_connections = self.local_conns + self.state.remote_connections();
        stats.bus_lag_ms = self.state.bus_lag_ms;
        stats.seq = self.state.seq();
        stats.frames_sent = self.frames_sent;
        stats.frames_received = self.frames_received;
        stats.frames_dropped = self.frames_dropped;
        stats.messages_waiting = self.backlog.len();
        stats.messages_dropped = self.backlog.dropped;
        stats.malformed_frames = self.malformed_frames;
        stats.counters = self.state.counters;
        stats.peers = self.state.peers(now);
    }

    async fn leave(&mut self) {
        // The next oldest node reports from here on, this node's own
        // members' removal included.
        if self.event_sender {
            self.event_sender = false;
            if let Some(h) = self.handler.get() {
                h.event_sender_changed(false, 0);
            }
        }
        // What still waits goes out if it can, before the goodbye: the
        // changes queued by closing the clients too.
        while let Ok(op) = self.local_rx.try_recv() {
            self.local(op);
        }
        self.backlog.release();
        self.flush();
        let (done, published) = oneshot::channel();
        let bye = self.state.bye();
        self.send(bye, Some(done));
        let _ = tokio::time::timeout(BYE_WAIT, published).await;
        self.bus_state = BusState::Left;
        self.publish_stats();
        tracing::info!(node = %self.state.node(), "left the cluster");
    }
}

/// The users holding a lease on `channel` on other nodes.
pub(super) fn remote_lease_users(lease_users: &LeaseUsers, channel: &str) -> Vec<Arc<str>> {
    lease_users
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(channel)
        .map(|users| users.keys().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(n: u64) -> ConnId {
        ConnId(n)
    }

    #[test]
    fn only_local_origins_are_replicated() {
        assert_eq!(
            local_pid(&Origin::Local(conn(255))).as_deref(),
            Some("00000000000000ff")
        );
        assert_eq!(
            local_pid(&Origin::Lease(Arc::from("x"))).as_deref(),
            Some("lease:x")
        );
        assert_eq!(
            local_pid(&Origin::Remote {
                node: Arc::from("b"),
                conn: conn(1)
            }),
            None
        );
    }
}
