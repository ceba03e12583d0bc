//! The Hotsock front end against the compatibility checklist of
//! ../shared/specs/hotsock.md §8 (items 1-9), over real WebSocket
//! connections to an in-process server.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

fn now() -> u64 {
    rollcall::time::unix_now()
}

/// A token signed with the test secret; `exp` (now + 1 h) is added when
/// absent, `scope` is left as given.
fn token_with(mut claims: Value) -> String {
    if let Some(obj) = claims.as_object_mut() {
        obj.entry("exp").or_insert(json!(now() + 3600));
    }
    sign_exact(SECRET, &claims)
}

fn subscribe_frame(channel: &str, token: &str) -> Value {
    json!({"event": "hotsock.subscribe", "channel": channel, "data": {"token": token}})
}

// ---- 1. Upgrade and connect-token checks ---------------------------------

#[tokio::test]
async fn upgrades_on_hotsock_and_any_path_below_it() {
    let srv = TestServer::start().await;
    let token = srv.token(user("jim", json!(null)));
    for path in [
        "/hotsock",
        "/hotsock/",
        "/hotsock/v1",
        "/hotsock/v1/",
        "/hotsock/a/b/c",
    ] {
        let mut c = srv
            .connect_path(&format!("{path}?token={token}"))
            .await
            .unwrap_or_else(|status| panic!("{path}: upgrade refused with {status}"));
        c.read_connected().await;
        c.ping_pong().await;
    }
    for path in ["/", "/hotsockets", "/other"] {
        let refused = srv
            .connect_path(&format!("{path}?token={token}"))
            .await
            .err();
        assert_eq!(
            refused,
            Some(404),
            "{path} should not be a Hotsock endpoint"
        );
    }
}

#[tokio::test]
async fn bad_connect_tokens_are_refused_with_401_before_the_upgrade() {
    let srv = TestServer::start().await;
    let good = srv.token(user("jim", json!(null)));
    let other = srv.token(user("mallory", json!(null)));
    let parts: Vec<&str> = good.split('.').collect();
    // Change a character in the middle of the signature (the last one may
    // only carry padding bits).
    let mut sig: Vec<char> = parts[2].chars().collect();
    sig[10] = if sig[10] == 'A' { 'B' } else { 'A' };
    let tampered_sig: String = sig.into_iter().collect();
    let other_payload = other.split('.').nth(1).expect("payload");
    let header_none = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload_jim = parts[1];
    let cases: Vec<(&str, String)> = vec![
        ("empty token", String::new()),
        ("not a JWT", "abc".into()),
        (
            "wrong secret",
            sign_exact(
                "another-secret",
                &json!({"exp": now() + 60, "scope": "connect", "uid": "jim"}),
            ),
        ),
        (
            "expired",
            token_with(json!({"exp": now() - 10, "scope": "connect", "uid": "jim"})),
        ),
        (
            "nbf in the future",
            token_with(json!({"nbf": now() + 3600, "scope": "connect", "uid": "jim"})),
        ),
        (
            "tampered payload",
            format!("{}.{}.{}", parts[0], other_payload, parts[2]),
        ),
        (
            "tampered signature",
            format!("{}.{}.{tampered_sig}", parts[0], parts[1]),
        ),
        ("alg none", format!("{header_none}.{payload_jim}.")),
        (
            "scope subscribe",
            token_with(json!({"scope": "subscribe", "uid": "jim"})),
        ),
        (
            "scope umd",
            token_with(json!({"scope": "umd", "uid": "jim"})),
        ),
        ("no scope", token_with(json!({"uid": "jim"}))),
        (
            "unknown scope",
            token_with(json!({"scope": "conect", "uid": "jim"})),
        ),
        (
            "no exp",
            sign_exact(SECRET, &json!({"scope": "connect", "uid": "jim"})),
        ),
        (
            "bound to a connectionId",
            token_with(
                json!({"scope": "connect", "uid": "jim", "connectionId": "0123456789abcdef"}),
            ),
        ),
        (
            "uid over 128 characters",
            token_with(json!({"scope": "connect", "uid": "u".repeat(129)})),
        ),
        (
            "umd over 1 KiB",
            token_with(json!({"scope": "connect", "uid": "jim", "umd": "x".repeat(1100)})),
        ),
        (
            "heartbeatTimeout below 5",
            token_with(json!({"scope": "connect", "heartbeatTimeout": 4})),
        ),
    ];
    for (what, token) in &cases {
        let refused = srv.connect_raw(token).await.err();
        assert_eq!(refused, Some(401), "{what}: expected 401");
    }
    // No token parameter at all.
    assert_eq!(srv.connect_path("/hotsock").await.err(), Some(401));
    assert_eq!(srv.connect_path("/hotsock/v1?tok=x").await.err(), Some(401));
    // The server is still up and a good token still works.
    let mut c = srv.connect_raw(&good).await.expect("good token");
    c.read_connected().await;
    let (status, health) = http(srv.addr, "GET", "/healthz", None, None).await;
    assert_eq!((status, health["connections"].clone()), (200, json!(1)));
}

// ---- 2. hotsock.connected --------------------------------------------------

#[tokio::test]
async fn connected_frame_has_id_expiry_secret_and_meta() {
    let srv = TestServer::start().await;
    let umd = json!({"name": "Jim Halpert"});
    let c = srv.connect(user("jim", umd.clone())).await;
    let hello = &c.connected;
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(hello), ["data", "event", "meta"], "{hello}");
    assert_eq!(
        keys(&hello["data"]),
        ["connectionExpiresAt", "connectionId", "connectionSecret"]
    );
    assert_eq!(hello["meta"], json!({"uid": "jim", "umd": umd}));
    let id = hello["data"]["connectionId"].as_str().expect("id");
    assert!(!id.is_empty());
    let secret = hello["data"]["connectionSecret"].as_str().expect("secret");
    assert_eq!(secret.len(), 20, "{secret}");
    assert!(
        secret.chars().all(|ch| ch.is_ascii_alphanumeric()),
        "{secret}"
    );
    let expires = hello["data"]["connectionExpiresAt"]
        .as_str()
        .expect("expiry");
    let at = parse_rfc3339(expires).unwrap_or_else(|| panic!("not RFC 3339 UTC: {expires}"));
    let in_two_hours = now() as i64 + 7200;
    assert!(
        (at - in_two_hours).abs() <= 5,
        "{expires} is not about 2 h from now"
    );

    // Every connection has its own id and secret.
    let d = srv.connect(user("jim", umd)).await;
    assert_ne!(
        d.connected["data"]["connectionId"],
        hello["data"]["connectionId"]
    );
    assert_ne!(
        d.connected["data"]["connectionSecret"],
        hello["data"]["connectionSecret"]
    );

    // Anonymous: meta is present with nulls.
    let anon = srv.connect(json!({})).await;
    assert_eq!(anon.connected["meta"], json!({"uid": null, "umd": null}));
}

