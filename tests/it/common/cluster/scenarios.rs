//! Scenarios that the bus suites (`cluster_redis`, `cluster_sharded`,
//! `cluster_postgres`, `cluster_nats`) run on their nodes, so that every
//! bus is held to the same checks.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{
    Node, NodeOptions, Sc, Watcher, join_seen, send_numbered, user, wait_for_cluster,
    wait_for_members,
};
use crate::common::Client;

/// The channel both Redis suites share across their nodes a, b and c: pam
/// watches it from node b, alice (SocketCluster) is a member on node c.
pub struct CrossNodeRoom<'a> {
    pub nodes: [&'a Node; 3],
    pub pam: Watcher,
    pub alice: Sc,
}

impl<'a> CrossNodeRoom<'a> {
    /// pam joins `channel` on node b, jim (umd `{"n": 1}`) on node a and
    /// alice on node c; pam sees each join and every node lists them.
    /// Returns the room and jim's connection.
    pub async fn open(
        a: &'a Node,
        b: &'a Node,
        c: &'a Node,
        channel: &str,
    ) -> (CrossNodeRoom<'a>, Client) {
        let nodes = [a, b, c];
        let mut pam = Watcher::join(b, "pam", channel).await;
        let jim = join_seen(a, "jim", json!({"n": 1}), &mut pam, Duration::from_secs(3)).await;
        wait_for_members(&nodes, channel, &["jim", "pam"], Duration::from_secs(3)).await;
        let mut alice = Sc::connect(c, "alice").await;
        alice.subscribe(channel).await;
        pam.until("alice added", Duration::from_secs(3), |w| {
            w.count("added", "alice") == 1
        })
        .await;
        wait_for_members(
            &nodes,
            channel,
            &["alice", "jim", "pam"],
            Duration::from_secs(3),
        )
        .await;
        (CrossNodeRoom { nodes, pam, alice }, jim)
    }

    /// Dedup across nodes: jim, a member through `jim_a` (node a), joins
    /// again on node c with `umd`. Every node lists jim once and pam sees
    /// no second memberAdded; closing `jim_a` removes nothing; closing the
    /// node-c connection removes jim exactly once.
    pub async fn dedup_jim(&mut self, jim_a: Client, umd: Value) {
        let [_, _, c] = self.nodes;
        let channel = self.pam.channel.clone();
        let mut jim_c = c.hotsock(user("jim", umd)).await;
        jim_c.join(&channel).await;
        for n in self.nodes {
            let (_, room) = n
                .http("GET", &format!("/api/channels/{channel}"), None)
                .await;
            let listed = room["members"]
                .as_array()
                .map(|m| m.iter().filter(|m| m["uid"] == "jim").count())
                .unwrap_or(0);
            assert_eq!(listed, 1, "jim listed once on node {}: {room}", n.name);
        }
        let pam = &mut self.pam;
        jim_a.close().await;
        pam.pump(800).await;
        assert_eq!(pam.count("added", "jim"), 1, "{:?}", pam.events);
        assert_eq!(pam.count("removed", "jim"), 0, "{:?}", pam.events);
        let within = Duration::from_secs(3);
        wait_for_members(&self.nodes, &channel, &["alice", "jim", "pam"], within).await;
        jim_c.close().await;
        pam.until("jim removed", within, |w| w.count("removed", "jim") == 1)
            .await;
        pam.pump(300).await;
        assert_eq!(pam.count("removed", "jim"), 1, "{:?}", pam.events);
        wait_for_members(&self.nodes, &channel, &["alice", "pam"], within).await;
    }

