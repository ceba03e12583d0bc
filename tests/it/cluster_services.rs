//! Presence services across a three-node cluster on one private Redis:
//! sends to a user, broadcasts and sends to everyone present reach
//! connections on every node; user presence (`user.presence` pushes and
//! `GET /api/users/{uid}`) counts connections and leases on every node;
//! privacy choices are stored in Redis, applied on every node at once and
//! loaded by a node that restarts; `subscriptionsCount` counts subscribers
//! that are not members on every node.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common;
use crate::common::cluster::*;

const WAIT_MSG: Duration = Duration::from_secs(3);

/// Reads frames until one with `event` arrives (other frames are skipped,
/// pings included); panics after 3 s.
async fn expect_event(client: &mut common::Client, event: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT_MSG;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "no {event} frame within {WAIT_MSG:?}");
        let frame = client.next_within(left).await;
        if frame["event"] == event {
            return frame;
        }
    }
}

/// `GET /api/users/{uid}` on `node`.
async fn user_status(node: &Node, uid: &str) -> Value {
    let (status, body) = node.http("GET", &format!("/api/users/{uid}"), None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until `GET /api/users/{uid}` on every node says `online` with
/// `connections`.
async fn wait_for_user(nodes: &[&Node], uid: &str, online: bool, connections: u64) {
    until_every_node(
        nodes,
        WAIT_MSG,
        &format!("{uid} online={online} with {connections} connections"),
        |n| user_status(n, uid),
        |s| s["online"] == online && s["connections"] == connections,
    )
    .await;
}

/// Waits until `subscriptionsCount` of `channel` is `count` on every node.
async fn wait_for_subscriptions(nodes: &[&Node], channel: &str, count: u64) {
    let path = format!("/api/channels/{channel}");
    until_every_node(
        nodes,
        WAIT_MSG,
        &format!("subscriptionsCount {count} for {channel}"),
        |n| n.http("GET", &path, None),
        |(_, body)| body["subscriptionsCount"] == count,
    )
    .await;
}

/// The `user.presence` messages a watcher of `user:<uid>` has seen, as
/// their `online` values.
fn presence_pushes(w: &Watcher) -> Vec<bool> {
    w.messages
        .iter()
        .filter(|m| m["event"] == "user.presence")
        .filter_map(|m| m["data"]["online"].as_bool())
        .collect()
}

#[tokio::test]
async fn direct_messages_user_presence_and_privacy_span_the_cluster() {
    let _serial = serial().await;
    let redis = Redis::start();
    let opts = NodeOptions::default();
    let a = Node::start("a", &redis.url(), &opts);
    let b = Node::start("b", &redis.url(), &opts);
    let mut c = Node::start("c", &redis.url(), &opts);
    wait_for_cluster(&[&a, &b, &c], 3).await;

    // 1. Send to one user: jim on nodes a and c (Hotsock) and b
    // (SocketCluster, logged in by its handshake token), asked on node b.
    let mut jim_a = a.hotsock(user("jim", Value::Null)).await;
    let mut jim_c = c.hotsock(user("jim", Value::Null)).await;
    let mut jim_sc_b = Sc::connect(&b, "jim").await;
    let mut bob_b = b.hotsock(user("bob", Value::Null)).await;
    wait_for_user(&[&a, &b, &c], "jim", true, 3).await;
    let (status, body) = b
        .http(
            "POST",
            "/api/users/jim/send",
            Some(json!({"event": "note", "data": {"n": 1}})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    for jim in [&mut jim_a, &mut jim_c] {
        let frame = expect_event(jim, "note").await;
        assert_eq!(frame["data"], json!({"n": 1}), "{frame}");
        assert_eq!(frame["id"], body["id"], "one id on every node: {frame}");
    }
    let frame = jim_sc_b.seek(|f| f["event"] == "note").await;
    assert_eq!(frame["data"], json!({"n": 1}), "SocketCluster jim: {frame}");
    jim_sc_b.close().await;
    wait_for_user(&[&a, &b, &c], "jim", true, 2).await;

    // Broadcast from node c: every connection on every node, once.
    let (status, body) = c
        .http("POST", "/api/broadcast", Some(json!({"event": "all"})))
        .await;
    assert_eq!(status, 202, "{body}");
    // bob's first frame after connecting is the broadcast: the note to jim
    // never reached him.
    let frame = bob_b.next_within(WAIT_MSG).await;
    assert_eq!(frame["event"], "all", "bob: {frame}");
    for jim in [&mut jim_a, &mut jim_c] {
        let frame = expect_event(jim, "all").await;
        assert_eq!(frame["id"], body["id"]);
    }
    for client in [&mut jim_a, &mut jim_c, &mut bob_b] {
        client.expect_none(300).await;
    }

    // Send to everyone present: ann holds a backend lease on content:42
    // through node a and is connected (not subscribed) on node c; kim is
    // subscribed on node b (a Hotsock standard channel: a subscriber, not
    // a member). The send is asked on node b.
    let mut ann_c = c.hotsock(user("ann", Value::Null)).await;
    let mut kim_b = b.hotsock(user("kim", Value::Null)).await;
    kim_b.join("content:42").await;
    let (status, body) = a
        .http(
            "POST",
            "/api/presence/refresh",
            Some(json!({"user": "ann", "ids": ["content:42"], "ttl_ms": 30000})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_for_members(&[&a, &b, &c], "content:42", &["ann"], WAIT_MSG).await;
    // 4. kim's subscription (not a membership) counts on every node, from
    // node b's heartbeats; ann's lease counts as a member presence.
    wait_for_subscriptions(&[&a, &b, &c], "content:42", 2).await;
    let (status, body) = b
        .http(
            "POST",
            "/api/content/42/send",
            Some(json!({"event": "ping", "data": "x"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let frame = expect_event(&mut ann_c, "ping").await;
    assert_eq!(frame["data"], "x", "{frame}");
    let frame = expect_event(&mut kim_b, "ping").await;
    assert_eq!(
        frame["channel"], "content:42",
        "kim gets the channel message: {frame}"
    );
    ann_c.expect_none(300).await;
    kim_b.expect_none(300).await;

    // 2. User presence: pam watches user:lee from node b.
    let mut pam = Watcher::join(&b, "pam", "user:lee").await;
    let lee_a = a.hotsock(user("lee", Value::Null)).await;
    pam.until("lee online", WAIT_MSG, |w| presence_pushes(w) == [true])
        .await;
    wait_for_user(&[&a, &b, &c], "lee", true, 1).await;
    let lee_c = c.hotsock(user("lee", Value::Null)).await;
    wait_for_user(&[&a, &b, &c], "lee", true, 2).await;
    lee_a.close().await;
    wait_for_user(&[&a, &b, &c], "lee", true, 1).await;
    pam.pump(300).await;
    assert_eq!(
        presence_pushes(&pam),
        [true],
        "lee is still online on node c"
    );
    lee_c.close().await;
    pam.until("lee offline", WAIT_MSG, |w| {
        presence_pushes(w) == [true, false]
    })
    .await;
    wait_for_user(&[&a, &b, &c], "lee", false, 0).await;

    // A lease on node c alone keeps a user online on every node.
    let (status, body) = c
        .http(
            "POST",
            "/api/presence/refresh",
            Some(json!({"user": "lee", "ids": ["content:7"], "ttl_ms": 30000})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    pam.until("lee online by lease", WAIT_MSG, |w| {
        presence_pushes(w) == [true, false, true]
    })
    .await;
    wait_for_user(&[&a, &b, &c], "lee", true, 0).await;
    let (status, body) = c
        .http(
            "POST",
            "/api/presence/refresh",
            Some(json!({"user": "lee", "ids": []})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    pam.until("lee offline after the lease", WAIT_MSG, |w| {
        presence_pushes(w) == [true, false, true, false]
    })
    .await;

    // 3. Privacy: zed is a member on node b; hiding him on node a hides
    // him on every node at once; the choice is in Redis.
    let mut zed_b = b.hotsock(user("zed", Value::Null)).await;
    zed_b.join("presence.room").await;
    wait_for_members(&[&a, &b, &c], "presence.room", &["zed"], WAIT_MSG).await;
    wait_for_user(&[&a, &b, &c], "zed", true, 1).await;
    a.set_visible("zed", false).await;
    wait_for_members(&[&a, &b, &c], "presence.room", &[], WAIT_MSG).await;
    wait_for_user(&[&a, &b, &c], "zed", false, 0).await;
    for n in [&a, &b, &c] {
        let (status, body) = n.http("GET", "/api/users/zed/privacy", None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["visible"], false, "node {}: {body}", n.name);
        assert_eq!(body["choice"], false, "node {}: {body}", n.name);
    }
    // Node c restarts and loads the choice from Redis.
    c.terminate();
    drop(c);
    let c2 = Node::start("c", &redis.url(), &opts);
    wait_for_cluster(&[&a, &b, &c2], 3).await;
    let (status, body) = c2.http("GET", "/api/users/zed/privacy", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choice"], false, "restarted node: {body}");
    assert_eq!(c2.member_set("presence.room").await, Vec::<String>::new());
    // Showing zed again from the restarted node shows him everywhere.
    c2.set_visible("zed", true).await;
    wait_for_members(&[&a, &b, &c2], "presence.room", &["zed"], WAIT_MSG).await;
    wait_for_user(&[&a, &b, &c2], "zed", true, 1).await;
}