// ---- 3. autoSubscribe ------------------------------------------------------

#[tokio::test]
async fn auto_subscribe_standard_and_presence_channels() {
    let srv = TestServer::start().await;
    let mut dwight = srv.connect(user("dwight", json!(null))).await;
    dwight.join("presence.lobby").await;

    let umd = json!({"n": 1});
    let mut jim = srv
        .connect(json!({
            "uid": "jim",
            "umd": umd,
            "channels": {
                "updates.jim": {"autoSubscribe": true},
                "presence.lobby": {"autoSubscribe": true},
                "wild.*": {"autoSubscribe": true, "subscribe": true}
            }
        }))
        .await;
    let mut frames = [jim.next().await, jim.next().await];
    frames.sort_by_key(|f| f["channel"].as_str().unwrap_or_default().to_string());
    assert_eq!(
        frames[0],
        json!({"event": "hotsock.subscribed", "channel": "presence.lobby",
               "data": {"autoSubscribed": true, "members": [{"uid": "dwight", "umd": null}, {"uid": "jim", "umd": umd}]},
               "meta": {"uid": "jim", "umd": umd}})
    );
    assert_eq!(
        frames[1],
        json!({"event": "hotsock.subscribed", "channel": "updates.jim",
               "data": {"autoSubscribed": true}, "meta": {"uid": "jim", "umd": umd}})
    );
    // Wildcard keys are never auto-subscribed.
    jim.ping_pong().await;
    let added = dwight.expect("hotsock.memberAdded").await;
    assert_eq!(added["data"]["member"], json!({"uid": "jim", "umd": umd}));
    // Auto-subscriptions receive messages like any other.
    let id = srv.publish("updates.jim", "note", json!("hi")).await;
    assert_eq!(jim.expect("note").await["id"], id);

    // Anonymous presence autoSubscribe: refused with the uid error.
    let mut anon = srv
        .connect(json!({"channels": {"presence.lobby": {"autoSubscribe": true}}}))
        .await;
    anon.expect_error("PRESENCE_CHANNEL_USER_ID_REQUIRED", Some("presence.lobby"))
        .await;
    assert_eq!(srv.member_uids("presence.lobby").await, ["dwight", "jim"]);
}

// ---- 4. subscribe / unsubscribe -------------------------------------------

#[tokio::test]
async fn subscribe_and_unsubscribe_a_standard_channel() {
    let srv = TestServer::start().await;
    let mut c = srv.connect(anonymous()).await;
    assert_eq!(
        c.subscribe("news").await,
        json!({"event": "hotsock.subscribed", "channel": "news", "data": {}, "meta": {"uid": null, "umd": null}})
    );
    let id = srv.publish("news", "headline", json!({"t": 1})).await;
    assert_eq!(
        c.next().await,
        json!({"id": id, "event": "headline", "channel": "news", "data": {"t": 1}})
    );
    assert_eq!(
        c.unsubscribe("news").await,
        json!({"event": "hotsock.unsubscribed", "channel": "news", "data": {}, "meta": {"uid": null, "umd": null}})
    );
    srv.publish("news", "headline", json!({"t": 2})).await;
    c.ping_pong().await;
    assert_eq!(srv.channel("news").await["subscriptionsCount"], 0);
    // Subscribing again works.
    c.join("news").await;
}

#[tokio::test]
async fn presence_member_events_fan_out_as_specified() {
    let srv = TestServer::start().await;
    let ch = "presence.live-chat";
    let mut jim = srv.connect(user("Jim", json!(null))).await;
    assert_eq!(
        jim.subscribe(ch).await,
        json!({"event": "hotsock.subscribed", "channel": ch, "data": {"members": [{"uid": "Jim", "umd": null}]}, "meta": {"uid": "Jim", "umd": null}})
    );
    let mut dwight = srv.connect(user("Dwight", json!({"s": "here"}))).await;
    let sub = dwight.join(ch).await;
    assert_eq!(
        sub["data"]["members"],
        json!([{"uid": "Jim", "umd": null}, {"uid": "Dwight", "umd": {"s": "here"}}])
    );
    assert_eq!(sub["meta"], json!({"uid": "Dwight", "umd": {"s": "here"}}));
    // memberAdded goes to the existing members, not to the joiner.
    assert_eq!(
        jim.next().await,
        json!({"event": "hotsock.memberAdded", "channel": ch, "data": {
            "member": {"uid": "Dwight", "umd": {"s": "here"}},
            "members": [{"uid": "Jim", "umd": null}, {"uid": "Dwight", "umd": {"s": "here"}}]}})
    );
    dwight.ping_pong().await;
    let mut pam = srv.connect(user("Pam", json!(null))).await;
    pam.join(ch).await;
    jim.expect("hotsock.memberAdded").await;
    dwight.expect("hotsock.memberAdded").await;

    // memberRemoved goes to the remaining members only.
    assert_eq!(
        dwight.unsubscribe(ch).await,
        json!({"event": "hotsock.unsubscribed", "channel": ch, "data": {}, "meta": {"uid": "Dwight", "umd": {"s": "here"}}})
    );
    let expected = json!({"event": "hotsock.memberRemoved", "channel": ch, "data": {
        "member": {"uid": "Dwight", "umd": {"s": "here"}},
        "members": [{"uid": "Jim", "umd": null}, {"uid": "Pam", "umd": null}]}});
    assert_eq!(jim.next().await, expected);
    assert_eq!(pam.next().await, expected);
    dwight.ping_pong().await;
    assert_eq!(srv.member_uids(ch).await, ["Jim", "Pam"]);
}

