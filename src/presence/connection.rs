//! A connection as the core sees it: identity, codec, outbox, and the set
//! of channels it is subscribed to.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use super::Presence;
use super::types::{Codec, Identity};
use crate::ids::ConnId;
use crate::outbox::{CloseReason, Outbox};

/// A connection's channels and the member key it holds in each (None: a
/// subscriber only). A vector: most connections have one or two, and a
/// `HashMap`'s smallest table was 150 bytes per connection.
pub(crate) type Subscriptions = crate::channel_map::ChannelMap<Option<Arc<str>>, Arc<str>>;

/// The part of a connection shared between its session and the core.
pub struct ConnShared {
    pub(crate) id: ConnId,
    /// The user id; most protocols set it at connect, some log in later
    /// ([`Presence::set_user`]).
    pub(crate) user_id: Mutex<Option<Arc<str>>>,
    pub(crate) info: Mutex<Arc<Value>>,
    pub(crate) codec: Arc<dyn Codec>,
    pub(crate) protocol: &'static str,
    pub(crate) outbox: Outbox,
    /// Channel name -> member key held there (if a member).
    pub(crate) subs: Mutex<Subscriptions>,
    pub(crate) closing: AtomicBool,
    /// Codec flavor for events not tied to a subscription (direct messages,
    /// invitations); 0 unless the adapter sets it.
    pub(crate) flavor: AtomicU8,
    /// The user is hidden (privacy): new subscriptions hold no presence.
    /// Written under the `subs` lock (see `visibility.rs`).
    pub(crate) hidden: AtomicBool,
    /// What the connection proved (token, grants): what the channel policy
    /// judges it by.
    pub(crate) access: Mutex<crate::policy::Access>,
    /// Subscribes and unsubscribes it may still make (member events are
    /// sent to everyone in the channel: this bounds the amplification).
    pub(crate) membership_rate: Mutex<crate::rate::RateLimiter>,
    /// A secret the adapter showed the client (Hotsock `connectionSecret`),
    /// with which the client proves it owns the connection over HTTP.
    pub(crate) secret: std::sync::OnceLock<Box<str>>,
}

impl std::fmt::Debug for ConnShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnShared")
            .field("id", &self.id)
            .field("user_id", &self.user_id())
            .field("protocol", &self.protocol)
            .finish()
    }
}

impl ConnShared {
    pub(crate) fn subs(&self) -> MutexGuard<'_, Subscriptions> {
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The user id, if authenticated.
    pub(crate) fn user_id(&self) -> Option<Arc<str>> {
        self.user_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The key this connection's memberships are held under: the user id,
    /// or the connection id of an anonymous connection.
    pub(crate) fn member_key(&self) -> Arc<str> {
        self.user_id()
            .unwrap_or_else(|| Arc::from(self.id.to_string()))
    }

    /// The connection's credentials.
    pub(crate) fn access(&self) -> crate::policy::Access {
        self.access
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The connection-level codec flavor.
    pub(crate) fn flavor(&self) -> u8 {
        self.flavor.load(Ordering::Acquire)
    }

    /// The codec pointer, used as the key of the encode-once cache.
    pub(crate) fn codec_key(&self) -> usize {
        Arc::as_ptr(&self.codec) as *const () as usize
    }
}

/// A live connection, owned by its session. Dropping it disconnects it from
/// the core (removing its memberships), so a session that ends for any
/// reason, including a panic, leaves no ghost member behind.
pub struct Connection {
    pub(crate) shared: Arc<ConnShared>,
    pub(crate) presence: Presence,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.fmt(f)
    }
}

impl Connection {
    /// The connection id.
    pub fn id(&self) -> ConnId {
        self.shared.id
    }

    /// The wire protocol this connection speaks (e.g. "hotsock").
    pub fn protocol(&self) -> &'static str {
        self.shared.protocol
    }

    /// The user id, if authenticated.
    pub fn user_id(&self) -> Option<Arc<str>> {
        self.shared.user_id()
    }

    /// What the connection proved about itself (token, grants), by which
    /// the channel policy judges it. Anonymous until set.
    pub fn access(&self) -> crate::policy::Access {
        self.shared.access()
    }

    /// Sets the connection's credentials: at connect, and when it logs in
    /// or out (SocketCluster `#authenticate`). Existing subscriptions are
    /// not re-checked here; the adapter ends those no longer allowed.
    pub fn set_access(&self, access: crate::policy::Access) {
        *self.shared.access.lock().unwrap_or_else(|p| p.into_inner()) = access;
    }

    /// The connection's current member data.
    pub fn info(&self) -> Arc<Value> {
        self.shared
            .info
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The key this connection is a member under in every channel: its
    /// user id, or for an anonymous connection its connection id (the
    /// `Display` form). Other front ends see this as the member's id.
    pub fn member_key(&self) -> Arc<str> {
        self.shared.member_key()
    }

    /// Sets the codec flavor used for events that are not tied to a
    /// subscription: direct messages and invitations (default 0). A
    /// subscription's own flavor comes from [`super::SubscribeOptions`].
    pub fn set_flavor(&self, flavor: u8) {
        self.shared.flavor.store(flavor, Ordering::Release);
    }

    /// The identity (user id and current member data).
    pub fn identity(&self) -> Identity {
        Identity {
            user_id: self.shared.user_id(),
            info: self.info(),
        }
    }

    /// The outbound queue (to send replies and to watch for a forced close).
    pub fn outbox(&self) -> &Outbox {
        &self.shared.outbox
    }

    /// A handle on the outbox that outlives borrows of the connection (for
    /// the transport's writer).
    pub fn outbox_handle(&self) -> OutboxHandle {
        OutboxHandle(self.shared.clone())
    }

    /// Queues a text frame for this connection only.
    pub fn send_text(&self, frame: impl Into<crate::outbox::Utf8Bytes>) -> bool {
        self.shared.outbox.push_text(frame.into())
    }

    /// Asks the session to close the connection.
    pub fn close(&self, reason: CloseReason) {
        self.shared.outbox.close(reason);
    }

    /// True if the connection is subscribed to `channel`.
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.shared.subs().contains_key(channel)
    }

    /// The channels this connection is subscribed to.
    pub fn channels(&self) -> Vec<Arc<str>> {
        self.shared.subs().keys().cloned().collect()
    }

    /// The core this connection belongs to.
    pub fn presence(&self) -> &Presence {
        &self.presence
    }

    /// Records the secret the adapter gave the client (e.g. Hotsock's
    /// `connectionSecret`), so the client can act on its own connection
    /// over HTTP ([`Presence::find_connection`]). Set once; returns false
    /// if a secret was already set.
    pub fn set_secret(&self, secret: &str) -> bool {
        self.shared.secret.set(Box::from(secret)).is_ok()
    }

    /// True while the connection's user is hidden by the visibility
    /// policy ([`super::VisibilityPolicy`]).
    pub fn is_hidden(&self) -> bool {
        self.shared.hidden.load(Ordering::Acquire)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if !self.shared.closing.swap(true, Ordering::AcqRel) {
            self.presence.remove_connection(&self.shared);
        }
    }
}

/// A cloneable handle on a connection's outbox.
#[derive(Clone, Debug)]
pub struct OutboxHandle(Arc<ConnShared>);

impl std::ops::Deref for OutboxHandle {
    type Target = Outbox;

    fn deref(&self) -> &Outbox {
        &self.0.outbox
    }
}
