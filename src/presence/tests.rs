//! Unit tests of the core's API with a recording codec (no sockets).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use super::*;
use crate::outbox::{Outbound, OutboxReceiver};

/// Encodes events as short text lines and counts how often it was called.
#[derive(Default)]
struct Recorder {
    calls: AtomicUsize,
}

impl Codec for Recorder {
    fn encode(&self, event: &Event<'_>, flavor: u8) -> Option<Outbound> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let text = match event {
            Event::Member {
                change,
                channel,
                member,
                members,
            } => {
                let list: Vec<&str> = members.iter().map(|m| m.user_id).collect();
                format!(
                    "{change:?} {channel} {} {} [{}]",
                    member.user_id,
                    member.info,
                    list.join(",")
                )
            }
            Event::Message(m) => format!("msg {} {} f{flavor}", m.channel, m.event),
            Event::Direct(m) => format!("direct {}", m.event),
        };
        Some(Outbound::Text(text.into()))
    }
}

use crate::outbox::drain_text as drain;

fn member(info: Value) -> SubscribeOptions {
    SubscribeOptions {
        member_info: Some(Arc::new(info)),
        presence_events: true,
        ..SubscribeOptions::default()
    }
}

fn connect(p: &Presence, codec: &Arc<Recorder>, uid: &str) -> (Connection, OutboxReceiver) {
    let codec: Arc<dyn Codec> = codec.clone();
    p.connect(Identity::user(uid, Value::Null), codec, "test")
        .unwrap()
}

fn message(channel: &str, sender: Option<&Connection>, echo: bool) -> ChannelMessage {
    ChannelMessage {
        id: crate::ids::ulid(),
        channel: Arc::from(channel),
        event: "e".into(),
        data: None,
        sender: sender.map(|c| MessageSender {
            conn: c.id(),
            user_id: c.user_id(),
            info: c.info(),
            echo,
        }),
    }
}

#[test]
fn join_snapshot_then_events_and_dedup() {
    let p = Presence::open_for_tests(Limits::default());
    let codec = Arc::new(Recorder::default());
    let (a, mut a_rx) = connect(&p, &codec, "alice");
    let (b1, mut b1_rx) = connect(&p, &codec, "bob");
    let (b2, mut b2_rx) = connect(&p, &codec, "bob");

    let mut snap = Vec::new();
    p.subscribe(&a, "room", member(json!(1)), |s| {
        snap = s.members.iter().map(|m| m.user_id.to_string()).collect()
    })
    .unwrap();
    assert_eq!(snap, ["alice"]);
    assert_eq!(
        p.subscribe(&b1, "room", member(json!(2)), |_| {}),
        Ok(MemberChange::Added)
    );
    assert_eq!(drain(&mut a_rx), ["Added room bob 2 [alice,bob]"]);
    assert!(
        drain(&mut b1_rx).is_empty(),
        "the joiner has it in its snapshot"
    );

    // Second connection of bob with equal data: nobody hears anything.
    assert_eq!(
        p.subscribe(&b2, "room", member(json!(2)), |_| {}),
        Ok(MemberChange::Unchanged)
    );
    assert!(drain(&mut a_rx).is_empty());
    assert_eq!(p.members("room").len(), 2);
    assert_eq!(p.channel_info("room").connections, 3);

    // The first of bob's connections leaves: still a member.
    assert!(p.unsubscribe(&b1, "room", |_| {}));
    assert!(drain(&mut a_rx).is_empty());
    // The last one disconnects: one removal.
    drop(b2);
    assert_eq!(drain(&mut a_rx), ["Removed room bob 2 [alice]"]);
    assert!(drain(&mut b2_rx).is_empty());
    assert!(!p.unsubscribe(&b1, "room", |_| {}));
}

