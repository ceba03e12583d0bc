//! Three `rollcall serve` processes on one private nats-server (JetStream
//! on, for the privacy store), held to the checks of the Redis suite:
//! cross-node members, updates and dedup, publish order, join latency,
//! SIGKILL and graceful shutdown of a node, an outage of the server, a
//! node started while it is unreachable, privacy choices shared (and
//! surviving a restart), and deployments with different prefixes unseen.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster_partition::Proxy;
use crate::common;
use crate::common::cluster::scenarios::{
    CrossNodeRoom, consistent_after_outage, graceful_removal, join_latency,
    ready_once_the_bus_comes, sigkill_removal,
};
use crate::common::cluster::*;
use crate::tls_support::TestPki;

const ROOM: &str = "presence.room";

fn three(nats: &Nats) -> (Node, Node, Node) {
    start_three(&nats.url(), &NodeOptions::default())
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
    let nats = Nats::start();
    let (a, b, c) = three(&nats);
    wait_for_cluster(&[&a, &b, &c], 3).await;
    let (_, ready) = a.readyz().await;
    assert_eq!(ready["cluster"]["bus"], "nats", "{ready}");

    let (mut room, mut jim_a) = CrossNodeRoom::open(&a, &b, &c, ROOM).await;
    jim_a.send(umd_update("jim", ROOM, json!({"n": 2}))).await;
    room.pam
        .until("jim updated", Duration::from_secs(3), |w| {
            w.count("updated", "jim") == 1
        })
        .await;
    assert!(
        room.pam
            .list
            .contains(&json!({"uid": "jim", "umd": {"n": 2}}))
    );
    room.dedup_jim(jim_a, json!({"n": 2})).await;
    let (_dwight, took) = room.publish_order(50, 50, Duration::from_secs(5)).await;
    println!(
        "nats: 100 messages from two nodes reached node b in order within {} ms",
        took.as_millis()
    );
    let CrossNodeRoom { mut pam, alice, .. } = room;

    // Cross-node join latency: a member joining on node a, seen on node b.
    join_latency(&a, &mut pam, ROOM, "nats").await;
    pam.pump(500).await;
    wait_for_members(
        &[&a, &b, &c],
        ROOM,
        &["alice", "dwight", "pam"],
        Duration::from_secs(3),
    )
    .await;
    alice.close().await;
}

#[tokio::test]
async fn a_killed_node_is_removed_within_the_bound_exactly_once() {
    let _serial = serial().await;
    let nats = Nats::start();
    let (a, b, mut c) = three(&nats);
    wait_for_cluster(&[&a, &b, &c], 3).await;
    sigkill_removal(&a, &b, &mut c, ROOM, "nats").await;
}

#[tokio::test]
async fn a_node_shutting_down_removes_its_members_at_once() {
    let _serial = serial().await;
    let nats = Nats::start();
    let (a, b, mut c) = three(&nats);
    wait_for_cluster(&[&a, &b, &c], 3).await;
    graceful_removal(&a, &b, &mut c, ROOM, "nats").await;
}

/// A connection the outage test keeps: (node, uid, client).
enum Conn {
    Hs(common::Client),
    Sc(Sc),
}

async fn join(nodes: &[&Node], node: usize, uid: &str, sc: bool) -> (usize, String, Conn) {
    let conn = if sc {
        let mut c = Sc::connect(nodes[node], uid).await;
        c.subscribe(ROOM).await;
        Conn::Sc(c)
    } else {
        let mut c = nodes[node].hotsock(user(uid, Value::Null)).await;
        c.join(ROOM).await;
        Conn::Hs(c)
    };
    (node, uid.to_string(), conn)
}

async fn leave(conns: &mut Vec<(usize, String, Conn)>, uid: &str, node: usize) {
    let pos = conns
        .iter()
        .position(|(n, u, _)| u == uid && *n == node)
        .expect("such a connection");
    match conns.remove(pos).2 {
        Conn::Hs(c) => c.close().await,
        Conn::Sc(c) => c.close().await,
    }
}

