//! Typed Hotsock claims (spec §2.1–§2.3, limits from §7). The `channels`
//! claim is parsed into [`ChannelRules`].

use std::collections::HashMap;
use std::fmt;
use std::ops::RangeInclusive;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::channel_rules::ChannelRules;
use super::claim_value::{describe, opt_bool, opt_string, present, whole_number};
use super::jwt::numeric_date;
use super::{AuthError, JwtVerifier};

/// Longest accepted `uid`, in characters.
pub const MAX_UID_CHARS: usize = 128;
/// Largest accepted `umd`, in bytes of compact JSON.
pub const MAX_UMD_BYTES: usize = 1024;
/// Accepted `heartbeatTimeout` values, in seconds.
pub const HEARTBEAT_TIMEOUT_SECS: RangeInclusive<u64> = 5..=600;

/// One value of the `scope` claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// May open a WebSocket connection.
    Connect,
    /// May be sent in `hotsock.subscribe` to grant extra channel permissions.
    Subscribe,
    /// May be sent in `hotsock.umdUpdate`.
    Umd,
}

impl Scope {
    /// The scope's wire name (`connect`, `subscribe` or `umd`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Connect => "connect",
            Scope::Subscribe => "subscribe",
            Scope::Umd => "umd",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The parsed space-separated `scope` claim.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scopes {
    /// `connect` is present.
    pub connect: bool,
    /// `subscribe` is present.
    pub subscribe: bool,
    /// `umd` is present.
    pub umd: bool,
}

impl Scopes {
    /// Parses a space-separated scope list. Unknown words are rejected so a
    /// typo (`"conect"`) is reported instead of silently granting nothing.
    pub fn parse(scope: &str) -> Result<Self, AuthError> {
        let mut out = Scopes::default();
        for word in scope.split_ascii_whitespace() {
            match word {
                "connect" => out.connect = true,
                "subscribe" => out.subscribe = true,
                "umd" => out.umd = true,
                other => {
                    return Err(AuthError::invalid_claims(format!(
                        "scope contains unknown value {other:?}; use connect, subscribe \
                         and/or umd separated by spaces"
                    )));
                }
            }
        }
        Ok(out)
    }

    /// True if `scope` is present.
    pub fn contains(&self, scope: Scope) -> bool {
        match scope {
            Scope::Connect => self.connect,
            Scope::Subscribe => self.subscribe,
            Scope::Umd => self.umd,
        }
    }
}

/// The Hotsock claims of a verified token.
#[derive(Clone, Debug)]
pub struct HotsockClaims {
    /// Expiry (seconds since the Unix epoch). The token must be used before it.
    pub exp: u64,
    /// The `scope` claim.
    pub scope: Scopes,
    /// User id (at most 128 characters).
    pub uid: Option<String>,
    /// User metadata (at most 1 KiB of JSON). `null` counts as absent.
    pub umd: Option<Value>,
    /// Per-channel permissions from the `channels` claim.
    pub channels: std::sync::Arc<ChannelRules>,
    /// Binds a subscribe/umd token to one existing connection.
    pub connection_id: Option<String>,
    /// Server sends `hotsock.keepAlive` about every 9.5 minutes.
    pub keep_alive: bool,
    /// Seconds (5..=600) within which the client must send `hotsock.heartbeat`.
    pub heartbeat_timeout: Option<u64>,
    /// May change the connection-level umd (umd-scoped tokens).
    pub umd_update: bool,
    /// With `umd_update`, push the new umd to every existing subscription.
    pub umd_propagate: bool,
    /// The `jti` claim.
    pub jti: Option<String>,
    /// Token may be used once only (requires `jti`).
    pub single_use: bool,
}

impl HotsockClaims {
    /// Parses and validates the claims of an already verified token.
    ///
    /// `serde_json::Map` is sorted by key in this crate (no `preserve_order`),
    /// so the channel rules, and therefore
    /// [`ChannelRules::auto_subscribe_channels`], come out in key order. Use
    /// [`JwtVerifier::verify_hotsock`] or [`HotsockClaims::from_json_str`] to
    /// keep the order the token was written in.
    pub fn from_claims(map: &Map<String, Value>) -> Result<Self, AuthError> {
        Self::parse(map, None)
    }

    /// Parses a claims JSON object, keeping the `channels` key order.
    pub fn from_json_str(json: &str) -> Result<Self, AuthError> {
        let map: Map<String, Value> = serde_json::from_str(json).map_err(|e| {
            AuthError::invalid_claims(format!("the claims are not a JSON object ({e})"))
        })?;
        Self::parse(&map, ordered_channels(json.as_bytes()))
    }