#[test]
fn errors_and_limits() {
    let limits = Limits {
        max_channels_per_connection: 1,
        max_members_per_channel: 1,
        max_connections_per_user: 1,
        ..Limits::default()
    };
    let p = Presence::open_for_tests(limits);
    let codec = Arc::new(Recorder::default());
    let (a, _a_rx) = connect(&p, &codec, "alice");
    let dyn_codec: Arc<dyn Codec> = codec.clone();
    assert_eq!(
        p.connect(Identity::user("alice", Value::Null), dyn_codec, "t")
            .err(),
        Some(ConnectError::TooManyConnections { limit: 1 })
    );
    p.subscribe(&a, "one", member(Value::Null), |_| {}).unwrap();
    assert_eq!(
        p.subscribe(&a, "one", member(Value::Null), |_| {}),
        Err(SubscribeError::AlreadySubscribed)
    );
    assert_eq!(
        p.subscribe(&a, "two", member(Value::Null), |_| {}),
        Err(SubscribeError::TooManyChannels { limit: 1 })
    );
    let (b, _b_rx) = connect(&p, &codec, "bob");
    assert_eq!(
        p.subscribe(&b, "one", member(Value::Null), |_| {}),
        Err(SubscribeError::MemberLimitReached { limit: 1 })
    );
    // A failed join leaves nothing behind.
    assert!(!b.is_subscribed("one"));
    assert_eq!(p.channel_info("one").connections, 1);
    assert_eq!(p.stats().channels, 1);
}

#[test]
fn publish_encodes_once_per_codec_and_flavor() {
    let p = Presence::open_for_tests(Limits::default());
    let codec = Arc::new(Recorder::default());
    let mut conns = Vec::new();
    for i in 0..50 {
        let (c, rx) = connect(&p, &codec, &format!("u{i}"));
        let opts = SubscribeOptions {
            flavor: (i % 2) as u8,
            ..SubscribeOptions::default()
        };
        p.subscribe(&c, "news", opts, |_| {}).unwrap();
        conns.push((c, rx));
    }
    codec.calls.store(0, Ordering::SeqCst);
    assert_eq!(p.publish(&message("news", None, false)), 50);
    assert_eq!(
        codec.calls.load(Ordering::SeqCst),
        2,
        "one encode per flavor"
    );
    for (i, (_, rx)) in conns.iter_mut().enumerate() {
        assert_eq!(drain(rx), [format!("msg news e f{}", i % 2)]);
    }
}

#[test]
fn echo_and_message_filters() {
    let p = Presence::open_for_tests(Limits::default());
    let codec = Arc::new(Recorder::default());
    let (a, mut a_rx) = connect(&p, &codec, "a");
    let (b, mut b_rx) = connect(&p, &codec, "b");
    let (w, mut w_rx) = connect(&p, &codec, "w");
    p.subscribe(&a, "c", SubscribeOptions::default(), |_| {})
        .unwrap();
    p.subscribe(&b, "c", SubscribeOptions::default(), |_| {})
        .unwrap();
    let watcher = SubscribeOptions {
        presence_events: true,
        receive_messages: false,
        ..SubscribeOptions::default()
    };
    p.subscribe(&w, "c", watcher, |_| {}).unwrap();
    assert_eq!(p.publish(&message("c", Some(&a), false)), 1);
    assert!(drain(&mut a_rx).is_empty());
    assert_eq!(drain(&mut b_rx).len(), 1);
    assert!(drain(&mut w_rx).is_empty(), "watchers get no messages");
    assert_eq!(p.publish(&message("c", Some(&a), true)), 2);
    assert_eq!(drain(&mut a_rx).len(), 1);
    assert_eq!(p.publish(&message("nobody-here", None, false)), 0);
}

#[test]
fn update_member_reaches_everyone_including_the_updater() {
    let p = Presence::open_for_tests(Limits::default());
    let codec = Arc::new(Recorder::default());
    let (a, mut a_rx) = connect(&p, &codec, "a");
    let (b, mut b_rx) = connect(&p, &codec, "b");
    p.subscribe(&a, "c", member(json!("x")), |_| {}).unwrap();
    p.subscribe(&b, "c", member(json!("y")), |_| {}).unwrap();
    drain(&mut a_rx);
    assert_eq!(
        p.update_member(&b, "c", Arc::new(json!("z"))),
        Ok(MemberChange::Updated)
    );
    assert_eq!(drain(&mut a_rx), ["Updated c b \"z\" [a,b]"]);
    assert_eq!(drain(&mut b_rx), ["Updated c b \"z\" [a,b]"]);
    assert_eq!(
        p.update_member(&b, "c", Arc::new(json!("z"))),
        Ok(MemberChange::Unchanged)
    );
    assert_eq!(
        p.update_member(&b, "other", Arc::new(json!("z"))),
        Err(UpdateError::NotSubscribed)
    );
    // Connection-level update with propagation.
    assert!(
        p.set_connection_info(&a, Arc::new(json!("w")), true)
            .is_empty()
    );
    assert_eq!(drain(&mut b_rx), ["Updated c a \"w\" [a,b]"]);
    assert_eq!(*a.info(), json!("w"));
}

