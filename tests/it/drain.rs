//! Graceful drain on SIGTERM: `/readyz` answers 503 at once while the node
//! keeps serving its clients (and takes new ones) for `--drain-grace`; then
//! its clients are closed a few at a time over `--drain-spread`, each with
//! 1001 (a Socket.IO WebSocket client: its transport cut, so that it
//! reconnects), each member removed once; then the process exits.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::process::ServerProcess;
use crate::common::protocols::{Peer, Proto};
use crate::common::{Ending, http};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_closes_clients_spread_out() {
    let mut server = ServerProcess::start(
        "drain",
        &[
            "--open-channels",
            "*",
            "--drain-grace",
            "1s",
            "--drain-spread",
            "1500ms",
        ],
    );
    let mut clients = Vec::new();
    for i in 0..12 {
        let proto = [Proto::Hotsock, Proto::Sc, Proto::SocketIo][i % 3];
        let claims = json!({"uid": format!("u{i}"), "username": format!("u{i}")});
        let mut peer = Peer::connect_to(server.addr, proto, Some(claims))
            .await
            .expect("connects");
        peer.subscribe("presence.room").await.expect("joins");
        clients.push(peer);
    }
    let (status, _) = http(server.addr, "GET", "/readyz", None, None).await;
    assert_eq!(status, 200);

    let term_at = Instant::now();
    server.send_term();
    // 503 at once, saying why.
    let mut draining = Value::Null;
    while term_at.elapsed() < Duration::from_millis(500) {
        let (status, body) = http(server.addr, "GET", "/readyz", None, None).await;
        if status == 503 {
            draining = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(draining["status"], "draining", "{draining}");
    // Still serving during the grace: a new client connects and a publish
    // reaches the members.
    let mut late = Peer::connect_to(server.addr, Proto::Hotsock, Some(json!({"uid": "late"})))
        .await
        .expect("connects during the grace");
    late.subscribe("presence.room").await.expect("joins");
    let (status, _) = server
        .http(
            "POST",
            "/api/publish",
            Some(json!({"channel": "presence.room", "event": "still", "data": 1})),
        )
        .await;
    assert_eq!(status, 202);

    // Then closed with 1001, spread over the spread, not before the grace.
    // Each watched at once, so each close is timed when it happens. A
    // Socket.IO client's transport is cut, without the namespace
    // DISCONNECT that would keep socket.io-client from reconnecting.
    let closed_at: Vec<(Proto, Duration)> =
        futures_util::future::join_all(clients.iter_mut().map(|peer| async move {
            let (ending, seen) = peer.ending_within(Duration::from_secs(6)).await;
            match peer.proto {
                Proto::SocketIo => assert!(
                    !seen.iter().any(|f| f.starts_with("41")),
                    "{}: told not to reconnect: {seen:?}",
                    peer.label()
                ),
                _ => assert!(matches!(ending, Ending::Close(1001, _)), "{ending:?}"),
            }
            (peer.proto, term_at.elapsed())
        }))
        .await;
    // Socket.IO clients too are spread (each in a slot of its own), not
    // all closed at the end.
    let socketio: Vec<Duration> = closed_at
        .iter()
        .filter(|(proto, _)| *proto == Proto::SocketIo)
        .map(|(_, at)| *at)
        .collect();
    let spread = socketio.iter().max().copied().unwrap_or_default()
        - socketio.iter().min().copied().unwrap_or_default();
    assert!(
        spread >= Duration::from_millis(200),
        "Socket.IO clients closed together: {socketio:?}"
    );
    let closed_at: Vec<Duration> = closed_at.into_iter().map(|(_, at)| at).collect();
    let first = closed_at.iter().min().copied().unwrap_or_default();
    let last = closed_at.iter().max().copied().unwrap_or_default();
    assert!(
        first >= Duration::from_millis(900),
        "closed during the grace: {first:?}"
    );
    assert!(
        last - first >= Duration::from_millis(700),
        "not spread: first {first:?}, last {last:?}"
    );
    server.wait_exit();
    drop(late);
}

/// A real socket.io-client 4 on WebSocket is told of a drain by its
/// transport closing ("transport close", after which it reconnects), not
/// by a namespace DISCONNECT ("io server disconnect", after which it does
/// not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_lets_socketio_clients_reconnect() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let mut server = ServerProcess::start(
        "drain-socketio",
        &[
            "--open-channels",
            "*",
            "--drain-grace",
            "200ms",
            "--drain-spread",
            "500ms",
        ],
    );
    let mut claims = json!({"uid": "sio"});
    let token = crate::common::sign(&mut claims);
    let url = format!("http://{}", server.addr);
    let mut client = tokio::process::Command::new("node")
        .arg("conformance/node/drain-client.js")
        .args(["--url", &url, "--token", &token])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let stdout = client.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    assert_eq!(next_line(&mut lines).await, "subscribed");
    server.send_term();
    assert_eq!(
        next_line(&mut lines).await,
        "disconnect transport close",
        "told not to reconnect"
    );
    server.wait_exit();
}

/// The next line the Node client prints (within 20 s).
async fn next_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> String {
    tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the client answers within 20 s")
        .expect("stdout")
        .unwrap_or_default()
}
