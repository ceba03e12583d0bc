//! Delivery: encode an event once per (codec, flavor) and queue the shared
//! bytes for every recipient.

use std::sync::Arc;

use super::channel::{Channel, MemberEntry, Subscriber};
use super::connection::ConnShared;
use super::invitations::InvitationEvent;
use super::types::{DirectMessage, Event, MemberChange, MemberView};
use crate::ids::ConnId;
use crate::outbox::Outbound;

/// Frames already encoded for this event, keyed by (codec, flavor). A
/// handful of protocols at most, so a vector beats a map.
#[derive(Default)]
struct EncodeCache {
    entries: Vec<((usize, u8), Option<Outbound>)>,
}

impl EncodeCache {
    fn get(&mut self, conn: &ConnShared, flavor: u8, event: &Event<'_>) -> Option<Outbound> {
        let key = (conn.codec_key(), flavor);
        if let Some((_, frame)) = self.entries.iter().find(|(k, _)| *k == key) {
            return frame.clone();
        }
        let frame = conn.codec.encode(event, flavor).map(Outbound::broadcast);
        self.entries.push((key, frame.clone()));
        frame
    }

    /// Like [`EncodeCache::get`], for an invitation event.
    fn get_invitation(
        &mut self,
        conn: &ConnShared,
        flavor: u8,
        event: &InvitationEvent<'_>,
    ) -> Option<Outbound> {
        let key = (conn.codec_key(), flavor);
        if let Some((_, frame)) = self.entries.iter().find(|(k, _)| *k == key) {
            return frame.clone();
        }
        let frame = conn
            .codec
            .encode_invitation(event, flavor)
            .map(Outbound::broadcast);
        self.entries.push((key, frame.clone()));
        frame
    }
}

/// Queues `event` for every subscriber accepted by `filter`. Returns the
/// number of connections it was queued for.
pub(super) fn deliver<'s>(
    subscribers: impl Iterator<Item = &'s Subscriber>,
    event: &Event<'_>,
    filter: impl Fn(&ConnShared) -> bool,
) -> usize {
    let mut cache = EncodeCache::default();
    let mut delivered = 0;
    for sub in subscribers {
        if !filter(&sub.conn) {
            continue;
        }
        if let Some(frame) = cache.get(&sub.conn, sub.flavor, event)
            && sub.conn.outbox.push_deferrable(frame)
        {
            delivered += 1;
        }
    }
    delivered
}

/// Queues a direct message for each target connection.
pub(super) fn deliver_direct(targets: &[Arc<ConnShared>], msg: &DirectMessage) -> usize {
    let event = Event::Direct(msg);
    let mut cache = EncodeCache::default();
    let mut delivered = 0;
    for conn in targets {
        if let Some(frame) = cache.get(conn, conn.flavor(), &event)
            && conn.outbox.push_deferrable(frame)
        {
            delivered += 1;
        }
    }
    delivered
}

/// Queues an invitation event for each target connection whose codec can
/// render it, encoded once per (codec, connection flavor).
pub(super) fn deliver_invitation(
    targets: &[Arc<ConnShared>],
    event: &InvitationEvent<'_>,
) -> usize {
    let mut cache = EncodeCache::default();
    let mut delivered = 0;
    for conn in targets {
        if let Some(frame) = cache.get_invitation(conn, conn.flavor(), event)
            && conn.outbox.push_deferrable(frame)
        {
            delivered += 1;
        }
    }
    delivered
}

/// Tells the channel's presence watchers about a member change. `removed`
/// is the member as it was, for a removal; `skip` is a connection that must
/// not get the event (the joiner, who has it in its snapshot).
pub(super) fn member_event(
    ch: &Channel,
    change: MemberChange,
    key: &str,
    removed: Option<&MemberEntry>,
    skip: Option<ConnId>,
) {
    if change == MemberChange::Unchanged {
        return;
    }
    let member = match (change, removed) {
        (MemberChange::Removed, Some(entry)) => MemberView {
            user_id: key,
            info: &entry.info,
        },
        (MemberChange::Removed, None) => return,
        _ => match ch.member(key) {
            Some(m) => m,
            None => return,
        },
    };
    let event = Event::Member {
        change,
        channel: &ch.name,
        member,
        members: ch.members(),
    };
    let watchers = ch.subscribers.values().filter(|s| s.presence_events);
    deliver(watchers, &event, |c| Some(c.id) != skip);
}
