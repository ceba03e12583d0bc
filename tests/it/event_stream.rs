//! `GET /api/events`, the backends' event stream, over real HTTP: what it
//! carries, its filters and its key; a reader that stops reading gets a gap
//! and the newest events, never an unbounded backlog; and in a cluster a
//! reader on one node sees members join on another.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::common::cluster::{NodeOptions, serial, start_three, user, wait_for_cluster};
use crate::common::redis::Redis;
use crate::common::{API_KEY, TestServer, WAIT};

/// One server-sent event.
#[derive(Debug)]
pub struct Sse {
    pub name: String,
    pub data: Value,
}

/// A reader of `GET /api/events<query>`.
pub struct EventReader {
    lines: BufReader<TcpStream>,
}

impl EventReader {
    /// Opens the stream (with a `recv_buffer` socket receive buffer, if
    /// given) and reads the response head; panics unless it is 200.
    pub async fn open(addr: std::net::SocketAddr, query: &str, recv_buffer: Option<u32>) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let mut stream = socket.connect(addr).await.expect("connect");
        let head = format!(
            "GET /api/events{query} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {API_KEY}\r\nAccept: text/event-stream\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut reader = EventReader {
            lines: BufReader::new(stream),
        };
        let status = reader.line().await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let mut content_type = String::new();
        loop {
            let line = reader.line().await;
            if line.is_empty() {
                break;
            }
            if line.to_ascii_lowercase().starts_with("content-type:") {
                content_type = line;
            }
        }
        assert!(content_type.contains("text/event-stream"), "{content_type}");
        reader
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, self.lines.read_line(&mut line))
            .await
            .expect("a line within the timeout")
            .expect("read");
        assert!(n > 0, "the stream ended");
        line.trim_end_matches(['\r', '\n']).to_string()
    }

    /// The next event (chunked transfer framing and keep-alive comments
    /// skipped).
    pub async fn next(&mut self) -> Sse {
        let (mut name, mut data) = (None, None);
        loop {
            let line = self.line().await;
            if let Some(v) = line.strip_prefix("event: ") {
                name = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str(v).expect("JSON data"));
            } else if line.is_empty()
                && let (Some(name), Some(data)) = (name.take(), data.take())
            {
                return Sse { name, data };
            }
        }
    }

    /// Reads until an event matches; returns the ones before it too.
    async fn until(&mut self, what: impl Fn(&Sse) -> bool) -> Vec<Sse> {
        let mut seen = Vec::new();
        loop {
            let event = self.next().await;
            let done = what(&event);
            seen.push(event);
            if done {
                return seen;
            }
        }
    }
}

fn is(event: &Sse, name: &str, uid: &str) -> bool {
    event.name == name && event.data["user_id"] == uid
}

