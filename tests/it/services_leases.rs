//! Content, service and user presence over real HTTP and WebSockets:
//! leases refreshed by a backend and by clients, expiry, several tabs of
//! one user, `user.presence` pushes, the server-side API (send to user, to
//! everyone present, broadcast, counts, paginated members), the OpenAPI
//! document and JSON errors.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

async fn refresh(srv: &TestServer, body: Value) -> (u16, Value) {
    srv.http("POST", "/api/presence/refresh", Some(body)).await
}

/// A client refresh: no API key, the connection's id and secret.
async fn client_refresh(srv: &TestServer, c: &Client, ids: &[&str], ttl_ms: u64) -> (u16, Value) {
    let secret = c.connected["data"]["connectionSecret"].as_str().unwrap();
    http(
        srv.addr,
        "POST",
        "/api/presence/refresh",
        Some(json!({"connection_id": c.connection_id, "connection_secret": secret, "ids": ids, "ttl_ms": ttl_ms})),
        None,
    )
    .await
}

/// Member uids of a channel; none when the API omits `members` (an empty
/// channel that is not a `presence.` one).
async fn members_of(srv: &TestServer, name: &str) -> Vec<String> {
    let info = srv.channel(name).await;
    match info.get("members") {
        Some(m) => uids(m),
        None => Vec::new(),
    }
}

/// Waits until the channel has no members.
async fn wait_empty(srv: &TestServer, name: &str) {
    let empty = eventually(WAIT, || async { members_of(srv, name).await.is_empty() }).await;
    assert!(empty, "{name} still has {:?}", members_of(srv, name).await);
}

