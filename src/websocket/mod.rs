//! rollcall's own server-side WebSocket (RFC 6455) for the raw front ends:
//! the upgrade handshake ([`WebSocketUpgrade`]), framing ([`frame`]),
//! permessage-deflate without context takeover (`deflate`, when the server
//! runs with `--websocket-compression`) and the connection ([`WebSocket`]).
//!
//! Why not tungstenite: a connection's state is most of what an idle
//! client costs, and tungstenite's (its context, buffers, the split's lock
//! and the upgrade task around it) was 4-5 KB of the 8 KB an idle
//! connection took; its writer also copies every frame into a buffer of
//! its own before the kernel copies it again. Here the reader and writer
//! borrow the TCP socket directly, an idle connection holds no buffer, and
//! a frame's payload (shared by every recipient of a broadcast) goes to
//! the kernel as it is.

pub(crate) mod deflate;
pub mod frame;
mod handshake;
mod socket;

pub use handshake::{Options, WebSocketUpgrade};
pub use socket::{FrameWrite, Incoming, MessageReader, ReadError, WebSocket};
