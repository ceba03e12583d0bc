//! Three `rollcall serve` processes on one private Redis, with Hotsock and
//! SocketCluster clients on different nodes: cross-node members, updates
//! and dedup, publish order, join latency, SIGKILL and graceful shutdown
//! of a node, and a node started while Redis is unreachable.
#![cfg(all(feature = "redis", feature = "hotsock", feature = "sc"))]

mod common;
#[path = "cluster_support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const ROOM: &str = "presence.room";

fn three(redis: &Redis) -> (Node, Node, Node) {
    let opts = NodeOptions::default();
    (
        Node::start("a", &redis.url(), &opts),
        Node::start("b", &redis.url(), &opts),
        Node::start("c", &redis.url(), &opts),
    )
}

/// A `hotsock.umdUpdate` for one channel.
fn umd_update(uid: &str, channel: &str, umd: Value) -> Value {
    let token = common::sign(&mut json!({
        "scope": "umd", "uid": uid, "umd": umd,
        "channels": {channel: {"umdUpdate": true}}
    }));
    json!({"event": "hotsock.umdUpdate", "channel": channel, "data": {"token": token}})
}

#[tokio::test]
async fn members_updates_dedup_and_messages_span_the_cluster() {
    let _serial = serial().await;
    let redis = Redis::start();
    let (a, b, c) = three(&redis);
    wait_for_cluster(&[&a, &b, &c], 3).await;

    // pam watches from node b; jim joins on node a.
    let mut pam = Watcher::join(&b, "pam", ROOM).await;
    let mut jim_a = a.hotsock(user("jim", json!({"n": 1}))).await;
    jim_a.join(ROOM).await;
    pam.until("jim added", Duration::from_secs(3), |w| {
        w.count("added", "jim") == 1
    })
    .await;
    wait_for_members(&[&a, &b, &c], ROOM, &["jim", "pam"], Duration::from_secs(3)).await;

    // alice (SocketCluster) joins on node c: a member on every node.
    let mut alice = Sc::connect(&c, "alice").await;
    alice.subscribe(ROOM).await;
    pam.until("alice added", Duration::from_secs(3), |w| {
        w.count("added", "alice") == 1
    })
    .await;
    wait_for_members(
        &[&a, &b, &c],
        ROOM,
        &["alice", "jim", "pam"],
        Duration::from_secs(3),
    )
    .await;

    // jim changes his data on node a: memberUpdated on node b.
    jim_a.send(umd_update("jim", ROOM, json!({"n": 2}))).await;
    pam.until("jim updated", Duration::from_secs(3), |w| {
        w.count("updated", "jim") == 1
    })
    .await;
    assert!(pam.list.contains(&json!({"uid": "jim", "umd": {"n": 2}})));

    // Dedup: jim also connects on node c. No second memberAdded; when the
    // node-a connection goes, jim stays; when the last goes, one removal.
    let mut jim_c = c.hotsock(user("jim", json!({"n": 2}))).await;
    jim_c.join(ROOM).await;
    jim_a.close().await;
    pam.pump(800).await;
    assert_eq!(pam.count("added", "jim"), 1, "{:?}", pam.events);
    assert_eq!(pam.count("removed", "jim"), 0, "{:?}", pam.events);
    wait_for_members(
        &[&a, &b, &c],
        ROOM,
        &["alice", "jim", "pam"],
        Duration::from_secs(3),
    )
    .await;
    jim_c.close().await;
    pam.until("jim removed", Duration::from_secs(3), |w| {
        w.count("removed", "jim") == 1
    })
    .await;
    pam.pump(300).await;
    assert_eq!(pam.count("removed", "jim"), 1);
    wait_for_members(
        &[&a, &b, &c],
        ROOM,
        &["alice", "pam"],
        Duration::from_secs(3),
    )
    .await;

    // Publish order: client messages from node a and HTTP publishes on
    // node c reach pam (node b) and alice (SC, node c) in publish order.
    let mut sender = a.hotsock(user("dwight", Value::Null)).await;
    sender.join(ROOM).await;
    pam.until("dwight added", Duration::from_secs(3), |w| {
        w.count("added", "dwight") == 1
    })
    .await;
    const N: usize = 50;
    for i in 0..N {
        sender
            .send(json!({"event": "chat", "channel": ROOM, "data": {"i": i}}))
            .await;
    }
    for i in 0..N {
        c.publish(ROOM, "notice", json!({"j": i})).await;
    }
    pam.until("all messages", Duration::from_secs(5), |w| {
        w.messages.len() >= 2 * N
    })
    .await;
    let chat: Vec<u64> = pam
        .messages
        .iter()
        .filter(|m| m["event"] == "chat")
        .map(|m| m["data"]["i"].as_u64().expect("i"))
        .collect();
    let notices: Vec<u64> = pam
        .messages
        .iter()
        .filter(|m| m["event"] == "notice")
        .map(|m| m["data"]["j"].as_u64().expect("j"))
        .collect();
    let want: Vec<u64> = (0..N as u64).collect();
    assert_eq!(
        chat, want,
        "client messages from node a out of order on node b"
    );
    assert_eq!(
        notices, want,
        "HTTP publishes on node c out of order on node b"
    );
    // The SC client on node c sees both publishers' messages in order too
    // (interleaved: order holds per publisher).
    let mut from_a = Vec::new();
    let mut from_c = Vec::new();
    for _ in 0..2 * N {
        let data = alice.publish_on(ROOM).await;
        match (data["i"].as_u64(), data["j"].as_u64()) {
            (Some(i), None) => from_a.push(i),
            (None, Some(j)) => from_c.push(j),
            _ => panic!("unexpected message {data}"),
        }
    }
    assert_eq!(
        from_a, want,
        "node a's messages out of order on node c (SC)"
    );
    assert_eq!(
        from_c, want,
        "node c's publishes out of order on node c (SC)"
    );
    // And an SC publish on node c reaches Hotsock on node b.
    alice.publish(ROOM, json!({"from": "sc"})).await;
    pam.until("sc message", Duration::from_secs(3), |w| {
        w.messages
            .iter()
            .any(|m| m["data"] == json!({"from": "sc"}))
    })
    .await;

    // Cross-node join latency: a member joining on node a, seen on node b.
    let mut samples = Vec::new();
    for i in 0..60 {
        let uid = format!("lat{i}");
        let mut joiner = a.hotsock(user(&uid, Value::Null)).await;
        let t0 = Instant::now();
        joiner.join(ROOM).await;
        pam.until("latency join", Duration::from_secs(3), |w| {
            w.count("added", &uid) == 1
        })
        .await;
        samples.push(t0.elapsed());
        joiner.close().await;
    }
    let (p50, p99) = percentiles(&mut samples);
    println!(
        "cluster: cross-node join latency (Hotsock on node a -> memberAdded on node b): p50 {p50:.1} ms, p99 {p99:.1} ms over {} joins",
        samples.len()
    );
    assert!(p99 < 500.0, "cross-node join p99 {p99:.1} ms");
    pam.pump(500).await;
    wait_for_members(
        &[&a, &b, &c],
        ROOM,
        &["alice", "dwight", "pam"],
        Duration::from_secs(3),
    )
    .await;
    // The API's channel list is cluster-wide too.
    let (_, channels) = a.http("GET", "/api/channels", None).await;
    let room = channels["channels"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == ROOM).cloned())
        .expect("room listed on node a");
    assert_eq!(room["members"], 3, "{room}");
    alice.close().await;
}

