//! Connection events and client messages across a three-node cluster on
//! one private Redis: a backend reading the event stream of one node sees
//! the connections and forwarded client messages of the others, tagged
//! with their node; an operator on one node lists a user's connections on
//! every node and disconnects them; a node shutting down has its clients'
//! closes reach the others before it leaves; when a node is SIGKILLed,
//! every one of its connections (anonymous ones included) is reported
//! closed with reason `node_lost`, on the stream of the nodes left and
//! once by webhook, although the dead node was the one sending the
//! cluster's webhooks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common;
use crate::common::cluster::*;
use crate::event_stream::{EventReader, Sse};
use crate::webhook_support::*;

/// Every connection event the webhook receiver got.
type Seen = Arc<Mutex<Vec<Value>>>;

async fn connection_webhooks() -> (String, Seen) {
    let (url, mut rx, _) = receiver(0, false).await;
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    tokio::spawn(async move {
        while let Some(hit) = rx.recv().await {
            let events = verified_events(&hit);
            sink.lock().unwrap().extend(events.into_iter().filter(|e| {
                e["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("connection_"))
            }));
        }
    });
    (url, seen)
}

fn closes_of(seen: &Seen, connection: &Value) -> Vec<Value> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "connection_closed" && e["connection"] == *connection)
        .cloned()
        .collect()
}

/// Reads `reader` until `what` matches (5 s at most) and returns it.
async fn seen_on(reader: &mut EventReader, what: &str, pred: impl Fn(&Sse) -> bool) -> Sse {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let event = tokio::time::timeout_at(deadline, reader.next())
            .await
            .unwrap_or_else(|_| panic!("{what} on the stream within 5 s"));
        if pred(&event) {
            return event;
        }
    }
}

