//! The one outgoing HTTP client, used by webhooks, the backend channel
//! check, Socket.IO's OAuth introspection and the conformance runner:
//! HTTP/1.1 over TCP, or TLS for `https://` (the roots of [`crate::tls`]:
//! the platform's plus `--tls-ca-file`), connections kept alive and reused
//! per host (hyper-util's pooling client), a deadline per request, and the
//! answer's body read up to a limit.
//!
//! URLs are parsed once, by [`Target::parse`], with the `url` crate;
//! credentials in a URL are either refused (they would be logged and sent
//! in the clear) or, where the caller allows it, sent as HTTP Basic.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{Method, Request, Uri, header};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;

/// How long an idle kept-alive connection stays in the pool.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// The URL with any password replaced by `***`, for logs and errors
/// (`redis://app:pw@h:1` → `redis://app:***@h:1`). User info without a
/// colon may be a token (`nats://s3cr3t@h`): all of it is hidden.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{hosts}"),
            None => format!("{scheme}://***@{hosts}"),
        },
        None => url.to_string(),
    }
}

/// A URL as errors show it: no password, no query string (either may
/// carry a secret).
fn shown_in_errors(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or(url);
    redact_password(without_query)
}

/// What a URL's user info (`user:password@`) means to its caller.
#[derive(Clone, Copy, Debug)]
pub enum UserInfo<'a> {
    /// Refused, with this hint on what to do instead.
    Refused(&'a str),
    /// Sent as HTTP Basic credentials (percent-decoded).
    BasicAuth,
}

/// A parsed `http://` or `https://` URL to send requests to.
#[derive(Clone, Debug)]
pub struct Target {
    uri: Uri,
    /// `Basic …`, from the URL's user info.
    authorization: Option<String>,
    /// What [`Target::display`] shows: no user info, no query.
    shown: String,
}

impl Target {
    /// Parses the URL given to `flag` (errors name the flag).
    pub fn parse(flag: &str, url: &str, user_info: UserInfo<'_>) -> Result<Target, String> {
        let shown = shown_in_errors(url);
        let parsed =
            url::Url::parse(url).map_err(|e| format!("{flag} {shown:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "{flag} {shown:?} must start with http:// or https://"
            ));
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{flag} {shown:?} has no host"))?;
        let has_credentials = !parsed.username().is_empty() || parsed.password().is_some();
        let authorization = match (has_credentials, user_info) {
            (false, _) => None,
            (true, UserInfo::Refused(hint)) => {
                return Err(format!(
                    "{flag}: credentials in the URL are not sent; {hint}"
                ));
            }
            (true, UserInfo::BasicAuth) => {
                let decode = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8_lossy()
                        .into_owned()
                };
                let pair = format!(
                    "{}:{}",
                    decode(parsed.username()),
                    decode(parsed.password().unwrap_or(""))
                );
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
        };
        let authority = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let path_and_query = match parsed.query() {
            Some(q) => format!("{}?{q}", parsed.path()),
            None => parsed.path().to_string(),
        };
        let uri = Uri::builder()
            .scheme(parsed.scheme())
            .authority(authority.as_str())
            .path_and_query(path_and_query.as_str())
            .build()
            .map_err(|e| format!("{flag} {shown:?} is not a URL: {e}"))?;
        let shown = format!("{}://{authority}{}", parsed.scheme(), parsed.path());
        Ok(Target {
            uri,
            authorization,
            shown,
        })
    }

    /// The URL without user info or query string (either may carry a
    /// secret), for the banner, logs and errors.
    pub fn display(&self) -> &str {
        &self.shown
    }

    /// True for an `https://` URL.
    pub fn is_https(&self) -> bool {
        self.uri.scheme_str() == Some("https")
    }

    /// The URL's path and query.
    pub fn path_and_query(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }

    /// The same server with another path and query (e.g. `/api/publish`).
    pub fn with_path(&self, path_and_query: &str) -> Result<Target, String> {
        let mut parts = self.uri.clone().into_parts();
        parts.path_and_query = Some(
            path_and_query
                .parse()
                .map_err(|e| format!("{path_and_query:?} is not a path: {e}"))?,
        );
        let uri = Uri::from_parts(parts).map_err(|e| e.to_string())?;
        let shown = format!(
            "{}://{}{}",
            uri.scheme_str().unwrap_or("http"),
            uri.authority().map_or("", |a| a.as_str()),
            uri.path()
        );
        Ok(Target {
            uri,
            authorization: self.authorization.clone(),
            shown,
        })
    }
}

