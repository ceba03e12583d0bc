//! Cluster tests: `rollcall serve` nodes (server processes, see
//! [`super::process`]) on one bus, with Hotsock and SocketCluster clients
//! over real sockets, and the waits that check the nodes agree. Engines
//! (Redis, Redis Cluster) are in [`super::redis`].

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::process::ServerProcess;
use super::{Client, WAIT};
use crate::common;

pub mod scenarios;

// The engines cluster tests run on, for one import (unused by benches).
#[allow(unused_imports)]
pub use super::nats::Nats;
#[allow(unused_imports)]
pub use super::redis::{Redis, RedisCluster};

/// Cluster tests start several processes; running two such tests at once
/// on a 2-core machine would make their timing measurements meaningless.
/// (An async mutex: a failed test releases it without poisoning it.)
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Holds the cluster-test lock for the duration of a test.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
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

/// A `rollcall serve` process on a bus: a [`ServerProcess`] (kill,
/// SIGTERM, log, HTTP) with a node id.
pub struct Node {
    pub name: String,
    process: ServerProcess,
}

impl std::ops::Deref for Node {
    type Target = ServerProcess;
    fn deref(&self) -> &ServerProcess {
        &self.process
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut ServerProcess {
        &mut self.process
    }
}

impl Node {
    /// Starts a node on `bus` and waits for its banner.
    pub fn start(name: &str, bus: &str, opts: &NodeOptions) -> Node {
        let mut args = vec![
            "--bus",
            bus,
            "--node-id",
            name,
            // The cluster is under test, not the channel policy: every
            // front end's clients may use every channel.
            "--open-channels",
            "*",
            "--heartbeat-interval",
            opts.heartbeat,
            "--node-timeout",
            opts.node_timeout,
            // Fast SocketCluster presence packets for the SC clients.
            "--sc-presence-interval",
            "300",
            "--sc-presence-timeout",
            "1000",
        ];
        args.extend(opts.extra.iter().map(String::as_str));
        let process = ServerProcess::spawn(
            env!("CARGO_BIN_EXE_rollcall"),
            &format!("node-{name}"),
            &args,
            "rollcall=debug",
        );
        Node {
            name: name.to_string(),
            process,
        }
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
        common::api_publish(self.addr, channel, event, data).await;
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
