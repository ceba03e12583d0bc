//! Who a Socket.IO client is: the token from the handshake (`tokenType` and
//! `token` in the URL query, in any order, or `auth: {token, tokenType}`
//! from a 4.x client), checked as a JWT with the shared verifier or as an
//! opaque OAuth token against an RFC 7662 introspection endpoint.
//!
//! ```text
//! GET /socket.io/?tokenType=jwt&token=eyJ…&EIO=3&transport=websocket
//! GET /socket.io/?token=f746696f…&tokenType=oauth&EIO=4&transport=websocket
//! 40/chat,{"token":"eyJ…","tokenType":"jwt"}                (4.x auth payload)
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Request, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::auth::JwtVerifier;
use crate::policy::Access;

/// Largest introspection response read, in bytes.
const MAX_INTROSPECTION_BODY: usize = 64 * 1024;
/// How long one introspection request may take.
const INTROSPECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Cached introspection results kept at most.
const MAX_CACHE_ENTRIES: usize = 10_000;

/// The kind of token a client presents (`tokenType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    /// A JWT, checked by the shared [`JwtVerifier`].
    Jwt,
    /// An opaque OAuth 2 token, checked by introspection.
    OAuth,
}

/// A token as presented by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `tokenType` (default `jwt`).
    pub token_type: TokenType,
    /// `token`.
    pub token: String,
}

/// An authenticated client.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// The user id (`sub`, `user_id`, `uid`, `username` or `anonymous_id`).
    pub user_id: Arc<str>,
    /// Display fields shown to others: `displayname`, `username`,
    /// `picture_url`, `type` (`user` or `anonymous`).
    pub profile: Value,
}

/// Decodes `%XX` escapes and `+` (a space) in a query component.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_token_type(s: &str) -> Result<TokenType, String> {
    match s.to_ascii_lowercase().as_str() {
        "" | "jwt" => Ok(TokenType::Jwt),
        "oauth" | "oauth2" | "bearer" => Ok(TokenType::OAuth),
        other => Err(format!(
            "unknown tokenType {other:?}; use tokenType=jwt or tokenType=oauth"
        )),
    }
}

/// Reads the credentials from a 4.x `auth` payload (`{token, tokenType}`)
/// or else from the handshake query. Err says what is missing.
pub fn credentials(query: Option<&str>, auth: Option<&Value>) -> Result<Credentials, String> {
    if let Some(Value::Object(obj)) = auth
        && let Some(Value::String(token)) = obj.get("token")
        && !token.is_empty()
    {
        let kind = obj
            .get("tokenType")
            .and_then(Value::as_str)
            .unwrap_or("jwt");
        return Ok(Credentials {
            token_type: parse_token_type(kind)?,
            token: token.clone(),
        });
    }
    let mut token = None;
    let mut kind = None;
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "token" => token = Some(percent_decode(v)),
            "tokenType" => kind = Some(percent_decode(v)),
            _ => {}
        }
    }
    match token.filter(|t| !t.is_empty()) {
        Some(token) => Ok(Credentials {
            token_type: parse_token_type(kind.as_deref().unwrap_or("jwt"))?,
            token,
        }),
        None => Err(
            "not authorized: no token; connect with query \"tokenType=jwt&token=<JWT>\" (or auth: {token, tokenType})"
                .into(),
        ),
    }
}

