//! `--allowed-origins`: a WebSocket upgrade (any front end) or an Engine.IO
//! polling request from a page of another origin is refused with 403 and
//! the reason; listed origins and clients that send no `Origin` connect;
//! the HTTP API is not affected.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::{TestServer, sign};

/// The status of a WebSocket upgrade of `path` with `origin`.
async fn upgrade(srv: &TestServer, path: &str, origin: Option<&str>) -> u16 {
    let mut request = format!("ws://{}{path}", srv.addr)
        .into_client_request()
        .expect("request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().expect("header"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("upgrade of {path}: {e}"),
    }
}

/// The status line and body of a raw GET with `origin`.
async fn get(srv: &TestServer, path: &str, origin: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(srv.addr)
        .await
        .expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\nConnection: close\r\n\r\n",
        srv.addr
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    response
}

#[tokio::test]
async fn pages_of_other_origins_cannot_open_client_connections() {
    let srv = TestServer::start_with(|c| {
        c.listener.allowed_origins = vec![
            "https://app.example.com".into(),
            "https://*.example.org".into(),
        ];
    })
    .await;
    let token = sign(&mut json!({"uid": "amy"}));
    let hotsock = format!("/hotsock?token={token}");
    assert_eq!(
        upgrade(&srv, &hotsock, Some("https://app.example.com")).await,
        101
    );
    assert_eq!(
        upgrade(&srv, &hotsock, Some("https://eu.example.org")).await,
        101
    );
    assert_eq!(
        upgrade(&srv, &hotsock, None).await,
        101,
        "no Origin: not a browser"
    );
    for path in [
        hotsock.as_str(),
        "/socketcluster/",
        "/sgc",
        "/socket.io/?EIO=4&transport=websocket",
    ] {
        assert_eq!(
            upgrade(&srv, path, Some("https://evil.example")).await,
            403,
            "{path}"
        );
    }
    let polling = get(
        &srv,
        "/socket.io/?EIO=4&transport=polling",
        "https://evil.example",
    )
    .await;
    assert!(polling.starts_with("HTTP/1.1 403"), "{polling}");
    assert!(polling.contains("--allowed-origins"), "{polling}");
    let polling = get(
        &srv,
        "/socket.io/?EIO=4&transport=polling",
        "https://app.example.com",
    )
    .await;
    assert!(polling.starts_with("HTTP/1.1 200"), "{polling}");
    // The HTTP API answers whatever the Origin (it needs the API key).
    let health = get(&srv, "/healthz", "https://evil.example").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
}
