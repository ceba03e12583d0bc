//! Three `rollcall serve` processes on a private three-master Redis Cluster
//! (`--bus redis+cluster://…`, sharded pub/sub over RESP3): cross-node
//! members, dedup and publish order, `/readyz`, a SIGKILLed node, the bus
//! channel's slot moved to another master (resharding), another master and
//! then the master serving the bus channel killed and restarted.
#![cfg(all(feature = "redis", feature = "hotsock", feature = "sc"))]

mod common;
#[path = "cluster_support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const ROOM: &str = "presence.room";
/// The sharded channel the nodes share (`rollcall::cluster::BUS_CHANNEL`).
const BUS_CHANNEL: &str = "rollcall:cluster";

fn three(cluster: &RedisCluster) -> (Node, Node, Node) {
    // The publish-order check sends 200 messages at once from one client,
    // over the default 100 per second.
    let opts = NodeOptions {
        extra: vec!["--max-messages-per-second".into(), "1000".into()],
        ..NodeOptions::default()
    };
    let url = cluster.url();
    (
        Node::start("a", &url, &opts),
        Node::start("b", &url, &opts),
        Node::start("c", &url, &opts),
    )
}

/// Every node answers `/readyz` 200 with the Redis Cluster bus connected.
async fn assert_ready_on_redis_cluster(nodes: &[&Node]) {
    for n in nodes {
        let (status, body) = n.readyz().await;
        assert_eq!(status, 200, "{}: {body}", n.name);
        assert_eq!(body["status"], "ready", "{}: {body}", n.name);
        assert_eq!(
            body["cluster"]["bus"], "redis-cluster",
            "{}: {body}",
            n.name
        );
        assert_eq!(
            body["cluster"]["bus_state"], "connected",
            "{}: {body}",
            n.name
        );
        assert_eq!(body["cluster"]["nodes"], 3, "{}: {body}", n.name);
    }
}

