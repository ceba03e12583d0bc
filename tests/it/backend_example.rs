//! The README's backend example, `examples/backend.js`, run with Node
//! against a live server: it answers a SocketCluster `login` call with a
//! token that logs the socket in, and it receives the forwarded client
//! message by webhook after checking the signature (and refuses a request
//! signed with another secret).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::protocols::{Peer, Proto};
use crate::common::{SECRET, TestServer};
use crate::webhook_support::HOOK_SECRET;

/// `node examples/backend.js` on a free port, with what it prints.
struct Backend {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Backend {
    fn start() -> Backend {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut child = Command::new("node")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/backend.js"))
            .env("PORT", port.to_string())
            .env("ROLLCALL_JWT_SECRET", SECRET)
            .env("ROLLCALL_WEBHOOK_SECRET", HOOK_SECRET)
            .stdout(Stdio::piped())
            .spawn()
            .expect("node runs (the test command installs it)");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let backend = Backend { child, port, lines };
        backend.wait_for("listening", |l| l == "listening");
        backend
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits (5 s at most) for a printed line; returns it.
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self.lines.lock().unwrap().iter().find(|l| pred(l)) {
                return line.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the example backend did not print {what}; it printed {:?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[tokio::test]
async fn the_readme_backend_answers_login_and_verifies_webhooks() {
    let backend = tokio::task::spawn_blocking(Backend::start)
        .await
        .expect("started");
    let srv = TestServer::start_with(|c| {
        c.channels.authenticated_channels = vec!["members.*".into()];
        c.channels.open_channels = vec!["room.*".into()];
        c.channels.forward_channels = vec!["room.*".into()];
        c.services.webhook_url = vec![backend.url("/hooks")];
        c.services.webhook_secret = Some(HOOK_SECRET.into());
        c.services.webhook_batch_ms = 20;
        c.services.rpc_url = Some(backend.url("/rpc"));
    })
    .await;

    let mut sc = Peer::connect(&srv, Proto::Sc, None)
        .await
        .expect("connects");
    let cid = sc
        .sc_request("login", json!({"user": "alice", "password": "nope"}))
        .await;
    let refused = sc.next().await;
    assert_eq!(refused["rid"], cid, "{refused}");
    assert_eq!(refused["error"]["message"], "wrong user or password");
    let cid = sc
        .sc_request("login", json!({"user": "alice", "password": "secret"}))
        .await;
    loop {
        let f = sc.next().await;
        if f["rid"] == cid {
            assert_eq!(f["data"], json!({"welcome": "alice"}), "{f}");
            break;
        }
    }
    sc.sc_subscribe("members.room")
        .await
        .expect("logged in by the backend's token");

    sc.sc_subscribe("room.1").await.expect("open channel");
    sc.publish("room.1", "hello backend")
        .await
        .expect("published");
    let line = tokio::task::spawn_blocking(move || {
        let line = backend.wait_for("the client message", |l| {
            l.starts_with("event client_message ")
        });
        (backend, line)
    })
    .await
    .expect("waited");
    let (backend, line) = line;
    let event: Value =
        serde_json::from_str(line.trim_start_matches("event client_message ")).expect("JSON");
    assert_eq!(event["channel"], "room.1", "{event}");
    assert_eq!(event["user_id"], "alice", "{event}");
    assert!(
        event["data"].to_string().contains("hello backend"),
        "{event}"
    );

    // A request not signed with the webhook secret is refused.
    let body = json!({"events": []}).to_string();
    let forged = rollcall::services::webhooks::sign("another secret", body.as_bytes());
    let status = crate::webhook_support::post_signed(&backend.url("/hooks"), &body, &forged).await;
    assert_eq!(status, 401);
}
