//! The storm's permessage-deflate client: a minimal WebSocket client that
//! offers the extension as browsers do, inflates what comes compressed and
//! counts the bytes on the wire (tungstenite, the other clients' library,
//! has no permessage-deflate).

use std::net::SocketAddr;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub struct DeflateWs {
    stream: BufReader<TcpStream>,
    /// Bytes read from the socket after the handshake.
    pub wire_bytes: u64,
    /// Bytes of the messages, inflated.
    pub message_bytes: u64,
}

impl DeflateWs {
    /// Opens `ws://addr{path}`, offering permessage-deflate; panics unless
    /// the server accepts it.
    pub async fn connect(addr: SocketAddr, path: &str) -> DeflateWs {
        let mut stream = BufReader::new(TcpStream::connect(addr).await.expect("connect"));
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("handshake");
        let mut head = String::new();
        loop {
            let mut line = String::new();
            stream.read_line(&mut line).await.expect("response");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("permessage-deflate"),
            "the server did not accept permessage-deflate: {head}"
        );
        DeflateWs {
            stream,
            wire_bytes: 0,
            message_bytes: 0,
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81];
        match payload.len() {
            len @ 0..126 => frame.push(0x80 | len as u8),
            len => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
        }
        // A zero mask: the payload goes as it is.
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await.expect("send");
    }

    /// The next text message (inflated); pings and pongs are skipped.
    pub async fn next_text(&mut self) -> String {
        loop {
            let mut head = [0u8; 2];
            self.stream.read_exact(&mut head).await.expect("a frame");
            let mut len = u64::from(head[1] & 0x7f);
            let mut header = 2;
            if len == 126 {
                len = u64::from(self.stream.read_u16().await.expect("length"));
                header += 2;
            } else if len == 127 {
                len = self.stream.read_u64().await.expect("length");
                header += 8;
            }
            let mut payload = vec![0u8; len as usize];
            self.stream.read_exact(&mut payload).await.expect("payload");
            self.wire_bytes += header + len;
            if head[0] & 0x0f != 0x1 {
                assert!(
                    head[0] & 0x0f >= 0x8,
                    "fragmented server frames are not expected"
                );
                continue;
            }
            if head[0] & 0x40 != 0 {
                payload.extend_from_slice(&[0, 0, 0xff, 0xff, 0x03, 0x00]);
                payload = miniz_oxide::inflate::decompress_to_vec(&payload).expect("inflates");
            }
            self.message_bytes += header + payload.len() as u64;
            return String::from_utf8(payload).expect("UTF-8");
        }
    }

    /// Joins `channel` and reads until its member list holds `members`
    /// (as `clients::hotsock_join_until`).
    pub async fn hotsock_join_until(&mut self, channel: &str, members: usize) {
        self.send_text(&json!({"event":"hotsock.subscribe","channel":channel}).to_string())
            .await;
        while !crate::clients::lists_members(&self.next_text().await, members) {}
    }
}
