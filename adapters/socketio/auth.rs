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

use axum::http::Method;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::auth::JwtVerifier;
use crate::http_client::{Body, HttpClient, HttpError, Target, UserInfo};
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
    /// `picture_url`, `type` (`user` or `anonymous`). Shared with the core
    /// connection's identity (one copy per connection).
    pub profile: Arc<Value>,
}

/// Decodes `%XX` escapes and `+` (a space) in a query component (an
/// invalid escape is kept as it is).
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
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
    // A token with no display claims has one of two profiles: share it
    // (a one-entry JSON object is a 640-byte B-tree node per connection).
    let profile = if profile.len() == 1 {
        static PLAIN: std::sync::LazyLock<[Arc<Value>; 2]> = std::sync::LazyLock::new(|| {
            ["user", "anonymous"].map(|kind| Arc::new(serde_json::json!({ "type": kind })))
        });
        PLAIN[usize::from(kind == "anonymous")].clone()
    } else {
        Arc::new(Value::Object(profile))
    };
    Ok(User {
        user_id: Arc::from(user_id),
        profile,
    })
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
    endpoint: Target,
    client: HttpClient,
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
        let endpoint = Target::parse("oauth-introspection-url", url, UserInfo::BasicAuth)?;
        let client = HttpClient::for_targets([&endpoint], ca_file)?;
        Ok(Introspector {
            endpoint,
            client,
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
        let answer = self.introspect(token).await;
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
        let body = Body::form(&[("token", token), ("token_type_hint", "access_token")]);
        let answer = self
            .client
            .send(
                &self.endpoint,
                Method::POST,
                &[("Accept", "application/json")],
                Some(body),
                MAX_INTROSPECTION_BODY,
                INTROSPECTION_TIMEOUT,
            )
            .await
            .map_err(|e| match e {
                HttpError::Timeout { after, .. } => IntrospectError::Unavailable(format!(
                    "the introspection endpoint did not answer within {after:?}"
                )),
                other => IntrospectError::Unavailable(format!("cannot reach {other}")),
            })?;
        let unavailable = |what: &str| {
            IntrospectError::Unavailable(format!("{what} {}", self.endpoint.display()))
        };
        if !(200..300).contains(&answer.status) {
            return Err(unavailable(&format!(
                "introspection refused (HTTP {}) by",
                answer.status
            )));
        }
        match serde_json::from_slice::<Value>(&answer.body) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(unavailable(
                "introspection answer is not a JSON object from",
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
            *u.profile,
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
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
