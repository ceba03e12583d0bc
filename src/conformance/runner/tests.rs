//! End-to-end test of the runner against a tiny in-process mock server that
//! speaks a sliver of the Hotsock protocol and of the HTTP API.

use super::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

const SECRET: &str = "test-secret";
const KEY: &str = "test-key";

async fn mock_server() -> String {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a.to_string(),
        Err(e) => panic!("local_addr: {e}"),
    };
    tokio::spawn(async move {
        let mut n = 0u32;
        while let Ok((stream, _)) = listener.accept().await {
            n += 1;
            tokio::spawn(handle(stream, n));
        }
    });
    addr
}

async fn handle(stream: TcpStream, n: u32) {
    let mut buf = [0u8; 4096];
    let head = loop {
        let Ok(k) = stream.peek(&mut buf).await else {
            return;
        };
        let text = String::from_utf8_lossy(&buf[..k]).to_ascii_lowercase();
        if text.contains("\r\n\r\n") || k == buf.len() {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    if head.contains("upgrade: websocket") {
        ws_session(stream, n).await;
    } else {
        http_session(stream).await;
    }
}

#[allow(clippy::result_large_err)]
fn check_token(req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
    let has_token = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("token=ey")));
    if has_token {
        Ok(resp)
    } else {
        let mut r = ErrorResponse::new(Some("bad token".into()));
        *r.status_mut() = tungstenite::http::StatusCode::UNAUTHORIZED;
        Err(r)
    }
}

async fn ws_session(stream: TcpStream, n: u32) {
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check_token).await else {
        return;
    };
    let (mut tx, mut rx) = ws.split();
    let connected = json!({"event": "hotsock.connected",
        "data": {"connectionId": format!("conn-{n}="), "connectionExpiresAt": "2999-01-01T00:00:00Z",
                 "connectionSecret": "1FfpK4PHV1B7ZryUSCsN"},
        "meta": {"uid": null, "umd": null}});
    if tx.send(Message::text(connected.to_string())).await.is_err() {
        return;
    }
    while let Some(Ok(msg)) = rx.next().await {
        let Message::Text(t) = msg else { continue };
        if t.len() > 1000 {
            let frame = CloseFrame {
                code: CloseCode::Size,
                reason: "too big".into(),
            };
            let _ = tx.send(Message::Close(Some(frame))).await;
            return;
        }
        let reply = match serde_json::from_str::<Value>(&t) {
            Err(_) => {
                json!({"event": "hotsock.error", "error": {"code": "INVALID_MESSAGE", "message": "bad json"}})
            }
            Ok(v) => match v.get("event").and_then(Value::as_str) {
                Some("hotsock.ping") => json!({"event": "hotsock.pong", "data": {}}),
                Some("hotsock.heartbeat") => continue,
                Some("burst") => {
                    for e in ["b", "a", "noise", "c"] {
                        let _ = tx
                            .send(Message::text(json!({"event": e}).to_string()))
                            .await;
                    }
                    continue;
                }
                Some(e) => json!({"id": "01J66BCPSDHYZQ38BW5M357YX5", "event": e,
                                  "channel": v.get("channel"), "data": v.get("data")}),
                None => continue,
            },
        };
        if tx.send(Message::text(reply.to_string())).await.is_err() {
            return;
        }
    }
}

async fn http_session(mut stream: TcpStream) {
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(k) => req.extend_from_slice(&buf[..k]),
        }
        let text = String::from_utf8_lossy(&req).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if req.len() >= end + 4 + len {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&req).into_owned();
    // Header names are case-insensitive (hyper sends them lower-case).
    let authed = text.to_ascii_lowercase().contains(&format!(
        "authorization: bearer {}\r\n",
        KEY.to_ascii_lowercase()
    ));
    let first = text.lines().next().unwrap_or_default().to_string();
    let resp = if !authed {
        "HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".to_string()
    } else if let Some(name) = first
        .strip_prefix("GET /api/channels/")
        .and_then(|r| r.strip_suffix(" HTTP/1.1"))
    {
        let body = json!({"name": name, "subscriptionsCount": 0, "members": []}).to_string();
        let (a, b) = body.split_at(body.len() / 2);
        format!(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        )
    } else if first.starts_with("POST /api/publish ") {
        let body = text
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        format!(
            "HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".to_string()
    };
    let _ = stream.write_all(resp.as_bytes()).await;
}