#[tokio::test]
async fn the_stream_carries_presence_user_and_connection_events_filtered_and_keyed() {
    let srv = TestServer::start_open().await;
    let (status, body) = crate::common::http(srv.addr, "GET", "/api/events", None, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = srv
        .http("GET", "/api/events?channel=%23regex:(", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("INVALID_QUERY")),
        "{body}"
    );

    let mut all = EventReader::open(srv.addr, "", None).await;
    let mut room = EventReader::open(
        srv.addr,
        "?channel=presence.room*&type=member_added,member_removed",
        None,
    )
    .await;
    let mut alice = srv.connect(json!({"uid": "alice", "umd": {"n": 1}})).await;
    alice.join("presence.other").await;
    alice.join("presence.room").await;
    alice.unsubscribe("presence.room").await;
    drop(alice);

    let seen = all.until(|e| e.name == "connection_closed").await;
    let names: Vec<&str> = seen.iter().map(|e| e.name.as_str()).collect();
    for want in [
        "user_online",
        "connection_opened",
        "channel_occupied",
        "member_added",
        "member_removed",
        "channel_vacated",
        "user_offline",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let closed = seen.last().expect("closed");
    assert_eq!(closed.data["reason"], "client_closed", "{:?}", closed.data);
    let opened = seen
        .iter()
        .find(|e| e.name == "connection_opened")
        .expect("opened");
    assert_eq!(opened.data["protocol"], "hotsock", "{:?}", opened.data);
    assert!(opened.data["connection"].is_string(), "{:?}", opened.data);
    let added = seen
        .iter()
        .find(|e| e.name == "member_added" && e.data["channel"] == "presence.room")
        .expect("added to the room");
    assert_eq!(added.data["data"], json!({"n": 1}));

    // The filtered reader sees the room's join and leave, nothing else.
    let first = room.next().await;
    assert!(is(&first, "member_added", "alice"), "{first:?}");
    assert_eq!(first.data["channel"], "presence.room");
    let second = room.next().await;
    assert!(is(&second, "member_removed", "alice"), "{second:?}");
    assert_eq!(second.data["channel"], "presence.room");
}

#[tokio::test]
async fn a_reader_that_stops_reading_gets_a_gap_then_the_newest_events() {
    let srv = TestServer::start_with(|c| {
        c.channels.open_channels = vec!["*".into()];
        c.services.events_backlog = 8;
    })
    .await;
    // A 4 KiB receive buffer: the server's writes back up after a few
    // events instead of megabytes of kernel buffers.
    let mut slow =
        EventReader::open(srv.addr, "?type=member_added,member_removed", Some(4096)).await;
    // 2,000 member events while the reader reads nothing.
    for round in 0..10 {
        let ids: Vec<String> = (0..100).map(|i| format!("content:{round}-{i}")).collect();
        let (status, body) = srv
            .http(
                "POST",
                "/api/presence/refresh",
                Some(json!({"user": "bulk", "ids": ids})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = srv
            .http(
                "POST",
                "/api/presence/refresh",
                Some(json!({"user": "bulk", "ids": []})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = srv
        .http(
            "POST",
            "/api/presence/refresh",
            Some(json!({"user": "last", "ids": ["content:last"]})),
        )
        .await;
    assert_eq!(status, 200);
    let seen = slow.until(|e| is(e, "member_added", "last")).await;
    let gaps: Vec<u64> = seen
        .iter()
        .filter(|e| e.name == "gap")
        .map(|e| e.data["missed"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        !gaps.is_empty() && gaps.iter().all(|&m| m > 0),
        "no gap in {} events",
        seen.len()
    );
    // `missed` counts every event the reader lost, of any type (the filter
    // is applied to what it reads), so it covers the member events missing.
    let delivered = seen.iter().filter(|e| e.name != "gap").count() as u64;
    let missed: u64 = gaps.iter().sum();
    assert!(
        delivered < 2001,
        "a gap, yet all {delivered} events arrived"
    );
    assert!(
        delivered + missed >= 2001,
        "{delivered} delivered, {missed} missed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_events_go_to_the_webhooks_when_asked_with_the_close_reason() {
    use crate::webhook_support::{HOOK_SECRET, receiver, verified_events};
    let (url, mut rx, _) = receiver(0, false).await;
    let srv = TestServer::start_with(|c| {
        c.channels.open_channels = vec!["*".into()];
        c.services.webhook_url = vec![url];
        c.services.webhook_secret = Some(HOOK_SECRET.into());
        c.services.webhook_batch_ms = 20;
        c.services.webhook_connection_events = true;
        c.limits.outbox_bytes = 256 * 1024;
    })
    .await;
    // A client that stops reading is closed as a slow consumer.
    let mut slow = srv.connect_small_buffer(json!({"uid": "slowpoke"})).await;
    slow.join("news").await;
    // 9.6 MB: more than the kernel's socket buffers and the 256 KiB queue.
    let filler = "x".repeat(16_000);
    for _ in 0..600 {
        srv.publish("news", "fill", json!(filler)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|e: &Value| e["name"] == "connection_closed")
    {
        let hit = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("webhooks in time")
            .expect("receiver open");
        seen.extend(verified_events(&hit));
    }
    let opened = seen
        .iter()
        .find(|e| e["name"] == "connection_opened")
        .expect("opened");
    assert_eq!(opened["user_id"], "slowpoke", "{opened}");
    assert_eq!(opened["protocol"], "hotsock", "{opened}");
    let closed = seen
        .iter()
        .find(|e| e["name"] == "connection_closed")
        .expect("closed");
    assert_eq!(closed["reason"], "slow_consumer", "{closed}");
    assert_eq!(closed["connection"], opened["connection"], "{closed}");
    drop(slow);
}

#[tokio::test]
async fn hidden_users_connections_are_reported_only_when_asked() {
    for report in [false, true] {
        let srv = TestServer::start_with(|c| {
            c.services.default_visible = false;
            c.services.hidden_connection_events = report;
        })
        .await;
        let mut reader = EventReader::open(srv.addr, "", None).await;
        drop(srv.connect(json!({"uid": "ghost"})).await);
        // Without the option nothing comes (a connection's events arrive
        // within milliseconds; 700 ms is plenty).
        let seen = tokio::time::timeout(
            Duration::from_millis(700),
            reader.until(|e| e.name == "connection_closed"),
        )
        .await;
        match (report, seen) {
            (true, Ok(seen)) => {
                assert!(
                    seen.iter().any(|e| is(e, "connection_opened", "ghost")),
                    "{seen:?}"
                );
                assert!(
                    seen.iter().all(|e| !e.name.starts_with("member_")),
                    "{seen:?}"
                );
            }
            (false, Err(_)) => {}
            (true, Err(_)) => panic!("the hidden user's connection events were not reported"),
            (false, Ok(seen)) => panic!("a hidden user's connection was reported: {seen:?}"),
        }
    }
}

#[tokio::test]
async fn a_reader_on_one_node_sees_members_join_on_another() {
    let _serial = serial().await;
    let redis = Redis::start();
    let (a, b, c) = start_three(&redis.url(), &NodeOptions::default());
    wait_for_cluster(&[&a, &b, &c], 3).await;
    let mut reader =
        EventReader::open(a.addr, "?channel=presence.span&type=member_added", None).await;
    let mut bus_readers = Vec::new();
    for node in [&a, &b, &c] {
        bus_readers.push(EventReader::open(node.addr, "?bus=cache.flush", None).await);
    }
    for (node, uid) in [(&b, "bob"), (&c, "carol")] {
        let mut client = node.hotsock(user(uid, Value::Null)).await;
        client.join("presence.span").await;
        let seen = tokio::time::timeout(
            Duration::from_secs(5),
            reader.until(|e| is(e, "member_added", uid)),
        )
        .await
        .expect("node a streams the join");
        assert!(seen.iter().all(|e| e.name == "member_added"), "{seen:?}");
    }

    // A backend's message on node c reaches the bus readers of every node
    // (node c's own included), tagged with node c, and no one else (the
    // bus readers saw none of the joins above).
    let (status, _) = c
        .http(
            "POST",
            "/api/bus/publish",
            Some(json!({"topic": "other", "data": 1})),
        )
        .await;
    assert_eq!(status, 202);
    let (status, body) = c
        .http(
            "POST",
            "/api/bus/publish",
            Some(json!({"topic": "cache.flush", "data": {"key": "user:42"}})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    for r in &mut bus_readers {
        let e = r.next().await;
        assert_eq!(e.name, "bus_message", "{e:?}");
        assert_eq!(e.data["topic"], "cache.flush", "{e:?}");
        assert_eq!(e.data["node"], "c", "{e:?}");
        assert_eq!(e.data["data"], json!({"key": "user:42"}), "{e:?}");
        assert_eq!(e.data["id"], body["id"], "{e:?}");
    }
    let (status, body) = c
        .http(
            "POST",
            "/api/bus/publish",
            Some(json!({"topic": "", "data": 1})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("INVALID_TOPIC")),
        "{body}"
    );
}

#[tokio::test]
async fn a_silent_connection_is_reported_closed_by_timeout() {
    let srv = TestServer::start_with(|c| {
        // Checked at each ping: the client neither sends nor answers.
        c.limits.idle_timeout = Duration::from_millis(500);
        c.limits.ping_interval = Duration::from_millis(300);
    })
    .await;
    let mut reader = EventReader::open(srv.addr, "?type=connection_closed", None).await;
    // Connected, then silent: no frame, no pong.
    let silent = srv.connect(json!({"uid": "mute"})).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), reader.next())
        .await
        .expect("closed by the idle timeout");
    assert_eq!(closed.data["user_id"], "mute", "{:?}", closed.data);
    assert_eq!(closed.data["reason"], "timeout", "{:?}", closed.data);
    drop(silent);
}
