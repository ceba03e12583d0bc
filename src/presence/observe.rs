//! Observers: modules that follow the core's changes without being part of
//! it (cluster replication, webhooks, user presence).
//!
//! Every presence change is recorded by the channel as a [`PresenceDelta`]
//! and handed to the observers when the channel's lock is released, still
//! under the lock, so an observer sees the changes of one channel in the
//! order they happened. Observers must be quick and must not call back into
//! the core: queue the work (e.g. on a channel) and do it elsewhere.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, MutexGuard};

use serde_json::Value;

use super::channel::{Channel, Origin};
use super::types::{ChannelMessage, MemberChange};
use crate::ids::ConnId;
use crate::outbox::CloseReason;

/// One presence added, changed or removed in a channel.
#[derive(Clone, Debug, PartialEq)]
pub struct PresenceDelta {
    /// The member key (user id).
    pub user_id: Arc<str>,
    /// Where the presence comes from (a local connection, another node, a lease).
    pub origin: Origin,
    /// The presence's data, or None if the presence was removed.
    pub info: Option<Arc<Value>>,
    /// What the change did to the member as others see it.
    pub change: MemberChange,
}

/// Follows the core's changes. Every method has an empty default.
pub trait PresenceObserver: Send + Sync + 'static {
    /// A presence was added, changed or removed (called under the channel
    /// lock, in order per channel).
    fn presence_changed(&self, _channel: &str, _delta: &PresenceDelta) {}
    /// The channel got its first subscriber or member (subscriptions of
    /// users hidden by the visibility policy do not count; in a cluster,
    /// every node's subscribers and members count).
    fn channel_occupied(&self, _channel: &str) {}
    /// The channel lost its last subscriber and member (hidden users'
    /// subscriptions do not count; in a cluster, every node's do).
    fn channel_vacated(&self, _channel: &str) {}
    /// The number of this node's subscriptions to the channel that are
    /// visible and hold no membership (plain pub/sub subscribers) changed
    /// to `count` (called under the channel lock, in order per channel: a
    /// rise before the batch's presence changes, a fall after them, so a
    /// subscription turning into a membership or back never looks like an
    /// empty channel). Cluster replication sends it to the other nodes.
    fn subscribers_changed(&self, _channel: &str, _count: usize) {}
    /// A message was published on this node by a local client or the HTTP
    /// API (not for messages delivered with [`super::Presence::deliver_remote`]).
    fn published(&self, _msg: &ChannelMessage) {}
    /// A channel message (published here or on another node) was queued
    /// for `recipients` connections of this node (0 included). Under the
    /// channel's lock when it has subscribers: keep it to an atomic add or
    /// a histogram observe.
    fn fanned_out(&self, _recipients: usize) {}
    /// A connection of a node that vanished was removed, `silent_ms` after
    /// that node was last heard.
    fn connection_lost(&self, _silent_ms: u64) {}
    /// A client's message the policy sends to the backend (`forward`:
    /// also or only), on the node the client is connected to, before it is
    /// delivered (if it is). `protocol` is the sender's front end.
    fn forwarded(&self, _msg: &ChannelMessage, _protocol: &'static str) {}
    /// A connection opened on this node.
    fn connected(&self, _conn: ConnId, _user_id: Option<&Arc<str>>, _protocol: &'static str) {}
    /// A connection on this node closed (after its memberships were
    /// removed); `reason`: why the server closed it, None if the client
    /// just went away.
    fn disconnected(
        &self,
        _conn: ConnId,
        _user_id: Option<&Arc<str>>,
        _protocol: &'static str,
        _reason: Option<&CloseReason>,
    ) {
    }
    /// An open connection on this node logged in, out, or as another user
    /// ([`super::Presence::set_user`]): it is no longer `old`'s connection
    /// and is now `new`'s.
    fn user_changed(
        &self,
        _conn: ConnId,
        _old: Option<&Arc<str>>,
        _new: Option<&Arc<str>>,
        _protocol: &'static str,
    ) {
    }
    /// Everything one locked change of a channel did, in one call, after
    /// the per-item calls above (still under the lock): whether it occupied
    /// or vacated the channel, and its deltas. Lets an observer relate an
    /// occupancy change to its cause; with no delta, a subscription caused
    /// it (a local one, or in a cluster another node's subscriber count).
    /// Not called when nothing changed.
    fn channel_batch(
        &self,
        _channel: &str,
        _occupied: bool,
        _vacated: bool,
        _deltas: &[PresenceDelta],
    ) {
    }
}

/// A locked channel that reports its recorded deltas to the observers when
/// it is unlocked.
pub(super) struct ChannelGuard<'a> {
    pub(super) guard: MutexGuard<'a, Channel>,
    pub(super) observers: &'a [Arc<dyn PresenceObserver>],
    pub(super) was_empty: bool,
    /// [`Channel::plain_subscribers`] when the lock was taken.
    pub(super) plain_before: usize,
}

impl Deref for ChannelGuard<'_> {
    type Target = Channel;

    fn deref(&self) -> &Channel {
        &self.guard
    }
}

impl DerefMut for ChannelGuard<'_> {
    fn deref_mut(&mut self) -> &mut Channel {
        &mut self.guard
    }
}

impl Drop for ChannelGuard<'_> {
    fn drop(&mut self) {
        if self.observers.is_empty() {
            return;
        }
        let deltas = self.guard.take_deltas();
        let name = self.guard.name.clone();
        // Occupancy as others see it: hidden users' subscriptions do not count.
        let now_empty = self.guard.is_vacant();
        let occupied = self.was_empty && !now_empty;
        let vacated = !self.was_empty && now_empty;
        let plain = self.guard.plain_subscribers();
        let rose = plain > self.plain_before;
        let fell = plain < self.plain_before;
        for observer in self.observers {
            if occupied {
                observer.channel_occupied(&name);
            }
            if rose {
                observer.subscribers_changed(&name, plain);
            }
            for delta in &deltas {
                observer.presence_changed(&name, delta);
            }
            if fell {
                observer.subscribers_changed(&name, plain);
            }
            if vacated {
                observer.channel_vacated(&name);
            }
            if occupied || vacated || !deltas.is_empty() {
                observer.channel_batch(&name, occupied, vacated, &deltas);
            }
        }
    }
}