#[test]
fn external_presences_feed_the_same_members() {
    let p = Presence::open_for_tests(Limits::default());
    let codec = Arc::new(Recorder::default());
    let (a, mut a_rx) = connect(&p, &codec, "a");
    p.subscribe(&a, "c", member(Value::Null), |_| {}).unwrap();
    let remote = |n| Origin::Remote {
        node: Arc::from("node-b"),
        conn: crate::ids::ConnId(n),
    };
    let bob: Arc<str> = Arc::from("bob");
    let a_key: Arc<str> = Arc::from("a");
    p.add_external_presence("c", &bob, remote(1), Arc::new(Value::Null))
        .unwrap();
    p.add_external_presence("c", &bob, remote(2), Arc::new(Value::Null))
        .unwrap();
    // The local user also has a connection on node b: still one member.
    p.add_external_presence("c", &a_key, remote(3), Arc::new(Value::Null))
        .unwrap();
    assert_eq!(drain(&mut a_rx), ["Added c bob null [a,bob]"]);
    assert_eq!(p.channel_info("c").connections, 4);
    // Node b dies: bob is removed exactly once; a stays (local connection).
    let removed = p.remove_external_presences_where(
        |o| matches!(o, Origin::Remote { node, .. } if &**node == "node-b"),
    );
    assert_eq!(removed, 3);
    assert_eq!(drain(&mut a_rx), ["Removed c bob null [a]"]);
    assert_eq!(p.members("c").len(), 1);
    // A lease on an empty channel keeps it listed, and its removal drops it.
    let lease = Origin::Lease(Arc::from("l1"));
    p.add_external_presence("content:42", &bob, lease.clone(), Arc::new(Value::Null))
        .unwrap();
    assert_eq!(p.channels().len(), 2);
    assert_eq!(
        p.remove_external_presence("content:42", "bob", &lease),
        Some(MemberChange::Removed)
    );
    assert_eq!(p.channels().len(), 1);
}

#[test]
fn direct_messages_reach_every_connection_of_a_user() {
    let p = Presence::open_for_tests(Limits::default());
    let codec = Arc::new(Recorder::default());
    let (a1, mut a1_rx) = connect(&p, &codec, "a");
    let (_a2, mut a2_rx) = connect(&p, &codec, "a");
    let (_b, mut b_rx) = connect(&p, &codec, "b");
    let msg = DirectMessage {
        id: crate::ids::ulid(),
        event: "hi".into(),
        data: None,
    };
    assert_eq!(p.send_to_user("a", &msg), 2);
    assert_eq!(drain(&mut a1_rx), ["direct hi"]);
    assert_eq!(drain(&mut a2_rx), ["direct hi"]);
    assert!(drain(&mut b_rx).is_empty());
    assert!(p.send_to_connection(a1.id(), &msg));
    assert_eq!(p.broadcast(&msg), 3);
    assert_eq!(p.send_to_user("nobody", &msg), 0);
}

#[test]
fn slow_consumer_is_closed_not_buffered() {
    let limits = Limits {
        outbox_bytes: 1000,
        ..Limits::default()
    };
    let p = Presence::open_for_tests(limits);
    let codec = Arc::new(Recorder::default());
    let (a, _a_rx) = connect(&p, &codec, "a");
    p.subscribe(&a, "c", SubscribeOptions::default(), |_| {})
        .unwrap();
    for _ in 0..100 {
        p.publish(&message("c", None, false));
    }
    assert!(a.outbox().is_closed());
    assert!(a.outbox().queued_bytes() <= 1000);
}