#[tokio::test]
async fn sharded_pubsub_carries_members_dedup_and_ordered_messages() {
    let _serial = serial().await;
    let started = Instant::now();
    let cluster = RedisCluster::start();
    let redis_up = started.elapsed();
    let (a, b, c) = three(&cluster);
    wait_for_cluster(&[&a, &b, &c], 3).await;
    println!(
        "redis cluster: 3 masters ok after {} ms, 3 rollcall nodes ready after {} ms",
        redis_up.as_millis(),
        started.elapsed().as_millis()
    );
    assert_ready_on_redis_cluster(&[&a, &b, &c]).await;

    // pam watches from node b; jim joins on node a.
    let mut pam = Watcher::join(&b, "pam", ROOM).await;
    let mut jim_a = a.hotsock(user("jim", json!({"n": 1}))).await;
    jim_a.join(ROOM).await;
    pam.until("jim added", Duration::from_secs(3), |w| {
        w.count("added", "jim") == 1
    })
    .await;
    // alice (SocketCluster) joins on node c.
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

    // Dedup across the cluster: jim also connects on node c. No second
    // memberAdded; when the node-a connection goes, jim stays; when the
    // last goes, exactly one memberRemoved.
    let mut jim_c = c.hotsock(user("jim", json!({"n": 1}))).await;
    jim_c.join(ROOM).await;
    let (_, room) = b.http("GET", &format!("/api/channels/{ROOM}"), None).await;
    let jims = room["members"]
        .as_array()
        .map(|m| m.iter().filter(|m| m["uid"] == "jim").count())
        .unwrap_or(0);
    assert_eq!(jims, 1, "jim listed once on node b: {room}");
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
    wait_for_members(
        &[&a, &b, &c],
        ROOM,
        &["alice", "pam"],
        Duration::from_secs(3),
    )
    .await;

    // Publish order: 200 client messages from one publisher on node a
    // reach pam (Hotsock, node b) and alice (SocketCluster, node c) in
    // order, and so do 50 HTTP publishes on node c.
    let mut sender = a.hotsock(user("dwight", Value::Null)).await;
    sender.join(ROOM).await;
    pam.until("dwight added", Duration::from_secs(3), |w| {
        w.count("added", "dwight") == 1
    })
    .await;
    const N: usize = 200;
    const M: usize = 50;
    let t0 = Instant::now();
    for i in 0..N {
        sender
            .send(json!({"event": "chat", "channel": ROOM, "data": {"i": i}}))
            .await;
    }
    for j in 0..M {
        c.publish(ROOM, "notice", json!({"j": j})).await;
    }
    pam.until("all messages on node b", Duration::from_secs(10), |w| {
        w.messages.len() >= N + M
    })
    .await;
    let took = t0.elapsed();
    let field = |event: &str, key: &str| -> Vec<u64> {
        pam.messages
            .iter()
            .filter(|m| m["event"] == event)
            .map(|m| m["data"][key].as_u64().expect("sequence number"))
            .collect()
    };
    assert_eq!(
        field("chat", "i"),
        (0..N as u64).collect::<Vec<_>>(),
        "node a's client messages out of order on node b"
    );
    assert_eq!(
        field("notice", "j"),
        (0..M as u64).collect::<Vec<_>>(),
        "node c's HTTP publishes out of order on node b"
    );
    println!(
        "redis cluster: {} messages from nodes a and c reached node b in order in {} ms",
        N + M,
        took.as_millis()
    );
    let mut from_a = Vec::new();
    let mut from_c = Vec::new();
    for _ in 0..N + M {
        let data = alice.publish_on(ROOM).await;
        match (data["i"].as_u64(), data["j"].as_u64()) {
            (Some(i), None) => from_a.push(i),
            (None, Some(j)) => from_c.push(j),
            _ => panic!("unexpected message {data}"),
        }
    }
    assert_eq!(
        from_a,
        (0..N as u64).collect::<Vec<_>>(),
        "node a's messages out of order on node c (SC)"
    );
    assert_eq!(
        from_c,
        (0..M as u64).collect::<Vec<_>>(),
        "node c's publishes out of order on node c (SC)"
    );
    // An SC publish on node c reaches Hotsock on node b.
    alice.publish(ROOM, json!({"from": "sc"})).await;
    pam.until("sc message", Duration::from_secs(3), |w| {
        w.messages
            .iter()
            .any(|m| m["data"] == json!({"from": "sc"}))
    })
    .await;

    // Leaves cross nodes too.
    sender.close().await;
    alice.close().await;
    pam.until("dwight and alice removed", Duration::from_secs(3), |w| {
        w.count("removed", "dwight") == 1 && w.count("removed", "alice") == 1
    })
    .await;
    wait_for_members(&[&a, &b, &c], ROOM, &["pam"], Duration::from_secs(3)).await;
    assert_ready_on_redis_cluster(&[&a, &b, &c]).await;
    for n in [&a, &b, &c] {
        let (_, body) = n.readyz().await;
        assert_eq!(body["cluster"]["frames_dropped"], 0, "{}: {body}", n.name);
        assert_eq!(body["cluster"]["malformed_frames"], 0, "{}: {body}", n.name);
    }
}

#[tokio::test]
async fn a_killed_node_is_removed_within_the_bound_on_redis_cluster() {
    let _serial = serial().await;
    let cluster = RedisCluster::start();
    let (a, b, mut c) = three(&cluster);
    wait_for_cluster(&[&a, &b, &c], 3).await;
    let mut watch_a = Watcher::join(&a, "watch-a", ROOM).await;
    let mut watch_b = Watcher::join(&b, "watch-b", ROOM).await;
    let mut hs = Vec::new();
    for i in 0..3 {
        let mut cl = c.hotsock(user(&format!("c{i}"), Value::Null)).await;
        cl.join(ROOM).await;
        hs.push(cl);
    }
    let mut sc = Sc::connect(&c, "c3").await;
    sc.subscribe(ROOM).await;
    // One user on both b and c stays when c dies.
    let mut both_b = b.hotsock(user("both", Value::Null)).await;
    both_b.join(ROOM).await;
    let mut both_c = c.hotsock(user("both", Value::Null)).await;
    both_c.join(ROOM).await;
    let everyone = ["both", "c0", "c1", "c2", "c3", "watch-a", "watch-b"];
    wait_for_members(&[&a, &b, &c], ROOM, &everyone, Duration::from_secs(3)).await;
    watch_a.pump(200).await;
    watch_b.pump(200).await;

    let killed = Instant::now();
    c.kill();
    let gone = ["c0", "c1", "c2", "c3"];
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
        "redis cluster: SIGKILLed node's members removed after {} ms (node a) and {} ms (node b); heartbeat 500ms, node timeout 2500ms",
        on_a.as_millis(),
        on_b.as_millis()
    );
    assert!(
        on_a <= Duration::from_millis(3000) && on_b <= Duration::from_millis(3000),
        "removal took {on_a:?} / {on_b:?}, over the 3 s bound (node timeout 2.5 s + a heartbeat)"
    );
    watch_a.pump(500).await;
    watch_b.pump(100).await;
    for w in [&watch_a, &watch_b] {
        for u in gone {
            assert_eq!(w.count("removed", u), 1, "{u}: {:?}", w.events);
        }
        assert_eq!(w.count("removed", "both"), 0, "{:?}", w.events);
        assert_eq!(w.uids(), ["both", "watch-a", "watch-b"]);
    }
    let (status, ready) = a.readyz().await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["cluster"]["nodes"], 2, "{ready}");
    assert_eq!(ready["cluster"]["nodes_timed_out"], 1, "{ready}");
}

