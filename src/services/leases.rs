//! Leases: presence to content and services that lives as long as it is
//! refreshed (the Telligent seed's page ping), not as long as a socket.
//!
//! An owner (a user, refreshed by a backend with the API key, or one
//! connection, refreshed by its client with the connection's secret)
//! sends the full list of ids it is present to; the list replaces the
//! previous one. Each id is a channel name (`content:42`, `service:abc`,
//! `user:bob`), and a leased id is a membership of that channel, held
//! under the origin `Origin::Lease("user:<uid>")` or
//! `Origin::Lease("conn:<connection id>")`, so several tabs or
//! connections of one user are one member. A lease that is not refreshed
//! within its TTL expires and all its memberships end; a connection's
//! lease also ends when the connection closes.
//!
//! Hidden users keep their lease (messages to the ids still reach them)
//! but hold no membership until they become visible.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::privacy::Privacy;
use super::user_presence::UserPresence;
use crate::ids::ConnId;
use crate::presence::{Origin, Presence, SubscribeError};

/// Who holds a lease.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeaseOwner {
    /// A user, refreshed by a backend.
    User(Arc<str>),
    /// One connection, refreshed by its client.
    Conn(ConnId),
}

impl LeaseOwner {
    fn origin(&self) -> Origin {
        match self {
            LeaseOwner::User(uid) => Origin::Lease(Arc::from(format!("user:{uid}"))),
            LeaseOwner::Conn(id) => Origin::Lease(Arc::from(format!("conn:{id}"))),
        }
    }
}

/// A refresh request, already authenticated.
#[derive(Clone, Debug)]
pub struct Refresh {
    /// Who holds the lease.
    pub owner: LeaseOwner,
    /// The member key (the user id, or an anonymous connection's id).
    pub member_key: Arc<str>,
    /// The user id, if any (anonymous connections are not users).
    pub user_id: Option<Arc<str>>,
    /// The member data shown in the channels.
    pub info: Arc<Value>,
    /// The full list of ids (channel names) the owner is present to;
    /// empty ends the lease.
    pub ids: Vec<Arc<str>>,
    /// How long the lease lives without another refresh.
    pub ttl: Duration,
}

/// The answer to a refresh.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RefreshOutcome {
    /// The ids the owner is now present to.
    pub ids: Vec<String>,
    /// When the lease expires without another refresh (RFC 3339; None
    /// when the list was empty and the lease ended).
    pub expires_at: Option<String>,
    /// Ids that could not be joined, with the reason.
    pub rejected: Vec<Rejected>,
}

/// An id a refresh could not join.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Rejected {
    /// The id.
    pub id: String,
    /// Why (e.g. the channel is full).
    pub error: String,
}

#[derive(Debug)]
struct Lease {
    member_key: Arc<str>,
    user_id: Option<Arc<str>>,
    info: Arc<Value>,
    origin: Origin,
    ids: HashSet<Arc<str>>,
    /// The ids that hold a membership now (all of `ids` unless hidden or
    /// rejected).
    joined: HashSet<Arc<str>>,
    deadline: Instant,
}

#[derive(Debug, Default)]
struct State {
    leases: HashMap<LeaseOwner, Lease>,
    deadlines: BTreeSet<(Instant, LeaseOwner)>,
    /// Channel → owners leasing it (for sending to everyone present).
    by_channel: HashMap<Arc<str>, HashSet<LeaseOwner>>,
}

/// The lease registry (see the module doc).
pub struct Leases {
    state: Mutex<State>,
    presence: OnceLock<Presence>,
    privacy: Arc<Privacy>,
    users: Arc<UserPresence>,
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases").finish_non_exhaustive()
    }
}

