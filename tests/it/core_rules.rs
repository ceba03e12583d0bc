//! The presence core's rules, driven through the Hotsock front end over real
//! WebSocket connections: per-user dedup, one event order per channel,
//! snapshot consistency, slow consumers, and the configured limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rollcall::presence::Origin;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

/// Publishes a marker through the HTTP API and asserts it is the very next
/// frame each client gets: proves nothing else was queued for them before.
async fn expect_quiet(srv: &TestServer, channel: &str, clients: &mut [&mut Client]) {
    let id = srv.publish(channel, "marker", json!(null)).await;
    for c in clients.iter_mut() {
        let frame = c.next().await;
        assert_eq!(
            frame["event"], "marker",
            "expected nothing before the marker, got {frame}"
        );
        assert_eq!(frame["id"], id);
    }
}

/// Reads frames until the server publish `event`, returning the frames before it.
async fn read_until(client: &mut Client, event: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = client.next().await;
        if frame["event"] == event {
            return frames;
        }
        frames.push(frame);
    }
}

fn member_events(frames: &[Value]) -> impl Iterator<Item = &Value> {
    frames.iter().filter(|f| {
        f["event"]
            .as_str()
            .is_some_and(|e| e.starts_with("hotsock.member"))
    })
}

#[tokio::test]
async fn two_connections_of_one_user_are_one_member() {
    let srv = TestServer::start().await;
    let ch = "presence.dedup";
    let mut dwight = srv.connect(user("dwight", json!(null))).await;
    dwight.join(ch).await;

    let mut jim1 = srv.connect(user("jim", json!({"n": "Jim"}))).await;
    jim1.join(ch).await;
    let added = dwight.expect("hotsock.memberAdded").await;
    assert_eq!(
        added["data"]["member"],
        json!({"uid": "jim", "umd": {"n": "Jim"}})
    );

    // Same user, same umd: one member, and nobody hears about it.
    let mut jim2 = srv.connect(user("jim", json!({"n": "Jim"}))).await;
    let sub = jim2.join(ch).await;
    assert_eq!(
        sub["data"]["members"],
        json!([{"uid": "dwight", "umd": null}, {"uid": "jim", "umd": {"n": "Jim"}}])
    );
    expect_quiet(&srv, ch, &mut [&mut dwight, &mut jim1, &mut jim2]).await;
    let info = srv.channel(ch).await;
    assert_eq!(info["subscriptionsCount"], 3, "{info}");
    assert_eq!(uids(&info["members"]), ["dwight", "jim"]);

    // The first connection leaves: jim is still there, no memberRemoved.
    jim1.close().await;
    let gone = eventually(WAIT, || async {
        srv.channel(ch).await["subscriptionsCount"] == 2
    })
    .await;
    assert!(gone, "the closed connection is still counted");
    expect_quiet(&srv, ch, &mut [&mut dwight, &mut jim2]).await;
    assert_eq!(srv.member_uids(ch).await, ["dwight", "jim"]);

    // The last connection leaves: now memberRemoved.
    let left = jim2.unsubscribe(ch).await;
    assert_eq!(left["event"], "hotsock.unsubscribed", "{left}");
    let removed = dwight.expect("hotsock.memberRemoved").await;
    assert_eq!(
        removed["data"]["member"],
        json!({"uid": "jim", "umd": {"n": "Jim"}})
    );
    assert_eq!(
        removed["data"]["members"],
        json!([{"uid": "dwight", "umd": null}])
    );
    expect_quiet(&srv, ch, &mut [&mut dwight]).await;
}

