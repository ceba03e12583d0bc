//! `--write-delay`: broadcasts wait up to the delay so that several share
//! one write; a client's replies are never held, and nothing is reordered
//! or lost on the way.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

/// Long enough that a held frame cannot be mistaken for a prompt one on a
/// loaded machine.
const DELAY: Duration = Duration::from_secs(3);

#[tokio::test]
async fn broadcasts_are_held_together_in_order_and_replies_are_not() {
    let srv = TestServer::start_with(|c| {
        c.channels.open_channels = vec!["*".into()];
        c.limits.write_delay = DELAY;
    })
    .await;
    let mut ann = srv.connect(user("ann", json!(null))).await;
    let started = Instant::now();
    ann.join("room").await;
    assert!(
        started.elapsed() < DELAY - Duration::from_secs(1),
        "the subscribe reply was held with the broadcasts ({:?})",
        started.elapsed()
    );

    for i in 0..3 {
        srv.publish("room", "chat", json!({"i": i})).await;
    }
    // Held: none of them is written before the delay is over...
    ann.expect_none(1000).await;
    // ...then all of them, in the order they were published.
    for i in 0..3 {
        let frame = ann.next_within(DELAY * 2).await;
        assert_eq!(frame["event"], "chat", "{frame}");
        assert_eq!(frame["data"]["i"], i, "{frame}");
    }

    // A reply queued while a broadcast is held ends the wait for both,
    // and the broadcast, queued first, still comes first.
    srv.publish("room", "chat", json!({"i": 3})).await;
    let asked = Instant::now();
    ann.send(json!({"event": "hotsock.subscribe", "channel": "lobby"}))
        .await;
    let held = ann.next_within(DELAY * 2).await;
    assert_eq!(held["data"]["i"], 3, "{held}");
    let reply = ann.next_within(DELAY * 2).await;
    assert_eq!(reply["event"], "hotsock.subscribed", "{reply}");
    assert!(
        asked.elapsed() < DELAY - Duration::from_secs(1),
        "the reply waited out the delay ({:?})",
        asked.elapsed()
    );
    srv.stop().await;
}

/// Only a busy connection's broadcasts are held: one that has been written
/// nothing for four delays gets its next broadcast at once.
#[tokio::test]
async fn a_quiet_connections_broadcast_is_not_held() {
    const DELAY: Duration = Duration::from_secs(2);
    let srv = TestServer::start_with(|c| {
        c.channels.open_channels = vec!["*".into()];
        c.limits.write_delay = DELAY;
    })
    .await;
    let mut ann = srv.connect(user("ann", json!(null))).await;
    ann.join("room").await;
    // The subscribe reply was the last write: busy for four delays.
    tokio::time::sleep(DELAY * 4 + Duration::from_millis(500)).await;
    let published = Instant::now();
    srv.publish("room", "chat", json!({"i": 0})).await;
    let frame = ann.next_within(DELAY - Duration::from_millis(500)).await;
    assert_eq!(frame["event"], "chat", "{frame}");
    assert!(published.elapsed() < DELAY, "{:?}", published.elapsed());
    srv.stop().await;
}
