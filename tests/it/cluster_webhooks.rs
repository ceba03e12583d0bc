//! Webhooks in a three-node cluster on one private Redis: every event
//! reaches the receiver once, not once per node, whichever node caused it;
//! one user joining on two nodes at the same moment is one `member_added`;
//! when the sending node is SIGKILLed, the next oldest node takes over,
//! reports the dead node's members as removed and its users as offline,
//! and replays what happened while nobody was sending; a graceful
//! shutdown hands over at once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common;
use crate::common::cluster::*;
use crate::webhook_support::*;

/// Every event the receiver got: (name, channel, user).
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// Starts the receiver and a task that verifies and records every event,
/// failing on a repeated event id.
async fn collecting_receiver() -> (String, Seen) {
    let (url, mut rx, _) = receiver(0, false).await;
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    tokio::spawn(async move {
        let mut ids = HashSet::new();
        while let Some(hit) = rx.recv().await {
            for e in verified_events(&hit) {
                let id = e["id"].as_str().unwrap_or_default().to_string();
                assert!(ids.insert(id), "an event id came twice: {e}");
                let text = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                sink.lock()
                    .unwrap()
                    .push((text("name"), text("channel"), text("user_id")));
            }
        }
    });
    (url, seen)
}

fn count(seen: &Seen, name: &str, channel: &str, user: &str) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(n, c, u)| n == name && c == channel && u == user)
        .count()
}

/// Waits until `name` for (`channel`, `user`) arrived, then checks it came
/// exactly once. `within` bounds the wait.
async fn once(seen: &Seen, name: &str, channel: &str, user: &str, within: Duration) {
    let arrived =
        common::eventually(within, || async { count(seen, name, channel, user) > 0 }).await;
    assert!(
        arrived,
        "no {name} {channel:?} {user:?} within {within:?}; got {:?}",
        seen.lock().unwrap()
    );
    // Give a second sender (the bug this test guards against) time to show.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        count(seen, name, channel, user),
        1,
        "{name} {channel:?} {user:?} must arrive once; got {:?}",
        seen.lock().unwrap()
    );
}

/// The node that reports events, by `/readyz`.
async fn senders(nodes: &[&Node]) -> Vec<String> {
    let mut out = Vec::new();
    for n in nodes {
        let (_, body) = n.readyz().await;
        if body["cluster"]["event_sender"] == true {
            out.push(n.name.clone());
        }
    }
    out
}

async fn wait_for_sender(nodes: &[&Node], want: &str) {
    let ok = common::eventually(Duration::from_secs(8), || async {
        senders(nodes).await == [want.to_string()]
    })
    .await;
    assert!(
        ok,
        "expected {want} alone to send events; senders: {:?}",
        senders(nodes).await
    );
}

#[tokio::test]
async fn each_event_is_sent_once_by_one_node_and_handed_over_on_death_and_shutdown() {
    let _serial = serial().await;
    let redis = Redis::start();
    sent_once_and_handed_over(&redis.url()).await;
}

#[tokio::test]
async fn each_event_is_sent_once_on_the_postgres_bus() {
    let _serial = serial().await;
    let pg = crate::common::postgres::Postgres::start();
    sent_once_and_handed_over(&pg.url()).await;
}

#[tokio::test]
async fn each_event_is_sent_once_on_the_nats_bus() {
    let _serial = serial().await;
    let nats = crate::common::nats::Nats::start();
    sent_once_and_handed_over(&nats.url()).await;
}

/// Three nodes on `bus` send each event once, hand over on a SIGKILL and
/// a SIGTERM, and replay what happened while nobody sent.
async fn sent_once_and_handed_over(bus: &str) {
    let (url, seen) = collecting_receiver().await;
    let opts = NodeOptions {
        extra: vec![
            "--webhook-url".into(),
            url,
            "--webhook-secret".into(),
            HOOK_SECRET.into(),
            "--webhook-batch-ms".into(),
            "50".into(),
        ],
        ..NodeOptions::default()
    };
    // Started in turn, so a is the oldest, then b, then c.
    let mut a = Node::start("a", bus, &opts);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut b = Node::start("b", bus, &opts);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let c = Node::start("c", bus, &opts);
    wait_for_cluster(&[&a, &b, &c], 3).await;
    wait_for_sender(&[&a, &b, &c], "a").await;
    let within = Duration::from_secs(3);
    let room = "presence.room";

    // A change on a node that does not send is reported once (by a).
    let mut zed = b.hotsock(user("zed", json!({"n": 1}))).await;
    zed.join(room).await;
    once(&seen, "channel_occupied", room, "", within).await;
    once(&seen, "member_added", room, "zed", within).await;
    once(&seen, "user_online", "", "zed", within).await;

    // One user joining on two nodes at the same moment is one member.
    let (mut dup_b, mut dup_c) = tokio::join!(
        b.hotsock(user("dup", Value::Null)),
        c.hotsock(user("dup", Value::Null))
    );
    tokio::join!(dup_b.join(room), dup_c.join(room));
    once(&seen, "member_added", room, "dup", within).await;
    once(&seen, "user_online", "", "dup", within).await;

    // amy is on a only; then a dies without a word.
    let mut amy = a.hotsock(user("amy", Value::Null)).await;
    amy.join(room).await;
    once(&seen, "member_added", room, "amy", within).await;
    // Past a's next heartbeat, so nothing before the kill is replayed.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    a.kill();
    // A join while nobody sends (before a times out) is not lost.
    let mut late = c.hotsock(user("late", Value::Null)).await;
    late.join(room).await;
    wait_for_sender(&[&b, &c], "b").await;
    let takeover = Duration::from_secs(5);
    once(&seen, "member_added", room, "late", takeover).await;
    once(&seen, "member_removed", room, "amy", takeover).await;
    once(&seen, "user_offline", "", "amy", takeover).await;

    // b, now the sender, shuts down: c takes over and reports b's users.
    b.terminate();
    wait_for_sender(&[&c], "c").await;
    once(&seen, "member_removed", room, "zed", within).await;
    once(&seen, "user_offline", "", "zed", within).await;
    // dup is still on c: still a member, still online.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&seen, "member_removed", room, "dup"), 0);
    assert_eq!(count(&seen, "user_offline", "", "dup"), 0);
    assert_eq!(c.member_set(room).await, ["dup", "late"]);

    // Nothing was reported twice over the whole run.
    let all = seen.lock().unwrap().clone();
    let mut distinct = HashSet::new();
    for e in &all {
        assert!(
            distinct.insert(e.clone()),
            "reported twice: {e:?} in {all:?}"
        );
    }
    drop((zed, dup_b, dup_c, amy, late));
}