#[test]
fn with_members_reads_under_the_channel_lock() {
    let p = Presence::open_for_tests(Limits::default());
    let codec = Arc::new(Recorder::default());
    assert!(p.with_members("c", |_| ()).is_none());
    let (a, _a_rx) = connect(&p, &codec, "a");
    let (b, _b_rx) = connect(&p, &codec, "b");
    p.subscribe(&a, "c", member(json!(1)), |_| {}).unwrap();
    p.subscribe(&b, "c", member(json!(2)), |_| {}).unwrap();
    let seen = p.with_members("c", |m| {
        m.iter().map(|v| v.user_id.to_string()).collect::<Vec<_>>()
    });
    assert_eq!(seen, Some(vec!["a".to_string(), "b".to_string()]));
}

#[test]
fn channel_limits_override_the_server_wide_member_limit() {
    let limits = Limits {
        max_members_per_channel: 1,
        ..Limits::default()
    };
    let p = Presence::open_for_tests(limits);
    let rec: Arc<dyn Codec> = Arc::new(Recorder::default());
    let (a, _ra) = p
        .connect(Identity::user("a", Value::Null), rec.clone(), "t")
        .unwrap();
    let (b, _rb) = p
        .connect(Identity::user("b", Value::Null), rec.clone(), "t")
        .unwrap();
    let (c, _rc) = p
        .connect(Identity::user("c", Value::Null), rec.clone(), "t")
        .unwrap();
    // Set before the channel exists: applies when it is created.
    p.set_channel_limits(
        "roster",
        Some(ChannelLimits {
            max_members: 2,
            max_member_bytes: usize::MAX,
        }),
    );
    // A reserved channel is the adapter's own: clients are refused it.
    assert!(matches!(
        p.subscribe(&a, "roster", member(Value::Null), |_| {}),
        Err(SubscribeError::Refused(crate::policy::Refusal::Denied(_)))
    ));
    let reserved = || SubscribeOptions {
        rights: Rights::Reserved,
        ..member(Value::Null)
    };
    p.subscribe(&a, "roster", reserved(), |_| {}).unwrap();
    p.subscribe(&b, "roster", reserved(), |_| {}).unwrap();
    assert_eq!(
        p.subscribe(&c, "roster", reserved(), |_| {}),
        Err(SubscribeError::MemberLimitReached { limit: 2 })
    );
    // Other channels keep the server-wide limit.
    p.subscribe(&a, "other", member(Value::Null), |_| {})
        .unwrap();
    assert_eq!(
        p.subscribe(&b, "other", member(Value::Null), |_| {}),
        Err(SubscribeError::MemberLimitReached { limit: 1 })
    );
    // Changing the limits of an existing channel applies at once.
    p.set_channel_limits(
        "roster",
        Some(ChannelLimits {
            max_members: 3,
            max_member_bytes: usize::MAX,
        }),
    );
    p.subscribe(&c, "roster", reserved(), |_| {}).unwrap();
    assert_eq!(p.members("roster").len(), 3);
    assert_eq!(
        p.with_members("roster", |m| m.get("b").map(|v| v.user_id.to_string())),
        Some(Some("b".to_string()))
    );
    assert_eq!(
        p.with_members("roster", |m| m.get("zed").is_none()),
        Some(true)
    );
}

#[test]
fn direct_messages_use_the_connection_flavor() {
    /// Renders direct messages with the flavor they were encoded for.
    struct Flavored;
    impl Codec for Flavored {
        fn encode(&self, event: &Event<'_>, flavor: u8) -> Option<Outbound> {
            match event {
                Event::Direct(m) => Some(Outbound::Text(crate::outbox::Utf8Bytes::from(format!(
                    "{} f{flavor}",
                    m.event
                )))),
                _ => None,
            }
        }
    }
    let p = Presence::open_for_tests(Limits::default());
    let codec: Arc<dyn Codec> = Arc::new(Flavored);
    let (a, mut ra) = p
        .connect(Identity::user("u", Value::Null), codec.clone(), "t")
        .unwrap();
    let (_b, mut rb) = p
        .connect(Identity::user("u", Value::Null), codec, "t")
        .unwrap();
    a.set_flavor(1);
    let msg = DirectMessage {
        id: crate::ids::ulid(),
        event: "hi".into(),
        data: None,
    };
    assert_eq!(p.send_to_user("u", &msg), 2);
    assert_eq!(drain(&mut ra), ["hi f1"]);
    assert_eq!(drain(&mut rb), ["hi f0"]);
    assert_eq!(a.member_key().as_ref(), "u");
}

