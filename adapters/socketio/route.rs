//! What an Engine.IO request under `/socket.io/` asks for, and the errors
//! Engine.IO answers a request it cannot serve with (HTTP 400 and
//! `{"code", "message"}`, as engine.io sends them, with rollcall's reason).

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::engine::Version;

/// A request rollcall's Engine.IO serves.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// A new connection: a WebSocket opened straight away, or a polling
    /// handshake (a GET).
    Open { version: Version, websocket: bool },
    /// A request of the session `sid`: a polling GET or POST, or the
    /// WebSocket it upgrades to.
    Session { sid: &'a str },
}

/// Why a request is not one Engine.IO serves: engine.io's error code and
/// message, and what to do.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: u8,
    pub message: &'static str,
    pub reason: &'static str,
}

impl Refusal {
    const fn new(code: u8, message: &'static str, reason: &'static str) -> Self {
        Refusal {
            code,
            message,
            reason,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        engine_error(
            StatusCode::BAD_REQUEST,
            self.code,
            self.message,
            self.reason,
        )
    }
}

/// Engine.IO's error answer: `status`, `{"code", "message"}` as engine.io
/// sends them, and `reason` (also on the access log).
pub fn engine_error(status: StatusCode, code: u8, message: &str, reason: &'static str) -> Response {
    let body = serde_json::json!({ "code": code, "message": message, "reason": reason });
    crate::access::with_reason((status, axum::Json(body)).into_response(), reason)
}

/// Engine.IO's answer for a `sid` no session has (any more).
pub fn session_unknown() -> Response {
    Refusal::new(
        1,
        "Session ID unknown",
        "no Engine.IO session has this sid (it ended, upgraded, or is on another node); connect again",
    )
    .into_response()
}

/// The answer when no core connection can be made for a client.
pub fn server_busy() -> Response {
    engine_error(
        StatusCode::SERVICE_UNAVAILABLE,
        3,
        "Bad request",
        "the server cannot take this connection now; try again",
    )
}

impl<'a> Route<'a> {
    /// Reads the request's query (`EIO`, `transport`, `sid`, `j`) and
    /// headers as engine.io does.
    pub fn of(req: &'a Request<Body>) -> Result<Route<'a>, Refusal> {
        let query = req.uri().query().unwrap_or("");
        let mut version = None;
        let mut transport = None;
        let mut sid = None;
        let mut jsonp = false;
        for pair in query.split('&') {
            match pair.split_once('=').unwrap_or((pair, "")) {
                ("EIO", v) => version = Some(v),
                ("transport", t) => transport = Some(t),
                ("sid", s) if !s.is_empty() => sid = Some(s),
                ("j", _) => jsonp = true,
                _ => {}
            }
        }
        let version = match version {
            Some("3") => Version::V3,
            Some("4") => Version::V4,
            _ => {
                return Err(Refusal::new(
                    5,
                    "Unsupported protocol version",
                    "this server speaks Engine.IO 3 and 4 (EIO=3, EIO=4: socket.io-client 1.x to 4.x)",
                ));
            }
        };
        let websocket = match transport {
            Some("websocket") => true,
            Some("polling") if jsonp => {
                return Err(Refusal::new(
                    3,
                    "Bad request",
                    "JSONP polling is not supported; use XHR long-polling or a WebSocket",
                ));
            }
            Some("polling") => false,
            _ => {
                return Err(Refusal::new(
                    0,
                    "Transport unknown",
                    "the transport must be polling or websocket",
                ));
            }
        };
        if websocket && !is_upgrade(req) {
            return Err(Refusal::new(
                3,
                "Bad request",
                "transport=websocket needs a WebSocket upgrade request",
            ));
        }
        if let Some(sid) = sid {
            return Ok(Route::Session { sid });
        }
        if req.method() != Method::GET {
            return Err(Refusal::new(
                2,
                "Bad handshake method",
                "a connection opens with a GET; send the sid of its session with every other request",
            ));
        }
        Ok(Route::Open { version, websocket })
    }
}

/// The WebSocket upgrade `req` asks for, and the request without its body;
/// or the refusal of a request that is not a valid upgrade.
pub async fn websocket_of(
    req: Request<Body>,
) -> Result<(crate::websocket::WebSocketUpgrade, Request<Body>), Response> {
    use axum::extract::FromRequestParts;
    let (mut parts, _body) = req.into_parts();
    let ws = crate::websocket::WebSocketUpgrade::from_request_parts(&mut parts, &()).await?;
    Ok((ws, Request::from_parts(parts, Body::empty())))
}

/// Whether `req` asks for a WebSocket upgrade.
pub fn is_upgrade(req: &Request<Body>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, query: &str, upgrade: bool) -> Request<Body> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("/socket.io/?{query}"));
        if upgrade {
            builder = builder.header(header::UPGRADE, "websocket");
        }
        builder.body(Body::empty()).expect("request")
    }

    #[test]
    fn routes_what_clients_send() {
        let open = request("GET", "EIO=4&transport=websocket&token=x", true);
        assert_eq!(
            Route::of(&open),
            Ok(Route::Open {
                version: Version::V4,
                websocket: true
            })
        );
        let handshake = request("GET", "EIO=3&transport=polling&t=Nx", false);
        assert_eq!(
            Route::of(&handshake),
            Ok(Route::Open {
                version: Version::V3,
                websocket: false
            })
        );
        let post = request("POST", "EIO=4&transport=polling&sid=abc", false);
        assert_eq!(Route::of(&post), Ok(Route::Session { sid: "abc" }));
        let upgrade = request("GET", "EIO=4&transport=websocket&sid=abc", true);
        assert_eq!(Route::of(&upgrade), Ok(Route::Session { sid: "abc" }));
    }

    #[test]
    fn refuses_what_engine_io_refuses() {
        let code = |method: &str, query: &str, upgrade: bool| {
            let req = request(method, query, upgrade);
            Route::of(&req).map(|_| ()).map_err(|r| r.code)
        };
        assert_eq!(code("GET", "EIO=5&transport=polling", false), Err(5));
        assert_eq!(code("GET", "transport=polling", false), Err(5));
        assert_eq!(code("GET", "EIO=4&transport=flash", false), Err(0));
        assert_eq!(code("GET", "EIO=4", false), Err(0));
        assert_eq!(code("GET", "EIO=3&transport=polling&j=0", false), Err(3));
        assert_eq!(code("GET", "EIO=4&transport=websocket", false), Err(3));
        assert_eq!(code("POST", "EIO=4&transport=polling", false), Err(2));
    }
}
