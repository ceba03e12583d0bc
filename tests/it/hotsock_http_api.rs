//! The server-side HTTP API over real TCP: auth, publish validation,
//! channel listings and health, checked against what Hotsock clients see.

use serde_json::{Value, json};

use crate::common::*;

const JSON: &str = "Content-Type: application/json\r\n";

fn bearer(key: &str) -> String {
    format!("Authorization: Bearer {key}\r\n{JSON}")
}

/// POST /api/publish with a raw body and the right key.
async fn publish_raw(srv: &TestServer, body: &str) -> (u16, Value) {
    http_raw(
        srv.addr,
        "POST",
        "/api/publish",
        &bearer(API_KEY),
        body.as_bytes(),
    )
    .await
}

fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "no message: {body}");
}

fn weight(uid: &str, umd: &Value) -> usize {
    json!({"uid": uid, "umd": umd}).to_string().len()
}

#[tokio::test]
async fn api_routes_need_the_bearer_key() {
    let srv = TestServer::start().await;
    let mut sub = srv.connect(anonymous()).await;
    sub.join("news").await;
    let routes = [
        (
            "POST",
            "/api/publish",
            r#"{"channel":"news","event":"e","data":1}"#,
        ),
        ("GET", "/api/channels", ""),
        ("GET", "/api/channels/news", ""),
    ];
    for (method, path, body) in routes {
        let (status, resp) = http_raw(srv.addr, method, path, JSON, body.as_bytes()).await;
        assert_error(status, &resp, 401, "MISSING_API_KEY");
        let (status, resp) = http_raw(
            srv.addr,
            method,
            path,
            &bearer("wrong-key"),
            body.as_bytes(),
        )
        .await;
        assert_error(status, &resp, 401, "INVALID_API_KEY");
        let (status, resp) = http_raw(
            srv.addr,
            method,
            path,
            &bearer(&format!("{API_KEY}x")),
            body.as_bytes(),
        )
        .await;
        assert_error(status, &resp, 401, "INVALID_API_KEY");
        let basic = format!("Authorization: Basic {API_KEY}\r\n{JSON}");
        let (status, _) = http_raw(srv.addr, method, path, &basic, body.as_bytes()).await;
        assert_eq!(status, 401, "{method} {path} with Basic auth");
        let (status, _) = http_raw(srv.addr, method, path, &bearer(""), body.as_bytes()).await;
        assert_eq!(status, 401, "{method} {path} with an empty key");
    }
    // None of the refused publishes reached the subscriber.
    sub.ping_pong().await;
    // With the key it works.
    let (status, _) = publish_raw(&srv, routes[0].2).await;
    assert_eq!(status, 202);
    assert_eq!(sub.expect("e").await["data"], 1);
    // /healthz is open.
    let (status, body) = http(srv.addr, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn publish_validation_errors() {
    let srv = TestServer::start().await;
    let mut sub = srv.connect(anonymous()).await;
    sub.join("news").await;
    let bodies: &[(&str, &str)] = &[
        ("{", "INVALID_BODY"),
        ("", "INVALID_BODY"),
        ("[]", "INVALID_BODY"),
        ("\"news\"", "INVALID_BODY"),
        (r#"{"event":"e","data":1}"#, "INVALID_BODY"),
        (r#"{"channel":"news","data":1}"#, "INVALID_BODY"),
        (r#"{"channel":5,"event":"e"}"#, "INVALID_BODY"),
        (r#"{"channel":"news","event":["e"]}"#, "INVALID_BODY"),
        (r#"{"channel":null,"event":"e"}"#, "INVALID_BODY"),
        (r#"{"channel":"","event":"e"}"#, "INVALID_CHANNEL_NAME"),
        (r#"{"channel":"a b","event":"e"}"#, "INVALID_CHANNEL_NAME"),
        (
            r#"{"channel":"a\u0001b","event":"e"}"#,
            "INVALID_CHANNEL_NAME",
        ),
        (
            r#"{"channel":"news\n","event":"e"}"#,
            "INVALID_CHANNEL_NAME",
        ),
        (r#"{"channel":"news","event":""}"#, "INVALID_EVENT_NAME"),
        (
            r#"{"channel":"news","event":"hotsock.connected"}"#,
            "INVALID_EVENT_NAME",
        ),
        (r##"{"channel":"news","event":"#x"}"##, "INVALID_EVENT_NAME"),
        (
            r#"{"channel":"news","event":"a\u0000"}"#,
            "INVALID_EVENT_NAME",
        ),
    ];
    for (body, code) in bodies {
        let (status, resp) = publish_raw(&srv, body).await;
        assert_error(status, &resp, 400, code);
    }
    let long_channel = json!({"channel": "c".repeat(257), "event": "e"}).to_string();
    let (status, resp) = publish_raw(&srv, &long_channel).await;
    assert_error(status, &resp, 400, "INVALID_CHANNEL_NAME");
    let long_event = json!({"channel": "news", "event": "e".repeat(129)}).to_string();
    let (status, resp) = publish_raw(&srv, &long_event).await;
    assert_error(status, &resp, 400, "INVALID_EVENT_NAME");
    // data: 32 KiB of JSON fits, one byte more does not.
    let over =
        json!({"channel": "news", "event": "big", "data": "d".repeat(32 * 1024 - 1)}).to_string();
    let (status, resp) = publish_raw(&srv, &over).await;
    assert_error(status, &resp, 400, "MESSAGE_TOO_LARGE");
    // A body over the request limit.
    let huge =
        json!({"channel": "news", "event": "big", "data": "d".repeat(300 * 1024)}).to_string();
    let (status, resp) = publish_raw(&srv, &huge).await;
    assert_error(status, &resp, 413, "MESSAGE_TOO_LARGE");
    // Not JSON by content type.
    let (status, resp) = http_raw(
        srv.addr,
        "POST",
        "/api/publish",
        &format!("Authorization: Bearer {API_KEY}\r\nContent-Type: text/plain\r\n"),
        br#"{"channel":"news","event":"e"}"#,
    )
    .await;
    assert_error(status, &resp, 400, "INVALID_BODY");
    // Nothing reached the subscriber.
    sub.ping_pong().await;

    // The edge cases that are fine.
    let fits =
        json!({"channel": "news", "event": "big", "data": "d".repeat(32 * 1024 - 2)}).to_string();
    assert_eq!(publish_raw(&srv, &fits).await.0, 202);
    assert_eq!(
        sub.expect("big").await["data"].as_str().map(str::len),
        Some(32 * 1024 - 2)
    );
    let (status, _) = publish_raw(
        &srv,
        &json!({"channel": "c".repeat(256), "event": "e".repeat(128)}).to_string(),
    )
    .await;
    assert_eq!(status, 202);
    // No data, or null data: delivered as "data": null.
    for body in [
        r#"{"channel":"news","event":"bare"}"#,
        r#"{"channel":"news","event":"bare","data":null}"#,
    ] {
        let (status, resp) = publish_raw(&srv, body).await;
        assert_eq!(status, 202, "{resp}");
        let got = sub.expect("bare").await;
        assert_eq!(
            got,
            json!({"id": resp["id"], "event": "bare", "channel": "news", "data": null})
        );
    }
    // A channel nobody is in: accepted, delivered to no one.
    assert_eq!(
        publish_raw(&srv, r#"{"channel":"empty","event":"e"}"#)
            .await
            .0,
        202
    );
    sub.ping_pong().await;
}

#[tokio::test]
async fn channel_listing_counts_members_and_connections() {
    let srv = TestServer::start().await;
    let (status, body) = srv.http("GET", "/api/channels", None).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"channels": [], "total": 0, "offset": 0, "next_offset": null})
        )
    );

    let jim_umd = json!({"n": "Jim"});
    let mut jim1 = srv.connect(user("jim", jim_umd.clone())).await;
    jim1.join("presence.a").await;
    let mut jim2 = srv.connect(user("jim", jim_umd.clone())).await;
    jim2.join("presence.a").await;
    let mut dwight = srv.connect(user("dwight", json!(null))).await;
    dwight.join("presence.a").await;
    let mut pam = srv.connect(user("pam", json!(null))).await;
    pam.join("presence.b").await;
    pam.join("news").await;
    let mut anon = srv.connect(anonymous()).await;
    anon.join("news").await;

    let (status, body) = srv.http("GET", "/api/channels", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"channels": [
            {"name": "news", "members": 0, "connections": 2, "member_bytes": 0},
            {"name": "presence.a", "members": 2, "connections": 3,
             "member_bytes": weight("jim", &jim_umd) + weight("dwight", &Value::Null)},
            {"name": "presence.b", "members": 1, "connections": 1, "member_bytes": weight("pam", &Value::Null)}
        ], "total": 3, "offset": 0, "next_offset": null})
    );
    // Empty channels disappear from the listing.
    jim1.close().await;
    jim2.unsubscribe("presence.a").await;
    dwight.unsubscribe("presence.a").await;
    pam.unsubscribe("presence.b").await;
    let only_news = eventually(WAIT, || async {
        let (_, body) = srv.http("GET", "/api/channels", None).await;
        body["channels"]
            .as_array()
            .map(|a| a.iter().map(|c| c["name"].clone()).collect::<Vec<_>>())
            == Some(vec![json!("news")])
    })
    .await;
    assert!(
        only_news,
        "{}",
        srv.http("GET", "/api/channels", None).await.1
    );
}

#[tokio::test]
async fn channel_info_has_name_count_and_members_in_join_order() {
    let srv = TestServer::start().await;
    let mut dwight = srv.connect(user("dwight", json!({"desk": 2}))).await;
    dwight.join("presence.office").await;
    let mut jim1 = srv.connect(user("jim", json!(null))).await;
    jim1.join("presence.office").await;
    let mut jim2 = srv.connect(user("jim", json!(null))).await;
    jim2.join("presence.office").await;
    assert_eq!(
        srv.channel("presence.office").await,
        json!({"name": "presence.office", "subscriptionsCount": 3,
               "members": [{"uid": "dwight", "umd": {"desk": 2}}, {"uid": "jim", "umd": null}]})
    );
    // Unknown channels: zero, no members.
    assert_eq!(
        srv.channel("presence.nobody").await,
        json!({"name": "presence.nobody", "subscriptionsCount": 0, "members": []})
    );
    // Standard channels: subscriptions, no members.
    let mut anon = srv.connect(anonymous()).await;
    anon.join("room/1").await;
    let info = srv.channel("room%2F1").await;
    assert_eq!(info["name"], "room/1", "{info}");
    assert_eq!(info["subscriptionsCount"], 1);
    assert!(
        info.get("members").is_none_or(|m| *m == json!([])),
        "{info}"
    );
    // Percent-encoded UTF-8 names.
    let mut cafe = srv.connect(user("zoe", json!(null))).await;
    cafe.join("presence.café").await;
    let info = srv.channel("presence.caf%C3%A9").await;
    assert_eq!(info["name"], "presence.café");
    assert_eq!(info["members"], json!([{"uid": "zoe", "umd": null}]));
    // Names no front end accepts.
    for bad in ["a%01b", "a%20b", &"c".repeat(257)] {
        let (status, body) = srv.http("GET", &format!("/api/channels/{bad}"), None).await;
        assert_error(status, &body, 400, "INVALID_CHANNEL_NAME");
    }
    // After a disconnect the count and members follow.
    jim1.close().await;
    let ok = eventually(WAIT, || async {
        srv.channel("presence.office").await["subscriptionsCount"] == 2
    })
    .await;
    assert!(ok);
    assert_eq!(srv.member_uids("presence.office").await, ["dwight", "jim"]);
    drop(jim2);
    srv.wait_for_members("presence.office", &["dwight"]).await;
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let srv = TestServer::start().await;
    let (status, _) = http(srv.addr, "GET", "/api/channels", None, None).await;
    assert_eq!(status, 401);
    let mut stream = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!(
        "GET /api/channels HTTP/1.1\r\nHost: x\r\nAuthorization: bearer {API_KEY}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

#[tokio::test]
async fn healthz_reports_connections_and_channels() {
    let srv = TestServer::start().await;
    let (status, body) = http(srv.addr, "GET", "/healthz", None, None).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"status": "ok", "connections": 0, "channels": 0, "bus": "standalone", "nodes": 1})
        )
    );
    let mut a = srv.connect(user("a", json!(null))).await;
    a.join("presence.x").await;
    a.join("news").await;
    let b = srv.connect(anonymous()).await;
    let (status, body) = http(srv.addr, "GET", "/healthz", None, Some("any-key")).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"status": "ok", "connections": 2, "channels": 2, "bus": "standalone", "nodes": 1})
        )
    );
    a.close().await;
    b.close().await;
    let idle = eventually(WAIT, || async {
        http(srv.addr, "GET", "/healthz", None, None).await.1
            == json!({"status": "ok", "connections": 0, "channels": 0, "bus": "standalone", "nodes": 1})
    })
    .await;
    assert!(
        idle,
        "{}",
        http(srv.addr, "GET", "/healthz", None, None).await.1
    );
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let srv = TestServer::start().await;
    assert_eq!(srv.http("GET", "/api/nothing", None).await.0, 404);
    assert_eq!(srv.http("GET", "/api/publish", None).await.0, 405);
    assert_eq!(
        srv.http("POST", "/api/channels", Some(json!({}))).await.0,
        405
    );
    assert_eq!(srv.http("DELETE", "/api/channels/x", None).await.0, 405);
}