async fn user_status(srv: &TestServer, uid: &str) -> Value {
    let (status, body) = srv.http("GET", &format!("/api/users/{uid}"), None).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn a_backend_lease_is_a_membership_until_it_expires() {
    let srv = TestServer::start().await;
    // Hotsock shows member events on presence. channels only; a backend
    // may lease any channel.
    let mut watcher = srv.connect(user("watch", json!(null))).await;
    watcher.join("presence.lobby").await;
    let mut viewer = srv.connect(anonymous()).await;
    viewer.join("content:42").await;
    let mut dot = srv.connect(anonymous()).await;
    dot.join("user:u1").await;

    let ids = json!(["content:42", "presence.lobby", "service:abc"]);
    let (status, body) = refresh(
        &srv,
        json!({"user": "u1", "ids": ids, "ttl_ms": 400, "info": {"name": "U1"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ids"], ids);
    assert_eq!(body["ttl_ms"], 400);
    assert!(
        parse_rfc3339(body["expires_at"].as_str().unwrap()).is_some(),
        "{body}"
    );
    assert_eq!(body["rejected"], json!([]));

    // Visible everywhere a membership is: events, channel info, counts.
    let added = watcher.expect("hotsock.memberAdded").await;
    assert_eq!(
        added["data"]["member"],
        json!({"uid": "u1", "umd": {"name": "U1"}})
    );
    assert_eq!(srv.member_uids("content:42").await, ["u1"]);
    assert_eq!(srv.member_uids("service:abc").await, ["u1"]);
    let (_, summary) = srv.http("GET", "/api/content/42/summary", None).await;
    assert_eq!(
        summary,
        json!({"channel": "content:42", "members": 1, "connections": 2})
    );
    let (_, summary) = srv.http("GET", "/api/services/abc/summary", None).await;
    assert_eq!(
        summary,
        json!({"channel": "service:abc", "members": 1, "connections": 1})
    );

    // User presence: online through the lease alone, pushed to user:u1.
    let status = user_status(&srv, "u1").await;
    assert_eq!(
        (status["online"].clone(), status["connections"].clone()),
        (json!(true), json!(0))
    );
    assert!(parse_rfc3339(status["since"].as_str().unwrap()).is_some());
    let push = dot.expect("user.presence").await;
    assert_eq!(push["channel"], "user:u1");
    assert_eq!(push["data"], json!({"uid": "u1", "online": true}));

    // Refreshing keeps it (no new events); then it is not refreshed.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (status, _) = refresh(&srv, json!({"user": "u1", "ids": ids, "ttl_ms": 400})).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        srv.member_uids("content:42").await,
        ["u1"],
        "refreshed in time"
    );
    let started = std::time::Instant::now();
    let removed = watcher.expect("hotsock.memberRemoved").await;
    assert_eq!(removed["data"]["member"]["uid"], "u1");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "expired about on time"
    );
    wait_empty(&srv, "service:abc").await;
    assert_eq!(
        dot.expect("user.presence").await["data"],
        json!({"uid": "u1", "online": false})
    );
    let status = user_status(&srv, "u1").await;
    assert_eq!(
        status,
        json!({"uid": "u1", "online": false, "since": null, "connections": 0})
    );
    wait_empty(&srv, "content:42").await;
    watcher.expect_none(200).await;
    viewer.expect_none(10).await;
    srv.stop().await;
}

#[tokio::test]
async fn several_tabs_of_one_user_are_one_viewer() {
    let srv = TestServer::start().await;
    let tab1 = srv.connect(user("u2", json!({"name": "Two"}))).await;
    let tab2 = srv.connect(user("u2", json!({"name": "Two"}))).await;

    let (status, body) = client_refresh(&srv, &tab1, &["content:7"], 60_000).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        srv.channel("content:7").await["members"],
        json!([{"uid": "u2", "umd": {"name": "Two"}}])
    );
    let (status, _) = client_refresh(&srv, &tab2, &["content:7", "service:s"], 60_000).await;
    assert_eq!(status, 200);
    let (_, summary) = srv
        .http("GET", "/api/channels/content:7/summary", None)
        .await;
    assert_eq!(
        summary,
        json!({"channel": "content:7", "members": 1, "connections": 2})
    );
    assert_eq!(user_status(&srv, "u2").await["connections"], 2);

    // One tab closes: its lease ends with it, the other still holds u2.
    tab1.close().await;
    eventually(WAIT, || async {
        srv.http("GET", "/api/channels/content:7/summary", None)
            .await
            .1["connections"]
            == 1
    })
    .await;
    assert_eq!(srv.member_uids("content:7").await, ["u2"]);
    // An empty list ends the other lease at once.
    let (status, body) = client_refresh(&srv, &tab2, &[], 60_000).await;
    assert_eq!((status, body["expires_at"].clone()), (200, Value::Null));
    wait_empty(&srv, "content:7").await;
    assert!(members_of(&srv, "service:s").await.is_empty());
    // u2 is still online through tab2's socket.
    assert_eq!(user_status(&srv, "u2").await["online"], true);

    // Clients may lease content, service and user ids only, with their
    // own secret.
    let (status, body) = client_refresh(&srv, &tab2, &["presence.secret"], 60_000).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (403, json!("ID_NOT_ALLOWED"))
    );
    let (status, body) = http(
        srv.addr,
        "POST",
        "/api/presence/refresh",
        Some(json!({"connection_id": tab2.connection_id, "connection_secret": "wrong", "ids": ["content:7"]})),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (401, json!("INVALID_CONNECTION"))
    );
    let (status, body) = http(
        srv.addr,
        "POST",
        "/api/presence/refresh",
        Some(json!({"user": "u2", "ids": ["content:7"]})),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (401, json!("MISSING_API_KEY"))
    );
    assert!(members_of(&srv, "content:7").await.is_empty());
    srv.stop().await;
}

#[tokio::test]
async fn lease_requests_are_checked() {
    let srv = TestServer::start().await;
    let cases = [
        (json!({"ids": ["content:1"]}), "INVALID_BODY"),
        (
            json!({"user": "u", "connection_id": "x", "ids": []}),
            "INVALID_BODY",
        ),
        (
            json!({"user": "u", "ids": ["content:1"], "ttl_ms": 0}),
            "INVALID_TTL",
        ),
        (
            json!({"user": "u", "ids": ["content:1"], "ttl_ms": 99_999_999u64}),
            "INVALID_TTL",
        ),
        (json!({"user": "u", "ids": ["a b"]}), "INVALID_CHANNEL_NAME"),
        (json!({"user": "", "ids": ["content:1"]}), "INVALID_USER_ID"),
        (json!({"user": "u", "ids": "content:1"}), "INVALID_BODY"),
        (json!({"user": "u", "ids": [], "extra": 1}), "INVALID_BODY"),
    ];
    for (body, code) in cases {
        let (status, resp) = refresh(&srv, body.clone()).await;
        assert_eq!(
            (status, resp["error"]["code"].clone()),
            (400, json!(code)),
            "{body} → {resp}"
        );
        assert!(
            resp["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let many: Vec<String> = (0..101).map(|i| format!("content:{i}")).collect();
    let (status, resp) = refresh(&srv, json!({"user": "u", "ids": many})).await;
    assert_eq!(
        (status, resp["error"]["code"].clone()),
        (400, json!("TOO_MANY_IDS"))
    );
    // Duplicates count once; the default TTL applies.
    let (status, resp) = refresh(
        &srv,
        json!({"user": "u", "ids": ["content:1", "content:1"]}),
    )
    .await;
    assert_eq!(
        (status, resp["ids"].clone(), resp["ttl_ms"].clone()),
        (200, json!(["content:1"]), json!(30_000))
    );
    srv.stop().await;
}

#[tokio::test]
async fn the_server_api_reaches_users_viewers_and_everyone() {
    let srv = TestServer::start().await;
    // A subscriber of content:42, and u3 present through a lease only.
    let mut viewer = srv.connect(user("u4", json!(null))).await;
    viewer.join("content:42").await;
    let mut u3 = srv.connect(user("u3", json!(null))).await;
    let mut u3_tab = srv.connect(user("u3", json!(null))).await;
    let (status, _) = client_refresh(&srv, &u3, &["content:42"], 60_000).await;
    assert_eq!(status, 200);
    // Hotsock subscribers of non-presence. channels are not members.
    srv.wait_for_members("content:42", &["u3"]).await;

    let (status, body) = srv
        .http(
            "POST",
            "/api/content/42/send",
            Some(json!({"event": "ideavoted", "data": {"yes": 3}})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["connections"], 2, "{body}");
    let id = body["id"].as_str().unwrap();
    assert_eq!(
        viewer.expect("ideavoted").await,
        json!({"id": id, "event": "ideavoted", "channel": "content:42", "data": {"yes": 3}})
    );
    // The lease holder gets it as a direct message; the other tab does not
    // hold the lease.
    assert_eq!(
        u3.expect("ideavoted").await,
        json!({"id": id, "event": "ideavoted", "data": {"yes": 3}})
    );
    u3_tab.expect_none(100).await;

    // A backend lease of a user reaches all of that user's connections.
    refresh(&srv, json!({"user": "u3", "ids": ["service:widget"]})).await;
    let (_, body) = srv
        .http(
            "POST",
            "/api/services/widget/send",
            Some(json!({"event": "ping"})),
        )
        .await;
    assert_eq!(body["connections"], 2);
    u3.expect("ping").await;
    u3_tab.expect("ping").await;

    // Send to one user: every connection of theirs.
    let (status, body) = srv
        .http(
            "POST",
            "/api/users/u3/send",
            Some(json!({"event": "greet", "data": "hello"})),
        )
        .await;
    assert_eq!((status, body["connections"].clone()), (202, json!(2)));
    assert_eq!(u3.expect("greet").await["data"], "hello");
    assert_eq!(u3_tab.expect("greet").await["data"], "hello");
    let (_, body) = srv
        .http(
            "POST",
            "/api/users/nobody/send",
            Some(json!({"event": "greet"})),
        )
        .await;
    assert_eq!(body["connections"], 0);

    // Broadcast: everyone.
    let (status, body) = srv
        .http(
            "POST",
            "/api/broadcast",
            Some(json!({"event": "maintenance"})),
        )
        .await;
    assert_eq!((status, body["connections"].clone()), (202, json!(3)));
    for c in [&mut viewer, &mut u3, &mut u3_tab] {
        assert_eq!(c.expect("maintenance").await["data"], Value::Null);
    }

    // Listing with counts, filtered by prefix.
    let (_, body) = srv.http("GET", "/api/channels?prefix=content:", None).await;
    assert_eq!(
        body["channels"],
        json!([{"name": "content:42", "members": 1, "connections": 2, "member_bytes": 23}])
    );
    srv.stop().await;
}

#[tokio::test]
async fn members_come_in_pages() {
    let srv = TestServer::start().await;
    for i in 0..5 {
        refresh(
            &srv,
            json!({"user": format!("p{i}"), "ids": ["content:big"]}),
        )
        .await;
    }
    let page = |q: &'static str| {
        let srv = &srv;
        async move {
            srv.http(
                "GET",
                &format!("/api/channels/content:big/members{q}"),
                None,
            )
            .await
        }
    };
    let (status, body) = page("?limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(body["total"], 5);
    assert_eq!(uids(&body["members"]), ["p0", "p1"]);
    assert_eq!(body["next_offset"], 2);
    let (_, body) = page("?offset=4&limit=2").await;
    assert_eq!(uids(&body["members"]), ["p4"]);
    assert_eq!(body["next_offset"], Value::Null);
    let (_, body) = page("").await;
    assert_eq!(body["members"].as_array().unwrap().len(), 5);
    for bad in [
        "?limit=0",
        "?limit=1001",
        "?offset=-1",
        "?limit=x",
        "?other=1",
    ] {
        let (status, body) = page(bad).await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (400, json!("INVALID_QUERY")),
            "{bad}"
        );
    }
    let (_, body) = srv.http("GET", "/api/channels/nothing/members", None).await;
    assert_eq!(
        body,
        json!({"channel": "nothing", "total": 0, "offset": 0, "members": [], "next_offset": null})
    );
    srv.stop().await;
}

#[tokio::test]
async fn openapi_document_and_json_errors_everywhere() {
    let srv = TestServer::start().await;
    let (status, doc) = http(srv.addr, "GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, method) in [
        ("/api/presence/refresh", "post"),
        ("/api/users/{uid}", "get"),
        ("/api/users/{uid}/privacy", "put"),
        ("/api/channels/{name}/members", "get"),
        ("/api/content/{id}/send", "post"),
        ("/api/publish", "post"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    let assert_json_error = |status: u16, body: &Value, want: u16| {
        assert_eq!(status, want, "{body}");
        assert!(body["error"]["code"].is_string(), "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    };
    let (s, b) = srv.http("GET", "/api/nothing", None).await;
    assert_json_error(s, &b, 404);
    let (s, b) = srv.http("DELETE", "/api/publish", None).await;
    assert_json_error(s, &b, 405);
    let (s, b) = http(srv.addr, "GET", "/api/users/u1", None, None).await;
    assert_json_error(s, &b, 401);
    for (method, path) in [
        ("POST", "/api/publish"),
        ("POST", "/api/broadcast"),
        ("POST", "/api/users/u1/send"),
        ("POST", "/api/channels/c/send"),
        ("POST", "/api/content/1/send"),
        ("POST", "/api/services/1/send"),
        ("POST", "/api/presence/refresh"),
        ("PUT", "/api/users/u1/privacy"),
        ("POST", "/api/client/privacy"),
    ] {
        let (s, b) = http_raw(
            srv.addr,
            method,
            path,
            &format!("Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"),
            b"{",
        )
        .await;
        assert_json_error(s, &b, 400);
        assert_eq!(b["error"]["code"], "INVALID_BODY", "{method} {path}");
    }
    let (s, b) = srv
        .http(
            "POST",
            "/api/users/u1/send",
            Some(json!({"event": "hotsock.x"})),
        )
        .await;
    assert_json_error(s, &b, 400);
    let (s, b) = srv
        .http("GET", &format!("/api/users/{}", "u".repeat(129)), None)
        .await;
    assert_json_error(s, &b, 400);
    let (s, b) = srv.http("GET", "/api/users/%FF", None).await;
    assert_json_error(s, &b, 400);
    srv.stop().await;
}
