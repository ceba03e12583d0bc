//! Calls answered by the backend (`--rpc-url`): a SocketCluster custom
//! event with a cid is POSTed, signed, with the caller's identity; the
//! answer comes back as the reply, and an auth token in it logs the socket
//! in (`#setAuthToken`, then the channels its token grants). Refusals,
//! HTTP errors and timeouts reach the client as errors, and reading goes
//! on.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::common::protocols::{Peer, Proto};
use crate::common::{TestServer, sign};
use crate::webhook_support::{HOOK_SECRET, read_request};

/// A backend answering calls: `login` (password "secret" -> a token for
/// alice), `whoami` (the caller's identity), `boom` (HTTP 500), `slow`
/// (no answer for 3 s). Checks every request's signature.
async fn backend() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/rpc", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Some(hit) = read_request(&mut stream).await else {
                    return;
                };
                let expected = rollcall::services::webhooks::sign(HOOK_SECRET, &hit.body);
                assert_eq!(hit.header("X-Rollcall-Signature"), Some(expected.as_str()));
                let call = hit.json();
                let (status, answer) = match call["event"].as_str().unwrap_or_default() {
                    "login" if call["data"]["password"] == "secret" => (
                        200,
                        json!({"data": {"welcome": "alice"},
                               "auth_token": sign(&mut json!({"username": "alice"}))}),
                    ),
                    "login" => (200, json!({"error": "wrong password"})),
                    "whoami" => (
                        200,
                        json!({"data": {"user": call["user_id"], "protocol": call["protocol"],
                                        "connection": call["connection"]}}),
                    ),
                    "boom" => (500, json!({})),
                    "slow" => {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        (200, json!({"data": "late"}))
                    }
                    _ => (404, json!({})),
                };
                let body = answer.to_string();
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    url
}

/// Calls go to the backend at `url` (its events only), signed, with a
/// 500 ms timeout.
fn answered_by(c: &mut rollcall::config::Config, url: String) {
    c.services.rpc_url = Some(url);
    c.services.rpc_timeout = Duration::from_millis(500);
    c.services.rpc_events = ["login", "whoami", "boom", "slow"]
        .map(String::from)
        .to_vec();
    c.services.webhook_secret = Some(HOOK_SECRET.into());
}

/// The `error.message` of a reply or an acknowledgment ("" if none).
fn error_message(reply: &Value) -> &str {
    reply["error"]["message"].as_str().unwrap_or_default()
}

/// Sends `event` with a cid and returns the reply (frames before it, such
/// as `#setAuthToken`, are returned too).
async fn call(peer: &mut Peer, event: &str, data: Value) -> (Vec<Value>, Value) {
    let cid = peer.sc_request(event, data).await;
    let mut before = Vec::new();
    loop {
        let f = peer.next().await;
        if f["rid"] == cid {
            return (before, f);
        }
        before.push(f);
    }
}

#[tokio::test]
async fn the_backend_answers_calls_and_logs_a_socket_in() {
    let url = backend().await;
    let srv = TestServer::start_with(|c| {
        c.channels.authenticated_channels = vec!["members.*".into()];
        answered_by(c, url);
    })
    .await;
    let mut sc = Peer::connect(&srv, Proto::Sc, None)
        .await
        .expect("connects");
    assert!(sc.sc_subscribe("members.room").await.is_err(), "anonymous");

    let (_, refused) = call(&mut sc, "login", json!({"password": "nope"})).await;
    assert_eq!(refused["error"]["name"], "BackendError", "{refused}");
    assert_eq!(refused["error"]["message"], "wrong password", "{refused}");

    let (before, answer) = call(&mut sc, "login", json!({"password": "secret"})).await;
    assert_eq!(answer["data"], json!({"welcome": "alice"}), "{answer}");
    assert!(
        before
            .iter()
            .any(|f| f["event"] == "#setAuthToken" && f["data"]["token"].is_string()),
        "the token goes to the client before the answer: {before:?}"
    );
    sc.sc_subscribe("members.room")
        .await
        .expect("logged in now");
    let (_, who) = call(&mut sc, "whoami", Value::Null).await;
    assert_eq!(who["data"]["user"], "alice", "{who}");
    assert_eq!(who["data"]["protocol"], "socketcluster", "{who}");

    let (_, boom) = call(&mut sc, "boom", Value::Null).await;
    assert!(error_message(&boom).contains("HTTP 500"), "{boom}");
    let started = tokio::time::Instant::now();
    let (_, slow) = call(&mut sc, "slow", Value::Null).await;
    assert!(error_message(&slow).contains("did not answer"), "{slow}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the timeout holds"
    );
    // The socket goes on: requests after a failed call are answered.
    let (_, again) = call(&mut sc, "whoami", Value::Null).await;
    assert_eq!(again["data"]["user"], "alice", "{again}");
}

