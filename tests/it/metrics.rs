//! `GET /metrics` and `GET /dashboard` over real sockets: counters and
//! gauges follow clients joining, leaving and publishing; the text parses
//! as Prometheus 0.0.4 (histograms included); the dashboard page only
//! calls routes that exist.

use std::collections::{BTreeMap, HashSet};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::cluster;
use crate::common::*;

/// One answer: status, lower-cased header lines, body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` on a fresh connection, with the API key when `key`.
async fn get(addr: std::net::SocketAddr, path: &str, key: bool) -> Answer {
    let auth = if key {
        format!("Authorization: Bearer {API_KEY}\r\n")
    } else {
        String::new()
    };
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let head =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.expect("read");
        buf
    };
    let buf = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("HTTP answer within the timeout");
    let text = String::from_utf8(buf).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("header end");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A parsed scrape: every series as written (`name{labels}`) to its value.
type Series = BTreeMap<String, f64>;

/// Parses Prometheus text 0.0.4 strictly, panicking on anything malformed:
/// HELP then TYPE before a family's samples, samples of a family together,
/// label values properly quoted and escaped, no series twice, counters
/// ending in `_total`.
fn parse(text: &str) -> Series {
    assert!(text.ends_with('\n'), "the text must end with a newline");
    let mut series = Series::new();
    let mut declared: HashSet<String> = HashSet::new();
    let mut help_for: Option<String> = None;
    let mut current: Option<String> = None;
    let mut histogram = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(valid_name(name), "bad metric name in {line:?}");
            assert!(!help.is_empty(), "empty HELP: {line:?}");
            assert!(!declared.contains(name), "family {name} declared twice");
            help_for = Some(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert_eq!(
                help_for.as_deref(),
                Some(name),
                "TYPE {name} without HELP right before"
            );
            assert!(
                matches!(kind, "counter" | "gauge" | "histogram"),
                "unexpected type in {line:?}"
            );
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "counter names (only) end in _total: {line:?}"
            );
            assert!(declared.insert(name.to_string()));
            histogram = kind == "histogram";
            current = Some(name.to_string());
            help_for = None;
        } else {
            assert!(
                !line.starts_with('#') && !line.is_empty(),
                "unexpected line {line:?}"
            );
            let (key, value) = line.rsplit_once(' ').expect("sample: series value");
            let value: f64 = match value {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = split_series(key);
            // A histogram's samples are its _bucket (with `le`), _sum and
            // _count series.
            let family = if histogram {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix));
                let base = base.unwrap_or_else(|| panic!("histogram sample {line:?}"));
                assert_eq!(
                    name.ends_with("_bucket"),
                    labels.iter().any(|(l, _)| l == "le"),
                    "le on (only) buckets: {line:?}"
                );
                base
            } else {
                name
            };
            assert_eq!(
                current.as_deref(),
                Some(family),
                "sample {line:?} outside its family"
            );
            let mut label_names = HashSet::new();
            for (label, _) in &labels {
                assert!(
                    valid_name(label) && !label.contains(':'),
                    "bad label {label:?}"
                );
                assert!(
                    label_names.insert(label.clone()),
                    "label {label} twice in {line:?}"
                );
            }
            assert!(
                series.insert(key.to_string(), value).is_none(),
                "series {key} twice"
            );
        }
    }
    series
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `name{a="x",b="y"}` into the name and the unescaped label pairs.
fn split_series(key: &str) -> (&str, Vec<(String, String)>) {
    let Some((name, rest)) = key.split_once('{') else {
        assert!(valid_name(key), "bad series {key:?}");
        return (key, Vec::new());
    };
    assert!(valid_name(name), "bad series {key:?}");
    let mut labels = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        let label: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(
            chars.next(),
            Some('"'),
            "label value must be quoted in {key:?}"
        );
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => panic!("bad escape {other:?} in {key:?}"),
                },
                Some('"') => break,
                Some('\n') | None => panic!("unterminated label value in {key:?}"),
                Some(c) => value.push(c),
            }
        }
        labels.push((label, value));
        match chars.next() {
            Some(',') => continue,
            Some('}') => break,
            other => panic!("unexpected {other:?} after a label in {key:?}"),
        }
    }
    assert_eq!(chars.next(), None, "text after the labels in {key:?}");
    (name, labels)
}

