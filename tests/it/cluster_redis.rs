//! Three `rollcall serve` processes on one private Redis, with Hotsock and
//! SocketCluster clients on different nodes: cross-node members, updates
//! and dedup, publish order, join latency, SIGKILL and graceful shutdown
//! of a node, and a node started while Redis is unreachable.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common;
use crate::common::cluster::scenarios::{
    CrossNodeRoom, graceful_removal, join_latency, ready_once_the_bus_comes, sigkill_removal,
};
use crate::common::cluster::*;

const ROOM: &str = "presence.room";

fn three(redis: &Redis) -> (Node, Node, Node) {
    start_three(&redis.url(), &NodeOptions::default())
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

    // pam watches from node b; jim joins on node a, alice (SocketCluster)
    // on node c: members on every node.
    let (mut room, mut jim_a) = CrossNodeRoom::open(&a, &b, &c, ROOM).await;

    // jim changes his data on node a: memberUpdated on node b.
    jim_a.send(umd_update("jim", ROOM, json!({"n": 2}))).await;
    let pam = &mut room.pam;
    pam.until("jim updated", Duration::from_secs(3), |w| {
        w.count("updated", "jim") == 1
    })
    .await;
    assert!(pam.list.contains(&json!({"uid": "jim", "umd": {"n": 2}})));

    // Dedup: jim also connects on node c. No second memberAdded; when the
    // node-a connection goes, jim stays; when the last goes, one removal.
    room.dedup_jim(jim_a, json!({"n": 2})).await;

    // Publish order: client messages from node a and HTTP publishes on
    // node c reach pam (node b) and alice (SC, node c) in publish order,
    // and an SC publish on node c reaches Hotsock on node b.
    let (_dwight, _) = room.publish_order(50, 50, Duration::from_secs(5)).await;
    let CrossNodeRoom { mut pam, alice, .. } = room;

    // Cross-node join latency: a member joining on node a, seen on node b.
    join_latency(&a, &mut pam, ROOM, "cluster").await;
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
    sigkill_removal(&a, &b, &mut c, ROOM, "cluster").await;
}

#[tokio::test]
async fn a_node_shutting_down_removes_its_members_at_once() {
    let _serial = serial().await;
    let redis = Redis::start();
    let (a, b, mut c) = three(&redis);
    wait_for_cluster(&[&a, &b, &c], 3).await;
    graceful_removal(&a, &b, &mut c, ROOM, "cluster").await;
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
    let _b = ready_once_the_bus_comes(&a, &mut w, &redis.url(), "Redis", ROOM).await;
}

#[tokio::test]
async fn deployments_with_different_bus_prefixes_share_a_redis_unseen() {
    let _serial = serial().await;
    let redis = Redis::start();
    let with_prefix = |prefix: &str| NodeOptions {
        extra: vec!["--bus-prefix".into(), prefix.into()],
        ..NodeOptions::default()
    };
    let one_a = Node::start("a", &redis.url(), &with_prefix("one"));
    let one_b = Node::start("b", &redis.url(), &with_prefix("one"));
    // Same node id as one_a: in one deployment it would replace it.
    let two_a = Node::start("a", &redis.url(), &with_prefix("two"));
    wait_for_cluster(&[&one_a, &one_b], 2).await;
    wait_for_cluster(&[&two_a], 1).await;

    let mut amy = one_a.hotsock(user("amy", Value::Null)).await;
    amy.join("presence.room").await;
    let mut zed = two_a.hotsock(user("zed", Value::Null)).await;
    zed.join("presence.room").await;
    wait_for_members(&[&one_a, &one_b], "presence.room", &["amy"], common::WAIT).await;
    one_a.set_visible("eve", false).await;
    // Time for anything misrouted to arrive.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(two_a.member_set("presence.room").await, ["zed"]);
    assert_eq!(one_b.member_set("presence.room").await, ["amy"]);
    let (_, privacy) = two_a.http("GET", "/api/users/eve/privacy", None).await;
    assert_eq!(privacy["choice"], Value::Null, "{privacy}");
    let (_, privacy) = one_b.http("GET", "/api/users/eve/privacy", None).await;
    assert_eq!(privacy["choice"], false, "{privacy}");
    let (_, ready) = two_a.readyz().await;
    assert_eq!(ready["cluster"]["nodes"], 1, "{ready}");
    drop((amy, zed));

    // A prefix that could not name a key is refused at start.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["serve", "--bus", &redis.url(), "--bus-prefix", "two words"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bus-prefix"), "{stderr}");
}
