//! The cluster on the PostgreSQL bus (`--bus postgres://…`): three nodes on
//! a private PostgreSQL server run the scenarios the Redis suites run
//! (cross-node room, dedup, publish order, join latency, SIGKILL removal),
//! frames over NOTIFY's 8,000-byte limit cross through the frames table, a
//! PostgreSQL outage in the middle of changes and messages converges with
//! nothing lost, privacy choices live in the database, and two deployments
//! with different `--bus-prefix` share the server unseen.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;
use crate::common::cluster::scenarios::{
    CrossNodeRoom, graceful_removal, join_latency, sigkill_removal,
};
use crate::common::cluster::*;
use crate::common::postgres::Postgres;

const ROOM: &str = "presence.room";

#[tokio::test]
async fn members_dedup_order_and_latency_on_postgres() {
    let _serial = serial().await;
    let pg = Postgres::start();
    let (a, b, c) = start_three(&pg.url(), &NodeOptions::default());
    wait_for_cluster(&[&a, &b, &c], 3).await;
    let (_, ready) = a.readyz().await;
    assert_eq!(ready["cluster"]["bus"], "postgres", "{ready}");

    let (mut room, jim_a) = CrossNodeRoom::open(&a, &b, &c, ROOM).await;
    room.dedup_jim(jim_a, json!({"n": 1})).await;
    let (_dwight, _) = room.publish_order(50, 50, Duration::from_secs(5)).await;
    let CrossNodeRoom { mut pam, .. } = room;

    // A message over NOTIFY's payload limit, published on node a.
    let big = "x".repeat(20_000);
    a.publish(ROOM, "big", json!({ "text": big })).await;
    pam.until("the large message", Duration::from_secs(3), |w| {
        w.messages
            .iter()
            .any(|m| m["data"]["text"].as_str() == Some(big.as_str()))
    })
    .await;

    // Cross-node join latency: a member joining on node a, seen on node b.
    join_latency(&a, &mut pam, ROOM, "cluster (postgres)").await;
}

#[tokio::test]
async fn a_killed_node_is_removed_exactly_once_on_postgres() {
    let _serial = serial().await;
    let pg = Postgres::start();
    let (a, b, mut c) = start_three(&pg.url(), &NodeOptions::default());
    wait_for_cluster(&[&a, &b, &c], 3).await;
    sigkill_removal(&a, &b, &mut c, ROOM, "cluster (postgres)").await;
}

#[tokio::test]
async fn a_node_shutting_down_removes_its_members_at_once_on_postgres() {
    let _serial = serial().await;
    let pg = Postgres::start();
    let (a, b, mut c) = start_three(&pg.url(), &NodeOptions::default());
    wait_for_cluster(&[&a, &b, &c], 3).await;
    graceful_removal(&a, &b, &mut c, ROOM, "cluster (postgres)").await;
}

#[tokio::test]
async fn a_postgres_outage_converges_and_keeps_the_messages() {
    let _serial = serial().await;
    let mut pg = Postgres::start();
    let opts = NodeOptions::default();
    let a = Node::start("a", &pg.url(), &opts);
    let b = Node::start("b", &pg.url(), &opts);
    wait_for_cluster(&[&a, &b], 2).await;
    let mut far = Watcher::join(&b, "far", ROOM).await;
    let mut stay = a.hotsock(user("stay", Value::Null)).await;
    stay.join(ROOM).await;
    let leaver = a.hotsock(user("leaver", Value::Null)).await;
    let mut leaver = leaver;
    leaver.join(ROOM).await;
    let mut sender = a.hotsock(user("sender", Value::Null)).await;
    sender.join(ROOM).await;
    far.until("everyone added", Duration::from_secs(3), |w| {
        ["stay", "leaver", "sender"]
            .iter()
            .all(|u| w.count("added", u) == 1)
    })
    .await;

    pg.stop();
    let down = common::eventually(Duration::from_secs(5), || async {
        a.readyz().await.1["cluster"]["bus_state"] == "disconnected"
    })
    .await;
    assert!(down, "node a did not notice: {:?}", a.readyz().await);
    // Changes and messages while the nodes cannot talk.
    leaver.close().await;
    let mut newcomer = a.hotsock(user("newcomer", Value::Null)).await;
    newcomer.join(ROOM).await;
    const N: u64 = 40;
    send_numbered(&mut sender, ROOM, N).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    far.pump(100).await;
    assert!(far.messages.is_empty(), "nothing crosses while it is down");
    assert_eq!(far.count("removed", "stay"), 0, "no one is timed out");

    pg.resume();
    let back = Instant::now();
    far.until("every message", Duration::from_secs(15), |w| {
        w.messages.len() as u64 >= N
    })
    .await;
    wait_for_members(
        &[&a, &b],
        ROOM,
        &["far", "newcomer", "sender", "stay"],
        Duration::from_secs(10),
    )
    .await;
    println!(
        "cluster (postgres): after a PostgreSQL outage, the nodes converged {} ms after it restarted",
        back.elapsed().as_millis()
    );
    far.pump(500).await;
    let got: Vec<u64> = far
        .messages
        .iter()
        .filter_map(|m| m["data"]["i"].as_u64())
        .collect();
    assert_eq!(
        got,
        (0..N).collect::<Vec<_>>(),
        "lost, repeated or out of order"
    );
    assert_eq!(far.count("removed", "leaver"), 1, "{:?}", far.events);
    assert_eq!(far.count("added", "newcomer"), 1, "{:?}", far.events);
    assert_eq!(far.count("removed", "stay"), 0, "{:?}", far.events);
    drop((stay, newcomer, sender));
}