#[tokio::test]
async fn a_killed_node_is_removed_within_the_bound_exactly_once() {
    let _serial = serial().await;
    let redis = Redis::start();
    let (a, b, mut c) = three(&redis);
    wait_for_cluster(&[&a, &b, &c], 3).await;
    let mut watch_a = Watcher::join(&a, "watch-a", ROOM).await;
    let mut watch_b = Watcher::join(&b, "watch-b", ROOM).await;
    // Five users only on node c (Hotsock and SocketCluster), and one user
    // on both b and c.
    let mut hs = Vec::new();
    for i in 0..3 {
        let mut cl = c.hotsock(user(&format!("c{i}"), Value::Null)).await;
        cl.join(ROOM).await;
        hs.push(cl);
    }
    let mut scs = Vec::new();
    for i in 3..5 {
        let mut sc = Sc::connect(&c, &format!("c{i}")).await;
        sc.subscribe(ROOM).await;
        scs.push(sc);
    }
    let mut both_b = b.hotsock(user("both", Value::Null)).await;
    both_b.join(ROOM).await;
    let mut both_c = c.hotsock(user("both", Value::Null)).await;
    both_c.join(ROOM).await;
    let everyone = ["both", "c0", "c1", "c2", "c3", "c4", "watch-a", "watch-b"];
    wait_for_members(&[&a, &b, &c], ROOM, &everyone, Duration::from_secs(3)).await;
    watch_a.pump(300).await;
    watch_b.pump(300).await;

    let killed = Instant::now();
    c.kill();
    let gone = ["c0", "c1", "c2", "c3", "c4"];
    let all_gone = |w: &Watcher| gone.iter().all(|u| w.count("removed", u) == 1);
    watch_a
        .until(
            "node c's members removed on a",
            Duration::from_secs(6),
            all_gone,
        )
        .await;
    let on_a = killed.elapsed();
    watch_b
        .until(
            "node c's members removed on b",
            Duration::from_secs(6),
            all_gone,
        )
        .await;
    let on_b = killed.elapsed();
    println!(
        "cluster: SIGKILLed node's members removed after {} ms (node a) and {} ms (node b); heartbeat 500ms, node timeout 2500ms",
        on_a.as_millis(),
        on_b.as_millis()
    );
    assert!(
        on_a <= Duration::from_millis(3000) && on_b <= Duration::from_millis(3000),
        "removal took {on_a:?} / {on_b:?}, over the 3 s bound"
    );
    // Exactly once, and "both" (still on node b) stays.
    watch_a.pump(1500).await;
    watch_b.pump(200).await;
    for w in [&watch_a, &watch_b] {
        for u in gone {
            assert_eq!(w.count("removed", u), 1, "{u}: {:?}", w.events);
        }
        assert_eq!(w.count("removed", "both"), 0, "{:?}", w.events);
        assert_eq!(w.uids(), ["both", "watch-a", "watch-b"]);
    }
    wait_for_members(
        &[&a, &b],
        ROOM,
        &["both", "watch-a", "watch-b"],
        Duration::from_secs(1),
    )
    .await;
    let (_, ready) = a.readyz().await;
    assert_eq!(ready["cluster"]["nodes"], 2, "{ready}");
    assert_eq!(ready["cluster"]["nodes_timed_out"], 1, "{ready}");
}