#[tokio::test]
async fn second_connection_with_other_umd_updates_the_member_for_everyone() {
    let srv = TestServer::start().await;
    let ch = "presence.dedup-umd";
    let mut dwight = srv.connect(user("dwight", json!(null))).await;
    dwight.join(ch).await;
    let mut jim1 = srv.connect(user("jim", json!({"v": 1}))).await;
    jim1.join(ch).await;
    dwight.expect("hotsock.memberAdded").await;
    let mut pam = srv.connect(user("pam", json!(null))).await;
    pam.join(ch).await;
    dwight.expect("hotsock.memberAdded").await;
    jim1.expect("hotsock.memberAdded").await;

    let mut jim2 = srv.connect(user("jim", json!({"v": 2}))).await;
    let sub = jim2.join(ch).await;
    let updated_list = json!([
        {"uid": "dwight", "umd": null},
        {"uid": "jim", "umd": {"v": 2}},
        {"uid": "pam", "umd": null}
    ]);
    // The member keeps its place in the list; its data is the latest.
    assert_eq!(sub["data"]["members"], updated_list);
    // memberUpdated goes to every member, the updating connection included.
    for c in [&mut dwight, &mut jim1, &mut pam, &mut jim2] {
        let f = c.expect("hotsock.memberUpdated").await;
        assert_eq!(f["channel"], ch);
        assert_eq!(f["data"]["member"], json!({"uid": "jim", "umd": {"v": 2}}));
        assert_eq!(f["data"]["members"], updated_list);
    }
    expect_quiet(&srv, ch, &mut [&mut dwight, &mut jim1, &mut pam, &mut jim2]).await;

    // The second connection leaves: the member falls back to the data of
    // the connection that is still there.
    jim2.unsubscribe(ch).await;
    for c in [&mut dwight, &mut jim1, &mut pam] {
        let f = c.expect("hotsock.memberUpdated").await;
        assert_eq!(f["data"]["member"], json!({"uid": "jim", "umd": {"v": 1}}));
    }
    jim1.unsubscribe(ch).await;
    for c in [&mut dwight, &mut pam] {
        let f = c.expect("hotsock.memberRemoved").await;
        assert_eq!(f["data"]["member"], json!({"uid": "jim", "umd": {"v": 1}}));
        assert_eq!(
            f["data"]["members"],
            json!([{"uid": "dwight", "umd": null}, {"uid": "pam", "umd": null}])
        );
    }
    expect_quiet(&srv, ch, &mut [&mut dwight, &mut pam]).await;
    // Neither former connection hears anything more from the channel.
    jim1.ping_pong().await;
    jim2.ping_pong().await;
}

/// What one churning client saw.
struct Seen {
    uid: String,
    /// The `hotsock.subscribed` frame.
    subscribed: Value,
    /// Frames after it (up to its unsubscribe, or until the end marker).
    frames: Vec<Value>,
    /// How the stream relates to the reference order.
    kind: Kind,
    client: Option<Client>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Joins, publishes and stays until the end.
    Stayer,
    /// Joins, publishes, then unsubscribes.
    Leaver,
    /// A second connection of a stayer, with other umd; joins and leaves.
    Dup,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_per_channel_and_snapshots_line_up_with_the_stream() {
    const CH: &str = "presence.order";
    const CHURNERS: usize = 40;
    let srv = Arc::new(TestServer::start().await);

    // Observers are in the channel before the churn starts.
    let mut observers = Vec::new();
    for i in 0..4 {
        let mut o = srv
            .connect(user(&format!("obs{i}"), json!({"obs": i})))
            .await;
        o.join(CH).await;
        observers.push(o);
    }
    srv.publish(CH, "start", json!(null)).await;
    let mut lists = Vec::new();
    for (i, o) in observers.iter_mut().enumerate() {
        // Rebuild the list from the snapshot: the `subscribed` frame was
        // read by join(); observer i then saw the later observers arrive.
        let mut list: Vec<Value> = (0..=i)
            .map(|j| json!({"uid": format!("obs{j}"), "umd": {"obs": j}}))
            .collect();
        for f in read_until(o, "start").await {
            apply_member_event(&mut list, &f);
        }
        lists.push(list);
    }

    let mut tasks = Vec::new();
    for i in 0..CHURNERS {
        let srv = srv.clone();
        tasks.push(tokio::spawn(async move {
            let uid = format!("c{i:02}");
            let kind = if i % 4 == 0 {
                Kind::Leaver
            } else {
                Kind::Stayer
            };
            let mut c = srv.connect(user(&uid, json!({"i": i}))).await;
            let subscribed = c.join(CH).await;
            for k in 0..3 {
                c.send(json!({"channel": CH, "event": "chat", "data": {"from": uid, "k": k}}))
                    .await;
            }
            let mut seen = vec![];
            if kind == Kind::Leaver {
                c.send(json!({"event": "hotsock.unsubscribe", "channel": CH}))
                    .await;
                let frames = read_until(&mut c, "hotsock.unsubscribed").await;
                seen.push(Seen {
                    uid: uid.clone(),
                    subscribed,
                    frames,
                    kind,
                    client: None,
                });
                return seen;
            }
            if i % 4 == 1 {
                let mut d = srv.connect(user(&uid, json!({"i": i, "dup": true}))).await;
                let dup_sub = d.join(CH).await;
                d.send(json!({"event": "hotsock.unsubscribe", "channel": CH}))
                    .await;
                let frames = read_until(&mut d, "hotsock.unsubscribed").await;
                seen.push(Seen {
                    uid: uid.clone(),
                    subscribed: dup_sub,
                    frames,
                    kind: Kind::Dup,
                    client: None,
                });
            }
            seen.push(Seen {
                uid,
                subscribed,
                frames: vec![],
                kind,
                client: Some(c),
            });
            seen
        }));
    }
    for p in 0..2 {
        let srv = srv.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..20 {
                srv.publish(CH, "server", json!({"p": p, "k": k})).await;
            }
            vec![]
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.expect("churn task"));
    }
    srv.publish(CH, "end", json!(null)).await;