/// Records everything observers are told, as text.
#[derive(Default)]
struct Journal {
    lines: std::sync::Mutex<Vec<String>>,
}

impl Journal {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
    fn push(&self, line: String) {
        self.lines.lock().unwrap().push(line);
    }
}

impl PresenceObserver for Journal {
    fn presence_changed(&self, channel: &str, d: &PresenceDelta) {
        let origin = match &d.origin {
            Origin::Local(_) => "local".to_string(),
            Origin::Remote { node, .. } => format!("remote:{node}"),
            Origin::Lease(id) => format!("lease:{id}"),
        };
        let info = d.info.as_ref().map(|i| i.to_string()).unwrap_or("-".into());
        self.push(format!(
            "{channel} {} {origin} {info} {:?}",
            d.user_id, d.change
        ));
    }
    fn channel_occupied(&self, channel: &str) {
        self.push(format!("occupied {channel}"));
    }
    fn channel_vacated(&self, channel: &str) {
        self.push(format!("vacated {channel}"));
    }
    fn subscribers_changed(&self, channel: &str, count: usize) {
        self.push(format!("subs {channel} {count}"));
    }
    fn published(&self, msg: &ChannelMessage) {
        self.push(format!("published {} {}", msg.channel, msg.event));
    }
    fn connected(&self, _: crate::ids::ConnId, user: Option<&Arc<str>>, protocol: &'static str) {
        self.push(format!(
            "connected {} {protocol}",
            user.map(|u| &**u).unwrap_or("-")
        ));
    }
    fn disconnected(
        &self,
        _: crate::ids::ConnId,
        user: Option<&Arc<str>>,
        _: &'static str,
        _: Option<&crate::outbox::CloseReason>,
    ) {
        self.push(format!(
            "disconnected {}",
            user.map(|u| &**u).unwrap_or("-")
        ));
    }
    fn user_changed(
        &self,
        _: crate::ids::ConnId,
        old: Option<&Arc<str>>,
        new: Option<&Arc<str>>,
        _: &'static str,
    ) {
        let name = |u: Option<&Arc<str>>| u.map(|u| u.to_string()).unwrap_or("-".into());
        self.push(format!("user {} -> {}", name(old), name(new)));
    }
}

#[test]
fn a_connection_can_log_in_and_out_after_connect() {
    let journal = Arc::new(Journal::default());
    let limits = Limits {
        max_connections_per_user: 1,
        ..Limits::default()
    };
    let p = Presence::open_with_observers_for_tests(limits, vec![journal.clone()]);
    let codec: Arc<dyn Codec> = Arc::new(Recorder::default());
    let (anon, mut rx) = p
        .connect(Identity::anonymous(), codec.clone(), "test")
        .unwrap();
    let msg = DirectMessage {
        id: "1".into(),
        event: "hi".into(),
        data: None,
    };
    assert_eq!(p.send_to_user("kim", &msg), 0);
    p.set_user(&anon, Some(Arc::from("kim"))).unwrap();
    assert_eq!(anon.user_id().as_deref(), Some("kim"));
    assert_eq!(p.send_to_user("kim", &msg), 1);
    assert_eq!(drain(&mut rx), ["direct hi"]);
    assert_eq!(p.user_connection_count("kim"), 1);
    // The per-user limit holds for logins as for connects.
    let (other, _rx2) = p
        .connect(Identity::anonymous(), codec.clone(), "test")
        .unwrap();
    assert!(matches!(
        p.set_user(&other, Some(Arc::from("kim"))),
        Err(ConnectError::TooManyConnections { limit: 1 })
    ));
    assert_eq!(other.user_id(), None);
    // Switching user, then logging out.
    p.set_user(&anon, Some(Arc::from("lou"))).unwrap();
    assert_eq!(p.user_connection_count("kim"), 0);
    assert_eq!(p.send_to_user("lou", &msg), 1);
    p.set_user(&anon, None).unwrap();
    assert_eq!(p.send_to_user("lou", &msg), 0);
    drop(anon);
    assert_eq!(
        journal.take(),
        [
            "connected - test",
            "user - -> kim",
            "connected - test",
            "user kim -> lou",
            "user lou -> -",
            "disconnected -",
        ]
    );
}