#[tokio::test]
async fn without_a_backend_a_custom_event_is_an_error_that_says_how() {
    let srv = TestServer::start().await;
    let mut sc = Peer::connect(&srv, Proto::Sc, None)
        .await
        .expect("connects");
    let (_, reply) = call(&mut sc, "login", json!({})).await;
    assert_eq!(reply["error"]["name"], "InvalidActionError", "{reply}");
    assert!(error_message(&reply).contains("--rpc-url"), "{reply}");
}

/// Emits `event` with an acknowledgment id and returns the acknowledgment.
async fn sio_call(peer: &mut Peer, id: u32, event: &str, data: Value) -> Value {
    peer.send(format!("42/chat,{id}{}", json!([event, data])))
        .await;
    let prefix = format!("43/chat,{id}");
    loop {
        let f = peer.next().await;
        if let Some(rest) = f["packet"].as_str().and_then(|p| p.strip_prefix(&prefix)) {
            let args: Value = serde_json::from_str(rest).expect("ack arguments");
            return args[0].clone();
        }
    }
}

#[tokio::test]
async fn socketio_acknowledgments_carry_the_backends_answers() {
    let url = backend().await;
    let srv = TestServer::start_with(|c| answered_by(c, url)).await;
    let mut sio = Peer::connect(&srv, Proto::SocketIo, Some(json!({"uid": "sam"})))
        .await
        .expect("connects");
    let who = sio_call(&mut sio, 7, "whoami", Value::Null).await;
    assert_eq!(who["data"]["user"], "sam", "{who}");
    assert_eq!(who["data"]["protocol"], "socketio", "{who}");
    let refused = sio_call(&mut sio, 8, "login", json!({"password": "nope"})).await;
    assert_eq!(
        refused["error"],
        json!({"code": "backend.error", "message": "wrong password"})
    );
    let slow = sio_call(&mut sio, 9, "slow", Value::Null).await;
    assert!(error_message(&slow).contains("did not answer"), "{slow}");
    // A token from the backend is the client's to reconnect with.
    let login = sio_call(&mut sio, 10, "login", json!({"password": "secret"})).await;
    assert_eq!(login["data"], json!({"welcome": "alice"}), "{login}");
    assert!(login["auth_token"].is_string(), "{login}");
    // The Avaya events are the server's own, not calls.
    sio.subscribe("room").await.expect_err("no grant for room");
}

#[tokio::test]
async fn hotsock_calls_are_answered_with_rollcall_answer() {
    let url = backend().await;
    let srv = TestServer::start_with(|c| answered_by(c, url)).await;
    let mut ann = srv.connect(json!({"uid": "ann"})).await;
    let call = |id: u32, name: &str, args: Value| json!({"event": "rollcall.call", "data": {"id": id, "name": name, "args": args}});
    ann.send(call(1, "whoami", Value::Null)).await;
    let f = ann.expect("rollcall.answer").await;
    assert_eq!(f["data"]["id"], 1, "{f}");
    assert_eq!(f["data"]["data"]["user"], "ann", "{f}");
    assert_eq!(f["data"]["data"]["protocol"], "hotsock", "{f}");
    // Frames after a call wait for its answer: the answers keep the order.
    ann.send(call(2, "login", json!({"password": "nope"})))
        .await;
    ann.send(json!({"event": "hotsock.ping"})).await;
    let f = ann.expect("rollcall.answer").await;
    assert_eq!(
        f["data"],
        json!({"id": 2, "error": {"code": "BACKEND_ERROR", "message": "wrong password"}})
    );
    ann.expect("hotsock.pong").await;
    ann.send(call(4, "login", json!({"password": "secret"})))
        .await;
    let f = ann.expect("rollcall.answer").await;
    assert_eq!(f["data"]["data"], json!({"welcome": "alice"}), "{f}");
    assert!(f["data"]["auth_token"].is_string(), "{f}");
    ann.send(call(3, "format-disk", Value::Null)).await;
    let f = ann.expect("rollcall.answer").await;
    assert!(error_message(&f["data"]).contains("--rpc-events"), "{f}");
}