#[tokio::test]
async fn connections_of_every_node_are_followed_and_a_lost_node_closes_them_once() {
    let _serial = serial().await;
    let redis = Redis::start();
    let (url, hooks) = connection_webhooks().await;
    let opts = NodeOptions {
        extra: [
            "--webhook-url",
            &url,
            "--webhook-secret",
            HOOK_SECRET,
            "--webhook-batch-ms",
            "50",
            "--webhook-connection-events",
            "--forward-channels",
            "room.*",
        ]
        .map(String::from)
        .to_vec(),
        ..NodeOptions::default()
    };
    // a is the oldest: it sends the cluster's webhooks until it dies.
    let mut a = Node::start("a", &redis.url(), &opts);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let b = Node::start("b", &redis.url(), &opts);
    let mut c = Node::start("c", &redis.url(), &opts);
    wait_for_cluster(&[&a, &b, &c], 3).await;
    let mut reader = EventReader::open(
        b.addr,
        "?type=connection_opened,connection_closed,client_message",
        None,
    )
    .await;

    // Connections on a and c, and a client message on a, seen on b.
    let mut amy = a.hotsock(user("amy", Value::Null)).await;
    let opened = seen_on(&mut reader, "amy's connection_opened", |e| {
        e.name == "connection_opened" && e.data["user_id"] == "amy"
    })
    .await;
    assert_eq!(opened.data["node"], "a", "{:?}", opened.data);
    assert_eq!(opened.data["protocol"], "hotsock", "{:?}", opened.data);
    let amy_conn = opened.data["connection"].clone();
    let anonymous = Sc::connect_anonymous(&a).await;
    let opened = seen_on(&mut reader, "the anonymous connection_opened", |e| {
        e.name == "connection_opened" && e.data["protocol"] == "socketcluster"
    })
    .await;
    assert!(opened.data.get("user_id").is_none(), "{:?}", opened.data);
    let anonymous_conn = opened.data["connection"].clone();
    amy.join("room.1").await;
    amy.send(json!({"event": "chat", "channel": "room.1", "data": "hi"}))
        .await;
    let message = seen_on(&mut reader, "amy's client_message", |e| {
        e.name == "client_message"
    })
    .await;
    assert_eq!(
        (
            &message.data["node"],
            &message.data["user_id"],
            &message.data["data"]
        ),
        (&json!("a"), &json!("amy"), &json!("hi")),
        "{:?}",
        message.data
    );
    let cy = c.hotsock(user("cy", Value::Null)).await;
    drop(cy);
    let closed = seen_on(&mut reader, "cy's connection_closed", |e| {
        e.name == "connection_closed" && e.data["user_id"] == "cy"
    })
    .await;
    assert_eq!(
        (&closed.data["node"], &closed.data["reason"]),
        (&json!("c"), &json!("client_closed")),
        "{:?}",
        closed.data
    );

    // From b, an operator sees kim's connections on a and c, and
    // disconnects them: one by user, one by id.
    let mut kim_a = a.hotsock(user("kim", Value::Null)).await;
    kim_a.join("presence.lobby").await;
    let mut kim_c = c.hotsock(user("kim", Value::Null)).await;
    let listed = common::eventually(Duration::from_secs(5), || async {
        let (_, body) = b.http("GET", "/api/users/kim/connections", None).await;
        body["connections"].as_array().map_or(0, Vec::len) == 2
    })
    .await;
    let (_, body) = b.http("GET", "/api/users/kim/connections", None).await;
    assert!(listed, "{body}");
    let on = |node: &str| {
        body["connections"]
            .as_array()
            .and_then(|l| l.iter().find(|c| c["node"] == node).cloned())
            .unwrap_or_default()
    };
    assert_eq!(on("a")["protocol"], "hotsock", "{body}");
    assert_eq!(on("a")["channels"], json!(["presence.lobby"]), "{body}");
    // Removed from a channel on a, from b: kim's connection on a is told
    // and stays open.
    let (status, body) = b
        .http(
            "POST",
            "/api/channels/presence.lobby/members/kim/remove",
            Some(json!({"reason": "lobby closed"})),
        )
        .await;
    assert_eq!((status, &body["connections"]), (202, &json!(0)), "{body}");
    let removed = kim_a.expect("hotsock.unsubscribed").await;
    assert_eq!(
        (&removed["channel"], &removed["data"]["reason"]),
        (&json!("presence.lobby"), &json!("lobby closed")),
        "{removed}"
    );
    let gone = common::eventually(Duration::from_secs(5), || async {
        b.member_set("presence.lobby").await.is_empty()
    })
    .await;
    assert!(gone, "kim is still a member of presence.lobby seen from b");
    kim_a.ping_pong().await;
    let kim_c_id = on("c")["id"].as_str().unwrap_or_default().to_string();
    let (status, body) = b
        .http(
            "POST",
            &format!("/api/connections/{kim_c_id}/disconnect"),
            Some(json!({"reason": "one session only"})),
        )
        .await;
    assert_eq!((status, &body["here"]), (202, &json!(false)), "{body}");
    assert_eq!(
        kim_c.expect_close().await,
        (4100, "one session only".to_string())
    );
    let (status, body) = b
        .http(
            "POST",
            "/api/users/kim/disconnect",
            Some(json!({"reason": "account suspended"})),
        )
        .await;
    assert_eq!((status, &body["connections"]), (202, &json!(0)), "{body}");
    assert_eq!(
        kim_a.expect_close().await,
        (4100, "account suspended".to_string())
    );
    for node in ["c", "a"] {
        let closed = seen_on(&mut reader, "kim's kicked connection_closed", |e| {
            e.name == "connection_closed" && e.data["user_id"] == "kim"
        })
        .await;
        assert_eq!(
            (&closed.data["node"], &closed.data["reason"]),
            (&json!(node), &json!("kicked")),
            "{:?}",
            closed.data
        );
    }

    // c shuts down: its clients are closed, and b's readers see why.
    let _cleo = c.hotsock(user("cleo", Value::Null)).await;
    seen_on(&mut reader, "cleo's connection_opened", |e| {
        e.name == "connection_opened" && e.data["user_id"] == "cleo"
    })
    .await;
    c.terminate();
    let closed = seen_on(&mut reader, "cleo's connection_closed", |e| {
        e.name == "connection_closed" && e.data["user_id"] == "cleo"
    })
    .await;
    assert_eq!(
        (&closed.data["node"], &closed.data["reason"]),
        (&json!("c"), &json!("server_shutdown")),
        "{:?}",
        closed.data
    );

    // a dies without a word: its two connections are lost.
    tokio::time::sleep(Duration::from_millis(600)).await;
    a.kill();
    // In either order.
    let (mut amy_lost, mut anonymous_lost) = (None, None);
    while amy_lost.is_none() || anonymous_lost.is_none() {
        let closed = seen_on(&mut reader, "a node_lost close", |e| {
            e.name == "connection_closed"
        })
        .await;
        assert_eq!(closed.data["reason"], "node_lost", "{:?}", closed.data);
        assert_eq!(closed.data["node"], "a", "{:?}", closed.data);
        if closed.data["connection"] == amy_conn {
            amy_lost = Some(closed.data);
        } else if closed.data["connection"] == anonymous_conn {
            anonymous_lost = Some(closed.data);
        }
    }
    assert_eq!(amy_lost.unwrap_or_default()["user_id"], "amy");
    assert_eq!(
        anonymous_lost.unwrap_or_default()["protocol"],
        "socketcluster"
    );

    // By webhook: once each, from the node that took over.
    for conn in [&amy_conn, &anonymous_conn] {
        let arrived = common::eventually(Duration::from_secs(8), || async {
            !closes_of(&hooks, conn).is_empty()
        })
        .await;
        assert!(arrived, "no connection_closed webhook for {conn}");
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    for conn in [&amy_conn, &anonymous_conn] {
        let closes = closes_of(&hooks, conn);
        assert_eq!(closes.len(), 1, "{closes:?}");
        assert_eq!(closes[0]["reason"], "node_lost", "{closes:?}");
    }
    drop((amy, anonymous));
}
