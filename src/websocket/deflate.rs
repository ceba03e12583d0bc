//! permessage-deflate (RFC 7692) without context takeover in either
//! direction: each message is compressed on its own, so a broadcast frame
//! is compressed once and the same bytes go to every recipient, and a
//! connection keeps no compression state (a kept 32 KiB window each way
//! would be ten times an idle connection's size).
//!
//! Off unless the server runs with `--websocket-compression`: compressing
//! costs CPU to save bytes, and a compressed message's length can tell an
//! observer about its content (the reason Node's `ws` and socket.io also
//! leave it off by default).

use std::cell::RefCell;

use axum::http::HeaderValue;
use bytes::Bytes;
use miniz_oxide::deflate::core::{
    self as miniz, CompressorOxide, TDEFLFlush, TDEFLStatus, create_comp_flags_from_zip_params,
};

/// The extension's name in `Sec-WebSocket-Extensions`.
const NAME: &str = "permessage-deflate";

/// Payloads shorter than this go out uncompressed: small frames (a
/// subscribe reply, a message) shrink little for the CPU it costs.
const MIN_COMPRESSED_BYTES: usize = 512;

/// The tail a sync flush leaves, which the sender removes and the
/// receiver puts back (RFC 7692 §7.2.1 and §7.2.2).
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// An empty final block (fixed Huffman codes, end of block), appended after
/// the tail so that the decompressor sees a finished stream.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// miniz level 1: the fastest, most of the saving on JSON.
const LEVEL: i32 = 1;

/// The response to a client's `Sec-WebSocket-Extensions` offers, if one
/// of them can be accepted: permessage-deflate with no context takeover.
/// Offers that ask the server for a window under 32 KiB are declined
/// (the compressor has no smaller one); the client's window bits do not
/// matter, since the client keeps no context either.
pub fn accept<'h>(offers: impl Iterator<Item = &'h HeaderValue>) -> Option<HeaderValue> {
    offers
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(accept_offer)
}

/// One offer (`permessage-deflate; param; param=value`): the response that
/// accepts it, or None.
fn accept_offer(offer: &str) -> Option<HeaderValue> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut response = format!("{NAME}; server_no_context_takeover; client_no_context_takeover");
    let mut seen: Vec<&str> = Vec::new();
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (param, None),
        };
        // RFC 7692 §7: a parameter given twice makes the offer invalid.
        if seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            return None;
        }
        seen.push(name);
        match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(bits)) if valid_window_bits(bits) => {}
            ("server_max_window_bits", Some("15")) => {
                response.push_str("; server_max_window_bits=15")
            }
            _ => return None,
        }
    }
    HeaderValue::from_str(&response).ok()
}

/// Whether a window size parameter's value is one RFC 7692 allows (8 to 15).
fn valid_window_bits(value: &str) -> bool {
    value
        .parse::<u8>()
        .is_ok_and(|bits| (8..=15).contains(&bits))
}

thread_local! {
    /// Each worker's compressor: its tables are 300 KB, so they are made
    /// once per thread and reset between messages.
    static COMPRESSOR: RefCell<CompressorOxide> =
        RefCell::new(CompressorOxide::new(create_comp_flags_from_zip_params(LEVEL, -15, 0)));
}

/// Whether a payload of `len` bytes is long enough to send compressed.
pub fn worth_compressing(len: usize) -> bool {
    len >= MIN_COMPRESSED_BYTES
}

/// `data` as a compressed message's payload (deflated with a sync flush,
/// the flush's tail removed), or None if that is not shorter or `data` is
/// too short to be worth it. A broadcast's frame is compressed once for
/// all its recipients ([`crate::outbox::SharedText`]).
pub fn compress(data: &[u8]) -> Option<Bytes> {
    if !worth_compressing(data.len()) {
        return None;
    }
    COMPRESSOR.with(|c| deflate_sync(&mut c.borrow_mut(), data).map(Bytes::from))
}

fn deflate_sync(deflate: &mut CompressorOxide, data: &[u8]) -> Option<Vec<u8>> {
    deflate.reset();
    let mut out = vec![0u8; data.len() / 2 + 64];
    let (mut input, mut written) = (data, 0);
    loop {
        let (status, read, wrote) =
            miniz::compress(deflate, input, &mut out[written..], TDEFLFlush::Sync);
        input = &input[read.min(input.len())..];
        written += wrote;
        match status {
            TDEFLStatus::Okay if input.is_empty() && written < out.len() => break,
            TDEFLStatus::Okay | TDEFLStatus::Done => {
                if written >= data.len() + SYNC_TAIL.len() {
                    return None;
                }
                out.resize(out.len() * 2, 0);
            }
            TDEFLStatus::BadParam | TDEFLStatus::PutBufFailed => return None,
        }
    }
    out.truncate(written);
    if !out.ends_with(&SYNC_TAIL) {
        return None;
    }
    out.truncate(written - SYNC_TAIL.len());
    (out.len() < data.len()).then_some(out)
}

/// Why a compressed message could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum InflateError {
    /// It decompresses to more than the message limit.
    TooBig,
    /// It is not a DEFLATE stream.
    Corrupt,
}

