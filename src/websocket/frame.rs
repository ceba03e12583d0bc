//! RFC 6455 framing: the header of a client frame, parsed from the bytes
//! read so far, and the header of a server frame.

/// Frame opcodes (RFC 6455 §5.2).
pub mod opcode {
    /// A continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// A text message (or its first fragment).
    pub const TEXT: u8 = 0x1;
    /// A binary message (or its first fragment).
    pub const BINARY: u8 = 0x2;
    /// A close frame.
    pub const CLOSE: u8 = 0x8;
    /// A ping.
    pub const PING: u8 = 0x9;
    /// A pong.
    pub const PONG: u8 = 0xA;
}

/// Largest payload of a control frame (close, ping, pong).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
pub const MAX_HEADER_BYTES: usize = 14;

/// Longest header of a server frame (servers do not mask).
pub const MAX_SERVER_HEADER_BYTES: usize = 10;

/// The header of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The last frame of its message.
    pub fin: bool,
    /// RSV1: the message is compressed (permessage-deflate; its first frame).
    pub compressed: bool,
    /// One of [`opcode`]'s values.
    pub opcode: u8,
    /// The masking key; `None` for an unmasked frame.
    pub mask: Option<[u8; 4]>,
    /// Bytes of payload after the header.
    pub payload_len: u64,
    /// Bytes of the header itself.
    pub header_len: usize,
}

impl Header {
    /// A control frame (close, ping, pong).
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Why a frame is not acceptable; the reason of a 1002 close.
pub type Violation = &'static str;

/// Parses the header at the start of `buf`: `Ok(None)` until it is all
/// there. Checks what the header alone shows: reserved bits and opcodes,
/// the length's form, and the rules for control frames.
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, Violation> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    // RSV1 is permessage-deflate's (the reader checks it was negotiated).
    if first & 0x30 != 0 {
        return Err("reserved bits set without a negotiated extension");
    }
    let fin = first & 0x80 != 0;
    let opcode = first & 0x0f;
    if !matches!(
        opcode,
        opcode::CONTINUATION
            | opcode::TEXT
            | opcode::BINARY
            | opcode::CLOSE
            | opcode::PING
            | opcode::PONG
    ) {
        return Err("reserved opcode");
    }
    let masked = second & 0x80 != 0;
    let (payload_len, mut header_len) = match second & 0x7f {
        126 => {
            let Some(bytes) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4)
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut len = [0u8; 8];
            len.copy_from_slice(bytes);
            let len = u64::from_be_bytes(len);
            if len >> 63 != 0 {
                return Err("payload length with the most significant bit set");
            }
            (len, 10)
        }
        short => (u64::from(short), 2),
    };
    let mask = if masked {
        let Some(bytes) = buf.get(header_len..header_len + 4) else {
            return Ok(None);
        };
        header_len += 4;
        Some([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        None
    };
    let header = Header {
        fin,
        compressed: first & 0x40 != 0,
        opcode,
        mask,
        payload_len,
        header_len,
    };
    if header.is_control() {
        if !fin {
            return Err("a fragmented control frame");
        }
        if payload_len > MAX_CONTROL_PAYLOAD as u64 {
            return Err("a control frame longer than 125 bytes");
        }
        if header.compressed {
            return Err("a compressed control frame");
        }
    }
    Ok(Some(header))
}

/// Unmasks (or masks: the same operation) `payload` with `mask`.
pub fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let mut value = [0u8; 4];
        value.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u32::from_ne_bytes(value) ^ word).to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= key;
    }
}

/// Bytes of a server frame's header for a payload of `payload_len` bytes
/// (the shortest length form: 7, 16 or 64 bits).
pub fn server_header_len(payload_len: usize) -> usize {
    match payload_len {
        0..126 => 2,
        126..=0xffff => 4,
        _ => MAX_SERVER_HEADER_BYTES,
    }
}

/// Writes the header of an unmasked, final server frame into `out` and
/// returns its length.
pub fn server_header(
    opcode: u8,
    payload_len: usize,
    out: &mut [u8; MAX_SERVER_HEADER_BYTES],
) -> usize {
    server_header_with(opcode, false, payload_len, out)
}

