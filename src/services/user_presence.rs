//! User presence: a user is online while any of their connections or
//! leases is live, on this node or (in a cluster) on any other, and
//! visible ([`super::Privacy`]). Other nodes' connections and leases come
//! from the cluster replica ([`crate::cluster::RemoteHandler`]).
//!
//! Every change of what others see (online → offline and back, including
//! a user hiding or showing themselves) is handed, in order, to a sink:
//! the services push it to `user:<uid>` as a `user.presence` message and
//! send `user_online` / `user_offline` webhooks. A hidden user is reported
//! as offline with no connections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::privacy::Privacy;

/// A change of a user's online status as others see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserChange {
    /// The user id.
    pub uid: Arc<str>,
    /// Online now?
    pub online: bool,
}

/// A user's status as `GET /api/users/{uid}` reports it.
///
/// ```json
/// {"uid":"alice","online":true,"since":"2024-10-13T19:09:23Z","connections":2}
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UserStatus {
    /// The user id.
    pub uid: String,
    /// Whether the user is online (and visible).
    pub online: bool,
    /// When the user came online (RFC 3339), or None while offline.
    pub since: Option<String>,
    /// The user's open connections on all nodes (0 while hidden).
    pub connections: usize,
}

#[derive(Debug)]
struct UserState {
    conns: usize,
    leases: usize,
    remote_conns: usize,
    remote_leases: usize,
    online: bool,
    since: SystemTime,
}

/// Where user changes go (called under the user-presence lock, in order;
/// must only queue).
pub type UserSink = Box<dyn Fn(UserChange) + Send + Sync>;

/// The online status of users (see the module doc).
pub struct UserPresence {
    state: Mutex<HashMap<Arc<str>, UserState>>,
    privacy: Arc<Privacy>,
    sink: UserSink,
}

impl std::fmt::Debug for UserPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserPresence").finish_non_exhaustive()
    }
}

impl UserPresence {
    /// Tracks users; changes go to `sink`.
    pub fn new(privacy: Arc<Privacy>, sink: UserSink) -> Self {
        UserPresence {
            state: Mutex::new(HashMap::new()),
            privacy,
            sink,
        }
    }

    fn update(&self, uid: &Arc<str>, f: impl FnOnce(&mut UserState)) {
        let mut map = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(uid.clone()).or_insert(UserState {
            conns: 0,
            leases: 0,
            remote_conns: 0,
            remote_leases: 0,
            online: false,
            since: SystemTime::now(),
        });
        f(entry);
        let live = entry.conns + entry.leases + entry.remote_conns + entry.remote_leases > 0;
        let online = live && self.privacy.visible(uid);
        if online != entry.online {
            entry.online = online;
            entry.since = SystemTime::now();
            (self.sink)(UserChange {
                uid: uid.clone(),
                online,
            });
        }
        if !live {
            map.remove(uid);
        }
    }

    /// A connection of `uid` opened on this node.
    pub fn connection_opened(&self, uid: &Arc<str>) {
        self.update(uid, |s| s.conns += 1);
    }

    /// A connection of `uid` on this node closed.
    pub fn connection_closed(&self, uid: &Arc<str>) {
        self.update(uid, |s| s.conns = s.conns.saturating_sub(1));
    }

    /// A lease of `uid` started.
    pub fn lease_started(&self, uid: &Arc<str>) {
        self.update(uid, |s| s.leases += 1);
    }

    /// A lease of `uid` ended (expired, emptied or its connection closed).
    pub fn lease_ended(&self, uid: &Arc<str>) {
        self.update(uid, |s| s.leases = s.leases.saturating_sub(1));
    }

    /// Re-reads the user's visibility (after a privacy change made on this
    /// node or another).
    pub fn refresh(&self, uid: &Arc<str>) {
        self.update(uid, |_| {});
    }

