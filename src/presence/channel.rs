//! The state of one channel: its local subscribers and its members.
//!
//! Members are keyed by user id. Each member has one or more *presences*:
//! a local connection, a connection on another node, or a lease. The member
//! exists while it has at least one presence; its data is the data of its
//! most recent presence. In a cluster the channel also counts, per other
//! node, that node's subscribers that are not members (they have no
//! presence to replicate), so they count in the channel's connections and
//! occupancy here too. This is plain data with no I/O, so the member rules
//! (dedup, capacity, which change an operation causes) are unit-tested here.

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use super::connection::ConnShared;
use super::observe::PresenceDelta;
use super::types::{MemberChange, MemberView, Members};
use crate::ids::ConnId;

/// Where a presence comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A connection on this node.
    Local(ConnId),
    /// A connection on another node of the cluster.
    Remote {
        /// The node id.
        node: Arc<str>,
        /// The connection id on that node.
        conn: ConnId,
    },
    /// A lease that lives until it is not refreshed.
    Lease(Arc<str>),
}

/// A member and the presences that keep it in the channel.
#[derive(Debug)]
pub struct MemberEntry {
    /// The member's data as others see it (that of its latest presence).
    pub info: Arc<Value>,
    /// Bytes this member counts against the channel's member-data budget.
    pub weight: usize,
    presences: Vec<(Origin, Arc<Value>)>,
}

/// A local connection subscribed to the channel.
#[derive(Debug)]
pub struct Subscriber {
    pub conn: Arc<ConnShared>,
    pub presence_events: bool,
    pub receive_messages: bool,
    pub flavor: u8,
    /// The member key this subscription holds a presence under, if any.
    pub member_key: Option<Arc<str>>,
    /// The connection's user is hidden (privacy): the subscription holds no
    /// presence and counts in no connection count.
    pub hidden: bool,
    /// While hidden: the membership (key, data) the subscription would
    /// hold if the user were visible, restored when they become visible.
    /// Boxed: few users hide, and every subscription would keep the room
    /// (in the channel's table, with its spare room, about twice over).
    pub hidden_member: Option<Box<(Arc<str>, Arc<Value>)>>,
}

/// Budget limits applied when members join or change.
#[derive(Clone, Copy, Debug)]
pub struct MemberBudget {
    pub max_bytes: usize,
    pub max_members: usize,
}

/// Why a presence could not be added or changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetError {
    Bytes,
    Members,
}

impl Subscriber {
    /// A visible subscription that holds no membership: what other nodes
    /// count as this node's subscribers of the channel.
    fn is_plain(&self) -> bool {
        self.member_key.is_none() && !self.hidden
    }
}

/// One channel.
#[derive(Debug)]
pub struct Channel {
    pub name: Arc<str>,
    /// Local subscriptions. Add and remove them with
    /// [`Channel::insert_subscriber`] and [`Channel::remove_subscriber`],
    /// and report an in-place change of membership or visibility with
    /// [`Channel::subscriber_changed`], so the plain count stays right.
    pub subscribers: HashMap<ConnId, Subscriber>,
    /// How many of `subscribers` are plain (see [`Subscriber::is_plain`]).
    plain_subscribers: usize,
    /// Other nodes' plain subscribers, per node (only nodes that have some).
    remote_subscribers: HashMap<Arc<str>, usize>,
    /// The sum of `remote_subscribers`.
    remote_subscriber_total: usize,
    members: IndexMap<Arc<str>, MemberEntry>,
    member_bytes: usize,
    /// Set when the channel was dropped from the channel map; a joiner that
    /// raced with the removal must look the channel up again.
    pub removed: bool,
    /// Limits set for this channel by name ([`super::Presence::set_channel_limits`]);
    /// they replace the budget passed to [`Channel::add_presence`] and
    /// [`Channel::update_presence`].
    pub limits: Option<MemberBudget>,
    /// Presence changes not yet reported to observers (only recorded when
    /// the core has observers).
    deltas: Vec<PresenceDelta>,
    pub(super) record_deltas: bool,
}

/// The JSON size of `{"uid":<key>,"umd":<info>}`, the unit of the
/// member-data budget.
pub fn member_weight(key: &str, info: &Value) -> usize {
    // 15 = `{"uid":` (7) + `,"umd":` (7) + `}` (1)
    let key_len = serde_json::to_string(key).map(|s| s.len()).unwrap_or(0);
    let info_len = serde_json::to_string(info).map(|s| s.len()).unwrap_or(4);
    15 + key_len + info_len
}