/// A request body and its content type.
#[derive(Clone, Debug)]
pub struct Body {
    /// `Content-Type` (None: the caller's headers say it).
    pub content_type: Option<&'static str>,
    /// The bytes.
    pub bytes: Bytes,
}

impl Body {
    /// A JSON body.
    pub fn json(bytes: impl Into<Bytes>) -> Body {
        Body {
            content_type: Some("application/json"),
            bytes: bytes.into(),
        }
    }

    /// An `application/x-www-form-urlencoded` body from `pairs`.
    pub fn form(pairs: &[(&str, &str)]) -> Body {
        let text = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        Body {
            content_type: Some("application/x-www-form-urlencoded"),
            bytes: Bytes::from(text),
        }
    }
}

/// An answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code, e.g. 202.
    pub status: u16,
    /// Header names (lower-case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, up to the limit the request gave (empty for 0).
    pub body: Bytes,
}

impl Response {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// Nothing (or not all of the answer) came within the deadline.
    #[error("{url}: no answer within {after:?}")]
    Timeout {
        /// The URL, without secrets.
        url: String,
        /// The deadline.
        after: Duration,
    },
    /// Connecting, TLS, sending or reading failed.
    #[error("{url}: {reason}")]
    Failed {
        /// The URL, without secrets.
        url: String,
        /// What failed.
        reason: String,
    },
}

/// A pooling HTTP/1.1 client. Cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<Connector, Full<Bytes>>,
}

impl HttpClient {
    /// A client trusting the platform's roots plus `ca_file` for https,
    /// read at the first https connection.
    pub fn new(ca_file: Option<&Path>) -> Self {
        Self::with_tls(ca_file, OnceLock::new())
    }

    /// A client for `targets`: if one of them is https, its TLS settings
    /// (the platform's roots plus `ca_file`) are built now, once, so that
    /// a bad CA file stops the server at start instead of failing every
    /// request.
    pub fn for_targets<'a>(
        targets: impl IntoIterator<Item = &'a Target>,
        ca_file: Option<&Path>,
    ) -> Result<Self, String> {
        let tls = OnceLock::new();
        if targets.into_iter().any(Target::is_https) {
            let _ = tls.set(Ok(crate::tls::client_config(ca_file)?));
        }
        Ok(Self::with_tls(ca_file, tls))
    }

    fn with_tls(ca_file: Option<&Path>, tls: OnceLock<Result<Arc<ClientConfig>, String>>) -> Self {
        let connector = Connector {
            ca_file: ca_file.map(Path::to_path_buf),
            tls: Arc::new(tls),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        HttpClient { client }
    }

    /// Sends one request to `target` and reads the answer, with `body`
    /// and extra `headers`; at most `max_body` bytes of the answer's body
    /// are read (0: none). Everything, connecting included, ends within
    /// `timeout`; the error names the URL without secrets.
    pub async fn send(
        &self,
        target: &Target,
        method: Method,
        headers: &[(&str, &str)],
        body: Option<Body>,
        max_body: usize,
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        let exchange = async {
            let mut req = Request::builder()
                .method(method)
                .uri(target.uri.clone())
                .header(
                    header::USER_AGENT,
                    concat!("rollcall/", env!("CARGO_PKG_VERSION")),
                );
            if let Some(auth) = &target.authorization {
                req = req.header(header::AUTHORIZATION, auth.as_str());
            }
            let bytes = match body {
                Some(b) => {
                    if let Some(kind) = b.content_type {
                        req = req.header(header::CONTENT_TYPE, kind);
                    }
                    b.bytes
                }
                None => Bytes::new(),
            };
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            let req = req
                .body(Full::new(bytes))
                .map_err(|e| format!("bad request: {e}"))?;
            let resp = self.client.request(req).await.map_err(|e| explain(&e))?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = if max_body == 0 {
                Bytes::new()
            } else {
                Limited::new(resp.into_body(), max_body)
                    .collect()
                    .await
                    .map_err(|e| format!("reading the answer failed: {e}"))?
                    .to_bytes()
            };
            Ok(Response {
                status,
                headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result.map_err(|reason: String| HttpError::Failed {
                url: target.display().to_string(),
                reason,
            }),
            Err(_) => Err(HttpError::Timeout {
                url: target.display().to_string(),
                after: timeout,
            }),
        }
    }
}

/// The most telling part of a client error: the connector's own message
/// (cannot connect, TLS handshake failed: …) rather than hyper's wrapper.
fn explain(e: &hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut deepest = None;
    while let Some(s) = source {
        deepest = Some(s);
        source = s.source();
    }
    match deepest {
        Some(cause) => cause.to_string(),
        None => e.to_string(),
    }
}

/// Opens connections for the pool: TCP, and TLS for https.
#[derive(Clone, Debug)]
struct Connector {
    ca_file: Option<PathBuf>,
    tls: Arc<OnceLock<Result<Arc<ClientConfig>, String>>>,
}

impl tower::Service<Uri> for Connector {
    type Response = Conn;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let fail = |e: String| std::io::Error::other(e);
            let https = uri.scheme_str() == Some("https");
            let host = uri
                .host()
                .ok_or_else(|| fail("the URL has no host".into()))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let tls = match https {
                true => Some(
                    this.tls
                        .get_or_init(|| crate::tls::client_config(this.ca_file.as_deref()))
                        .clone()
                        .map_err(fail)?,
                ),
                false => None,
            };
            let stream = crate::tls::connect(&host, port, tls.as_ref())
                .await
                .map_err(fail)?;
            Ok(Conn(TokioIo::new(stream)))
        })
    }
}

