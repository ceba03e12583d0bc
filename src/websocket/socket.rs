//! A server-side WebSocket over an admitted TCP socket: messages read
//! from the client, frames written to it.
//!
//! The reader and the writer share the socket by reference (tokio's
//! `TcpStream` reads and writes through `&self`), so a connection needs no
//! split, no lock and no boxed I/O. An idle connection holds no buffer: the
//! reader allocates one while a frame is arriving and frees it once the
//! frames in it are handled; the writer hands the kernel each frame's
//! header and the shared payload (one `writev`), copying nothing.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::net::TcpStream;

use super::deflate::{self, InflateError};
use super::frame::{self, Header, MAX_SERVER_HEADER_BYTES, Violation, opcode};
use crate::listener::Permit;
use crate::outbox::Outbound;

/// Bytes asked of the kernel per read when no larger frame is expected.
/// Client frames are small (a subscribe, a publish).
const READ_CHUNK: usize = 512;

/// Most bytes reserved at once for a large frame's payload.
const MAX_READ_CHUNK: usize = 64 * 1024;

/// A message (or control frame) from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A complete text message, valid UTF-8.
    Text(String),
    /// A complete binary message.
    Binary(Vec<u8>),
    /// A ping; the payload goes back in the pong.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// A close frame (its code, if it had one).
    Close(Option<u16>),
}

/// Why reading stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed the TCP connection without a close frame.
    Eof,
    /// The socket failed.
    Io(io::Error),
    /// A message longer than the limit.
    TooBig,
    /// A text message that is not UTF-8.
    InvalidUtf8,
    /// A frame that breaks RFC 6455.
    Protocol(Violation),
}

impl From<Violation> for ReadError {
    fn from(v: Violation) -> Self {
        ReadError::Protocol(v)
    }
}

/// Reads client frames and puts fragmented messages back together.
#[derive(Debug)]
pub struct MessageReader {
    /// Bytes read and not yet handled; no allocation while idle.
    buf: Vec<u8>,
    /// A fragmented message so far: its opcode, whether it is compressed,
    /// and its payload (boxed: few clients fragment, and every idle
    /// connection would keep the room).
    fragments: Option<Box<(u8, bool, Vec<u8>)>>,
    /// Largest message (and frame) accepted, compressed or not.
    max_message_bytes: usize,
    /// The client's close frame has been read.
    peer_closed: bool,
    /// permessage-deflate was negotiated: messages may come compressed.
    compression: bool,
}

impl MessageReader {
    /// A reader that starts with `already_read` (bytes the client sent
    /// right after its upgrade request).
    pub fn new(max_message_bytes: usize, already_read: &[u8]) -> Self {
        MessageReader {
            buf: already_read.to_vec(),
            fragments: None,
            max_message_bytes,
            peer_closed: false,
            compression: false,
        }
    }

    /// Accepts compressed messages (permessage-deflate was negotiated).
    pub(crate) fn with_compression(mut self, compression: bool) -> Self {
        self.compression = compression;
        self
    }

    /// Whether permessage-deflate was negotiated on this connection (the
    /// writer then compresses large frames).
    pub fn compression(&self) -> bool {
        self.compression
    }

