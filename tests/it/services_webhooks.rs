//! Webhooks over real HTTP: a local receiver checks the HMAC-SHA256
//! signature and collects the events; a failing receiver proves the
//! retries (same body, same ids); a receiver that never answers proves that
//! presence work and the other receivers are not held up.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::common::*;
use crate::webhook_support::*;

/// Collects events (name, channel, user) until `want` of them arrived.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Hit>,
    want: usize,
    ids: &mut HashSet<String>,
) -> Vec<(String, Value, Value, Value)> {
    let mut events = Vec::new();
    while events.len() < want {
        let hit = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {events:?} arrived"))
            .expect("receiver open");
        for e in verified_events(&hit) {
            let id = e["id"].as_str().expect("event id").to_string();
            assert!(ids.insert(id), "duplicate event id in {e}");
            events.push((
                e["name"].as_str().unwrap().to_string(),
                e["channel"].clone(),
                e["user_id"].clone(),
                e["data"].clone(),
            ));
        }
    }
    events
}

fn ev(name: &str, channel: Value, user: Value, data: Value) -> (String, Value, Value, Value) {
    (name.to_string(), channel, user, data)
}

#[tokio::test]
async fn presence_events_arrive_signed_and_batched() {
    let (url, mut rx, _) = receiver(0, false).await;
    let srv = TestServer::start_with(|c| {
        c.services.webhook_url = vec![url];
        c.services.webhook_secret = Some(HOOK_SECRET.into());
        c.services.webhook_batch_ms = 150;
    })
    .await;
    let mut ids = HashSet::new();
    let mut alice = srv.connect(user("alice", json!({"name": "Alice"}))).await;
    alice.join("presence.room").await;
    let got = collect(&mut rx, 3, &mut ids).await;
    assert_eq!(
        got,
        [
            ev("user_online", Value::Null, json!("alice"), Value::Null),
            ev(
                "channel_occupied",
                json!("presence.room"),
                Value::Null,
                Value::Null
            ),
            ev(
                "member_added",
                json!("presence.room"),
                json!("alice"),
                json!({"name": "Alice"})
            ),
        ],
        "one batch, in order"
    );
    // A lease is a member too; a hidden user is not.
    srv.http(
        "PUT",
        "/api/users/eve/privacy",
        Some(json!({"visible": false})),
    )
    .await;
    let mut eve = srv.connect(user("eve", json!(null))).await;
    eve.join("presence.room").await;
    srv.http(
        "POST",
        "/api/presence/refresh",
        Some(json!({"user": "bob", "ids": ["content:9"], "ttl_ms": 200})),
    )
    .await;
    let got = collect(&mut rx, 6, &mut ids).await;
    let content = json!("content:9");
    assert_eq!(
        got,
        [
            ev(
                "channel_occupied",
                content.clone(),
                Value::Null,
                Value::Null
            ),
            ev("member_added", content.clone(), json!("bob"), Value::Null),
            ev("user_online", Value::Null, json!("bob"), Value::Null),
            // The lease was not refreshed.
            ev("member_removed", content.clone(), json!("bob"), Value::Null),
            ev("channel_vacated", content, Value::Null, Value::Null),
            ev("user_offline", Value::Null, json!("bob"), Value::Null),
        ],
        "the hidden eve is in none of them"
    );
    // alice leaves; the room then holds only the hidden eve: vacated.
    alice.close().await;
    let room = json!("presence.room");
    assert_eq!(
        collect(&mut rx, 3, &mut ids).await,
        [
            ev("member_removed", room.clone(), json!("alice"), Value::Null),
            ev("channel_vacated", room, Value::Null, Value::Null),
            ev("user_offline", Value::Null, json!("alice"), Value::Null),
        ]
    );
    eve.close().await;
    let quiet = tokio::time::timeout(Duration::from_millis(400), rx.recv()).await;
    assert!(quiet.is_err(), "nothing about eve: {quiet:?}");
    srv.stop().await;
}

