//! Load generator: starts a release `rollcall serve` as a child process and
//! measures it over real sockets on 127.0.0.1. Server CPU time and RSS are
//! read from /proc/<pid>, because this generator shares the machine's cores.
//!
//! ```sh
//! cargo bench --bench load                      # all scenarios
//! cargo bench --bench load -- fanout            # one scenario
//! ```
//!
//! Scenarios:
//! - `fanout`: 1,000 Hotsock subscribers in one channel; server publishes
//!   over the HTTP API at a fixed rate; deliveries/s, latency p50/p99, and
//!   server CPU per delivered message.
//! - `idle`: 15,000 idle Hotsock connections; server RSS per connection.
//! - `storm`: 1,000 clients join one presence channel at once; time until
//!   every client's member list has all 1,000 members (`--outbox-bytes`
//!   64 MiB: each client receives about 15 MB of member lists).
//! - `sio-fanout`: the `fanout` scenario with 1,000 Socket.IO (Engine.IO 4,
//!   WebSocket, `/chat`) subscribers of one topic, against rollcall and
//!   then against Node socket.io 4.8 (rooms per topic), with the ratios;
//!   also counts lost and reordered deliveries per subscriber.
//! - `sio-burst`: as `sio-fanout`, 500 publishes back to back.
//! - `sio-idle`: 5,000 idle Socket.IO connections on rollcall, then on
//!   socket.io 4.8: server RSS per connection and the ratio.
//! - `sio-10k`: 10,000 Socket.IO sockets watching one topic
//!   (`"announce": false`, so no N² party events), 10 msg/s for 5 s:
//!   every one must get every message, in order.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "bench-secret";
const API_KEY: &str = "bench-key";

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// A Node peer: `conformance/node/<script>` (its modules pinned in
    /// conformance/package-lock.json; `cd conformance && npm ci`).
    fn start_node(script: &str) -> Server {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("conformance/node")
            .join(script);
        let child = Command::new("node")
            .arg(path)
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node (install Node.js, then: cd conformance && npm ci)");
        Server::from_banner(child)
    }

    fn start(extra: &[&str]) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--jwt-secret",
                SECRET,
                "--api-key",
                API_KEY,
                // Every client of the generator connects from 127.0.0.1.
                "--max-connections-per-address",
                "100000",
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start rollcall");
        Server::from_banner(child)
    }

    /// Reads the first line, "… listening on ADDR", and keeps draining.
    fn from_banner(mut child: Child) -> Server {
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("banner");
        // Keep reading so the server never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected banner {line:?}"));
        Server { child, addr }
    }

    /// (user+system CPU seconds, RSS bytes) of the server process.
    fn usage(&self) -> (f64, u64) {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // After the command name: state is field 0; utime 11, stime 12 (0-based).
        let ticks: f64 = fields
            .get(11)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            + fields
                .get(12)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss_kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        (ticks / 100.0, rss_kb * 1024)
    }
}