    /// Whether the client's close frame has been read (the client now
    /// waits for the server to close the TCP connection).
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// The next message. Cancel-safe: what was read stays in the reader.
    /// A `poll_fn`, not an `async fn`: an idle connection waits here, and
    /// the socket's own read-readiness slot costs its future nothing (an
    /// `async fn` over `readable()` kept 200 bytes per connection).
    pub fn read<'a>(
        &'a mut self,
        stream: &'a TcpStream,
    ) -> impl Future<Output = Result<Incoming, ReadError>> + Send + 'a {
        std::future::poll_fn(move |cx| self.poll_read(stream, cx))
    }

    fn poll_read(
        &mut self,
        stream: &TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Incoming, ReadError>> {
        loop {
            if let Some(message) = self.parse()? {
                return Poll::Ready(Ok(message));
            }
            let want = self.missing().clamp(READ_CHUNK, MAX_READ_CHUNK);
            ready!(stream.poll_read_ready(cx)).map_err(ReadError::Io)?;
            self.buf.reserve(want);
            match stream.try_read_buf(&mut self.buf) {
                Ok(0) => return Poll::Ready(Err(ReadError::Eof)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A wake-up with nothing to read: an idle connection
                    // keeps no buffer while it waits.
                    if self.buf.is_empty() {
                        self.buf = Vec::new();
                    }
                }
                Err(e) => return Poll::Ready(Err(ReadError::Io(e))),
            }
        }
    }

    /// Bytes still missing from the frame that has begun.
    fn missing(&self) -> usize {
        match frame::parse_header(&self.buf) {
            Ok(Some(h)) => (h.header_len as u64 + h.payload_len)
                .saturating_sub(self.buf.len() as u64)
                .try_into()
                .unwrap_or(usize::MAX),
            _ => 0,
        }
    }

    /// Handles the complete frames in the buffer up to the first message.
    fn parse(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            let Some(header) = frame::parse_header(&self.buf)? else {
                return Ok(None);
            };
            let Some(mask) = header.mask else {
                return Err("an unmasked client frame".into());
            };
            let so_far = self.fragments.as_ref().map_or(0, |f| f.2.len());
            if !header.is_control()
                && header.payload_len > (self.max_message_bytes.saturating_sub(so_far)) as u64
            {
                return Err(ReadError::TooBig);
            }
            // Within the limit, so it fits a usize.
            let len = header.payload_len as usize;
            let end = header.header_len + len;
            if self.buf.len() < end {
                return Ok(None);
            }
            let payload = &mut self.buf[header.header_len..end];
            frame::apply_mask(payload, mask);
            let message = self.handle(header, end)?;
            self.buf.drain(..end);
            if self.buf.is_empty() {
                // An idle connection keeps no buffer.
                self.buf = Vec::new();
            }
            if message.is_some() {
                return Ok(message);
            }
        }
    }

    /// One unmasked frame, `self.buf[header.header_len..end]`: a message,
    /// or None for a fragment that does not end one.
    fn handle(&mut self, header: Header, end: usize) -> Result<Option<Incoming>, ReadError> {
        let payload = &self.buf[header.header_len..end];
        match header.opcode {
            opcode::PING => Ok(Some(Incoming::Ping(Bytes::copy_from_slice(payload)))),
            opcode::PONG => Ok(Some(Incoming::Pong)),
            opcode::CLOSE => {
                self.peer_closed = true;
                close_of(payload).map(Some)
            }
            opcode::TEXT | opcode::BINARY => {
                if self.fragments.is_some() {
                    return Err("a new message began before the previous one ended".into());
                }
                if header.compressed && !self.compression {
                    return Err("a compressed frame without negotiated permessage-deflate".into());
                }
                if header.fin {
                    self.complete(header.opcode, header.compressed, payload.to_vec())
                        .map(Some)
                } else {
                    self.fragments = Some(Box::new((
                        header.opcode,
                        header.compressed,
                        payload.to_vec(),
                    )));
                    Ok(None)
                }
            }
            opcode::CONTINUATION => {
                if header.compressed {
                    return Err("RSV1 set on a continuation frame".into());
                }
                let Some(fragments) = self.fragments.as_mut() else {
                    return Err("a continuation frame with nothing to continue".into());
                };
                fragments.2.extend_from_slice(payload);
                if !header.fin {
                    return Ok(None);
                }
                let Some(fragments) = self.fragments.take() else {
                    return Ok(None);
                };
                let (op, compressed, data) = *fragments;
                self.complete(op, compressed, data).map(Some)
            }
            _ => Err("reserved opcode".into()),
        }
    }
}

/// A close frame's payload as the message.
fn close_of(payload: &[u8]) -> Result<Incoming, ReadError> {
    match *payload {
        [] => Ok(Incoming::Close(None)),
        [_] => Err("a close frame with a one-byte payload".into()),
        [high, low, ..] => {
            if std::str::from_utf8(&payload[2..]).is_err() {
                return Err(ReadError::InvalidUtf8);
            }
            Ok(Incoming::Close(Some(u16::from_be_bytes([high, low]))))
        }
    }
}

impl MessageReader {
    /// A whole message's payload (`compressed`: as sent, to inflate) as
    /// the message.
    fn complete(&self, op: u8, compressed: bool, data: Vec<u8>) -> Result<Incoming, ReadError> {
        let data = if compressed {
            deflate::inflate(&data, self.max_message_bytes).map_err(|e| match e {
                InflateError::TooBig => ReadError::TooBig,
                InflateError::Corrupt => {
                    ReadError::Protocol("a compressed message that does not inflate")
                }
            })?
        } else {
            data
        };
        complete(op, data)
    }
}

