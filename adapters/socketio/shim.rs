//! The Engine.IO 3 CONNECT shim (spec §2.6 a): socket.io-client 1.x and 2.x
//! send the namespace CONNECT with the handshake query glued to it, which
//! socketioxide 0.18.9 takes for the namespace name (it answers "Invalid
//! namespace" on `/chat?…`, which the client ignores, and hangs):
//!
//! ```text
//! client → 40/chat?tokenType=jwt&token=eyJ…        (1.7.3, no trailing comma)
//! client → 40/chat?tokenType=jwt&token=eyJ…,       (2.0.4)
//! shim   → 40/chat   /   40/chat,                  (what socketioxide gets)
//! ```
//!
//! The query is the one already on the upgrade URL, so nothing is lost by
//! dropping it. Rather than relaying frames through a second WebSocket, the
//! shim performs the upgrade itself and hands socketioxide the raw upgraded
//! stream wrapped in [`ConnectRewrite`]: a byte-level filter over the
//! client's WebSocket frames that re-frames only small text frames starting
//! with `40/…?` and passes every other byte through unchanged. The server's
//! frames are not touched; socketioxide's own WebSocket (with its size
//! limits, heartbeats and EIO3 framing) sees a normal client.
//!
//! Only `EIO=3` WebSocket upgrades go through the filter (including
//! upgrades from polling, `sid=…`). Every WebSocket upgrade is answered by
//! [`upgrade`] here, so that the front end owns each client's stream (see
//! `sever.rs`).

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Text frames at most this long are inspected; a namespace CONNECT with a
/// token is well below it. Longer frames pass through untouched.
pub const MAX_INSPECTED_FRAME: usize = 16 * 1024;

/// Strips the query from a socket.io protocol-4 namespace CONNECT packet:
/// `40/chat?a=b` → `40/chat`, `40/chat?a=b,` → `40/chat,`. None if the
/// packet is something else (or has no query).
pub fn strip_connect_query(packet: &[u8]) -> Option<Vec<u8>> {
    if !packet.starts_with(b"40/") {
        return None;
    }
    let nsp_end = packet
        .iter()
        .position(|&b| b == b',')
        .unwrap_or(packet.len());
    let q = packet[..nsp_end].iter().position(|&b| b == b'?')?;
    let mut out = Vec::with_capacity(packet.len() - (nsp_end - q));
    out.extend_from_slice(&packet[..q]);
    out.extend_from_slice(&packet[nsp_end..]);
    Some(out)
}

/// True for an Engine.IO 3 (socket.io 1.x/2.x) WebSocket upgrade request.
pub fn is_eio3_websocket(req: &Request<Body>) -> bool {
    let query = req.uri().query().unwrap_or("");
    let mut eio3 = false;
    let mut ws = false;
    for pair in query.split('&') {
        match pair {
            "EIO=3" => eio3 = true,
            "transport=websocket" => ws = true,
            _ => {}
        }
    }
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    eio3 && ws && upgrade
}

/// True for a WebSocket upgrade request of any Engine.IO version.
pub fn is_websocket(req: &Request<Body>) -> bool {
    let query = req.uri().query().unwrap_or("");
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    upgrade && query.split('&').any(|pair| pair == "transport=websocket")
}

/// The upgraded connection of a client.
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// Answers a WebSocket upgrade and, once upgraded, calls `start` with the
/// stream (`wrap`ped: e.g. in [`ConnectRewrite`] for EIO3 clients) and the
/// request head, which starts socketioxide's session on it.
pub fn upgrade<St: Send + 'static>(
    wrap: impl FnOnce(Upgraded) -> St + Send + 'static,
    start: impl FnOnce(St, Request<()>) + Send + 'static,
    mut req: Request<Body>,
) -> Response<Body> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return (
            StatusCode::BAD_REQUEST,
            "WebSocket upgrade without Sec-WebSocket-Key",
        )
            .into_response();
    };
    let version_ok = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    if !version_ok {
        return (
            StatusCode::BAD_REQUEST,
            "unsupported WebSocket version; Sec-WebSocket-Version must be 13",
        )
            .into_response();
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _) = req.into_parts();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(io) => start(wrap(TokioIo::new(io)), Request::from_parts(parts, ())),
            Err(e) => tracing::debug!(error = %e, "socket.io WebSocket upgrade failed"),
        }
    });
    let accept = derive_accept_key(key.as_bytes());
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// Where the filter is in the client's frame stream.
#[derive(Debug)]
enum State {
    /// Reading a frame header (bytes so far).
    Header(Vec<u8>),
    /// Passing `remaining` payload bytes through.
    Pass { remaining: u64 },
    /// Collecting a small text frame's payload to inspect it.
    Collect {
        header: Vec<u8>,
        mask: Option<[u8; 4]>,
        len: usize,
        payload: Vec<u8>,
    },
}