impl Server {
    /// Waits (at most 120 s) until the server uses under 5 % of a core
    /// over 250 ms.
    async fn wait_until_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let (mut before, _) = self.usage();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let (now, _) = self.usage();
            if now - before < 0.0125 {
                return;
            }
            before = now;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token(uid: &str) -> String {
    let claims = json!({
        "exp": SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600,
        "scope": "connect",
        "uid": uid,
        "channels": {"*": {"subscribe": true}},
    });
    rollcall::auth::mint_hs256(SECRET, &claims).expect("mint")
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn connect(addr: SocketAddr, uid: &str) -> Ws {
    let url = format!("ws://{addr}/hotsock?token={}", token(uid));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    next_json(&mut ws).await; // hotsock.connected
    ws
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("json"),
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

async fn subscribe(ws: &mut Ws, channel: &str) -> Value {
    ws.send(Message::Text(
        json!({"event":"hotsock.subscribe","channel":channel})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    next_json(ws).await
}

async fn publish(stream: &mut TcpStream, addr: SocketAddr, body: &str) {
    let req = format!(
        "POST /api/publish HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    // Read one response (headers + small JSON body).
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "server closed the API connection");
        got.extend_from_slice(&buf[..n]);
        if let Some(pos) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..pos]);
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if got.len() >= pos + 4 + len {
                return;
            }
        }
    }
}

/// A Socket.IO client (Engine.IO 4 over WebSocket, namespace `/chat`)
/// subscribed to `channel`.
async fn sio_subscriber(addr: SocketAddr, uid: String, channel: &str, announce: bool) -> Ws {
    let url = format!(
        "ws://{addr}/socket.io/?EIO=4&transport=websocket&tokenType=jwt&token={}",
        token(&uid)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    sio_until(&mut ws, |t| t.starts_with('0')).await;
    ws.send(Message::Text("40/chat,".into()))
        .await
        .expect("send");
    sio_until(&mut ws, |t| t.starts_with("40/chat")).await;
    let subscribe = json!(["SUBSCRIBE_CHANNEL",
        {"channel": {"type": "topic", "_id": channel}, "announce": announce}]);
    ws.send(Message::Text(format!("42/chat,{subscribe}").into()))
        .await
        .expect("send");
    sio_until(&mut ws, |t| t.contains("CHANNEL_SUBSCRIBED")).await;
    ws
}

/// Reads (answering Engine.IO pings) until a text frame matches.
async fn sio_until(ws: &mut Ws, done: impl Fn(&str) -> bool) -> String {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                ws.send(Message::Text("3".into())).await.expect("pong");
            }
            Some(Ok(Message::Text(t))) if done(t.as_str()) => return t.to_string(),
            Some(Ok(_)) => continue,
            other => panic!("Socket.IO connection ended: {other:?}"),
        }
    }
}

/// What one Socket.IO subscriber saw: latencies, and messages missing or
/// out of order (by the publisher's sequence number `i`).
#[derive(Default)]
struct SioSeen {
    latencies: Vec<u64>,
    lost: u64,
    reordered: u64,
}

async fn sio_receive(mut ws: Ws, total: u64, delivered: Arc<AtomicU64>) -> SioSeen {
    let mut seen = SioSeen::default();
    let mut next = 0u64;
    loop {
        let text = sio_until(&mut ws, |t| t.starts_with("42/chat,")).await;
        let Ok(Value::Array(event)) = serde_json::from_str::<Value>(&text["42/chat,".len()..])
        else {
            continue;
        };
        let content = &event[1]["content"];
        if event[1]["category"] == "done" {
            break;
        }
        let (Some(sent), Some(i)) = (content["t"].as_u64(), content["i"].as_u64()) else {
            continue;
        };
        seen.latencies.push(micros_now().saturating_sub(sent));
        delivered.fetch_add(1, Ordering::Relaxed);
        match i.cmp(&next) {
            std::cmp::Ordering::Equal => next += 1,
            std::cmp::Ordering::Greater => {
                seen.lost += i - next;
                next = i + 1;
            }
            std::cmp::Ordering::Less => seen.reordered += 1,
        }
    }
    seen.lost += total.saturating_sub(next);
    seen
}

/// One server's figures in a Socket.IO fan-out.
struct SioFigures {
    deliveries_per_s: f64,
    cpu_us_per_delivery: f64,
    p99_ms: f64,
    rss_kib_per_connection: f64,
}

/// How a Socket.IO fan-out publishes: `messages` HTTP publishes, at `rate`
/// per second, or back to back (a burst) when None.
#[derive(Clone, Copy)]
struct Load {
    messages: u64,
    rate: Option<u64>,
}

impl Load {
    fn describe(self) -> String {
        match self.rate {
            Some(rate) => format!("{rate} msg/s for {} s", self.messages / rate.max(1)),
            None => format!("{} messages back to back", self.messages),
        }
    }
}