// ---- 5. subscribe errors ---------------------------------------------------

#[tokio::test]
async fn subscribe_permission_denied_and_explicit_false_beats_a_wildcard() {
    let srv = TestServer::start().await;
    let mut c = srv
        .connect(json!({
            "uid": "jim",
            "channels": {
                "*": {"subscribe": true},
                "secret": {"subscribe": false},
                "presence.*": {"subscribe": true},
                "presence.vip": {"subscribe": false},
                "#regex:^org\\.[0-9]+$": {"subscribe": true},
                "org.*": {"subscribe": false}
            }
        }))
        .await;
    c.join("other").await;
    c.join("presence.room").await;
    for denied in ["secret", "presence.vip", "org.12"] {
        c.send(json!({"event": "hotsock.subscribe", "channel": denied}))
            .await;
        let err = c
            .expect_error("SUBSCRIBE_PERMISSION_DENIED", Some(denied))
            .await;
        assert_eq!(err.as_object().map(|o| o.len()), Some(3), "{err}");
    }
    assert_eq!(srv.member_uids("presence.vip").await, Vec::<String>::new());

    // No channels claim: nothing may be subscribed.
    let mut bare = srv.connect(json!({"uid": "pam"})).await;
    for ch in ["news", "presence.room"] {
        bare.send(json!({"event": "hotsock.subscribe", "channel": ch}))
            .await;
        bare.expect_error("SUBSCRIBE_PERMISSION_DENIED", Some(ch))
            .await;
    }
    // The regex grants what it matches (when nothing denies it).
    let mut org = srv
        .connect(json!({"channels": {"#regex:^org\\.[0-9]+$": {"subscribe": true}}}))
        .await;
    org.join("org.42").await;
    org.send(json!({"event": "hotsock.subscribe", "channel": "org.x"}))
        .await;
    org.expect_error("SUBSCRIBE_PERMISSION_DENIED", Some("org.x"))
        .await;
}

#[tokio::test]
async fn subscribe_tokens_by_uid_and_by_connection_id() {
    let srv = TestServer::start().await;
    let mut dwight = srv.connect(user("dwight", json!(null))).await;
    dwight.join("presence.doc-7").await;
    let mut jim = srv
        .connect(json!({"uid": "jim", "umd": {"n": "Jim"}}))
        .await;

    // By uid: grants a channel the connect token does not.
    let t = token_with(
        json!({"scope": "subscribe", "uid": "jim", "channels": {"presence.doc-42": {"subscribe": true}}}),
    );
    jim.send(subscribe_frame("presence.doc-42", &t)).await;
    let sub = jim.expect("hotsock.subscribed").await;
    assert_eq!(
        sub["data"]["members"],
        json!([{"uid": "jim", "umd": {"n": "Jim"}}])
    );

    // By connectionId: its umd wins, for the member and in meta.
    let t = token_with(
        json!({"scope": "subscribe", "connectionId": jim.connection_id,
        "umd": {"role": "editor"}, "channels": {"presence.doc-7": {"subscribe": true}}}),
    );
    jim.send(subscribe_frame("presence.doc-7", &t)).await;
    let sub = jim.expect("hotsock.subscribed").await;
    assert_eq!(
        sub["meta"],
        json!({"uid": "jim", "umd": {"role": "editor"}})
    );
    assert_eq!(
        sub["data"]["members"],
        json!([{"uid": "dwight", "umd": null}, {"uid": "jim", "umd": {"role": "editor"}}])
    );
    let added = dwight.expect("hotsock.memberAdded").await;
    assert_eq!(
        added["data"]["member"],
        json!({"uid": "jim", "umd": {"role": "editor"}})
    );

    // A valid token that does not cover the channel.
    let t = token_with(
        json!({"scope": "subscribe", "uid": "jim", "channels": {"presence.doc-42": {"subscribe": true}}}),
    );
    jim.send(subscribe_frame("presence.doc-43", &t)).await;
    jim.expect_error("SUBSCRIBE_PERMISSION_DENIED", Some("presence.doc-43"))
        .await;
}

#[tokio::test]
async fn a_subscribe_tokens_uid_wins_for_its_channel() {
    let srv = TestServer::start().await;
    let mut dwight = srv.connect(user("dwight", json!(null))).await;
    dwight.join("presence.doc-9").await;
    // An anonymous connection cannot join a presence channel by itself...
    let mut anon = srv
        .connect(json!({"channels": {"presence.*": {"subscribe": true}}}))
        .await;
    anon.send(json!({"event": "hotsock.subscribe", "channel": "presence.doc-9"}))
        .await;
    anon.expect_error("PRESENCE_CHANNEL_USER_ID_REQUIRED", Some("presence.doc-9"))
        .await;
    // ...but a subscribe token bound to it by connectionId names the member.
    let t = token_with(
        json!({"scope": "subscribe", "connectionId": anon.connection_id,
        "uid": "pam", "umd": {"n": "Pam"},
        "channels": {"presence.doc-9": {"subscribe": true, "messages": {"chat": {"publish": true}}}}}),
    );
    anon.send(subscribe_frame("presence.doc-9", &t)).await;
    let sub = anon.expect("hotsock.subscribed").await;
    assert_eq!(sub["meta"], json!({"uid": "pam", "umd": {"n": "Pam"}}));
    assert_eq!(
        sub["data"]["members"],
        json!([{"uid": "dwight", "umd": null}, {"uid": "pam", "umd": {"n": "Pam"}}])
    );
    let added = dwight.expect("hotsock.memberAdded").await;
    assert_eq!(
        added["data"]["member"],
        json!({"uid": "pam", "umd": {"n": "Pam"}})
    );
    // Messages sent on that channel carry the subscription's uid.
    anon.send(json!({"event": "chat", "channel": "presence.doc-9", "data": "hi"}))
        .await;
    let msg = dwight.expect("chat").await;
    assert_eq!(msg["meta"], json!({"uid": "pam", "umd": {"n": "Pam"}}));
    // Leaving removes pam.
    anon.send(json!({"event": "hotsock.unsubscribe", "channel": "presence.doc-9"}))
        .await;
    let gone = anon.expect("hotsock.unsubscribed").await;
    assert_eq!(gone["meta"]["uid"], "pam");
    let removed = dwight.expect("hotsock.memberRemoved").await;
    assert_eq!(removed["data"]["member"]["uid"], "pam");
}