/// A read-side filter over a client's raw WebSocket byte stream that
/// rewrites namespace CONNECT packets with a query (see the module doc).
/// Writes pass straight through.
#[derive(Debug)]
pub struct ConnectRewrite<S> {
    inner: S,
    state: State,
    out: Vec<u8>,
    out_pos: usize,
}

impl<S> ConnectRewrite<S> {
    /// Wraps the upgraded stream.
    pub fn new(inner: S) -> Self {
        ConnectRewrite {
            inner,
            state: State::Header(Vec::with_capacity(14)),
            out: Vec::new(),
            out_pos: 0,
        }
    }

    /// Feeds bytes read from the client through the filter into `out`.
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Header(buf) => {
                    let need = header_len(buf);
                    let take = (need - buf.len()).min(data.len());
                    buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if buf.len() == header_len(buf) {
                        let header = std::mem::take(buf);
                        self.start_frame(header);
                    }
                }
                State::Pass { remaining } => {
                    let take = (*remaining).min(data.len() as u64) as usize;
                    self.out.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.state = State::Header(Vec::with_capacity(14));
                    }
                }
                State::Collect { len, payload, .. } => {
                    let take = (*len - payload.len()).min(data.len());
                    payload.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if payload.len() == *len {
                        self.finish_collect();
                    }
                }
            }
        }
    }

    fn start_frame(&mut self, header: Vec<u8>) {
        let (len, mask) = parse_header(&header);
        let fin = header[0] & 0x80 != 0;
        let opcode = header[0] & 0x0f;
        if fin && opcode == 1 && len >= 4 && len <= MAX_INSPECTED_FRAME as u64 {
            self.state = State::Collect {
                header,
                mask,
                len: len as usize,
                payload: Vec::with_capacity(len as usize),
            };
        } else {
            self.out.extend_from_slice(&header);
            self.state = if len == 0 {
                State::Header(Vec::with_capacity(14))
            } else {
                State::Pass { remaining: len }
            };
        }
    }

    fn finish_collect(&mut self) {
        let state = std::mem::replace(&mut self.state, State::Header(Vec::with_capacity(14)));
        let State::Collect {
            header,
            mask,
            mut payload,
            ..
        } = state
        else {
            return;
        };
        apply_mask(&mut payload, mask);
        match strip_connect_query(&payload) {
            Some(mut rewritten) => {
                apply_mask(&mut rewritten, mask);
                write_header(&mut self.out, header[0], mask, rewritten.len());
                self.out.extend_from_slice(&rewritten);
            }
            None => {
                apply_mask(&mut payload, mask);
                self.out.extend_from_slice(&header);
                self.out.extend_from_slice(&payload);
            }
        }
    }

    /// At end of stream: whatever is half-parsed goes through as is (the
    /// WebSocket on the other side reports the truncated frame).
    fn flush_partial(&mut self) {
        match std::mem::replace(&mut self.state, State::Header(Vec::new())) {
            State::Header(buf) => self.out.extend_from_slice(&buf),
            State::Pass { .. } => {}
            State::Collect {
                header,
                mask,
                mut payload,
                ..
            } => {
                // The payload was never unmasked; pass it as received.
                let _ = mask;
                self.out.extend_from_slice(&header);
                self.out.append(&mut payload);
            }
        }
    }
}