/// Decompresses a message's payload (no context from earlier messages),
/// refusing to produce more than `max_bytes`.
pub fn inflate(payload: &[u8], max_bytes: usize) -> Result<Vec<u8>, InflateError> {
    let mut input = Vec::with_capacity(payload.len() + SYNC_TAIL.len() + FINAL_BLOCK.len());
    input.extend_from_slice(payload);
    input.extend_from_slice(&SYNC_TAIL);
    input.extend_from_slice(&FINAL_BLOCK);
    miniz_oxide::inflate::decompress_to_vec_with_limit(&input, max_bytes).map_err(|e| {
        if e.status == miniz_oxide::inflate::TINFLStatus::HasMoreOutput {
            InflateError::TooBig
        } else {
            InflateError::Corrupt
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(header: &str) -> Option<String> {
        let value = HeaderValue::from_str(header).unwrap();
        accept(std::iter::once(&value)).map(|v| v.to_str().unwrap().to_string())
    }

    const PLAIN: &str =
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn offers_of_browsers_and_ws_are_accepted_without_context_takeover() {
        // Chrome and Firefox, and Node's ws.
        assert_eq!(
            offer("permessage-deflate; client_max_window_bits").as_deref(),
            Some(PLAIN)
        );
        assert_eq!(offer("permessage-deflate").as_deref(), Some(PLAIN));
        assert_eq!(
            offer("permessage-deflate; client_max_window_bits=10; server_no_context_takeover")
                .as_deref(),
            Some(PLAIN)
        );
        assert_eq!(
            offer("permessage-deflate; server_max_window_bits=\"15\"").as_deref(),
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15"
            )
        );
    }

    #[test]
    fn offers_the_server_cannot_keep_are_declined_and_the_next_is_taken() {
        assert_eq!(offer("permessage-deflate; server_max_window_bits=10"), None);
        assert_eq!(offer("permessage-deflate; client_max_window_bits=16"), None);
        assert_eq!(offer("permessage-deflate; mystery"), None);
        assert_eq!(
            offer("permessage-deflate; client_no_context_takeover; client_no_context_takeover"),
            None
        );
        assert_eq!(offer("x-webkit-deflate-frame"), None);
        assert_eq!(
            offer("permessage-deflate; server_max_window_bits=9, permessage-deflate").as_deref(),
            Some(PLAIN)
        );
    }

    #[test]
    fn a_compressed_payload_inflates_back() {
        let text: String = (0..200)
            .map(|i| format!("{{\"uid\":\"user-{i}\"}},"))
            .collect();
        let packed = compress(text.as_bytes()).expect("JSON shrinks");
        assert!(
            packed.len() < text.len() / 3,
            "{} of {}",
            packed.len(),
            text.len()
        );
        assert!(!packed.ends_with(&SYNC_TAIL));
        assert_eq!(inflate(&packed, 1 << 20).unwrap(), text.as_bytes());
        // The compressor starts afresh for each message (no context
        // takeover): the same text compresses to the same bytes.
        assert_eq!(compress(text.as_bytes()).unwrap(), packed);
    }

    #[test]
    fn a_broadcast_frame_is_compressed_once_for_all_its_recipients() {
        use crate::outbox::{Outbound, Utf8Bytes};
        let text: String = (0..100).map(|i| format!("{{\"uid\":\"m{i}\"}},")).collect();
        let frame = Outbound::broadcast(Outbound::Text(Utf8Bytes::from(text)));
        let Outbound::Shared(shared) = &frame else {
            panic!("a large frame is shared: {frame:?}");
        };
        let recipient = frame.clone();
        let Outbound::Shared(other) = &recipient else {
            panic!("a clone shares it");
        };
        let first = shared.deflated().expect("compressed").as_ptr();
        assert_eq!(other.deflated().expect("compressed").as_ptr(), first);
        let small = Outbound::broadcast(Outbound::Text(Utf8Bytes::from_static("{}")));
        assert!(matches!(small, Outbound::Text(_)));
    }

    #[test]
    fn short_or_incompressible_payloads_stay_as_they_are() {
        assert_eq!(compress(b"{\"event\":\"pong\"}"), None);
        let mut noise = vec![0u8; 4096];
        let mut x: u32 = 12345;
        for byte in &mut noise {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *byte = (x >> 16) as u8;
        }
        assert_eq!(compress(&noise), None);
    }

    #[test]
    fn inflating_is_bounded_and_rejects_garbage() {
        let packed = compress(&[b'0'; 100_000]).unwrap();
        assert!(packed.len() < 1_000);
        assert_eq!(inflate(&packed, 100_000).unwrap().len(), 100_000);
        assert_eq!(inflate(&packed, 99_999), Err(InflateError::TooBig));
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff], 1000),
            Err(InflateError::Corrupt)
        );
        // A message that ends with a final block of its own is fine too.
        let finished = miniz_oxide::deflate::compress_to_vec(b"hello hello hello", 6);
        assert_eq!(inflate(&finished, 1000).unwrap(), b"hello hello hello");
    }
}