#[tokio::test]
async fn nats_down_for_5s_mid_traffic_then_everything_converges() {
    let _serial = serial().await;
    let mut nats = Nats::start();
    let (a, b, c) = three(&nats);
    let nodes = [&a, &b, &c];
    wait_for_cluster(&nodes, 3).await;
    let names = ["w-a", "w-b", "w-c"];
    let mut watchers = vec![
        Watcher::join(&a, names[0], ROOM).await,
        Watcher::join(&b, names[1], ROOM).await,
        Watcher::join(&c, names[2], ROOM).await,
    ];
    let mut conns = Vec::new();
    for (node, uid, sc) in [
        (0, "stay-a", false),
        (1, "leave-b", false),
        (2, "leave-c", true),
        (1, "dup", false),
        (2, "dup", true),
        (2, "half-dup", false),
        (0, "half-dup", false),
    ] {
        conns.push(join(&nodes, node, uid, sc).await);
    }
    let members = |conns: &Vec<(usize, String, Conn)>| {
        let mut set: BTreeSet<String> = conns.iter().map(|(_, u, _)| u.clone()).collect();
        set.extend(names.iter().map(|n| n.to_string()));
        set.into_iter().collect::<Vec<_>>()
    };
    let want = members(&conns);
    let want_refs: Vec<&str> = want.iter().map(String::as_str).collect();
    wait_for_members(&nodes, ROOM, &want_refs, Duration::from_secs(3)).await;

    nats.kill();
    let down_at = Instant::now();
    conns.push(join(&nodes, 0, "outage-a", false).await);
    watchers[0]
        .until(
            "local join during the outage",
            Duration::from_secs(1),
            |w| w.count("added", "outage-a") == 1,
        )
        .await;
    leave(&mut conns, "leave-b", 1).await;
    leave(&mut conns, "leave-c", 2).await;
    leave(&mut conns, "half-dup", 2).await;
    conns.push(join(&nodes, 1, "outage-b", true).await);
    conns.push(join(&nodes, 2, "outage-c", false).await);
    conns.push(join(&nodes, 1, "stay-a", false).await);
    wait_for_not_ready(&nodes, Duration::from_secs(5)).await;
    while down_at.elapsed() < Duration::from_secs(5) {
        for w in watchers.iter_mut() {
            w.pump(100).await;
        }
    }
    for w in &watchers {
        assert_eq!(w.count("removed", "dup"), 0, "{:?}", w.events);
    }
    nats.spawn();
    let back_at = Instant::now();
    let want = members(&conns);
    let want_refs: Vec<&str> = want.iter().map(String::as_str).collect();
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
        "nats: after a 5 s NATS outage, all nodes converged {} ms after nats-server restarted",
        took.as_millis()
    );
    wait_for_cluster(&nodes, 3).await;
    consistent_after_outage(&nodes, &mut watchers, &names, &want, &["stay-a", "dup"]).await;
    for (w, name) in watchers.iter().zip(names) {
        for uid in ["leave-b", "leave-c"] {
            assert_eq!(w.count("removed", uid), 1, "{name}: {uid} {:?}", w.events);
        }
    }
    drop(conns);
}

#[tokio::test]
async fn a_node_starts_without_nats_and_joins_when_it_comes() {
    let _serial = serial().await;
    let mut nats = Nats::not_running();
    let a = Node::start("a", &nats.url(), &NodeOptions::default());
    let mut w = Watcher::join(&a, "early", ROOM).await;
    let (status, body) = a.readyz().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["cluster"]["bus_state"], "disconnected", "{body}");
    assert!(
        a.log_text().contains("cannot reach NATS"),
        "the log says NATS is unreachable:\n{}",
        a.log_text()
    );
    assert!(
        a.log_text()
            .contains("cannot read the privacy choices from NATS"),
        "{}",
        a.log_text()
    );
    nats.spawn();
    let b = ready_once_the_bus_comes(&a, &mut w, &nats.url(), "NATS", ROOM).await;
    // The privacy store works once NATS is there, from either node.
    a.set_visible("ann.lee@example.com", false).await;
    let seen = common::eventually(Duration::from_secs(3), || async {
        let (_, body) = b
            .http("GET", "/api/users/ann.lee@example.com/privacy", None)
            .await;
        body["choice"] == false
    })
    .await;
    assert!(seen, "a choice stored on node a is seen on node b");
}