    fn parse(
        map: &Map<String, Value>,
        ordered: Option<Vec<(String, Value)>>,
    ) -> Result<Self, AuthError> {
        let exp = match present(map, "exp") {
            Some(v) => numeric_date(v).ok_or_else(|| {
                AuthError::invalid_claims(format!(
                    "exp must be a NumericDate (seconds since 1970-01-01T00:00:00Z), got {}",
                    describe(v)
                ))
            })?,
            None => {
                return Err(AuthError::MissingClaim {
                    claim: "exp".into(),
                });
            }
        };
        let scope = match present(map, "scope") {
            Some(Value::String(s)) => Scopes::parse(s)?,
            Some(other) => {
                return Err(AuthError::invalid_claims(format!(
                    "scope must be a space-separated string such as \"connect\", got {}",
                    describe(other)
                )));
            }
            None => {
                return Err(AuthError::MissingClaim {
                    claim: "scope".into(),
                });
            }
        };

        let uid = opt_string(map, "uid", "")?;
        if let Some(uid) = &uid {
            let n = uid.chars().count();
            if n > MAX_UID_CHARS {
                return Err(AuthError::invalid_claims(format!(
                    "uid is {n} characters long but at most {MAX_UID_CHARS} are allowed; \
                     use a shorter user id"
                )));
            }
        }

        let umd = present(map, "umd").cloned();
        if let Some(umd) = &umd {
            let n = umd.to_string().len();
            if n > MAX_UMD_BYTES {
                return Err(AuthError::invalid_claims(format!(
                    "umd is {n} bytes of JSON but at most {MAX_UMD_BYTES} (1 KiB) are allowed; \
                     put less user metadata in the token"
                )));
            }
        }

        let channels = match (present(map, "channels"), ordered) {
            (None, _) => std::sync::Arc::new(ChannelRules::default()),
            (Some(Value::Object(_)), Some(entries)) => {
                ChannelRules::shared(entries.iter().map(|(k, v)| (k.as_str(), v)))?
            }
            (Some(Value::Object(obj)), None) => {
                ChannelRules::shared(obj.iter().map(|(k, v)| (k.as_str(), v)))?
            }
            (Some(other), _) => {
                return Err(AuthError::invalid_claims(format!(
                    "channels must be an object mapping channel names to directives, got {}",
                    describe(other)
                )));
            }
        };

        let heartbeat_timeout = match present(map, "heartbeatTimeout") {
            None => None,
            Some(v) => match whole_number(v) {
                Some(n) if HEARTBEAT_TIMEOUT_SECS.contains(&n) => Some(n),
                _ => {
                    return Err(AuthError::invalid_claims(format!(
                        "heartbeatTimeout must be a whole number of seconds from {} to {}, got {}",
                        HEARTBEAT_TIMEOUT_SECS.start(),
                        HEARTBEAT_TIMEOUT_SECS.end(),
                        describe(v)
                    )));
                }
            },
        };

        let jti = opt_string(map, "jti", "")?;
        let single_use = opt_bool(map, "singleUse", "")?.unwrap_or(false);
        if single_use && jti.as_deref().is_none_or(str::is_empty) {
            return Err(AuthError::invalid_claims(
                "singleUse is true but there is no jti; add a unique \"jti\" claim",
            ));
        }

        Ok(HotsockClaims {
            exp,
            scope,
            uid,
            umd,
            channels,
            connection_id: opt_string(map, "connectionId", "")?,
            keep_alive: opt_bool(map, "keepAlive", "")?.unwrap_or(false),
            heartbeat_timeout,
            umd_update: opt_bool(map, "umdUpdate", "")?.unwrap_or(false),
            umd_propagate: opt_bool(map, "umdPropagate", "")?.unwrap_or(false),
            jti,
            single_use,
        })
    }

    /// Checks that this token may open a new connection: it needs the
    /// `connect` scope and no `connectionId` claim.
    pub fn ensure_can_connect(&self) -> Result<(), AuthError> {
        if !self.scope.connect {
            return Err(AuthError::not_permitted(
                "token scope does not include \"connect\"; mint the connection token with \
                 \"scope\": \"connect\"",
            ));
        }
        if self.connection_id.is_some() {
            return Err(AuthError::not_permitted(
                "token has a connectionId claim, so it can only be used on that existing \
                 connection; mint the connection token without connectionId",
            ));
        }
        Ok(())
    }