/// A whole message's payload as the message.
fn complete(op: u8, data: Vec<u8>) -> Result<Incoming, ReadError> {
    if op == opcode::TEXT {
        String::from_utf8(data)
            .map(Incoming::Text)
            .map_err(|_| ReadError::InvalidUtf8)
    } else {
        Ok(Incoming::Binary(data))
    }
}

/// The opcode and payload of an outgoing item, as it is queued.
fn frame_of(item: &Outbound) -> (u8, &[u8]) {
    match item {
        Outbound::Text(text) => (opcode::TEXT, text.as_bytes()),
        Outbound::Shared(shared) => (opcode::TEXT, shared.text().as_bytes()),
        Outbound::Binary(data) => (opcode::BINARY, data),
        Outbound::Ping => (opcode::PING, &[]),
        Outbound::Pong(data) => (opcode::PONG, data),
    }
}

/// Most slices handed to one `writev`.
const MAX_SLICES: usize = 64;

/// Writes frames, in order, in as few system calls as the kernel allows
/// (one when its buffer has room): each frame's header and its payload,
/// which stays where it is (a broadcast's is shared by every recipient).
/// A future of its own, not an `async fn`: a connection's writer keeps
/// this inline, and it needs no more than its progress.
pub struct FrameWrite<'a> {
    stream: &'a TcpStream,
    /// The frames: their headers, then their payloads.
    frames: Frames<'a>,
    /// Bytes written so far.
    written: usize,
}

/// What a [`FrameWrite`] writes.
enum Frames<'a> {
    /// Outgoing items, with their headers one after another, and the
    /// compressed payloads of those sent compressed (none when
    /// permessage-deflate is off, or no frame was worth it).
    Items(&'a [Outbound], Vec<u8>, Vec<Option<Bytes>>),
    /// One frame already encoded whole (a close frame).
    Encoded(Vec<u8>),
}

/// The compressed payload of `item`, if it goes out compressed: a
/// broadcast's is made once for all its recipients, a frame of this
/// connection's own (a reply) here.
fn compressed_of(item: &Outbound) -> Option<Bytes> {
    match item {
        Outbound::Shared(shared) => shared.deflated().cloned(),
        Outbound::Text(text) => deflate::compress(text.as_bytes()),
        Outbound::Binary(data) => deflate::compress(data),
        Outbound::Ping | Outbound::Pong(_) => None,
    }
}

/// The payload of item `i` as it goes out (compressed, or as queued).
fn payload_of<'p>(items: &'p [Outbound], compressed: &'p [Option<Bytes>], i: usize) -> &'p [u8] {
    match compressed.get(i) {
        Some(Some(packed)) => packed,
        _ => frame_of(&items[i]).1,
    }
}

impl<'a> FrameWrite<'a> {
    /// Writes `items` as frames; with `compression` (permessage-deflate
    /// negotiated), the large ones compressed.
    pub fn items(stream: &'a TcpStream, items: &'a [Outbound], compression: bool) -> Self {
        let mut compressed = Vec::new();
        if compression {
            compressed = items.iter().map(compressed_of).collect();
            if compressed.iter().all(Option::is_none) {
                compressed = Vec::new();
            }
        }
        let mut heads = Vec::with_capacity(items.len() * 4);
        for (i, item) in items.iter().enumerate() {
            let op = frame_of(item).0;
            let packed = matches!(compressed.get(i), Some(Some(_)));
            let mut head = [0u8; MAX_SERVER_HEADER_BYTES];
            let len = payload_of(items, &compressed, i).len();
            let n = frame::server_header_with(op, packed, len, &mut head);
            heads.extend_from_slice(&head[..n]);
        }
        FrameWrite {
            stream,
            frames: Frames::Items(items, heads, compressed),
            written: 0,
        }
    }

    /// Writes a close frame with `code` and `reason` (cut to the 123 bytes
    /// a close frame has room for).
    pub fn close(stream: &'a TcpStream, code: u16, reason: &str) -> Self {
        let mut cut = reason.len().min(frame::MAX_CONTROL_PAYLOAD - 2);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut head = [0u8; MAX_SERVER_HEADER_BYTES];
        let n = frame::server_header(opcode::CLOSE, 2 + cut, &mut head);
        let mut encoded = Vec::with_capacity(n + 2 + cut);
        encoded.extend_from_slice(&head[..n]);
        encoded.extend_from_slice(&code.to_be_bytes());
        encoded.extend_from_slice(&reason.as_bytes()[..cut]);
        FrameWrite {
            stream,
            frames: Frames::Encoded(encoded),
            written: 0,
        }
    }