#[test]
fn observers_see_every_change_in_order() {
    let journal = Arc::new(Journal::default());
    let p = Presence::open_with_observers_for_tests(Limits::default(), vec![journal.clone()]);
    let codec = Arc::new(Recorder::default());
    let (a1, _r1) = connect(&p, &codec, "a");
    let (a2, _r2) = connect(&p, &codec, "a");
    assert_eq!(journal.take(), ["connected a test", "connected a test"]);
    p.subscribe(&a1, "c", member(json!(1)), |_| {}).unwrap();
    p.subscribe(&a2, "c", member(json!(1)), |_| {}).unwrap();
    p.update_member(&a2, "c", Arc::new(json!(2))).unwrap();
    p.publish(&message("c", Some(&a1), false));
    p.deliver_remote(&message("c", None, false));
    p.publish(&message("elsewhere", None, false));
    // A failed join reports nothing.
    assert!(p.subscribe(&a1, "c", member(json!(1)), |_| {}).is_err());
    drop(a1);
    drop(a2);
    assert_eq!(
        journal.take(),
        [
            "occupied c",
            "c a local 1 Added",
            "c a local 1 Unchanged",
            "c a local 2 Updated",
            "published c e",
            "published elsewhere e",
            // a1 leaves; a2's newer data was already the member's.
            "c a local - Unchanged",
            "disconnected a",
            "c a local - Removed",
            "vacated c",
            "disconnected a",
        ]
    );
}

/// The plain-subscriber count kept by the channel, checked against a
/// recount of its subscriptions.
fn plain_count(p: &Presence, channel: &str) -> usize {
    let Some(ch) = p.existing_channel(channel) else {
        return 0;
    };
    let guard = p.lock_channel(&ch);
    let recount = guard
        .subscribers
        .values()
        .filter(|s| s.member_key.is_none() && !s.hidden)
        .count();
    assert_eq!(guard.plain_subscribers(), recount, "count drifted");
    recount
}

fn plain() -> SubscribeOptions {
    SubscribeOptions::default()
}

fn as_member(uid: &str) -> update::SubscriptionUpdate {
    update::SubscriptionUpdate {
        member: Some((Arc::from(uid), Arc::new(Value::Null))),
        presence_events: false,
        receive_messages: true,
    }
}

fn as_plain() -> update::SubscriptionUpdate {
    update::SubscriptionUpdate {
        member: None,
        presence_events: false,
        receive_messages: true,
    }
}

#[test]
fn plain_subscriber_counts_reach_observers_in_an_order_that_never_empties_the_channel() {
    let journal = Arc::new(Journal::default());
    let p = Presence::open_with_observers_for_tests(Limits::default(), vec![journal.clone()]);
    let codec = Arc::new(Recorder::default());
    let (a, _ra) = connect(&p, &codec, "a");
    let (b, _rb) = connect(&p, &codec, "b");
    journal.take();
    p.subscribe(&a, "news", plain(), |_| {}).unwrap();
    p.subscribe(&b, "news", plain(), |_| {}).unwrap();
    // A membership is no plain subscription.
    p.subscribe(&a, "room", member(json!(1)), |_| {}).unwrap();
    assert_eq!(plain_count(&p, "news"), 2);
    assert_eq!(plain_count(&p, "room"), 0);
    assert_eq!(
        journal.take(),
        [
            "occupied news",
            "subs news 1",
            "subs news 2",
            "occupied room",
            "room a local 1 Added",
        ]
    );
    // A plain subscription becoming a membership: the presence first, the
    // lower count after; and back: the higher count first.
    p.update_subscription(&b, "news", as_member("b")).unwrap();
    assert_eq!(plain_count(&p, "news"), 1);
    p.update_subscription(&b, "news", as_plain()).unwrap();
    assert_eq!(plain_count(&p, "news"), 2);
    assert_eq!(
        journal.take(),
        [
            "news b local null Added",
            "subs news 1",
            "subs news 2",
            "news b local - Removed",
        ]
    );
    // Unchanged counts say nothing (a message, a member's own change).
    p.publish(&message("news", None, false));
    p.update_member(&a, "room", Arc::new(json!(2))).unwrap();
    assert_eq!(
        journal.take(),
        ["published news e", "room a local 2 Updated"]
    );
    p.unsubscribe(&a, "news", |_| {});
    drop(b);
    assert_eq!(plain_count(&p, "news"), 0);
    assert_eq!(
        journal.take(),
        [
            "subs news 1",
            "subs news 0",
            "vacated news",
            "disconnected b"
        ]
    );
}