/// The Socket.IO fan-out against rollcall and against the Node socket.io
/// 4.8 peer (`conformance/node/socketio-reference-server.js`), back to back,
/// and their ratios.
async fn sio_side_by_side(scenario: &'static str, subscribers: usize, load: Load) {
    // Each server is stopped (dropped) before the next one starts.
    let run = |name: String, server: Server| async move {
        sio_fanout(&name, &server, subscribers, true, load).await
    };
    let ours = run(
        format!("{scenario} rollcall"),
        Server::start(&["--max-connections-per-user", "100000"]),
    )
    .await;
    let node = run(
        format!("{scenario} socket.io 4.8"),
        Server::start_node("socketio-reference-server.js"),
    )
    .await;
    println!(
        "{scenario} rollcall / socket.io 4.8: deliveries/s {:.2}x, server CPU per delivery {:.2}x, p99 {:.2}x, RSS per connection {:.2}x",
        ours.deliveries_per_s / node.deliveries_per_s,
        ours.cpu_us_per_delivery / node.cpu_us_per_delivery,
        ours.p99_ms / node.p99_ms,
        ours.rss_kib_per_connection / node.rss_kib_per_connection,
    );
}

/// Idle Socket.IO connections (each watching one topic, answering pings)
/// held on rollcall and on the Node socket.io 4.8 peer: server RSS per
/// connection, and the ratio.
async fn sio_idle_side_by_side(connections: usize) {
    let mut per_connection = Vec::new();
    for (name, server) in [
        (
            "rollcall",
            Server::start(&["--max-connections-per-user", "100000"]),
        ),
        (
            "socket.io 4.8",
            Server::start_node("socketio-reference-server.js"),
        ),
    ] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (_, rss_empty) = server.usage();
        let mut held = Vec::with_capacity(connections);
        for batch in (0..connections).collect::<Vec<_>>().chunks(200) {
            let joined = futures_util::future::join_all(
                batch
                    .iter()
                    .map(|i| sio_subscriber(server.addr, format!("idle{i}"), "idle", false)),
            )
            .await;
            held.extend(joined.into_iter().map(|ws| {
                let delivered = Arc::new(AtomicU64::new(0));
                tokio::spawn(sio_receive(ws, 0, delivered))
            }));
        }
        server.wait_until_idle().await;
        let (_, rss) = server.usage();
        let kib = rss.saturating_sub(rss_empty) as f64 / 1024.0 / connections as f64;
        println!(
            "sio-idle {name}: {connections} idle Socket.IO connections, server RSS {:.1} MiB -> {:.1} MiB: {kib:.1} KiB per connection",
            rss_empty as f64 / 1048576.0,
            rss as f64 / 1048576.0,
        );
        per_connection.push(kib);
        for task in held {
            task.abort();
        }
    }
    println!(
        "sio-idle rollcall / socket.io 4.8: RSS per connection {:.2}x",
        per_connection[0] / per_connection[1]
    );
}

