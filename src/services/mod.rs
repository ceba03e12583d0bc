//! Presence services on top of the core, for clients of every front end
//! (the Telligent seed's content, service and user presence):
//!
//! - [`leases`]: presence to ids (channels) kept alive by refreshes;
//! - [`user_presence`]: online while any connection or lease lives, pushed
//!   to `user:<uid>` as `user.presence` messages;
//! - [`privacy`]: who may be seen, durable in `--data-dir`
//!   ([`privacy_file`]);
//! - [`webhooks`]: signed, batched, retried presence events.
//!
//! [`Services`] wires them to the core: one [`PresenceObserver`] follows
//! connections and presence deltas (it only counts and queues), and a task
//! does the work that calls back into the core (pushing user presence,
//! ending a closed connection's lease).

pub mod event_stream;
pub mod leases;
pub mod privacy;
pub mod privacy_file;
pub mod privacy_nats;
pub mod privacy_postgres;
pub mod privacy_redis;
pub mod rpc;
pub mod user_presence;
pub mod webhook_handover;
pub mod webhook_http;
pub mod webhooks;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::cluster::RemoteHandler;
use crate::cluster::wire::DirectTarget;
use crate::ids::ConnId;
use crate::presence::{ChannelMessage, DirectMessage, Presence, PresenceObserver};
use event_stream::EventStream;
use leases::{LeaseOwner, Leases};
use privacy::{Privacy, PrivacyError, PrivacySettings, PrivacyStatus, PrivacyStore};
use user_presence::{UserChange, UserPresence};
use webhook_handover::Handover;
use webhooks::{WebhookConfig, WebhookEvent, Webhooks};

/// How long a node that does not send webhooks keeps its events, to replay
/// them if it takes over: longer than a node timeout or a Redis outage.
const HELD_EVENTS_RETENTION: Duration = Duration::from_secs(120);

/// The event of user presence messages on `user:<uid>`.
pub const USER_PRESENCE_EVENT: &str = "user.presence";

/// Settings of the presence services.
#[derive(Clone, Debug)]
pub struct ServicesConfig {
    /// Privacy options.
    pub privacy: PrivacySettings,
    /// Where the privacy store lives; None: in memory (lost on restart).
    pub data_dir: Option<PathBuf>,
    /// In a cluster, the bus's engine: privacy choices are kept there
    /// (shared by every node) instead of in `data_dir`.
    pub shared_privacy: Option<crate::cluster::BusSpec>,
    /// What the bus's keys start with (`--bus-prefix`).
    pub bus_prefix: String,
    /// Extra roots for a `rediss://` privacy store (`--tls-ca-file`).
    pub tls_ca_file: Option<PathBuf>,
    /// Lease TTL when a refresh gives none.
    pub lease_ttl: Duration,
    /// Longest TTL a refresh may ask for.
    pub max_lease_ttl: Duration,
    /// Most ids in one lease.
    pub max_lease_ids: usize,
    /// Webhooks (no URLs: none).
    pub webhooks: WebhookConfig,
    /// Part of a cluster: webhooks wait until the cluster makes this node
    /// their sender (see [`webhook_handover`]).
    pub clustered: bool,
    /// Events a reader of `GET /api/events` may fall behind before it
    /// loses the oldest (and is told so).
    pub events_backlog: usize,
    /// Calls answered by the backend (None: no `--rpc-url`).
    pub rpc: Option<rpc::RpcConfig>,
    /// Hidden users' connections are reported too (connection events only;
    /// they still appear in no presence event).
    pub hidden_connection_events: bool,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        ServicesConfig {
            privacy: PrivacySettings::default(),
            data_dir: None,
            shared_privacy: None,
            bus_prefix: crate::cluster::DEFAULT_BUS_PREFIX.into(),
            tls_ca_file: None,
            lease_ttl: Duration::from_secs(30),
            max_lease_ttl: Duration::from_secs(3600),
            max_lease_ids: 100,
            webhooks: WebhookConfig {
                urls: Vec::new(),
                tls_ca_file: None,
                secret: None,
                batch_window: Duration::from_millis(100),
                retry_base: Duration::from_millis(500),
                max_attempts: 8,
                connection_events: false,
            },
            clustered: false,
            events_backlog: 1024,
            rpc: None,
            hidden_connection_events: false,
        }
    }
}

