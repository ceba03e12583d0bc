//! The Engine.IO 3 CONNECT shim for HTTP long-polling: the same fix as
//! [`super::shim`] (socket.io-client 1.x and 2.x glue the handshake query
//! to the namespace CONNECT, which socketioxide takes for the namespace
//! name), for clients that start on polling, which is the default of every
//! 1.x and 2.x client. Without it they never connect.
//!
//! An EIO3 polling POST body is a payload of packets, each prefixed with its
//! length in UTF-16 code units (what JavaScript's `String.length` counts):
//!
//! ```text
//! client → 56:40/chat?tokenType=jwt&token=eyJ…        (one packet)
//! shim   → 7:40/chat
//! ```
//!
//! Only text payloads are rewritten; a binary payload (which starts with a
//! byte 0 or 1, never a digit) or a body with no CONNECT query passes
//! through untouched. The query is the one already on the request URL, so
//! nothing is lost by dropping it.

use axum::body::Body;
use axum::http::{Method, Request, header};
use http_body_util::BodyExt;

use super::shim::strip_connect_query;

/// True for an Engine.IO 3 polling POST (client → server packets).
pub fn is_eio3_polling_post(req: &Request<Body>) -> bool {
    if req.method() != Method::POST {
        return false;
    }
    let query = req.uri().query().unwrap_or("");
    let pairs = || query.split('&');
    pairs().any(|p| p == "EIO=3") && pairs().any(|p| p == "transport=polling")
}

/// Reads the POST body (at most `limit` bytes) and strips the query from
/// any namespace CONNECT in it. A body over the limit is cut at the limit:
/// socketioxide then refuses it as it would refuse any oversized payload.
pub async fn rewrite_request(req: Request<Body>, limit: usize) -> Request<Body> {
    let (mut parts, body) = req.into_parts();
    let bytes = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            tracing::debug!(error = %e, "socket.io polling body could not be read");
            axum::body::Bytes::new()
        }
    };
    let body = match std::str::from_utf8(&bytes)
        .ok()
        .and_then(rewrite_text_payload)
    {
        Some(rewritten) => {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, rewritten.len().into());
            Body::from(rewritten)
        }
        None => Body::from(bytes),
    };
    Request::from_parts(parts, body)
}

/// The payload with every CONNECT query stripped, or None if it is not a
/// text payload or has nothing to strip.
pub fn rewrite_text_payload(payload: &str) -> Option<String> {
    if !payload.contains("40/") {
        return None;
    }
    let mut out = String::with_capacity(payload.len());
    let mut rest = payload;
    let mut changed = false;
    while !rest.is_empty() {
        let (len, after) = rest.split_once(':')?;
        let len: usize = len.parse().ok()?;
        let end = utf16_prefix_len(after, len)?;
        let (packet, tail) = after.split_at(end);
        match strip_connect_query(packet.as_bytes()) {
            Some(stripped) => {
                let stripped = String::from_utf8(stripped).ok()?;
                out.push_str(&format!("{}:{stripped}", stripped.encode_utf16().count()));
                changed = true;
            }
            None => out.push_str(&format!("{len}:{packet}")),
        }
        rest = tail;
    }
    changed.then_some(out)
}

/// The byte length of the first `units` UTF-16 code units of `s`, or None
/// if `s` is shorter or the count splits a character.
fn utf16_prefix_len(s: &str, units: usize) -> Option<usize> {
    let mut counted = 0;
    for (i, ch) in s.char_indices() {
        if counted == units {
            return Some(i);
        }
        counted += ch.len_utf16();
    }
    (counted == units).then_some(s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connect_query_is_stripped_and_the_length_recomputed() {
        assert_eq!(
            rewrite_text_payload("25:40/chat?tokenType=jwt&t=1").as_deref(),
            Some("7:40/chat")
        );
        // 2.x adds a comma after the namespace; other packets are kept.
        assert_eq!(
            rewrite_text_payload("1:226:40/chat?tokenType=jwt&t=1,").as_deref(),
            Some("1:28:40/chat,")
        );
    }

    #[test]
    fn lengths_count_utf16_units() {
        // "é" is one unit, "😀" two; the packet after them must still be found.
        let payload = "9:42[\"é😀\"]25:40/chat?tokenType=jwt&t=1";
        assert_eq!(
            rewrite_text_payload(payload).as_deref(),
            Some("9:42[\"é😀\"]7:40/chat")
        );
    }

    #[test]
    fn anything_else_passes_through() {
        assert_eq!(rewrite_text_payload("1:2"), None, "no CONNECT");
        assert_eq!(rewrite_text_payload("7:40/chat"), None, "no query");
        assert_eq!(rewrite_text_payload("\u{0}40/chat?x"), None, "binary");
        assert_eq!(rewrite_text_payload("99:40/chat?x"), None, "short");
        assert_eq!(rewrite_text_payload("x:40/chat?x"), None, "bad length");
    }
}