/// Socket.IO fan-out: `subscribers` in one topic (parties, or watchers
/// when not `announce`), HTTP publishes as `load` says, after 100 warm-up
/// publishes (the Node peer's JIT, every server's buffers).
async fn sio_fanout(
    name: &str,
    server: &Server,
    subscribers: usize,
    announce: bool,
    load: Load,
) -> SioFigures {
    let (_, rss_empty) = server.usage();
    let addr = server.addr;
    let delivered = Arc::new(AtomicU64::new(0));
    let total = load.messages;
    let connect_start = Instant::now();
    let mut tasks = Vec::with_capacity(subscribers);
    // Connected in batches, so 10,000 handshakes take seconds, not minutes;
    // each reads (and answers Engine.IO pings) from the moment it is in.
    for batch in (0..subscribers).collect::<Vec<_>>().chunks(200) {
        let joined = futures_util::future::join_all(
            batch
                .iter()
                .map(|i| sio_subscriber(addr, format!("sio{i}"), "bench", announce)),
        )
        .await;
        tasks.extend(
            joined
                .into_iter()
                .map(|ws| tokio::spawn(sio_receive(ws, total, delivered.clone()))),
        );
    }
    // Every subscriber's join is a party event for every earlier one
    // (N²/2 in all): measure the fan-out once they are delivered.
    server.wait_until_idle().await;
    let connect_secs = connect_start.elapsed().as_secs_f64();
    let (_, rss_held) = server.usage();
    let mut api = TcpStream::connect(addr).await.expect("api");
    let interval = load
        .rate
        .map(|rate| Duration::from_secs_f64(1.0 / rate as f64));
    let mut next = Instant::now();
    for _ in 0..100 {
        publish(
            &mut api,
            addr,
            r#"{"channel":"bench","event":"warm","data":{}}"#,
        )
        .await;
        if let Some(interval) = interval {
            next += interval;
            tokio::time::sleep_until(next.into()).await;
        }
    }
    server.wait_until_idle().await;
    let (cpu0, _) = server.usage();
    let start = Instant::now();
    let mut next = Instant::now();
    for i in 0..total {
        let body =
            json!({"channel":"bench","event":"tick","data":{"t":micros_now(),"i":i}}).to_string();
        publish(&mut api, addr, &body).await;
        if let Some(interval) = interval {
            next += interval;
            tokio::time::sleep_until(next.into()).await;
        }
    }
    publish(
        &mut api,
        addr,
        r#"{"channel":"bench","event":"done","data":{}}"#,
    )
    .await;
    let mut all = Vec::new();
    let (mut lost, mut reordered) = (0, 0);
    for t in tasks {
        let seen = t.await.expect("subscriber");
        all.extend(seen.latencies);
        lost += seen.lost;
        reordered += seen.reordered;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (cpu1, _) = server.usage();
    all.sort_unstable();
    let n = delivered.load(Ordering::Relaxed);
    let figures = SioFigures {
        deliveries_per_s: n as f64 / elapsed,
        cpu_us_per_delivery: (cpu1 - cpu0) * 1e6 / n.max(1) as f64,
        p99_ms: percentile(&all, 0.99) as f64 / 1000.0,
        rss_kib_per_connection: rss_held.saturating_sub(rss_empty) as f64
            / 1024.0
            / subscribers as f64,
    };
    println!(
        "{name}: {subscribers} Socket.IO {} (connected in {connect_secs:.1} s, server RSS {:.1} KiB per connection), {}: {n}/{} delivered, {lost} lost, {reordered} reordered, {:.0} deliveries/s, latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms, server CPU {:.3} us per delivery",
        if announce { "parties" } else { "watchers" },
        figures.rss_kib_per_connection,
        load.describe(),
        total * subscribers as u64,
        figures.deliveries_per_s,
        percentile(&all, 0.50) as f64 / 1000.0,
        figures.p99_ms,
        all.last().copied().unwrap_or(0) as f64 / 1000.0,
        figures.cpu_us_per_delivery,
    );
    figures
}

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn fanout(subscribers: usize, rate: u64, seconds: u64) {
    let server = Server::start(&["--max-connections-per-user", "100000"]);
    let addr = server.addr;
    let delivered = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..subscribers {
        let mut ws = connect(addr, &format!("sub{i}")).await;
        subscribe(&mut ws, "bench").await;
        let delivered = delivered.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                    if v["event"] == "done" {
                        break;
                    }
                    if let Some(sent) = v["data"]["t"].as_u64() {
                        latencies.push(micros_now().saturating_sub(sent));
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut api = TcpStream::connect(addr).await.expect("api");
    let (cpu0, _) = server.usage();
    let start = Instant::now();
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut next = Instant::now();
    for _ in 0..total {
        let body = json!({"channel":"bench","event":"tick","data":{"t":micros_now()}}).to_string();
        publish(&mut api, addr, &body).await;
        next += interval;
        tokio::time::sleep_until(next.into()).await;
    }
    publish(&mut api, addr, r#"{"channel":"bench","event":"done"}"#).await;
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("subscriber"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (cpu1, _) = server.usage();
    all.sort_unstable();
    let n = delivered.load(Ordering::Relaxed);
    let expected = total * subscribers as u64;
    println!(
        "fanout: {subscribers} subscribers, {rate} msg/s for {seconds} s: {n}/{expected} delivered, {:.0} deliveries/s, latency p50 {:.2} ms p99 {:.2} ms, server CPU {:.3} us per delivery",
        n as f64 / elapsed,
        percentile(&all, 0.50) as f64 / 1000.0,
        percentile(&all, 0.99) as f64 / 1000.0,
        (cpu1 - cpu0) * 1e6 / n.max(1) as f64,
    );
}

async fn idle(connections: usize) {
    let server = Server::start(&["--max-connections-per-user", "100000"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, rss0) = server.usage();
    let mut held = Vec::with_capacity(connections);
    for i in 0..connections {
        held.push(connect(server.addr, &format!("idle{i}")).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, rss1) = server.usage();
    println!(
        "idle: {connections} connections, server RSS {:.1} MiB -> {:.1} MiB, {:.2} KB per connection",
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0,
        (rss1.saturating_sub(rss0)) as f64 / connections as f64 / 1024.0
    );
    drop(held);
}

async fn storm(clients: usize) {
    // Every member event carries the full member list (Hotsock), so each
    // client receives O(n^2) bytes in all; the outbound queue must hold the
    // backlog of a client that reads slower than the storm arrives.
    let server = Server::start(&[
        "--max-connections-per-user",
        "100000",
        "--outbox-bytes",
        "67108864",
    ]);
    let addr = server.addr;
    let mut conns = Vec::with_capacity(clients);
    for i in 0..clients {
        conns.push(connect(addr, &format!("m{i:04}")).await);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut ws in conns {
        tasks.push(tokio::spawn(async move {
            let first = subscribe(&mut ws, "presence.storm").await;
            let joined_last = first["data"]["members"]
                .as_array()
                .is_some_and(|m| m.len() >= clients);
            // Every member event carries the full list; counting `"uid":`
            // in the last list is enough, and much cheaper than parsing the
            // megabytes of JSON each client receives.
            if !joined_last {
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) => {
                            let members = t.split("\"members\":").nth(1).unwrap_or("");
                            if members.matches("\"uid\":").count() >= clients {
                                break;
                            }
                        }
                        Some(Ok(_)) => continue,
                        other => panic!("connection ended: {other:?}"),
                    }
                }
            }
            (Instant::now(), ws)
        }));
    }
    let mut last = start;
    let mut keep = Vec::new();
    for t in tasks {
        let (at, ws) = t.await.expect("joiner");
        last = last.max(at);
        keep.push(ws);
    }
    println!(
        "storm: {clients} clients joined one presence channel; every member list complete after {:.0} ms",
        (last - start).as_secs_f64() * 1000.0
    );
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| filter.is_empty() || filter.iter().any(|f| f == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if wants("fanout") {
            fanout(1000, 100, 5).await;
        }
        if wants("idle") {
            idle(15_000).await;
        }
        if wants("storm") {
            storm(1000).await;
        }
        if wants("sio-fanout") {
            let load = Load {
                messages: 500,
                rate: Some(100),
            };
            sio_side_by_side("sio-fanout", 1000, load).await;
        }
        if wants("sio-burst") {
            let load = Load {
                messages: 500,
                rate: None,
            };
            sio_side_by_side("sio-burst", 1000, load).await;
        }
        if wants("sio-idle") {
            sio_idle_side_by_side(5000).await;
        }
        if wants("sio-10k") {
            let server = Server::start(&["--max-connections-per-user", "100000"]);
            let load = Load {
                messages: 50,
                rate: Some(10),
            };
            sio_fanout("sio-10k", &server, 10_000, false, load).await;
        }
    });
}