    /// Checks that this token may be used with `scope` (`subscribe` or `umd`)
    /// on an existing connection: the scope must be present, and the token
    /// must either carry this connection's `connectionId` or, without
    /// `connectionId`, a `uid` equal to the connection's uid.
    pub fn ensure_usable_on(
        &self,
        scope: Scope,
        connection_id: &str,
        connection_uid: Option<&str>,
    ) -> Result<(), AuthError> {
        if !self.scope.contains(scope) {
            return Err(AuthError::not_permitted(format!(
                "token scope does not include \"{scope}\"; mint the {scope} token with \
                 \"scope\": \"{scope}\""
            )));
        }
        match (&self.connection_id, self.uid.as_deref()) {
            (Some(bound), _) if bound == connection_id => Ok(()),
            (Some(bound), _) => Err(AuthError::not_permitted(format!(
                "token is bound to connection {bound:?} (connectionId claim), not to this \
                 connection; mint it with this connection's connectionId"
            ))),
            (None, None | Some("")) => Err(AuthError::not_permitted(format!(
                "a {scope} token needs a connectionId or uid claim; mint it with this \
                 connection's connectionId or uid"
            ))),
            (None, Some(uid)) if Some(uid) == connection_uid => Ok(()),
            (None, Some(uid)) => Err(AuthError::not_permitted(format!(
                "token uid {uid:?} does not match this connection's uid; mint it with the \
                 connection's uid or connectionId"
            ))),
        }
    }
}

impl JwtVerifier {
    /// Verifies `token` (see [`JwtVerifier::verify`]) and parses its Hotsock
    /// claims, keeping the `channels` claim in token order.
    pub fn verify_hotsock(&self, token: &str) -> Result<HotsockClaims, AuthError> {
        let verified = self.verify_raw(token)?;
        HotsockClaims::parse(&verified.claims, ordered_channels(&verified.payload))
    }
}

/// The entries of the payload's top-level `channels` object in token order,
/// or `None` if the payload has no such object (the caller then falls back
/// to `serde_json::Map` order and reports type errors itself).
fn ordered_channels(payload: &[u8]) -> Option<Vec<(String, Value)>> {
    #[derive(Deserialize)]
    struct ChannelsOnly {
        channels: Option<OrderedObject>,
    }
    serde_json::from_slice::<ChannelsOnly>(payload)
        .ok()?
        .channels
        .map(|o| o.0)
}

/// A JSON object as an ordered list of entries. A repeated key keeps its
/// first position and its last value (as `serde_json::Map` keeps the last).
struct OrderedObject(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedVisitor;
        impl<'de> Visitor<'de> for OrderedVisitor {
            type Value = OrderedObject;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<OrderedObject, A::Error> {
                let mut entries: Vec<(String, Value)> = Vec::new();
                let mut index: HashMap<String, usize> = HashMap::new();
                while let Some((key, value)) = access.next_entry::<String, Value>()? {
                    match index.get(&key) {
                        Some(&i) => entries[i].1 = value,
                        None => {
                            index.insert(key.clone(), entries.len());
                            entries.push((key, value));
                        }
                    }
                }
                Ok(OrderedObject(entries))
            }
        }
        deserializer.deserialize_map(OrderedVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwt::tests::{SECRET, b64url_encode};
    use crate::auth::{AuthConfig, MessagePermission, mint_hs256, now_secs};
    use serde_json::json;

    fn parse(v: Value) -> Result<HotsockClaims, AuthError> {
        HotsockClaims::from_json_str(&v.to_string())
    }

    fn ok(v: Value) -> HotsockClaims {
        match parse(v) {
            Ok(c) => c,
            Err(e) => panic!("claims rejected: {e}"),
        }
    }

    fn bad(v: Value) -> String {
        match parse(v) {
            Ok(c) => panic!("claims unexpectedly accepted: {c:?}"),
            Err(e) => {
                assert!(matches!(e, AuthError::InvalidClaims { .. }), "{e:?}");
                e.to_string()
            }
        }
    }

    #[test]
    fn spec_example_connect_token() {
        let c = ok(
            json!({"exp":1760000000u64,"scope":"connect","uid":"Jim","umd":{"name":"Jim Halpert"},
            "keepAlive":true,"heartbeatTimeout":30,
            "channels":{
              "presence.*":{"subscribe":true},
              "user.123":{"alias":"user","autoSubscribe":true},
              "room.123":{"subscribe":true,"messages":{"is-typing":{"publish":true},
                          "chat":{"publish":true,"echo":true,"store":31536000}}}
            }}),
        );
        assert_eq!(c.exp, 1_760_000_000);
        assert_eq!(
            c.scope,
            Scopes {
                connect: true,
                subscribe: false,
                umd: false
            }
        );
        assert_eq!(c.uid.as_deref(), Some("Jim"));
        assert_eq!(c.umd, Some(json!({"name": "Jim Halpert"})));
        assert!(c.keep_alive);
        assert_eq!(c.heartbeat_timeout, Some(30));
        assert!(!c.single_use && !c.umd_update && !c.umd_propagate);
        assert_eq!(c.channels.len(), 3);
        assert!(c.channels.can_subscribe("presence.lobby"));
        assert!(c.channels.can_subscribe("room.123"));
        assert!(!c.channels.can_subscribe("room.124"));
        assert_eq!(c.channels.auto_subscribe_channels(), vec!["user.123"]);
        assert_eq!(c.channels.alias_for("user").as_deref(), Some("user.123"));
        let chat = c.channels.message_permission("room.123", "chat");
        assert_eq!(
            chat,
            MessagePermission {
                publish: true,
                broadcast: false,
                echo: true,
                emit: false
            }
        );
        assert!(chat.may_send(true) && !chat.may_send(false));
        assert_eq!(
            c.channels.message_permission("room.123", "other"),
            MessagePermission::default()
        );
        assert!(c.ensure_can_connect().is_ok());
    }

    #[test]
    fn scope_parsing() {
        let s = Scopes::parse(" connect  subscribe ").expect("scope");
        assert!(s.connect && s.subscribe && !s.umd);
        assert!(s.contains(Scope::Subscribe) && !s.contains(Scope::Umd));
        let e = Scopes::parse("conect").unwrap_err().to_string();
        assert!(e.contains("\"conect\"") && e.contains("use connect"), "{e}");
        let missing = parse(json!({"exp": 1})).unwrap_err();
        assert_eq!(
            missing,
            AuthError::MissingClaim {
                claim: "scope".into()
            }
        );
        assert!(missing.to_string().contains("\"scope\": \"connect\""));
        assert!(bad(json!({"exp": 1, "scope": ["connect"]})).contains("scope must be"));
        assert!(parse(json!({"scope": "connect"})).is_err());
    }

    #[test]
    fn uid_length_limit() {
        let max = "ü".repeat(128);
        assert_eq!(
            ok(json!({"exp": 1, "scope": "connect", "uid": max}))
                .uid
                .as_deref(),
            Some(max.as_str())
        );
        let e = bad(json!({"exp": 1, "scope": "connect", "uid": "x".repeat(129)}));
        assert!(e.contains("uid is 129 characters long"), "{e}");
        let e = bad(json!({"exp": 1, "scope": "connect", "uid": 42}));
        assert!(e.contains("uid must be a string, got a number (42)"), "{e}");
        assert_eq!(
            ok(json!({"exp": 1, "scope": "connect", "uid": null})).uid,
            None
        );
    }

    #[test]
    fn umd_size_limit() {
        // {"a":"..."} is 8 bytes of overhead.
        let fits = json!({"a": "x".repeat(1016)});
        assert_eq!(fits.to_string().len(), 1024);
        assert!(parse(json!({"exp": 1, "scope": "connect", "umd": fits})).is_ok());
        let e = bad(json!({"exp": 1, "scope": "connect", "umd": {"a": "x".repeat(1017)}}));
        assert!(e.contains("umd is 1025 bytes"), "{e}");
        assert_eq!(
            ok(json!({"exp": 1, "scope": "connect", "umd": null})).umd,
            None
        );
    }

    #[test]
    fn heartbeat_timeout_range() {
        for n in [5, 600] {
            assert_eq!(
                ok(json!({"exp": 1, "scope": "connect", "heartbeatTimeout": n})).heartbeat_timeout,
                Some(n)
            );
        }
        for v in [json!(4), json!(601), json!(-5), json!(30.5), json!("30")] {
            let e = bad(json!({"exp": 1, "scope": "connect", "heartbeatTimeout": v}));
            assert!(e.contains("heartbeatTimeout must be a whole number of seconds from 5 to 600"));
        }
    }

    #[test]
    fn flags_types_and_single_use() {
        let c = ok(
            json!({"exp": 1, "scope": "umd", "umdUpdate": true, "umdPropagate": true,
                          "jti": "abc", "singleUse": true, "connectionId": "conn-1"}),
        );
        assert!(c.umd_update && c.umd_propagate && c.single_use);
        assert_eq!(c.jti.as_deref(), Some("abc"));
        assert_eq!(c.connection_id.as_deref(), Some("conn-1"));
        let e = bad(json!({"exp": 1, "scope": "connect", "singleUse": true}));
        assert!(e.contains("add a unique \"jti\""), "{e}");
        let e = bad(json!({"exp": 1, "scope": "connect", "keepAlive": "yes"}));
        assert!(
            e.contains("keepAlive must be a boolean, got a string (\"yes\")"),
            "{e}"
        );
        let e = bad(json!({"exp": 1, "scope": "connect", "channels": ["a"]}));
        assert!(e.contains("channels must be an object"), "{e}");
    }

    #[test]
    fn connect_and_bound_token_checks() {
        let connect = ok(json!({"exp": 1, "scope": "connect", "uid": "jim"}));
        assert!(connect.ensure_can_connect().is_ok());
        let e = connect
            .ensure_usable_on(Scope::Subscribe, "c1", Some("jim"))
            .unwrap_err();
        assert!(e.to_string().contains("\"scope\": \"subscribe\""), "{e}");

        let bound = ok(json!({"exp": 1, "scope": "connect subscribe", "connectionId": "c1"}));
        let e = bound.ensure_can_connect().unwrap_err();
        assert!(e.to_string().contains("without connectionId"), "{e}");
        assert!(bound.ensure_usable_on(Scope::Subscribe, "c1", None).is_ok());
        assert!(
            bound
                .ensure_usable_on(Scope::Subscribe, "c2", None)
                .is_err()
        );

        let by_uid = ok(json!({"exp": 1, "scope": "subscribe", "uid": "jim"}));
        assert!(
            by_uid
                .ensure_usable_on(Scope::Subscribe, "c9", Some("jim"))
                .is_ok()
        );
        let e = by_uid
            .ensure_usable_on(Scope::Subscribe, "c9", Some("pam"))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("does not match this connection's uid"),
            "{e}"
        );
        assert!(
            by_uid
                .ensure_usable_on(Scope::Subscribe, "c9", None)
                .is_err()
        );

        let anonymous = ok(json!({"exp": 1, "scope": "subscribe"}));
        let e = anonymous
            .ensure_usable_on(Scope::Subscribe, "c1", None)
            .unwrap_err();
        assert!(e.to_string().contains("needs a connectionId or uid"), "{e}");

        let no_connect = ok(json!({"exp": 1, "scope": "umd"}));
        assert!(no_connect.ensure_can_connect().is_err());
    }

    #[test]
    fn verify_hotsock_end_to_end_keeps_order() {
        let v = JwtVerifier::new(&AuthConfig {
            jwt_secret: Some(SECRET.into()),
            ..AuthConfig::default()
        })
        .expect("verifier");
        // serde_json::json! sorts keys, so build the payload text by hand.
        let exp = now_secs() + 600;
        let payload = format!(
            r##"{{"scope":"connect","uid":"jim","exp":{exp},"channels":{{
                "z.room":{{"autoSubscribe":true}},"a.room":{{"autoSubscribe":true}}}}}}"##
        );
        let value: Value = serde_json::from_str(&payload).expect("json");
        // mint_hs256 re-serializes (sorted), so sign the raw text directly.
        let header = r##"{"alg":"HS256","typ":"JWT"}"##;
        let enc = |s: &str| b64url_encode(s.as_bytes());
        let msg = format!("{}.{}", enc(header), enc(&payload));
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
            .expect("sign");
        let claims = v
            .verify_hotsock(&format!("{msg}.{sig}"))
            .expect("hotsock claims");
        assert_eq!(
            claims.channels.auto_subscribe_channels(),
            vec!["z.room", "a.room"]
        );
        assert_eq!(claims.uid.as_deref(), Some("jim"));

        // Sorted order when the token was minted from a serde_json::Value.
        let minted = mint_hs256(SECRET, &value).expect("mint");
        let claims = v.verify_hotsock(&minted).expect("hotsock claims");
        assert_eq!(
            claims.channels.auto_subscribe_channels(),
            vec!["a.room", "z.room"]
        );

        // Claim errors surface through verify_hotsock too.
        let bad = mint_hs256(
            SECRET,
            &json!({"exp": exp, "scope": "connect", "channels": {"x.*": {"alias": "x"}}}),
        )
        .expect("mint");
        assert!(matches!(
            v.verify_hotsock(&bad),
            Err(AuthError::InvalidClaims { .. })
        ));
    }
}
