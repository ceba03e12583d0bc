//! Redis killed for 10 s in the middle of traffic: every node keeps serving
//! its own clients, reconnects, resyncs, and ends with the same members as
//! the truth, with every watcher's member events consistent (no ghost, no
//! second join, no lost leave).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common;
use crate::common::cluster::scenarios::consistent_after_outage;
use crate::common::cluster::*;

const ROOM: &str = "presence.room";

enum Conn {
    Hs(common::Client),
    Sc(Sc),
}

/// Live subscriptions: (node, uid, connection).
struct Truth {
    conns: Vec<(usize, String, Conn)>,
}

impl Truth {
    fn members(&self, watchers: &[&str]) -> Vec<String> {
        let mut set: BTreeMap<String, ()> = BTreeMap::new();
        for (_, uid, _) in &self.conns {
            set.insert(uid.clone(), ());
        }
        for w in watchers {
            set.insert(w.to_string(), ());
        }
        set.into_keys().collect()
    }

    async fn join(&mut self, nodes: &[&Node], node: usize, uid: &str, sc: bool) {
        let conn = if sc {
            let mut c = Sc::connect(nodes[node], uid).await;
            c.subscribe(ROOM).await;
            Conn::Sc(c)
        } else {
            let mut c = nodes[node].hotsock(user(uid, Value::Null)).await;
            c.join(ROOM).await;
            Conn::Hs(c)
        };
        self.conns.push((node, uid.to_string(), conn));
    }

    async fn leave(&mut self, uid: &str, node: usize) {
        let pos = self
            .conns
            .iter()
            .position(|(n, u, _)| u == uid && *n == node)
            .expect("such a connection");
        let (_, _, conn) = self.conns.remove(pos);
        match conn {
            Conn::Hs(c) => c.close().await,
            Conn::Sc(c) => c.close().await,
        }
    }
}

async fn pump_all(watchers: &mut [Watcher], ms: u64) {
    for w in watchers.iter_mut() {
        w.pump(ms).await;
    }
}

#[tokio::test]
async fn redis_down_for_10s_mid_traffic_then_everything_converges() {
    let _serial = serial().await;
    let mut redis = Redis::start();
    let (a, b, c) = start_three(&redis.url(), &NodeOptions::default());
    let nodes = [&a, &b, &c];
    wait_for_cluster(&nodes, 3).await;
    let names = ["w-a", "w-b", "w-c"];
    let mut watchers = vec![
        Watcher::join(&a, names[0], ROOM).await,
        Watcher::join(&b, names[1], ROOM).await,
        Watcher::join(&c, names[2], ROOM).await,
    ];
    let mut truth = Truth { conns: Vec::new() };
    // Before: users on every node, one ("dup") on two nodes.
    truth.join(&nodes, 0, "stay-a", false).await;
    truth.join(&nodes, 1, "leave-b", false).await;
    truth.join(&nodes, 2, "leave-c", true).await;
    truth.join(&nodes, 1, "dup", false).await;
    truth.join(&nodes, 2, "dup", true).await;
    truth.join(&nodes, 2, "half-dup", false).await;
    truth.join(&nodes, 0, "half-dup", false).await;
    wait_for_members(
        &nodes,
        ROOM,
        &truth
            .members(&names)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        Duration::from_secs(3),
    )
    .await;
    pump_all(&mut watchers, 100).await;

    // Redis dies in the middle of traffic.
    redis.kill();
    let down_at = Instant::now();
    // Local service goes on: a join on node a is seen on node a at once.
    truth.join(&nodes, 0, "outage-a", false).await;
    watchers[0]
        .until(
            "local join during the outage",
            Duration::from_secs(1),
            |w| w.count("added", "outage-a") == 1,
        )
        .await;
    // Changes everywhere while the nodes cannot talk.
    truth.leave("leave-b", 1).await;
    truth.leave("leave-c", 2).await;
    truth.leave("half-dup", 2).await;
    truth.join(&nodes, 1, "outage-b", true).await;
    truth.join(&nodes, 2, "outage-c", false).await;
    truth.join(&nodes, 1, "stay-a", false).await;
    // Nodes say so.
    wait_for_not_ready(&nodes, Duration::from_secs(5)).await;
    while down_at.elapsed() < Duration::from_secs(10) {
        pump_all(&mut watchers, 100).await;
    }
    // Nobody was timed out meanwhile: remote members stay as they were
    // (the nodes cannot know better), so no spurious leave.
    for w in &watchers {
        assert_eq!(w.count("removed", "dup"), 0, "{:?}", w.events);
    }
    redis.spawn();
    let back_at = Instant::now();
    let want = truth.members(&names);
    let want_refs: Vec<&str> = want.iter().map(String::as_str).collect();
    // Converged: the same members on every node, equal to the truth.
    let converged = common::eventually(Duration::from_secs(15), || async {
        for n in nodes {
            if n.member_set(ROOM).await != want {
                return false;
            }
        }
        true
    })
    .await;
    let took = back_at.elapsed();
    if !converged {
        wait_for_members(&nodes, ROOM, &want_refs, Duration::from_millis(10)).await;
    }
    println!(
        "cluster: after a 10 s Redis outage, all nodes converged {} ms after Redis restarted",
        took.as_millis()
    );
    wait_for_cluster(&nodes, 3).await;
    // Each user joined at most once more than it left, and the ones that
    // stayed throughout never left.
    consistent_after_outage(&nodes, &mut watchers, &names, &want, &["stay-a", "dup"]).await;
    drop(truth);
}

