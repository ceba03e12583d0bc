//! `--allowed-origins`: which web pages may open client connections. A
//! browser sends the page's `Origin` with every WebSocket upgrade and
//! Engine.IO polling request; one not in the list is refused with 403
//! before any front end sees it. Requests without `Origin` (native
//! clients, servers) are not browsers' and pass. The HTTP API is not a
//! client connection and is not checked (it needs the API key).
//!
//! The default is any origin: clients authenticate with tokens they send
//! themselves, never with cookies the browser adds, so another site's page
//! cannot connect as a user it holds no token for. A deployment that
//! wants pages of its own sites only lists them.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use crate::auth::Pattern;

/// The allowed origins (empty: any).
#[derive(Clone, Debug, Default)]
pub struct AllowedOrigins {
    patterns: Arc<Vec<Pattern>>,
}

impl AllowedOrigins {
    /// From `--allowed-origins` (exact origins such as
    /// `https://app.example.com`, `*` globs, `#regex:`); empty or `*`:
    /// any.
    pub fn parse(list: &[String]) -> Result<Self, String> {
        let patterns = list
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty() && *s != "*")
            .map(|s| Pattern::parse(s).map_err(|e| format!("--allowed-origins: {s:?} {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let any = list.iter().any(|s| s.trim() == "*");
        Ok(AllowedOrigins {
            patterns: Arc::new(if any { Vec::new() } else { patterns }),
        })
    }

    /// Whether a page of `origin` may connect.
    pub fn allows(&self, origin: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(origin))
    }
}

/// A client connection: a WebSocket upgrade or an Engine.IO request.
fn is_client_connection(req: &Request) -> bool {
    req.headers().contains_key(header::UPGRADE) || req.uri().path().starts_with("/socket.io")
}

/// Middleware: refuses client connections from pages of other origins.
pub async fn check(State(allowed): State<AllowedOrigins>, req: Request, next: Next) -> Response {
    if allowed.patterns.is_empty() || !is_client_connection(&req) {
        return next.run(req).await;
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned());
    match origin {
        Some(origin) if !allowed.allows(&origin) => {
            let why = format!(
                "origin {origin:?} is not allowed to connect (--allowed-origins lists the pages that may)"
            );
            let response = (StatusCode::FORBIDDEN, why.clone()).into_response();
            crate::access::with_reason(response, why)
        }
        _ => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_glob_and_any() {
        let allowed = AllowedOrigins::parse(&[
            "https://app.example.com".into(),
            "https://*.example.org".into(),
        ])
        .unwrap();
        assert!(allowed.allows("https://app.example.com"));
        assert!(allowed.allows("https://eu.example.org"));
        assert!(!allowed.allows("https://evil.example"));
        assert!(!allowed.allows("http://app.example.com"));
        assert!(
            AllowedOrigins::parse(&[])
                .unwrap()
                .allows("https://any.where")
        );
        assert!(AllowedOrigins::parse(&["*".into()]).unwrap().allows("null"));
        assert!(AllowedOrigins::parse(&["#regex:(".into()]).is_err());
    }
}