fn suite_json() -> Value {
    json!({
        "description": "runner self-test",
        "cases": [
            {"name": "connect and ping", "vars": {"room": "room-${run}", "other": "${room}-x"}, "steps": [
                {"connect": "a", "claims": {"uid": "A"},
                 "expect": [{"$template": "connected", "client": "a"}]},
                {"send": "a", "frame": {"event": "hotsock.ping"}},
                {"expect": "a", "frame": {"event": "hotsock.pong", "data": {}}},
                {"send": "a", "frame": {"event": "hotsock.heartbeat"}},
                {"expect_none": "a", "for_ms": 100},
                {"connect": "b", "token": {"$token": {"scope": "connect"}}, "path": "/hotsock/v1",
                 "expect": [{"event": "hotsock.connected", "data": {"$partial": {"connectionId": {"$not": "${a.connectionId}"}}}, "meta": "$object"}]},
                {"send": "b", "frame": {"channel": "${other}", "event": "chat", "data": {"t": {"$token": {"uid": "x"}}}}},
                {"expect": "b", "frame": {"id": "$ulid", "event": "chat", "channel": "room-${run}-x", "data": {"t": "$string"}}},
                {"close": "b"},
                {"close": "a", "abrupt": true}
            ]},
            {"name": "refused without token", "steps": [
                {"connect": "a", "status": 401},
                {"connect": "a", "token": "not-a-jwt", "status": 401}
            ]},
            {"name": "http api", "requires": ["api_key"], "steps": [
                {"http": "GET", "path": "/api/channels/presence.x-${run}", "status": 200,
                 "response": {"name": "presence.x-${run}", "subscriptionsCount": {"$capture": "count", "match": "$integer"}, "members": []}},
                {"http": "GET", "path": "/api/channels/x", "auth": false, "status": 401},
                {"http": "POST", "path": "/api/publish", "body": {"channel": "c", "event": "e", "n": "${count}"},
                 "status": 202, "response": {"n": 0}, "partial": true, "retry_for_ms": 500}
            ]},
            {"name": "oversized and malformed", "steps": [
                {"connect": "a", "claims": {}, "expect": [{"$template": "connected"}]},
                {"send": "a", "text": "{not json"},
                {"expect": "a", "frame": {"event": "hotsock.error", "channel": "$absent", "error": {"code": "INVALID_MESSAGE", "message": "$string"}}},
                {"send": "a", "size": 2000},
                {"expect_close": "a", "code": 1009}
            ]},
            {"name": "repeat, mute, optional, unordered, seek", "steps": [
                {"repeat": 3, "width": 2, "steps": [
                    {"connect": "u${i}", "claims": {"uid": "u${i}"}, "expect": [{"$template": "connected"}]},
                    {"mute": "u${i}"}
                ]},
                {"send": "u02", "frame": {"event": "hotsock.ping"}},
                {"unmute": "u02"},
                {"send": "u02", "frame": {"event": "hotsock.ping"}},
                {"expect": "u02", "frame": {"event": "nope"}, "optional": true, "timeout_ms": 200},
                {"expect": "u02", "frame": {"event": "hotsock.pong", "data": {}}},
                {"send": "u01", "frame": {"event": "burst"}},
                {"unmute": "u01"},
                {"send": "u01", "frame": {"event": "burst"}},
                {"expect": "u01", "frames": [{"event": "a"}, {"event": "b"}], "unordered": true},
                {"expect": "u01", "frame": {"event": "c"}, "seek": true},
                {"set": {"x": {"$repeat": "ab", "count": 2}}},
                {"send": "u03", "frame": {"event": "e", "channel": "${x}"}},
                {"expect": "u03", "frame": {"event": "e", "channel": "abab"}, "partial": true, "optional": true},
                {"expect": ["u01", "u02", "u03"], "frames": [], "unordered": true}
            ]},
            {"name": "deliberate failure", "steps": [
                {"connect": "a", "claims": {}, "expect": [{"$template": "connected"}]},
                {"send": "a", "frame": {"event": "hotsock.ping"}},
                {"expect": "a", "frame": {"event": "hotsock.pong", "data": "{}"}, "timeout_ms": 500}
            ]},
            {"name": "deliberate timeout", "steps": [
                {"connect": "a", "claims": {}, "expect": [{"$template": "connected"}]},
                {"expect": "a", "frame": {"event": "never"}, "timeout_ms": 100}
            ]},
            {"name": "skipped", "skip": "demonstrates skip", "steps": []}
        ]
    })
}