#[test]
fn hidden_users_plain_subscriptions_are_not_counted() {
    /// Hides eve while `hide` is set.
    struct HideEve {
        hide: std::sync::atomic::AtomicBool,
    }
    impl VisibilityPolicy for HideEve {
        fn is_visible(&self, uid: &str) -> bool {
            uid != "eve" || !self.hide.load(Ordering::SeqCst)
        }
    }
    let journal = Arc::new(Journal::default());
    let p = Presence::open_with_observers_for_tests(Limits::default(), vec![journal.clone()]);
    let policy = Arc::new(HideEve {
        hide: std::sync::atomic::AtomicBool::new(true),
    });
    p.set_visibility_policy(policy.clone());
    let codec = Arc::new(Recorder::default());
    let (eve, _re) = connect(&p, &codec, "eve");
    journal.take();
    p.subscribe(&eve, "news", plain(), |_| {}).unwrap();
    assert_eq!(plain_count(&p, "news"), 0);
    assert!(
        journal.take().is_empty(),
        "hidden: not occupied, not counted"
    );
    assert_eq!(p.channel_info("news").connections, 0);
    // Shown, then hidden again: counted, then not.
    policy.hide.store(false, Ordering::SeqCst);
    p.refresh_visibility("eve");
    assert_eq!(plain_count(&p, "news"), 1);
    policy.hide.store(true, Ordering::SeqCst);
    p.refresh_visibility("eve");
    assert_eq!(plain_count(&p, "news"), 0);
    assert_eq!(
        journal.take(),
        [
            "occupied news",
            "subs news 1",
            "subs news 0",
            "vacated news"
        ]
    );
    drop(eve);
    assert_eq!(journal.take(), ["disconnected eve"]);
}

#[test]
fn other_nodes_subscribers_make_the_channel_exist_and_count() {
    let journal = Arc::new(Journal::default());
    let p = Presence::open_with_observers_for_tests(Limits::default(), vec![journal.clone()]);
    let (b, c): (Arc<str>, Arc<str>) = (Arc::from("b"), Arc::from("c"));
    p.set_remote_subscribers("news", &b, 2);
    let listed = p.channels();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].name.as_str(),
            listed[0].members,
            listed[0].connections
        ),
        ("news", 0, 2)
    );
    p.set_remote_subscribers("news", &b, 3);
    p.set_remote_subscribers("news", &c, 1);
    assert_eq!(p.channel_info("news").connections, 4);
    // Local subscribers add to them.
    let codec = Arc::new(Recorder::default());
    let (a, mut ra) = connect(&p, &codec, "a");
    p.subscribe(&a, "news", plain(), |_| {}).unwrap();
    assert_eq!(p.channel_info("news").connections, 5);
    p.unsubscribe(&a, "news", |_| {});
    drain(&mut ra);
    p.set_remote_subscribers("news", &b, 0);
    assert_eq!(p.channel_info("news").connections, 1);
    p.set_remote_subscribers("news", &c, 0);
    assert!(p.channels().is_empty());
    assert_eq!(p.stats().channels, 0, "the channel is gone");
    // Setting 0 on an unknown channel creates nothing.
    p.set_remote_subscribers("other", &b, 0);
    assert_eq!(p.stats().channels, 0);
    // Occupancy is cluster-wide; other nodes' counts are not this node's
    // to report, so no `subs` line.
    assert_eq!(
        journal.take(),
        [
            "occupied news",
            "connected a test",
            "subs news 1",
            "subs news 0",
            "vacated news",
        ]
    );
}