    /// Publish order across nodes: dwight joins on node a and sends
    /// `chats` numbered client messages, node c takes `notices` HTTP
    /// publishes; pam (Hotsock, node b; within `within`) and alice
    /// (SocketCluster, node c) get both in order, per publisher. Then
    /// alice's publish on node c reaches pam. Returns dwight's connection
    /// (still a member) and how long pam took to get the first
    /// `chats + notices`.
    pub async fn publish_order(
        &mut self,
        chats: u64,
        notices: u64,
        within: Duration,
    ) -> (Client, Duration) {
        let [a, _, c] = self.nodes;
        let channel = self.pam.channel.clone();
        let (pam, alice) = (&mut self.pam, &mut self.alice);
        let mut dwight = join_seen(a, "dwight", Value::Null, pam, Duration::from_secs(3)).await;
        let t0 = Instant::now();
        send_numbered(&mut dwight, &channel, chats).await;
        for j in 0..notices {
            c.publish(&channel, "notice", json!({"j": j})).await;
        }
        pam.until("all messages on node b", within, |w| {
            w.messages.len() as u64 >= chats + notices
        })
        .await;
        let took = t0.elapsed();
        let want_chats: Vec<u64> = (0..chats).collect();
        let want_notices: Vec<u64> = (0..notices).collect();
        assert_eq!(
            pam.numbers("chat", "i"),
            want_chats,
            "node a's client messages out of order on node b"
        );
        assert_eq!(
            pam.numbers("notice", "j"),
            want_notices,
            "node c's HTTP publishes out of order on node b"
        );
        // alice sees both publishers' messages in order too (interleaved:
        // order holds per publisher).
        let mut from_a = Vec::new();
        let mut from_c = Vec::new();
        for _ in 0..chats + notices {
            let data = alice.publish_on(&channel).await;
            match (data["i"].as_u64(), data["j"].as_u64()) {
                (Some(i), None) => from_a.push(i),
                (None, Some(j)) => from_c.push(j),
                _ => panic!("unexpected message {data}"),
            }
        }
        assert_eq!(
            from_a, want_chats,
            "node a's messages out of order on node c (SC)"
        );
        assert_eq!(
            from_c, want_notices,
            "node c's publishes out of order on node c (SC)"
        );
        // And an SC publish on node c reaches Hotsock on node b.
        alice.publish(&channel, json!({"from": "sc"})).await;
        pam.until("sc message", Duration::from_secs(3), |w| {
            w.messages
                .iter()
                .any(|m| m["data"] == json!({"from": "sc"}))
        })
        .await;
        (dwight, took)
    }
}

/// Node c is SIGKILLed while it holds five members of `channel` (c0-c2 on
/// Hotsock, c3-c4 on SocketCluster) and one of two connections of "both"
/// (the other is on node b). Watchers on nodes a and b see each of the
/// five removed exactly once within 3 s (the default 2.5 s node timeout
/// plus a heartbeat) and "both" stay; node a counts node c as timed out.
/// Prints the removal times after `label` and returns them (on a, on b).
pub async fn sigkill_removal(
    a: &Node,
    b: &Node,
    c: &mut Node,
    channel: &str,
    label: &str,
) -> (Duration, Duration) {
    let mut watch_a = Watcher::join(a, "watch-a", channel).await;
    let mut watch_b = Watcher::join(b, "watch-b", channel).await;
    let mut hs = Vec::new();
    for i in 0..3 {
        let mut cl = c.hotsock(user(&format!("c{i}"), json!(null))).await;
        cl.join(channel).await;
        hs.push(cl);
    }
    let mut scs = Vec::new();
    for i in 3..5 {
        let mut sc = Sc::connect(c, &format!("c{i}")).await;
        sc.subscribe(channel).await;
        scs.push(sc);
    }
    let mut both_b = b.hotsock(user("both", json!(null))).await;
    both_b.join(channel).await;
    let mut both_c = c.hotsock(user("both", json!(null))).await;
    both_c.join(channel).await;
    let everyone = ["both", "c0", "c1", "c2", "c3", "c4", "watch-a", "watch-b"];
    wait_for_members(&[a, b, &*c], channel, &everyone, Duration::from_secs(3)).await;
    watch_a.pump(300).await;
    watch_b.pump(300).await;

    let killed = Instant::now();
    c.kill();
    let gone = ["c0", "c1", "c2", "c3", "c4"];
    let all_gone = |w: &Watcher| gone.iter().all(|u| w.count("removed", u) == 1);
    let mut removed_after = Vec::new();
    for (w, node) in [(&mut watch_a, a), (&mut watch_b, b)] {
        let what = format!("node c's members removed on {}", node.name);
        w.until(&what, Duration::from_secs(6), all_gone).await;
        removed_after.push(killed.elapsed());
    }
    let (on_a, on_b) = (removed_after[0], removed_after[1]);
    println!(
        "{label}: SIGKILLed node's members removed after {} ms (node {}) and {} ms (node {}); heartbeat 500ms, node timeout 2500ms",
        on_a.as_millis(),
        a.name,
        on_b.as_millis(),
        b.name
    );
    assert!(
        on_a <= Duration::from_millis(3000) && on_b <= Duration::from_millis(3000),
        "removal took {on_a:?} / {on_b:?}, over the 3 s bound (node timeout 2.5 s + a heartbeat)"
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
        &[a, b],
        channel,
        &["both", "watch-a", "watch-b"],
        Duration::from_secs(1),
    )
    .await;
    let (status, ready) = a.readyz().await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["cluster"]["nodes"], 2, "{ready}");
    assert_eq!(ready["cluster"]["nodes_timed_out"], 1, "{ready}");
    (on_a, on_b)
}