    // Every observer saw the same events in the same order.
    let mut sequences = Vec::new();
    for (o, list) in observers.iter_mut().zip(lists.iter_mut()) {
        let frames = read_until(o, "end").await;
        for f in member_events(&frames) {
            apply_member_event(list, f);
        }
        sequences.push(frames);
    }
    let reference = &sequences[0];
    for (i, s) in sequences.iter().enumerate() {
        assert_eq!(
            s.len(),
            reference.len(),
            "observer {i} saw a different number of events"
        );
        assert!(
            s == reference,
            "observer {i} saw another order than observer 0"
        );
    }
    let chats = reference.iter().filter(|f| f["event"] == "chat").count();
    let servers = reference.iter().filter(|f| f["event"] == "server").count();
    assert_eq!(chats, CHURNERS * 3, "client messages lost or duplicated");
    assert_eq!(servers, 40, "server publishes lost or duplicated");

    let final_members = srv.channel(CH).await["members"].clone();
    for list in &lists {
        assert_eq!(Value::Array(list.clone()), final_members);
    }
    let expected_uids: Vec<String> = (0..4)
        .map(|i| format!("obs{i}"))
        .chain(
            (0..CHURNERS)
                .filter(|i| i % 4 != 0)
                .map(|i| format!("c{i:02}")),
        )
        .collect();
    let mut got = uids(&final_members);
    got.sort();
    let mut expected_uids = expected_uids;
    expected_uids.sort();
    assert_eq!(got, expected_uids);

