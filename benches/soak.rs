//! Soak: a release `rollcall serve` process under mixed, hostile load on
//! every front end for a bounded time, with the server's RSS and file
//! descriptors read from /proc every 10 s; at the end they must be flat.
//!
//! ```sh
//! cargo bench --bench soak             # 10 minutes
//! cargo bench --bench soak -- 120      # 2 minutes
//! ```
//!
//! At once, until the time is up, on 127.0.0.1:
//! - members: 5 long-lived clients of each protocol in four channels,
//!   each publishing 5 messages/s and reading everything;
//! - churn: 4 clients of each protocol that connect, subscribe, publish
//!   and leave, over and over;
//! - server publishes: 25 x 4 KiB messages/s over the HTTP API into one
//!   channel;
//! - slow consumers: clients of Hotsock, Socket.IO and SocketCluster
//!   with a 4 KiB receive buffer that subscribe to that channel and never
//!   read, each held 30 s;
//! - malformed input: bad frames on every endpoint, garbage that is not
//!   HTTP, and half-sent request heads (slowloris).
//!
//! Flat means: once every client is gone, the server holds the file
//! descriptors it held before the load (give or take 4) and no members;
//! and its RSS at the end of the load is at most 10% + 8 MiB above its RSS
//! a quarter of the way in (after allocator warm-up). The process exits
//! with 1 when either does not hold.
#![allow(clippy::print_stdout)]

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::process::ServerProcess;
use common::protocols::{Peer, Proto};
use common::{API_KEY, http, sign};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const CHANNELS: usize = 4;
/// The channel the server publishes into and slow consumers join.
const BUSY: &str = "soak-room-0";

#[derive(Default)]
struct Counters {
    deliveries: AtomicU64,
    churn_cycles: AtomicU64,
    server_publishes: AtomicU64,
    slow_clients: AtomicU64,
    malformed: AtomicU64,
    failures: AtomicU64,
}

fn room(i: usize) -> String {
    format!("soak-room-{}", i % CHANNELS)
}

fn main() {
    let seconds: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(600);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let flat = runtime.block_on(soak(Duration::from_secs(seconds)));
    std::process::exit(if flat { 0 } else { 1 });
}