impl Leases {
    /// An empty registry; [`Leases::attach`] gives it the core.
    pub fn new(privacy: Arc<Privacy>, users: Arc<UserPresence>) -> Self {
        Leases {
            state: Mutex::new(State::default()),
            presence: OnceLock::new(),
            privacy,
            users,
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Gives the registry the core it places memberships in.
    pub fn attach(&self, presence: Presence) {
        let _ = self.presence.set(presence);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn visible(&self, lease: &Lease) -> bool {
        lease
            .user_id
            .as_ref()
            .is_none_or(|uid| self.privacy.visible(uid))
    }

    fn join(&self, lease: &Lease, id: &Arc<str>) -> Result<(), SubscribeError> {
        match self.presence.get() {
            Some(p) => p
                .add_external_presence(
                    id,
                    &lease.member_key,
                    lease.origin.clone(),
                    lease.info.clone(),
                )
                .map(|_| ()),
            None => Err(SubscribeError::Closed),
        }
    }

    fn leave(&self, lease: &Lease, id: &str) {
        if let Some(p) = self.presence.get() {
            p.remove_external_presence(id, &lease.member_key, &lease.origin);
        }
    }

    /// Replaces the owner's list of ids (see [`Refresh`]).
    pub fn refresh(&self, req: Refresh) -> RefreshOutcome {
        let mut state = self.lock();
        let now = Instant::now();
        let wanted: HashSet<Arc<str>> = req.ids.iter().cloned().collect();
        if wanted.is_empty() {
            self.end_locked(&mut state, &req.owner);
            return RefreshOutcome {
                ids: Vec::new(),
                expires_at: None,
                rejected: Vec::new(),
            };
        }
        let deadline = now + req.ttl;
        let is_new = !state.leases.contains_key(&req.owner);
        let mut lease = state.leases.remove(&req.owner).unwrap_or_else(|| Lease {
            member_key: req.member_key.clone(),
            user_id: req.user_id.clone(),
            info: req.info.clone(),
            origin: req.owner.origin(),
            ids: HashSet::new(),
            joined: HashSet::new(),
            deadline,
        });
        state.deadlines.remove(&(lease.deadline, req.owner.clone()));
        lease.deadline = deadline;
        for gone in lease.ids.difference(&wanted).cloned().collect::<Vec<_>>() {
            if lease.joined.remove(&gone) {
                self.leave(&lease, &gone);
            }
            lease.ids.remove(&gone);
            unindex(&mut state.by_channel, &gone, &req.owner);
        }
        let visible = self.visible(&lease);
        let mut rejected = Vec::new();
        // In the order given, so a full channel rejects the later ids.
        for id in &req.ids {
            if lease.ids.contains(id) {
                continue;
            }
            if visible {
                if let Err(e) = self.join(&lease, id) {
                    rejected.push(Rejected {
                        id: id.to_string(),
                        error: e.to_string(),
                    });
                    continue;
                }
                lease.joined.insert(id.clone());
            }
            lease.ids.insert(id.clone());
            state
                .by_channel
                .entry(id.clone())
                .or_default()
                .insert(req.owner.clone());
        }
        let mut ids: Vec<String> = lease.ids.iter().map(|s| s.to_string()).collect();
        ids.sort();
        let expires_at = SystemTime::now() + req.ttl;
        if lease.ids.is_empty() {
            // Everything was rejected: no lease.
            if !is_new && let Some(uid) = &lease.user_id {
                self.users.lease_ended(uid);
            }
            return RefreshOutcome {
                ids,
                expires_at: None,
                rejected,
            };
        }
        if is_new && let Some(uid) = &lease.user_id {
            self.users.lease_started(uid);
        }
        state.deadlines.insert((deadline, req.owner.clone()));
        state.leases.insert(req.owner, lease);
        drop(state);
        self.wake.notify_one();
        RefreshOutcome {
            ids,
            expires_at: Some(crate::time::rfc3339(expires_at)),
            rejected,
        }
    }

    /// Ends a lease at once (its connection closed). No-op if none.
    pub fn end(&self, owner: &LeaseOwner) {
        let mut state = self.lock();
        self.end_locked(&mut state, owner);
    }

    fn end_locked(&self, state: &mut State, owner: &LeaseOwner) {
        let Some(lease) = state.leases.remove(owner) else {
            return;
        };
        state.deadlines.remove(&(lease.deadline, owner.clone()));
        for id in &lease.ids {
            if lease.joined.contains(id) {
                self.leave(&lease, id);
            }
            unindex(&mut state.by_channel, id, owner);
        }
        if let Some(uid) = &lease.user_id {
            self.users.lease_ended(uid);
        }
    }

    /// Ends every lease whose deadline has passed; returns the next
    /// deadline, if any.
    pub fn expire(&self, now: Instant) -> Option<Instant> {
        let mut state = self.lock();
        loop {
            let (deadline, owner) = state.deadlines.first().cloned()?;
            if deadline > now {
                return Some(deadline);
            }
            tracing::debug!(?owner, "lease expired");
            self.end_locked(&mut state, &owner);
        }
    }

    /// Expires leases until the registry is dropped (run as a task).
    pub async fn run_expiry(self: Arc<Self>) {
        loop {
            let next = self.expire(Instant::now());
            let wake = self.wake.notified();
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => {}
                        _ = wake => {}
                    }
                }
                None => wake.await,
            }
        }
    }

