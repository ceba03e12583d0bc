//! Socket.IO events of one socket are handled in the order they were sent:
//! one sender's messages reach every subscriber in that order, and every
//! request gets its reply, also when the next one follows at once.
//! (socketioxide, which served these clients before, ran each event's
//! handler in a task of its own, and reordered them.)

use std::time::Duration;

use serde_json::json;

use crate::common::protocols::{Peer, Proto};
use crate::common::*;

const SUBSCRIBERS: usize = 30;
const MESSAGES: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_senders_messages_arrive_in_order_at_every_subscriber() {
    let srv = TestServer::start_with(|c| {
        c.channels.open_channels = vec!["order-*".into()];
        c.limits.max_messages_per_second = 10_000;
    })
    .await;
    let topic = "order-1";
    let mut subscribers = Vec::new();
    for i in 0..SUBSCRIBERS {
        let claims = json!({"sub": format!("s{i}"), "displayname": format!("S{i}")});
        let mut p = Peer::connect(&srv, Proto::SocketIo, Some(claims))
            .await
            .expect("connected");
        p.subscribe(topic).await.expect("subscribed");
        subscribers.push(p);
    }
    let mut sender = Peer::connect(&srv, Proto::SocketIo, Some(json!({"sub": "sender"})))
        .await
        .expect("connected");
    sender.subscribe(topic).await.expect("subscribed");
    // As fast as the socket takes them, without waiting for anything.
    for seq in 0..MESSAGES {
        sender.send_publish(topic, &seq.to_string()).await;
    }
    let (mut reorderings, mut lost) = (0, 0);
    for (i, sub) in subscribers.iter_mut().enumerate() {
        let mut next = 0usize;
        while next < MESSAGES {
            let f = sub
                .next_within(Duration::from_secs(20))
                .await
                .unwrap_or_else(|| panic!("subscriber {i} got {next} of {MESSAGES}"));
            if f["event"] != "MESSAGE_SENT" {
                continue;
            }
            let seq: usize = f["data"]["content"]["bodyText"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .expect("a sequence number");
            if seq < next {
                reorderings += 1;
            } else {
                lost += seq - next;
                next = seq + 1;
            }
        }
    }
    assert_eq!(reorderings, 0, "deliveries out of the sender's order");
    assert_eq!(lost, 0, "messages lost");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_its_reply_round_after_round() {
    let srv = TestServer::start_with(|c| c.channels.open_channels = vec!["round-*".into()]).await;
    for round in 0..200 {
        let topic = format!("round-{}", round % 7);
        let claims = json!({"sub": format!("u{round}")});
        let mut p = Peer::connect(&srv, Proto::SocketIo, Some(claims))
            .await
            .expect("connected");
        // Subscribe and publish back to back: the publish is handled after
        // the subscribe, so it is accepted and both are answered.
        p.send_subscribe(&topic).await;
        p.send_publish(&topic, "hello").await;
        p.read_subscribe(&topic)
            .await
            .unwrap_or_else(|r| panic!("round {round}: subscribe refused: {r:?}"));
        p.read_publish(&topic, "hello")
            .await
            .unwrap_or_else(|r| panic!("round {round}: publish refused: {r:?}"));
        p.close().await;
    }
    srv.stop().await;
}