impl Channel {
    /// An empty channel.
    pub fn new(name: Arc<str>) -> Self {
        Channel {
            name,
            subscribers: HashMap::new(),
            plain_subscribers: 0,
            remote_subscribers: HashMap::new(),
            remote_subscriber_total: 0,
            members: IndexMap::new(),
            member_bytes: 0,
            removed: false,
            limits: None,
            deltas: Vec::new(),
            record_deltas: false,
        }
    }

    /// Takes the presence changes recorded since the last call.
    pub(super) fn take_deltas(&mut self) -> Vec<PresenceDelta> {
        std::mem::take(&mut self.deltas)
    }

    fn record(
        &mut self,
        user_id: &Arc<str>,
        origin: &Origin,
        info: Option<&Arc<Value>>,
        change: MemberChange,
    ) {
        if self.record_deltas {
            self.deltas.push(PresenceDelta {
                user_id: user_id.clone(),
                origin: origin.clone(),
                info: info.cloned(),
                change,
            });
        }
    }

    /// True when nothing keeps the channel alive.
    pub fn is_empty(&self) -> bool {
        self.subscribers.is_empty() && self.members.is_empty() && self.remote_subscriber_total == 0
    }

    /// True when nobody others may see is in the channel: no member, no
    /// subscriber of a visible user and no subscriber on another node
    /// (hidden users' subscriptions keep the channel alive but do not
    /// occupy it).
    pub fn is_vacant(&self) -> bool {
        self.members.is_empty()
            && self.remote_subscriber_total == 0
            && self.subscribers.values().all(|s| s.hidden)
    }

    /// Adds (or replaces) a local subscription.
    pub fn insert_subscriber(&mut self, id: ConnId, sub: Subscriber) {
        if sub.is_plain() {
            self.plain_subscribers += 1;
        }
        if let Some(old) = self.subscribers.insert(id, sub)
            && old.is_plain()
        {
            self.plain_subscribers -= 1;
        }
    }

    /// Removes a local subscription.
    pub fn remove_subscriber(&mut self, id: &ConnId) -> Option<Subscriber> {
        let sub = self.subscribers.remove(id)?;
        if sub.is_plain() {
            self.plain_subscribers -= 1;
        }
        Some(sub)
    }

    /// Whether the subscription of `id` is plain now (false if there is
    /// none); pass it to [`Channel::subscriber_changed`] after changing
    /// the subscription in place.
    pub fn is_plain_subscriber(&self, id: &ConnId) -> bool {
        self.subscribers.get(id).is_some_and(Subscriber::is_plain)
    }

    /// Recounts the subscription of `id` after an in-place change of its
    /// membership or visibility; `was_plain` is what
    /// [`Channel::is_plain_subscriber`] said before the change.
    pub fn subscriber_changed(&mut self, id: &ConnId, was_plain: bool) {
        match (was_plain, self.is_plain_subscriber(id)) {
            (false, true) => self.plain_subscribers += 1,
            (true, false) => self.plain_subscribers -= 1,
            _ => {}
        }
    }

    /// Local subscriptions that are visible and hold no membership: what
    /// the other nodes of a cluster count as this node's subscribers.
    pub fn plain_subscribers(&self) -> usize {
        self.plain_subscribers
    }

    /// Sets `node`'s number of plain subscribers (0: none). Returns true
    /// if it changed.
    pub fn set_remote_subscribers(&mut self, node: &Arc<str>, count: usize) -> bool {
        let old = match count {
            0 => self.remote_subscribers.remove(node).unwrap_or(0),
            _ => self
                .remote_subscribers
                .insert(node.clone(), count)
                .unwrap_or(0),
        };
        self.remote_subscriber_total = self.remote_subscriber_total - old + count;
        old != count
    }

    /// The other nodes' plain subscribers, all nodes together.
    pub fn remote_subscribers(&self) -> usize {
        self.remote_subscriber_total
    }

    /// The data of one presence of a member, if it exists.
    pub fn presence_info(&self, key: &str, origin: &Origin) -> Option<Arc<Value>> {
        self.members
            .get(key)?
            .presences
            .iter()
            .find(|(o, _)| o == origin)
            .map(|(_, info)| info.clone())
    }

