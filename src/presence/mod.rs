//! The presence core: connections, channels, members and event delivery.
//!
//! It knows nothing about wire formats. Adapters call [`Presence`] and get
//! events through their [`Codec`]. Every channel has its own lock; all events
//! of a channel are encoded and queued while that lock is held, which gives
//! each connection one order of events per channel and makes the snapshot a
//! joiner receives consistent with the events that follow it.

mod channel;
mod connection;
mod fanout;
mod identity;
mod invitations;
mod observe;
mod types;
mod update;
mod visibility;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

pub use channel::{Origin, member_weight};
pub use connection::{Connection, OutboxHandle};
pub use invitations::{
    AnswerError, Invitation, InvitationEvent, InvitationOutcome, InviteError,
    MAX_PENDING_INVITATIONS_PER_CONNECTION,
};
pub use observe::{PresenceDelta, PresenceObserver};
pub use types::*;
pub use update::{SubscriptionUpdate, UpdateSubscriptionError};
pub use visibility::{ConnectionRef, VisibilityPolicy};

use channel::{BudgetError, Channel, MemberBudget, Subscriber};
use connection::ConnShared;
use identity::forget_user_connection;

use crate::auth::ChannelRules;
use crate::ids::ConnId;
use crate::outbox::{Outbox, OutboxReceiver};
use crate::policy::{ChannelPolicy, Forward, PublishGrant, Refusal, Requester};

const SHARDS: usize = 32;

type ChannelMap = HashMap<Arc<str>, Arc<Mutex<Channel>>>;

/// A summary of one channel, for listings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ChannelSummary {
    /// The channel name.
    pub name: String,
    /// Distinct members.
    pub members: usize,
    /// Subscribed connections plus member presences not backed by a local
    /// subscription (remote connections, leases), plus other nodes'
    /// subscribers that are not members.
    pub connections: usize,
    /// Member-data bytes in use (JSON size of uid+umd per member).
    pub member_bytes: usize,
}

/// The members and counts of one channel.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelInfo {
    /// The channel name.
    pub name: String,
    /// Subscribed connections (see [`ChannelSummary::connections`]).
    pub connections: usize,
    /// Members in join order.
    pub members: Vec<Member>,
}

/// Counts for health and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Open connections on this node.
    pub connections: usize,
    /// Channels with at least one subscriber or member.
    pub channels: usize,
}

struct Inner {
    limits: Limits,
    shards: Box<[Mutex<ChannelMap>]>,
    conns: Mutex<HashMap<ConnId, Arc<ConnShared>>>,
    users: Mutex<HashMap<Arc<str>, Vec<ConnId>>>,
    hasher: std::hash::RandomState,
    /// Per-channel limits set with [`Presence::set_channel_limits`]; read
    /// on every client publish (reserved channels), written at start.
    channel_limits: std::sync::RwLock<HashMap<Arc<str>, ChannelLimits>>,
    /// Pending invitations (see `invitations.rs`).
    invitations: Mutex<invitations::Registry>,
    /// Modules that follow the core's changes (see `observe.rs`).
    observers: Vec<Arc<dyn PresenceObserver>>,
    /// Which users may be seen (see `visibility.rs`); everyone if unset.
    visibility: std::sync::OnceLock<Arc<dyn VisibilityPolicy>>,
    /// Who may subscribe and publish where; the secure default if unset.
    policy: std::sync::OnceLock<Arc<ChannelPolicy>>,
    /// Membership changes per user (all of its connections together).
    user_rates: Mutex<HashMap<Arc<str>, crate::rate::RateLimiter>>,
}

/// The policy of a core that was given none: grants only.
static DEFAULT_POLICY: std::sync::LazyLock<ChannelPolicy> =
    std::sync::LazyLock::new(ChannelPolicy::default);