/// The full header length implied by the bytes seen so far (at least 2).
fn header_len(buf: &[u8]) -> usize {
    if buf.len() < 2 {
        return 2;
    }
    let masked = buf[1] & 0x80 != 0;
    let ext = match buf[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if masked { 4 } else { 0 }
}

fn parse_header(h: &[u8]) -> (u64, Option<[u8; 4]>) {
    let masked = h[1] & 0x80 != 0;
    let (len, at) = match h[1] & 0x7f {
        126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    let mask = masked.then(|| [h[at], h[at + 1], h[at + 2], h[at + 3]]);
    (len, mask)
}

fn apply_mask(data: &mut [u8], mask: Option<[u8; 4]>) {
    if let Some(m) = mask {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= m[i & 3];
        }
    }
}

fn write_header(out: &mut Vec<u8>, b0: u8, mask: Option<[u8; 4]>, len: usize) {
    out.push(b0);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnectRewrite<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = (this.out.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut scratch = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let filled = rb.filled();
                    if filled.is_empty() {
                        this.flush_partial();
                        if this.out.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                    } else {
                        let data = filled.to_vec();
                        this.feed(&data);
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnectRewrite<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A masked client text frame, as a browser or ws@1.1.2 sends it.
    fn client_frame(opcode: u8, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut p = payload.to_vec();
        apply_mask(&mut p, Some(mask));
        write_header(
            &mut out,
            (if fin { 0x80 } else { 0 }) | opcode,
            Some(mask),
            p.len(),
        );
        out.extend_from_slice(&p);
        out
    }

    fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let hl = header_len(bytes);
            let (len, mask) = parse_header(&bytes[..hl]);
            let mut p = bytes[hl..hl + len as usize].to_vec();
            apply_mask(&mut p, mask);
            out.push((bytes[0], p));
            bytes = &bytes[hl + len as usize..];
        }
        out
    }

    async fn filter(input: Vec<u8>, chunk: usize) -> Vec<u8> {
        // Deliver the input in small chunks to exercise partial headers.
        let (mut tx, rx) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for c in input.chunks(chunk) {
                tx.write_all(c).await.unwrap();
            }
        });
        let mut f = ConnectRewrite::new(rx);
        let mut out = Vec::new();
        f.read_to_end(&mut out).await.unwrap();
        writer.await.unwrap();
        out
    }

    #[test]
    fn strips_the_query_like_the_reference_server() {
        let s = |p: &str| strip_connect_query(p.as_bytes()).map(|v| String::from_utf8(v).unwrap());
        // Spec §2.4 / §2.6: 1.7.3 (no comma) and 2.0.4 (trailing comma).
        assert_eq!(
            s("40/chat?tokenType=jwt&token=good-alice").as_deref(),
            Some("40/chat")
        );
        assert_eq!(
            s("40/chat?tokenType=jwt&token=t,").as_deref(),
            Some("40/chat,")
        );
        assert_eq!(s("40/chat,{\"token\":\"a?b\"}"), None);
        assert_eq!(s("40/chat"), None);
        assert_eq!(s("40"), None);
        assert_eq!(s("42/chat,[\"x?\"]"), None);
    }

    #[tokio::test]
    async fn rewrites_connect_frames_and_passes_the_rest() {
        let token = "t".repeat(900); // a real RS256 JWT is about this long
        let connect = format!("40/chat?tokenType=jwt&token={token}");
        let mut input = Vec::new();
        input.extend(client_frame(1, true, b"2", [1, 2, 3, 4]));
        input.extend(client_frame(1, true, connect.as_bytes(), [9, 8, 7, 6]));
        input.extend(client_frame(
            1,
            true,
            br#"42/chat,["SUBSCRIBE_CHANNEL",{"channel":{"_id":"a?b"}}]"#,
            [5, 5, 5, 5],
        ));
        input.extend(client_frame(2, true, &[4, 1, 2, 3], [0, 1, 0, 1]));
        let big = vec![b'x'; MAX_INSPECTED_FRAME + 10];
        input.extend(client_frame(1, true, &big, [3, 3, 3, 3]));
        input.extend(client_frame(1, false, b"40/x?y", [1, 1, 1, 1]));
        input.extend(client_frame(0, true, b"z", [1, 1, 1, 1]));
        for chunk in [1, 3, 7, 4096] {
            let out = filter(input.clone(), chunk).await;
            let got = frames(&out);
            assert_eq!(got.len(), 7, "chunk {chunk}");
            assert_eq!(got[0], (0x81, b"2".to_vec()));
            assert_eq!(got[1], (0x81, b"40/chat".to_vec()));
            assert_eq!(
                got[2].1,
                br#"42/chat,["SUBSCRIBE_CHANNEL",{"channel":{"_id":"a?b"}}]"#.to_vec()
            );
            assert_eq!(got[3], (0x82, vec![4, 1, 2, 3]));
            assert_eq!(got[4].1.len(), big.len());
            // A fragmented frame is not inspected.
            assert_eq!(got[5], (0x01, b"40/x?y".to_vec()));
            assert_eq!(got[6], (0x80, b"z".to_vec()));
        }
    }

    #[tokio::test]
    async fn truncated_input_passes_through() {
        let mut input = client_frame(1, true, b"40/chat?x=1", [1, 2, 3, 4]);
        input.truncate(input.len() - 3);
        let out = filter(input.clone(), 5).await;
        assert_eq!(out, input);
    }
}