/// Cross-node join latency: 60 members joining `channel` on node `a` one
/// after another, each timed until `watcher` (on another node) sees it.
/// Prints p50 and p99 after `label`, asserts p99 under 500 ms, returns
/// (p50, p99) in ms.
pub async fn join_latency(
    a: &Node,
    watcher: &mut Watcher,
    channel: &str,
    label: &str,
) -> (f64, f64) {
    let mut samples = Vec::new();
    for i in 0..60 {
        let uid = format!("lat{i}");
        let mut joiner = a.hotsock(user(&uid, Value::Null)).await;
        let t0 = Instant::now();
        joiner.join(channel).await;
        watcher
            .until("latency join", Duration::from_secs(3), |w| {
                w.count("added", &uid) == 1
            })
            .await;
        samples.push(t0.elapsed());
        joiner.close().await;
    }
    let (p50, p99) = super::percentiles(&mut samples);
    println!(
        "{label}: cross-node join latency (Hotsock on node a -> memberAdded on node b): p50 {p50:.1} ms, p99 {p99:.1} ms over {} joins",
        samples.len()
    );
    assert!(p99 < 500.0, "cross-node join p99 {p99:.1} ms");
    (p50, p99)
}

/// Node c, holding two members of `channel` (SocketCluster and Hotsock), is
/// stopped with SIGTERM (no drain): a watcher on node a sees both removed
/// once, well before the node timeout (the goodbye did it), and node b
/// counts node c as left, not timed out. Prints the time after `label`.
pub async fn graceful_removal(a: &Node, b: &Node, c: &mut Node, channel: &str, label: &str) {
    let mut watch = Watcher::join(a, "watch", channel).await;
    let mut sc = Sc::connect(c, "leaver-sc").await;
    sc.subscribe(channel).await;
    let mut hs = c.hotsock(user("leaver-hs", Value::Null)).await;
    hs.join(channel).await;
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
        "{label}: graceful shutdown (SIGTERM) removed the node's members after {} ms",
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
    wait_for_members(&[a, b], channel, &["watch"], Duration::from_secs(1)).await;
}

/// After an outage of the bus: every watcher (named `names`) ends with
/// exactly `want` as members, saw none of `stayed` leave, saw no user join
/// twice without leaving, and every node counts at least two recoveries
/// (the link went down and came back).
pub async fn consistent_after_outage(
    nodes: &[&Node],
    watchers: &mut [Watcher],
    names: &[&str],
    want: &[String],
    stayed: &[&str],
) {
    for w in watchers.iter_mut() {
        w.pump(1000).await;
    }
    for (w, name) in watchers.iter().zip(names) {
        assert_eq!(w.uids(), want, "watcher {name} ended with other members");
        for uid in stayed {
            assert_eq!(w.count("removed", uid), 0, "{name}: {uid} {:?}", w.events);
        }
        for uid in want {
            let added = w.count("added", uid) as i64;
            let removed = w.count("removed", uid) as i64;
            assert!(
                added - removed <= 1,
                "{name}: {uid} joined twice without leaving: {:?}",
                w.events
            );
        }
    }
    for n in nodes {
        let (_, ready) = n.readyz().await;
        assert!(
            ready["cluster"]["bus_recoveries"].as_u64().unwrap_or(0) >= 2,
            "{ready}"
        );
    }
}