    /// The slices still to write, skipping the `written` bytes, into
    /// `out`; returns how many there are (at most [`MAX_SLICES`]).
    fn remaining<'s>(&'s self, out: &mut [IoSlice<'s>; MAX_SLICES]) -> usize {
        let mut skip = self.written;
        let mut count = 0;
        let mut push = |bytes: &'s [u8]| {
            if count == MAX_SLICES || bytes.is_empty() {
                return;
            }
            if skip >= bytes.len() {
                skip -= bytes.len();
                return;
            }
            out[count] = IoSlice::new(&bytes[skip..]);
            skip = 0;
            count += 1;
        };
        match &self.frames {
            Frames::Encoded(bytes) => push(bytes),
            Frames::Items(items, heads, compressed) => {
                let mut at = 0;
                for i in 0..items.len() {
                    let payload = payload_of(items, compressed, i);
                    let head_len = frame::server_header_len(payload.len());
                    push(&heads[at..at + head_len]);
                    at += head_len;
                    push(payload);
                }
            }
        }
        count
    }
}

impl Future for FrameWrite<'_> {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let this = &*self;
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let count = this.remaining(&mut slices);
            if count == 0 {
                return Poll::Ready(Ok(()));
            }
            ready!(this.stream.poll_write_ready(cx))?;
            match this.stream.try_write_vectored(&slices[..count]) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// An upgraded client connection: the socket, its reader, and its slot
/// among the listener's open connections (given back when dropped).
pub struct WebSocket {
    stream: TcpStream,
    reader: MessageReader,
    _permit: Permit,
}

impl WebSocket {
    pub(crate) fn new(stream: TcpStream, reader: MessageReader, permit: Permit) -> Self {
        WebSocket {
            stream,
            reader,
            _permit: permit,
        }
    }