#[tokio::test]
async fn privacy_choices_are_shared_and_survive_a_restart() {
    let _serial = serial().await;
    let nats = Nats::start();
    let opts = NodeOptions::default();
    let (a, b, c) = three(&nats);
    wait_for_cluster(&[&a, &b, &c], 3).await;
    let mut zed_b = b.hotsock(user("zed", Value::Null)).await;
    zed_b.join(ROOM).await;
    wait_for_members(&[&a, &b, &c], ROOM, &["zed"], Duration::from_secs(3)).await;
    a.set_visible("zed", false).await;
    wait_for_members(&[&a, &b, &c], ROOM, &[], Duration::from_secs(3)).await;
    for n in [&a, &b, &c] {
        let (status, body) = n.http("GET", "/api/users/zed/privacy", None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choice"], false, "node {}: {body}", n.name);
    }
    // Node c restarts and loads the choice from the bucket.
    let mut c = c;
    c.terminate();
    drop(c);
    let c2 = Node::start("c", &nats.url(), &opts);
    wait_for_cluster(&[&a, &b, &c2], 3).await;
    let (status, body) = c2.http("GET", "/api/users/zed/privacy", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choice"], false, "restarted node: {body}");
    assert_eq!(c2.member_set(ROOM).await, Vec::<String>::new());
    // Forgetting the choice on the restarted node shows zed everywhere.
    let (status, body) = c2
        .http(
            "PUT",
            "/api/users/zed/privacy",
            Some(json!({"visible": null})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_for_members(&[&a, &b, &c2], ROOM, &["zed"], Duration::from_secs(3)).await;
    let (_, body) = a.http("GET", "/api/users/zed/privacy", None).await;
    assert_eq!(body["choice"], Value::Null, "{body}");
}

#[tokio::test]
async fn deployments_with_different_bus_prefixes_share_a_nats_unseen() {
    let _serial = serial().await;
    let nats = Nats::start();
    let with_prefix = |prefix: &str| NodeOptions {
        extra: vec!["--bus-prefix".into(), prefix.into()],
        ..NodeOptions::default()
    };
    let one_a = Node::start("a", &nats.url(), &with_prefix("one"));
    let one_b = Node::start("b", &nats.url(), &with_prefix("one"));
    // Same node id as one_a: in one deployment it would replace it.
    let two_a = Node::start("a", &nats.url(), &with_prefix("two"));
    wait_for_cluster(&[&one_a, &one_b], 2).await;
    wait_for_cluster(&[&two_a], 1).await;

    let mut amy = one_a.hotsock(user("amy", Value::Null)).await;
    amy.join(ROOM).await;
    let mut zed = two_a.hotsock(user("zed", Value::Null)).await;
    zed.join(ROOM).await;
    wait_for_members(&[&one_a, &one_b], ROOM, &["amy"], common::WAIT).await;
    one_a.set_visible("eve", false).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(two_a.member_set(ROOM).await, ["zed"]);
    assert_eq!(one_b.member_set(ROOM).await, ["amy"]);
    let (_, privacy) = two_a.http("GET", "/api/users/eve/privacy", None).await;
    assert_eq!(privacy["choice"], Value::Null, "{privacy}");
    let (_, privacy) = one_b.http("GET", "/api/users/eve/privacy", None).await;
    assert_eq!(privacy["choice"], false, "{privacy}");
    let (_, ready) = two_a.readyz().await;
    assert_eq!(ready["cluster"]["nodes"], 1, "{ready}");
    // A node of deployment two that starts later reads its own bucket.
    let two_b = Node::start("b", &nats.url(), &with_prefix("two"));
    wait_for_cluster(&[&two_a, &two_b], 2).await;
    let (_, privacy) = two_b.http("GET", "/api/users/eve/privacy", None).await;
    assert_eq!(privacy["choice"], Value::Null, "{privacy}");
    drop((amy, zed));
}

#[tokio::test]
async fn nodes_replicate_over_tls_with_the_ca_file() {
    let _serial = serial().await;
    let pki = TestPki::generate("nats");
    let nats = Nats::start_tls(&pki.cert, &pki.key);
    let bus = format!("tls://127.0.0.1:{}", nats.port);
    let opts = NodeOptions {
        extra: vec!["--tls-ca-file".into(), pki.ca.display().to_string()],
        ..NodeOptions::default()
    };
    let a = Node::start("a", &bus, &opts);
    let b = Node::start("b", &bus, &opts);
    wait_for_cluster(&[&a, &b], 2).await;
    let mut bob = Watcher::join(&b, "bob", ROOM).await;
    let mut alice = a.hotsock(user("alice", Value::Null)).await;
    alice.join(ROOM).await;
    bob.until("alice's join on node a", Duration::from_secs(3), |w| {
        w.count("added", "alice") == 1
    })
    .await;
    // The privacy store connects with the same roots.
    a.set_visible("zed", false).await;
    let seen = common::eventually(Duration::from_secs(3), || async {
        b.http("GET", "/api/users/zed/privacy", None).await.1["choice"] == json!(false)
    })
    .await;
    assert!(seen, "node b never saw zed's choice");
}

#[tokio::test]
async fn without_the_ca_file_the_nats_certificate_is_refused() {
    let _serial = serial().await;
    let pki = TestPki::generate("nats-untrusted");
    let nats = Nats::start_tls(&pki.cert, &pki.key);
    let bus = format!("tls://127.0.0.1:{}", nats.port);
    let node = Node::start("a", &bus, &NodeOptions::default());
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

/// Messages a client publishes while NATS is down reach the other node's
/// subscribers once it is back: all of them, once each, in publish order.
#[tokio::test]
async fn messages_published_while_nats_is_down_arrive_in_order_after() {
    let _serial = serial().await;
    let mut nats = Nats::start();
    let opts = NodeOptions::default();
    let a = Node::start("a", &nats.url(), &opts);
    let b = Node::start("b", &nats.url(), &opts);
    wait_for_cluster(&[&a, &b], 2).await;
    let mut far = Watcher::join(&b, "far", ROOM).await;
    let mut sender = a.hotsock(user("sender", Value::Null)).await;
    sender.join(ROOM).await;
    far.until("sender added", Duration::from_secs(3), |w| {
        w.count("added", "sender") == 1
    })
    .await;

    nats.kill();
    let down = common::eventually(Duration::from_secs(5), || async {
        a.readyz().await.1["cluster"]["bus_state"] == "disconnected"
    })
    .await;
    assert!(down, "node a did not notice: {:?}", a.readyz().await);
    const N: u64 = 80;
    send_numbered(&mut sender, ROOM, N).await;
    let kept = common::eventually(Duration::from_secs(3), || async {
        a.readyz().await.1["cluster"]["messages_waiting"] == N
    })
    .await;
    assert!(kept, "node a does not keep them: {:?}", a.readyz().await);

    nats.spawn();
    crate::common::cluster::scenarios::kept_messages_arrive_in_order(
        &a, &mut far, N, "nats", "NATS",
    )
    .await;
}

/// A nats-server that comes back without its storage has no privacy
/// bucket: the next save after a failed one creates it again.
#[tokio::test]
async fn the_privacy_bucket_is_recreated_when_the_server_lost_it() {
    let _serial = serial().await;
    let mut nats = Nats::start();
    let opts = NodeOptions::default();
    let a = Node::start("a", &nats.url(), &opts);
    let b = Node::start("b", &nats.url(), &opts);
    wait_for_cluster(&[&a, &b], 2).await;
    a.set_visible("zed", false).await;
    nats.kill();
    nats.wipe();
    nats.spawn();
    wait_for_cluster(&[&a, &b], 2).await;
    let saved = common::eventually(Duration::from_secs(10), || async {
        let body = json!({"visible": false});
        a.http("PUT", "/api/users/amy/privacy", Some(body)).await.0 == 200
    })
    .await;
    assert!(
        saved,
        "saves fail after the bucket was lost:\n{}",
        a.log_text()
    );
    let seen = common::eventually(Duration::from_secs(3), || async {
        b.http("GET", "/api/users/amy/privacy", None).await.1["choice"] == json!(false)
    })
    .await;
    assert!(seen, "node b never saw amy's choice");
    // A node that starts now reads the new bucket.
    let c = Node::start("c", &nats.url(), &opts);
    wait_for_cluster(&[&a, &b, &c], 3).await;
    let (_, body) = c.http("GET", "/api/users/amy/privacy", None).await;
    assert_eq!(body["choice"], false, "{body}");
}

/// A nats-server; node a on it directly, node c through a [`Proxy`]; both
/// ready. (Tests using it run multi-threaded: the proxy must keep running
/// while the test thread waits for a node's banner.)
async fn two_nodes_c_behind_a_proxy() -> (Nats, Proxy, Node, Node) {
    let nats = Nats::start();
    let proxy = Proxy::start(nats.port).await;
    let opts = NodeOptions::default();
    let a = Node::start("a", &nats.url(), &opts);
    let c = Node::start("c", &format!("nats://127.0.0.1:{}", proxy.port), &opts);
    wait_for_cluster(&[&a, &c], 2).await;
    (nats, proxy, a, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_privacy_change_made_while_a_node_was_cut_off_applies_when_it_reconnects() {
    let _serial = serial().await;
    let (_nats, proxy, a, c) = two_nodes_c_behind_a_proxy().await;
    crate::common::cluster::scenarios::privacy_change_reaches_a_node_that_was_cut_off(
        &a,
        &c,
        |cut| proxy.set_cut(cut),
        ROOM,
        "NATS",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_nats_connection_hangs_reconnects() {
    let _serial = serial().await;
    let (_nats, proxy, a, c) = two_nodes_c_behind_a_proxy().await;
    let mut watcher = Watcher::join(&c, "wat", ROOM).await;
    // Node c's bus connection (opened after the privacy store's) hangs: no
    // error, no close, nothing flows.
    proxy.freeze_latest();
    let frozen = Instant::now();
    let mut pam = a.hotsock(user("pam", Value::Null)).await;
    pam.join(ROOM).await;
    // c sees its own heartbeats stop coming back and has the client
    // reconnect (before NATS's own pings would notice).
    watcher
        .until(
            "pam's join on c after its bus reconnected",
            Duration::from_secs(10),
            |w| w.count("added", "pam") == 1,
        )
        .await;
    println!(
        "nats: a node with a hung NATS connection recovered {} ms after it froze",
        frozen.elapsed().as_millis()
    );
    wait_for_cluster(&[&a, &c], 2).await;
    let (_, ready) = c.readyz().await;
    assert!(
        ready["cluster"]["bus_recoveries"].as_u64().unwrap_or(0) >= 1,
        "{ready}"
    );
    assert!(c.log_text().contains("heartbeats stopped coming back"));
    drop(pam);
}

/// A token in the URL authenticates the bus and the privacy store, and is
/// shown nowhere; a wrong one is refused with a hint.
#[tokio::test]
async fn a_token_authenticates_and_stays_secret() {
    let _serial = serial().await;
    let nats = Nats::start_with(&["--auth", "s3cr3t-t0ken"]);
    let bus = format!("nats://s3cr3t-t0ken@127.0.0.1:{}", nats.port);
    let a = Node::start("a", &bus, &NodeOptions::default());
    let b = Node::start("b", &bus, &NodeOptions::default());
    wait_for_cluster(&[&a, &b], 2).await;
    a.set_visible("zed", false).await;
    let (_, ready) = b.readyz().await;
    let shown = format!("nats://***@127.0.0.1:{}", nats.port);
    assert_eq!(ready["cluster"]["bus_target"], shown, "{ready}");
    for n in [&a, &b] {
        assert!(!n.log_text().contains("s3cr3t"), "{}", n.log_text());
    }
    let wrong = format!("nats://wrong@127.0.0.1:{}", nats.port);
    let c = Node::start("c", &wrong, &NodeOptions::default());
    let refused = common::eventually(Duration::from_secs(5), || async {
        let (_, ready) = c.readyz().await;
        let error = ready["cluster"]["last_error"].as_str().unwrap_or_default();
        error.contains("authorization") && error.contains("token")
    })
    .await;
    assert!(refused, "{:?}\n{}", c.readyz().await, c.log_text());
}
