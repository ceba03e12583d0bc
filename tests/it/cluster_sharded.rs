//! Three `rollcall serve` processes on a private three-master Redis Cluster
//! (`--bus redis+cluster://…`, sharded pub/sub over RESP3): cross-node
//! members, dedup and publish order, `/readyz`, a SIGKILLed node, the bus
//! channel's slot moved to another master (resharding), another master and
//! then the master serving the bus channel killed and restarted.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;
use crate::common::cluster::scenarios::{CrossNodeRoom, sigkill_removal};
use crate::common::cluster::*;

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
    start_three(&cluster.url(), &opts)
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

/// "watch" follows ROOM from node b; "stay" joins it on node a, seen by
/// watch, for the whole test.
async fn watch_on_b_stay_on_a(a: &Node, b: &Node) -> (Watcher, common::Client) {
    let mut watch = Watcher::join(b, "watch", ROOM).await;
    let stay = join_seen(a, "stay", Value::Null, &mut watch, Duration::from_secs(3)).await;
    (watch, stay)
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

    // pam watches from node b; jim joins on node a, alice (SocketCluster)
    // on node c.
    let (mut room, jim_a) = CrossNodeRoom::open(&a, &b, &c, ROOM).await;

    // Dedup across the cluster: jim also connects on node c. No second
    // memberAdded; when the node-a connection goes, jim stays; when the
    // last goes, exactly one memberRemoved.
    room.dedup_jim(jim_a, json!({"n": 1})).await;

    // Publish order: 200 client messages from one publisher on node a
    // reach pam (Hotsock, node b) and alice (SocketCluster, node c) in
    // order, and so do 50 HTTP publishes on node c; an SC publish on node
    // c reaches Hotsock on node b.
    let (n, m) = (200, 50);
    let (sender, took) = room.publish_order(n, m, Duration::from_secs(10)).await;
    println!(
        "redis cluster: {} messages from nodes a and c reached node b in order in {} ms",
        n + m,
        took.as_millis()
    );
    let CrossNodeRoom { mut pam, alice, .. } = room;

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
    sigkill_removal(&a, &b, &mut c, ROOM, "redis cluster").await;
}

#[tokio::test]
async fn the_bus_shard_master_restarts_and_the_nodes_resync() {
    let _serial = serial().await;
    let mut cluster = RedisCluster::start();
    let (a, b, c) = three(&cluster);
    let nodes = [&a, &b, &c];
    wait_for_cluster(&nodes, 3).await;
    let (mut watch, _stay) = watch_on_b_stay_on_a(&a, &b).await;
    let mut leaver = c.hotsock(user("leaver", Value::Null)).await;
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
    let bystander = join_seen(
        &c,
        "bystander",
        Value::Null,
        &mut watch,
        Duration::from_secs(5),
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
    // Every node reports not ready without the bus's shard.
    wait_for_not_ready(&nodes, Duration::from_secs(6)).await;
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
    send_numbered(&mut sender, ROOM, 20).await;
    watch
        .expect_numbered("messages after the restart", 20, Duration::from_secs(5))
        .await;
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
    let (mut watch, mut stay) = watch_on_b_stay_on_a(&a, &b).await;
    wait_for_members(&nodes, ROOM, &["stay", "watch"], Duration::from_secs(3)).await;

    // Resharding moves the bus channel's slot to another master: the old
    // owner unsubscribes every node (`sunsubscribe`), so the nodes must
    // subscribe again where the slot now lives.
    let owner = cluster.owner_of(BUS_CHANNEL);
    let moved_at = Instant::now();
    cluster.move_slot_of(BUS_CHANNEL, (owner + 1) % cluster.ports.len());
    let _mover = join_seen(&c, "mover", Value::Null, &mut watch, Duration::from_secs(5)).await;
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
    send_numbered(&mut stay, ROOM, 20).await;
    watch
        .expect_numbered("messages after the move", 20, Duration::from_secs(5))
        .await;
    watch.pump(300).await;
    assert_eq!(watch.count("removed", "stay"), 0, "{:?}", watch.events);
    assert_ready_on_redis_cluster(&nodes).await;
}