/// Work the observer hands to the services task.
enum Task {
    /// A user's online status changed: push it to `user:<uid>`.
    User(UserChange),
    /// A connection closed: end its lease.
    Closed(ConnId),
}

/// The presence services. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Services {
    inner: Arc<Inner>,
}

struct Inner {
    config: ServicesConfig,
    privacy: Arc<Privacy>,
    users: Arc<UserPresence>,
    leases: Arc<Leases>,
    webhooks: Option<Arc<Webhooks>>,
    events: Arc<EventStream>,
    rpc: Option<Arc<rpc::Rpc>>,
    tasks: mpsc::UnboundedSender<Task>,
    task_rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Task>>>,
    presence: OnceLock<Presence>,
    cluster: Arc<OnceLock<ClusterLink>>,
}

/// This node's cluster membership and id, once attached.
struct ClusterLink {
    cluster: crate::cluster::Cluster,
    node: Arc<str>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Follows the core for the services: counts connections per user, ends
/// closed connections' leases, forwards presence deltas to webhooks.
struct Observer {
    users: Arc<UserPresence>,
    tasks: mpsc::UnboundedSender<Task>,
    webhooks: Option<Arc<Webhooks>>,
    events: Arc<EventStream>,
    privacy: Arc<Privacy>,
    /// `--webhook-connection-events`.
    connection_webhooks: bool,
    /// `--hidden-connection-events`.
    hidden_connections: bool,
    /// The other nodes' readers get this node's connection events and
    /// client messages through it.
    cluster: Arc<OnceLock<ClusterLink>>,
}

impl Observer {
    /// The cluster, when there may be other nodes to tell.
    fn replicating(&self) -> Option<&ClusterLink> {
        self.cluster.get().filter(|l| l.cluster.replicates())
    }

    /// Hands an event about this node's own connections to the local
    /// readers, the other nodes' readers and, if given, the webhooks (sent
    /// by this node: only it sees its connections).
    fn report(&self, event: WebhookEvent, hooks: Option<&Arc<Webhooks>>) {
        self.events.push(&event);
        if let Some(link) = self.replicating()
            && let Ok(json) = serde_json::to_value(&event)
        {
            link.cluster.report(json);
        }
        if let Some(hooks) = hooks {
            hooks.push_now(event);
        }
    }

    /// A connection event for the event stream, and for the webhooks with
    /// `--webhook-connection-events` (sent by this node: only it sees its
    /// connections); none for a hidden user unless
    /// `--hidden-connection-events`.
    fn connection_event(
        &self,
        name: &'static str,
        conn: ConnId,
        user_id: Option<&Arc<str>>,
        protocol: &'static str,
        reason: Option<&crate::outbox::CloseReason>,
    ) {
        let hooks = self.webhooks.as_ref().filter(|_| self.connection_webhooks);
        let hidden = || user_id.is_some_and(|u| !self.privacy.visible(u));
        let unread = !self.events.has_readers() && hooks.is_none() && self.replicating().is_none();
        if unread || (!self.hidden_connections && hidden()) {
            return;
        }
        let mut event = WebhookEvent::new(name, None, user_id.cloned());
        event.connection = Some(conn.to_string());
        event.protocol = Some(protocol);
        event.node = self.cluster.get().map(|l| l.node.clone());
        if name == "connection_closed" {
            event.reason = Some(webhooks::close_kind(reason));
        }
        self.report(event, hooks);
    }
}

impl PresenceObserver for Observer {
    fn connected(&self, conn: ConnId, user_id: Option<&Arc<str>>, protocol: &'static str) {
        if let Some(uid) = user_id {
            self.users.connection_opened(uid);
        }
        self.connection_event("connection_opened", conn, user_id, protocol, None);
    }

