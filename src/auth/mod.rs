//! JWT verification and channel permissions shared by every front end.
//!
//! * [`JwtVerifier`] checks a token's signature, header and registered claims
//!   (`exp`, `nbf`, `iss`, `aud`) and returns its claims. Every wire protocol
//!   uses it.
//! * [`HotsockClaims`] and [`ChannelRules`] turn verified claims into the typed
//!   Hotsock permissions of spec §2 (`scope`, `uid`, `umd`, `channels`, ...).
//! * [`Pattern`] matches channel and event names against claim keys (exact
//!   names, `*` globs and `#regex:` patterns).
//! * [`SingleUseGuard`] remembers the `jti` of `singleUse` tokens.
//! * [`mint_hs256`] and [`dev_token_claims`] create tokens for the
//!   `rollcall token` command and for tests.
//!
//! Every [`AuthError`] message says what went wrong and what to do about it,
//! so front ends can pass it to clients and operators as is.

mod channel_rules;
mod claim_value;
mod hotsock_claims;
pub mod jwks;
mod jwt;
mod mint;
mod pattern;
mod single_use;

use std::fmt;
use std::path::PathBuf;

pub use channel_rules::{
    ChannelDirectives, ChannelRules, MAX_STORE_SECS, MessageDirectives, MessagePermission,
};
pub use hotsock_claims::{
    HEARTBEAT_TIMEOUT_SECS, HotsockClaims, MAX_UID_CHARS, MAX_UMD_BYTES, Scope, Scopes,
};
pub use jwt::JwtVerifier;
pub use mint::{TokenRequest, dev_token_claims, mint_hs256, mint_pem, parse_duration};
pub use pattern::{Pattern, PatternError};
pub use single_use::SingleUseGuard;