#[tokio::test]
async fn failures_are_retried_and_never_block_presence() {
    // One receiver fails twice before accepting; another never answers.
    let (flaky, mut flaky_rx, flaky_count) = receiver(2, false).await;
    let (stuck, mut stuck_rx, _) = receiver(0, true).await;
    let srv = TestServer::start_with(|c| {
        c.services.webhook_url = vec![flaky, stuck];
        c.services.webhook_secret = Some(HOOK_SECRET.into());
        c.services.webhook_batch_ms = 50;
        c.services.webhook_retry_ms = 100;
    })
    .await;
    let mut watcher = srv.connect(user("watch", json!(null))).await;
    watcher.join("presence.busy").await;

    // Presence work goes on at full speed while both receivers misbehave.
    // Halfway through, the first batch's first attempt has to have reached
    // the flaky receiver, so the second half is in later batches, which
    // wait behind the first one's retries (the whole loop can take less
    // than one batch window).
    let started = Instant::now();
    let mut first = Vec::new();
    for i in 0..20 {
        if i == 10 {
            let hit = tokio::time::timeout(WAIT, flaky_rx.recv())
                .await
                .expect("the first attempt in time")
                .expect("open");
            first.push(hit);
        }
        let mut c = srv.connect(user(&format!("u{i}"), json!(null))).await;
        c.join("presence.busy").await;
        assert_eq!(
            watcher.expect("hotsock.memberAdded").await["data"]["member"]["uid"],
            format!("u{i}")
        );
        c.close().await;
        watcher.expect("hotsock.memberRemoved").await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "presence slowed down: {:?}",
        started.elapsed()
    );

    // The flaky receiver gets the first batch three times: same id, same
    // body, attempts 1, 2, 3.
    while first.len() < 3 {
        let hit = tokio::time::timeout(WAIT, flaky_rx.recv())
            .await
            .expect("a retry in time")
            .expect("open");
        first.push(hit);
    }
    assert_eq!(
        first[0].header("X-Rollcall-Webhook-Id"),
        first[2].header("X-Rollcall-Webhook-Id")
    );
    assert_eq!(first[0].body, first[2].body);
    let attempts: Vec<_> = first
        .iter()
        .map(|h| h.header("X-Rollcall-Attempt").map(str::to_string))
        .collect();
    assert_eq!(
        attempts,
        [Some("1".into()), Some("2".into()), Some("3".into())]
    );
    let events = verified_events(&first[0]);
    assert_eq!(events[0]["name"], "user_online");
    // Then everything else arrives, in order, each event once.
    let mut ids: HashSet<String> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let mut added = events
        .iter()
        .filter(|e| e["name"] == "member_added")
        .count();
    let mut hits = first.len();
    while added < 21 {
        hits += 1;
        let hit = tokio::time::timeout(WAIT, flaky_rx.recv())
            .await
            .expect("more batches")
            .expect("open");
        for e in verified_events(&hit) {
            assert!(
                ids.insert(e["id"].as_str().unwrap().to_string()),
                "duplicate {e}"
            );
            if e["name"] == "member_added" {
                added += 1;
            }
        }
    }
    // Each request seen came on a connection of its own (the receiver
    // closes each).
    assert!(flaky_count.load(Ordering::SeqCst) >= hits);
    // The stuck receiver got its first request and is still waiting on it.
    assert!(stuck_rx.recv().await.is_some());
    srv.stop().await;
}

#[tokio::test]
async fn shutdown_delivers_the_last_removals_before_it_returns() {
    let (url, mut rx, _) = receiver(0, false).await;
    let srv = TestServer::start_with(|c| {
        c.services.webhook_url = vec![url];
        c.services.webhook_secret = Some(HOOK_SECRET.into());
        // Longer than the test waits: only the flush can send the batch.
        c.services.webhook_batch_ms = 30_000;
    })
    .await;
    let mut fin = srv.connect(user("fin", json!(null))).await;
    fin.join("presence.last").await;
    srv.stop().await;
    let mut ids = HashSet::new();
    let mut names: Vec<String> = Vec::new();
    while let Ok(Some(hit)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
        for e in verified_events(&hit) {
            assert!(ids.insert(e["id"].as_str().unwrap().to_string()));
            names.push(e["name"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        names,
        [
            "user_online",
            "channel_occupied",
            "member_added",
            "member_removed",
            "channel_vacated",
            "user_offline"
        ],
        "every event, delivered by the time shutdown returned"
    );
    drop(fin);
}