/// Scrapes without the API key (the route is open) and parses.
async fn scrape(addr: std::net::SocketAddr) -> Series {
    let answer = get(addr, "/metrics", false).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse(&answer.body)
}

/// Polls `/metrics` until every series has its expected value (the
/// observer runs when the core releases a channel, which may be just
/// after the client got its answer).
async fn expect_metrics(srv: &TestServer, expected: &[(&str, f64)]) -> Series {
    expect_metrics_at(srv.addr, expected, WAIT).await
}

/// [`expect_metrics`] for any server, within `within`.
async fn expect_metrics_at(
    addr: std::net::SocketAddr,
    expected: &[(&str, f64)],
    within: std::time::Duration,
) -> Series {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let last = scrape(addr).await;
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(k, v)| last.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: expected {v}, got {:?}", last.get(*k)))
            .collect();
        if wrong.is_empty() {
            return last;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics did not settle within {within:?}:\n{}",
            wrong.join("\n")
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn events(change: &str, origin: &str) -> String {
    format!("rollcall_member_events_total{{change=\"{change}\",origin=\"{origin}\"}}")
}

fn opened(protocol: &str) -> String {
    format!("rollcall_connections_opened_total{{protocol=\"{protocol}\"}}")
}

fn closed(protocol: &str) -> String {
    format!("rollcall_connections_closed_total{{protocol=\"{protocol}\"}}")
}

fn open(protocol: &str) -> String {
    format!("rollcall_connections{{protocol=\"{protocol}\"}}")
}

/// (series, value) pairs from owned keys.
fn exp(pairs: &[(String, f64)]) -> Vec<(&str, f64)> {
    pairs.iter().map(|(k, v)| (k.as_str(), *v)).collect()
}

#[tokio::test]
async fn counters_and_gauges_follow_clients() {
    let srv = TestServer::start().await;
    let start = expect_metrics(&srv, &[]).await;
    for protocol in ["hotsock", "socketio", "socketcluster", "sgc"] {
        let compiled = match protocol {
            "hotsock" => true,
            "socketio" => cfg!(feature = "socketio"),
            "socketcluster" => cfg!(feature = "sc"),
            _ => cfg!(feature = "sgc"),
        };
        for key in [opened(protocol), closed(protocol), open(protocol)] {
            assert_eq!(start.get(&key).copied(), compiled.then_some(0.0), "{key}");
        }
    }
    for change in ["added", "updated", "removed"] {
        for origin in ["local", "remote", "lease"] {
            assert_eq!(start.get(&events(change, origin)), Some(&0.0));
        }
    }
    for (key, value) in [
        ("rollcall_node_connections", 0.0),
        ("rollcall_channels", 0.0),
        ("rollcall_messages_published_total", 0.0),
        ("rollcall_channels_occupied_total", 0.0),
        ("rollcall_channels_vacated_total", 0.0),
        ("rollcall_bus_up", 1.0),
        ("rollcall_ready", 1.0),
        ("rollcall_event_sender", 1.0),
        ("rollcall_cluster_nodes", 1.0),
        ("rollcall_bus_frames_sent_total", 0.0),
        ("rollcall_cluster_resyncs_total", 0.0),
    ] {
        assert_eq!(start.get(key), Some(&value), "{key}");
    }
    for key in start.keys() {
        assert!(
            key.starts_with("rollcall_") || key.starts_with("process_"),
            "{key}"
        );
    }
    assert!(!start.contains_key("rollcall_webhook_events_dropped_total"));
    assert!(
        !start.contains_key("rollcall_bus_lag_seconds"),
        "no lag standalone"
    );

    // Two users join a presence channel, an anonymous client a plain one.
    let mut jim = srv.connect(user("jim", json!({"name": "Jim"}))).await;
    jim.join("presence.room").await;
    let mut pam = srv.connect(user("pam", json!(null))).await;
    pam.join("presence.room").await;
    jim.expect("hotsock.memberAdded").await;
    let mut anon = srv.connect(anonymous()).await;
    anon.join("news").await;
    expect_metrics(
        &srv,
        &exp(&[
            (opened("hotsock"), 3.0),
            (open("hotsock"), 3.0),
            (closed("hotsock"), 0.0),
            ("rollcall_node_connections".into(), 3.0),
            // Standalone: the cluster is this node.
            ("rollcall_cluster_connections".into(), 3.0),
            (events("added", "local"), 2.0),
            ("rollcall_channels_occupied_total".into(), 2.0),
            ("rollcall_channels".into(), 2.0),
        ]),
    )
    .await;

    // A client message and an HTTP API publish.
    pam.send(json!({"channel": "presence.room", "event": "chat", "data": 1}))
        .await;
    jim.expect("chat").await;
    srv.publish("news", "headline", json!("hi")).await;
    anon.expect("headline").await;
    expect_metrics(&srv, &[("rollcall_messages_published_total", 2.0)]).await;

    // Jim changes his member data.
    let token = srv.token(json!({
        "scope": "umd", "uid": "jim", "umd": {"name": "Jim", "away": true},
        "channels": {"presence.room": {"umdUpdate": true}}
    }));
    jim.send(
        json!({"event": "hotsock.umdUpdate", "channel": "presence.room", "data": {"token": token}}),
    )
    .await;
    pam.expect("hotsock.memberUpdated").await;
    jim.expect("hotsock.memberUpdated").await;
    expect_metrics(&srv, &exp(&[(events("updated", "local"), 1.0)])).await;

    // A lease comes and goes: its own origin, its own channel.
    lease(&srv, json!(["content:42"])).await;
    expect_metrics(
        &srv,
        &exp(&[
            (events("added", "lease"), 1.0),
            ("rollcall_channels".into(), 3.0),
            ("rollcall_channels_occupied_total".into(), 3.0),
        ]),
    )
    .await;
    lease(&srv, json!([])).await;
    expect_metrics(
        &srv,
        &exp(&[
            (events("removed", "lease"), 1.0),
            ("rollcall_channels".into(), 2.0),
            ("rollcall_channels_vacated_total".into(), 1.0),
        ]),
    )
    .await;

    // Pam leaves the channel, then Jim disconnects: the channel empties.
    let left = pam.unsubscribe("presence.room").await;
    assert_eq!(left["event"], "hotsock.unsubscribed", "{left}");
    jim.expect("hotsock.memberRemoved").await;
    jim.close().await;
    expect_metrics(
        &srv,
        &exp(&[
            (events("removed", "local"), 2.0),
            (closed("hotsock"), 1.0),
            (open("hotsock"), 2.0),
            ("rollcall_node_connections".into(), 2.0),
            ("rollcall_channels_vacated_total".into(), 2.0),
            ("rollcall_channels".into(), 1.0),
        ]),
    )
    .await;

    #[cfg(feature = "sgc")]
    {
        let sgc = sgc_connect(&srv).await;
        expect_metrics(
            &srv,
            &exp(&[
                (opened("sgc"), 1.0),
                (open("sgc"), 1.0),
                (open("hotsock"), 2.0),
            ]),
        )
        .await;
        drop(sgc);
        expect_metrics(&srv, &exp(&[(closed("sgc"), 1.0), (open("sgc"), 0.0)])).await;
    }

    pam.close().await;
    anon.close().await;
    let end = expect_metrics(
        &srv,
        &exp(&[
            (opened("hotsock"), 3.0),
            (closed("hotsock"), 3.0),
            (open("hotsock"), 0.0),
            ("rollcall_node_connections".into(), 0.0),
            ("rollcall_channels".into(), 0.0),
            ("rollcall_channels_occupied_total".into(), 3.0),
            ("rollcall_channels_vacated_total".into(), 3.0),
        ]),
    )
    .await;
    // Nothing came from another node; totals are as counted above.
    for change in ["added", "updated", "removed"] {
        assert_eq!(end.get(&events(change, "remote")), Some(&0.0));
    }
    assert_eq!(end.get(&events("added", "local")), Some(&2.0));
    assert_eq!(end.get(&events("updated", "local")), Some(&1.0));
    assert_eq!(end.get("rollcall_messages_published_total"), Some(&2.0));
    srv.stop().await;
}

/// The cumulative count of the bucket `le` of histogram series
/// `name{labels}` (`labels`: the other labels as written, e.g.
/// `reason="timeout"`, or empty).
fn bucket(series: &Series, name: &str, labels: &str, le: f64) -> Option<f64> {
    series.iter().find_map(|(key, value)| {
        let (n, pairs) = split_series(key);
        if n != format!("{name}_bucket") {
            return None;
        }
        let le_of = pairs.iter().find(|(l, _)| l == "le")?;
        let bound: f64 = if le_of.1 == "+Inf" {
            f64::INFINITY
        } else {
            le_of.1.parse().ok()?
        };
        let others: Vec<String> = pairs
            .iter()
            .filter(|(l, _)| l != "le")
            .map(|(l, v)| format!("{l}=\"{v}\""))
            .collect();
        (bound == le && others.join(",") == labels).then_some(*value)
    })
}

#[tokio::test]
async fn histograms_and_process_metrics() {
    let srv = TestServer::start().await;
    let start = expect_metrics(&srv, &[]).await;
    // Every histogram is declared from the start; unlabelled ones have
    // their zero buckets.
    let name = "rollcall_fanout_size";
    assert_eq!(start.get(&format!("{name}_count")), Some(&0.0), "{name}");
    assert_eq!(start.get(&format!("{name}_sum")), Some(&0.0), "{name}");
    assert_eq!(bucket(&start, name, "", f64::INFINITY), Some(0.0));
    // Webhook histograms only with webhooks.
    assert!(!start.contains_key("rollcall_webhook_attempts_count"));
    // Process metrics from /proc/self, and the build.
    #[cfg(target_os = "linux")]
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        let v = start.get(name).copied().unwrap_or_else(|| panic!("{name}"));
        assert!(v > 0.0, "{name} {v}");
    }
    let started = start["process_start_time_seconds"];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        started <= now + 1.0 && started > now - 24.0 * 3600.0,
        "{started}"
    );
    let version = format!(
        "rollcall_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(start.get(&version), Some(&1.0), "{version}");

    // The first scrape was timed by route template and status class.
    let second = scrape(srv.addr).await;
    let metrics_route = "route=\"/metrics\",status=\"2xx\"";
    let count = |s: &Series, labels: &str| {
        s.get(&format!(
            "rollcall_http_request_duration_seconds_count{{{labels}}}"
        ))
        .copied()
    };
    assert!(count(&second, metrics_route) >= Some(1.0), "{second:?}");
    assert!(
        bucket(
            &second,
            "rollcall_http_request_duration_seconds",
            metrics_route,
            f64::INFINITY
        ) >= Some(1.0)
    );

    // A publish to 3 subscribers: one observation of 3, in the buckets
    // from 4 up and not in 2.
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = srv.connect(anonymous()).await;
        c.join("news").await;
        clients.push(c);
    }
    srv.publish("news", "headline", json!("hi")).await;
    for c in &mut clients {
        c.expect("headline").await;
    }
    let after = expect_metrics(
        &srv,
        &[
            ("rollcall_fanout_size_count", 1.0),
            ("rollcall_fanout_size_sum", 3.0),
            ("rollcall_deliveries_total", 3.0),
        ],
    )
    .await;
    assert_eq!(bucket(&after, "rollcall_fanout_size", "", 2.0), Some(0.0));
    assert_eq!(bucket(&after, "rollcall_fanout_size", "", 4.0), Some(1.0));
    // The API publish has its route template, not the request path.
    assert!(
        after
            .keys()
            .any(|k| k.starts_with("rollcall_http_request_duration_seconds_count{route=\"/api/")),
        "{after:?}"
    );
    // WebSocket payload bytes, by protocol: the joins in, the joins'
    // answers and the message out.
    let bytes = |s: &Series, dir: &str| {
        s.get(&format!(
            "rollcall_bytes_{dir}_total{{protocol=\"hotsock\"}}"
        ))
        .copied()
    };
    assert!(bytes(&after, "received") > Some(0.0), "{after:?}");
    assert!(bytes(&after, "sent") > Some(0.0), "{after:?}");
    assert_eq!(
        after.get("rollcall_rate_limited_frames_total{protocol=\"hotsock\"}"),
        Some(&0.0)
    );

    // Each client's first frame (its join's answer) was timed from queue
    // to write.
    let delivery = "rollcall_delivery_seconds_count{protocol=\"hotsock\"}";
    assert!(after.get(delivery) >= Some(&3.0), "{after:?}");

    // A bad token: refused before the upgrade, counted.
    let refused = tokio_tungstenite::connect_async(srv.url("not-a-jwt")).await;
    assert!(refused.is_err());
    expect_metrics(
        &srv,
        &[("rollcall_auth_failures_total{protocol=\"hotsock\"}", 1.0)],
    )
    .await;
    // Client closes: leaves with reason client_closed, timed from the
    // close frame's read to the removal (well under a second here).
    for c in clients {
        c.close().await;
    }
    let left = expect_metrics(
        &srv,
        &[(
            "rollcall_leave_seconds_count{reason=\"client_closed\"}",
            3.0,
        )],
    )
    .await;
    assert_eq!(
        bucket(
            &left,
            "rollcall_leave_seconds",
            "reason=\"client_closed\"",
            1.024
        ),
        Some(3.0)
    );
    assert!(left["rollcall_leave_seconds_sum{reason=\"client_closed\"}"] < 3.0);
    srv.stop().await;
}