#[tokio::test]
async fn a_node_shutting_down_removes_its_members_at_once() {
    let _serial = serial().await;
    let redis = Redis::start();
    let (a, b, mut c) = three(&redis);
    wait_for_cluster(&[&a, &b, &c], 3).await;
    let mut watch = Watcher::join(&a, "watch", ROOM).await;
    let mut sc = Sc::connect(&c, "leaver-sc").await;
    sc.subscribe(ROOM).await;
    let mut hs = c.hotsock(user("leaver-hs", Value::Null)).await;
    hs.join(ROOM).await;
    watch
        .until("joins", Duration::from_secs(3), |w| w.list.len() == 3)
        .await;
    let t0 = Instant::now();
    c.send_term();
    watch
        .until("leaves", Duration::from_secs(3), |w| w.list.len() == 1)
        .await;
    let took = t0.elapsed();
    println!(
        "cluster: graceful shutdown (SIGTERM) removed the node's members after {} ms",
        took.as_millis()
    );
    // Well before the 2.5 s timeout: the goodbye did it.
    assert!(took < Duration::from_millis(2000), "{took:?}");
    c.wait_exit();
    watch.pump(500).await;
    assert_eq!(watch.count("removed", "leaver-sc"), 1);
    assert_eq!(watch.count("removed", "leaver-hs"), 1);
    let (_, ready) = b.readyz().await;
    assert_eq!(ready["cluster"]["nodes_left"], 1, "{ready}");
    assert_eq!(ready["cluster"]["nodes_timed_out"], 0, "{ready}");
    wait_for_members(&[&a, &b], ROOM, &["watch"], Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_node_starts_without_redis_and_joins_when_it_comes() {
    let _serial = serial().await;
    let mut redis = Redis::not_running();
    let a = Node::start("a", &redis.url(), &NodeOptions::default());
    // It serves local clients at once.
    let mut w = Watcher::join(&a, "early", ROOM).await;
    let (status, body) = a.readyz().await;
    assert_eq!(status, 503, "{body}");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("unreachable") || reason.contains("connecting"),
        "{body}"
    );
    assert_eq!(body["cluster"]["bus_state"], "disconnected", "{body}");
    let (status, health) = common::http(a.addr, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(health["bus"], "disconnected", "{health}");
    assert!(
        a.log_text().contains("cannot reach Redis"),
        "the log says Redis is unreachable:\n{}",
        a.log_text()
    );
    redis.spawn();
    let ok = common::eventually(Duration::from_secs(5), || async {
        a.readyz().await.0 == 200
    })
    .await;
    assert!(
        ok,
        "ready within 5 s of Redis starting: {:?}",
        a.readyz().await
    );
    // Its member reaches a node that starts afterwards.
    let b = Node::start("b", &redis.url(), &NodeOptions::default());
    wait_for_cluster(&[&a, &b], 2).await;
    wait_for_members(&[&a, &b], ROOM, &["early"], Duration::from_secs(3)).await;
    let mut late = Watcher::join(&b, "late", ROOM).await;
    w.until("late added", Duration::from_secs(3), |w| {
        w.count("added", "late") == 1
    })
    .await;
    late.pump(200).await;
    assert_eq!(late.uids(), ["early", "late"]);
}
