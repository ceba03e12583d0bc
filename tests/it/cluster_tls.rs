//! The cluster bus over TLS: redis-server speaking only TLS, with a
//! certificate from a private CA (made with `openssl`), alone
//! (`rediss://`) and as a three-master Redis Cluster
//! (`rediss+cluster://`), and two `rollcall serve` nodes on it with
//! `--tls-ca-file ca.pem`. A join on one node is seen by a Hotsock client
//! on the other, and a privacy choice goes through the same Redis. A node
//! without `--tls-ca-file` refuses the certificate and says what to do.

use std::time::Duration;

use serde_json::json;

use crate::common;
use crate::common::cluster;
use crate::common::cluster::{Node, NodeOptions, Redis, RedisCluster, Watcher, wait_for_cluster};
use crate::tls_support::TestPki;

/// Two nodes on `bus` trusting `pki`'s CA: they form a cluster, a join on
/// one is seen on the other, a privacy choice stored through one is read
/// through the other.
async fn two_nodes_work_over(bus: &str, pki: &TestPki, prefix: &str) {
    let opts = NodeOptions {
        extra: vec!["--tls-ca-file".into(), pki.ca.display().to_string()],
        ..NodeOptions::timings("100ms", "1000ms")
    };
    let a = Node::start(&format!("{prefix}-a"), bus, &opts);
    let b = Node::start(&format!("{prefix}-b"), bus, &opts);
    wait_for_cluster(&[&a, &b], 2).await;
    let (_, ready) = a.readyz().await;
    assert_eq!(ready["cluster"]["bus_state"], "connected", "{ready}");

    // bob on b watches the channel; alice joins it on a.
    let mut bob = Watcher::join(&b, "bob", "presence.tls").await;
    let mut alice = a.hotsock(cluster::user("alice", json!(null))).await;
    alice.join("presence.tls").await;
    bob.until(
        "alice's join on the other node",
        Duration::from_secs(5),
        |w| w.count("added", "alice") == 1,
    )
    .await;
    assert_eq!(bob.uids(), ["alice", "bob"]);

    // The privacy store uses the same Redis, with the same roots.
    a.set_visible("zed", false).await;
    // Node b learns of it over the bus: poll until it has.
    let seen = common::eventually(Duration::from_secs(3), || async {
        b.http("GET", "/api/users/zed/privacy", None).await.1["choice"] == json!(false)
    })
    .await;
    let (status, body) = b.http("GET", "/api/users/zed/privacy", None).await;
    assert!(seen, "node b never saw zed's choice: {status} {body}");

    alice.close().await;
    bob.client.close().await;
}

#[tokio::test]
async fn nodes_replicate_over_rediss_with_the_ca_file() {
    let _serial = cluster::serial().await;
    let pki = TestPki::generate("redis");
    let redis = Redis::start_tls(&pki.cert, &pki.key, &pki.ca);
    let bus = format!("rediss://127.0.0.1:{}", redis.port);
    two_nodes_work_over(&bus, &pki, "tls").await;
}

#[tokio::test]
async fn without_the_ca_file_the_redis_certificate_is_refused() {
    let _serial = cluster::serial().await;
    let pki = TestPki::generate("redis-untrusted");
    let redis = Redis::start_tls(&pki.cert, &pki.key, &pki.ca);
    let bus = format!("rediss://127.0.0.1:{}", redis.port);
    let node = Node::start("tls-untrusted", &bus, &NodeOptions::default());
    let explained = common::eventually(Duration::from_secs(10), || async {
        let (_, ready) = node.readyz().await;
        let error = ready["cluster"]["last_error"].as_str().unwrap_or_default();
        ready["cluster"]["bus_state"] != "connected"
            && error.contains("not trusted")
            && error.contains("--tls-ca-file")
    })
    .await;
    let (status, ready) = node.readyz().await;
    assert!(
        explained,
        "readyz does not explain the refused certificate: {status} {ready}\nlog:\n{}",
        node.log_text()
    );
    assert_ne!(status, 200, "a node cut off from the bus is not ready");
}

#[tokio::test]
async fn nodes_replicate_over_a_rediss_cluster_with_the_ca_file() {
    let _serial = cluster::serial().await;
    let pki = TestPki::generate("redis-cluster");
    let cluster = RedisCluster::start_tls(&pki.cert, &pki.key, &pki.ca);
    two_nodes_work_over(&cluster.url(), &pki, "tls-cluster").await;
}