/// Node a started while its bus (`engine`, at `bus`) was down, with
/// `early` (watched by `w`) a member of `channel`; the bus has just been
/// started. Node a turns ready within 5 s, and a node b started then sees
/// `early`, whose watcher sees b's own joiner `late` added once. Returns b.
pub async fn ready_once_the_bus_comes(
    a: &Node,
    w: &mut Watcher,
    bus: &str,
    engine: &str,
    channel: &str,
) -> Node {
    let ok = crate::common::eventually(Duration::from_secs(5), || async {
        a.readyz().await.0 == 200
    })
    .await;
    assert!(
        ok,
        "ready within 5 s of {engine} starting: {:?}",
        a.readyz().await
    );
    // Its member reaches a node that starts afterwards.
    let b = Node::start("b", bus, &NodeOptions::default());
    wait_for_cluster(&[a, &b], 2).await;
    wait_for_members(&[a, &b], channel, &["early"], Duration::from_secs(3)).await;
    let mut late = Watcher::join(&b, "late", channel).await;
    w.until("late added", Duration::from_secs(3), |w| {
        w.count("added", "late") == 1
    })
    .await;
    late.pump(200).await;
    assert_eq!(late.uids(), ["early", "late"]);
    b
}

/// The bus (`engine`) has just come back after an outage during which node
/// a kept `n` numbered messages for the other nodes: `far` (on another
/// node) gets every one, once, in order, within 10 s, and node a keeps
/// none back and dropped none. Prints the time after `label`.
pub async fn kept_messages_arrive_in_order(
    a: &Node,
    far: &mut Watcher,
    n: u64,
    label: &str,
    engine: &str,
) {
    let back = Instant::now();
    far.until(
        &format!("every message after {engine} is back"),
        Duration::from_secs(10),
        |w| w.messages.len() as u64 >= n,
    )
    .await;
    let took = back.elapsed();
    far.pump(500).await;
    let got: Vec<u64> = far
        .messages
        .iter()
        .map(|m| m["data"]["i"].as_u64().expect("i"))
        .collect();
    assert_eq!(
        got,
        (0..n).collect::<Vec<_>>(),
        "lost, repeated or out of order"
    );
    println!(
        "{label}: {n} messages published during a {engine} outage reached node b {} ms after {engine} restarted",
        took.as_millis()
    );
    let (_, ready) = a.readyz().await;
    assert_eq!(ready["cluster"]["messages_waiting"], 0, "{ready}");
    assert_eq!(ready["cluster"]["messages_dropped"], 0, "{ready}");
}

/// Node c, member `eve` and watcher `wat` on it, loses its bus (`cut(true)`,
/// `engine` names it); node a hides eve meanwhile (stored in the shared
/// privacy store; c misses the bus op). When the link is back
/// (`cut(false)`), c re-reads the choices: eve leaves on c, once.
pub async fn privacy_change_reaches_a_node_that_was_cut_off(
    a: &Node,
    c: &Node,
    cut: impl Fn(bool),
    channel: &str,
    engine: &str,
) {
    let wait = crate::common::WAIT;
    let mut eve = c.hotsock(user("eve", Value::Null)).await;
    eve.join(channel).await;
    let mut watcher = Watcher::join(c, "wat", channel).await;
    wait_for_members(&[a, c], channel, &["eve", "wat"], wait).await;

    cut(true);
    let cut_off = crate::common::eventually(Duration::from_secs(5), || async {
        c.readyz().await.0 == 503
    })
    .await;
    assert!(cut_off, "node c never noticed it lost {engine}");
    a.set_visible("eve", false).await;
    watcher.pump(300).await;
    assert_eq!(watcher.count("removed", "eve"), 0, "c cannot know yet");

    cut(false);
    watcher
        .until(
            "eve hidden on c after it reconnects",
            Duration::from_secs(8),
            |w| w.count("removed", "eve") == 1,
        )
        .await;
    let (status, body) = c.http("GET", "/api/users/eve/privacy", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["visible"], false, "{body}");
    wait_for_members(&[a, c], channel, &["wat"], wait).await;
    drop(eve);
}