    /// Re-applies the user's visibility to their leases: hidden leases
    /// leave their channels, visible ones join them again.
    pub fn refresh_visibility(&self, uid: &str) {
        let mut state = self.lock();
        let visible = self.privacy.visible(uid);
        for lease in state.leases.values_mut() {
            if lease.user_id.as_deref() != Some(uid) {
                continue;
            }
            if visible {
                let missing: Vec<Arc<str>> = lease.ids.difference(&lease.joined).cloned().collect();
                for id in missing {
                    match self.join(lease, &id) {
                        Ok(()) => {
                            lease.joined.insert(id);
                        }
                        Err(e) => {
                            tracing::debug!(%id, error = %e, "leased id not joined again")
                        }
                    }
                }
            } else {
                for id in std::mem::take(&mut lease.joined) {
                    self.leave(lease, &id);
                }
            }
        }
    }

    /// The owners leasing `channel` (hidden ones included: they still
    /// receive messages sent to everyone present).
    pub fn holders(&self, channel: &str) -> Vec<LeaseOwner> {
        self.lock()
            .by_channel
            .get(channel)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Number of live leases.
    pub fn len(&self) -> usize {
        self.lock().leases.len()
    }

    /// True if there are no live leases.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn unindex(by_channel: &mut HashMap<Arc<str>, HashSet<LeaseOwner>>, id: &str, owner: &LeaseOwner) {
    if let Some(set) = by_channel.get_mut(id) {
        set.remove(owner);
        if set.is_empty() {
            by_channel.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presence::Limits;
    use crate::services::privacy::{MemoryStore, PrivacySettings};
    use serde_json::json;

    fn setup(limits: Limits) -> (Arc<Leases>, Presence, Arc<Privacy>, Arc<UserPresence>) {
        let privacy =
            Arc::new(Privacy::new(PrivacySettings::default(), Box::new(MemoryStore)).unwrap());
        let users = Arc::new(UserPresence::new(privacy.clone(), Box::new(|_| {})));
        let leases = Arc::new(Leases::new(privacy.clone(), users.clone()));
        let presence = Presence::open_for_tests(limits);
        leases.attach(presence.clone());
        (leases, presence, privacy, users)
    }

    fn refresh(owner: LeaseOwner, uid: &str, ids: &[&str], ttl_ms: u64) -> Refresh {
        Refresh {
            owner,
            member_key: Arc::from(uid),
            user_id: Some(Arc::from(uid)),
            info: Arc::new(json!({"name": uid})),
            ids: ids.iter().map(|s| Arc::from(*s)).collect(),
            ttl: Duration::from_millis(ttl_ms),
        }
    }

    fn uids(p: &Presence, channel: &str) -> Vec<String> {
        p.members(channel)
            .iter()
            .map(|m| m.user_id.to_string())
            .collect()
    }

    #[test]
    fn a_refresh_replaces_the_list_and_expiry_ends_it() {
        let (leases, p, _, users) = setup(Limits::default());
        let owner = LeaseOwner::User(Arc::from("u1"));
        let out = leases.refresh(refresh(
            owner.clone(),
            "u1",
            &["content:42", "service:abc"],
            1000,
        ));
        assert_eq!(out.ids, ["content:42", "service:abc"]);
        assert!(out.expires_at.is_some());
        assert_eq!(uids(&p, "content:42"), ["u1"]);
        assert!(users.status("u1").online);
        leases.refresh(refresh(
            owner.clone(),
            "u1",
            &["content:42", "content:7"],
            1000,
        ));
        assert!(p.members("service:abc").is_empty());
        assert_eq!(uids(&p, "content:7"), ["u1"]);
        assert_eq!(leases.holders("content:7"), std::slice::from_ref(&owner));
        // Not yet expired, then expired.
        let next = leases.expire(Instant::now()).unwrap();
        assert_eq!(leases.expire(next + Duration::from_millis(1)), None);
        assert!(p.members("content:42").is_empty());
        assert!(leases.holders("content:7").is_empty());
        assert!(!users.status("u1").online);
        assert!(leases.is_empty());
    }

    #[test]
    fn tabs_of_one_user_are_one_member_and_an_empty_list_ends_a_lease() {
        let (leases, p, _, users) = setup(Limits::default());
        let tab1 = LeaseOwner::Conn(ConnId(1));
        let tab2 = LeaseOwner::Conn(ConnId(2));
        leases.refresh(refresh(tab1.clone(), "u1", &["content:42"], 60_000));
        leases.refresh(refresh(tab2.clone(), "u1", &["content:42"], 60_000));
        assert_eq!(uids(&p, "content:42"), ["u1"]);
        assert_eq!(p.channel_info("content:42").connections, 2);
        let out = leases.refresh(refresh(tab1.clone(), "u1", &[], 60_000));
        assert_eq!(out.expires_at, None);
        assert_eq!(uids(&p, "content:42"), ["u1"], "the other tab holds it");
        leases.end(&tab2);
        assert!(p.members("content:42").is_empty());
        assert!(!users.status("u1").online);
    }

    #[test]
    fn a_full_channel_rejects_the_id() {
        let (leases, p, _, _) = setup(Limits {
            max_members_per_channel: 1,
            ..Limits::default()
        });
        leases.refresh(refresh(
            LeaseOwner::User(Arc::from("a")),
            "a",
            &["content:1"],
            60_000,
        ));
        let out = leases.refresh(refresh(
            LeaseOwner::User(Arc::from("b")),
            "b",
            &["content:1", "content:2"],
            60_000,
        ));
        assert_eq!(out.ids, ["content:2"]);
        assert_eq!(out.rejected.len(), 1);
        assert_eq!(out.rejected[0].id, "content:1");
        assert!(
            out.rejected[0].error.contains("members"),
            "{:?}",
            out.rejected
        );
        assert_eq!(uids(&p, "content:1"), ["a"]);
    }

    #[test]
    fn hidden_users_hold_leases_without_membership() {
        let (leases, p, privacy, users) = setup(Limits::default());
        privacy.set("eve", Some(false)).unwrap();
        let owner = LeaseOwner::User(Arc::from("eve"));
        leases.refresh(refresh(owner.clone(), "eve", &["content:42"], 60_000));
        assert!(p.members("content:42").is_empty());
        assert_eq!(leases.holders("content:42"), [owner]);
        assert!(!users.status("eve").online);
        privacy.set("eve", Some(true)).unwrap();
        leases.refresh_visibility("eve");
        users.refresh(&Arc::from("eve"));
        assert_eq!(uids(&p, "content:42"), ["eve"]);
        assert!(users.status("eve").online);
        privacy.set("eve", Some(false)).unwrap();
        leases.refresh_visibility("eve");
        assert!(p.members("content:42").is_empty());
    }
}