    /// The members in join order.
    pub fn members(&self) -> Members<'_> {
        Members { map: &self.members }
    }

    /// Total member-data bytes.
    pub fn member_bytes(&self) -> usize {
        self.member_bytes
    }

    /// A member by key.
    pub fn member(&self, key: &str) -> Option<MemberView<'_>> {
        self.members.get_key_value(key).map(|(k, e)| MemberView {
            user_id: k,
            info: &e.info,
        })
    }

    /// Adds a presence for `key`. Returns what others see: Added for the
    /// first presence, Updated if the member's data changed, else Unchanged.
    /// Re-adding an existing origin replaces its data.
    fn add_presence_inner(
        &mut self,
        key: &Arc<str>,
        origin: Origin,
        info: Arc<Value>,
        budget: MemberBudget,
    ) -> Result<MemberChange, BudgetError> {
        let budget = self.limits.unwrap_or(budget);
        let new_weight = member_weight(key, &info);
        match self.members.get_mut(key) {
            None => {
                if self.members.len() >= budget.max_members {
                    return Err(BudgetError::Members);
                }
                if self.member_bytes + new_weight > budget.max_bytes {
                    return Err(BudgetError::Bytes);
                }
                self.member_bytes += new_weight;
                self.members.insert(
                    key.clone(),
                    MemberEntry {
                        info: info.clone(),
                        weight: new_weight,
                        presences: vec![(origin, info)],
                    },
                );
                Ok(MemberChange::Added)
            }
            Some(entry) => {
                let changed = *entry.info != *info;
                if changed && self.member_bytes - entry.weight + new_weight > budget.max_bytes {
                    return Err(BudgetError::Bytes);
                }
                entry.presences.retain(|(o, _)| *o != origin);
                entry.presences.push((origin, info.clone()));
                if changed {
                    self.member_bytes = self.member_bytes - entry.weight + new_weight;
                    entry.weight = new_weight;
                    entry.info = info;
                    Ok(MemberChange::Updated)
                } else {
                    Ok(MemberChange::Unchanged)
                }
            }
        }
    }

    /// Changes the data of an existing presence. The member's data becomes
    /// the new data (the latest change wins).
    fn update_presence_inner(
        &mut self,
        key: &str,
        origin: &Origin,
        info: Arc<Value>,
        budget: MemberBudget,
    ) -> Result<Option<MemberChange>, BudgetError> {
        let budget = self.limits.unwrap_or(budget);
        let Some(entry) = self.members.get_mut(key) else {
            return Ok(None);
        };
        let Some(pos) = entry.presences.iter().position(|(o, _)| o == origin) else {
            return Ok(None);
        };
        let new_weight = member_weight(key, &info);
        let changed = *entry.info != *info;
        if changed && self.member_bytes - entry.weight + new_weight > budget.max_bytes {
            return Err(BudgetError::Bytes);
        }
        // The updated presence becomes the latest one.
        let (o, _) = entry.presences.remove(pos);
        entry.presences.push((o, info.clone()));
        if !changed {
            return Ok(Some(MemberChange::Unchanged));
        }
        self.member_bytes = self.member_bytes - entry.weight + new_weight;
        entry.weight = new_weight;
        entry.info = info;
        Ok(Some(MemberChange::Updated))
    }

    /// Removes a presence. Returns None if it was not there; Removed (with
    /// the member as it was) for the last presence; Updated if the member's
    /// data falls back to a different remaining presence; else Unchanged.
    fn remove_presence_inner(
        &mut self,
        key: &str,
        origin: &Origin,
    ) -> Option<(MemberChange, Option<MemberEntry>)> {
        let entry = self.members.get_mut(key)?;
        let pos = entry.presences.iter().position(|(o, _)| o == origin)?;
        entry.presences.remove(pos);
        match entry.presences.last() {
            None => {
                let removed = self.members.shift_remove(key)?;
                self.member_bytes -= removed.weight;
                Some((MemberChange::Removed, Some(removed)))
            }
            Some((_, latest)) if **latest != *entry.info => {
                let latest = latest.clone();
                let new_weight = member_weight(key, &latest);
                self.member_bytes = self.member_bytes - entry.weight + new_weight;
                entry.weight = new_weight;
                entry.info = latest;
                Some((MemberChange::Updated, None))
            }
            Some(_) => Some((MemberChange::Unchanged, None)),
        }
    }

    /// Adds a presence for `key`. Returns what others see: Added for the
    /// first presence, Updated if the member's data changed, else Unchanged.
    /// Re-adding an existing origin replaces its data.
    pub fn add_presence(
        &mut self,
        key: &Arc<str>,
        origin: Origin,
        info: Arc<Value>,
        budget: MemberBudget,
    ) -> Result<MemberChange, BudgetError> {
        let change = self.add_presence_inner(key, origin.clone(), info.clone(), budget)?;
        self.record(key, &origin, Some(&info), change);
        Ok(change)
    }

    /// Changes the data of an existing presence. The member's data becomes
    /// the new data (the latest change wins). None if there is no such
    /// presence.
    pub fn update_presence(
        &mut self,
        key: &str,
        origin: &Origin,
        info: Arc<Value>,
        budget: MemberBudget,
    ) -> Result<Option<MemberChange>, BudgetError> {
        let result = self.update_presence_inner(key, origin, info.clone(), budget)?;
        if let (Some(change), true) = (result, self.record_deltas) {
            let key: Arc<str> = Arc::from(key);
            self.record(&key, origin, Some(&info), change);
        }
        Ok(result)
    }

    /// Removes a presence. Returns None if it was not there; Removed (with
    /// the member as it was) for the last presence; Updated if the member's
    /// data falls back to a different remaining presence; else Unchanged.
    pub fn remove_presence(
        &mut self,
        key: &str,
        origin: &Origin,
    ) -> Option<(MemberChange, Option<MemberEntry>)> {
        let result = self.remove_presence_inner(key, origin)?;
        if self.record_deltas {
            let key: Arc<str> = Arc::from(key);
            self.record(&key, origin, None, result.0);
        }
        Some(result)
    }

    /// The presences matching `pred` (e.g. all of a dead node's), as
    /// (member key, origin) pairs to pass to [`Channel::remove_presence`].
    pub fn find_presences(
        &mut self,
        mut pred: impl FnMut(&Origin) -> bool,
    ) -> Vec<(Arc<str>, Origin)> {
        let mut victims = Vec::new();
        for (key, entry) in &self.members {
            for (origin, _) in &entry.presences {
                if pred(origin) {
                    victims.push((key.clone(), origin.clone()));
                }
            }
        }
        victims
    }

    /// The number of presences (connections and leases) behind the members.
    pub fn presence_count(&self) -> usize {
        self.members.values().map(|e| e.presences.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BUDGET: MemberBudget = MemberBudget {
        max_bytes: 100_000,
        max_members: 1000,
    };

    fn key(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    fn local(n: u64) -> Origin {
        Origin::Local(ConnId(n))
    }

    #[test]
    fn weight_is_the_json_size_of_uid_and_umd() {
        let info = json!({"name": "Jim"});
        let expected = serde_json::to_string(&json!({"uid": "jim", "umd": info}))
            .unwrap()
            .len();
        assert_eq!(member_weight("jim", &info), expected);
        assert_eq!(
            member_weight("a", &Value::Null),
            r#"{"uid":"a","umd":null}"#.len()
        );
    }

    #[test]
    fn second_presence_of_a_user_is_one_member() {
        let mut ch = Channel::new(key("c"));
        let info = Arc::new(json!({"n": 1}));
        assert_eq!(
            ch.add_presence(&key("jim"), local(1), info.clone(), BUDGET),
            Ok(MemberChange::Added)
        );
        assert_eq!(
            ch.add_presence(&key("jim"), local(2), info.clone(), BUDGET),
            Ok(MemberChange::Unchanged)
        );
        assert_eq!(ch.members().len(), 1);
        assert_eq!(
            ch.remove_presence("jim", &local(1)).map(|r| r.0),
            Some(MemberChange::Unchanged)
        );
        assert_eq!(
            ch.remove_presence("jim", &local(2)).map(|r| r.0),
            Some(MemberChange::Removed)
        );
        assert!(ch.members().is_empty());
        assert_eq!(ch.member_bytes(), 0);
        assert_eq!(ch.remove_presence("jim", &local(2)).map(|r| r.0), None);
    }

    #[test]
    fn latest_presence_data_wins_and_falls_back_on_leave() {
        let mut ch = Channel::new(key("c"));
        let a = Arc::new(json!("a"));
        let b = Arc::new(json!("bb"));
        ch.add_presence(&key("jim"), local(1), a.clone(), BUDGET)
            .unwrap();
        assert_eq!(
            ch.add_presence(&key("jim"), local(2), b.clone(), BUDGET),
            Ok(MemberChange::Updated)
        );
        assert_eq!(*ch.member("jim").unwrap().info, *b);
        assert_eq!(ch.member_bytes(), member_weight("jim", &b));
        assert_eq!(
            ch.remove_presence("jim", &local(2)).map(|r| r.0),
            Some(MemberChange::Updated)
        );
        assert_eq!(*ch.member("jim").unwrap().info, *a);
        assert_eq!(ch.member_bytes(), member_weight("jim", &a));
    }

    #[test]
    fn byte_budget_is_enforced_on_join_and_update() {
        let budget = MemberBudget {
            max_bytes: 2 * member_weight("u1", &json!("x")),
            max_members: 10,
        };
        let mut ch = Channel::new(key("c"));
        ch.add_presence(&key("u1"), local(1), Arc::new(json!("x")), budget)
            .unwrap();
        ch.add_presence(&key("u2"), local(2), Arc::new(json!("y")), budget)
            .unwrap();
        assert_eq!(
            ch.add_presence(&key("u3"), local(3), Arc::new(json!("z")), budget),
            Err(BudgetError::Bytes)
        );
        assert_eq!(
            ch.update_presence("u1", &local(1), Arc::new(json!("longer")), budget),
            Err(BudgetError::Bytes)
        );
        // Same-size update fits.
        assert_eq!(
            ch.update_presence("u1", &local(1), Arc::new(json!("q")), budget),
            Ok(Some(MemberChange::Updated))
        );
    }

    #[test]
    fn member_count_is_enforced() {
        let budget = MemberBudget {
            max_bytes: 1 << 20,
            max_members: 1,
        };
        let mut ch = Channel::new(key("c"));
        ch.add_presence(&key("u1"), local(1), Arc::new(Value::Null), budget)
            .unwrap();
        assert_eq!(
            ch.add_presence(&key("u2"), local(2), Arc::new(Value::Null), budget),
            Err(BudgetError::Members)
        );
        // Another presence of an existing member is not a new member.
        assert!(
            ch.add_presence(&key("u1"), local(3), Arc::new(Value::Null), budget)
                .is_ok()
        );
    }

    #[test]
    fn channel_limits_replace_the_default_budget() {
        let tight = MemberBudget {
            max_bytes: 1 << 20,
            max_members: 1,
        };
        let mut ch = Channel::new(key("c"));
        ch.limits = Some(MemberBudget {
            max_bytes: 1 << 20,
            max_members: 3,
        });
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            assert_eq!(
                ch.add_presence(&key(name), local(i as u64), Arc::new(Value::Null), tight),
                Ok(MemberChange::Added)
            );
        }
        assert_eq!(
            ch.add_presence(&key("d"), local(9), Arc::new(Value::Null), BUDGET),
            Err(BudgetError::Members)
        );
    }

    #[test]
    fn members_keep_join_order() {
        let mut ch = Channel::new(key("c"));
        for (i, name) in ["c", "a", "b"].iter().enumerate() {
            ch.add_presence(&key(name), local(i as u64), Arc::new(Value::Null), BUDGET)
                .unwrap();
        }
        ch.remove_presence("a", &local(1));
        let order: Vec<_> = ch.members().iter().map(|m| m.user_id.to_string()).collect();
        assert_eq!(order, ["c", "b"]);
    }

    #[test]
    fn other_nodes_subscribers_keep_the_channel_alive_and_occupied() {
        let mut ch = Channel::new(key("c"));
        let (b, c) = (key("b"), key("c"));
        assert!(ch.is_empty() && ch.is_vacant());
        assert!(ch.set_remote_subscribers(&b, 2));
        assert!(!ch.set_remote_subscribers(&b, 2), "no change");
        assert!(ch.set_remote_subscribers(&c, 1));
        assert_eq!(ch.remote_subscribers(), 3);
        assert!(!ch.is_empty() && !ch.is_vacant());
        assert!(ch.set_remote_subscribers(&b, 0));
        assert!(!ch.set_remote_subscribers(&b, 0), "already none");
        assert_eq!(ch.remote_subscribers(), 1);
        ch.set_remote_subscribers(&c, 0);
        assert!(ch.is_empty() && ch.is_vacant());
        assert_eq!(ch.plain_subscribers(), 0);
    }

    #[test]
    fn presences_of_a_node_can_be_found() {
        let mut ch = Channel::new(key("c"));
        let remote = |n| Origin::Remote {
            node: Arc::from("b"),
            conn: ConnId(n),
        };
        ch.add_presence(&key("u1"), remote(1), Arc::new(Value::Null), BUDGET)
            .unwrap();
        ch.add_presence(&key("u1"), local(1), Arc::new(Value::Null), BUDGET)
            .unwrap();
        ch.add_presence(&key("u2"), remote(2), Arc::new(Value::Null), BUDGET)
            .unwrap();
        let victims =
            ch.find_presences(|o| matches!(o, Origin::Remote { node, .. } if &**node == "b"));
        assert_eq!(victims.len(), 2);
        assert_eq!(ch.presence_count(), 3);
    }
}
