//! A Socket.IO client that stops reading is bounded by `--outbox-bytes`
//! like every other front end's: it is dropped from its channels as soon
//! as its queue overflows, not after the write timeout, and the others in
//! the channel keep getting their messages. At shutdown a Socket.IO
//! client gets a close frame like every other front end's.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::protocols::{Peer, Proto};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socketio_client_that_stops_reading_is_dropped_at_its_outbox_limit() {
    let srv = TestServer::start_with(|c| {
        c.channels.open_channels = vec!["slow".into()];
        c.limits.outbox_bytes = 256 * 1024;
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
    let client_addr = stream.local_addr().expect("local address");
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
    // Its connection is gone too, not held until it reads again: the
    // kernel aborts it (TCP_USER_TIMEOUT) when nothing is taken for 10 s.
    let server_addr = srv.addr;
    let gone = eventually(Duration::from_secs(40), || async move {
        !server_side_open(server_addr, client_addr)
    })
    .await;
    eprintln!("server side closed after {:?}", started.elapsed());
    assert!(
        gone,
        "the server still holds the non-reading client's connection"
    );
    drop(ws);
    srv.stop().await;
}

/// True while the server's end of the TCP connection `server` <-> `client`
/// is open (ESTABLISHED or CLOSE_WAIT in /proc/net/tcp).
fn server_side_open(server: std::net::SocketAddr, client: std::net::SocketAddr) -> bool {
    let hex = |a: std::net::SocketAddr| match a {
        std::net::SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        std::net::SocketAddr::V6(_) => unreachable!("the test runs on 127.0.0.1"),
    };
    let (local, remote) = (hex(server), hex(client));
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 3
            && fields[1] == local
            && fields[2] == remote
            && matches!(fields[3], "01" | "08")
    })
}

/// Every front end's client sees the server say goodbye at shutdown with
/// a WebSocket close frame, 1001 (going away). A Socket.IO client first
/// gets the `connection.closing` error event, then the Engine.IO close
/// packet (socket.io-client reports "transport close" and reconnects; a
/// namespace DISCONNECT would tell it not to).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_front_end_gets_a_close_frame_at_shutdown() {
    let srv = TestServer::start_open().await;
    let mut peers = Vec::new();
    for proto in Proto::ALL {
        let claims = json!({"uid": format!("{}-user", proto.name())});
        let mut peer = Peer::connect(&srv, proto, Some(claims))
            .await
            .expect("connects");
        peer.subscribe("room").await.expect("subscribes");
        peers.push(peer);
    }
    let stopping = tokio::spawn(srv.stop());
    for peer in &mut peers {
        let (ending, seen) = peer.ending_within(WAIT).await;
        let Ending::Close(code, reason) = ending else {
            panic!(
                "{:?}: the connection dropped without a close frame",
                peer.proto
            );
        };
        if peer.proto == Proto::SocketIo {
            let closing = seen.iter().position(|t| t.contains("connection.closing"));
            let engine_close = seen.iter().position(|t| t == "1");
            assert!(
                closing.is_some() && closing < engine_close,
                "the error event, then the Engine.IO close: {seen:?}"
            );
            assert!(
                !seen.iter().any(|t| t.starts_with("41")),
                "no namespace DISCONNECT, which would stop the client reconnecting: {seen:?}"
            );
        }
        assert_eq!(
            code, 1001,
            "{:?}: close code (reason {reason:?})",
            peer.proto
        );
    }
    stopping.await.expect("shutdown completes");
}
