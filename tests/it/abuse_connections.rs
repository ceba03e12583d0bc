//! Connection-level abuse against a real `rollcall serve` process: sockets
//! that send half a request head and nothing more (slowloris), and one
//! client address opening more sockets than its share. The server's own
//! file descriptors and RSS are read from /proc before and after.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::API_KEY;
use crate::common::process::ServerProcess;

/// A TCP connection to `server` from the loopback address `from`.
async fn connect_from(from: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("address"))
        .expect("bind a loopback address");
    tokio::time::timeout(Duration::from_secs(5), socket.connect(server))
        .await
        .expect("connect in time")
        .expect("connected")
}

/// Sends half a request head and never the rest.
async fn slowloris(from: &str, server: SocketAddr) -> TcpStream {
    let mut s = connect_from(from, server).await;
    s.write_all(b"GET /hotsock HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    s
}

/// True if the server closed `s` within `within` (read returns 0 or fails).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(within, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// `GET /healthz` from `from`; the status code.
async fn healthz(from: &str, server: SocketAddr) -> Option<u16> {
    let mut s = connect_from(from, server).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&reply);
    text.split(' ').nth(1)?.parse().ok()
}

async fn metric(server: SocketAddr, sample: &str) -> u64 {
    let mut s = connect_from("127.0.0.9", server).await;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply)).await;
    let text = String::from_utf8_lossy(&reply);
    text.lines()
        .find_map(|l| l.strip_prefix(sample))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in the scrape"))
}

#[tokio::test]
async fn half_sent_request_heads_are_cut_after_the_header_timeout() {
    let server = ServerProcess::start("abuse", &["--header-timeout", "1s"]);
    let fds_before = server.fds();
    let rss_before = server.rss_bytes() / 1024;
    let mut held = Vec::new();
    for i in 0..300 {
        held.push(match i % 3 {
            // Some send nothing at all.
            0 => connect_from("127.0.0.1", server.addr).await,
            _ => slowloris("127.0.0.1", server.addr).await,
        });
    }
    // While they hang, everyone else is served.
    assert_eq!(healthz("127.0.0.2", server.addr).await, Some(200));
    for s in &mut held {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "a half-sent request head was held past the header timeout"
        );
    }
    // The descriptors are given back (a little slack for the runtime).
    let mut fds_after = server.fds();
    for _ in 0..50 {
        if fds_after <= fds_before + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        fds_after = server.fds();
    }
    assert!(
        fds_after <= fds_before + 2,
        "server fds: {fds_before} before, {fds_after} after"
    );
    let rss_after = server.rss_bytes() / 1024;
    eprintln!("server RSS {rss_before} KiB before, {rss_after} KiB after 300 slowloris sockets");
    assert!(
        metric(
            server.addr,
            "rollcall_connections_refused_total{reason=\"header_timeout\"}"
        )
        .await
            >= 200
    );
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let server = ServerProcess::start(
        "abuse",
        &[
            "--max-connections",
            "30",
            "--max-connections-per-address",
            "20",
            "--header-timeout",
            "30s",
        ],
    );
    let mut greedy = Vec::new();
    for _ in 0..20 {
        greedy.push(slowloris("127.0.0.1", server.addr).await);
    }
    // The 21st from the same address is closed at once (within 10 s on a
    // loaded machine; a socket the caps let in would stay open for the
    // 30 s header timeout).
    let mut extra = slowloris("127.0.0.1", server.addr).await;
    assert!(closed_within(&mut extra, Duration::from_secs(10)).await);
    // Another address still gets in, and the health check answers.
    assert_eq!(healthz("127.0.0.2", server.addr).await, Some(200));
    let mut others = Vec::new();
    for _ in 0..9 {
        others.push(slowloris("127.0.0.3", server.addr).await);
    }
    // 20 + 9 held + 1 for this request would be 30: the total cap is next.
    let mut over = slowloris("127.0.0.4", server.addr).await;
    let mut last = slowloris("127.0.0.5", server.addr).await;
    assert!(
        closed_within(&mut last, Duration::from_secs(10)).await,
        "the total cap holds"
    );
    drop(over.shutdown().await);
    drop(greedy);
    drop(others);
    // Slots come back once the sockets close.
    let mut ok = false;
    for _ in 0..50 {
        if healthz("127.0.0.1", server.addr).await == Some(200) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the address got its slots back");
    assert!(
        metric(
            server.addr,
            "rollcall_connections_refused_total{reason=\"address_cap\"}"
        )
        .await
            >= 1
    );
    assert!(
        metric(
            server.addr,
            "rollcall_connections_refused_total{reason=\"total_cap\"}"
        )
        .await
            >= 1
    );
}

#[tokio::test]
async fn an_api_body_sent_a_byte_at_a_time_is_cut_at_the_header_timeout() {
    let server = ServerProcess::start("abuse", &["--header-timeout", "1s"]);
    let mut s = connect_from("127.0.0.1", server.addr).await;
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"chan"
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let started = std::time::Instant::now();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply)).await;
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("REQUEST_TIMEOUT"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}
