//! Outgoing HTTPS over real sockets: a `rollcall serve` process sends its
//! signed webhooks to a local HTTPS receiver whose certificate comes from
//! a private CA (made with `openssl`), trusted through `--tls-ca-file`;
//! without that flag the certificate is refused and the batch retried
//! (verification is on). A bad `--tls-ca-file` stops the server at start.
//! The OAuth introspection client shares the connector and is checked
//! against the same receiver.

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;
use crate::common::cluster::{Node, NodeOptions};
use crate::tls_support::{HttpsReceiver, TestPki};

const HOOK_SECRET: &str = "tls-hook-secret";

fn hook_options(url: &str, ca: Option<&std::path::Path>) -> NodeOptions {
    let mut extra: Vec<String> = [
        "--webhook-url",
        url,
        "--webhook-secret",
        HOOK_SECRET,
        "--webhook-batch-ms",
        "50",
        "--webhook-retry-ms",
        "100",
        "--webhook-max-attempts",
        "20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(ca) = ca {
        extra.push("--tls-ca-file".into());
        extra.push(ca.display().to_string());
    }
    NodeOptions {
        extra,
        ..NodeOptions::default()
    }
}

#[tokio::test]
async fn signed_webhooks_arrive_over_https_with_the_ca_file() {
    let pki = TestPki::generate("hooks");
    let mut receiver = HttpsReceiver::start(&pki, "{}").await;
    let node = Node::start(
        "hooks-tls",
        "memory",
        &hook_options(&receiver.url("/hook?src=rollcall"), Some(&pki.ca)),
    );
    let mut alice = node
        .hotsock(common::user("alice", json!({"name": "Alice"})))
        .await;
    alice.join("presence.tls").await;

    // Batches arrive over TLS, signed; wait for alice's member_added.
    let deadline = Instant::now() + Duration::from_secs(10);
    let added = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let hit = tokio::time::timeout(left, receiver.hits.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no member_added over https within 10 s; node log:\n{}",
                    node.log_text()
                )
            })
            .expect("receiver open");
        assert_eq!(hit.head, "POST /hook?src=rollcall HTTP/1.1");
        let expected = rollcall::services::webhooks::sign(HOOK_SECRET, &hit.body);
        assert_eq!(
            hit.header("X-Rollcall-Signature"),
            Some(expected.as_str()),
            "bad signature"
        );
        assert_eq!(
            hit.header("Host"),
            Some(format!("127.0.0.1:{}", receiver.port).as_str())
        );
        let body: Value = serde_json::from_slice(&hit.body).expect("JSON body");
        assert_eq!(hit.header("X-Rollcall-Webhook-Id"), body["id"].as_str());
        let events = body["events"].as_array().expect("events").clone();
        if let Some(e) = events.into_iter().find(|e| e["name"] == "member_added") {
            break e;
        }
    };
    assert_eq!(added["channel"], "presence.tls");
    assert_eq!(added["user_id"], "alice");
    assert_eq!(added["data"], json!({"name": "Alice"}));
    assert_eq!(receiver.failed_handshakes.load(Ordering::SeqCst), 0);
    alice.close().await;
}

#[tokio::test]
async fn without_the_ca_file_the_certificate_is_refused_and_retried() {
    let pki = TestPki::generate("hooks-untrusted");
    let mut receiver = HttpsReceiver::start(&pki, "{}").await;
    let node = Node::start(
        "hooks-untrusted",
        "memory",
        &hook_options(&receiver.url("/hook"), None),
    );
    let mut alice = node.hotsock(common::user("alice", Value::Null)).await;
    alice.join("presence.tls").await;

    // The log says why and what to do, and the batch is retried.
    let explained = common::eventually(Duration::from_secs(10), || async {
        let log = node.log_text();
        log.lines()
            .filter(|l| {
                l.contains("webhook failed; retrying")
                    && l.contains("certificate not trusted")
                    && l.contains("--tls-ca-file")
            })
            .count()
            >= 2
    })
    .await;
    assert!(
        explained,
        "no retried certificate error in the node log:\n{}",
        node.log_text()
    );
    // The receiver counts a refused handshake when its side of it ends,
    // which may be just after the node logged its own.
    let refused = common::eventually(Duration::from_secs(5), || async {
        receiver.failed_handshakes.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert!(refused, "the receiver saw no refused handshakes");
    assert!(
        receiver.hits.try_recv().is_err(),
        "no request may pass an untrusted certificate"
    );
    alice.close().await;
}

/// Runs `rollcall serve` with `args`; it must exit (within 10 s) with an
/// error. Returns its stderr.
fn serve_fails(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rollcall serve");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rollcall serve {args:?} did not stop within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        use std::io::Read as _;
        let _ = err.read_to_string(&mut stderr);
    }
    assert!(!status.success(), "rollcall serve {args:?} started");
    stderr
}

#[test]
fn a_bad_ca_file_stops_the_server_with_a_clear_message() {
    let pki = TestPki::generate("bad-ca");
    let missing = pki.dir.join("missing.pem");
    let err = serve_fails(&["--tls-ca-file", missing.to_str().expect("utf-8 path")]);
    assert!(
        err.contains("--tls-ca-file") && err.contains("no such file"),
        "{err}"
    );
    // A key is not a certificate.
    let err = serve_fails(&["--tls-ca-file", pki.key.to_str().expect("utf-8 path")]);
    assert!(err.contains("contains no PEM certificate"), "{err}");
    // The environment variable is read too.
    let mut child = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("ROLLCALL_TLS_CA_FILE", &missing)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rollcall serve");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ROLLCALL_TLS_CA_FILE was not checked");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no such file"), "{err}");
}

#[cfg(feature = "socketio")]
#[tokio::test]
async fn oauth_introspection_works_over_https() {
    use rollcall::socketio::auth::Introspector;
    let pki = TestPki::generate("introspect");
    let mut endpoint = HttpsReceiver::start(&pki, r#"{"active":true,"sub":"alice"}"#).await;
    let ttl = Duration::from_secs(30);
    let url = format!(
        "https://client:s3cret@127.0.0.1:{}/introspect",
        endpoint.port
    );

    let trusted = Introspector::new(&url, ttl, Some(&pki.ca)).expect("introspector");
    let user = trusted.check("token-1").await.expect("introspected");
    assert_eq!(&*user.user_id, "alice");
    // Reported before the answer was written, so already there.
    let hit = endpoint.hits.try_recv().expect("a request");
    assert_eq!(hit.head, "POST /introspect HTTP/1.1");
    assert_eq!(
        hit.header("Authorization"),
        Some("Basic Y2xpZW50OnMzY3JldA==")
    );
    assert!(String::from_utf8_lossy(&hit.body).starts_with("token=token-1"));

    // Without the CA the certificate is refused, and the error says why.
    let untrusted = Introspector::new(&url, ttl, None).expect("introspector");
    let err = untrusted.check("token-2").await.unwrap_err();
    assert!(
        err.contains("certificate not trusted") && err.contains("--tls-ca-file"),
        "{err}"
    );
    assert!(endpoint.hits.try_recv().is_err());
}