/// Messages a client publishes while Redis is down reach the other nodes'
/// subscribers once it is back: all of them, once each, in publish order.
#[tokio::test]
async fn messages_published_while_redis_is_down_arrive_in_order_after() {
    let _serial = serial().await;
    let mut redis = Redis::start();
    let opts = NodeOptions::default();
    let a = Node::start("a", &redis.url(), &opts);
    let b = Node::start("b", &redis.url(), &opts);
    wait_for_cluster(&[&a, &b], 2).await;
    let mut far = Watcher::join(&b, "far", ROOM).await;
    let mut near = Watcher::join(&a, "near", ROOM).await;
    let mut sender = a.hotsock(user("sender", Value::Null)).await;
    sender.join(ROOM).await;
    far.until("sender added", Duration::from_secs(3), |w| {
        w.count("added", "sender") == 1
    })
    .await;

    redis.kill();
    // Node a knows its link is down before the messages go out.
    let down = common::eventually(Duration::from_secs(5), || async {
        a.readyz().await.1["cluster"]["bus_state"] == "disconnected"
    })
    .await;
    assert!(
        down,
        "node a did not notice Redis going away: {:?}",
        a.readyz().await
    );
    // Under the per-connection limit of 100 messages a second.
    const N: u64 = 80;
    send_numbered(&mut sender, ROOM, N).await;
    // Local subscribers get them at once; node a keeps them for the others.
    near.until("local delivery", Duration::from_secs(3), |w| {
        w.messages.len() as u64 == N
    })
    .await;
    let kept = common::eventually(Duration::from_secs(3), || async {
        a.readyz().await.1["cluster"]["messages_waiting"] == N
    })
    .await;
    assert!(
        kept,
        "node a does not keep the messages: {:?}",
        a.readyz().await
    );
    far.pump(300).await;
    assert!(
        far.messages.is_empty(),
        "nothing can cross while Redis is down"
    );

    redis.spawn();
    crate::common::cluster::scenarios::kept_messages_arrive_in_order(
        &a, &mut far, N, "cluster", "Redis",
    )
    .await;
    // Messages after the outage go straight through, after the others.
    sender
        .send(serde_json::json!({"event": "chat", "channel": ROOM, "data": {"i": N}}))
        .await;
    far.until("a message after the outage", Duration::from_secs(3), |w| {
        w.messages.len() as u64 == N + 1
    })
    .await;
}