    fn disconnected(
        &self,
        conn: ConnId,
        user_id: Option<&Arc<str>>,
        protocol: &'static str,
        reason: Option<&crate::outbox::CloseReason>,
    ) {
        if let Some(uid) = user_id {
            self.users.connection_closed(uid);
        }
        let _ = self.tasks.send(Task::Closed(conn));
        self.connection_event("connection_closed", conn, user_id, protocol, reason);
    }

    fn user_changed(
        &self,
        _conn: ConnId,
        old: Option<&Arc<str>>,
        new: Option<&Arc<str>>,
        _protocol: &'static str,
    ) {
        if let Some(uid) = new {
            self.users.connection_opened(uid);
        }
        if let Some(uid) = old {
            self.users.connection_closed(uid);
        }
    }

    fn forwarded(&self, msg: &ChannelMessage, protocol: &'static str) {
        // Sent by this node whether or not it sends the cluster's other
        // webhooks: only the node the client is connected to sees the
        // message as a client's, so it is sent once per cluster.
        let mut event = webhooks::client_message(msg, protocol);
        event.node = self.cluster.get().map(|l| l.node.clone());
        self.report(event, self.webhooks.as_ref());
    }

    fn channel_batch(
        &self,
        channel: &str,
        occupied: bool,
        vacated: bool,
        deltas: &[crate::presence::PresenceDelta],
    ) {
        if self.webhooks.is_none() && !self.events.has_readers() {
            return;
        }
        for event in webhooks::channel_events(channel, occupied, vacated, deltas) {
            self.events.push(&event);
            if let Some(hooks) = &self.webhooks {
                hooks.push(event);
            }
        }
    }
}

/// Why the services did not start: a setting (fix the configuration) or
/// the privacy store (fix the disk or the engine, then start again).
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error("{0}")]
    Settings(String),
    #[error("{0}")]
    Store(String),
}

impl Services {
    /// Opens the privacy store (in `data_dir`, or in memory) and starts the
    /// webhook senders. Needs a Tokio runtime.
    pub fn new(config: ServicesConfig) -> Result<Services, ServicesError> {
        use crate::cluster::BusSpec;
        let prefix = &config.bus_prefix;
        let ca_file = config.tls_ca_file.as_deref();
        let store: Box<dyn PrivacyStore> = match (&config.shared_privacy, &config.data_dir) {
            (Some(BusSpec::Redis(url)), _) => Box::new(
                privacy_redis::RedisStore::new(url, prefix, ca_file)
                    .map_err(ServicesError::Settings)?,
            ),
            (Some(BusSpec::Postgres(url)), _) => Box::new(
                privacy_postgres::PostgresStore::new(url, prefix, ca_file)
                    .map_err(ServicesError::Settings)?,
            ),
            (Some(BusSpec::Nats(url)), _) => Box::new(
                privacy_nats::NatsStore::new(url, prefix, ca_file)
                    .map_err(ServicesError::Settings)?,
            ),
            (None | Some(BusSpec::Memory), Some(dir)) => {
                Box::new(privacy_file::FileStore::open(dir).map_err(ServicesError::Store)?)
            }
            (None | Some(BusSpec::Memory), None) => Box::new(privacy::MemoryStore),
        };
        Self::with_store(config, store)
    }