/// The identity in verified claims (JWT) or an introspection response:
/// the user id from `sub`, `user_id`, `uid`, `username` or (anonymous)
/// `anonymous_id`; display fields from `displayname`/`display_name`/`name`,
/// `username`, `picture_url`/`picture`.
pub fn identify(claims: &Map<String, Value>) -> Result<User, String> {
    let text = |k: &str| -> Option<String> {
        match claims.get(k) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
    };
    let (user_id, kind) = match ["sub", "user_id", "uid", "username"]
        .iter()
        .find_map(|k| text(k))
    {
        Some(id) => (id, "user"),
        None => match text("anonymous_id") {
            Some(id) => (id, "anonymous"),
            None => {
                return Err("not authorized: the token names no user; it needs a sub, user_id, uid or username claim".into());
            }
        },
    };
    let mut profile = Map::new();
    profile.insert("type".into(), Value::from(kind));
    if let Some(d) = ["displayname", "display_name", "name"]
        .iter()
        .find_map(|k| text(k))
    {
        profile.insert("displayname".into(), Value::from(d));
    }
    if let Some(u) = text("username") {
        profile.insert("username".into(), Value::from(u));
    }
    if let Some(p) = text("picture_url").or_else(|| text("picture")) {
        profile.insert("picture_url".into(), Value::from(p));
    }
    Ok(User {
        user_id: Arc::from(user_id),
        profile: Value::Object(profile),
    })
}

/// An `http://` or `https://` introspection endpoint, parsed once.
#[derive(Debug, Clone)]
struct Endpoint {
    https: bool,
    host: String,
    port: u16,
    path: String,
    authorization: Option<String>,
}

fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].iter().enumerate() {
            if i <= chunk.len() {
                out.push(TABLE[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Endpoint {
    fn parse(url: &str) -> Result<Endpoint, String> {
        let (https, default_port, rest) = match url.split_once("://") {
            Some(("http", rest)) => (false, 80, rest),
            Some(("https", rest)) => (true, 443, rest),
            _ => {
                return Err(format!(
                    "oauth-introspection-url {url:?} must start with http:// or https://"
                ));
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            // Not the inside of a bracketed IPv6 address without a port.
            Some((h, p)) if !p.contains(']') => (
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                p.parse::<u16>()
                    .map_err(|_| format!("oauth-introspection-url {url:?}: bad port {p:?}"))?,
            ),
            _ => (
                hostport
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                default_port,
            ),
        };
        if host.is_empty() {
            return Err(format!("oauth-introspection-url {url:?} has no host"));
        }
        let authorization = userinfo.map(|u| {
            let (id, secret) = u.split_once(':').unwrap_or((u, ""));
            let pair = format!("{}:{}", percent_decode(id), percent_decode(secret));
            format!("Basic {}", base64(pair.as_bytes()))
        });
        Ok(Endpoint {
            https,
            host,
            port,
            path: path.to_string(),
            authorization,
        })
    }
}

/// Checks opaque OAuth tokens with an RFC 7662 introspection endpoint and
/// caches the answers for a short time.
///
/// ```text
/// POST /introspect  Content-Type: application/x-www-form-urlencoded
/// token=f746696f…&token_type_hint=access_token
/// → {"active":true,"sub":"alice","username":"alice","exp":1764000000}
/// ```
///
/// Client credentials go in the URL's user info
/// (`http://client:secret@host/introspect`) and are sent as HTTP Basic.
/// An `https://` endpoint is verified against the platform's roots plus
/// `--tls-ca-file` ([`crate::tls`]).
#[derive(Debug)]
pub struct Introspector {
    endpoint: Endpoint,
    /// For an https endpoint.
    tls: Option<Arc<rustls::ClientConfig>>,
    ttl: Duration,
    cache: Mutex<HashMap<String, CacheEntry>>,
}

/// A cached introspection answer and when it stops being valid.
type CacheEntry = (Instant, Result<User, String>);

impl Introspector {
    /// An introspector for `url` caching answers for `ttl`; an https `url`
    /// also trusts the roots of `ca_file` (`--tls-ca-file`).
    pub fn new(
        url: &str,
        ttl: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Introspector, String> {
        let endpoint = Endpoint::parse(url)?;
        let tls = match endpoint.https {
            true => Some(crate::tls::client_config(ca_file)?),
            false => None,
        };
        Ok(Introspector {
            endpoint,
            tls,
            ttl,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The user an active token belongs to, or why it was refused.
    pub async fn check(&self, token: &str) -> Result<User, String> {
        let now = Instant::now();
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((until, result)) = cache.get(token)
                && *until > now
            {
                return result.clone();
            }
        }
        let answer = tokio::time::timeout(INTROSPECTION_TIMEOUT, self.introspect(token))
            .await
            .unwrap_or_else(|_| {
                Err(IntrospectError::Unavailable(format!(
                    "the introspection endpoint did not answer within {INTROSPECTION_TIMEOUT:?}"
                )))
            });
        let (result, ttl) = match answer {
            Ok(claims) => {
                let active = claims.get("active").and_then(Value::as_bool) == Some(true);
                let exp = claims.get("exp").and_then(Value::as_u64);
                let now_unix = crate::time::unix_now();
                if !active {
                    (
                        Err("not authorized: the OAuth token is not active (introspection said active=false); get a new token".to_string()),
                        self.ttl,
                    )
                } else if exp.is_some_and(|e| e <= now_unix) {
                    (
                        Err(
                            "not authorized: the OAuth token has expired; get a new token"
                                .to_string(),
                        ),
                        self.ttl,
                    )
                } else {
                    let ttl = exp
                        .map(|e| Duration::from_secs(e - now_unix).min(self.ttl))
                        .unwrap_or(self.ttl);
                    (identify(&claims), ttl)
                }
            }
            // Do not cache outages: the next connect tries again.
            Err(IntrospectError::Unavailable(why)) => {
                return Err(format!(
                    "not authorized: the OAuth token could not be checked: {why}; try again later"
                ));
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHE_ENTRIES {
            let now = Instant::now();
            cache.retain(|_, (until, _)| *until > now);
            if cache.len() >= MAX_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(token.to_string(), (Instant::now() + ttl, result.clone()));
        result
    }

    async fn introspect(&self, token: &str) -> Result<Map<String, Value>, IntrospectError> {
        let ep = &self.endpoint;
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            IntrospectError::Unavailable(format!("{what} {}:{}{}: {e}", ep.host, ep.port, ep.path))
        };
        let stream = crate::tls::connect(&ep.host, ep.port, self.tls.as_ref())
            .await
            .map_err(|e| unavailable("cannot reach", &e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unavailable("HTTP handshake failed with", &e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let body = format!(
            "token={}&token_type_hint=access_token",
            percent_encode(token)
        );
        let bracketed = match ep.host.contains(':') {
            true => format!("[{}]", ep.host),
            false => ep.host.clone(),
        };
        let default_port = if ep.https { 443 } else { 80 };
        let host = if ep.port == default_port {
            bracketed
        } else {
            format!("{bracketed}:{}", ep.port)
        };
        let mut req = Request::post(ep.path.as_str())
            .header(header::HOST, host)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json");
        if let Some(auth) = &ep.authorization {
            req = req.header(header::AUTHORIZATION, auth.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| unavailable("cannot build a request for", &e))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unavailable("request failed to", &e))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_INTROSPECTION_BODY)
            .collect()
            .await
            .map_err(|e| unavailable("cannot read the answer of", &e))?
            .to_bytes();
        if !status.is_success() {
            return Err(unavailable(
                "introspection refused by",
                &format!("HTTP {status}"),
            ));
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(unavailable(
                "introspection answer is not a JSON object from",
                &"bad body",
            )),
        }
    }
}

enum IntrospectError {
    Unavailable(String),
}

/// Checks credentials: a JWT with `verifier`, an OAuth token with
/// `introspector` (if configured).
pub async fn authenticate(
    creds: &Credentials,
    verifier: &JwtVerifier,
    introspector: Option<&Introspector>,
) -> Result<(User, Access), String> {
    match creds.token_type {
        TokenType::Jwt => {
            let claims = verifier
                .verify(&creds.token)
                .map_err(|e| format!("not authorized: invalid token: {e}"))?;
            let access = crate::auth::access_from_claims(&claims)
                .map_err(|e| format!("not authorized: invalid token: {e}"))?;
            Ok((identify(&claims)?, access))
        }
        // An opaque token proves who the user is; it carries no grants, so
        // its channels are opened by rules or the backend check.
        TokenType::OAuth => match introspector {
            Some(i) => Ok((i.check(&creds.token).await?, Access::authenticated(None))),
            None => Err(
                "not authorized: tokenType=oauth is not enabled on this server (no --oauth-introspection-url); use tokenType=jwt"
                    .into(),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_query_parameters_in_any_order() {
        let a = credentials(
            Some("tokenType=jwt&token=abc&EIO=3&transport=websocket"),
            None,
        )
        .unwrap();
        let b = credentials(Some("EIO=4&token=abc&tokenType=jwt"), None).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.token_type, TokenType::Jwt);
        let o = credentials(Some("token=f746%2B&tokenType=oauth"), None).unwrap();
        assert_eq!(o.token_type, TokenType::OAuth);
        assert_eq!(o.token, "f746+");
        // No tokenType: a JWT.
        assert_eq!(
            credentials(Some("token=x"), None).unwrap().token_type,
            TokenType::Jwt
        );
    }

    #[test]
    fn auth_payload_wins_over_query() {
        let c = credentials(
            Some("EIO=4"),
            Some(&json!({"token": "t1", "tokenType": "oauth"})),
        )
        .unwrap();
        assert_eq!(c.token, "t1");
        assert_eq!(c.token_type, TokenType::OAuth);
    }

    #[test]
    fn missing_or_odd_tokens_say_why() {
        assert!(
            credentials(Some("EIO=3"), None)
                .unwrap_err()
                .contains("no token")
        );
        assert!(
            credentials(None, None)
                .unwrap_err()
                .contains("tokenType=jwt&token=")
        );
        assert!(
            credentials(Some("token=x&tokenType=saml"), None)
                .unwrap_err()
                .contains("unknown tokenType")
        );
    }

    #[test]
    fn identifies_users_from_common_claims() {
        let m = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(&*identify(&m(json!({"sub":"a"}))).unwrap().user_id, "a");
        assert_eq!(
            &*identify(&m(json!({"user_id":"b","user_id_sig":"x"})))
                .unwrap()
                .user_id,
            "b"
        );
        assert_eq!(&*identify(&m(json!({"uid":"c"}))).unwrap().user_id, "c");
        let u = identify(&m(json!({"username":"d","name":"Dee","picture":"p.png"}))).unwrap();
        assert_eq!(&*u.user_id, "d");
        assert_eq!(
            u.profile,
            json!({"type":"user","displayname":"Dee","username":"d","picture_url":"p.png"})
        );
        // Avaya's anonymous token (spec §4.1).
        let anon = identify(&m(
            json!({"anonymous_id":"56df","product_type":"onesna","iss":["esna","com"]}),
        ))
        .unwrap();
        assert_eq!(&*anon.user_id, "56df");
        assert_eq!(anon.profile["type"], "anonymous");
        assert!(
            identify(&m(json!({"exp": 1})))
                .unwrap_err()
                .contains("names no user")
        );
    }

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("http://id:s%3Acret@127.0.0.1:9000/oauth/introspect").unwrap();
        assert_eq!(e.host, "127.0.0.1");
        assert_eq!(e.port, 9000);
        assert_eq!(e.path, "/oauth/introspect");
        assert_eq!(e.authorization.as_deref(), Some("Basic aWQ6czpjcmV0"));
        let e = Endpoint::parse("http://auth.local").unwrap();
        assert_eq!((e.port, e.path.as_str(), e.https), (80, "/", false));
        let e = Endpoint::parse("https://x/y").unwrap();
        assert_eq!((e.port, e.path.as_str(), e.https), (443, "/y", true));
        let e = Endpoint::parse("https://[::1]:8443/i").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 8443));
        let e = Endpoint::parse("https://[::1]/i").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 443));
        assert!(
            Endpoint::parse("ftp://x")
                .unwrap_err()
                .contains("http:// or https://")
        );
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