/// [`server_header`] of a frame whose payload is `compressed` (RSV1).
pub fn server_header_with(
    opcode: u8,
    compressed: bool,
    payload_len: usize,
    out: &mut [u8; MAX_SERVER_HEADER_BYTES],
) -> usize {
    out[0] = 0x80 | if compressed { 0x40 } else { 0 } | opcode;
    let len = server_header_len(payload_len);
    match len {
        2 => out[1] = payload_len as u8,
        4 => {
            out[1] = 126;
            out[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
        }
        _ => {
            out[1] = 127;
            out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        }
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut head = [0u8; MAX_SERVER_HEADER_BYTES];
        let n = server_header(0, payload.len(), &mut head);
        let mut frame = vec![first, head[1] | 0x80];
        frame.extend_from_slice(&head[2..n]);
        frame.extend_from_slice(&mask);
        let mut body = payload.to_vec();
        apply_mask(&mut body, mask);
        frame.extend_from_slice(&body);
        frame
    }

    #[test]
    fn headers_of_every_length_form_parse_only_when_complete() {
        for len in [0usize, 125, 126, 65_535, 65_536] {
            let payload = vec![b'a'; len];
            let frame = client_frame(0x81, &payload, [1, 2, 3, 4]);
            let header = parse_header(&frame).unwrap().unwrap();
            assert_eq!(header.payload_len, len as u64);
            assert_eq!(header.mask, Some([1, 2, 3, 4]));
            assert!(header.fin);
            assert_eq!(header.opcode, opcode::TEXT);
            assert_eq!(frame.len() - header.header_len, len);
            for cut in 0..header.header_len {
                assert_eq!(parse_header(&frame[..cut]), Ok(None), "len {len} cut {cut}");
            }
        }
    }

    #[test]
    fn masking_twice_gives_the_payload_back_at_any_length_and_offset() {
        for len in 0..13 {
            let original: Vec<u8> = (0..len as u8).collect();
            let mut data = original.clone();
            apply_mask(&mut data, [0xde, 0xad, 0xbe, 0xef]);
            if len > 0 {
                assert_eq!(data[0], 0xde);
            }
            apply_mask(&mut data, [0xde, 0xad, 0xbe, 0xef]);
            assert_eq!(data, original);
        }
    }

    #[test]
    fn violations_are_named() {
        assert!(parse_header(&[0xf1, 0x80]).is_err(), "reserved bits");
        assert!(parse_header(&[0xa1, 0x80]).is_err(), "RSV2");
        assert!(parse_header(&[0xc9, 0x00]).is_err(), "compressed ping");
        assert!(
            parse_header(&[0xc1, 0x80, 0, 0, 0, 0])
                .unwrap()
                .unwrap()
                .compressed
        );
        assert!(parse_header(&[0x83, 0x80]).is_err(), "reserved opcode");
        assert!(parse_header(&[0x09, 0x00]).is_err(), "fragmented ping");
        assert!(parse_header(&[0x89, 0x7e, 0, 126]).is_err(), "long ping");
        let mut huge = vec![0x82, 0xff];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(parse_header(&huge).is_err(), "64-bit length's top bit");
    }

    #[test]
    fn server_headers_use_the_shortest_length_form() {
        let mut out = [0u8; MAX_SERVER_HEADER_BYTES];
        assert_eq!(server_header(opcode::TEXT, 5, &mut out), 2);
        assert_eq!(out[..2], [0x81, 5]);
        assert_eq!(server_header(opcode::BINARY, 300, &mut out), 4);
        assert_eq!(out[..4], [0x82, 126, 1, 44]);
        assert_eq!(server_header(opcode::TEXT, 70_000, &mut out), 10);
        assert_eq!(out[1], 127);
        let parsed = parse_header(&out).unwrap().unwrap();
        assert_eq!(parsed.payload_len, 70_000);
        assert_eq!(parsed.mask, None);
    }
}