/// The presence core. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock must not take the whole server down; the
    // state it protects is kept consistent by the code that mutates it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Presence {
    /// A core with the given limits.
    pub fn new(limits: Limits) -> Self {
        Self::with_observers(limits, Vec::new())
    }

    /// A core with the given limits and observers, which see every
    /// presence change, publish and connection of this node.
    pub fn with_observers(limits: Limits, observers: Vec<Arc<dyn PresenceObserver>>) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        Presence {
            inner: Arc::new(Inner {
                limits,
                shards,
                conns: Mutex::new(HashMap::new()),
                users: Mutex::new(HashMap::new()),
                hasher: std::hash::RandomState::new(),
                channel_limits: std::sync::RwLock::new(HashMap::new()),
                invitations: Mutex::new(invitations::Registry::default()),
                observers,
                visibility: std::sync::OnceLock::new(),
                policy: std::sync::OnceLock::new(),
                user_rates: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A core whose channels are open to anyone, for unit tests of the
    /// core's mechanics (the policy has its own tests).
    #[cfg(test)]
    pub(crate) fn open_for_tests(limits: Limits) -> Self {
        Self::open_with_observers_for_tests(limits, Vec::new())
    }

    /// [`Self::open_for_tests`] with observers.
    #[cfg(test)]
    pub(crate) fn open_with_observers_for_tests(
        limits: Limits,
        observers: Vec<Arc<dyn PresenceObserver>>,
    ) -> Self {
        // The limits hold for every channel, as they did before the policy.
        let mut open = crate::policy::OperatorRule::open("*");
        open.max_member_bytes = Some(limits.max_member_bytes);
        open.max_members = Some(limits.max_members_per_channel);
        let policy = ChannelPolicy::new(crate::policy::PolicyConfig {
            rules: vec![open],
            ..crate::policy::PolicyConfig::default()
        });
        let p = Self::with_observers(limits, observers);
        p.set_policy(Arc::new(policy));
        p
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Sets the channel policy (once, before clients connect); without
    /// one, channels are reachable only through token grants.
    pub fn set_policy(&self, policy: Arc<ChannelPolicy>) {
        if self.inner.policy.set(policy).is_err() {
            tracing::warn!("the channel policy is already set; the new one is ignored");
        }
    }

    /// The channel policy in force.
    pub fn policy(&self) -> &ChannelPolicy {
        match self.inner.policy.get() {
            Some(p) => p,
            None => &DEFAULT_POLICY,
        }
    }

    fn requester<'a>(
        conn: &'a ConnShared,
        access: &'a crate::policy::Access,
        user_id: Option<&'a str>,
        extra: Option<&'a ChannelRules>,
        automatic: bool,
        password: Option<&'a str>,
    ) -> Requester<'a> {
        Requester {
            conn: conn.id,
            protocol: conn.protocol,
            user_id,
            access,
            extra,
            automatic,
            password,
        }
    }

    /// Asks the policy whether `conn` may subscribe to `channel` (with the
    /// extra grants of `opts`), without subscribing.
    pub fn check_subscribe(
        &self,
        conn: &Connection,
        channel: &str,
        extra: Option<&ChannelRules>,
        automatic: bool,
    ) -> Result<(), Refusal> {
        self.check_subscribe_with(conn, channel, extra, automatic, None)
    }

    /// [`Self::check_subscribe`] with a secret the client gave for the
    /// channel (only the backend check sees it).
    fn check_subscribe_with(
        &self,
        conn: &Connection,
        channel: &str,
        extra: Option<&ChannelRules>,
        automatic: bool,
        password: Option<&str>,
    ) -> Result<(), Refusal> {
        self.refuse_reserved(channel)?;
        let shared = &conn.shared;
        let access = shared.access();
        let user = shared.user_id();
        let who = Self::requester(shared, &access, user.as_deref(), extra, automatic, password);
        self.policy().may_subscribe(&who, channel)
    }

    fn reserved_limits(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, ChannelLimits>> {
        self.inner
            .channel_limits
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Channels an adapter reserved ([`Self::set_channel_limits`]) are the
    /// server's own: no client subscribes to or publishes on them.
    fn refuse_reserved(&self, channel: &str) -> Result<(), Refusal> {
        let reserved = self.reserved_limits().contains_key(channel);
        match reserved {
            true => Err(Refusal::Denied(format!(
                "{channel} is reserved for the server; clients cannot use it"
            ))),
            false => Ok(()),
        }
    }

    /// A membership-change bucket for `connections` connections' worth: a
    /// burst that fills every channel a connection may hold, and leaves
    /// them again.
    fn membership_bucket(&self, connections: u32) -> crate::rate::RateLimiter {
        let limits = &self.inner.limits;
        let rate = limits
            .max_membership_changes_per_second
            .saturating_mul(connections);
        let burst = u32::try_from(limits.max_channels_per_connection)
            .unwrap_or(u32::MAX)
            .saturating_mul(2)
            .max(20)
            .saturating_mul(connections);
        crate::rate::RateLimiter::with_burst(rate, burst)
    }

    /// Charges one membership change to the connection and its user.
    /// `refusable`: a subscribe, which is refused when either is out of
    /// changes (an unsubscribe always goes through but still counts). A
    /// connection that keeps going is closed with 1008.
    fn charge_membership(
        &self,
        shared: &ConnShared,
        refusable: bool,
    ) -> Result<(), SubscribeError> {
        let now = tokio::time::Instant::now();
        let limit = self.inner.limits.max_membership_changes_per_second;
        let own = {
            let mut rate = lock(&shared.membership_rate);
            let allowed = rate.allow(now);
            if !allowed && rate.sustained_abuse(now) {
                shared.outbox.close(crate::outbox::CloseReason::new(
                    crate::transport::close::POLICY,
                    format!(
                        "more than {limit} subscribes and unsubscribes per second for too long"
                    ),
                ));
            }
            allowed
        };
        let user = match shared.user_id() {
            Some(uid) => {
                let mut rates = lock(&self.inner.user_rates);
                rates
                    .entry(uid)
                    .or_insert_with(|| self.membership_bucket(4))
                    .allow(now)
            }
            None => true,
        };
        match refusable && !(own && user) {
            true => Err(SubscribeError::RateLimited { limit }),
            false => Ok(()),
        }
    }

    /// Whether subscribers of `channel` see its member list and member
    /// events (a rule can hide them; the HTTP API always sees them).
    pub fn members_shown(&self, channel: &str) -> bool {
        self.policy().terms(channel).show_members
    }

    /// Asks the backend check a question the policy could not settle;
    /// once the returned future is done, asking the policy again settles it.
    pub fn consult(&self, req: crate::policy::BackendRequest) -> crate::policy::Pending {
        self.policy().consult(req)
    }

    /// The member limits of `ch` (set when it was created).
    fn budget(&self, ch: &Channel) -> MemberBudget {
        ch.limits.unwrap_or(MemberBudget {
            max_bytes: self.inner.limits.max_member_bytes,
            max_members: self.inner.limits.max_members_per_channel,
        })
    }

    fn shard(&self, name: &str) -> &Mutex<ChannelMap> {
        let hash = self.inner.hasher.hash_one(name);
        &self.inner.shards[(hash as usize) % SHARDS]
    }

    /// The channel, created if missing. Never returns a removed channel.
    fn channel_for_join(&self, name: &str) -> (Arc<Mutex<Channel>>, Arc<str>) {
        let mut shard = lock(self.shard(name));
        if let Some((k, ch)) = shard.get_key_value(name) {
            return (ch.clone(), k.clone());
        }
        let key: Arc<str> = Arc::from(name);
        let mut channel = Channel::new(key.clone());
        channel.limits = self.channel_budget(name);
        channel.record_deltas = !self.inner.observers.is_empty();
        let ch = Arc::new(Mutex::new(channel));
        shard.insert(key.clone(), ch.clone());
        (ch, key)
    }

    /// A channel's member limits: the ones an adapter set for it, else
    /// the channel policy's.
    fn channel_budget(&self, name: &str) -> Option<MemberBudget> {
        let reserved = self.reserved_limits().get(name).map(|l| MemberBudget {
            max_bytes: l.max_member_bytes,
            max_members: l.max_members,
        });
        reserved.or_else(|| {
            let terms = self.policy().terms(name);
            Some(MemberBudget {
                max_bytes: terms.max_member_bytes,
                max_members: terms.max_members,
            })
        })
    }

    /// Sets (or with None, clears) the member limits of the channel named
    /// `name`, replacing the server-wide limits there, now and whenever the
    /// channel is created again. Meant for channels an adapter reserves,
    /// such as a server-wide member list that must hold more members than
    /// an ordinary channel. Members already in the channel stay.
    pub fn set_channel_limits(&self, name: &str, limits: Option<ChannelLimits>) {
        {
            let mut map = self
                .inner
                .channel_limits
                .write()
                .unwrap_or_else(|p| p.into_inner());
            match limits {
                Some(l) => map.insert(Arc::from(name), l),
                None => map.remove(name),
            };
        }
        if let Some(ch) = self.existing_channel(name) {
            self.lock_channel(&ch).limits = self.channel_budget(name);
        }
    }

    /// Locks a channel; presence changes made under the guard reach the
    /// observers when it is dropped, still under the lock.
    fn lock_channel<'a>(&'a self, ch: &'a Mutex<Channel>) -> observe::ChannelGuard<'a> {
        let guard = lock(ch);
        let was_empty = guard.is_vacant();
        let plain_before = guard.plain_subscribers();
        observe::ChannelGuard {
            guard,
            observers: &self.inner.observers,
            was_empty,
            plain_before,
        }
    }

    fn existing_channel(&self, name: &str) -> Option<Arc<Mutex<Channel>>> {
        lock(self.shard(name)).get(name).cloned()
    }

    /// Drops the channel from the map if nothing keeps it alive any more.
    fn drop_if_empty(&self, name: &str) {
        let mut shard = lock(self.shard(name));
        let Some(ch) = shard.get(name).cloned() else {
            return;
        };
        let mut guard = self.lock_channel(&ch);
        if guard.is_empty() {
            guard.removed = true;
            shard.remove(name);
        }
    }

    /// Registers a connection. The returned [`Connection`] disconnects when
    /// dropped; the receiver is the connection's outbound queue.
    pub fn connect(
        &self,
        identity: Identity,
        codec: Arc<dyn Codec>,
        protocol: &'static str,
    ) -> Result<(Connection, OutboxReceiver), ConnectError> {
        if let Some(uid) = &identity.user_id {
            crate::names::check_user_id(uid).map_err(ConnectError::InvalidUserId)?;
        }
        let id = ConnId::next();
        if let Some(uid) = &identity.user_id {
            let mut users = lock(&self.inner.users);
            let list = users.entry(uid.clone()).or_default();
            let limit = self.inner.limits.max_connections_per_user;
            if list.len() >= limit {
                return Err(ConnectError::TooManyConnections { limit });
            }
            // Exactly: most users have one connection (a push would make
            // room for four).
            list.reserve_exact(1);
            list.push(id);
        }
        let (outbox, rx) = Outbox::new(self.inner.limits.outbox_bytes);
        let shared = Arc::new(ConnShared {
            id,
            user_id: Mutex::new(identity.user_id.clone()),
            info: Mutex::new(identity.info),
            codec,
            protocol,
            outbox,
            subs: Mutex::default(),
            closing: std::sync::atomic::AtomicBool::new(false),
            flavor: std::sync::atomic::AtomicU8::new(0),
            hidden: std::sync::atomic::AtomicBool::new(false),
            access: Mutex::new(crate::policy::Access::anonymous()),
            membership_rate: Mutex::new(self.membership_bucket(1)),
            secret: std::sync::OnceLock::new(),
        });
        {
            // The policy is read under the connections lock so that a
            // concurrent `refresh_visibility` either sees this connection
            // or this read sees its new setting.
            let mut conns = lock(&self.inner.conns);
            let visible = self.is_user_visible(identity.user_id.as_deref());
            shared.hidden.store(!visible, Ordering::Release);
            conns.insert(id, shared.clone());
        }
        for observer in &self.inner.observers {
            observer.connected(id, identity.user_id.as_ref(), protocol);
        }
        Ok((
            Connection {
                shared,
                presence: self.clone(),
            },
            rx,
        ))
    }

    /// Removes a connection: leaves all its channels (members removed at
    /// once) and forgets it. Called by `Connection`'s drop.
    fn remove_connection(&self, conn: &Arc<ConnShared>) {
        let channels: Vec<Arc<str>> = conn.subs().keys().cloned().collect();
        for name in channels {
            self.leave(conn, &name, |_| {});
        }
        lock(&self.inner.conns).remove(&conn.id);
        let user_id = {
            let mut users = lock(&self.inner.users);
            let user_id = conn.user_id();
            if let Some(uid) = &user_id {
                forget_user_connection(&mut users, uid, conn.id);
                if !users.contains_key(uid) {
                    lock(&self.inner.user_rates).remove(uid);
                }
            }
            user_id
        };
        self.invitations_on_disconnect(conn);
        let reason = conn.outbox.close_reason();
        for observer in &self.inner.observers {
            observer.disconnected(conn.id, user_id.as_ref(), conn.protocol, reason.as_ref());
        }
    }

    /// Subscribes `conn` to `channel`. `on_joined` runs under the channel
    /// lock with the member snapshot, before any later event of the channel
    /// is queued: queue the subscribe reply there. Member events caused by
    /// the join are delivered after it.
    pub fn subscribe(
        &self,
        conn: &Connection,
        channel: &str,
        opts: SubscribeOptions,
        on_joined: impl FnOnce(&Snapshot<'_>),
    ) -> Result<MemberChange, SubscribeError> {
        let shared = &conn.shared;
        if shared.closing.load(Ordering::Acquire) {
            return Err(SubscribeError::Closed);
        }
        // Asked before the channel exists, so a refused subscribe leaves no
        // trace: no channel, no member event, no count, no webhook.
        let judged = match &opts.rights {
            Rights::Own => Some(channel),
            Rights::Of(other) => Some(&**other),
            Rights::PrivateInbox | Rights::Reserved => None,
        };
        if judged.is_some() {
            crate::names::check_channel(channel).map_err(SubscribeError::InvalidChannel)?;
        }
        if let Some(judged) = judged {
            self.check_subscribe_with(
                conn,
                judged,
                opts.grant.as_deref(),
                opts.automatic,
                opts.password.as_deref(),
            )
            .map_err(SubscribeError::Refused)?;
        }
        self.charge_membership(shared, true)?;
        let mut opts = opts;
        let shown = self.members_shown(channel);
        opts.presence_events &= shown;
        loop {
            let (ch, name) = self.channel_for_join(channel);
            let mut guard = self.lock_channel(&ch);
            if guard.removed {
                continue;
            }
            let result = self.join_locked(&mut guard, &name, shared, &opts, shown, on_joined);
            let empty = guard.is_empty();
            drop(guard);
            if empty {
                // A failed join may have created the channel just now.
                self.drop_if_empty(channel);
            }
            return result;
        }
    }

    fn join_locked(
        &self,
        ch: &mut Channel,
        name: &Arc<str>,
        shared: &Arc<ConnShared>,
        opts: &SubscribeOptions,
        members_shown: bool,
        on_joined: impl FnOnce(&Snapshot<'_>),
    ) -> Result<MemberChange, SubscribeError> {
        if ch.subscribers.contains_key(&shared.id) {
            return Err(SubscribeError::AlreadySubscribed);
        }
        let hidden = {
            let mut subs = shared.subs();
            let limit = self.inner.limits.max_channels_per_connection;
            if subs.len() >= limit {
                return Err(SubscribeError::TooManyChannels { limit });
            }
            // Reserve the entry (its member key is written below) and read
            // the hidden flag under the same lock `refresh_visibility`
            // takes: it then either sees this channel or we see its flag.
            subs.insert(name.clone(), None);
            match &opts.member_key {
                // Another user's membership follows that user's privacy.
                Some(key) if Some(key) != shared.user_id().as_ref() => {
                    !self.is_user_visible(Some(key))
                }
                _ => shared.hidden.load(Ordering::Acquire),
            }
        };
        let mut member_key: Option<Arc<str>> = opts.member_info.as_ref().map(|_| {
            opts.member_key
                .clone()
                .unwrap_or_else(|| shared.member_key())
        });
        let change = match (&member_key, &opts.member_info) {
            (Some(key), Some(info)) if !hidden => {
                // The limits reported are the channel's own when it has any.
                let budget = self.budget(ch);
                ch.add_presence(key, Origin::Local(shared.id), info.clone(), budget)
                    .map_err(|e| {
                        shared.subs().remove(name);
                        match e {
                            BudgetError::Bytes => SubscribeError::CapacityReached {
                                limit: budget.max_bytes,
                            },
                            BudgetError::Members => SubscribeError::MemberLimitReached {
                                limit: budget.max_members,
                            },
                        }
                    })?
            }
            _ => MemberChange::Unchanged,
        };
        // A hidden user subscribes without a presence; the membership is
        // kept aside for when they become visible.
        let hidden_member = match hidden {
            true => member_key
                .take()
                .zip(opts.member_info.clone())
                .map(Box::new),
            false => None,
        };
        ch.insert_subscriber(
            shared.id,
            Subscriber {
                conn: shared.clone(),
                presence_events: opts.presence_events,
                receive_messages: opts.receive_messages,
                flavor: opts.flavor,
                member_key: member_key.clone(),
                hidden,
                hidden_member,
            },
        );
        shared.subs().insert(name.clone(), member_key.clone());
        let members = match members_shown {
            true => ch.members(),
            // The channel's rule hides its member list.
            false => Members::none(),
        };
        on_joined(&Snapshot {
            channel: name,
            members,
            change,
        });
        if let Some(key) = &member_key {
            // The joiner learns of its own arrival from the snapshot.
            let skip = (change == MemberChange::Added).then_some(shared.id);
            fanout::member_event(ch, change, key, None, skip);
        }
        Ok(change)
    }

    /// Unsubscribes `conn` from `channel`. `on_left` runs under the channel
    /// lock (queue the unsubscribe reply there). Returns false if the
    /// connection was not subscribed.
    pub fn unsubscribe(
        &self,
        conn: &Connection,
        channel: &str,
        on_left: impl FnOnce(&Snapshot<'_>),
    ) -> bool {
        let _ = self.charge_membership(&conn.shared, false);
        self.leave(&conn.shared, channel, on_left)
    }

    fn leave(
        &self,
        shared: &Arc<ConnShared>,
        channel: &str,
        on_left: impl FnOnce(&Snapshot<'_>),
    ) -> bool {
        let Some(ch) = self.existing_channel(channel) else {
            shared.subs().remove(channel);
            return false;
        };
        let mut guard = self.lock_channel(&ch);
        let Some(sub) = guard.remove_subscriber(&shared.id) else {
            drop(guard);
            shared.subs().remove(channel);
            return false;
        };
        shared.subs().remove(channel);
        let mut change = MemberChange::Unchanged;
        let mut removed_entry = None;
        if let Some(key) = &sub.member_key
            && let Some((c, entry)) = guard.remove_presence(key, &Origin::Local(shared.id))
        {
            change = c;
            removed_entry = entry;
        }
        on_left(&Snapshot {
            channel,
            members: guard.members(),
            change,
        });
        if let Some(key) = &sub.member_key {
            fanout::member_event(&guard, change, key, removed_entry.as_ref(), None);
        }
        let empty = guard.is_empty();
        drop(guard);
        if empty {
            self.drop_if_empty(channel);
        }
        true
    }

    /// Changes `conn`'s member data in one channel; members see
    /// memberUpdated (the updater too) if the data differs.
    pub fn update_member(
        &self,
        conn: &Connection,
        channel: &str,
        info: Arc<Value>,
    ) -> Result<MemberChange, UpdateError> {
        let key = match conn.shared.subs().get(channel) {
            Some(Some(key)) => key.clone(),
            Some(None) => return self.update_hidden_member(conn, channel, info),
            None => return Err(UpdateError::NotSubscribed),
        };
        let ch = self
            .existing_channel(channel)
            .ok_or(UpdateError::NotSubscribed)?;
        let mut guard = self.lock_channel(&ch);
        let budget = self.budget(&guard);
        let change = guard
            .update_presence(&key, &Origin::Local(conn.id()), info, budget)
            .map_err(|_| UpdateError::CapacityReached {
                limit: self.inner.limits.max_member_bytes,
            })?
            .ok_or(UpdateError::NotSubscribed)?;
        fanout::member_event(&guard, change, &key, None, None);
        Ok(change)
    }

    /// Changes the connection-level member data (used for new
    /// subscriptions); with `propagate`, also every channel the connection
    /// is a member of. Returns the channels where an update failed.
    pub fn set_connection_info(
        &self,
        conn: &Connection,
        info: Arc<Value>,
        propagate: bool,
    ) -> Vec<(Arc<str>, UpdateError)> {
        *lock(&conn.shared.info) = info.clone();
        let mut failures = Vec::new();
        if propagate {
            let channels: Vec<Arc<str>> = conn
                .shared
                .subs()
                .iter()
                .filter(|(_, key)| key.is_some())
                .map(|(name, _)| name.clone())
                .collect();
            for name in channels {
                if let Err(e) = self.update_member(conn, &name, info.clone()) {
                    failures.push((name, e));
                }
            }
        }
        failures
    }

    /// Publishes a message from the server (HTTP API, protocol packets the
    /// server makes) to every subscriber of its channel on this node (the
    /// sender only if `echo`). Returns the number of connections it was
    /// queued for. A client's message goes through [`Self::publish_from`].
    pub fn publish(&self, msg: &ChannelMessage) -> usize {
        self.deliver(msg, true)
    }

    /// Asks the policy whether `conn` may publish `event` on `channel`
    /// (with the extra grants of one subscription), without publishing.
    pub fn check_publish(
        &self,
        conn: &Connection,
        channel: &str,
        event: &str,
        extra: Option<&ChannelRules>,
    ) -> Result<PublishGrant, Refusal> {
        crate::names::check_channel(channel).map_err(Refusal::Invalid)?;
        crate::names::check_event(event).map_err(Refusal::Invalid)?;
        self.refuse_reserved(channel)?;
        let shared = &conn.shared;
        let access = shared.access();
        let user = shared.user_id();
        let subscribed = conn.is_subscribed(channel);
        let who = Self::requester(shared, &access, user.as_deref(), extra, false, None);
        self.policy().may_publish(&who, channel, event, subscribed)
    }

    /// Publishes a client's message, if the channel policy lets `conn`
    /// send `msg.event` on `msg.channel` (`extra`: grants of the
    /// subscription it is sent on). A grant's `echo` also returns the
    /// message to the sender; its `forward` hands it to the observers'
    /// [`PresenceObserver::forwarded`] too, or only. Returns the number of
    /// connections reached.
    pub fn publish_from(
        &self,
        conn: &Connection,
        mut msg: ChannelMessage,
        extra: Option<&ChannelRules>,
    ) -> Result<usize, Refusal> {
        if let Some(data) = &msg.data {
            crate::names::check_message_data(data.get()).map_err(Refusal::Invalid)?;
        }
        let grant = self.check_publish(conn, &msg.channel, &msg.event, extra)?;
        if grant.echo
            && let Some(sender) = msg.sender.as_mut()
        {
            sender.echo = true;
        }
        Ok(self.publish_granted(conn, &msg, grant.forward))
    }

    /// Publishes a client's message the policy already admitted (with
    /// [`Self::check_publish`]), sending it to the backend as its grant's
    /// `forward` says. Returns the number of connections reached.
    pub fn publish_granted(
        &self,
        conn: &Connection,
        msg: &ChannelMessage,
        forward: Forward,
    ) -> usize {
        if forward != Forward::No {
            let protocol = conn.protocol();
            for observer in &self.inner.observers {
                observer.forwarded(msg, protocol);
            }
        }
        match forward {
            Forward::Only => 0,
            _ => self.deliver(msg, true),
        }
    }

    /// Delivers a message that was published on another node to this
    /// node's subscribers; observers are not told (it is not a local
    /// publish).
    pub fn deliver_remote(&self, msg: &ChannelMessage) -> usize {
        self.deliver(msg, false)
    }

    fn deliver(&self, msg: &ChannelMessage, local: bool) -> usize {
        let notify = |msg: &ChannelMessage| {
            if local {
                for observer in &self.inner.observers {
                    observer.published(msg);
                }
            }
        };
        let fanned_out = |recipients: usize| {
            for observer in &self.inner.observers {
                observer.fanned_out(recipients);
            }
        };
        let Some(ch) = self.existing_channel(&msg.channel) else {
            notify(msg);
            fanned_out(0);
            return 0;
        };
        let guard = self.lock_channel(&ch);
        let skip = msg.sender.as_ref().filter(|s| !s.echo).map(|s| s.conn);
        let delivered = fanout::deliver(
            guard.subscribers.values().filter(|s| s.receive_messages),
            &Event::Message(msg),
            |s| Some(s.id) != skip,
        );
        // Under the lock, so observers see messages and presence changes of
        // a channel in one order.
        notify(msg);
        fanned_out(delivered);
        delivered
    }

    /// Tells the observers that a lost node's connection was removed,
    /// `silent_ms` after that node was last heard (the cluster calls it).
    pub fn connection_lost(&self, silent_ms: u64) {
        for observer in &self.inner.observers {
            observer.connection_lost(silent_ms);
        }
    }

    /// Sends a direct message to every connection of `user_id`. Returns the
    /// number of connections reached.
    pub fn send_to_user(&self, user_id: &str, msg: &DirectMessage) -> usize {
        fanout::deliver_direct(&self.open_connections_of(user_id), msg)
    }

    /// Sends a direct message to one connection.
    pub fn send_to_connection(&self, id: ConnId, msg: &DirectMessage) -> bool {
        let target = lock(&self.inner.conns).get(&id).cloned();
        match target {
            Some(conn) => fanout::deliver_direct(&[conn], msg) == 1,
            None => false,
        }
    }

    /// Sends a direct message to every connection on this node.
    pub fn broadcast(&self, msg: &DirectMessage) -> usize {
        let targets: Vec<Arc<ConnShared>> = lock(&self.inner.conns).values().cloned().collect();
        fanout::deliver_direct(&targets, msg)
    }

    /// Members and counts of a channel (empty if it does not exist).
    pub fn channel_info(&self, name: &str) -> ChannelInfo {
        match self.existing_channel(name) {
            Some(ch) => {
                let guard = self.lock_channel(&ch);
                ChannelInfo {
                    name: name.to_string(),
                    connections: connection_count(&guard),
                    members: guard.members().to_vec(),
                }
            }
            None => ChannelInfo {
                name: name.to_string(),
                connections: 0,
                members: Vec::new(),
            },
        }
    }

    /// Members of a channel in join order.
    pub fn members(&self, name: &str) -> Vec<Member> {
        self.channel_info(name).members
    }

    /// Runs `f` with the current members of `name` under the channel lock,
    /// so frames `f` queues for a connection are ordered consistently with
    /// the channel's member events (none is missed or seen out of order).
    /// Returns None, without calling `f`, if the channel does not exist.
    pub fn with_members<R>(&self, name: &str, f: impl FnOnce(Members<'_>) -> R) -> Option<R> {
        let ch = self.existing_channel(name)?;
        let guard = self.lock_channel(&ch);
        Some(f(guard.members()))
    }

    /// All occupied channels, sorted by name.
    pub fn channels(&self) -> Vec<ChannelSummary> {
        let mut all = Vec::new();
        for shard in self.inner.shards.iter() {
            let list: Vec<Arc<Mutex<Channel>>> = lock(shard).values().cloned().collect();
            for ch in list {
                let guard = self.lock_channel(&ch);
                if guard.removed || guard.is_vacant() {
                    continue;
                }
                all.push(ChannelSummary {
                    name: guard.name.to_string(),
                    members: guard.members().len(),
                    connections: connection_count(&guard),
                    member_bytes: guard.member_bytes(),
                });
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Sets another node's number of subscribers of `channel` that are not
    /// members (0: none left). They count in the channel's connections and
    /// occupancy like local subscribers: a channel whose only subscribers
    /// are on other nodes exists here, and observers see it occupied and
    /// vacated.
    pub fn set_remote_subscribers(&self, channel: &str, node: &Arc<str>, count: usize) {
        if count == 0 {
            let Some(ch) = self.existing_channel(channel) else {
                return;
            };
            let mut guard = self.lock_channel(&ch);
            guard.set_remote_subscribers(node, 0);
            let empty = guard.is_empty();
            drop(guard);
            if empty {
                self.drop_if_empty(channel);
            }
            return;
        }
        loop {
            let (ch, _) = self.channel_for_join(channel);
            let mut guard = self.lock_channel(&ch);
            if guard.removed {
                continue;
            }
            guard.set_remote_subscribers(node, count);
            return;
        }
    }

    /// Counts for health and metrics.
    pub fn stats(&self) -> Stats {
        Stats {
            connections: lock(&self.inner.conns).len(),
            channels: self.inner.shards.iter().map(|s| lock(s).len()).sum(),
        }
    }

    /// Asks every connection to close (graceful shutdown).
    pub fn close_all(&self, reason: crate::outbox::CloseReason) {
        let all: Vec<Arc<ConnShared>> = lock(&self.inner.conns).values().cloned().collect();
        for conn in all {
            conn.outbox.close(reason.clone());
        }
    }

    /// This node's open connections (a drain closes them one at a time
    /// over its spread).
    pub fn closable_one_by_one(&self) -> Vec<ConnId> {
        lock(&self.inner.conns).values().map(|c| c.id).collect()
    }

    /// Closes every connection of `user_id` on this node with `reason`.
    /// Returns how many.
    pub fn close_user(&self, user_id: &str, reason: &crate::outbox::CloseReason) -> usize {
        let ids = self.user_connections(user_id);
        ids.into_iter()
            .filter(|&id| self.close_connection(id, reason))
            .count()
    }

    /// Closes connection `id` with `reason`, if it is open on this node.
    pub fn close_connection(&self, id: ConnId, reason: &crate::outbox::CloseReason) -> bool {
        let conn = lock(&self.inner.conns).get(&id).cloned();
        match conn {
            Some(conn) => {
                conn.outbox.close(reason.clone());
                true
            }
            None => false,
        }
    }

    /// This node's open connections of `user_id`.
    fn open_connections_of(&self, user_id: &str) -> Vec<Arc<ConnShared>> {
        let users = lock(&self.inner.users);
        let conns = lock(&self.inner.conns);
        users
            .get(user_id)
            .map(|ids| ids.iter().filter_map(|id| conns.get(id).cloned()).collect())
            .unwrap_or_default()
    }

    /// Removes `user_id` from `channel` on this node: each of its
    /// connections subscribed there is told to unsubscribe (its session
    /// does, as if the client had asked, and tells the client `reason`).
    /// Returns how many connections were told.
    pub fn remove_from_channel(&self, user_id: &str, channel: &str, reason: &str) -> usize {
        let conns = self.open_connections_of(user_id);
        let channel: Arc<str> = Arc::from(channel);
        let reason: Arc<str> = Arc::from(reason);
        conns
            .into_iter()
            .filter(|c| c.subs().contains_key(&channel))
            .filter(|c| {
                c.outbox.order(crate::outbox::Order::LeaveChannel {
                    channel: channel.clone(),
                    reason: reason.clone(),
                })
            })
            .count()
    }

    /// This node's connections of `user_id`: (id, protocol, channels it
    /// is subscribed to, sorted).
    pub fn user_connection_details(
        &self,
        user_id: &str,
    ) -> Vec<(ConnId, &'static str, Vec<String>)> {
        let conns = self.open_connections_of(user_id);
        conns
            .into_iter()
            .map(|c| {
                let mut channels: Vec<String> = c.subs().keys().map(|k| k.to_string()).collect();
                channels.sort();
                (c.id, c.protocol, channels)
            })
            .collect()
    }

    /// Adds a presence that is not a local connection (a connection on
    /// another node, or a lease). Local subscribers see the member events.
    pub fn add_external_presence(
        &self,
        channel: &str,
        user_id: &Arc<str>,
        origin: Origin,
        info: Arc<Value>,
    ) -> Result<MemberChange, SubscribeError> {
        loop {
            let (ch, _) = self.channel_for_join(channel);
            let mut guard = self.lock_channel(&ch);
            if guard.removed {
                continue;
            }
            let budget = self.budget(&guard);
            let result = guard.add_presence(user_id, origin, info, budget);
            let change = match result {
                Ok(change) => change,
                Err(e) => {
                    let empty = guard.is_empty();
                    drop(guard);
                    if empty {
                        self.drop_if_empty(channel);
                    }
                    return Err(match e {
                        BudgetError::Bytes => SubscribeError::CapacityReached {
                            limit: self.inner.limits.max_member_bytes,
                        },
                        BudgetError::Members => SubscribeError::MemberLimitReached {
                            limit: self.inner.limits.max_members_per_channel,
                        },
                    });
                }
            };
            fanout::member_event(&guard, change, user_id, None, None);
            return Ok(change);
        }
    }

    /// Removes a presence added with [`Presence::add_external_presence`].
    pub fn remove_external_presence(
        &self,
        channel: &str,
        user_id: &str,
        origin: &Origin,
    ) -> Option<MemberChange> {
        let ch = self.existing_channel(channel)?;
        let mut guard = self.lock_channel(&ch);
        let (change, entry) = guard.remove_presence(user_id, origin)?;
        fanout::member_event(&guard, change, user_id, entry.as_ref(), None);
        let empty = guard.is_empty();
        drop(guard);
        if empty {
            self.drop_if_empty(channel);
        }
        Some(change)
    }

    /// Removes every external presence matching `pred` in every channel
    /// (e.g. all presences of a node that died). Returns how many presences
    /// were removed.
    pub fn remove_external_presences_where(&self, pred: impl Fn(&Origin) -> bool) -> usize {
        let mut removed = 0;
        let names: Vec<Arc<str>> = self
            .inner
            .shards
            .iter()
            .flat_map(|s| lock(s).keys().cloned().collect::<Vec<_>>())
            .collect();
        for name in names {
            let Some(ch) = self.existing_channel(&name) else {
                continue;
            };
            let victims = self
                .lock_channel(&ch)
                .find_presences(|o| !matches!(o, Origin::Local(_)) && pred(o));
            for (key, origin) in victims {
                if self
                    .remove_external_presence(&name, &key, &origin)
                    .is_some()
                {
                    removed += 1;
                }
            }
        }
        removed
    }
}

/// Local subscribers plus presences that have no local subscription, plus
/// other nodes' subscribers that are not members.
fn connection_count(ch: &Channel) -> usize {
    let local_members = ch
        .subscribers
        .values()
        .filter(|s| s.member_key.is_some())
        .count();
    // Hidden users' subscriptions count nowhere (privacy).
    let visible = ch.subscribers.values().filter(|s| !s.hidden).count();
    visible + ch.presence_count().saturating_sub(local_members) + ch.remote_subscribers()
}

#[cfg(test)]
mod tests;
