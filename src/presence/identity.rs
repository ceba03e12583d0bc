//! A connection changing its user after connect. Most protocols know the
//! user when the connection opens; SocketCluster logs in (and out) on an
//! open socket. The user's connections (send to a user, user presence,
//! the cluster's count of them) must follow, so the change goes through
//! the core like a connect and a disconnect would.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{ConnectError, Connection, Presence, lock};
use crate::ids::ConnId;

/// Removes `conn` from `uid`'s connections (and `uid` once it has none).
pub(super) fn forget_user_connection(
    users: &mut HashMap<Arc<str>, Vec<ConnId>>,
    uid: &Arc<str>,
    conn: ConnId,
) {
    if let Some(list) = users.get_mut(uid) {
        list.retain(|c| *c != conn);
        if list.is_empty() {
            users.remove(uid);
        }
    }
}

impl Presence {
    /// Makes `user` (None: nobody) the user of the open connection `conn`:
    /// sends to that user reach it, and user presence and the cluster count
    /// it as theirs. Memberships are not touched: a protocol that logs in
    /// on an open connection names its members itself
    /// ([`Presence::update_subscription`]). Fails, changing nothing, if
    /// `user` already has the maximum number of connections.
    pub fn set_user(&self, conn: &Connection, user: Option<Arc<str>>) -> Result<(), ConnectError> {
        if let Some(uid) = &user {
            crate::names::check_user_id(uid).map_err(ConnectError::InvalidUserId)?;
        }
        let shared = &conn.shared;
        let old = {
            let mut users = lock(&self.inner.users);
            let mut current = lock(&shared.user_id);
            if *current == user {
                return Ok(());
            }
            if let Some(uid) = &user {
                let limit = self.inner.limits.max_connections_per_user;
                let list = users.entry(uid.clone()).or_default();
                if list.len() >= limit {
                    return Err(ConnectError::TooManyConnections { limit });
                }
                list.reserve_exact(1);
                list.push(shared.id);
            }
            if let Some(old) = &*current {
                forget_user_connection(&mut users, old, shared.id);
            }
            std::mem::replace(&mut *current, user.clone())
        };
        {
            // Same lock as a join's read of the flag (see `join_locked`).
            let _subs = shared.subs();
            let visible = self.is_user_visible(user.as_deref());
            shared.hidden.store(!visible, Ordering::Release);
        }
        for observer in &self.inner.observers {
            observer.user_changed(shared.id, old.as_ref(), user.as_ref(), shared.protocol);
        }
        Ok(())
    }
}
