//! Subscribers that are not members (plain pub/sub: an anonymous
//! SocketCluster socket, a Hotsock standard channel) on one node make the
//! channel exist, with the right count, on every node at once: they travel
//! as ordered ops, not with the heartbeats (which are 2 s apart here, far
//! longer than the bounds polled for).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;
use crate::common::cluster::*;

const NEWS: &str = "news";
/// Well under the 2 s heartbeat: what arrives within it did not wait for one.
const PROMPT: Duration = Duration::from_millis(700);

/// The channel's `connections` in `GET /api/channels` on `node`, or None
/// if it is not listed.
async fn listed(node: &Node, channel: &str) -> Option<u64> {
    let (status, body) = node.http("GET", "/api/channels", None).await;
    assert_eq!(status, 200, "{body}");
    body["channels"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == channel)
        .map(|c| c["connections"].as_u64().unwrap_or(0))
}

/// Polls until `node` lists `channel` with `want` connections (None: not
/// listed) and returns how long it took; panics after `within`.
async fn until_listed(node: &Node, channel: &str, want: Option<u64>, within: Duration) -> Duration {
    let t0 = Instant::now();
    let ok = common::eventually(within, || async { listed(node, channel).await == want }).await;
    let seen = listed(node, channel).await;
    assert!(
        ok,
        "node {}: {channel} listed with {seen:?} connections, expected {want:?} within {within:?}",
        node.name
    );
    t0.elapsed()
}

/// `subscriptionsCount` of `GET /api/channels/{channel}` on `node`.
async fn subscriptions_count(node: &Node, channel: &str) -> Value {
    let (status, body) = node
        .http("GET", &format!("/api/channels/{channel}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["subscriptionsCount"].clone()
}

#[tokio::test]
async fn plain_subscribers_on_another_node_are_listed_at_once() {
    let _serial = serial().await;
    let redis = Redis::start();
    let opts = NodeOptions::timings("2s", "5s");
    let a = Node::start("a", &redis.url(), &opts);
    let mut b = Node::start("b", &redis.url(), &opts);
    wait_for_cluster(&[&a, &b], 2).await;
    assert_eq!(listed(&a, NEWS).await, None);

    // An anonymous SocketCluster subscriber on b: news exists on a at once.
    let mut sc = Sc::connect_anonymous(&b).await;
    sc.call("#subscribe", json!({ "channel": NEWS })).await;
    let took = until_listed(&a, NEWS, Some(1), PROMPT).await;
    println!(
        "cluster: a plain SocketCluster subscriber on node b listed on node a after {} ms (heartbeat 2 s)",
        took.as_millis()
    );
    assert_eq!(subscriptions_count(&a, NEWS).await, 1);

    // A Hotsock standard-channel subscriber on a: both nodes count two.
    let mut hs = a.hotsock(common::anonymous()).await;
    hs.join(NEWS).await;
    until_listed(&b, NEWS, Some(2), PROMPT).await;
    until_listed(&a, NEWS, Some(2), PROMPT).await;
    assert_eq!(subscriptions_count(&b, NEWS).await, 2);

    // A node that starts now learns both from the others' states.
    let c = Node::start("c", &redis.url(), &opts);
    wait_for_cluster(&[&a, &b, &c], 3).await;
    until_listed(&c, NEWS, Some(2), Duration::from_secs(3)).await;

    // Unsubscribing takes them away at once, the channel with the last.
    sc.call("#unsubscribe", json!(NEWS)).await;
    until_listed(&a, NEWS, Some(1), PROMPT).await;
    until_listed(&c, NEWS, Some(1), PROMPT).await;
    let unsubscribed = hs.unsubscribe(NEWS).await;
    assert_eq!(
        unsubscribed["event"], "hotsock.unsubscribed",
        "{unsubscribed}"
    );
    until_listed(&a, NEWS, None, PROMPT).await;
    until_listed(&b, NEWS, None, PROMPT).await;
    until_listed(&c, NEWS, None, PROMPT).await;

    // A node leaving takes its subscribers with it, long before its
    // timeout (5 s).
    sc.call("#subscribe", json!({ "channel": NEWS })).await;
    until_listed(&c, NEWS, Some(1), PROMPT).await;
    b.send_term();
    until_listed(&c, NEWS, None, Duration::from_secs(2)).await;
    until_listed(&a, NEWS, None, PROMPT).await;
    b.wait_exit();
    drop(sc);
}
