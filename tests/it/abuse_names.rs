//! One validation for every front end (src/names.rs): channel names, event
//! names, user ids and message data that one protocol's envelope used to
//! let through are refused on all of them, and nothing reaches the others.

use serde_json::{Value, json};

use crate::common::protocols::{Peer, Proto};
use crate::common::*;

async fn observer(srv: &TestServer, channel: &str) -> Client {
    let mut c = srv
        .connect(json!({"uid": "watcher", "channels": {"*": {"subscribe": true}}}))
        .await;
    c.join(channel).await;
    c
}

/// Sends a SocketCluster request and reads its reply.
async fn request(sc: &mut Peer, event: &str, data: Value) -> Value {
    let cid = sc.sc_request(event, data).await;
    loop {
        let f = sc.next().await;
        if f["rid"] == cid {
            return f;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketcluster_names_and_data_are_held_to_the_shared_rules() {
    let srv = TestServer::start_with(|c| c.channels.open_channels = vec!["*".into()]).await;
    let mut watcher = observer(&srv, "room").await;
    let mut sc = Peer::connect(&srv, Proto::Sc, Some(json!({"username": "mallory"})))
        .await
        .expect("connected");
    let long = "x".repeat(30_000);
    for bad in [
        long.as_str(),
        "a\u{0}b",
        "esc\u{1b}[31m",
        "two words",
        "evil\u{202e}txt",
    ] {
        let reply = request(&mut sc, "#subscribe", json!({"channel": bad})).await;
        assert_eq!(
            reply["error"]["name"], "InvalidArgumentsError",
            "{bad:?}: {reply}"
        );
    }
    assert!(
        srv.presence().channels().iter().all(|c| c.name.len() < 300),
        "a refused name left a channel behind"
    );
    sc.subscribe("room").await.expect("a good name works");
    // Too deep, too large: refused, and the Hotsock watcher gets neither.
    let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    let big = json!("y".repeat(40 * 1024)).to_string();
    for (what, data) in [("deep", deep), ("large", big)] {
        let data: Value = serde_json::from_str(&data).expect("valid JSON");
        let reply = request(
            &mut sc,
            "#publish",
            json!({"channel": "room", "data": data}),
        )
        .await;
        assert_eq!(
            reply["error"]["name"], "InvalidArgumentsError",
            "{what}: {reply}"
        );
    }
    watcher.expect_none(300).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socketio_category_cannot_forge_a_hotsock_event() {
    let srv = TestServer::start_with(|c| c.channels.open_channels = vec!["room".into()]).await;
    let mut watcher = observer(&srv, "room").await;
    let mut sio = Peer::connect(&srv, Proto::SocketIo, Some(json!({"sub": "mallory"})))
        .await
        .expect("connected");
    sio.subscribe("room").await.expect("subscribed");
    for category in ["hotsock.memberRemoved", "#publish"] {
        sio.emit(
            "SEND_MESSAGE",
            json!({"category": category, "topicId": "room", "content": {"bodyText": "x"}}),
        )
        .await;
        let f = sio.next().await;
        assert_eq!(f["event"], "SEND_MESSAGE_FAILED", "{category}: {f}");
        assert_eq!(f["data"]["error"]["code"], "invalid.parameters", "{f}");
    }
    watcher.expect_none(300).await;
    srv.stop().await;
}

#[tokio::test]
async fn user_ids_the_api_cannot_name_are_refused_at_connect() {
    let srv = TestServer::start().await;
    for uid in ["nul\u{0}byte", "esc\u{1b}[2J", "rtl\u{202e}"] {
        let token = srv.token(json!({"uid": uid}));
        assert_eq!(srv.connect_raw(&token).await.err(), Some(401), "{uid:?}");
    }
    assert!(
        srv.connect_raw(&srv.token(json!({"uid": "Zoë"})))
            .await
            .is_ok()
    );
    srv.stop().await;
}