    /// Like [`Services::new`] with a given privacy store (e.g. a
    /// cluster-wide one).
    pub fn with_store(
        config: ServicesConfig,
        store: Box<dyn PrivacyStore>,
    ) -> Result<Services, ServicesError> {
        let privacy = Arc::new(Privacy::new(config.privacy, store).map_err(ServicesError::Store)?);
        let webhooks = match config.webhooks.urls.is_empty() {
            true => None,
            false => {
                let handover = match config.clustered {
                    false => Handover::sending(),
                    true => Handover::standby(HELD_EVENTS_RETENTION),
                };
                Some(
                    Webhooks::start(config.webhooks.clone(), handover)
                        .map_err(ServicesError::Settings)?,
                )
            }
        };
        let (tasks, task_rx) = mpsc::unbounded_channel();
        let sink_tasks = tasks.clone();
        let sink_hooks = webhooks.clone();
        let events = Arc::new(EventStream::new(config.events_backlog));
        let sink_events = events.clone();
        let users = Arc::new(UserPresence::new(
            privacy.clone(),
            Box::new(move |change: UserChange| {
                let name = if change.online {
                    "user_online"
                } else {
                    "user_offline"
                };
                let event = WebhookEvent::new(name, None, Some(change.uid.clone()));
                sink_events.push(&event);
                if let Some(hooks) = &sink_hooks {
                    hooks.push(event);
                }
                let _ = sink_tasks.send(Task::User(change));
            }),
        ));
        let leases = Arc::new(Leases::new(privacy.clone(), users.clone()));
        let rpc = match &config.rpc {
            Some(c) => Some(Arc::new(rpc::Rpc::new(c).map_err(ServicesError::Settings)?)),
            None => None,
        };
        Ok(Services {
            inner: Arc::new(Inner {
                config,
                privacy,
                users,
                leases,
                webhooks,
                events,
                rpc,
                tasks,
                task_rx: std::sync::Mutex::new(Some(task_rx)),
                presence: OnceLock::new(),
                cluster: Arc::new(OnceLock::new()),
            }),
        })
    }

    /// The backend that answers clients' calls (`--rpc-url`), if any.
    pub fn rpc(&self) -> Option<&Arc<rpc::Rpc>> {
        self.inner.rpc.as_ref()
    }

    /// The backends' event stream (`GET /api/events`).
    pub fn events(&self) -> &Arc<EventStream> {
        &self.inner.events
    }

    /// The observers to build the core with ([`Presence::with_observers`]).
    pub fn observers(&self) -> Vec<Arc<dyn PresenceObserver>> {
        vec![Arc::new(Observer {
            users: self.inner.users.clone(),
            tasks: self.inner.tasks.clone(),
            webhooks: self.inner.webhooks.clone(),
            events: self.inner.events.clone(),
            privacy: self.inner.privacy.clone(),
            connection_webhooks: self.inner.config.webhooks.connection_events,
            hidden_connections: self.inner.config.hidden_connection_events,
            cluster: self.inner.cluster.clone(),
        })]
    }