    /// A connection (`conn`) or a lease presence (`!conn`) of `uid` on
    /// another node appeared (`up`) or went away. Lease presences count
    /// one per leased id; the user is online while any remains.
    pub fn remote_changed(&self, uid: &Arc<str>, conn: bool, up: bool) {
        self.update(uid, |s| {
            let n = if conn {
                &mut s.remote_conns
            } else {
                &mut s.remote_leases
            };
            *n = if up { *n + 1 } else { n.saturating_sub(1) };
        });
    }

    /// The user's status (offline with no connections while hidden).
    pub fn status(&self, uid: &str) -> UserStatus {
        let map = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(uid) {
            Some(s) if s.online => UserStatus {
                uid: uid.to_string(),
                online: true,
                since: Some(crate::time::rfc3339(s.since)),
                connections: s.conns + s.remote_conns,
            },
            _ => UserStatus {
                uid: uid.to_string(),
                online: false,
                since: None,
                connections: 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::privacy::{MemoryStore, PrivacySettings};

    type Log = Arc<Mutex<Vec<(String, bool)>>>;

    fn setup() -> (UserPresence, Arc<Privacy>, Log) {
        let privacy =
            Arc::new(Privacy::new(PrivacySettings::default(), Box::new(MemoryStore)).unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink_log = log.clone();
        let users = UserPresence::new(
            privacy.clone(),
            Box::new(move |c| sink_log.lock().unwrap().push((c.uid.to_string(), c.online))),
        );
        (users, privacy, log)
    }

    #[test]
    fn online_while_any_connection_or_lease_lives() {
        let (users, _privacy, log) = setup();
        let alice: Arc<str> = Arc::from("alice");
        users.connection_opened(&alice);
        users.connection_opened(&alice);
        users.lease_started(&alice);
        assert_eq!(users.status("alice").connections, 2);
        assert!(users.status("alice").since.is_some());
        users.connection_closed(&alice);
        users.connection_closed(&alice);
        assert!(users.status("alice").online, "the lease keeps her online");
        users.lease_ended(&alice);
        assert_eq!(
            users.status("alice"),
            UserStatus {
                uid: "alice".into(),
                online: false,
                since: None,
                connections: 0
            }
        );
        assert_eq!(
            *log.lock().unwrap(),
            [("alice".to_string(), true), ("alice".to_string(), false)]
        );
    }

    #[test]
    fn hiding_reports_offline_and_showing_online() {
        let (users, privacy, log) = setup();
        let bob: Arc<str> = Arc::from("bob");
        users.connection_opened(&bob);
        privacy.set("bob", Some(false)).unwrap();
        users.refresh(&bob);
        assert!(!users.status("bob").online);
        assert_eq!(users.status("bob").connections, 0);
        users.connection_opened(&bob);
        privacy.set("bob", Some(true)).unwrap();
        users.refresh(&bob);
        assert_eq!(users.status("bob").connections, 2);
        assert_eq!(
            *log.lock().unwrap(),
            [
                ("bob".to_string(), true),
                ("bob".to_string(), false),
                ("bob".to_string(), true)
            ]
        );
    }

    #[test]
    fn remote_connections_and_leases_count_until_the_last_goes() {
        let (users, _privacy, log) = setup();
        let kim: Arc<str> = Arc::from("kim");
        users.remote_changed(&kim, true, true);
        users.connection_opened(&kim);
        users.remote_changed(&kim, false, true);
        assert_eq!(users.status("kim").connections, 2);
        users.remote_changed(&kim, true, false);
        users.connection_closed(&kim);
        assert!(
            users.status("kim").online,
            "the remote lease keeps kim online"
        );
        users.remote_changed(&kim, false, false);
        assert!(!users.status("kim").online);
        assert_eq!(
            *log.lock().unwrap(),
            [("kim".to_string(), true), ("kim".to_string(), false)]
        );
    }

    #[test]
    fn a_user_hidden_from_the_start_never_appears() {
        let (users, privacy, log) = setup();
        privacy.set("eve", Some(false)).unwrap();
        let eve: Arc<str> = Arc::from("eve");
        users.connection_opened(&eve);
        users.connection_closed(&eve);
        assert!(log.lock().unwrap().is_empty());
    }
}