#[tokio::test]
async fn invalid_subscribe_tokens() {
    let srv = TestServer::start().await;
    let mut jim = srv.connect(json!({"uid": "jim"})).await;
    let grant = json!({"presence.doc": {"subscribe": true}});
    let cases = vec![
        (
            "bad signature",
            sign_exact(
                "wrong",
                &json!({"exp": now() + 60, "scope": "subscribe", "uid": "jim", "channels": grant}),
            ),
        ),
        (
            "connect scope",
            token_with(json!({"scope": "connect", "uid": "jim", "channels": grant})),
        ),
        (
            "uid mismatch",
            token_with(json!({"scope": "subscribe", "uid": "dwight", "channels": grant})),
        ),
        (
            "connectionId mismatch",
            token_with(
                json!({"scope": "subscribe", "connectionId": "00000000deadbeef", "channels": grant}),
            ),
        ),
        (
            "expired",
            token_with(
                json!({"exp": now() - 5, "scope": "subscribe", "uid": "jim", "channels": grant}),
            ),
        ),
        (
            "neither uid nor connectionId",
            token_with(json!({"scope": "subscribe", "channels": grant})),
        ),
        ("garbage", "not.a.token".to_string()),
    ];
    for (what, token) in cases {
        jim.send(subscribe_frame("presence.doc", &token)).await;
        let frame = jim.next().await;
        assert_eq!(frame["event"], "hotsock.error", "{what}: {frame}");
        assert_eq!(
            frame["error"]["code"], "INVALID_SUBSCRIBE_TOKEN",
            "{what}: {frame}"
        );
        assert_eq!(frame["channel"], "presence.doc", "{what}: {frame}");
    }
    assert_eq!(srv.channel("presence.doc").await["subscriptionsCount"], 0);
    // A good one still works afterwards.
    let t = token_with(json!({"scope": "subscribe", "uid": "jim", "channels": grant}));
    jim.send(subscribe_frame("presence.doc", &t)).await;
    jim.expect("hotsock.subscribed").await;
}

#[tokio::test]
async fn already_subscribed_and_not_subscribed() {
    let srv = TestServer::start().await;
    let mut pam = srv.connect(user("pam", json!(null))).await;
    pam.join("presence.room").await;
    let mut jim = srv.connect(user("jim", json!(null))).await;
    jim.join("presence.room").await;
    pam.expect("hotsock.memberAdded").await;
    jim.join("news").await;
    for ch in ["presence.room", "news"] {
        jim.send(json!({"event": "hotsock.subscribe", "channel": ch}))
            .await;
        jim.expect_error("ALREADY_SUBSCRIBED", Some(ch)).await;
    }
    // Nothing changed for the others.
    let id = srv.publish("presence.room", "x", json!(null)).await;
    assert_eq!(pam.expect("x").await["id"], id);
    assert_eq!(jim.expect("x").await["id"], id);
    assert_eq!(srv.channel("presence.room").await["subscriptionsCount"], 2);

    jim.send(json!({"event": "hotsock.unsubscribe", "channel": "never"}))
        .await;
    jim.expect_error("NOT_SUBSCRIBED", Some("never")).await;
    assert_eq!(
        jim.unsubscribe("news").await["event"],
        "hotsock.unsubscribed"
    );
    jim.send(json!({"event": "hotsock.unsubscribe", "channel": "news"}))
        .await;
    jim.expect_error("NOT_SUBSCRIBED", Some("news")).await;
}

#[tokio::test]
async fn presence_capacity_reached() {
    // Member bytes are the JSON size of {"uid":..,"umd":..}: jim's is 24,
    // dwight's 27, pam's 24 and pa's 23. With a 74-byte budget, pam would
    // need 75 (refused) and pa exactly 74 (accepted).
    let srv = TestServer::start_with(|c| c.limits.max_member_bytes = 74).await;
    let ch = "presence.tiny";
    let mut jim = srv.connect(user("jim", json!(null))).await;
    jim.join(ch).await;
    let mut dwight = srv.connect(user("dwight", json!(null))).await;
    dwight.join(ch).await;
    jim.expect("hotsock.memberAdded").await;
    let mut pam = srv.connect(user("pam", json!(null))).await;
    pam.send(json!({"event": "hotsock.subscribe", "channel": ch}))
        .await;
    pam.expect_error("PRESENCE_CHANNEL_CAPACITY_REACHED", Some(ch))
        .await;
    // Nobody heard of pam.
    jim.ping_pong().await;
    dwight.ping_pong().await;
    assert_eq!(srv.member_uids(ch).await, ["jim", "dwight"]);
    let mut pa = srv.connect(user("pa", json!(null))).await;
    pa.join(ch).await;
    assert_eq!(
        jim.expect("hotsock.memberAdded").await["data"]["member"]["uid"],
        "pa"
    );
    // Full to the byte: even the shortest member is refused now.
    let mut p = srv.connect(user("p", json!(null))).await;
    p.send(json!({"event": "hotsock.subscribe", "channel": ch}))
        .await;
    p.expect_error("PRESENCE_CHANNEL_CAPACITY_REACHED", Some(ch))
        .await;
    // Room is made when a member leaves.
    dwight.unsubscribe(ch).await;
    jim.expect("hotsock.memberRemoved").await;
    pam.join(ch).await;
    assert_eq!(srv.member_uids(ch).await, ["jim", "pa", "pam"]);
}

#[tokio::test]
async fn presence_requires_a_uid() {
    let srv = TestServer::start().await;
    let mut anon = srv.connect(anonymous()).await;
    anon.send(json!({"event": "hotsock.subscribe", "channel": "presence.room"}))
        .await;
    anon.expect_error("PRESENCE_CHANNEL_USER_ID_REQUIRED", Some("presence.room"))
        .await;
    let mut empty = srv
        .connect(json!({"uid": "", "channels": {"*": {"subscribe": true}}}))
        .await;
    empty
        .send(json!({"event": "hotsock.subscribe", "channel": "presence.room"}))
        .await;
    empty
        .expect_error("PRESENCE_CHANNEL_USER_ID_REQUIRED", Some("presence.room"))
        .await;
    // Standard channels need no uid.
    anon.join("news").await;
    assert_eq!(srv.channel("presence.room").await["subscriptionsCount"], 0);
}