async fn soak(length: Duration) -> bool {
    let mut server = ServerProcess::start(
        "soak",
        &[
            "--open-channels",
            "soak-*",
            "--max-connections-per-address",
            "100000",
            "--outbox-bytes",
            "262144",
        ],
    );
    let addr = server.addr;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds_before = server.fds();
    let rss_start = server.rss_bytes();
    println!(
        "soak: {} s against pid {} on {addr}; before: {fds_before} fds, RSS {:.1} MiB",
        length.as_secs(),
        server.pid(),
        mib(rss_start)
    );
    let counters = Arc::new(Counters::default());
    let deadline = Instant::now() + length;
    let mut tasks = Vec::new();
    for proto in Proto::ALL {
        for i in 0..5 {
            tasks.push(tokio::spawn(member(
                addr,
                proto,
                i,
                deadline,
                counters.clone(),
            )));
        }
        for i in 0..4 {
            tasks.push(tokio::spawn(churn(
                addr,
                proto,
                i,
                deadline,
                counters.clone(),
            )));
        }
    }
    tasks.push(tokio::spawn(server_publisher(
        addr,
        deadline,
        counters.clone(),
    )));
    for i in 0..3 {
        tasks.push(tokio::spawn(slow_consumers(
            addr,
            i,
            deadline,
            counters.clone(),
        )));
    }
    tasks.push(tokio::spawn(malformed(addr, deadline, counters.clone())));

    let started = Instant::now();
    let mut rss_warm = None;
    let mut rss_peak = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(10).min(deadline - Instant::now())).await;
        let rss = server.rss_bytes();
        rss_peak = rss_peak.max(rss);
        if rss_warm.is_none() && started.elapsed() >= length / 4 {
            rss_warm = Some(rss);
        }
        println!(
            "{:>4} s  RSS {:>6.1} MiB  fds {:>5}  CPU {:>6.1} s  deliveries {:>9}  churn {:>6}  \
             server publishes {:>6}  slow {:>4}  malformed {:>6}  failures {}",
            started.elapsed().as_secs(),
            mib(rss),
            server.fds(),
            server.cpu_seconds(),
            counters.deliveries.load(Ordering::Relaxed),
            counters.churn_cycles.load(Ordering::Relaxed),
            counters.server_publishes.load(Ordering::Relaxed),
            counters.slow_clients.load(Ordering::Relaxed),
            counters.malformed.load(Ordering::Relaxed),
            counters.failures.load(Ordering::Relaxed),
        );
    }
    let rss_end = server.rss_bytes();
    for t in tasks {
        let _ = t.await;
    }
    // Every client is gone; the server lets go of their sockets (the
    // slow consumers' within the 10 s TCP user timeout).
    let mut fds_after = server.fds();
    let settle = Instant::now() + Duration::from_secs(30);
    while fds_after > fds_before && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(500)).await;
        fds_after = server.fds();
    }
    let (_, channels) = http(addr, "GET", "/api/channels", None, Some(API_KEY)).await;
    let members: u64 = channels["channels"]
        .as_array()
        .map(|all| all.iter().filter_map(|c| c["members"].as_u64()).sum())
        .unwrap_or(0);
    let rss_warm = rss_warm.unwrap_or(rss_end);
    let rss_limit = rss_warm + rss_warm / 10 + 8 * 1024 * 1024;
    let fds_flat = fds_after <= fds_before + 4;
    let rss_flat = rss_end <= rss_limit;
    let alive = server.alive();
    println!(
        "end: fds {fds_before} -> {fds_after} ({}); RSS start {:.1}, at 1/4 {:.1}, peak {:.1}, \
         end {:.1} MiB, limit {:.1} ({}); members left {members}; server alive: {alive}; \
         client-side failures {}",
        if fds_flat { "flat" } else { "NOT flat" },
        mib(rss_start),
        mib(rss_warm),
        mib(rss_peak),
        mib(rss_end),
        mib(rss_limit),
        if rss_flat { "flat" } else { "NOT flat" },
        counters.failures.load(Ordering::Relaxed),
    );
    if !alive {
        println!("{}", server.status());
    }
    fds_flat && rss_flat && members == 0 && alive
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A long-lived member: publishes 5 messages/s into its channel and
/// reads everything; reconnects if its connection fails.
async fn member(addr: SocketAddr, proto: Proto, i: usize, until: Instant, n: Arc<Counters>) {
    let channel = room(i);
    while Instant::now() < until {
        let counters = n.clone();
        let channel = channel.clone();
        let life = tokio::spawn(async move {
            let uid = format!("member-{}-{i}", proto.name());
            let mut peer = Peer::connect_to(addr, proto, Some(json!({ "uid": uid })))
                .await
                .expect("connects");
            subscribe(&mut peer, &channel).await;
            let mut k = 0u64;
            while Instant::now() < until {
                peer.send_publish(&channel, &format!("m{k}")).await;
                k += 1;
                count_deliveries_until(
                    &mut peer,
                    Instant::now() + Duration::from_millis(200),
                    &counters,
                )
                .await;
            }
            peer.close().await;
        });
        if life.await.is_err() {
            n.failures.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Reads (and counts) what arrives until `at`.
async fn count_deliveries_until(peer: &mut Peer, at: Instant, counters: &Counters) {
    while let Some(_frame) = peer.next_within(at - Instant::now()).await {
        counters.deliveries.fetch_add(1, Ordering::Relaxed);
    }
}

/// Asks to join `channel` (SocketCluster: and `presence>channel`); the
/// answers are read with the channel's traffic.
async fn subscribe(peer: &mut Peer, channel: &str) {
    peer.send_subscribe(channel).await;
    if peer.proto == Proto::Sc {
        peer.send_subscribe(&format!("presence>{channel}")).await;
    }
}

/// Connects, subscribes, publishes once, reads briefly and leaves, over
/// and over, each time as a new user.
async fn churn(addr: SocketAddr, proto: Proto, i: usize, until: Instant, n: Arc<Counters>) {
    let mut cycle = 0u64;
    while Instant::now() < until {
        cycle += 1;
        let channel = room(i + cycle as usize);
        let uid = format!("churn-{}-{i}-{cycle}", proto.name());
        let counters = n.clone();
        let once = tokio::spawn(async move {
            let mut peer = Peer::connect_to(addr, proto, Some(json!({ "uid": uid })))
                .await
                .expect("connects");
            subscribe(&mut peer, &channel).await;
            peer.send_publish(&channel, "hello").await;
            count_deliveries_until(
                &mut peer,
                Instant::now() + Duration::from_millis(300),
                &counters,
            )
            .await;
            peer.close().await;
        });
        match once.await {
            Ok(()) => n.churn_cycles.fetch_add(1, Ordering::Relaxed),
            Err(_) => n.failures.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// 25 x 4 KiB messages/s into the busy channel over the HTTP API.
async fn server_publisher(addr: SocketAddr, until: Instant, n: Arc<Counters>) {
    let pad = "p".repeat(4096);
    let mut tick = tokio::time::interval(Duration::from_millis(40));
    while Instant::now() < until {
        tick.tick().await;
        let body = json!({"channel": BUSY, "event": "bulk", "data": {"pad": pad}});
        let (status, _) = http(addr, "POST", "/api/publish", Some(body), Some(API_KEY)).await;
        if status == 202 {
            n.server_publishes.fetch_add(1, Ordering::Relaxed);
        } else {
            n.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A WebSocket to `path` over a socket with a 4 KiB receive buffer.
async fn small_buffer_ws(addr: SocketAddr, path: &str) -> Option<Ws> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.set_recv_buffer_size(4096).ok()?;
    let stream = socket.connect(addr).await.ok()?;
    let url = format!("ws://{addr}{path}");
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::client_async(url, stream),
    )
    .await
    .ok()?
    .ok()?;
    Some(ws)
}

/// Reads text frames until one contains `needle` (within 5 s).
async fn read_until(ws: &mut Ws, needle: &str) -> Option<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.ok()?? {
            Ok(Message::Text(t)) if t.contains(needle) => return Some(()),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// A client of `proto` in the busy channel that will never read again.
async fn subscribed_non_reader(addr: SocketAddr, proto: Proto, uid: &str) -> Option<Ws> {
    let token = sign(&mut json!({ "uid": uid }));
    let text = |s: String| Message::Text(s.into());
    match proto {
        Proto::Hotsock => {
            let mut ws = small_buffer_ws(addr, &format!("/hotsock?token={token}")).await?;
            read_until(&mut ws, "hotsock.connected").await?;
            let sub = json!({"event": "hotsock.subscribe", "channel": BUSY});
            ws.send(text(sub.to_string())).await.ok()?;
            Some(ws)
        }
        Proto::SocketIo => {
            let path = format!("/socket.io/?EIO=4&transport=websocket&tokenType=jwt&token={token}");
            let mut ws = small_buffer_ws(addr, &path).await?;
            read_until(&mut ws, "0{").await?;
            ws.send(text("40/chat,".into())).await.ok()?;
            read_until(&mut ws, "40/chat").await?;
            let sub = json!(["SUBSCRIBE_CHANNEL", {"channel": {"type": "topic", "_id": BUSY}}]);
            ws.send(text(format!("42/chat,{sub}"))).await.ok()?;
            Some(ws)
        }
        // sgc writes through the same transport as Hotsock and SocketCluster.
        Proto::Sgc => None,
        Proto::Sc => {
            let mut ws = small_buffer_ws(addr, "/socketcluster/").await?;
            let hs = json!({"event": "#handshake", "data": {"authToken": token}, "cid": 1});
            ws.send(text(hs.to_string())).await.ok()?;
            read_until(&mut ws, "\"rid\":1").await?;
            let sub = json!({"event": "#subscribe", "data": {"channel": BUSY}, "cid": 2});
            ws.send(text(sub.to_string())).await.ok()?;
            Some(ws)
        }
    }
}

/// Slow consumers, one after another: each subscribes to the busy channel,
/// reads nothing for 30 s and goes away.
async fn slow_consumers(addr: SocketAddr, i: usize, until: Instant, n: Arc<Counters>) {
    let protos = [Proto::Hotsock, Proto::SocketIo, Proto::Sc];
    let mut k = 0usize;
    while Instant::now() + Duration::from_secs(30) < until {
        let proto = protos[(i + k) % protos.len()];
        k += 1;
        let uid = format!("slow-{}-{i}-{k}", proto.name());
        match subscribed_non_reader(addr, proto, &uid).await {
            Some(ws) => {
                n.slow_clients.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(ws);
            }
            None => {
                n.failures.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Bad input on every endpoint, five times a second: frames each
/// protocol must refuse, bytes that are not HTTP, half-sent request heads.
async fn malformed(addr: SocketAddr, until: Instant, n: Arc<Counters>) {
    let token = sign(&mut json!({"uid": "malformed"}));
    let endpoints = [
        format!("/hotsock?token={token}"),
        "/socket.io/?EIO=4&transport=websocket".to_string(),
        "/socketcluster/".to_string(),
        "/sgc".to_string(),
    ];
    let garbage: [&str; 6] = [
        "{",
        "42/chat,[\"SUBSCRIBE_CHANNEL\",",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        "{\"event\":\"#subscribe\",\"data\":{\"channel\":\"\\u0000\\u001b\"},\"cid\":1}",
        "\u{202e}not json at all",
        "4",
    ];
    let mut k = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while Instant::now() < until {
        tick.tick().await;
        k += 1;
        let path = &endpoints[k % endpoints.len()];
        let Ok(mut request) = format!("ws://{addr}{path}").into_client_request() else {
            continue;
        };
        if path == "/sgc" {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static("presence.esegece.com"),
            );
        }
        let connect = tokio_tungstenite::connect_async(request);
        if let Ok(Ok((mut ws, _))) = tokio::time::timeout(Duration::from_secs(5), connect).await {
            for g in garbage {
                if ws.send(Message::Text(g.into())).await.is_err() {
                    break;
                }
            }
            let _ = ws.send(Message::Binary(vec![0xff; 64].into())).await;
            // Read whatever comes back, until the server closes or 300 ms.
            let end = Instant::now() + Duration::from_millis(300);
            while let Ok(Some(Ok(_))) = tokio::time::timeout_at(end, ws.next()).await {}
        }
        // Not HTTP at all, then half a request head that never ends.
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let _ = s.write_all(b"\x16\x03\x01\x00\xa5garbage\r\n\r\n").await;
        }
        if k.is_multiple_of(10)
            && let Ok(mut s) = TcpStream::connect(addr).await
        {
            let _ = s.write_all(b"GET /hotsock HTTP/1.1\r\nHost: x\r\n").await;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(12)).await;
                drop(s);
            });
        }
        n.malformed.fetch_add(1, Ordering::Relaxed);
    }
}
