//! Operator actions over the HTTP API: a user's connections with their
//! protocol, node and channels; disconnecting every connection of a user
//! or one connection, whatever protocol each speaks. The clients are
//! closed with code 4100 and the operator's reason (Socket.IO: an error
//! event carrying it), and backends see `connection_closed` with reason
//! `kicked`. The cluster-wide half is in `cluster_connections`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::protocols::{Peer, Proto};
use crate::common::{Ending, TestServer, http};
use crate::event_stream::EventReader;

#[tokio::test]
async fn an_operator_lists_and_disconnects_a_users_connections_on_every_front_end() {
    let srv = TestServer::start_open().await;
    let mut reader = EventReader::open(srv.addr, "?type=connection_closed", None).await;
    let mut alice_hs = Peer::connect(&srv, Proto::Hotsock, Some(json!({"uid": "alice"})))
        .await
        .expect("hotsock");
    alice_hs.subscribe("room.1").await.expect("subscribes");
    let mut alice_sc = Peer::connect(&srv, Proto::Sc, Some(json!({"username": "alice"})))
        .await
        .expect("sc");
    let mut bob = Peer::connect(&srv, Proto::SocketIo, Some(json!({"uid": "bob"})))
        .await
        .expect("socket.io");

    let (status, body) = srv.http("GET", "/api/users/alice/connections", None).await;
    assert_eq!(status, 200, "{body}");
    let conns = body["connections"].as_array().cloned().unwrap_or_default();
    let protocols: Vec<&str> = conns
        .iter()
        .filter_map(|c| c["protocol"].as_str())
        .collect();
    assert_eq!(conns.len(), 2, "{body}");
    assert!(
        protocols.contains(&"hotsock") && protocols.contains(&"socketcluster"),
        "{body}"
    );
    let hotsock = conns
        .iter()
        .find(|c| c["protocol"] == "hotsock")
        .cloned()
        .unwrap_or_default();
    assert_eq!(hotsock["channels"], json!(["room.1"]), "{body}");
    assert!(hotsock["node"].is_string(), "{body}");

    // Refused: no key, a bad reason, a bad id.
    let (status, _) = http(srv.addr, "POST", "/api/users/alice/disconnect", None, None).await;
    assert_eq!(status, 401);
    let (status, body) = srv
        .http(
            "POST",
            "/api/users/alice/disconnect",
            Some(json!({"reason": "x".repeat(200)})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("INVALID_REASON")),
        "{body}"
    );
    let (status, body) = srv
        .http("POST", "/api/connections/nothex/disconnect", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("INVALID_CONNECTION_ID")),
        "{body}"
    );

    // Every connection of alice goes, with the reason; bob stays.
    let (status, body) = srv
        .http(
            "POST",
            "/api/users/alice/disconnect",
            Some(json!({"reason": "account suspended"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["connections"], 2, "{body}");
    for peer in [&mut alice_hs, &mut alice_sc] {
        let (ending, _) = peer.ending_within(Duration::from_secs(5)).await;
        assert_eq!(
            ending,
            Ending::Close(4100, "account suspended".into()),
            "{}",
            peer.label()
        );
    }
    for _ in 0..2 {
        let closed = reader.next().await;
        assert_eq!(closed.data["user_id"], "alice", "{:?}", closed.data);
        assert_eq!(closed.data["reason"], "kicked", "{:?}", closed.data);
    }
    let (_, body) = srv.http("GET", "/api/users/alice/connections", None).await;
    assert_eq!(body["connections"], json!([]), "{body}");

    // One connection, by id: bob's Socket.IO client is told why.
    let (_, body) = srv.http("GET", "/api/users/bob/connections", None).await;
    let id = body["connections"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (status, body) = srv
        .http("POST", &format!("/api/connections/{id}/disconnect"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["here"], true, "{body}");
    // The error event with the reason, then the namespace DISCONNECT
    // (socket.io-client: "io server disconnect", no automatic reconnect).
    let error = bob.next().await;
    assert_eq!(error["event"], "error", "{error}");
    assert_eq!(
        error["data"]["message"], "disconnected by the server's operator",
        "{error}"
    );
    assert_eq!(bob.next().await, json!({"packet": "41/chat,"}));
    let closed = reader.next().await;
    assert_eq!(
        (&closed.data["user_id"], &closed.data["reason"]),
        (&Value::from("bob"), &Value::from("kicked")),
        "{:?}",
        closed.data
    );
}

/// Removing a user from a channel ends their subscriptions there on every
/// front end, each client told in its protocol's words, while the
/// connection stays open (and may subscribe again).
#[tokio::test]
async fn an_operator_removes_a_user_from_a_channel_on_every_front_end() {
    let srv = TestServer::start_open().await;
    let channel = "presence.stage";
    let mut watcher = Peer::connect(&srv, Proto::Hotsock, Some(json!({"uid": "watcher"})))
        .await
        .expect("hotsock");
    watcher.subscribe(channel).await.expect("subscribes");
    let path = |uid: &str| format!("/api/channels/{channel}/members/{uid}/remove");

    // Refused: no key, a bad channel name.
    let (status, _) = http(srv.addr, "POST", &path("anyone"), None, None).await;
    assert_eq!(status, 401);
    let (status, body) = srv
        .http("POST", "/api/channels/a%20b/members/x/remove", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("INVALID_CHANNEL_NAME")),
        "{body}"
    );
    // Nobody to remove: nothing happens.
    let (status, body) = srv.http("POST", &path("nobody"), None).await;
    assert_eq!((status, &body["connections"]), (202, &json!(0)), "{body}");

    for proto in Proto::ALL {
        let uid = format!("speaker-{}", proto.name());
        let claims = json!({"uid": uid, "username": uid});
        let mut speaker = Peer::connect(&srv, proto, Some(claims))
            .await
            .expect("connects");
        speaker.subscribe(channel).await.expect("subscribes");
        watcher.expect_joined(channel, &uid).await;

        let (status, body) = srv
            .http("POST", &path(&uid), Some(json!({"reason": "off-topic"})))
            .await;
        assert_eq!((status, &body["connections"]), (202, &json!(1)), "{body}");
        assert_eq!(body["reason"], "off-topic", "{body}");
        expect_removed(&mut speaker, channel, "off-topic").await;
        let left = watcher.next().await;
        assert!(
            left["event"] == "hotsock.memberRemoved"
                && left["data"]["member"]["uid"] == uid.as_str(),
            "{proto:?}: {left}"
        );
        let members = srv.member_uids(channel).await;
        assert_eq!(members, vec!["watcher".to_string()], "{proto:?}");

        // Still connected: it may subscribe again.
        speaker.subscribe(channel).await.expect("subscribes again");
        watcher.expect_joined(channel, &uid).await;
        speaker.close().await;
        watcher.next().await;
    }
}

/// The removal notice of each protocol, reading past presence traffic.
async fn expect_removed(peer: &mut Peer, channel: &str, reason: &str) {
    let who = peer.label();
    match peer.proto {
        Proto::Hotsock => {
            let f = peer.next().await;
            assert_eq!(
                f,
                json!({"event": "hotsock.unsubscribed", "channel": channel,
                    "data": {"reason": reason}, "meta": f["meta"].clone()}),
                "{who}"
            );
        }
        Proto::SocketIo => {
            let f = peer.next().await;
            assert_eq!(
                f,
                json!({"event": "CHANNEL_UNSUBSCRIBED", "data": {
                    "channel": {"_id": channel, "type": "topic"}, "reason": reason}}),
                "{who}"
            );
        }
        Proto::Sc => {
            // The channel and its presence> feed, in either order.
            let mut kicked = Vec::new();
            while kicked.len() < 2 {
                let f = peer.next().await;
                if f["event"] == "#kickOut" {
                    assert_eq!(f["data"]["message"], reason, "{who}: {f}");
                    kicked.push(
                        f["data"]["channel"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    );
                } else {
                    assert_eq!(f["event"], "#publish", "{who}: {f}");
                }
            }
            kicked.sort();
            assert_eq!(
                kicked,
                [channel.to_string(), format!("presence>{channel}")],
                "{who}"
            );
        }
        Proto::Sgc => {
            let f = peer.next().await;
            assert_eq!(
                f["method"], "sgc@presence@channel@member@remove",
                "{who}: {f}"
            );
            assert_eq!(f["channel"]["name"], channel, "{who}: {f}");
            assert_eq!(f["reason"], "kicked", "{who}: {f}");
            assert_eq!(f["message"]["text"], reason, "{who}: {f}");
        }
    }
}