// ---- 6. frame errors -------------------------------------------------------

#[tokio::test]
async fn malformed_frames_get_invalid_message() {
    let srv = TestServer::start().await;
    let mut c = srv.connect(user("jim", json!(null))).await;
    let no_channel: &[&str] = &[
        "not json",
        "[1,2]",
        "\"hotsock.ping\"",
        "42",
        "null",
        "{}",
        r#"{"event":5}"#,
        r#"{"event":["badarray"]}"#,
        r#"{"event":"hotsock.subscribe"}"#,
        r#"{"event":"hotsock.subscribe","channel":7}"#,
        r#"{"event":"hotsock.unsubscribe","channel":null}"#,
        r#"{"event":"chat","data":1}"#,
        r#"{"event":"hotsock.ping""#,
    ];
    for text in no_channel {
        c.send_text(text).await;
        let frame = c.expect_error("INVALID_MESSAGE", None).await;
        assert!(frame.get("channel").is_none(), "{text}: {frame}");
    }
    let with_channel: &[&str] = &[
        r#"{"event":"hotsock.subscribe","channel":"c","data":5}"#,
        r#"{"event":"hotsock.subscribe","channel":"c","data":{"token":5}}"#,
        r#"{"event":"hotsock.subscribe","channel":"c","data":"token"}"#,
        r#"{"channel":"c","data":1}"#,
    ];
    for text in with_channel {
        c.send_text(text).await;
        c.expect_error("INVALID_MESSAGE", Some("c")).await;
    }
    c.ping_pong().await;
}

#[tokio::test]
async fn unknown_hotsock_events() {
    let srv = TestServer::start().await;
    let mut c = srv.connect(user("jim", json!(null))).await;
    c.send(json!({"event": "hotsock.bogus"})).await;
    c.expect_error("UNKNOWN_EVENT", None).await;
    c.send(json!({"event": "hotsock.channelStorageGet", "channel": "game", "key": "k"}))
        .await;
    c.expect_error("UNKNOWN_EVENT", Some("game")).await;
    // A client message cannot use the reserved prefix either.
    c.join("presence.room").await;
    c.send(json!({"event": "hotsock.chat", "channel": "presence.room", "data": 1}))
        .await;
    c.expect_error("UNKNOWN_EVENT", Some("presence.room")).await;
    c.ping_pong().await;
}

#[tokio::test]
async fn invalid_channel_names() {
    let srv = TestServer::start().await;
    let mut c = srv.connect(user("jim", json!(null))).await;
    let long = "c".repeat(257);
    let bad = [
        "a\u{1}b",
        "a\nb",
        "a\tb",
        "a\u{7f}b",
        "a b",
        "a*b",
        "a#b",
        "a,b",
        "",
        long.as_str(),
    ];
    for name in bad {
        for frame in [
            json!({"event": "hotsock.subscribe", "channel": name}),
            json!({"event": "hotsock.unsubscribe", "channel": name}),
            json!({"event": "chat", "channel": name, "data": 1}),
        ] {
            c.send(frame.clone()).await;
            let err = c.next().await;
            assert_eq!(err["event"], "hotsock.error", "{frame}: {err}");
            assert_eq!(
                err["error"]["code"], "INVALID_CHANNEL_NAME",
                "{frame}: {err}"
            );
            assert_eq!(err["channel"], name, "{err}");
        }
    }
    // 256 characters is fine.
    c.join(&"c".repeat(256)).await;
    assert!(
        srv.presence()
            .channels()
            .iter()
            .all(|s| s.name.len() == 256)
    );
}

#[tokio::test]
async fn invalid_event_names_and_oversized_data() {
    let srv = TestServer::start().await;
    let ch = "presence.chat";
    let mut jim = srv.connect(user("jim", json!(null))).await;
    jim.join(ch).await;
    let mut pam = srv.connect(user("pam", json!(null))).await;
    pam.join(ch).await;
    jim.expect("hotsock.memberAdded").await;

    let long = "e".repeat(129);
    for event in ["#x", "a*b", "", "a\u{1}b", long.as_str()] {
        jim.send(json!({"event": event, "channel": ch, "data": 1}))
            .await;
        jim.expect_error("INVALID_EVENT_NAME", Some(ch)).await;
    }
    let ok = "e".repeat(128);
    jim.send(json!({"event": ok, "channel": ch, "data": 1}))
        .await;
    assert_eq!(pam.next().await["event"], ok);

    // data up to 32 KiB of JSON: exactly 32768 bytes pass, one more fails.
    let fits = "d".repeat(32 * 1024 - 2);
    jim.send(json!({"event": "big", "channel": ch, "data": fits}))
        .await;
    assert_eq!(
        pam.expect("big").await["data"].as_str().map(str::len),
        Some(32766)
    );
    let over = "d".repeat(32 * 1024 - 1);
    jim.send(json!({"event": "big", "channel": ch, "data": over}))
        .await;
    let err = jim.expect_error("MESSAGE_TOO_LARGE", Some(ch)).await;
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("32768"),
        "{err}"
    );
    // pam got none of the refused messages.
    pam.ping_pong().await;
}

#[tokio::test]
async fn publish_permission_denied() {
    let srv = TestServer::start().await;
    let ch = "room.1";
    let mut reader = srv.connect(anonymous()).await;
    reader.join(ch).await;
    let mut c = srv
        .connect(json!({"uid": "jim", "channels": {
            "room.*": {"subscribe": true, "messages": {"*": {"publish": true}, "secret": {"publish": false}}},
            "quiet": {"subscribe": true}
        }}))
        .await;
    // publish needs a subscription.
    c.send(json!({"event": "chat", "channel": ch, "data": 1}))
        .await;
    let err = c.expect_error("PUBLISH_PERMISSION_DENIED", Some(ch)).await;
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("subscribe"),
        "{err}"
    );
    c.join(ch).await;
    // An explicit false beats the wildcard grant.
    c.send(json!({"event": "secret", "channel": ch, "data": 1}))
        .await;
    c.expect_error("PUBLISH_PERMISSION_DENIED", Some(ch)).await;
    // No messages directive at all.
    c.join("quiet").await;
    c.send(json!({"event": "chat", "channel": "quiet", "data": 1}))
        .await;
    c.expect_error("PUBLISH_PERMISSION_DENIED", Some("quiet"))
        .await;
    // The reader got nothing; an allowed message then arrives.
    c.send(json!({"event": "chat", "channel": ch, "data": 2}))
        .await;
    let got = reader.next().await;
    assert_eq!(
        (got["event"].clone(), got["data"].clone()),
        (json!("chat"), json!(2))
    );
}