#[tokio::test]
async fn the_bus_shard_master_restarts_and_the_nodes_resync() {
    let _serial = serial().await;
    let mut cluster = RedisCluster::start();
    let (a, b, c) = three(&cluster);
    let nodes = [&a, &b, &c];
    wait_for_cluster(&nodes, 3).await;
    let mut watch = Watcher::join(&b, "watch", ROOM).await;
    let mut stay = a.hotsock(user("stay", Value::Null)).await;
    stay.join(ROOM).await;
    let leaver = c.hotsock(user("leaver", Value::Null)).await;
    let mut leaver = leaver;
    leaver.join(ROOM).await;
    wait_for_members(
        &nodes,
        ROOM,
        &["leaver", "stay", "watch"],
        Duration::from_secs(3),
    )
    .await;

    // Another master dies: the bus does not use it, so joins and leaves
    // still cross nodes.
    let owner = cluster.owner_of(BUS_CHANNEL);
    let other = (owner + 1) % cluster.ports.len();
    cluster.kill(other);
    let t0 = Instant::now();
    let mut bystander = c.hotsock(user("bystander", Value::Null)).await;
    bystander.join(ROOM).await;
    watch
        .until(
            "a join while another master is down",
            Duration::from_secs(5),
            |w| w.count("added", "bystander") == 1,
        )
        .await;
    bystander.close().await;
    watch
        .until(
            "a leave while another master is down",
            Duration::from_secs(5),
            |w| w.count("removed", "bystander") == 1,
        )
        .await;
    println!(
        "redis cluster: with a master the bus does not use down, a join and a leave crossed nodes in {} ms",
        t0.elapsed().as_millis()
    );
    cluster.restart(other);
    wait_for_cluster(&nodes, 3).await;

    // The master serving the bus channel's slot dies: the nodes lose the
    // bus (the other masters are fine, but they do not carry it).
    cluster.kill(owner);
    let down_at = Instant::now();
    let down = common::eventually(Duration::from_secs(6), || async {
        for n in nodes {
            if n.readyz().await.0 != 503 {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        down,
        "every node reports not ready without the bus's shard: {:?}",
        a.readyz().await
    );
    println!(
        "redis cluster: all nodes not ready {} ms after the bus shard's master died",
        down_at.elapsed().as_millis()
    );
    // Changes while the nodes cannot talk: a join on a, a leave on c.
    let mut newcomer = a.hotsock(user("newcomer", Value::Null)).await;
    newcomer.join(ROOM).await;
    leaver.close().await;
    // Down for longer than the node timeout (2.5 s) and than a connect
    // attempt (2 s): nobody is timed out while the bus is down.
    while down_at.elapsed() < Duration::from_secs(4) {
        watch.pump(100).await;
    }
    assert_eq!(watch.count("removed", "stay"), 0, "{:?}", watch.events);
    for n in nodes {
        let (status, body) = n.readyz().await;
        assert_eq!(status, 503, "{}: {body}", n.name);
        assert_eq!(body["cluster"]["nodes_timed_out"], 0, "{}: {body}", n.name);
    }

    // The master comes back with its slots; the nodes reconnect, resync
    // and agree again.
    cluster.restart(owner);
    let back_at = Instant::now();
    let want = ["newcomer", "stay", "watch"];
    wait_for_members(&nodes, ROOM, &want, Duration::from_secs(15)).await;
    wait_for_cluster(&nodes, 3).await;
    println!(
        "redis cluster: nodes converged {} ms after the bus shard's master was ok again ({} ms outage)",
        back_at.elapsed().as_millis(),
        back_at.duration_since(down_at).as_millis()
    );
    watch
        .until(
            "newcomer added, leaver removed",
            Duration::from_secs(3),
            |w| w.count("added", "newcomer") == 1 && w.count("removed", "leaver") == 1,
        )
        .await;
    watch.pump(300).await;
    assert_eq!(watch.uids(), want, "{:?}", watch.events);
    assert_eq!(watch.count("removed", "stay"), 0, "{:?}", watch.events);
    assert_eq!(watch.count("added", "newcomer"), 1, "{:?}", watch.events);
    // Traffic flows again, in order.
    let mut sender = a.hotsock(user("after", Value::Null)).await;
    sender.join(ROOM).await;
    for i in 0..20 {
        sender
            .send(json!({"event": "chat", "channel": ROOM, "data": {"i": i}}))
            .await;
    }
    watch
        .until("messages after the restart", Duration::from_secs(5), |w| {
            w.messages.len() >= 20
        })
        .await;
    let got: Vec<u64> = watch
        .messages
        .iter()
        .map(|m| m["data"]["i"].as_u64().expect("i"))
        .collect();
    assert_eq!(got, (0..20).collect::<Vec<u64>>());
    assert_ready_on_redis_cluster(&nodes).await;
    for n in nodes {
        let (_, ready) = n.readyz().await;
        assert!(
            ready["cluster"]["bus_recoveries"].as_u64().unwrap_or(0) >= 2,
            "{}: {ready}",
            n.name
        );
    }
}

#[tokio::test]
async fn the_bus_channel_slot_moves_and_the_nodes_follow_it() {
    let _serial = serial().await;
    let cluster = RedisCluster::start();
    let (a, b, c) = three(&cluster);
    let nodes = [&a, &b, &c];
    wait_for_cluster(&nodes, 3).await;
    let mut watch = Watcher::join(&b, "watch", ROOM).await;
    let mut stay = a.hotsock(user("stay", Value::Null)).await;
    stay.join(ROOM).await;
    wait_for_members(&nodes, ROOM, &["stay", "watch"], Duration::from_secs(3)).await;

    // Resharding moves the bus channel's slot to another master: the old
    // owner unsubscribes every node (`sunsubscribe`), so the nodes must
    // subscribe again where the slot now lives.
    let owner = cluster.owner_of(BUS_CHANNEL);
    let moved_at = Instant::now();
    cluster.move_slot_of(BUS_CHANNEL, (owner + 1) % cluster.ports.len());
    let mut mover = c.hotsock(user("mover", Value::Null)).await;
    mover.join(ROOM).await;
    watch
        .until("a join after the slot moved", Duration::from_secs(5), |w| {
            w.count("added", "mover") == 1
        })
        .await;
    println!(
        "redis cluster: after the bus channel's slot moved, a join on node c reached node b {} ms after the move began",
        moved_at.elapsed().as_millis()
    );
    wait_for_members(
        &nodes,
        ROOM,
        &["mover", "stay", "watch"],
        Duration::from_secs(5),
    )
    .await;
    wait_for_cluster(&nodes, 3).await;
    for i in 0..20 {
        stay.send(json!({"event": "chat", "channel": ROOM, "data": {"i": i}}))
            .await;
    }
    watch
        .until("messages after the move", Duration::from_secs(5), |w| {
            w.messages.len() >= 20
        })
        .await;
    let got: Vec<u64> = watch
        .messages
        .iter()
        .map(|m| m["data"]["i"].as_u64().expect("i"))
        .collect();
    assert_eq!(got, (0..20).collect::<Vec<u64>>());
    watch.pump(300).await;
    assert_eq!(watch.count("removed", "stay"), 0, "{:?}", watch.events);
    assert_ready_on_redis_cluster(&nodes).await;
}
