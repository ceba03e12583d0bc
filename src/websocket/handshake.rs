//! The opening handshake (RFC 6455 §4.2): an axum extractor that checks
//! the upgrade request, and the 101 response that hands the socket over.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};

use super::deflate;
use super::socket::{MessageReader, WebSocket};
use crate::listener::Admitted;

/// The GUID a server appends to the client's key (RFC 6455 §1.3).
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What a connection accepts ([`crate::transport::TransportConfig::websocket`]).
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Largest message (and frame) a client may send.
    pub max_message_bytes: usize,
    /// Accept a client's permessage-deflate offer.
    pub compression: bool,
}

/// A checked WebSocket upgrade request; [`WebSocketUpgrade::on_upgrade`]
/// answers it.
pub struct WebSocketUpgrade {
    key: HeaderValue,
    offered_protocols: Vec<HeaderValue>,
    selected_protocol: Option<HeaderValue>,
    /// The answer to the client's permessage-deflate offer, if it made one
    /// the server can accept (used only if the server compresses).
    deflate_response: Option<HeaderValue>,
    on_upgrade: OnUpgrade,
}

fn reject(status: StatusCode, why: &'static str) -> Response {
    crate::access::with_reason((status, why).into_response(), why)
}

/// The comma-separated tokens of a header's values.
fn tokens<'h>(values: impl Iterator<Item = &'h HeaderValue>) -> impl Iterator<Item = &'h [u8]> {
    values.flat_map(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
    })
}

/// Whether the comma-separated header `name` lists `token` (any case).
fn lists(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    tokens(headers.get_all(name).iter()).any(|part| part.eq_ignore_ascii_case(token.as_bytes()))
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        if parts.method != Method::GET {
            return Err(reject(
                StatusCode::METHOD_NOT_ALLOWED,
                "a WebSocket upgrade must be a GET request",
            ));
        }
        if !lists(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "this endpoint takes WebSocket connections: the Connection header must include \"upgrade\"",
            ));
        }
        if !lists(&parts.headers, header::UPGRADE, "websocket") {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "this endpoint takes WebSocket connections: the Upgrade header must be \"websocket\"",
            ));
        }
        if parts
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            let mut response = reject(
                StatusCode::BAD_REQUEST,
                "unsupported WebSocket version: Sec-WebSocket-Version must be 13",
            );
            // RFC 6455 §4.4: say which version the server speaks.
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            return Err(response);
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "the Sec-WebSocket-Key header is missing",
            ));
        };
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(reject(
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded to a WebSocket",
            ));
        };
        let offered_protocols = parts
            .headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .cloned()
            .collect();
        let deflate_response = deflate::accept(
            parts
                .headers
                .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
                .iter(),
        );
        Ok(WebSocketUpgrade {
            key,
            offered_protocols,
            selected_protocol: None,
            deflate_response,
            on_upgrade,
        })
    }
}

impl WebSocketUpgrade {
    /// Selects the first of `supported` that the client offered (in
    /// `Sec-WebSocket-Protocol`); a client that offered none of them is
    /// still accepted, with no subprotocol.
    pub fn protocols(mut self, supported: impl IntoIterator<Item = &'static str>) -> Self {
        self.selected_protocol = supported
            .into_iter()
            .find(|name| {
                tokens(self.offered_protocols.iter()).any(|offered| offered == name.as_bytes())
            })
            .map(HeaderValue::from_static);
        self
    }

    /// Answers 101 and, once the client has the answer, hands the socket
    /// to `start`, whose future is the connection's task. Messages over
    /// the transport's `max_frame_bytes` end the connection; with its
    /// `compression`, a client that offers permessage-deflate gets it.
    ///
    /// `start` is boxed: the task holds it until the upgrade completes, and
    /// a callback that captured the session's parts would otherwise keep
    /// their space for the connection's whole life.
    pub fn on_upgrade<C, Fut>(self, options: Options, start: C) -> Response
    where
        C: FnOnce(WebSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let max_message_bytes = options.max_message_bytes;
        let deflate_response = self.deflate_response.filter(|_| options.compression);
        let compression = deflate_response.is_some();
        let start = Box::new(start);
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    tracing::debug!(error = %e, "websocket upgrade failed");
                    return;
                }
            };
            let Some(socket) = socket_of(upgraded, max_message_bytes, compression) else {
                tracing::error!("an upgraded connection was not a listener's TCP socket");
                return;
            };
            start(socket).await;
        });
        let mut response = (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, HeaderValue::from_static("upgrade")),
                (header::UPGRADE, HeaderValue::from_static("websocket")),
            ],
        )
            .into_response();
        let headers = response.headers_mut();
        if let Ok(accept) = HeaderValue::from_str(&accept_key(self.key.as_bytes())) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(protocol) = self.selected_protocol {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        if let Some(extension) = deflate_response {
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, extension);
        }
        response
    }
}

/// The upgraded connection's TCP socket, as a WebSocket. Not inline in the
/// task: hyper's leftover bytes share its 8 KB read buffer, and holding
/// them across the connection's await kept that buffer for its whole life.
fn socket_of(upgraded: Upgraded, max_message_bytes: usize, compression: bool) -> Option<WebSocket> {
    // The listener serves every client connection over `Admitted`.
    let parts = upgraded.downcast::<TokioIo<Admitted>>().ok()?;
    let reader =
        MessageReader::new(max_message_bytes, &parts.read_buf).with_compression(compression);
    let (stream, permit) = parts.io.into_inner().into_parts();
    Some(WebSocket::new(stream, reader, permit))
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
