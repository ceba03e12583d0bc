//! A Socket.IO client that stops reading is bounded by `--outbox-bytes`
//! like every other front end's: it is dropped from its channels as soon
//! as its queue overflows, not after the write timeout, and the others in
//! the channel keep getting their messages.
#![cfg(all(feature = "socketio", feature = "hotsock"))]

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socketio_client_that_stops_reading_is_dropped_at_its_outbox_limit() {
    let srv = TestServer::start_with(|c| {
        c.open_channels = vec!["slow".into()];
        c.outbox_bytes = 256 * 1024;
    })
    .await;
    // A small receive buffer, so the kernel holds little on its behalf.
    let token = sign(&mut json!({"sub": "sloth", "displayname": "Sloth"}));
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&tokenType=jwt&token={token}",
        srv.addr
    );
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(srv.addr).await.expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("upgrade");
    let read_until = async |ws: &mut tokio_tungstenite::WebSocketStream<_>, needle: &str| {
        loop {
            let msg = tokio::time::timeout(WAIT, ws.next())
                .await
                .expect("a frame in time")
                .expect("open")
                .expect("frame");
            if let Message::Text(t) = msg {
                if t.as_str() == "2" {
                    let _ = ws.send(Message::Text("3".into())).await;
                } else if t.contains(needle) {
                    return;
                }
            }
        }
    };
    read_until(&mut ws, "0{").await;
    ws.send(Message::Text("40/chat,".into()))
        .await
        .expect("send");
    read_until(&mut ws, "40/chat").await;
    let sub = r#"42/chat,["SUBSCRIBE_CHANNEL",{"channel":{"type":"topic","_id":"slow"}}]"#;
    ws.send(Message::Text(sub.into())).await.expect("send");
    read_until(&mut ws, "CHANNEL_SUBSCRIBED").await;
    // A reader that keeps up.
    let mut fast = srv.connect(anonymous()).await;
    fast.join("slow").await;
    srv.wait_for_members("slow", &["sloth"]).await;

    // From here on the Socket.IO client reads nothing.
    let started = Instant::now();
    let payload = "x".repeat(8 * 1024);
    let mut dropped_after = None;
    for i in 0..4000 {
        srv.publish("slow", "bulk", json!({"i": i, "pad": payload}))
            .await;
        let msg = fast.next().await;
        assert_eq!(msg["data"]["i"], i, "the fast reader is not held up");
        if i % 50 == 49 && srv.presence().members("slow").is_empty() {
            dropped_after = Some(started.elapsed());
            break;
        }
    }
    let dropped_after = dropped_after.expect("the non-reading client was never dropped");
    eprintln!("non-reading Socket.IO client dropped after {dropped_after:?}");
    assert!(
        dropped_after < Duration::from_secs(8),
        "dropped only after {dropped_after:?}: the 10 s write timeout, not the outbox limit"
    );
    drop(ws);
    srv.stop().await;
}
