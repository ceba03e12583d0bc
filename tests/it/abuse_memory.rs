//! The memory probes against a `rollcall serve` process, with the
//! server's RSS and file descriptors read from /proc before and after:
//! SocketCluster sockets that ask for huge or control-character channel
//! names (before: 10 sockets x 100 such names took RSS from 9.6 to 67.7
//! MB), and batches of subscribe/unsubscribe cycles on a channel with
//! members (before: 12 frames made 390 MB of member events).

use std::time::Duration;

use crate::common::process::ServerProcess;
use crate::common::{WAIT, sign};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A handshaken SocketCluster socket logged in as `user`.
async fn sc(server: &ServerProcess, user: &str) -> Ws {
    let url = format!("ws://{}/socketcluster/", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    let token = sign(&mut json!({ "username": user }));
    let hs = json!({"event": "#handshake", "data": {"authToken": token}, "cid": 1});
    ws.send(Message::Text(hs.to_string().into()))
        .await
        .expect("send");
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a handshake reply in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = msg
            && t.contains("\"rid\":1")
        {
            return ws;
        }
    }
}

/// Reads (answering pings) for `within`, or until the server closes.
async fn read_for(ws: &mut Ws, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.next()).await {
        match msg {
            Message::Text(t) if t.as_str() == "#1" => {
                let _ = ws.send(Message::Text("#2".into())).await;
            }
            Message::Close(_) => return,
            _ => {}
        }
    }
}

/// Waits until the server holds no more than `fds` file descriptors.
async fn fds_back_to(server: &ServerProcess, fds: usize) -> usize {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = server.fds();
        if now <= fds || tokio::time::Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_and_membership_churn_leave_memory_and_fds_flat() {
    let server = ServerProcess::start(
        "abuse-memory",
        &["--frontends", "sc", "--open-channels", "*"],
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fds_before = server.fds();
    let rss_before = server.rss_bytes();

    // 10 sockets x 100 channel names of 25-120 KB, or with NUL / ESC /
    // whitespace: every one refused, nothing kept.
    let mut sockets = Vec::new();
    for s in 0..10 {
        let mut ws = sc(&server, &format!("namer{s}")).await;
        // One frame per name: a batch of them would exceed the frame cap
        // (128 KiB) and be refused whole, testing nothing about names.
        for i in 0..100 {
            let name = match i % 4 {
                0 => format!("{}{s}{i}", "n".repeat(25_000 + i * 950)),
                1 => format!("nul\u{0}{s}-{i}"),
                2 => format!("esc\u{1b}[31m{s}-{i}"),
                _ => format!("two words {s} {i}"),
            };
            let sub = json!({"event": "#subscribe", "data": {"channel": name}, "cid": 10 + i});
            ws.send(Message::Text(sub.to_string().into()))
                .await
                .expect("a frame under the cap is accepted");
        }
        read_for(&mut ws, Duration::from_millis(300)).await;
        sockets.push(ws);
    }
    let (status, channels) = server.http("GET", "/api/channels", None).await;
    assert_eq!(status, 200, "{channels}");
    assert!(
        channels.to_string().len() < 10_000,
        "refused names were kept: {} bytes of channel list",
        channels.to_string().len()
    );

    // 50 members in one channel, and a socket sending batches of
    // subscribe/unsubscribe cycles on it.
    let mut members = Vec::new();
    for m in 0..50 {
        let mut ws = sc(&server, &format!("member{m}")).await;
        for (cid, ch) in [(2, "busy"), (3, "presence>busy")] {
            let sub = json!({"event": "#subscribe", "data": {"channel": ch}, "cid": cid});
            ws.send(Message::Text(sub.to_string().into()))
                .await
                .expect("send");
        }
        members.push(ws);
    }
    let mut churner = sc(&server, "churner").await;
    for round in 0..12 {
        let batch: Vec<Value> = (0..1000)
            .map(|i| match i % 2 {
                0 => json!({"event": "#subscribe", "data": {"channel": "busy"}, "cid": round * 1000 + i + 10}),
                _ => json!({"event": "#unsubscribe", "data": "busy", "cid": round * 1000 + i + 10}),
            })
            .collect();
        if churner
            .send(Message::Text(Value::Array(batch).to_string().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    // The members keep reading what reaches them.
    let reads = members
        .iter_mut()
        .map(|ws| read_for(ws, Duration::from_secs(2)));
    futures_util::future::join_all(reads).await;
    let rss_peak = server.rss_bytes();

    drop(churner);
    drop(members);
    drop(sockets);
    let fds_after = fds_back_to(&server, fds_before).await;
    let rss_after = server.rss_bytes();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    eprintln!(
        "server RSS {:.1} MiB before, {:.1} under load, {:.1} after; fds {fds_before} before, \
         {fds_after} after",
        mib(rss_before),
        mib(rss_peak),
        mib(rss_after)
    );
    assert!(
        rss_peak < rss_before + 32 * 1024 * 1024,
        "RSS grew from {:.1} to {:.1} MiB",
        mib(rss_before),
        mib(rss_peak)
    );
    assert!(
        fds_after <= fds_before,
        "fds {fds_before} before, {fds_after} after"
    );
}