/// A pooled connection (hyper's I/O traits over [`crate::tls::Stream`]).
struct Conn(TokioIo<crate::tls::Stream>);

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFUSED: UserInfo<'static> = UserInfo::Refused("use --webhook-secret");

    #[test]
    fn urls_are_checked() {
        let t = Target::parse("--x", "http://127.0.0.1:9000/hooks?key=s3cret", REFUSED).unwrap();
        assert_eq!(t.path_and_query(), "/hooks?key=s3cret");
        assert_eq!(t.display(), "http://127.0.0.1:9000/hooks");
        assert!(!t.is_https());
        let t = Target::parse("--x", "https://[::1]:8443/h", REFUSED).unwrap();
        assert!(t.is_https());
        assert_eq!(t.display(), "https://[::1]:8443/h");
        let err = Target::parse("--x", "ftp://x", REFUSED).unwrap_err();
        assert!(
            err.contains("http:// or https://") && err.contains("--x"),
            "{err}"
        );
        assert!(Target::parse("--x", "not a url", REFUSED).is_err());
        let err = Target::parse("--x", "https://u:p@h/x", REFUSED).unwrap_err();
        assert!(err.contains("use --webhook-secret"), "{err}");
        // A URL refused for its form is shown without password or query.
        let err =
            Target::parse("--x", "ftp://u:s3cret@h/x?key=k3y", UserInfo::BasicAuth).unwrap_err();
        assert!(!err.contains("s3cret") && !err.contains("k3y"), "{err}");
        let err =
            Target::parse("--x", "http://u:s3cret@h:99999/x", UserInfo::BasicAuth).unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
        let t = Target::parse("--x", "http://h:1/?key=k3y", REFUSED).unwrap();
        assert_eq!(
            t.with_path("/api/publish").unwrap().display(),
            "http://h:1/api/publish"
        );
    }

    #[test]
    fn user_info_becomes_basic_auth_when_allowed() {
        let t = Target::parse(
            "--x",
            "http://client%20id:s%3Acret@h/i",
            UserInfo::BasicAuth,
        )
        .unwrap();
        let expected = base64::engine::general_purpose::STANDARD.encode("client id:s:cret");
        assert_eq!(
            t.authorization.as_deref(),
            Some(format!("Basic {expected}").as_str())
        );
        assert_eq!(t.display(), "http://h/i", "no credentials shown");
    }

    #[test]
    fn form_bodies_are_encoded() {
        let b = Body::form(&[("token", "a b&c=d"), ("token_type_hint", "access_token")]);
        assert_eq!(b.bytes, "token=a+b%26c%3Dd&token_type_hint=access_token");
    }
}