    /// Connects the services to the core built with [`Services::observers`]
    /// (installs the privacy policy) and starts their tasks. Call once,
    /// before clients connect.
    pub fn start(&self, presence: &Presence) {
        if self.inner.presence.set(presence.clone()).is_err() {
            return;
        }
        presence.set_visibility_policy(self.inner.privacy.clone());
        self.inner.leases.attach(presence.clone());
        tokio::spawn(self.inner.leases.clone().run_expiry());
        if let Some(late) = self.inner.privacy.take_late_load() {
            let services = self.clone();
            tokio::spawn(async move {
                if let Ok(choices) = late.await {
                    for (uid, visible) in choices {
                        if services.inner.privacy.apply(&uid, Some(visible)) {
                            services.apply_privacy(&uid);
                        }
                    }
                }
            });
        }
        let rx = self
            .inner
            .task_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut rx) = rx {
            let services = self.clone();
            tokio::spawn(async move {
                while let Some(task) = rx.recv().await {
                    match task {
                        Task::User(change) => services.push_user_presence(&change),
                        Task::Closed(conn) => services.inner.leases.end(&LeaseOwner::Conn(conn)),
                    }
                }
            });
        }
    }

    /// The settings.
    pub fn config(&self) -> &ServicesConfig {
        &self.inner.config
    }

    /// The lease registry.
    pub fn leases(&self) -> &Leases {
        &self.inner.leases
    }

    /// User presence.
    pub fn users(&self) -> &UserPresence {
        &self.inner.users
    }

    /// The privacy policy.
    pub fn privacy(&self) -> &Privacy {
        &self.inner.privacy
    }

    /// The webhook queue, if webhooks are configured.
    pub fn webhooks(&self) -> Option<&Webhooks> {
        self.inner.webhooks.as_deref()
    }

    fn presence(&self) -> Option<&Presence> {
        self.inner.presence.get()
    }

    /// Stores `uid`'s privacy choice durably and applies it everywhere:
    /// their connections' memberships on every front end, their leases and
    /// their user presence. Blocking (the store fsyncs): call it from
    /// `spawn_blocking`.
    pub fn set_privacy(
        &self,
        uid: &str,
        visible: Option<bool>,
    ) -> Result<PrivacyStatus, PrivacyError> {
        if self.inner.privacy.set(uid, visible)? {
            self.apply_privacy(uid);
        }
        if let Some(ClusterLink { cluster, .. }) = self.inner.cluster.get() {
            cluster.forward_privacy(uid, visible);
        }
        Ok(self.inner.privacy.status(uid))
    }

    /// Re-applies `uid`'s visibility after the policy's answer changed
    /// (e.g. another node stored a new choice, see [`Privacy::apply`]).
    pub fn apply_privacy(&self, uid: &str) {
        if let Some(p) = self.presence() {
            p.refresh_visibility(uid);
        }
        self.inner.leases.refresh_visibility(uid);
        self.inner.users.refresh(&Arc::from(uid));
    }

    /// Pushes a change to this node's watchers of `user:<uid>` only: in a
    /// cluster every node sees the change and pushes to its own.
    fn push_user_presence(&self, change: &UserChange) {
        let Some(presence) = self.presence() else {
            return;
        };
        let data = serde_json::json!({"uid": &*change.uid, "online": change.online});
        let data = RawValue::from_string(data.to_string()).ok();
        let channel = format!("user:{}", change.uid);
        let id = crate::ids::ulid();
        let msg = ChannelMessage {
            id: id.clone(),
            channel: Arc::from(channel.as_str()),
            event: USER_PRESENCE_EVENT.to_string(),
            data: data.clone(),
            sender: None,
        };
        presence.deliver_remote(&msg);
        let direct = DirectMessage {
            id,
            event: USER_PRESENCE_EVENT.to_string(),
            data,
        };
        let remote_lease_users = self.remote_lease_users(&channel);
        self.deliver_to_lease_holders(&channel, &direct, &remote_lease_users);
    }

    fn remote_lease_users(&self, channel: &str) -> Vec<Arc<str>> {
        match self.inner.cluster.get() {
            Some(ClusterLink { cluster, .. }) => cluster.remote_lease_users(channel),
            None => Vec::new(),
        }
    }

    /// A backend's application message (`POST /api/bus/publish`): to this
    /// node's event-stream readers of `topic` and, through the bus, every
    /// other node's. Returns the message id.
    pub fn bus_publish(&self, topic: &str, data: serde_json::Value) -> String {
        let node = self
            .inner
            .cluster
            .get()
            .map(|c| c.node.clone())
            .unwrap_or_else(|| Arc::from("standalone"));
        let event = webhooks::bus_message(node, topic, data.clone());
        self.inner.events.push(&event);
        if let Some(ClusterLink { cluster, .. }) = self.inner.cluster.get() {
            cluster.forward_app(&event.id, topic, data);
        }
        event.id
    }

    /// Connects the services to this node's cluster membership, so
    /// privacy changes and sends reach the other nodes. Call once.
    pub fn attach_cluster(&self, cluster: &crate::cluster::Cluster) {
        let _ = self.inner.cluster.set(ClusterLink {
            cluster: cluster.clone(),
            node: Arc::from(cluster.node_id()),
        });
    }

    /// Sends a message to everyone present to `channel`, on every node:
    /// as a channel message to its subscribers (hidden users included:
    /// they still receive), and as a direct message (same event and data)
    /// to the connections of lease holders that are not subscribed. In a
    /// cluster the other nodes deliver to their own connections. Returns
    /// (message id, connections reached on this node).
    pub fn send_to_present(
        &self,
        channel: &str,
        event: &str,
        data: Option<Box<RawValue>>,
    ) -> (String, usize) {
        let id = crate::ids::ulid();
        let Some(presence) = self.presence() else {
            return (id, 0);
        };
        let msg = ChannelMessage {
            id: id.clone(),
            channel: Arc::from(channel),
            event: event.to_string(),
            data: data.clone(),
            sender: None,
        };
        let mut reached = presence.publish(&msg);
        let direct = DirectMessage {
            id: id.clone(),
            event: event.to_string(),
            data,
        };
        let remote_lease_users = self.remote_lease_users(channel);
        reached += self.deliver_to_lease_holders(channel, &direct, &remote_lease_users);
        if let Some(ClusterLink { cluster, .. }) = self.inner.cluster.get() {
            cluster.forward_direct(DirectTarget::Present(channel.to_string()), &direct);
        }
        (id, reached)
    }

    /// Delivers `msg` to this node's connections that hold a lease on
    /// `channel` or whose user does (here, or on another node: `lease_users`)
    /// and that are not subscribed to it. Returns the connections reached.
    pub fn deliver_to_lease_holders(
        &self,
        channel: &str,
        msg: &DirectMessage,
        lease_users: &[Arc<str>],
    ) -> usize {
        let Some(presence) = self.presence() else {
            return 0;
        };
        let mut targets: HashSet<ConnId> = HashSet::new();
        for owner in self.inner.leases.holders(channel) {
            match owner {
                LeaseOwner::Conn(c) => {
                    targets.insert(c);
                }
                LeaseOwner::User(uid) => targets.extend(presence.user_connections(&uid)),
            }
        }
        for uid in lease_users {
            targets.extend(presence.user_connections(uid));
        }
        targets
            .into_iter()
            .filter(|&conn| {
                !presence.is_connection_subscribed(conn, channel)
                    && presence.send_to_connection(conn, msg)
            })
            .count()
    }
}