/// The credentials a verified JWT gives a connection on any front end:
/// authenticated, with the grants of its `channels` claim (Hotsock
/// format), if it has one. A malformed claim refuses the token.
pub fn access_from_claims(
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<crate::policy::Access, AuthError> {
    let grants = match claims.get("channels") {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => Some(ChannelRules::shared_json(value)?),
    };
    Ok(crate::policy::Access::authenticated(grants))
}

/// Where verification keys come from and which registered claims to check.
///
/// At least one of [`jwt_secret`](Self::jwt_secret) and
/// [`public_keys`](Self::public_keys) must be set for [`JwtVerifier::new`] to
/// succeed. The `Debug` output never shows the secret.
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// Shared secret for HS256, HS384 and HS512 tokens (`--jwt-secret`).
    pub jwt_secret: Option<String>,
    /// PEM files holding public keys (`--jwt-public-key`): RSA keys verify
    /// RS256/384/512 and PS256/384/512, EC keys verify ES256 (P-256) or ES384
    /// (P-384), Ed25519 keys verify EdDSA. Several keys may be given, e.g. for
    /// key rotation; each key of the token's algorithm family is tried.
    pub public_keys: Vec<PathBuf>,
    /// A TOML file of HMAC secrets by key id (`--jwt-secrets-file`): a token
    /// whose header has a `kid` is verified with that key's secret only.
    pub secrets_file: Option<PathBuf>,
    /// Public keys come from this JSON Web Key Set too (`--jwks-url`;
    /// attached with [`JwtVerifier::with_jwks`]).
    pub jwks_url: Option<String>,
    /// Required `iss` value. Checked only if set; a token without `iss` is
    /// then rejected.
    pub issuer: Option<String>,
    /// Required `aud` value. Checked only if set; the token's `aud` may be a
    /// string or an array with this value in it. If unset, `aud` is ignored.
    pub audience: Option<String>,
    /// Clock-skew allowance in seconds for `exp` and `nbf` (at most one day).
    pub leeway_secs: u64,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("public_keys", &self.public_keys)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// Why a token was rejected or the auth configuration is unusable.
///
/// `Display` gives one human-readable sentence naming the problem and the fix.
/// Variants other than [`AuthError::KeyFile`], [`AuthError::Config`] and
/// [`AuthError::Mint`] are caused by the token (an HTTP 401 at connect time).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// No token was supplied at all.
    MissingToken,
    /// The input is not a structurally valid JWT.
    Malformed {
        /// What exactly is wrong with it.
        reason: String,
    },
    /// The header's `alg` is not one rollcall can verify (e.g. `none`).
    UnsupportedAlgorithm {
        /// The `alg` value from the token header.
        alg: String,
    },
    /// The token's algorithm is supported but no key of its family is configured.
    NoKeyForAlgorithm {
        /// The `alg` value from the token header.
        alg: String,
        /// What is missing, e.g. "shared secret is configured (--jwt-secret)".
        missing: String,
    },
    /// The header's `typ` is present but is not `JWT`.
    WrongType {
        /// The `typ` value from the token header.
        typ: String,
    },
    /// The header lists `crit` extensions, which rollcall does not understand.
    UnsupportedCritical {
        /// The `crit` value, rendered as JSON.
        crit: String,
    },
    /// The token names a key id (`kid`) no configured key has.
    UnknownKeyId {
        /// The token's `kid`.
        kid: String,
        /// Which keys are known, and what to do.
        known: String,
    },
    /// No configured key of the token's family verifies the signature.
    BadSignature {
        /// Which keys were tried, e.g. "the configured secret".
        tried: String,
    },
    /// `exp` is in the past.
    Expired {
        /// The token's `exp` (seconds since the Unix epoch).
        exp: u64,
    },
    /// `nbf` is in the future.
    NotYetValid {
        /// The token's `nbf` (seconds since the Unix epoch).
        nbf: u64,
    },
    /// A claim that must be present is missing (e.g. `exp`).
    MissingClaim {
        /// The claim name.
        claim: String,
    },
    /// An issuer is configured and the token's `iss` is missing or different.
    WrongIssuer {
        /// The configured issuer.
        expected: String,
        /// The token's `iss` rendered as JSON, if present.
        found: Option<String>,
    },
    /// An audience is configured and the token's `aud` is missing or does not contain it.
    WrongAudience {
        /// The configured audience.
        expected: String,
        /// The token's `aud` rendered as JSON, if present.
        found: Option<String>,
    },
    /// A claim has the wrong type or an invalid value. `message` names the
    /// claim path, e.g. `channels["presence.*"].subscribe must be a boolean`.
    InvalidClaims {
        /// What is wrong, naming the claim path.
        message: String,
    },
    /// The token is valid but may not be used for this action (wrong scope,
    /// bound to another connection, single-use token already used, ...).
    NotPermitted {
        /// Why, including what to do instead.
        message: String,
    },
    /// A configured public-key file could not be read or parsed.
    KeyFile {
        /// The file that failed.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// The auth configuration itself is unusable (e.g. no key at all).
    Config {
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A token could not be minted.
    Mint {
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl AuthError {
    /// Shorthand for an [`AuthError::InvalidClaims`] with the given message.
    pub fn invalid_claims(message: impl Into<String>) -> Self {
        AuthError::InvalidClaims {
            message: message.into(),
        }
    }

    /// Shorthand for an [`AuthError::NotPermitted`] with the given message.
    pub fn not_permitted(message: impl Into<String>) -> Self {
        AuthError::NotPermitted {
            message: message.into(),
        }
    }

    /// True if the token (not the server configuration) caused the error.
    pub fn is_token_error(&self) -> bool {
        !matches!(
            self,
            AuthError::KeyFile { .. } | AuthError::Config { .. } | AuthError::Mint { .. }
        )
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::MissingToken => f.write_str("missing token: pass ?token=JWT"),
            AuthError::Malformed { reason } => write!(
                f,
                "token is not a JWT (expected three base64url parts): {reason}; \
                 pass the token exactly as it was minted"
            ),
            AuthError::UnsupportedAlgorithm { alg } => write!(
                f,
                "token uses algorithm {alg}, which rollcall does not accept; sign it with \
                 HS256/HS384/HS512, RS256/RS384/RS512, PS256/PS384/PS512, ES256/ES384 or EdDSA"
            ),
            AuthError::NoKeyForAlgorithm { alg, missing } => {
                write!(f, "token uses algorithm {alg} but no {missing}")
            }
            AuthError::WrongType { typ } => write!(
                f,
                "token header has typ {typ:?} but it must be \"JWT\"; \
                 mint the token with typ \"JWT\" (or without typ)"
            ),
            AuthError::UnsupportedCritical { crit } => write!(
                f,
                "token header lists critical extensions {crit} that rollcall does not \
                 understand; mint the token without a crit header"
            ),
            AuthError::UnknownKeyId { kid, known } => {
                write!(f, "token's key id {kid:?} is unknown: {known}")
            }
            AuthError::BadSignature { tried } => write!(
                f,
                "token signature does not match {tried}; mint the token with the matching key"
            ),
            AuthError::Expired { exp } => write!(
                f,
                "token expired at {}; mint a new token",
                format_rfc3339(*exp)
            ),
            AuthError::NotYetValid { nbf } => write!(
                f,
                "token is not valid before {} (nbf); wait until then or mint a token \
                 without a future nbf",
                format_rfc3339(*nbf)
            ),
            AuthError::MissingClaim { claim } if claim == "exp" => f.write_str(
                "token has no exp claim; mint a token with an expiry \
                 (exp = seconds since 1970-01-01T00:00:00Z)",
            ),
            AuthError::MissingClaim { claim } if claim == "scope" => f.write_str(
                "token has no scope claim; mint it with \"scope\": \"connect\" \
                 (or \"subscribe\" / \"umd\")",
            ),
            AuthError::MissingClaim { claim } => write!(
                f,
                "token has no {claim} claim; mint a new token that includes it"
            ),
            AuthError::WrongIssuer { expected, found } => match found {
                Some(found) => write!(
                    f,
                    "token issuer (iss) {found} does not match the configured issuer \
                     {expected:?}; mint the token with \"iss\": {expected:?}"
                ),
                None => write!(
                    f,
                    "token has no iss claim but issuer {expected:?} is required; \
                     mint the token with \"iss\": {expected:?}"
                ),
            },
            AuthError::WrongAudience { expected, found } => match found {
                Some(found) => write!(
                    f,
                    "token audience (aud) {found} does not include the configured audience \
                     {expected:?}; mint the token with \"aud\": {expected:?}"
                ),
                None => write!(
                    f,
                    "token has no aud claim but audience {expected:?} is required; \
                     mint the token with \"aud\": {expected:?}"
                ),
            },
            AuthError::InvalidClaims { message } => write!(
                f,
                "invalid token claims: {message}; fix the claim and mint a new token"
            ),
            AuthError::NotPermitted { message } => f.write_str(message),
            AuthError::KeyFile { path, reason } => {
                write!(f, "cannot load JWT public key {}: {reason}", path.display())
            }
            AuthError::Config { message } => f.write_str(message),
            AuthError::Mint { message } => write!(f, "cannot mint token: {message}"),
        }
    }
}

impl std::error::Error for AuthError {}

/// Current time in whole seconds since the Unix epoch (0 if the clock is
/// before 1970).
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Formats seconds since the Unix epoch as an RFC 3339 UTC timestamp,
/// e.g. `2026-11-22T05:00:00Z`.
pub(crate) fn format_rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (H. Hinnant), valid for every day count a u64 of
    // seconds can produce; widen to i128 so nothing can overflow.
    let z = i128::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(1_795_323_600), "2026-11-22T05:00:00Z");
        assert_eq!(format_rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn expired_message_names_time_and_fix() {
        let e = AuthError::Expired { exp: 1_795_323_600 };
        assert_eq!(
            e.to_string(),
            "token expired at 2026-11-22T05:00:00Z; mint a new token"
        );
        assert!(e.is_token_error());
    }

    #[test]
    fn debug_redacts_secret() {
        let cfg = AuthConfig {
            jwt_secret: Some("hunter2".into()),
            ..AuthConfig::default()
        };
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let errors = [
            AuthError::MissingToken,
            AuthError::Malformed {
                reason: "found 2 parts".into(),
            },
            AuthError::MissingClaim {
                claim: "exp".into(),
            },
            AuthError::WrongIssuer {
                expected: "a".into(),
                found: None,
            },
            AuthError::WrongAudience {
                expected: "a".into(),
                found: Some("\"b\"".into()),
            },
            AuthError::invalid_claims("uid must be a string"),
        ];
        for e in errors {
            let msg = e.to_string();
            assert!(
                msg.contains("pass") || msg.contains("mint"),
                "no advice in {msg:?}"
            );
        }
    }
}