/// A refused token counts on the front ends that take tokens after the
/// upgrade too: a Socket.IO namespace connect, a SocketCluster
/// `#authenticate`.
#[tokio::test]
async fn refused_tokens_socketio_bytes_and_close_codes_are_counted() {
    use crate::common::protocols::{Peer, Proto};
    let srv = TestServer::start_open().await;
    let expired = json!({"uid": "x", "username": "x", "exp": 1});
    let refused = Peer::connect(&srv, Proto::SocketIo, Some(expired)).await;
    assert!(refused.is_err(), "an expired token connected");
    let mut sc = Peer::connect(&srv, Proto::Sc, None).await.expect("sc");
    let cid = sc.sc_request("#authenticate", json!("not-a-jwt")).await;
    // The bad token is dropped (`#removeAuthToken`), then the answer.
    let mut reply = sc.next().await;
    if reply["event"] == "#removeAuthToken" {
        reply = sc.next().await;
    }
    assert_eq!(reply["rid"], cid, "{reply}");
    assert!(reply["error"].is_object(), "{reply}");
    // A Socket.IO client's events in and out are counted too, and its
    // first frame timed from queue to socket.
    let mut client = Peer::connect(&srv, Proto::SocketIo, Some(json!({"uid": "sio"})))
        .await
        .expect("socket.io");
    client.subscribe("room").await.expect("subscribes");
    let series = scrape(srv.addr).await;
    for name in [
        "rollcall_bytes_received_total{protocol=\"socketio\"}",
        "rollcall_bytes_sent_total{protocol=\"socketio\"}",
        "rollcall_delivery_seconds_count{protocol=\"socketio\"}",
    ] {
        assert!(series.get(name) > Some(&0.0), "{name}: {series:?}");
    }
    // Events over the event rate (100 a second here) are counted.
    for _ in 0..150 {
        client
            .emit(
                "UNSUBSCRIBE_CHANNEL",
                json!({"channel": {"_id": "elsewhere"}}),
            )
            .await;
    }
    // At least the 50 over the limit (more if the one-second window
    // began before the first).
    let limited = "rollcall_rate_limited_frames_total{protocol=\"socketio\"}";
    let counted = eventually(std::time::Duration::from_secs(5), || async {
        scrape(srv.addr).await.get(limited) >= Some(&50.0)
    })
    .await;
    assert!(counted, "{:?}", scrape(srv.addr).await.get(limited));
    // Closes by code: two clients that leave (1000: the one refused
    // above, whose Engine.IO connection was open until it left, and this
    // one), an operator's kick (4100).
    client.close().await;
    let mut kicked = Peer::connect(&srv, Proto::Hotsock, Some(json!({"uid": "kicked"})))
        .await
        .expect("hotsock");
    let (status, _) = srv.http("POST", "/api/users/kicked/disconnect", None).await;
    assert_eq!(status, 202);
    kicked
        .ending_within(std::time::Duration::from_secs(5))
        .await;
    expect_metrics(
        &srv,
        &[
            (
                "rollcall_closes_total{protocol=\"socketio\",code=\"1000\"}",
                2.0,
            ),
            (
                "rollcall_closes_total{protocol=\"hotsock\",code=\"4100\"}",
                1.0,
            ),
        ],
    )
    .await;
    expect_metrics(
        &srv,
        &[
            ("rollcall_auth_failures_total{protocol=\"socketio\"}", 1.0),
            (
                "rollcall_auth_failures_total{protocol=\"socketcluster\"}",
                1.0,
            ),
        ],
    )
    .await;
    srv.stop().await;
}