fn shared_json() -> Value {
    json!({
        "templates": {
            "connected": {
                "params": {"client": "_", "uid": null},
                "value": {"event": "hotsock.connected",
                          "data": {"connectionId": {"$capture": "${client}.connectionId", "match": "$nonempty"},
                                   "connectionExpiresAt": "$rfc3339_future",
                                   "connectionSecret": {"$regex": "^[A-Za-z0-9]{20}$"}},
                          "meta": {"uid": "$any", "umd": "$any"}}
            }
        }
    })
}

#[tokio::test]
async fn runs_a_suite_against_a_mock_server() {
    let addr = mock_server().await;
    let dir = std::env::temp_dir().join(format!("rollcall-conformance-{}", random_run_id()));
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("_shared.json"), shared_json().to_string()))
        .and_then(|()| std::fs::write(dir.join("self.json"), suite_json().to_string()));
    if let Err(e) = written {
        panic!("write suite: {e}");
    }
    let mut opts = RunOptions {
        suite: dir.clone(),
        url: format!("ws://{addr}"),
        jwt_secret: SECRET.into(),
        api_key: Some(KEY.into()),
        filter: None,
    };
    let summary = run(&opts).await;
    assert_eq!(
        summary,
        Ok(Summary {
            passed: 5,
            failed: 2
        })
    );

    opts.filter = Some("http".into());
    opts.api_key = None;
    assert_eq!(
        run(&opts).await,
        Ok(Summary {
            passed: 0,
            failed: 0
        })
    );

    opts.suite = dir.join("self.json");
    opts.filter = Some("ping".into());
    assert_eq!(
        run(&opts).await,
        Ok(Summary {
            passed: 1,
            failed: 0
        })
    );

    opts.url = "tcp://x".into();
    assert!(run(&opts).await.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn targets_and_urls() {
    let t = Target::parse("ws://127.0.0.1:4000/");
    assert_eq!(
        t,
        Ok(Target {
            scheme: "ws",
            authority: "127.0.0.1:4000".into(),
            prefix: String::new()
        })
    );
    let t = Target::parse("ws://localhost/base").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.authority, "localhost:80");
    assert_eq!(
        t.ws_url("/hotsock", "token=a"),
        "ws://localhost:80/base/hotsock?token=a"
    );
    assert_eq!(
        t.ws_url("/hotsock?x=1", "token=a"),
        "ws://localhost:80/base/hotsock?x=1&token=a"
    );
    assert!(Target::parse("ftp://x").is_err());
    assert_eq!(pct("a b/é"), "a%20b%2F%C3%A9");
    assert_eq!(padded_frame(100).map(|s| s.len()), Ok(100));
    assert!(padded_frame(100).is_ok_and(|s| serde_json::from_str::<Value>(&s).is_ok()));
    assert!(padded_frame(3).is_err());
}
