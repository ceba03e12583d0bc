//! The dashboard (`GET /dashboard`) and the routes it reads: the paged
//! channel list (`GET /api/channels?offset&limit&contains`) and this
//! node's counters (`GET /api/admin/stats`).

use serde_json::{Value, json};

use crate::common::*;

/// The channel names of a `GET /api/channels` answer.
fn names(page: &Value) -> Vec<String> {
    page["channels"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_channel_list_comes_in_pages_and_filters_by_substring() {
    let srv = TestServer::start().await;
    let mut pam = srv.connect(user("pam", json!({"desk": 1}))).await;
    for room in ["a", "b", "c", "d", "e"] {
        pam.join(&format!("presence.{room}")).await;
    }
    pam.join("news").await;

    let (status, first) = srv.http("GET", "/api/channels?limit=2", None).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(names(&first), ["news", "presence.a"]);
    assert_eq!(
        (&first["total"], &first["offset"], &first["next_offset"]),
        (&json!(6), &json!(0), &json!(2))
    );
    let (_, last) = srv
        .http("GET", "/api/channels?offset=4&limit=2", None)
        .await;
    assert_eq!(names(&last), ["presence.d", "presence.e"]);
    assert_eq!(last["next_offset"], Value::Null, "{last}");
    let (_, beyond) = srv.http("GET", "/api/channels?offset=50", None).await;
    assert_eq!(names(&beyond), Vec::<String>::new());
    assert_eq!(
        (&beyond["total"], &beyond["next_offset"]),
        (&json!(6), &Value::Null)
    );

    // `contains` and `prefix` together; `total` counts what matches.
    let (_, filtered) = srv
        .http("GET", "/api/channels?prefix=presence.&contains=.c", None)
        .await;
    assert_eq!(names(&filtered), ["presence.c"]);
    assert_eq!(filtered["total"], 1);
    let (_, filtered) = srv.http("GET", "/api/channels?contains=e", None).await;
    assert_eq!(
        names(&filtered),
        [
            "news",
            "presence.a",
            "presence.b",
            "presence.c",
            "presence.d",
            "presence.e"
        ]
    );

    for bad in ["limit=0", "limit=1001", "offset=-1", "limit=x", "page=2"] {
        let (status, body) = srv.http("GET", &format!("/api/channels?{bad}"), None).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "INVALID_QUERY", "{bad}: {body}");
    }
    pam.close().await;
    srv.stop().await;
}

#[tokio::test]
async fn admin_stats_count_connections_messages_and_deliveries() {
    let srv = TestServer::start().await;
    let (status, _) = http(srv.addr, "GET", "/api/admin/stats", None, None).await;
    assert_eq!(status, 401, "the stats need the API key");

    let (status, before) = srv.http("GET", "/api/admin/stats", None).await;
    assert_eq!(status, 200, "{before}");
    let mut jim = srv.connect(user("jim", json!(null))).await;
    jim.join("presence.office").await;
    let mut pam = srv.connect(user("pam", json!(null))).await;
    pam.join("presence.office").await;
    jim.expect("hotsock.memberAdded").await;
    srv.publish("presence.office", "news", json!({"text": "hi"}))
        .await;
    jim.expect("news").await;
    pam.expect("news").await;

    let (_, after) = srv.http("GET", "/api/admin/stats", None).await;
    let open_hotsock = |stats: &Value| {
        stats["connections"]
            .as_array()
            .and_then(|list| list.iter().find(|p| p["protocol"] == "hotsock"))
            .and_then(|p| p["open"].as_u64())
    };
    let counter = |stats: &Value, name: &str| stats[name].as_u64().unwrap_or(u64::MAX);
    assert_eq!(open_hotsock(&before), Some(0), "{before}");
    assert_eq!(open_hotsock(&after), Some(2), "{after}");
    assert_eq!(
        counter(&after, "messages_published") - counter(&before, "messages_published"),
        1,
        "{before} -> {after}"
    );
    assert_eq!(
        counter(&after, "deliveries") - counter(&before, "deliveries"),
        2,
        "one message to two subscribers: {before} -> {after}"
    );
    let (_, ready) = http(srv.addr, "GET", "/readyz", None, None).await;
    assert_eq!(after["node"], ready["cluster"]["node_id"], "{after}");
    let uptime = after["uptime_seconds"].as_f64().unwrap_or(-1.0);
    assert!((0.0..60.0).contains(&uptime), "{after}");
    jim.close().await;
    pam.close().await;
    srv.stop().await;
}