#[tokio::test]
async fn metrics_listen_serves_only_metrics() {
    let srv = TestServer::start_with(|c| {
        c.listener.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    let at = srv.server.metrics_addr().expect("a metrics listener");
    assert_ne!(at, srv.addr);
    let series = scrape(at).await;
    assert_eq!(series.get("rollcall_bus_up"), Some(&1.0));
    // Nothing else there: no API, no dashboard, no front end.
    for path in ["/api/channels", "/dashboard", "/healthz", "/hotsock"] {
        assert_eq!(get(at, path, true).await.status, 404, "{path}");
    }
    // The main listener keeps /metrics.
    assert_eq!(scrape(srv.addr).await.get("rollcall_bus_up"), Some(&1.0));
    srv.stop().await;
}

/// Refreshes lee's lease on `ids` (an empty list ends it).
async fn lease(srv: &TestServer, ids: serde_json::Value) {
    let lease = json!({"user": "lee", "ids": ids, "ttl_ms": 30000});
    let (status, body) = srv.http("POST", "/api/presence/refresh", Some(lease)).await;
    assert_eq!(status, 200, "{body}");
}

/// Opens an sgc session (anonymous) and reads its session message.
#[cfg(feature = "sgc")]
async fn sgc_connect(
    srv: &TestServer,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let mut req = format!("ws://{}/sgc", srv.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("presence.esegece.com"),
    );
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("upgrade answered in time")
        .expect("upgrade accepted");
    let first = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("session message in time")
        .expect("stream open")
        .expect("frame");
    assert!(
        first
            .to_text()
            .unwrap_or_default()
            .contains("sgc@presence@session"),
        "{first:?}"
    );
    ws
}

#[tokio::test]
async fn webhooks_and_escaped_labels() {
    let node = "node \"q\" \\b";
    let srv = TestServer::start_with(|c| {
        // Nothing listens there: every attempt fails at once.
        c.services.webhook_url = vec!["http://127.0.0.1:9/hook".into()];
        c.services.webhook_batch_ms = 20;
        c.services.webhook_retry_ms = 10;
        c.services.webhook_max_attempts = 2;
        c.cluster.node_id = Some(node.into());
    })
    .await;
    let scraped = scrape(srv.addr).await;
    assert_eq!(
        scraped.get("rollcall_webhook_events_dropped_total"),
        Some(&0.0)
    );
    assert_eq!(scraped.get("rollcall_webhook_attempts_count"), Some(&0.0));
    // A member joins: one batch, given up after its 2 attempts.
    let mut jim = srv.connect(user("jim", json!(null))).await;
    jim.join("presence.room").await;
    let after = expect_metrics(
        &srv,
        &[
            ("rollcall_webhook_attempts_count", 1.0),
            ("rollcall_webhook_attempts_sum", 2.0),
            ("rollcall_webhook_delivery_seconds_count", 1.0),
        ],
    )
    .await;
    assert_eq!(
        bucket(&after, "rollcall_webhook_attempts", "", 1.0),
        Some(0.0)
    );
    assert_eq!(
        bucket(&after, "rollcall_webhook_attempts", "", 2.0),
        Some(1.0)
    );
    assert!(after["rollcall_webhook_delivery_seconds_sum"] >= 0.01);
    jim.close().await;
    let info: Vec<_> = scraped
        .keys()
        .filter(|k| k.starts_with("rollcall_cluster_info{"))
        .collect();
    assert_eq!(info.len(), 1, "{info:?}");
    let (_, labels) = split_series(info[0]);
    let labels: BTreeMap<_, _> = labels.into_iter().collect();
    assert_eq!(labels.get("node").map(String::as_str), Some(node));
    assert_eq!(labels.get("bus").map(String::as_str), Some("memory"));
    assert_eq!(labels.get("state").map(String::as_str), Some("standalone"));
    srv.stop().await;
}

#[test]
fn the_parser_rejects_malformed_text() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{p=\"x\\\"y\"} 1\n";
    assert_eq!(parse(ok).get("a_total{p=\"x\\\"y\"}"), Some(&1.0));
    let bad = [
        "a 1\n",                                                           // no TYPE
        "# TYPE a gauge\na 1\n",                                           // no HELP
        "# HELP a A.\n# TYPE a gauge\na 1\na 2\n",                         // duplicate
        "# HELP a A.\n# TYPE a counter\na 1\n",                            // counter without _total
        "# HELP a A.\n# TYPE a gauge\na{p=x} 1\n",                         // unquoted
        "# HELP a A.\n# TYPE a gauge\na{p=\"x} 1\n",                       // unterminated
        "# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\na 1\n", // outside family
    ];
    for text in bad {
        let caught = std::panic::catch_unwind(|| parse(text));
        assert!(caught.is_err(), "accepted {text:?}");
    }
}

#[tokio::test]
async fn dashboard_page_calls_only_existing_routes() {
    let srv = TestServer::start().await;
    let mut jim = srv.connect(user("jim", json!({"name": "Jim"}))).await;
    jim.join("presence.room").await;

    let page = get(srv.addr, "/dashboard", false).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let html = &page.body;
    assert!(html.contains("<body id=\"rollcall-dashboard\">"));
    // Self-contained: nothing loaded from elsewhere.
    for outside in ["http://", "https://", " src=", "@import"] {
        assert!(!html.contains(outside), "the page references {outside}");
    }
    // Every request goes through one helper, `api('<route>' …)`, with a
    // route template of the HTTP API (or /readyz) as written in the
    // OpenAPI document.
    assert_eq!(html.matches("fetch(").count(), 1, "one fetch, inside api()");
    let routes: HashSet<&str> = html
        .split("api('")
        .skip(1)
        .filter_map(|rest| rest.split_once('\'').map(|(route, _)| route))
        .collect();
    let (status, doc) = http(srv.addr, "GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, 200, "{doc}");
    for route in &routes {
        assert!(
            *route == "/readyz" || doc["paths"].get(*route).is_some(),
            "the page calls {route}, which the API does not have"
        );
    }
    for needed in [
        "/api/channels",
        "/api/channels/{name}/members",
        "/api/admin/stats",
        "/api/users/{uid}/connections",
        "/api/users/{uid}/disconnect",
        "/api/connections/{id}/disconnect",
        "/api/channels/{name}/members/{uid}/remove",
        "/readyz",
    ] {
        assert!(routes.contains(needed), "the page does not call {needed}");
    }
    // It reads no /metrics (which may be on --metrics-listen only).
    assert!(!html.contains("'/metrics'"));
    let (status, members) = srv
        .http("GET", "/api/channels/presence.room/members", None)
        .await;
    assert_eq!(status, 200, "{members}");
    assert_eq!(uids(&members["members"]), ["jim"]);
    // The page asks for the key again when the API refuses it.
    assert_eq!(get(srv.addr, "/api/channels", false).await.status, 401);
    assert!(html.contains("res.status === 401"));
    jim.close().await;
    srv.stop().await;
}

/// Two `rollcall serve` processes on a private Redis: the cluster figures
/// of both nodes, a member counted as remote on the other node, and a
/// node that vanishes counted as timed out.
#[tokio::test]
async fn cluster_figures_on_a_redis_bus() {
    use crate::common::cluster::{Node, NodeOptions, Redis};
    let _serial = cluster::serial().await;
    let redis = Redis::start();
    let opts = NodeOptions::timings("100ms", "1s");
    let a = Node::start("ma", &redis.url(), &opts);
    let mut b = Node::start("mb", &redis.url(), &opts);
    cluster::wait_for_cluster(&[&a, &b], 2).await;
    let ready = [
        ("rollcall_cluster_nodes", 2.0),
        ("rollcall_bus_up", 1.0),
        ("rollcall_ready", 1.0),
    ];
    let on_a = expect_metrics_at(a.addr, &ready, WAIT).await;
    let on_b = expect_metrics_at(b.addr, &ready, WAIT).await;
    let senders = on_a["rollcall_event_sender"] + on_b["rollcall_event_sender"];
    assert_eq!(senders, 1.0, "exactly one node reports webhooks");
    for (node, m) in [("ma", &on_a), ("mb", &on_b)] {
        let info =
            format!("rollcall_cluster_info{{node=\"{node}\",bus=\"redis\",state=\"connected\"}}");
        assert_eq!(m.get(&info), Some(&1.0), "{node}: {m:?}");
        assert!(
            m["rollcall_bus_frames_sent_total"] > 0.0,
            "{node} sent heartbeats"
        );
        assert!(
            m["rollcall_bus_frames_received_total"] > 0.0,
            "{node} heard heartbeats"
        );
        assert_eq!(m["rollcall_bus_malformed_frames_total"], 0.0);
    }

    // A member on node a is a remote member on node b.
    let mut jim = a.hotsock(user("jim", json!(null))).await;
    jim.join("presence.room").await;
    expect_metrics_at(
        a.addr,
        &exp(&[(events("added", "local"), 1.0), (open("hotsock"), 1.0)]),
        WAIT,
    )
    .await;
    expect_metrics_at(
        b.addr,
        &exp(&[
            (events("added", "remote"), 1.0),
            (events("added", "local"), 0.0),
            (open("hotsock"), 0.0),
            ("rollcall_channels".into(), 1.0),
            ("rollcall_cluster_connections".into(), 1.0),
        ]),
        WAIT,
    )
    .await;
    // The lag appears once one of b's own heartbeats made the round trip.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let lag = scrape(b.addr)
            .await
            .get("rollcall_bus_lag_seconds")
            .copied();
        if let Some(lag) = lag {
            assert!((0.0..5.0).contains(&lag), "lag {lag}s");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rollcall_bus_lag_seconds within {WAIT:?}: {:?}",
            b.readyz().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // A connection on b, which a replicates.
    let pam = b.hotsock(user("pam", json!(null))).await;
    expect_metrics_at(a.addr, &[("rollcall_cluster_connections", 2.0)], WAIT).await;

    // Node b vanishes without a goodbye: a times it out, and removes
    // pam's connection as lost, past the 1 s node timeout after b's last
    // heartbeat.
    b.kill();
    let lost = "rollcall_leave_seconds_count{reason=\"node_lost\"}";
    let after = expect_metrics_at(
        a.addr,
        &[
            ("rollcall_cluster_nodes", 1.0),
            ("rollcall_cluster_nodes_timed_out_total", 1.0),
            ("rollcall_cluster_nodes_left_total", 0.0),
            (lost, 1.0),
        ],
        std::time::Duration::from_secs(10),
    )
    .await;
    let silent = after["rollcall_leave_seconds_sum{reason=\"node_lost\"}"];
    assert!((1.0..10.0).contains(&silent), "node lost after {silent}s");
    drop(pam);
    jim.close().await;
}