// ---- 7. client messages and server publishes -------------------------------

#[tokio::test]
async fn client_messages_carry_a_ulid_and_meta_and_honour_echo() {
    let srv = TestServer::start().await;
    let ch = "room.123";
    let grants = |echo: bool| json!({"subscribe": true, "messages": {"chat": {"publish": true, "echo": echo}, "is-typing": {"publish": true}}});
    let mut jim = srv
        .connect(json!({"uid": "Jim", "umd": {"n": 1}, "channels": {ch: grants(false)}}))
        .await;
    let mut pam = srv
        .connect(json!({"uid": "Pam", "channels": {ch: grants(true)}}))
        .await;
    let mut anon = srv.connect(anonymous()).await;
    jim.join(ch).await;
    pam.join(ch).await;
    anon.join(ch).await;
    let mut outsider = srv.connect(anonymous()).await;
    outsider.join("room.999").await;

    jim.send(json!({"channel": ch, "event": "chat", "data": "Hello!"}))
        .await;
    let got = pam.next().await;
    let id1 = got["id"].as_str().expect("id").to_string();
    assert!(is_ulid(&id1), "{got}");
    assert_eq!(
        got,
        json!({"id": id1, "event": "chat", "channel": ch, "data": "Hello!", "meta": {"uid": "Jim", "umd": {"n": 1}}})
    );
    assert_eq!(anon.next().await, got);
    // echo false: the sender does not get its own message.
    jim.ping_pong().await;

    // echo true: the sender does; no data means "data": null.
    pam.send(json!({"channel": ch, "event": "chat"})).await;
    let own = pam.next().await;
    assert_eq!(own["meta"], json!({"uid": "Pam", "umd": null}));
    assert_eq!(own["data"], Value::Null);
    assert!(
        own.as_object().is_some_and(|o| o.contains_key("data")),
        "{own}"
    );
    let id2 = own["id"].as_str().expect("id").to_string();
    assert!(is_ulid(&id2) && id2 > id1, "{id2} should sort after {id1}");
    assert_eq!(jim.next().await, own);
    assert_eq!(anon.next().await, own);
    // is-typing has no echo.
    pam.send(json!({"channel": ch, "event": "is-typing"})).await;
    assert_eq!(jim.next().await["event"], "is-typing");
    pam.ping_pong().await;
    outsider.ping_pong().await;
}

#[tokio::test]
async fn broadcast_without_subscription() {
    let srv = TestServer::start().await;
    let ch = "alerts";
    let mut listener = srv.connect(anonymous()).await;
    listener.join(ch).await;
    let mut sender = srv
        .connect(json!({"uid": "ops", "umd": {"team": "a"}, "channels": {ch: {"messages": {"announce": {"broadcast": true}}}}}))
        .await;
    sender
        .send(json!({"channel": ch, "event": "announce", "data": {"x": 1}}))
        .await;
    let got = listener.next().await;
    assert!(is_ulid(got["id"].as_str().unwrap_or_default()), "{got}");
    assert_eq!(got["meta"], json!({"uid": "ops", "umd": {"team": "a"}}));
    assert_eq!(got["data"], json!({"x": 1}));
    // Other events are not covered by the broadcast grant.
    sender
        .send(json!({"channel": ch, "event": "other", "data": 1}))
        .await;
    sender
        .expect_error("PUBLISH_PERMISSION_DENIED", Some(ch))
        .await;
    listener.ping_pong().await;
}

