//! The access log: one line per HTTP request, WebSocket upgrade and
//! Engine.IO polling request, at `info` on the target [`TARGET`]
//! (`rollcall::access`), with the method, the path without its query
//! (tokens travel in `?token=`), the status, the time to the response head
//! in ms and the client's address. A refusal says why: the handler that
//! refuses attaches its reason to the response ([`with_reason`]).
//!
//! `RUST_LOG=info,rollcall::access=warn` leaves it out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use tokio::time::Instant;

use crate::metrics::MetricsObserver;

/// The log target of access lines and refusals.
pub const TARGET: &str = "rollcall::access";

/// Why a request was refused, as the access log shows it: a response
/// extension set by the handler that refused.
#[derive(Clone, Debug)]
pub struct Reason(pub Arc<str>);

/// `response` with `reason` for the access log.
pub fn with_reason(mut response: Response, reason: impl Into<Arc<str>>) -> Response {
    response.extensions_mut().insert(Reason(reason.into()));
    response
}

/// The client address of a request (set by the listener, see [`WithPeer`]).
pub fn client(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}

/// Middleware (`axum::middleware::from_fn_with_state`) that writes the access line
/// of each request once its response head is ready.
///
/// Also feeds `rollcall_http_request_duration_seconds` of `metrics`, by
/// the route template the router matched (`unmatched` for fallbacks, so
/// that scanners' paths cannot grow the series).
pub async fn log(
    State(metrics): State<Arc<MetricsObserver>>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    // An Arc inside: no copy of the path until the observe.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    // The path alone: the query may carry a token.
    let path = req.uri().path().to_owned();
    let client = client(req.extensions());
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let elapsed = start.elapsed();
    let duration_ms = elapsed.as_micros() as f64 / 1000.0;
    metrics.live().http_request(
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        status,
        elapsed.as_secs_f64(),
    );
    let reason = response.extensions().get::<Reason>().map(|r| &*r.0);
    let what = match (upgrade, status) {
        (false, _) => "request",
        (true, 101) => "upgrade",
        (true, _) => "upgrade refused",
    };
    tracing::info!(
        target: TARGET,
        method = %method,
        path = %path,
        status,
        duration_ms,
        client = client.map(tracing::field::display),
        reason,
        "{what}"
    );
    response
}

/// The router with the client's address in each request's extensions
/// (as axum's `ConnectInfo<SocketAddr>`), for one accepted connection.
#[derive(Clone)]
pub struct WithPeer {
    router: Router,
    peer: SocketAddr,
}

impl WithPeer {
    /// `router`, serving the connection from `peer`.
    pub fn new(router: Router, peer: SocketAddr) -> Self {
        WithPeer { router, peer }
    }
}

impl<B> tower::Service<axum::http::Request<B>> for WithPeer
where
    Router: tower::Service<axum::http::Request<B>>,
{
    type Response = <Router as tower::Service<axum::http::Request<B>>>::Response;
    type Error = <Router as tower::Service<axum::http::Request<B>>>::Error;
    type Future = <Router as tower::Service<axum::http::Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::<axum::http::Request<B>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        self.router.call(req)
    }
}