    /// The socket (for writing, and for the reader) and the reader.
    pub fn parts(&mut self) -> (&TcpStream, &mut MessageReader) {
        (&self.stream, &mut self.reader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [7, 1, 200, 9];
        let mut head = [0u8; MAX_SERVER_HEADER_BYTES];
        let n = frame::server_header(0, payload.len(), &mut head);
        let mut out = vec![first, head[1] | 0x80];
        out.extend_from_slice(&head[2..n]);
        out.extend_from_slice(&mask);
        let mut body = payload.to_vec();
        frame::apply_mask(&mut body, mask);
        out.extend_from_slice(&body);
        out
    }

    fn reader_with(bytes: &[u8]) -> MessageReader {
        MessageReader::new(1024, bytes)
    }

    #[test]
    fn fragments_come_back_as_one_message_around_a_ping() {
        let mut bytes = masked(0x01, b"hel");
        bytes.extend(masked(0x89, b"p"));
        bytes.extend(masked(0x80, "lo \u{e9}".as_bytes()));
        let mut reader = reader_with(&bytes);
        assert_eq!(
            reader.parse().unwrap(),
            Some(Incoming::Ping(Bytes::from_static(b"p")))
        );
        assert_eq!(
            reader.parse().unwrap(),
            Some(Incoming::Text("hello \u{e9}".into()))
        );
        assert_eq!(reader.parse().unwrap(), None);
        assert_eq!(reader.buf.capacity(), 0, "an idle reader holds no buffer");
    }

    #[test]
    fn a_frame_split_anywhere_waits_for_the_rest() {
        let bytes = masked(0x82, &[1, 2, 3, 4, 5]);
        for cut in 0..bytes.len() {
            let mut reader = reader_with(&bytes[..cut]);
            assert_eq!(reader.parse().unwrap(), None, "cut at {cut}");
            reader.buf.extend_from_slice(&bytes[cut..]);
            assert_eq!(
                reader.parse().unwrap(),
                Some(Incoming::Binary(vec![1, 2, 3, 4, 5]))
            );
        }
    }

    #[test]
    fn limits_and_violations_end_reading() {
        let too_big = masked(0x81, &[b'a'; 1025]);
        assert!(matches!(
            reader_with(&too_big).parse(),
            Err(ReadError::TooBig)
        ));
        // Fragments add up against the limit.
        let mut split = masked(0x01, &[b'a'; 600]);
        split.extend(masked(0x80, &[b'a'; 600]));
        assert!(matches!(
            reader_with(&split).parse(),
            Err(ReadError::TooBig)
        ));
        assert!(matches!(
            reader_with(&masked(0x81, &[0xff])).parse(),
            Err(ReadError::InvalidUtf8)
        ));
        let mut unmasked = masked(0x81, b"{}");
        unmasked[1] &= 0x7f;
        assert!(matches!(
            reader_with(&unmasked).parse(),
            Err(ReadError::Protocol(_))
        ));
        assert!(matches!(
            reader_with(&masked(0x80, b"x")).parse(),
            Err(ReadError::Protocol(_))
        ));
        let mut interleaved = masked(0x01, b"a");
        interleaved.extend(masked(0x81, b"b"));
        assert!(matches!(
            reader_with(&interleaved).parse(),
            Err(ReadError::Protocol(_))
        ));
        assert!(matches!(
            reader_with(&masked(0x88, &[3])).parse(),
            Err(ReadError::Protocol(_))
        ));
    }

    #[test]
    fn a_close_frame_gives_its_code() {
        let mut payload = 4001u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        assert_eq!(
            reader_with(&masked(0x88, &payload)).parse().unwrap(),
            Some(Incoming::Close(Some(4001)))
        );
        let mut reader = reader_with(&masked(0x88, b""));
        assert!(!reader.peer_closed());
        assert_eq!(reader.parse().unwrap(), Some(Incoming::Close(None)));
        assert!(reader.peer_closed());
    }

    #[tokio::test]
    async fn messages_arrive_while_other_branches_keep_winning() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            for i in 0..5u8 {
                tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                c.write_all(&masked(0x81, &[b'0' + i])).await.unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        });
        let (server, _) = listener.accept().await.unwrap();
        let mut reader = MessageReader::new(1024, &[]);
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        while got.len() < 5 && tokio::time::Instant::now() < deadline {
            tokio::select! {
                m = reader.read(&server) => got.push(m.unwrap()),
                _ = tokio::time::sleep(std::time::Duration::from_millis(1)) => {}
            }
        }
        assert_eq!(got.len(), 5, "{got:?}");
        client.await.unwrap();
    }

    /// A message near the limit arrives in many reads (the reader reserves
    /// at most 64 KiB at a time) and comes back whole; a pong, a text and
    /// a large binary frame go out in order, each length in its form.
    #[tokio::test]
    async fn a_large_message_is_read_whole_and_frames_are_written_in_order() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let big: Vec<u8> = (0..120_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mask = [9, 8, 7, 6];
        let mut frame = vec![0x81, 0x80 | 127];
        frame.extend_from_slice(&(big.len() as u64).to_be_bytes());
        frame.extend_from_slice(&mask);
        let mut body = big.clone();
        frame::apply_mask(&mut body, mask);
        frame.extend_from_slice(&body);
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            for chunk in frame.chunks(7_000) {
                c.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
            let mut got = vec![0u8; 2 + 2 + 5 + 2 + 8 + 70_000];
            c.read_exact(&mut got).await.unwrap();
            got
        });
        let (server, _) = listener.accept().await.unwrap();
        let mut reader = MessageReader::new(128 * 1024, &[]);
        let message = reader.read(&server).await.unwrap();
        assert_eq!(message, Incoming::Text(String::from_utf8(big).unwrap()));
        assert_eq!(reader.buf.capacity(), 0, "nothing kept after the message");
        let items = [
            Outbound::Pong(Bytes::from_static(b"hi")),
            Outbound::Text("hello".into()),
            Outbound::Binary(Bytes::from(vec![1u8; 70_000])),
        ];
        FrameWrite::items(&server, &items, false).await.unwrap();
        let got = client.await.unwrap();
        assert_eq!(&got[..4], &[0x8a, 2, b'h', b'i']);
        assert_eq!(&got[4..11], &[0x81, 5, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(&got[11..13], &[0x82, 127]);
        assert_eq!(u64::from_be_bytes(got[13..21].try_into().unwrap()), 70_000);
        assert!(got[21..].iter().all(|&b| b == 1));
    }
}
