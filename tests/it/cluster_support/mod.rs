//! Cluster test harness: a private `redis-server` on a free port and
//! `rollcall serve` processes pointed at it, with Hotsock and SocketCluster
//! clients over real sockets. Every child process is killed when its guard
//! drops, so a failing test leaves nothing running.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{self, API_KEY, Client, SECRET, WAIT};

pub mod scenarios;

/// Cluster tests start several processes; running two such tests at once
/// on a 2-core machine would make their timing measurements meaningless.
/// (An async mutex: a failed test releases it without poisoning it.)
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Holds the cluster-test lock for the duration of a test.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// A port nothing listens on right now, for a redis-server that binds it
/// later (and again after a restart or an outage), so below the kernel's
/// ephemeral range: the client sockets and `127.0.0.1:0` listeners of the
/// tests running alongside (in this process: every test is in one binary)
/// never get it in between. Picked at random, 10,000 to 20,000 below the
/// range, so that a Redis Cluster node's bus port (port + 10,000) is below
/// the range too.
pub fn free_port() -> u16 {
    let low = ephemeral_ports_start();
    for _ in 0..1_000 {
        let port = rand::random_range(low - 20_000..low - 10_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {}..{}", low - 20_000, low - 10_000);
}

/// The first port of the kernel's ephemeral range
/// (/proc/sys/net/ipv4/ip_local_port_range; Linux's default is 32768),
/// at least 25,000 so the range [`free_port`] picks from exists.
fn ephemeral_ports_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
        .max(25_000)
}

/// Where test processes write their logs.
fn log_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("rollcall-cluster-tests");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A private redis-server (no persistence) on 127.0.0.1.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts redis-server on a free port and waits until it answers PING.
    pub fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
        };
        r.spawn();
        r
    }

    /// Starts redis-server speaking only TLS (`rediss://`, no plain port)
    /// on a free port with this certificate and key (clients need no
    /// certificate), and waits until it accepts connections. Not for
    /// [`Redis::spawn`], which restarts it without TLS.
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> Redis {
        let port = free_port();
        let mut cmd = redis_server();
        RedisTls::new(cert, key, ca).serve_on(&mut cmd, port);
        let redis = Redis {
            port,
            child: Some(spawn_redis(&mut cmd)),
        };
        wait_listening(port, Instant::now() + Duration::from_secs(5));
        redis
    }

    /// A Redis that is not running (yet), on a free port.
    pub fn not_running() -> Redis {
        Redis {
            port: free_port(),
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let mut cmd = redis_server();
        cmd.args(["--port", &self.port.to_string()]);
        self.child = Some(spawn_redis(&mut cmd));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.pings() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING on port {} within 5 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pings(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// SIGKILL, as if the machine running Redis died.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-server` without persistence, bound to 127.0.0.1, quiet.
fn redis_server() -> Command {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn spawn_redis(cmd: &mut Command) -> Child {
    cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot run redis-server ({e}); install it (apt-get install redis-server)")
    })
}

/// Waits until something accepts connections on `port` (a TLS-only
/// redis-server cannot be PINGed in plain text); panics at `deadline`.
fn wait_listening(port: u16, deadline: Instant) {
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server (TLS) did not listen on port {port} in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The files of a TLS-only redis-server: its certificate and key, and the
/// CA that `redis-cli` checks them with (clients need no certificate).
#[derive(Clone, Debug)]
struct RedisTls {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl RedisTls {
    fn new(cert: &Path, key: &Path, ca: &Path) -> RedisTls {
        RedisTls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            ca: ca.to_path_buf(),
        }
    }

    /// Makes `cmd` serve TLS only, on `port`.
    fn serve_on(&self, cmd: &mut Command, port: u16) {
        cmd.args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&self.cert)
            .arg("--tls-key-file")
            .arg(&self.key)
            .arg("--tls-ca-cert-file")
            .arg(&self.ca)
            .args(["--tls-auth-clients", "no"]);
    }
}

/// Timings and extra flags for a node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub heartbeat: &'static str,
    pub node_timeout: &'static str,
    pub extra: Vec<String>,
}

impl Default for NodeOptions {
    /// The defaults of `rollcall serve` (500ms heartbeat, 2500ms timeout).
    fn default() -> Self {
        NodeOptions {
            heartbeat: "500ms",
            node_timeout: "2500ms",
            extra: Vec::new(),
        }
    }
}

impl NodeOptions {
    /// These heartbeat and node timeout, no extra flags.
    pub fn timings(heartbeat: &'static str, node_timeout: &'static str) -> Self {
        NodeOptions {
            heartbeat,
            node_timeout,
            extra: Vec::new(),
        }
    }
}

/// A `rollcall serve` process.
pub struct Node {
    pub name: String,
    pub addr: SocketAddr,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Starts a node on `bus` and waits for its banner.
    pub fn start(name: &str, bus: &str, opts: &NodeOptions) -> Node {
        let log = log_dir().join(format!("{name}-{}.log", free_port()));
        let log_file = std::fs::File::create(&log).expect("create node log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--bus",
                bus,
                "--node-id",
                name,
            ])
            .args(["--jwt-secret", SECRET, "--api-key", API_KEY])
            // The cluster is under test, not the channel policy: every
            // front end's clients may use every channel.
            .args(["--open-channels", "*"])
            .args(["--heartbeat-interval", opts.heartbeat])
            .args(["--node-timeout", opts.node_timeout])
            // Fast SocketCluster presence packets for the SC clients.
            .args([
                "--sc-presence-interval",
                "300",
                "--sc-presence-timeout",
                "1000",
            ])
            .args(&opts.extra)
            .env("RUST_LOG", "rollcall=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("start rollcall serve");
        let addr =
            crate::common::process::wait_for_banner(&mut child, &log, &format!("node {name}"));
        Node {
            name: name.to_string(),
            addr,
            log,
            child: Some(child),
        }
    }

    /// SIGKILL: no goodbye, no cleanup.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (graceful shutdown) without waiting.
    pub fn send_term(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
    }

    /// Waits (at most 10 s, then SIGKILL and panic) for the process to exit.
    pub fn wait_exit(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {} did not exit within 10 s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait for the process to exit.
    pub fn terminate(&mut self) {
        self.send_term();
        self.wait_exit();
    }

    /// The node's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A Hotsock client with these claims (after `hotsock.connected`).
    pub async fn hotsock(&self, mut claims: Value) -> Client {
        let url = format!(
            "ws://{}/hotsock?token={}",
            self.addr,
            common::sign(&mut claims)
        );
        let mut client = common::connect_url(&url)
            .await
            .unwrap_or_else(|status| panic!("{}: upgrade refused with {status}", self.name));
        client.read_connected().await;
        client
    }

    pub async fn http(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        common::http(self.addr, method, path, body, Some(API_KEY)).await
    }

    /// Member uids of a channel from this node's HTTP API, sorted.
    pub async fn member_set(&self, channel: &str) -> Vec<String> {
        let (status, body) = self
            .http("GET", &format!("/api/channels/{channel}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        let mut uids: Vec<String> = body["members"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["uid"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        uids.sort();
        uids
    }

    /// `GET /readyz`.
    pub async fn readyz(&self) -> (u16, Value) {
        common::http(self.addr, "GET", "/readyz", None, None).await
    }

    /// Publishes through this node's HTTP API.
    pub async fn publish(&self, channel: &str, event: &str, data: Value) {
        let (status, body) = self
            .http(
                "POST",
                "/api/publish",
                Some(json!({"channel": channel, "event": event, "data": data})),
            )
            .await;
        assert_eq!(status, 202, "publish refused: {body}");
    }

    /// Stores `uid`'s privacy choice through this node's HTTP API.
    pub async fn set_visible(&self, uid: &str, visible: bool) {
        let (status, body) = self
            .http(
                "PUT",
                &format!("/api/users/{uid}/privacy"),
                Some(json!({ "visible": visible })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Nodes "a", "b" and "c" on `bus`.
pub fn start_three(bus: &str, opts: &NodeOptions) -> (Node, Node, Node) {
    (
        Node::start("a", bus, opts),
        Node::start("b", bus, opts),
        Node::start("c", bus, opts),
    )
}

/// Polls `probe` on every node until `ok` holds for each answer; panics
/// after `within`, saying `what` was expected and what each node answered.
pub async fn until_every_node<'a, T, F>(
    nodes: &[&'a Node],
    within: Duration,
    what: &str,
    probe: impl Fn(&'a Node) -> F,
    ok: impl Fn(&T) -> bool,
) where
    T: std::fmt::Debug,
    F: std::future::Future<Output = T>,
{
    let done = common::eventually(within, || async {
        for n in nodes {
            if !ok(&probe(n).await) {
                return false;
            }
        }
        true
    })
    .await;
    if !done {
        let mut seen = Vec::new();
        for n in nodes {
            seen.push((n.name.clone(), probe(n).await));
        }
        panic!("expected {what} on every node within {within:?}; they answered {seen:?}");
    }
}

/// Waits until every node reports the cluster ready with `nodes` members.
pub async fn wait_for_cluster(nodes: &[&Node], count: usize) {
    until_every_node(
        nodes,
        Duration::from_secs(10),
        &format!("a ready cluster of {count} nodes"),
        |n| n.readyz(),
        |(status, body)| *status == 200 && body["cluster"]["nodes"] == count,
    )
    .await;
}

/// Waits until every node answers `/readyz` with 503 (cut off from its
/// bus); panics after `within`.
pub async fn wait_for_not_ready(nodes: &[&Node], within: Duration) {
    until_every_node(
        nodes,
        within,
        "not ready (503)",
        |n| n.readyz(),
        |(status, _)| *status == 503,
    )
    .await;
}

/// Polls until every node lists exactly `want` as the channel's members.
pub async fn wait_for_members(nodes: &[&Node], channel: &str, want: &[&str], within: Duration) {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    until_every_node(
        nodes,
        within,
        &format!("members {want:?} of {channel}"),
        |n| n.member_set(channel),
        |members| *members == want,
    )
    .await;
}

/// Claims for a Hotsock user allowed on every channel, with messages.
pub fn user(uid: &str, umd: Value) -> Value {
    common::user(uid, umd)
}

/// Sends `count` numbered chat messages (`{"i": 0}`, `{"i": 1}`, …) on
/// `channel`.
pub async fn send_numbered(client: &mut Client, channel: &str, count: u64) {
    for i in 0..count {
        client
            .send(json!({"event": "chat", "channel": channel, "data": {"i": i}}))
            .await;
    }
}

/// `uid` (with `umd`) connects to `node` and joins the watcher's channel;
/// waits (at most `within`) until the watcher sees it added.
pub async fn join_seen(
    node: &Node,
    uid: &str,
    umd: Value,
    watcher: &mut Watcher,
    within: Duration,
) -> Client {
    let mut client = node.hotsock(user(uid, umd)).await;
    client.join(&watcher.channel).await;
    watcher
        .until(&format!("{uid} added on node {}", node.name), within, |w| {
            w.count("added", uid) == 1
        })
        .await;
    client
}

/// A Hotsock client that follows one channel's member list from its
/// subscribe snapshot and member events, checking each event against the
/// full list it carries (a missed, repeated or reordered event fails).
pub struct Watcher {
    pub client: Client,
    pub channel: String,
    pub list: Vec<Value>,
    /// Member events seen, as ("added"|"removed"|"updated", uid).
    pub events: Vec<(String, String)>,
    /// Channel messages seen, in order.
    pub messages: Vec<Value>,
}

impl Watcher {
    /// Connects as `uid` to `node` and subscribes to `channel` (making
    /// `uid` a member too).
    pub async fn join(node: &Node, uid: &str, channel: &str) -> Watcher {
        let mut client = node.hotsock(user(uid, Value::Null)).await;
        let sub = client.join(channel).await;
        let list = sub["data"]["members"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Watcher {
            client,
            channel: channel.to_string(),
            list,
            events: Vec::new(),
            messages: Vec::new(),
        }
    }

    /// Handles one frame: member events update the list; messages are kept.
    fn take(&mut self, frame: Value) {
        let event = frame["event"].as_str().unwrap_or("").to_string();
        if frame["channel"] != self.channel.as_str() {
            return;
        }
        match event.as_str() {
            "hotsock.memberAdded" | "hotsock.memberRemoved" | "hotsock.memberUpdated" => {
                common::apply_member_event(&mut self.list, &frame);
                let kind = event.trim_start_matches("hotsock.member").to_lowercase();
                let uid = frame["data"]["member"]["uid"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                self.events.push((kind, uid));
            }
            e if !e.starts_with("hotsock.") => self.messages.push(frame),
            _ => {}
        }
    }

    /// Reads frames for `ms` milliseconds.
    pub async fn pump(&mut self, ms: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            match tokio::time::timeout_at(deadline, self.client.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(t)))) => {
                    let frame: Value = serde_json::from_str(&t).expect("JSON frame");
                    self.take(frame);
                }
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("watcher {} connection ended: {other:?}", self.channel),
            }
        }
    }

    /// Reads frames until `pred` holds on the watcher (panics after `within`).
    pub async fn until(&mut self, what: &str, within: Duration, pred: impl Fn(&Watcher) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while !pred(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not seen within {within:?}; events {:?}, members {:?}",
                self.events,
                self.uids()
            );
            match tokio::time::timeout_at(deadline, self.client.ws.next()).await {
                Err(_) => {}
                Ok(Some(Ok(Message::Text(t)))) => {
                    let frame: Value = serde_json::from_str(&t).expect("JSON frame");
                    self.take(frame);
                }
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("watcher connection ended: {other:?}"),
            }
        }
    }

    /// Member uids, sorted.
    pub fn uids(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .list
            .iter()
            .filter_map(|m| m["uid"].as_str().map(String::from))
            .collect();
        v.sort();
        v
    }

    /// How often `kind` ("added", "removed", "updated") was seen for `uid`.
    pub fn count(&self, kind: &str, uid: &str) -> usize {
        self.events
            .iter()
            .filter(|(k, u)| k == kind && u == uid)
            .count()
    }

    /// `data[key]` of each message with this event, in arrival order.
    pub fn numbers(&self, event: &str, key: &str) -> Vec<u64> {
        self.messages
            .iter()
            .filter(|m| m["event"] == event)
            .map(|m| m["data"][key].as_u64().expect("sequence number"))
            .collect()
    }

    /// Waits (at most `within`) for `count` messages, which must be the
    /// chats of [`send_numbered`]: all of them, once each, in order.
    pub async fn expect_numbered(&mut self, what: &str, count: u64, within: Duration) {
        self.until(what, within, |w| w.messages.len() as u64 >= count)
            .await;
        let got: Vec<u64> = self
            .messages
            .iter()
            .map(|m| m["data"]["i"].as_u64().expect("i"))
            .collect();
        assert_eq!(got, (0..count).collect::<Vec<u64>>(), "{what}");
    }
}

/// A raw SocketCluster client (protocol v1 text frames).
pub struct Sc {
    pub ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    cid: u64,
}

impl Sc {
    /// A WebSocket to `node`'s SocketCluster endpoint, not handshaken yet.
    async fn open(node: &Node) -> Sc {
        let url = format!("ws://{}/socketcluster/", node.addr);
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("upgrade in time")
            .expect("upgrade accepted");
        Sc { ws, cid: 0 }
    }

    /// Connects to `node` and handshakes with a token for `username`.
    pub async fn connect(node: &Node, username: &str) -> Sc {
        let mut sc = Sc::open(node).await;
        let token = common::sign(&mut json!({ "username": username }));
        let reply = sc.call("#handshake", json!({ "authToken": token })).await;
        assert_eq!(reply["data"]["isAuthenticated"], true, "{reply}");
        sc
    }

    /// Connects to `node` without an auth token: its subscriptions are
    /// plain pub/sub, never memberships.
    pub async fn connect_anonymous(node: &Node) -> Sc {
        let mut sc = Sc::open(node).await;
        let reply = sc.call("#handshake", json!({})).await;
        assert_eq!(reply["data"]["isAuthenticated"], false, "{reply}");
        sc
    }

    /// Sends a request and returns its reply, which must not be an error.
    pub async fn call(&mut self, event: &str, data: Value) -> Value {
        let cid = self.request(event, data).await;
        let reply = self.seek(|f| f["rid"] == cid).await;
        assert!(reply.get("error").is_none(), "{event} refused: {reply}");
        reply
    }

    async fn request(&mut self, event: &str, data: Value) -> u64 {
        self.cid += 1;
        let frame = json!({"event": event, "data": data, "cid": self.cid});
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("send");
        self.cid
    }

    /// The next JSON frame matching `pred`, answering pings.
    pub async fn seek(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("SC frame within the timeout")
                .expect("stream open")
                .expect("frame");
            let Message::Text(t) = msg else { continue };
            if t.as_str() == "#1" {
                let _ = self.ws.send(Message::Text("#2".into())).await;
                continue;
            }
            if t.is_empty() {
                continue;
            }
            let f: Value = serde_json::from_str(&t).expect("JSON");
            if pred(&f) {
                return f;
            }
        }
    }

    /// Subscribes (a presence channel makes the user a member).
    pub async fn subscribe(&mut self, channel: &str) {
        let cid = self
            .request("#subscribe", json!({ "channel": channel }))
            .await;
        self.seek(|f| f["rid"] == cid).await;
    }

    /// Unsubscribes (fire and forget).
    pub async fn unsubscribe(&mut self, channel: &str) {
        self.request("#unsubscribe", json!(channel)).await;
    }

    /// Publishes a message on a channel.
    pub async fn publish(&mut self, channel: &str, data: Value) {
        self.request("#publish", json!({ "channel": channel, "data": data }))
            .await;
    }

    /// The data of the next `#publish` on `channel`.
    pub async fn publish_on(&mut self, channel: &str) -> Value {
        self.seek(|f| f["event"] == "#publish" && f["data"]["channel"] == channel)
            .await["data"]["data"]
            .clone()
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.ws.next()).await {}
    }
}

/// p50 and p99 of durations, in ms.
pub fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.99))
}

/// A private Redis Cluster on 127.0.0.1: three masters (no replicas, no
/// persistence) in their own temp dir, slots assigned by
/// `redis-cli --cluster create`, optionally speaking only TLS (clients
/// and the cluster bus). Every server is killed on drop.
pub struct RedisCluster {
    /// The masters' client ports (each also uses port + 10000 for the
    /// cluster bus).
    pub ports: Vec<u16>,
    dir: PathBuf,
    children: Vec<Option<Child>>,
    tls: Option<RedisTls>,
}

impl RedisCluster {
    /// Starts three masters, creates the cluster and waits (at most 20 s)
    /// until every node says `cluster_state:ok`.
    pub fn start() -> RedisCluster {
        RedisCluster::start_with(None)
    }

    /// [`RedisCluster::start`] with masters speaking only TLS, with this
    /// certificate and key (which must also serve as a client certificate,
    /// for the cluster bus) signed by `ca`.
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> RedisCluster {
        RedisCluster::start_with(Some(RedisTls::new(cert, key, ca)))
    }

    fn start_with(tls: Option<RedisTls>) -> RedisCluster {
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 3 {
            let p = cluster_port(&ports);
            ports.push(p);
        }
        let dir = std::env::temp_dir().join(format!(
            "rollcall-redis-cluster-{}-{}",
            std::process::id(),
            ports[0]
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the Redis Cluster temp dir");
        let mut cluster = RedisCluster {
            children: ports.iter().map(|_| None).collect(),
            ports,
            dir,
            tls,
        };
        for i in 0..cluster.ports.len() {
            cluster.spawn(i);
        }
        let mut create = cluster.redis_cli(20);
        create.args(["--cluster", "create"]);
        for p in &cluster.ports {
            create.arg(format!("127.0.0.1:{p}"));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok(Duration::from_secs(20));
        cluster
    }

    /// The `--bus` URL listing every master as a seed.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let scheme = if self.tls.is_some() {
            "rediss+cluster"
        } else {
            "redis+cluster"
        };
        format!("{scheme}://{}", hosts.join(","))
    }

    /// Starts master `i` on its port with its own nodes file (so a
    /// restarted master rejoins with its slots), waiting until it answers.
    fn spawn(&mut self, i: usize) {
        assert!(
            self.children[i].is_none(),
            "redis-server {i} already running"
        );
        let port = self.ports[i];
        let log = std::fs::File::create(log_dir().join(format!("redis-cluster-{port}.log")))
            .expect("create the redis-server log");
        let mut cmd = redis_server();
        cmd.args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(self.dir.join(format!("nodes-{port}.conf")))
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::from(log));
        match &self.tls {
            Some(tls) => {
                tls.serve_on(&mut cmd, port);
                cmd.args(["--tls-cluster", "yes"]);
            }
            None => {
                cmd.args(["--port", &port.to_string()]);
            }
        }
        self.children[i] = Some(spawn_redis(&mut cmd));
        let deadline = Instant::now() + Duration::from_secs(5);
        if self.tls.is_some() {
            wait_listening(port, deadline);
            return;
        }
        let probe = Redis { port, child: None };
        while !probe.pings() {
            assert!(
                Instant::now() < deadline,
                "redis-server (cluster) did not answer PING on port {port} within 5 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis-cli` (over TLS when the cluster speaks it), stopped after
    /// `secs` seconds.
    fn redis_cli(&self, secs: u32) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.arg(secs.to_string())
            .arg("redis-cli")
            .stdin(Stdio::null());
        if let Some(tls) = &self.tls {
            cmd.args(["--tls", "--cacert"]).arg(&tls.ca);
        }
        cmd
    }

    /// Runs `redis-cli -p port args…` (at most 3 s); None if it failed.
    fn cli(&self, port: u16, args: &[&str]) -> Option<String> {
        let out = self
            .redis_cli(3)
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until every running master says `cluster_state:ok` (and knows
    /// all the others), or panics after `within`.
    pub fn wait_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let mut states = Vec::new();
            for (i, p) in self.ports.iter().enumerate() {
                if self.children[i].is_none() {
                    continue;
                }
                let info = self.cli(*p, &["CLUSTER", "INFO"]).unwrap_or_default();
                let field = |name: &str| {
                    info.lines()
                        .find_map(|l| l.trim().strip_prefix(name).map(str::to_string))
                        .unwrap_or_default()
                };
                states.push((*p, field("cluster_state:"), field("cluster_known_nodes:")));
            }
            let want = self.ports.len().to_string();
            if states.iter().all(|(_, s, n)| s == "ok" && *n == want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Redis Cluster is not ok within {within:?}: {states:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The index of the master serving `key`'s slot.
    pub fn owner_of(&self, key: &str) -> usize {
        let port = self.ports[0];
        let slot: u16 = self
            .cli(port, &["CLUSTER", "KEYSLOT", key])
            .and_then(|s| s.trim().parse().ok())
            .expect("CLUSTER KEYSLOT");
        let nodes = self
            .cli(port, &["CLUSTER", "NODES"])
            .expect("CLUSTER NODES");
        for line in nodes.lines() {
            // <id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges…>
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") {
                continue;
            }
            let owns = fields[8..].iter().any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if lo <= slot && slot <= hi)
            });
            let node_port = fields[1]
                .split('@')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok());
            if owns && let Some(i) = self.ports.iter().position(|p| Some(*p) == node_port) {
                return i;
            }
        }
        panic!("no master serves slot {slot} ({key}):\n{nodes}");
    }

    /// Moves `key`'s slot (which must hold no keys) to master `to`, as a
    /// resharding does: the old owner drops its sharded subscribers
    /// (a `sunsubscribe` push) and answers MOVED from then on.
    pub fn move_slot_of(&self, key: &str, to: usize) {
        let from = self.owner_of(key);
        assert_ne!(from, to, "{key} is already served by master {to}");
        let id = |i: usize| {
            self.cli(self.ports[i], &["CLUSTER", "MYID"])
                .map(|s| s.trim().to_string())
                .expect("CLUSTER MYID")
        };
        let (from_id, to_id) = (id(from), id(to));
        let slot = self
            .cli(self.ports[0], &["CLUSTER", "KEYSLOT", key])
            .map(|s| s.trim().to_string())
            .expect("CLUSTER KEYSLOT");
        let steps = [
            (to, vec!["IMPORTING", from_id.as_str()]),
            (from, vec!["MIGRATING", to_id.as_str()]),
            (to, vec!["NODE", to_id.as_str()]),
            (from, vec!["NODE", to_id.as_str()]),
        ];
        for (i, args) in steps {
            let mut cmd = vec!["CLUSTER", "SETSLOT", slot.as_str()];
            cmd.extend(args);
            let out = self.cli(self.ports[i], &cmd).unwrap_or_default();
            assert_eq!(out.trim(), "OK", "{cmd:?} on master {i}: {out}");
        }
        for i in (0..self.ports.len()).filter(|i| *i != from && *i != to) {
            let out = self
                .cli(
                    self.ports[i],
                    &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id],
                )
                .unwrap_or_default();
            assert_eq!(out.trim(), "OK", "SETSLOT NODE on master {i}: {out}");
        }
        self.wait_ok(Duration::from_secs(10));
        assert_eq!(self.owner_of(key), to, "{key}'s slot did not move");
    }

    /// SIGKILL master `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts master `i` again (same port, same nodes file) and waits until
    /// the cluster is ok on every node.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_ok(Duration::from_secs(20));
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free port P whose cluster bus port P + 10000 is free too (both below
/// the ephemeral range, see [`free_port`]), distinct from the ports (and
/// bus ports) already `taken`.
fn cluster_port(taken: &[u16]) -> u16 {
    for _ in 0..200 {
        let p = free_port();
        let clash = taken
            .iter()
            .any(|&t| t == p || t + 10_000 == p || t == p + 10_000);
        if !clash && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
    panic!("found no free port P with P + 10000 free for a Redis Cluster node");
}