    let position = |pred: &dyn Fn(&Value) -> bool| reference.iter().position(pred);
    for s in &mut seen {
        if let Some(c) = s.client.as_mut() {
            s.frames = read_until(c, "end").await;
        }
        let uid = s.uid.as_str();
        // The snapshot is the member list at the join's place in the order,
        // and the stream continues exactly from there.
        let (start, end) = match s.kind {
            Kind::Stayer | Kind::Leaver => {
                let a = position(&|f| {
                    f["event"] == "hotsock.memberAdded" && f["data"]["member"]["uid"] == uid
                })
                .unwrap_or_else(|| panic!("no memberAdded for {uid}"));
                let end = match s.kind {
                    Kind::Leaver => position(&|f| {
                        f["event"] == "hotsock.memberRemoved" && f["data"]["member"]["uid"] == uid
                    })
                    .unwrap_or_else(|| panic!("no memberRemoved for {uid}")),
                    _ => reference.len(),
                };
                (a, end)
            }
            Kind::Dup => {
                let dup_umd = s.subscribed["meta"]["umd"].clone();
                let u = position(&|f| {
                    f["event"] == "hotsock.memberUpdated"
                        && f["data"]["member"]["uid"] == uid
                        && f["data"]["member"]["umd"] == dup_umd
                })
                .unwrap_or_else(|| panic!("no memberUpdated for the second connection of {uid}"));
                let r = (u + 1..reference.len())
                    .find(|&k| {
                        reference[k]["event"] == "hotsock.memberUpdated"
                            && reference[k]["data"]["member"]["uid"] == uid
                    })
                    .unwrap_or_else(|| {
                        panic!("no memberUpdated when the second connection of {uid} left")
                    });
                (u, r)
            }
        };
        assert_eq!(
            s.subscribed["data"]["members"], reference[start]["data"]["members"],
            "snapshot of {uid} ({:?}) is not the list at its join",
            s.kind
        );
        // A joiner does not get its own memberAdded; a second connection
        // with new data gets the memberUpdated it caused.
        let from = if s.kind == Kind::Dup {
            start
        } else {
            start + 1
        };
        let expected: Vec<Value> = reference[from..end]
            .iter()
            .filter(|f| s.kind == Kind::Dup || !(f["event"] == "chat" && f["data"]["from"] == uid))
            .cloned()
            .collect();
        assert!(
            s.frames == expected,
            "{uid} ({:?}) saw {} frames, expected {} from the reference order",
            s.kind,
            s.frames.len(),
            expected.len()
        );
        let mut list = s.subscribed["data"]["members"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for f in member_events(&s.frames) {
            apply_member_event(&mut list, f);
        }
        if s.kind == Kind::Stayer {
            assert_eq!(
                Value::Array(list),
                final_members,
                "{uid} ends with another member list"
            );
        }
    }
}

/// The JSON value of the first `"key":` in `text`, parsed on its own. The
/// join storm uses this instead of parsing whole frames: 200 clients each
/// parsing up to 200 full member lists would dominate the run in a debug
/// build. Only safe where no value contains the key text (true here: every
/// umd is null).
fn field(text: &str, key: &str) -> Option<Value> {
    let at = text.find(&format!("\"{key}\":"))? + key.len() + 3;
    let mut de = serde_json::Deserializer::from_str(&text[at..]);
    serde::Deserialize::deserialize(&mut de).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_storm_ends_with_one_member_list_everywhere() {
    const CH: &str = "presence.storm";
    const N: usize = 200;
    let srv = Arc::new(TestServer::start().await);
    let mut joins = Vec::new();
    for i in 0..N {
        let srv = srv.clone();
        joins.push(tokio::spawn(async move {
            let mut c = srv.connect(user(&format!("u{i:03}"), json!(null))).await;
            let sub = c.join(CH).await;
            (c, sub)
        }));
    }
    let mut clients = Vec::new();
    for j in joins {
        clients.push(j.await.expect("join task"));
    }
    srv.publish(CH, "end", json!(null)).await;
    let info = srv.channel(CH).await;
    assert_eq!(
        info["subscriptionsCount"], N,
        "{}",
        info["subscriptionsCount"]
    );
    let expected = info["members"].clone();
    assert_eq!(expected.as_array().map(Vec::len), Some(N));

    let mut readers = Vec::new();
    for (mut c, sub) in clients {
        readers.push(tokio::spawn(async move {
            // Snapshot + deltas, as a client keeps its list.
            let mut list: Vec<Value> = sub["data"]["members"].as_array().cloned().expect("members");
            let mut last_full = None;
            loop {
                let text = c.next_text_within(Duration::from_secs(10)).await;
                match field(&text, "event").as_ref().and_then(Value::as_str) {
                    Some("end") => break,
                    Some("hotsock.memberAdded") => {
                        let member = field(&text, "member").expect("member");
                        assert!(
                            !list.iter().any(|m| m["uid"] == member["uid"]),
                            "added twice: {member}"
                        );
                        list.push(member);
                        last_full = Some(text);
                    }
                    other => panic!("unexpected {other:?} during a join storm"),
                }
            }
            (list, last_full, c)
        }));
    }
    for r in readers {
        let (list, last_full, _client) = r.await.expect("reader task");
        assert_eq!(
            Value::Array(list.clone()),
            expected,
            "a client's list differs from the server's"
        );
        if let Some(text) = last_full {
            let frame: Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(
                frame["data"]["members"], expected,
                "the last member event's list differs"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_and_others_keep_receiving() {
    const CH: &str = "presence.flood";
    const MESSAGES: usize = 600;
    // 256 KiB holds 16 of the 16 KB messages: room for the reading client
    // to lag a little on a busy machine, none for one that stops reading.
    let srv = TestServer::start_with(|c| c.limits.outbox_bytes = 256 * 1024).await;
    let mut slow = srv.connect_small_buffer(user("slow", json!(null))).await;
    slow.join(CH).await;
    let mut fast = srv.connect(user("fast", json!(null))).await;
    fast.join(CH).await;
    // From here on nobody reads `slow`'s socket until the flood is over.

    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut removed = false;
        loop {
            let f = fast.next().await;
            match f["event"].as_str() {
                Some("blob") => got.push(f["data"]["i"].as_u64().expect("i")),
                Some("hotsock.memberRemoved") => {
                    assert_eq!(f["data"]["member"]["uid"], "slow");
                    removed = true;
                }
                Some("done") => return (got, removed),
                _ => panic!("unexpected {f}"),
            }
        }
    });
    let payload = "x".repeat(16_000);
    let started = Instant::now();
    for i in 0..MESSAGES {
        srv.publish(CH, "blob", json!({"i": i, "p": payload})).await;
    }
    let pumped = started.elapsed();
    // The server dropped the slow consumer soon after its queue filled up,
    // instead of buffering the flood for it.
    let gone = eventually(Duration::from_secs(3), || async {
        srv.member_uids(CH).await == ["fast"]
    })
    .await;
    assert!(
        gone,
        "slow consumer still a member {:?} after the flood",
        started.elapsed()
    );
    srv.publish(CH, "done", json!(null)).await;
    let (got, removed) = reader.await.expect("reader");
    assert_eq!(
        got,
        (0..MESSAGES as u64).collect::<Vec<_>>(),
        "the fast client missed messages"
    );
    assert!(removed, "the fast client was not told the slow one left");
    assert!(pumped < Duration::from_secs(20));

    // What the slow client can still read is a gap-free prefix of the
    // flood, bounded by socket buffers plus its 64 KiB queue: the rest was
    // never buffered for it.
    let added = slow.expect("hotsock.memberAdded").await;
    assert_eq!(added["data"]["member"]["uid"], "fast");
    let mut prefix = 0u64;
    let ending = loop {
        match tokio::time::timeout(WAIT, slow.ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let f: Value = serde_json::from_str(&t).expect("JSON");
                assert_eq!(f["event"], "blob", "{}", &t[..t.len().min(200)]);
                assert_eq!(f["data"]["i"], prefix, "gap in what the slow client got");
                prefix += 1;
            }
            Ok(Some(Ok(Message::Close(frame)))) => break Some(frame.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => break None,
            Err(_) => panic!("the slow consumer's connection is still open"),
        }
    };
    // Its backlog is dropped, not flushed, so the close frame fits in what
    // the socket can still take: the client learns why.
    assert_eq!(
        ending,
        Some(Some(1013)),
        "slow consumer not closed with 1013"
    );
    assert!(
        (prefix as usize) < MESSAGES / 2,
        "the slow client could still read {prefix} of {MESSAGES} messages: they were buffered"
    );
}

/// JSON size of `{"uid":..,"umd":..}`, the unit of the member-data budget.
fn weight(uid: &str, umd: &Value) -> usize {
    json!({"uid": uid, "umd": umd}).to_string().len()
}

#[tokio::test]
async fn member_bytes_limit_is_exact_at_100_kb() {
    const CH: &str = "presence.full";
    let srv = TestServer::start().await;
    // Fill the channel to 100 000 - 22 bytes. The bulk comes in as
    // external presences (the path a cluster replica uses), so that a
    // hundred 1 KB members do not each need a socket; the boundary itself
    // is probed through Hotsock subscribes below.
    let presence = srv.presence();
    let target = 100_000 - weight("x", &Value::Null);
    assert_eq!(weight("x", &Value::Null), 22);
    let mut total = 0;
    let mut i = 0;
    while total < target {
        let uid = format!("m{i:03}");
        let n = (target - total - weight(&uid, &json!(""))).min(1000);
        let umd = json!("a".repeat(n));
        total += weight(&uid, &umd);
        let uid: Arc<str> = Arc::from(uid.as_str());
        presence
            .add_external_presence(CH, &uid, Origin::Lease(uid.clone()), Arc::new(umd))
            .expect("fill member fits");
        i += 1;
    }
    assert_eq!(total, target);

    let mut watcher = srv.connect(user("xy", json!(null))).await;
    let err = watcher.subscribe(CH).await;
    assert_eq!(
        err["event"], "hotsock.error",
        "23 bytes over a 22-byte gap: {err}"
    );
    assert_eq!(err["error"]["code"], "PRESENCE_CHANNEL_CAPACITY_REACHED");
    assert_eq!(err["channel"], CH);

    let mut x = srv.connect(user("x", json!(null))).await;
    let sub = x.join(CH).await;
    assert_eq!(sub["data"]["members"].as_array().map(Vec::len), Some(i + 1));
    let (_, list) = srv.http("GET", "/api/channels", None).await;
    let summary = list["channels"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == CH).cloned())
        .expect("channel listed");
    assert_eq!(summary["member_bytes"], 100_000, "{summary}");

    let mut y = srv.connect(user("y", json!(null))).await;
    y.send(json!({"event": "hotsock.subscribe", "channel": CH}))
        .await;
    y.expect_error("PRESENCE_CHANNEL_CAPACITY_REACHED", Some(CH))
        .await;
    // A second connection of a member with the same data adds no bytes.
    let mut x2 = srv.connect(user("x", json!(null))).await;
    x2.join(CH).await;
    // A second connection with bigger data would: refused.
    assert_eq!(weight("x", &json!("zzz")), 23);
    let mut x3 = srv.connect(user("x", json!("zzz"))).await;
    x3.send(json!({"event": "hotsock.subscribe", "channel": CH}))
        .await;
    x3.expect_error("PRESENCE_CHANNEL_CAPACITY_REACHED", Some(CH))
        .await;
    // Room is made: the next join fits.
    let m0: Arc<str> = Arc::from("m000");
    presence.remove_external_presence(CH, &m0, &Origin::Lease(m0.clone()));
    y.join(CH).await;
    assert!(srv.member_uids(CH).await.contains(&"y".to_string()));
}

#[tokio::test]
async fn members_per_channel_limit() {
    let srv = TestServer::start_with(|c| c.limits.max_members_per_channel = 3).await;
    let ch = "presence.small";
    let mut clients = Vec::new();
    for uid in ["a", "b", "c"] {
        let mut c = srv.connect(user(uid, json!(null))).await;
        c.join(ch).await;
        clients.push(c);
    }
    let mut d = srv.connect(user("d", json!(null))).await;
    d.send(json!({"event": "hotsock.subscribe", "channel": ch}))
        .await;
    d.expect_error("PRESENCE_CHANNEL_MEMBER_LIMIT_REACHED", Some(ch))
        .await;
    // Another connection of an existing member is not a new member.
    let mut a2 = srv.connect(user("a", json!(null))).await;
    a2.join(ch).await;
    // Plain channels have subscribers, not members: no member limit.
    for _ in 0..5 {
        let mut s = srv.connect(anonymous()).await;
        s.join("plain.big").await;
        clients.push(s);
    }
    assert_eq!(srv.channel("plain.big").await["subscriptionsCount"], 5);
    // When a member leaves, there is room again.
    let c = clients.remove(2);
    c.close().await;
    let ok = eventually(WAIT, || async { srv.member_uids(ch).await == ["a", "b"] }).await;
    assert!(ok);
    d.join(ch).await;
    assert_eq!(srv.member_uids(ch).await, ["a", "b", "d"]);
}

#[tokio::test]
async fn channels_per_connection_limit() {
    let srv = TestServer::start_with(|c| c.limits.max_channels_per_connection = 3).await;
    let mut c = srv.connect(user("jim", json!(null))).await;
    c.join("one").await;
    c.join("two").await;
    c.join("presence.three").await;
    c.send(json!({"event": "hotsock.subscribe", "channel": "four"}))
        .await;
    c.expect_error("CHANNEL_LIMIT_REACHED", Some("four")).await;
    c.send(json!({"event": "hotsock.subscribe", "channel": "presence.four"}))
        .await;
    c.expect_error("CHANNEL_LIMIT_REACHED", Some("presence.four"))
        .await;
    // A refused presence subscribe leaves no member behind.
    assert_eq!(srv.member_uids("presence.four").await, Vec::<String>::new());
    // The limit is per connection.
    let mut other = srv.connect(user("jim", json!(null))).await;
    other.join("four").await;
    // Leaving one makes room.
    assert_eq!(c.unsubscribe("one").await["event"], "hotsock.unsubscribed");
    c.join("four").await;
    assert_eq!(srv.channel("four").await["subscriptionsCount"], 2);
}

#[tokio::test]
async fn connections_per_user_limit_refuses_the_upgrade_with_429() {
    let srv = TestServer::start_with(|c| c.limits.max_connections_per_user = 2).await;
    let token = srv.token(user("jim", json!(null)));
    let mut first = srv.connect_raw(&token).await.expect("first");
    first.read_connected().await;
    let mut second = srv.connect_raw(&token).await.expect("second");
    second.read_connected().await;
    assert_eq!(srv.connect_raw(&token).await.err(), Some(429));
    // Other users and anonymous connections are not affected.
    srv.connect(user("pam", json!(null))).await;
    for _ in 0..3 {
        srv.connect(anonymous()).await;
    }
    // The refused attempt did not count: after one closes, one more fits.
    first.close().await;
    let deadline = Instant::now() + WAIT;
    let mut third = loop {
        match srv.connect_raw(&token).await {
            Ok(c) => break c,
            Err(status) => assert_eq!(status, 429),
        }
        assert!(
            Instant::now() < deadline,
            "no room for a new connection after one closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    third.read_connected().await;
    second.ping_pong().await;
    assert_eq!(srv.connect_raw(&token).await.err(), Some(429));
}

#[tokio::test]
async fn max_frame_bytes_closes_with_1009_at_the_boundary() {
    const LIMIT: usize = 4096;
    let srv = TestServer::start_with(|c| c.limits.max_frame_bytes = LIMIT).await;
    let ch = "presence.frames";
    let mut bystander = srv.connect(user("pam", json!(null))).await;
    bystander.join(ch).await;
    let mut c = srv.connect(user("jim", json!(null))).await;
    c.join(ch).await;
    bystander.expect("hotsock.memberAdded").await;

    // Exactly the limit: accepted (JSON allows trailing whitespace).
    let ping = r#"{"event":"hotsock.ping"}"#;
    let exact = format!("{ping}{}", " ".repeat(LIMIT - ping.len()));
    assert_eq!(exact.len(), LIMIT);
    c.send_text(&exact).await;
    c.expect("hotsock.pong").await;

    // One byte more: closed with 1009.
    c.send_text(&format!("{exact} ")).await;
    let (code, reason) = c.expect_close().await;
    assert_eq!(code, 1009, "{reason}");
    assert!(
        reason.contains(&LIMIT.to_string()),
        "reason should name the limit: {reason}"
    );
    let removed = bystander.expect("hotsock.memberRemoved").await;
    assert_eq!(removed["data"]["member"]["uid"], "jim");
    let id = srv.publish(ch, "after", json!(1)).await;
    assert_eq!(bystander.expect("after").await["id"], id);
}

#[tokio::test]
async fn message_rate_limit_warns_then_closes_with_1008() {
    const RATE: usize = 10;
    let srv = TestServer::start_with(|c| c.limits.max_messages_per_second = RATE as u32).await;
    let ch = "presence.rate";
    let mut bystander = srv.connect(user("pam", json!(null))).await;
    bystander.join(ch).await;

    // A short burst over the limit: the excess is refused with RATE_LIMITED,
    // the connection stays open.
    let mut c = srv.connect(user("jim", json!(null))).await;
    let ping = Message::Text(r#"{"event":"hotsock.ping"}"#.into());
    for _ in 0..RATE + 5 {
        c.ws.feed(ping.clone()).await.expect("feed");
    }
    c.ws.flush().await.expect("flush");
    let (mut pongs, mut limited) = (0, 0);
    for _ in 0..RATE + 5 {
        let f = c.next().await;
        match f["event"].as_str() {
            Some("hotsock.pong") => pongs += 1,
            Some("hotsock.error") => {
                assert_eq!(f["error"]["code"], "RATE_LIMITED", "{f}");
                limited += 1;
            }
            _ => panic!("unexpected {f}"),
        }
    }
    assert!(
        (RATE..RATE + 5).contains(&pongs),
        "{pongs} pongs for a burst of {}",
        RATE + 5
    );
    assert_eq!(pongs + limited, RATE + 5);
    // Within the rate again, the connection works.
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.ping_pong().await;
    c.join(ch).await;
    bystander.expect("hotsock.memberAdded").await;

    // Flooding on: closed with 1008, and the member is removed.
    // Enough frames that 2 x RATE of them are refused in a row even if the
    // bucket refills a token now and then on a busy machine.
    for _ in 0..RATE * 30 {
        if c.ws.feed(ping.clone()).await.is_err() {
            break;
        }
    }
    let _ = c.ws.flush().await;
    match c.ending_within(WAIT).await {
        Ending::Close(code, reason) => assert_eq!(code, 1008, "{reason}"),
        Ending::Dropped => panic!("flooder dropped without a 1008 close"),
    }
    let removed = bystander.expect("hotsock.memberRemoved").await;
    assert_eq!(removed["data"]["member"]["uid"], "jim");
    bystander.ping_pong().await;
}