#[tokio::test]
async fn server_publish_over_http_has_an_id_and_no_meta() {
    let srv = TestServer::start().await;
    let mut c = srv.connect(user("jim", json!(null))).await;
    c.join("presence.feed").await;
    let (status, body) = srv
        .http(
            "POST",
            "/api/publish",
            Some(json!({"channel": "presence.feed", "event": "ticker-values", "data": {"AAPL": "226.84"}})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    assert!(is_ulid(&id));
    assert_eq!(
        body,
        json!({"channel": "presence.feed", "event": "ticker-values", "id": id})
    );
    assert_eq!(
        c.next().await,
        json!({"id": id, "event": "ticker-values", "channel": "presence.feed", "data": {"AAPL": "226.84"}})
    );
}

// ---- 8. ping, heartbeat, keepAlive, lifetime -------------------------------

#[tokio::test]
async fn ping_gets_pong_and_pong_and_heartbeat_get_nothing() {
    let srv = TestServer::start().await;
    let mut c = srv.connect(user("jim", json!(null))).await;
    c.send(json!({"event": "hotsock.ping"})).await;
    assert_eq!(c.next().await, json!({"event": "hotsock.pong", "data": {}}));
    c.send(json!({"event": "hotsock.pong"})).await;
    c.send(json!({"event": "hotsock.heartbeat"})).await;
    c.send(json!({"event": "hotsock.ping", "data": {}})).await;
    assert_eq!(c.next().await, json!({"event": "hotsock.pong", "data": {}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_timeout_closes_with_1001_unless_heartbeats_arrive() {
    let srv = TestServer::start().await;
    let ch = "presence.hb";
    let mut watcher = srv.connect(user("watcher", json!(null))).await;
    watcher.join(ch).await;
    let claims = |uid: &str| {
        let mut c = user(uid, json!(null));
        c["heartbeatTimeout"] = json!(5);
        c
    };
    let mut silent = srv.connect(claims("silent")).await;
    let opened = Instant::now();
    silent.join(ch).await;
    let mut beating = srv.connect(claims("beating")).await;
    beating.join(ch).await;
    let beater = tokio::spawn(async move {
        // Heartbeats every second for 6 s: past the 5 s timeout.
        for _ in 0..6 {
            beating.send(json!({"event": "hotsock.heartbeat"})).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let removed = beating.expect("hotsock.memberRemoved").await;
        assert_eq!(removed["data"]["member"]["uid"], "silent");
        beating
    });
    match silent.ending_within(Duration::from_secs(8)).await {
        Ending::Close(code, reason) => {
            assert_eq!(code, 1001, "{reason}");
            assert!(reason.contains("heartbeat"), "{reason}");
        }
        Ending::Dropped => panic!("dropped without a close frame"),
    }
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(4500) && after < Duration::from_secs(7),
        "closed after {after:?}"
    );
    // The watcher saw both join, then silent leave.
    assert_eq!(
        watcher.expect("hotsock.memberAdded").await["data"]["member"]["uid"],
        "silent"
    );
    assert_eq!(
        watcher.expect("hotsock.memberAdded").await["data"]["member"]["uid"],
        "beating"
    );
    assert_eq!(
        watcher.expect("hotsock.memberRemoved").await["data"]["member"]["uid"],
        "silent"
    );
    let mut beating = beater.await.expect("heartbeats kept the connection open");
    beating.ping_pong().await;
    assert_eq!(srv.member_uids(ch).await, ["watcher", "beating"]);
}

#[tokio::test]
async fn keep_alive_is_sent_only_to_tokens_that_ask() {
    let srv = TestServer::start_with(|c| {
        c.front_ends.hotsock.keep_alive_interval = std::time::Duration::from_secs(1)
    })
    .await;
    let mut with = srv.connect(json!({"uid": "a", "keepAlive": true})).await;
    let mut without = srv.connect(json!({"uid": "b"})).await;
    let start = Instant::now();
    for _ in 0..2 {
        let f = with.next_within(Duration::from_secs(2)).await;
        assert_eq!(f, json!({"event": "hotsock.keepAlive", "data": {}}));
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "two keepAlives after {took:?}"
    );
    without.expect_none(200).await;
}

#[tokio::test]
async fn connection_lifetime_ends_with_1001_going_away() {
    let srv = TestServer::start_with(|c| {
        c.front_ends.hotsock.connection_lifetime = std::time::Duration::from_secs(2)
    })
    .await;
    let ch = "presence.short";
    let opened = Instant::now();
    let mut c = srv.connect(user("jim", json!(null))).await;
    let expires = c.connected["data"]["connectionExpiresAt"]
        .as_str()
        .expect("expiry")
        .to_string();
    let at = parse_rfc3339(&expires).expect("RFC 3339");
    assert!((at - (now() as i64 + 2)).abs() <= 1, "{expires}");
    c.join(ch).await;
    // The watcher has a 2 s lifetime too: it comes a second later so that
    // it is still there when jim's ends (the wait is inside jim's 2 s).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut watcher = srv.connect(user("watcher", json!(null))).await;
    watcher.join(ch).await;
    match c.ending_within(Duration::from_secs(4)).await {
        Ending::Close(code, reason) => {
            assert_eq!(code, 1001);
            assert!(reason.starts_with("Going away"), "{reason}");
        }
        Ending::Dropped => panic!("dropped without a close frame"),
    }
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(1900),
        "closed after {after:?}"
    );
    assert_eq!(
        watcher.expect("hotsock.memberRemoved").await["data"]["member"]["uid"],
        "jim"
    );
}

// ---- 9. umdUpdate ----------------------------------------------------------

fn umd_update(channel: Option<&str>, token: &str) -> Value {
    match channel {
        Some(c) => json!({"event": "hotsock.umdUpdate", "channel": c, "data": {"token": token}}),
        None => json!({"event": "hotsock.umdUpdate", "data": {"token": token}}),
    }
}

#[tokio::test]
async fn umd_update_of_one_channel() {
    let srv = TestServer::start().await;
    let mut pam = srv.connect(user("pam", json!(null))).await;
    pam.join("presence.chat").await;
    pam.join("presence.other").await;
    let mut jim = srv.connect(user("jim", json!({"status": "here"}))).await;
    jim.join("presence.chat").await;
    jim.join("presence.other").await;
    pam.expect("hotsock.memberAdded").await;
    pam.expect("hotsock.memberAdded").await;

    let away = json!({"status": "away"});
    let t = token_with(
        json!({"scope": "umd", "uid": "jim", "umd": away, "channels": {"presence.chat": {"umdUpdate": true}}}),
    );
    jim.send(umd_update(Some("presence.chat"), &t)).await;
    let expected_list = json!([{"uid": "pam", "umd": null}, {"uid": "jim", "umd": away}]);
    for c in [&mut pam, &mut jim] {
        let f = c.expect("hotsock.memberUpdated").await;
        assert_eq!(f["channel"], "presence.chat");
        assert_eq!(f["data"]["member"], json!({"uid": "jim", "umd": away}));
        assert_eq!(f["data"]["members"], expected_list);
    }
    // The other channel is untouched; messages on the updated one carry the new umd.
    assert_eq!(
        srv.channel("presence.other").await["members"][1]["umd"],
        json!({"status": "here"})
    );
    jim.send(json!({"channel": "presence.chat", "event": "chat", "data": 1}))
        .await;
    assert_eq!(
        pam.expect("chat").await["meta"],
        json!({"uid": "jim", "umd": away})
    );
    jim.send(json!({"channel": "presence.other", "event": "chat", "data": 2}))
        .await;
    assert_eq!(
        pam.expect("chat").await["meta"],
        json!({"uid": "jim", "umd": {"status": "here"}})
    );

    // Errors.
    let wrong_scope = token_with(
        json!({"scope": "subscribe", "uid": "jim", "umd": 1, "channels": {"presence.chat": {"umdUpdate": true}}}),
    );
    jim.send(umd_update(Some("presence.chat"), &wrong_scope))
        .await;
    jim.expect_error("INVALID_UMD_TOKEN", Some("presence.chat"))
        .await;
    let other_uid = token_with(
        json!({"scope": "umd", "uid": "pam", "umd": 1, "channels": {"presence.chat": {"umdUpdate": true}}}),
    );
    jim.send(umd_update(Some("presence.chat"), &other_uid))
        .await;
    jim.expect_error("INVALID_UMD_TOKEN", Some("presence.chat"))
        .await;
    let no_grant = token_with(
        json!({"scope": "umd", "uid": "jim", "umd": 1, "channels": {"presence.chat": {"subscribe": true}}}),
    );
    jim.send(umd_update(Some("presence.chat"), &no_grant)).await;
    jim.expect_error("UMD_UPDATE_PERMISSION_DENIED", Some("presence.chat"))
        .await;
    let elsewhere = token_with(
        json!({"scope": "umd", "uid": "jim", "umd": 1, "channels": {"presence.*": {"umdUpdate": true}}}),
    );
    jim.send(umd_update(Some("presence.nope"), &elsewhere))
        .await;
    jim.expect_error("NOT_SUBSCRIBED", Some("presence.nope"))
        .await;
    jim.send(json!({"event": "hotsock.umdUpdate", "channel": "presence.chat"}))
        .await;
    jim.expect_error("INVALID_UMD_TOKEN", Some("presence.chat"))
        .await;
    pam.ping_pong().await;
    assert_eq!(srv.channel("presence.chat").await["members"], expected_list);
}

#[tokio::test]
async fn umd_update_of_the_connection_with_and_without_propagation() {
    let srv = TestServer::start().await;
    let mut pam = srv.connect(user("pam", json!(null))).await;
    pam.join("presence.a").await;
    pam.join("presence.b").await;
    let mut jim = srv.connect(user("jim", json!(1))).await;
    jim.join("presence.a").await;
    jim.join("presence.b").await;
    pam.expect("hotsock.memberAdded").await;
    pam.expect("hotsock.memberAdded").await;

    // Without umdUpdate: refused.
    let t = token_with(json!({"scope": "umd", "uid": "jim", "umd": 2}));
    jim.send(umd_update(None, &t)).await;
    jim.expect_error("UMD_UPDATE_PERMISSION_DENIED", None).await;

    // umdUpdate without umdPropagate: existing members keep their data,
    // new subscriptions use the new data.
    let t = token_with(json!({"scope": "umd", "uid": "jim", "umd": 2, "umdUpdate": true}));
    jim.send(umd_update(None, &t)).await;
    jim.ping_pong().await;
    pam.ping_pong().await;
    let sub = jim.join("presence.c").await;
    assert_eq!(sub["meta"]["umd"], 2);
    assert_eq!(sub["data"]["members"], json!([{"uid": "jim", "umd": 2}]));
    assert_eq!(srv.channel("presence.a").await["members"][1]["umd"], 1);

    // With umdPropagate: every presence channel gets memberUpdated, the
    // updater included.
    let t = token_with(
        json!({"scope": "umd", "uid": "jim", "umd": 3, "umdUpdate": true, "umdPropagate": true}),
    );
    jim.send(umd_update(None, &t)).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let f = jim.expect("hotsock.memberUpdated").await;
        assert_eq!(f["data"]["member"], json!({"uid": "jim", "umd": 3}));
        seen.push(f["channel"].as_str().unwrap_or_default().to_string());
    }
    seen.sort();
    assert_eq!(seen, ["presence.a", "presence.b", "presence.c"]);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let f = pam.expect("hotsock.memberUpdated").await;
        assert_eq!(f["data"]["member"], json!({"uid": "jim", "umd": 3}));
        seen.push(f["channel"].as_str().unwrap_or_default().to_string());
    }
    seen.sort();
    assert_eq!(seen, ["presence.a", "presence.b"]);
    jim.send(json!({"channel": "presence.a", "event": "chat", "data": 0}))
        .await;
    assert_eq!(
        pam.expect("chat").await["meta"],
        json!({"uid": "jim", "umd": 3})
    );
}

// ---- members removed on disconnect and shutdown ----------------------------

#[tokio::test]
async fn members_are_removed_on_close_and_on_a_dropped_socket() {
    let srv = TestServer::start().await;
    let ch = "presence.gone";
    let mut watcher = srv.connect(user("watcher", json!(null))).await;
    watcher.join(ch).await;
    let mut polite = srv.connect(user("polite", json!(null))).await;
    polite.join(ch).await;
    let mut rude = srv.connect(user("rude", json!(null))).await;
    rude.join(ch).await;
    watcher.expect("hotsock.memberAdded").await;
    watcher.expect("hotsock.memberAdded").await;

    polite.close().await;
    let f = watcher.expect("hotsock.memberRemoved").await;
    assert_eq!(f["data"]["member"]["uid"], "polite");
    // No close handshake at all: the TCP connection just goes away.
    drop(rude);
    let f = watcher.expect("hotsock.memberRemoved").await;
    assert_eq!(f["data"]["member"]["uid"], "rude");
    assert_eq!(
        f["data"]["members"],
        json!([{"uid": "watcher", "umd": null}])
    );
    assert_eq!(srv.channel(ch).await["subscriptionsCount"], 1);
}

#[tokio::test]
async fn shutdown_closes_clients_with_1001_and_removes_their_members() {
    let srv = TestServer::start().await;
    let presence = srv.presence();
    let mut clients = Vec::new();
    for uid in ["a", "b", "c"] {
        let mut c = srv.connect(user(uid, json!(null))).await;
        c.join("presence.room").await;
        c.join("news").await;
        clients.push(c);
    }
    clients[0].expect("hotsock.memberAdded").await;
    clients[0].expect("hotsock.memberAdded").await;
    clients[1].expect("hotsock.memberAdded").await;
    assert_eq!(presence.stats().connections, 3);
    let stopping = tokio::spawn(srv.stop());
    for c in &mut clients {
        // Member events for the others may come first; then 1001.
        match c.ending_within(WAIT).await {
            Ending::Close(code, reason) => {
                assert_eq!(code, 1001, "{reason}");
                assert!(reason.contains("shutting down"), "{reason}");
            }
            Ending::Dropped => panic!("dropped without a close frame"),
        }
    }
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("shutdown within the timeout")
        .expect("shutdown task");
    assert_eq!(presence.stats().connections, 0);
    assert!(presence.channels().is_empty(), "{:?}", presence.channels());
    assert!(presence.members("presence.room").is_empty());
}
