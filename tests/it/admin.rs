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
