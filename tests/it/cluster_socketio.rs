//! Socket.IO in a cluster: two `rollcall serve` nodes on one Redis, a
//! Socket.IO client on each. Each sees the other's party events and
//! `request.parties` answers, and one sender's messages arrive at the
//! other node in the order they were sent.

use std::time::Duration;

use serde_json::json;

use crate::common::cluster::*;
use crate::common::protocols::{Peer, Proto};

const ROOM: &str = "presence.cluster-sio";
/// Under the per-connection rate limit (--max-messages-per-second, 100).
const MESSAGES: usize = 80;

#[tokio::test]
async fn socketio_clients_on_two_nodes_see_each_other_in_order() {
    let _serial = serial().await;
    let redis = Redis::start();
    let (a, b) = (
        Node::start("a", &redis.url(), &NodeOptions::default()),
        Node::start("b", &redis.url(), &NodeOptions::default()),
    );
    wait_for_cluster(&[&a, &b], 2).await;

    let mut ann = Peer::connect_to(a.addr, Proto::SocketIo, Some(json!({"uid": "ann"})))
        .await
        .expect("ann connects to node a");
    ann.subscribe(ROOM).await.expect("ann subscribes");
    let mut bob = Peer::connect_to(b.addr, Proto::SocketIo, Some(json!({"uid": "bob"})))
        .await
        .expect("bob connects to node b");
    bob.subscribe(ROOM).await.expect("bob subscribes");
    // Node a learns of bob through the bus.
    ann.expect_joined(ROOM, "bob").await;
    wait_for_members(&[&a, &b], ROOM, &["ann", "bob"], Duration::from_secs(3)).await;

    // request.parties on node b is answered for ann, who is on node a.
    bob.emit(
        "SEND_PRESENCE_EVENT",
        json!({"category": "app.event.presence.request.parties", "topicId": ROOM}),
    )
    .await;
    bob.expect_joined(ROOM, "ann").await;

    // ann's state change reaches bob.
    ann.emit(
        "SEND_PRESENCE_EVENT",
        json!({"category": "app.event.presence.party.online", "topicId": ROOM,
               "content": {"idle": true, "role": "member"}}),
    )
    .await;
    let update = bob.next().await;
    assert_eq!(update["data"]["sender"]["_id"], "ann", "{update}");
    assert_eq!(update["data"]["content"]["idle"], true, "{update}");
    ann.next().await; // her own copy

    // One sender's messages, in order, across the bus.
    for i in 0..MESSAGES {
        ann.send_publish(ROOM, &format!("m{i}")).await;
    }
    for i in 0..MESSAGES {
        bob.expect_message(ROOM, "chat", &format!("m{i}")).await;
    }
    for i in 0..MESSAGES {
        ann.expect_message(ROOM, "chat", &format!("m{i}")).await;
    }

    // bob's socket goes: ann sees him leave.
    bob.close().await;
    let leaves = ann.next().await;
    assert_eq!(
        leaves["data"]["category"], "app.event.presence.party.leaves",
        "{leaves}"
    );
    assert_eq!(leaves["data"]["sender"]["_id"], "bob");
    wait_for_members(&[&a, &b], ROOM, &["ann"], Duration::from_secs(3)).await;
}