impl RemoteHandler for Services {
    fn app_message(&self, node: &str, id: String, topic: &str, data: serde_json::Value) {
        let mut event = webhooks::bus_message(Arc::from(node), topic, data);
        event.id = id;
        self.inner.events.push(&event);
    }

    fn remote_report(&self, node: &str, event: serde_json::Value) {
        match WebhookEvent::from_report(event) {
            Some(event) => self.inner.events.push(&event),
            None => {
                tracing::debug!(%node, "ignored a report of an unknown event from another node")
            }
        }
    }

    fn connection_lost(
        &self,
        node: &str,
        conn: &str,
        uid: Option<&Arc<str>>,
        protocol: Option<&str>,
    ) {
        let config = &self.inner.config;
        let hooks = self
            .inner
            .webhooks
            .as_ref()
            .filter(|_| config.webhooks.connection_events);
        let hidden = uid.is_some_and(|u| !self.inner.privacy.visible(u));
        if (!self.inner.events.has_readers() && hooks.is_none())
            || (hidden && !config.hidden_connection_events)
        {
            return;
        }
        let event = webhooks::connection_lost(node, conn, uid, protocol);
        self.inner.events.push(&event);
        // Every node sees the loss; the cluster's webhook sender reports it.
        if let Some(hooks) = hooks {
            hooks.push(event);
        }
    }

    fn send_to_present(&self, channel: &str, msg: &DirectMessage, lease_users: &[Arc<str>]) {
        self.deliver_to_lease_holders(channel, msg, lease_users);
    }

    fn privacy_changed(&self, uid: &str, visible: Option<bool>) {
        if self.inner.privacy.apply(uid, visible) {
            self.apply_privacy(uid);
        }
    }

    fn remote_user(&self, uid: &Arc<str>, conn: bool, up: bool) {
        self.inner.users.remote_changed(uid, conn, up);
    }

    fn bus_reconnected(&self) {
        let services = self.clone();
        tokio::spawn(async move {
            let privacy = services.inner.privacy.clone();
            match tokio::task::spawn_blocking(move || privacy.reload()).await {
                Ok(Ok(changed)) => {
                    for uid in changed {
                        services.apply_privacy(&uid);
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not re-read privacy choices after the bus came back; changes made meanwhile on other nodes apply when their users next change them")
                }
                Err(e) => tracing::error!(error = %e, "privacy reload task failed"),
            }
        });
    }

    fn event_sender_changed(&self, sending: bool, replay_from_ms: u64) {
        if let Some(hooks) = &self.inner.webhooks {
            hooks.set_sending(sending, replay_from_ms);
        }
    }
}
