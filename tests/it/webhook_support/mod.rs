//! A webhook receiver for tests: a plain HTTP/1.1 server on 127.0.0.1 that
//! reports every request, and the signature check.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The `--webhook-secret` the tests use.
pub const HOOK_SECRET: &str = "hook-secret";

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The request line, e.g. `POST /hooks HTTP/1.1`.
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// Reads one HTTP/1.1 request (head + Content-Length body).
pub async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Hit> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Hit {
        head: head.lines().next().unwrap_or_default().to_string(),
        headers,
        body: buf[head_end..head_end + len].to_vec(),
    })
}

/// A receiver: answers 500 to the first `fail_first` requests, then 200
/// (or never answers at all with `hang`). Every request is reported.
pub async fn receiver(
    fail_first: usize,
    hang: bool,
) -> (String, mpsc::UnboundedReceiver<Hit>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::unbounded_channel();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            let n = seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Some(hit) = read_request(&mut stream).await else {
                    return;
                };
                let _ = tx.send(hit);
                if hang {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                let status = if n < fail_first {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let reply =
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    (url, rx, count)
}

/// Checks the signature and headers; returns the body's events.
pub fn verified_events(hit: &Hit) -> Vec<Value> {
    let expected = rollcall::services::webhooks::sign(HOOK_SECRET, &hit.body);
    assert_eq!(
        hit.header("X-Rollcall-Signature"),
        Some(expected.as_str()),
        "bad signature"
    );
    assert_eq!(hit.header("Content-Type"), Some("application/json"));
    let body = hit.json();
    assert_eq!(hit.header("X-Rollcall-Webhook-Id"), body["id"].as_str());
    assert!(crate::common::is_ulid(body["id"].as_str().unwrap()));
    body["events"].as_array().expect("events").clone()
}

/// POSTs `body` to `url` (http://127.0.0.1:PORT/path) with
/// `X-Rollcall-Signature: signature`, as the server would; returns the
/// status.
pub async fn post_signed(url: &str, body: &str, signature: &str) -> u16 {
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nX-Rollcall-Signature: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    let _ =
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response)).await;
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
