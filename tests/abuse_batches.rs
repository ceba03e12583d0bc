//! SocketCluster batches (a JSON array of packets in one frame) count one
//! request per packet against `--max-messages-per-second`: a batch cannot
//! smuggle thousands of publishes or subscribe/unsubscribe cycles past the
//! rate limit.
#![cfg(all(feature = "sc", feature = "hotsock"))]

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn every_packet_of_a_batch_counts_against_the_rate() {
    let srv = TestServer::start_with(|c| {
        c.open_channels = vec!["flood".into()];
        c.max_messages_per_second = 50;
    })
    .await;
    let mut reader = srv.connect(anonymous()).await;
    reader.join("flood").await;
    let url = format!("ws://{}/socketcluster/", srv.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    ws.send(Message::Text(
        json!({"event": "#handshake", "data": {}, "cid": 1})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    // Subscribers may publish on "flood": subscribe, then one frame of 400
    // publishes.
    ws.send(Message::Text(
        json!({"event": "#subscribe", "data": {"channel": "flood"}, "cid": 1})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    let batch: Vec<Value> = (0..400)
        .map(
            |i| json!({"event": "#publish", "data": {"channel": "flood", "data": i}, "cid": i + 2}),
        )
        .collect();
    ws.send(Message::Text(Value::Array(batch).to_string().into()))
        .await
        .expect("send");
    let (mut ok, mut limited) = (0, 0);
    let deadline = tokio::time::Instant::now() + WAIT;
    while ok + limited < 400 {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("every request answered in time")
            .expect("open")
            .expect("frame");
        let Message::Text(text) = msg else { continue };
        for reply in replies(&text) {
            match reply["rid"].as_i64() {
                Some(rid) if rid >= 2 => {
                    if reply["error"]["name"] == "RateLimitError" {
                        limited += 1;
                    } else {
                        assert!(reply.get("error").is_none(), "{reply}");
                        ok += 1;
                    }
                }
                _ => {}
            }
        }
    }
    assert!(
        ok <= 60,
        "{ok} publishes of one batch got through a limit of 50/s"
    );
    assert!(limited >= 340, "only {limited} refused");
    // The Hotsock reader got exactly the ones acknowledged.
    let mut received = 0;
    while let Ok(frame) = tokio::time::timeout(Duration::from_millis(300), reader.next()).await {
        assert_eq!(frame["channel"], "flood", "{frame}");
        received += 1;
    }
    assert_eq!(received, ok);

    // Keeping it up for two seconds is closed as abuse (1008).
    let mut closed = None;
    let give_up = tokio::time::Instant::now() + Duration::from_secs(6);
    for round in 0.. {
        if tokio::time::Instant::now() > give_up {
            break;
        }
        let batch: Vec<Value> = (0..200)
            .map(|i| json!({"event": "#subscribe", "data": {"channel": "flood"}, "cid": 10_000 + round * 200 + i}))
            .collect();
        if ws
            .send(Message::Text(Value::Array(batch).to_string().into()))
            .await
            .is_err()
        {
            break;
        }
        while let Ok(Some(Ok(msg))) =
            tokio::time::timeout(Duration::from_millis(50), ws.next()).await
        {
            if let Message::Close(Some(frame)) = msg {
                closed = Some(u16::from(frame.code));
            }
        }
        if closed.is_some() {
            break;
        }
    }
    assert_eq!(
        closed,
        Some(1008),
        "sustained batches end in a policy close"
    );
    srv.stop().await;
}

/// The replies in one text frame (a packet or an array of them).
fn replies(text: &str) -> Vec<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(list)) => list,
        Ok(v) => vec![v],
        Err(_) => Vec::new(),
    }
}