#[tokio::test]
async fn privacy_lives_in_postgres_and_prefixes_keep_deployments_apart() {
    let _serial = serial().await;
    let pg = Postgres::start();
    let with_prefix = |prefix: &str| NodeOptions {
        extra: vec!["--bus-prefix".into(), prefix.into()],
        ..NodeOptions::default()
    };
    let mut one_a = Node::start("a", &pg.url(), &with_prefix("one"));
    let one_b = Node::start("b", &pg.url(), &with_prefix("one"));
    let two_a = Node::start("a", &pg.url(), &with_prefix("two"));
    wait_for_cluster(&[&one_a, &one_b], 2).await;
    wait_for_cluster(&[&two_a], 1).await;

    let mut amy = one_a.hotsock(user("amy", Value::Null)).await;
    amy.join(ROOM).await;
    let mut zed = two_a.hotsock(user("zed", Value::Null)).await;
    zed.join(ROOM).await;
    wait_for_members(&[&one_a, &one_b], ROOM, &["amy"], Duration::from_secs(3)).await;
    one_a.set_visible("eve", false).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(two_a.member_set(ROOM).await, ["zed"]);
    let choice = |body: Value| body["choice"].clone();
    let (_, privacy) = one_b.http("GET", "/api/users/eve/privacy", None).await;
    assert_eq!(choice(privacy), json!(false));
    let (_, privacy) = two_a.http("GET", "/api/users/eve/privacy", None).await;
    assert_eq!(choice(privacy), Value::Null);

    // Kept in the database: a restarted node reads it back.
    drop(amy);
    one_a.kill();
    let one_a = Node::start("a", &pg.url(), &with_prefix("one"));
    wait_for_cluster(&[&one_a, &one_b], 2).await;
    let (_, privacy) = one_a.http("GET", "/api/users/eve/privacy", None).await;
    assert_eq!(choice(privacy), json!(false));
    drop(zed);
}

#[tokio::test]
async fn tls_with_the_ca_file_and_no_password_shown() {
    let _serial = serial().await;
    let pki = crate::tls_support::TestPki::generate("postgres");
    let pg = Postgres::start_tls(&pki.cert, &pki.key);
    let bus = format!(
        "postgres://rollcall:pw-s3cret@127.0.0.1:{}/postgres?sslmode=require",
        pg.port
    );
    let ca = pki.ca.display().to_string();
    let trusting = NodeOptions {
        extra: vec!["--tls-ca-file".into(), ca],
        ..NodeOptions::default()
    };
    let a = Node::start("a", &bus, &trusting);
    let b = Node::start("b", &bus, &trusting);
    wait_for_cluster(&[&a, &b], 2).await;
    let mut amy = a.hotsock(user("amy", Value::Null)).await;
    amy.join(ROOM).await;
    wait_for_members(&[&a, &b], ROOM, &["amy"], Duration::from_secs(3)).await;

    // Without the CA the server's certificate is refused, and said so.
    let c = Node::start("c", &bus, &NodeOptions::default());
    let (status, ready) = c.readyz().await;
    assert_eq!(status, 503, "{ready}");
    let said = common::eventually(Duration::from_secs(5), || async {
        c.readyz().await.1.to_string().contains("certificate")
    })
    .await;
    assert!(said, "{:?}", c.readyz().await);
    for node in [&a, &b, &c] {
        let (_, ready) = node.readyz().await;
        assert!(!ready.to_string().contains("pw-s3cret"), "{ready}");
        let log = std::fs::read_to_string(&node.log).unwrap_or_default();
        assert!(
            !log.contains("pw-s3cret"),
            "the password is in {}'s log",
            node.name
        );
    }
    drop(amy);
}
