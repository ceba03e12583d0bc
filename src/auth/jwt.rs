//! [`JwtVerifier`]: signature, header and registered-claim checks shared by
//! every wire protocol.
//!
//! The token is first taken apart here (three base64url parts, JSON header
//! and payload) so that errors can say precisely what is wrong; the signature
//! and the `exp`/`nbf`/`iss`/`aud` checks are then done by `jsonwebtoken`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use jsonwebtoken::errors::{Error as JwtError, ErrorKind};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::jwks::{Jwks, JwksKeys};
use super::{AuthConfig, AuthError};

/// Reads `--jwt-secrets-file`: a TOML table of key id = secret, e.g.
/// `"2026-12" = "…"`.
fn load_kid_secrets(path: &Path) -> Result<HashMap<String, DecodingKey>, AuthError> {
    let fail = |message: String| AuthError::Config { message };
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(format!(
            "cannot read the JWT secrets file {}: {e}",
            path.display()
        ))
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        fail(format!(
            "the JWT secrets file {} is not TOML ({}); write one `\"key-id\" = \"secret\"` a line",
            path.display(),
            e.message()
        ))
    })?;
    table
        .into_iter()
        .map(|(kid, secret)| match secret {
            toml::Value::String(s) if !s.is_empty() => {
                Ok((kid, DecodingKey::from_secret(s.as_bytes())))
            }
            _ => Err(fail(format!(
                "the JWT secrets file {}: key {kid:?} must be a non-empty string",
                path.display()
            ))),
        })
        .collect()
}

/// Largest accepted [`AuthConfig::leeway_secs`] (one day).
const MAX_LEEWAY_SECS: u64 = 86_400;
/// Longer input is rejected before any decoding work.
const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// Verifies JWTs against the configured secret and public keys.
///
/// Cheap to clone (the keys live behind an [`Arc`]) and `Send + Sync`, so one
/// verifier can be shared by every connection and front end.
///
/// Keys can be replaced while the server runs ([`JwtVerifier::reload`]:
/// SIGHUP or `POST /api/admin/reload-keys`): the key files are read again,
/// and tokens already being verified finish with the keys they started
/// with.
#[derive(Clone, Debug)]
pub struct JwtVerifier {
    keys: Arc<RwLock<Arc<Keys>>>,
    config: Arc<AuthConfig>,
    jwks: Option<Arc<Jwks>>,
}

impl JwtVerifier {
    /// Builds a verifier from `cfg`, reading every key file (see
    /// [`Keys::new`] for what fails).
    pub fn new(cfg: &AuthConfig) -> Result<Self, AuthError> {
        Ok(JwtVerifier {
            keys: Arc::new(RwLock::new(Arc::new(Keys::new(cfg)?))),
            config: Arc::new(cfg.clone()),
            jwks: None,
        })
    }

    /// This verifier, also taking the keys of `jwks` (by `kid`).
    pub fn with_jwks(mut self, jwks: Arc<Jwks>) -> Self {
        self.jwks = Some(jwks);
        self
    }

    fn current(&self) -> Arc<Keys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the key files again (`--jwt-public-key`, `--jwt-secrets-file`)
    /// and uses the new keys from now on. On an error the keys in use stay.
    /// Returns what the verifier now accepts.
    pub fn reload(&self) -> Result<String, AuthError> {
        let fresh = Arc::new(Keys::new(&self.config)?);
        let described = fresh.describe();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(described)
    }

    /// Verifies the signature (the header's `alg` must match a configured
    /// key; with a `kid`, the key of that id), the header (`typ`, if
    /// present, must be `JWT`; no `crit`), `exp` (required), `nbf` (if
    /// present), and `iss`/`aud` if configured. Returns the full claims
    /// object.
    ///
    /// Surrounding whitespace is ignored; an empty token is
    /// [`AuthError::MissingToken`].
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, AuthError> {
        self.verify_raw(token).map(|v| v.claims)
    }

    /// Like [`verify`](Self::verify), then deserializes the claims into `T`.
    /// A shape mismatch is an [`AuthError::InvalidClaims`].
    pub fn verify_as<T: serde::de::DeserializeOwned>(&self, token: &str) -> Result<T, AuthError> {
        let claims = self.verify(token)?;
        serde_json::from_value(Value::Object(claims)).map_err(|e| {
            AuthError::invalid_claims(format!("the claims do not have the expected shape ({e})"))
        })
    }

    /// One line describing what this verifier accepts, for startup logs.
    pub fn describe(&self) -> String {
        let mut out = self.current().describe();
        if let Some(jwks) = &self.jwks {
            out.push_str(&format!(", keys of the JWKS at {} by kid", jwks.url()));
        }
        out
    }

    /// Verifies `token` and also returns its decoded payload bytes.
    pub(crate) fn verify_raw(&self, token: &str) -> Result<Verified, AuthError> {
        let jwks = self.jwks.as_ref().map(|j| (j.keys(), j.as_ref()));
        self.current()
            .verify_raw(token, jwks.as_ref().map(|(k, j)| (k, *j)))
    }
}

/// One set of keys.
#[derive(Debug)]
struct Keys {
    inner: Inner,
}

#[derive(Debug)]
struct Inner {
    secret: Option<DecodingKey>,
    /// `--jwt-secrets-file`: HMAC secrets by key id, for tokens whose
    /// header names one (`kid`).
    kid_secrets: HashMap<String, DecodingKey>,
    public_keys: Vec<PublicKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
}

#[derive(Debug)]
struct PublicKey {
    path: PathBuf,
    kind: KeyKind,
    key: DecodingKey,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    fn accepts(self, alg: Algorithm) -> bool {
        match self {
            KeyKind::Rsa => alg.family() == AlgorithmFamily::Rsa,
            KeyKind::EcP256 => alg == Algorithm::ES256,
            KeyKind::EcP384 => alg == Algorithm::ES384,
            KeyKind::Ed25519 => alg == Algorithm::EdDSA,
        }
    }

    fn name(self) -> &'static str {
        match self {
            KeyKind::Rsa => "RSA",
            KeyKind::EcP256 => "EC P-256",
            KeyKind::EcP384 => "EC P-384",
            KeyKind::Ed25519 => "Ed25519",
        }
    }

    fn for_algorithm(alg: Algorithm) -> Option<KeyKind> {
        match alg.family() {
            AlgorithmFamily::Hmac => None,
            AlgorithmFamily::Rsa => Some(KeyKind::Rsa),
            AlgorithmFamily::Ec if alg == Algorithm::ES384 => Some(KeyKind::EcP384),
            AlgorithmFamily::Ec => Some(KeyKind::EcP256),
            AlgorithmFamily::Ed => Some(KeyKind::Ed25519),
        }
    }
}

/// A verified token: its claims plus the raw payload JSON (which keeps the
/// claim order that `serde_json::Map` loses).
pub(crate) struct Verified {
    pub(crate) claims: Map<String, Value>,
    pub(crate) payload: Vec<u8>,
}

impl Keys {
    /// Builds a verifier from `cfg`, reading every PEM file in
    /// [`AuthConfig::public_keys`].
    ///
    /// Fails if a key file is unreadable or not a supported public key (the
    /// error names the file), if the secret is empty, if no key is configured
    /// at all, or if the leeway is over one day. An empty `issuer` or
    /// `audience` counts as unset.
    pub fn new(cfg: &AuthConfig) -> Result<Self, AuthError> {
        if cfg.leeway_secs > MAX_LEEWAY_SECS {
            return Err(AuthError::Config {
                message: format!(
                    "JWT leeway of {} s is too large; use at most {MAX_LEEWAY_SECS} s",
                    cfg.leeway_secs
                ),
            });
        }
        let secret = match cfg.jwt_secret.as_deref() {
            Some("") => {
                return Err(AuthError::Config {
                    message: "the JWT secret is empty; pass a non-empty --jwt-secret".into(),
                });
            }
            Some(s) => Some(DecodingKey::from_secret(s.as_bytes())),
            None => None,
        };
        let public_keys = cfg
            .public_keys
            .iter()
            .map(|p| load_public_key(p))
            .collect::<Result<Vec<_>, _>>()?;
        let kid_secrets = match &cfg.secrets_file {
            Some(path) => load_kid_secrets(path)?,
            None => HashMap::new(),
        };
        if secret.is_none()
            && public_keys.is_empty()
            && kid_secrets.is_empty()
            && cfg.jwks_url.is_none()
        {
            return Err(AuthError::Config {
                message: "no JWT verification key is configured; pass --jwt-secret SECRET \
                          and/or --jwt-public-key FILE.pem"
                    .into(),
            });
        }
        let non_empty = |s: &Option<String>| s.as_ref().filter(|s| !s.is_empty()).cloned();
        Ok(Keys {
            inner: Inner {
                secret,
                kid_secrets,
                public_keys,
                issuer: non_empty(&cfg.issuer),
                audience: non_empty(&cfg.audience),
                leeway: cfg.leeway_secs,
            },
        })
    }

    /// One line describing what this verifier accepts, for startup logs,
    /// e.g. `HS256/HS384/HS512 (secret), RS*/PS* (RSA key: /etc/jwt.pem)`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.inner.secret.is_some() {
            parts.push("HS256/HS384/HS512 (secret)".to_owned());
        }
        if !self.inner.kid_secrets.is_empty() {
            parts.push(format!("HS* by kid ({})", self.known_kids()));
        }
        for (kind, algs) in [
            (KeyKind::Rsa, "RS*/PS*"),
            (KeyKind::EcP256, "ES256"),
            (KeyKind::EcP384, "ES384"),
            (KeyKind::Ed25519, "EdDSA"),
        ] {
            let files: Vec<String> = self
                .keys_of(kind)
                .map(|k| k.path.display().to_string())
                .collect();
            if !files.is_empty() {
                parts.push(format!(
                    "{algs} ({} key: {})",
                    kind.name(),
                    files.join(", ")
                ));
            }
        }
        let mut out = parts.join(", ");
        if let Some(iss) = &self.inner.issuer {
            out.push_str(&format!("; iss must be {iss:?}"));
        }
        if let Some(aud) = &self.inner.audience {
            out.push_str(&format!("; aud must include {aud:?}"));
        }
        out
    }

    fn keys_of(&self, kind: KeyKind) -> impl Iterator<Item = &PublicKey> {
        self.inner
            .public_keys
            .iter()
            .filter(move |k| k.kind == kind)
    }

    /// Verifies `token` (with the keys of a JWKS, if any) and also
    /// returns its decoded payload bytes.
    fn verify_raw(
        &self,
        token: &str,
        jwks: Option<(&JwksKeys, &Jwks)>,
    ) -> Result<Verified, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(malformed(format!(
                "it is {} bytes long, more than the {MAX_TOKEN_BYTES} allowed",
                token.len()
            )));
        }
        let parts: Vec<&str> = token.split('.').collect();
        let [header_b64, payload_b64, signature_b64] = parts[..] else {
            return Err(malformed(format!(
                "found {} part{}",
                parts.len(),
                if parts.len() == 1 { "" } else { "s" }
            )));
        };
        let header = decode_json_part(header_b64, "header")?;
        let payload =
            b64url_decode(payload_b64).ok_or_else(|| malformed("the payload is not base64url"))?;
        match serde_json::from_slice::<Value>(&payload) {
            Ok(Value::Object(_)) => {}
            Ok(_) => return Err(malformed("the payload is not a JSON object")),
            Err(e) => return Err(malformed(format!("the payload is not valid JSON ({e})"))),
        }
        let alg = check_header(&header)?;
        if signature_b64.is_empty() {
            return Err(malformed(
                "the signature part is empty (unsigned tokens are not accepted)",
            ));
        }
        if b64url_decode(signature_b64).is_none() {
            return Err(malformed("the signature is not base64url"));
        }
        let kid = header.get("kid").and_then(Value::as_str);
        let candidates = self.candidates(alg, kid, jwks)?;
        let validation = self.validation(alg);
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation) {
                Ok(data) => {
                    return Ok(Verified {
                        claims: data.claims,
                        payload,
                    });
                }
                Err(e) if is_key_mismatch(&e) => continue,
                Err(e) => return Err(self.map_error(&e, &payload)),
            }
        }
        Err(AuthError::BadSignature {
            tried: self.tried_description(alg),
        })
    }

    fn candidates<'a>(
        &'a self,
        alg: Algorithm,
        kid: Option<&str>,
        jwks: Option<(&'a JwksKeys, &Jwks)>,
    ) -> Result<Vec<&'a DecodingKey>, AuthError> {
        // A public-key token naming a kid of the JWKS: that key only.
        if let (Some(_), Some(kid), Some((keys, set))) = (KeyKind::for_algorithm(alg), kid, jwks) {
            match keys.get(kid) {
                Some(key) => return Ok(vec![key]),
                None => {
                    set.want_refresh();
                    if self.inner.public_keys.iter().all(|k| !k.kind.accepts(alg)) {
                        return Err(AuthError::UnknownKeyId {
                            kid: kid.to_string(),
                            known: format!(
                                "the JWKS at {} has no such key (it is fetched again within {} s: a new key of the provider is accepted then)",
                                set.url(),
                                super::jwks::MIN_REFETCH.as_secs()
                            ),
                        });
                    }
                }
            }
        }
        let keys: Vec<&DecodingKey> = match KeyKind::for_algorithm(alg) {
            None if !self.inner.kid_secrets.is_empty() && kid.is_some() => {
                let kid = kid.unwrap_or_default();
                match self.inner.kid_secrets.get(kid) {
                    Some(key) => vec![key],
                    None => {
                        return Err(AuthError::UnknownKeyId {
                            kid: kid.to_string(),
                            known: format!(
                                "the secrets file has {}; the key may have been retired, get a new token",
                                self.known_kids()
                            ),
                        });
                    }
                }
            }
            None => self.inner.secret.iter().collect(),
            Some(_) => self
                .inner
                .public_keys
                .iter()
                .filter(|k| k.kind.accepts(alg))
                .map(|k| &k.key)
                .collect(),
        };
        if !keys.is_empty() {
            return Ok(keys);
        }
        let missing = match KeyKind::for_algorithm(alg) {
            None => "shared secret is configured (--jwt-secret)".to_owned(),
            Some(_) if self.inner.public_keys.is_empty() => {
                "public key is configured (--jwt-public-key)".to_owned()
            }
            Some(kind) => format!(
                "{} public key is configured (--jwt-public-key)",
                kind.name()
            ),
        };
        Err(AuthError::NoKeyForAlgorithm {
            alg: alg_name(alg).to_owned(),
            missing,
        })
    }

    fn known_kids(&self) -> String {
        let mut kids: Vec<&str> = self.inner.kid_secrets.keys().map(String::as_str).collect();
        kids.sort();
        kids.join(", ")
    }

    fn tried_description(&self, alg: Algorithm) -> String {
        match KeyKind::for_algorithm(alg) {
            None => "the configured secret".to_owned(),
            Some(kind) => match self.keys_of(kind).count() {
                1 => format!("the configured {} public key", kind.name()),
                n => format!("any of the {n} configured {} public keys", kind.name()),
            },
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.inner.leeway;
        v.validate_exp = true;
        v.validate_nbf = true;
        // jsonwebtoken only compares iss/aud when the claim is present, so a
        // configured issuer/audience also makes the claim required.
        let mut required = vec!["exp"];
        if let Some(iss) = &self.inner.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        match &self.inner.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                v.validate_aud = true;
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        v
    }

    fn map_error(&self, e: &JwtError, payload: &[u8]) -> AuthError {
        let claims: Map<String, Value> = serde_json::from_slice(payload).unwrap_or_default();
        let numeric = |name: &str| claims.get(name).and_then(numeric_date).unwrap_or(0);
        let rendered = |name: &str| claims.get(name).map(Value::to_string);
        match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired {
                exp: numeric("exp"),
            },
            ErrorKind::ImmatureSignature => AuthError::NotYetValid {
                nbf: numeric("nbf"),
            },
            // A present but unparsable iss/aud is also reported as missing.
            ErrorKind::MissingRequiredClaim(c) if c == "iss" => AuthError::WrongIssuer {
                expected: self.inner.issuer.clone().unwrap_or_default(),
                found: rendered("iss").filter(|v| v != "null"),
            },
            ErrorKind::MissingRequiredClaim(c) if c == "aud" => AuthError::WrongAudience {
                expected: self.inner.audience.clone().unwrap_or_default(),
                found: rendered("aud").filter(|v| v != "null"),
            },
            // jsonwebtoken reports an unparsable exp as missing.
            ErrorKind::MissingRequiredClaim(c)
                if claims.get(c.as_str()).is_some_and(|v| !v.is_null()) =>
            {
                AuthError::invalid_claims(format!(
                    "{c} must be a NumericDate (seconds since 1970-01-01T00:00:00Z), got {}",
                    rendered(c).unwrap_or_default()
                ))
            }
            ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim { claim: c.clone() },
            ErrorKind::InvalidClaimFormat(c) => AuthError::invalid_claims(format!(
                "{c} must be a NumericDate (seconds since 1970-01-01T00:00:00Z), got {}",
                rendered(c).unwrap_or_else(|| "nothing".into())
            )),
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer {
                expected: self.inner.issuer.clone().unwrap_or_default(),
                found: rendered("iss"),
            },
            ErrorKind::InvalidAudience => AuthError::WrongAudience {
                expected: self.inner.audience.clone().unwrap_or_default(),
                found: rendered("aud"),
            },
            ErrorKind::Json(err) => malformed(format!("a part is not valid JSON ({err})")),
            ErrorKind::Base64(err) => malformed(format!("a part is not base64url ({err})")),
            _ => malformed(format!("rejected by the JWT library ({e})")),
        }
    }
}

/// Errors that mean "this key did not verify the signature"; the next key of
/// the same family is tried.
fn is_key_mismatch(e: &JwtError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::InvalidSignature
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat
    )
}

fn malformed(reason: impl Into<String>) -> AuthError {
    AuthError::Malformed {
        reason: reason.into(),
    }
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        _ => "an unknown algorithm",
    }
}

/// A JSON number usable as a NumericDate (non-negative; fractions are
/// truncated).
pub(crate) fn numeric_date(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f as u64)
    })
}

fn decode_json_part(part: &str, what: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes =
        b64url_decode(part).ok_or_else(|| malformed(format!("the {what} is not base64url")))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(malformed(format!("the {what} is not a JSON object"))),
        Err(e) => Err(malformed(format!("the {what} is not valid JSON ({e})"))),
    }
}

/// Checks `alg`, `typ` and `crit` of a decoded header and returns the algorithm.
fn check_header(header: &Map<String, Value>) -> Result<Algorithm, AuthError> {
    let alg = match header.get("alg") {
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(AuthError::UnsupportedAlgorithm {
                alg: other.to_string(),
            });
        }
        None => return Err(malformed("the header has no alg")),
    };
    let alg = Algorithm::from_str(alg)
        .map_err(|_| AuthError::UnsupportedAlgorithm { alg: alg.clone() })?;
    match header.get("typ") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("JWT") => {}
        Some(Value::String(t)) => return Err(AuthError::WrongType { typ: t.clone() }),
        Some(other) => {
            return Err(AuthError::WrongType {
                typ: other.to_string(),
            });
        }
    }
    match header.get("crit") {
        None | Some(Value::Null) => {}
        Some(crit) => {
            return Err(AuthError::UnsupportedCritical {
                crit: crit.to_string(),
            });
        }
    }
    Ok(alg)
}

fn load_public_key(path: &Path) -> Result<PublicKey, AuthError> {
    let fail = |reason: String| AuthError::KeyFile {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| {
        fail(format!(
            "cannot read the file ({e}); check the path and permissions"
        ))
    })?;
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("PRIVATE KEY-----") {
        return Err(fail(
            "the file holds a private key; configure the public key instead \
             (openssl pkey -in private.pem -pubout -out public.pem)"
                .into(),
        ));
    }
    if !text.contains("-----BEGIN") {
        return Err(fail(
            "the file is not PEM (no -----BEGIN line); pass a PEM public key \
             (-----BEGIN PUBLIC KEY-----)"
                .into(),
        ));
    }
    let unsupported = || {
        fail(
            "not a supported public key; use an RSA, EC P-256/P-384 or Ed25519 public key \
             in PEM (openssl pkey -in private.pem -pubout)"
                .into(),
        )
    };
    let (kind, key) = if let Ok(key) = DecodingKey::from_ec_pem(&bytes) {
        let curve = match Jwk::from_decoding_key(&key, None).map(|j| j.algorithm) {
            Ok(AlgorithmParameters::EllipticCurve(p)) => Some(p.curve),
            _ => None,
        };
        match curve {
            Some(EllipticCurve::P256) => (KeyKind::EcP256, key),
            Some(EllipticCurve::P384) => (KeyKind::EcP384, key),
            _ => {
                return Err(fail(
                    "EC key on an unsupported curve; only P-256 (ES256) and P-384 (ES384) \
                     are supported"
                        .into(),
                ));
            }
        }
    } else if let Ok(key) = DecodingKey::from_rsa_pem(&bytes) {
        Jwk::from_decoding_key(&key, None).map_err(|_| unsupported())?;
        (KeyKind::Rsa, key)
    } else if let Ok(key) = DecodingKey::from_ed_pem(&bytes) {
        Jwk::from_decoding_key(&key, None).map_err(|_| unsupported())?;
        (KeyKind::Ed25519, key)
    } else {
        return Err(unsupported());
    };
    Ok(PublicKey {
        path: path.to_owned(),
        kind,
        key,
    })
}

/// Strict unpadded base64url decoding (RFC 7515 §2). `None` on any invalid
/// character, padding or impossible length.
pub(crate) fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        Some(u32::from(v))
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4 + 1);
    for chunk in s.as_bytes().chunks(4) {
        let mut acc: u32 = 0;
        for &c in chunk {
            acc = (acc << 6) | val(c)?;
        }
        match chunk.len() {
            4 => out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]),
            3 => {
                acc <<= 6;
                out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8]);
            }
            2 => {
                acc <<= 12;
                out.push((acc >> 16) as u8);
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::auth::{mint_hs256, now_secs};
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    pub(crate) const SECRET: &str = "test-secret-with-enough-entropy-0123456789";
    const RSA_PRIVATE: &str = include_str!("testdata/rsa_private.pem");
    const RSA2_PRIVATE: &str = include_str!("testdata/rsa2_private.pem");
    const EC256_PRIVATE: &str = include_str!("testdata/ec256_private.pem");
    const EC384_PRIVATE: &str = include_str!("testdata/ec384_private.pem");
    const ED_PRIVATE: &str = include_str!("testdata/ed25519_private.pem");

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/auth/testdata")
            .join(name)
    }

    pub(crate) fn b64url_encode(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
            let acc = (b(0) << 16) | (b(1) << 8) | b(2);
            let sextet = |shift: u32| char::from(A[((acc >> shift) & 63) as usize]);
            out.push(sextet(18));
            out.push(sextet(12));
            if chunk.len() > 1 {
                out.push(sextet(6));
            }
            if chunk.len() > 2 {
                out.push(sextet(0));
            }
        }
        out
    }

    fn secret_cfg() -> AuthConfig {
        AuthConfig {
            jwt_secret: Some(SECRET.into()),
            ..AuthConfig::default()
        }
    }

    fn verifier(cfg: &AuthConfig) -> JwtVerifier {
        match JwtVerifier::new(cfg) {
            Ok(v) => v,
            Err(e) => panic!("verifier: {e}"),
        }
    }

    fn claims() -> Value {
        json!({"exp": now_secs() + 3600, "scope": "connect", "uid": "jim"})
    }

    fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, key).expect("sign")
    }

    fn sign_hs(alg: Algorithm, secret: &str, claims: &Value) -> String {
        sign(alg, &EncodingKey::from_secret(secret.as_bytes()), claims)
    }

    fn rsa_key(pem: &str) -> EncodingKey {
        EncodingKey::from_rsa_pem(pem.as_bytes()).expect("rsa key")
    }

    fn ec_key(pem: &str) -> EncodingKey {
        EncodingKey::from_ec_pem(pem.as_bytes()).expect("ec key")
    }

    /// A token with an arbitrary header, HS256-signed with `secret`.
    fn with_header(header: &Value, claims: &Value, secret: &str) -> String {
        let msg = format!(
            "{}.{}",
            b64url_encode(header.to_string().as_bytes()),
            b64url_encode(claims.to_string().as_bytes())
        );
        let key = EncodingKey::from_secret(secret.as_bytes());
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &key, Algorithm::HS256).expect("sign");
        format!("{msg}.{sig}")
    }

    fn err(v: &JwtVerifier, token: &str) -> AuthError {
        match v.verify(token) {
            Ok(c) => panic!("token unexpectedly accepted: {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn verifier_is_clone_send_sync() {
        fn assert_traits<T: Clone + Send + Sync + 'static>() {}
        assert_traits::<JwtVerifier>();
    }

    #[test]
    fn base64url_roundtrip() {
        for data in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            &[0xff, 0xfe],
        ] {
            assert_eq!(b64url_decode(&b64url_encode(data)).as_deref(), Some(data));
        }
        assert_eq!(b64url_decode("A"), None);
        assert_eq!(b64url_decode("AA=="), None);
        assert_eq!(b64url_decode("A+/A"), None);
    }

    #[test]
    fn hs256_384_512_roundtrip() {
        let v = verifier(&secret_cfg());
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let got = v.verify(&sign_hs(alg, SECRET, &claims())).expect("valid");
            assert_eq!(got.get("uid"), Some(&json!("jim")), "{alg:?}");
        }
        let minted = mint_hs256(SECRET, &claims()).expect("mint");
        assert!(v.verify(&minted).is_ok());
        // Surrounding whitespace (e.g. a trailing newline) is tolerated.
        assert!(v.verify(&format!(" {minted}\n")).is_ok());
    }

    #[test]
    fn rsa_rs256_ps256_and_key_rotation() {
        let v = verifier(&AuthConfig {
            public_keys: vec![fixture("rsa_public.pem"), fixture("rsa2_public.pem")],
            ..AuthConfig::default()
        });
        for alg in [Algorithm::RS256, Algorithm::RS512, Algorithm::PS256] {
            let token = sign(alg, &rsa_key(RSA_PRIVATE), &claims());
            assert!(v.verify(&token).is_ok(), "{alg:?}");
        }
        // Signed by the second configured key: every RSA key is tried.
        let token = sign(Algorithm::RS256, &rsa_key(RSA2_PRIVATE), &claims());
        assert!(v.verify(&token).is_ok());

        // Only key 1 configured: a key-2 token fails with a signature error.
        let only1 = verifier(&AuthConfig {
            public_keys: vec![fixture("rsa_public.pem")],
            ..AuthConfig::default()
        });
        let e = err(&only1, &token);
        assert_eq!(
            e.to_string(),
            "token signature does not match the configured RSA public key; \
             mint the token with the matching key"
        );
    }

    #[test]
    fn ec_es256_es384() {
        let v = verifier(&AuthConfig {
            public_keys: vec![fixture("ec256_public.pem")],
            ..AuthConfig::default()
        });
        let token = sign(Algorithm::ES256, &ec_key(EC256_PRIVATE), &claims());
        assert_eq!(
            v.verify(&token).expect("es256").get("scope"),
            Some(&json!("connect"))
        );

        let es384 = sign(Algorithm::ES384, &ec_key(EC384_PRIVATE), &claims());
        let e = err(&v, &es384);
        assert!(matches!(e, AuthError::NoKeyForAlgorithm { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("no EC P-384 public key is configured"),
            "{e}"
        );

        let both = verifier(&AuthConfig {
            public_keys: vec![fixture("ec256_public.pem"), fixture("ec384_public.pem")],
            ..AuthConfig::default()
        });
        assert!(both.verify(&es384).is_ok());
        assert!(both.verify(&token).is_ok());
    }

    #[test]
    fn eddsa() {
        let v = verifier(&AuthConfig {
            public_keys: vec![fixture("ed25519_public.pem")],
            ..AuthConfig::default()
        });
        let key = EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).expect("ed key");
        assert!(v.verify(&sign(Algorithm::EdDSA, &key, &claims())).is_ok());
    }

    #[test]
    fn secret_and_public_keys_together() {
        let v = verifier(&AuthConfig {
            jwt_secret: Some(SECRET.into()),
            public_keys: vec![fixture("rsa_public.pem"), fixture("ec256_public.pem")],
            ..AuthConfig::default()
        });
        assert!(
            v.verify(&sign_hs(Algorithm::HS256, SECRET, &claims()))
                .is_ok()
        );
        assert!(
            v.verify(&sign(Algorithm::RS256, &rsa_key(RSA_PRIVATE), &claims()))
                .is_ok()
        );
        assert!(
            v.verify(&sign(Algorithm::ES256, &ec_key(EC256_PRIVATE), &claims()))
                .is_ok()
        );
        let d = v.describe();
        assert!(
            d.contains("HS256") && d.contains("RSA") && d.contains("ES256"),
            "{d}"
        );
    }

    #[test]
    fn expired_token() {
        let v = verifier(&secret_cfg());
        let exp = now_secs() - 10;
        let token = sign_hs(
            Algorithm::HS256,
            SECRET,
            &json!({"exp": exp, "scope": "connect"}),
        );
        let e = err(&v, &token);
        assert_eq!(e, AuthError::Expired { exp });
        assert_eq!(
            e.to_string(),
            format!(
                "token expired at {}; mint a new token",
                crate::auth::format_rfc3339(exp)
            )
        );
    }

    #[test]
    fn leeway_allows_small_skew() {
        let v = verifier(&AuthConfig {
            leeway_secs: 60,
            ..secret_cfg()
        });
        let token = sign_hs(Algorithm::HS256, SECRET, &json!({"exp": now_secs() - 10}));
        assert!(v.verify(&token).is_ok());
        let too_big = JwtVerifier::new(&AuthConfig {
            leeway_secs: 10 * 86_400,
            ..secret_cfg()
        });
        assert!(matches!(too_big, Err(AuthError::Config { .. })));
    }

    #[test]
    fn exp_required_and_numeric() {
        let v = verifier(&secret_cfg());
        let e = err(
            &v,
            &sign_hs(Algorithm::HS256, SECRET, &json!({"scope": "connect"})),
        );
        assert_eq!(
            e,
            AuthError::MissingClaim {
                claim: "exp".into()
            }
        );
        assert!(e.to_string().contains("mint a token with an expiry"));

        let e = err(
            &v,
            &sign_hs(Algorithm::HS256, SECRET, &json!({"exp": "tomorrow"})),
        );
        assert!(matches!(e, AuthError::InvalidClaims { .. }), "{e:?}");
        assert!(e.to_string().contains("exp must be a NumericDate"), "{e}");

        let e = err(
            &v,
            &sign_hs(
                Algorithm::HS256,
                SECRET,
                &json!({"exp": now_secs() + 60, "nbf": "soon"}),
            ),
        );
        assert!(e.to_string().contains("nbf must be a NumericDate"), "{e}");
    }

    #[test]
    fn nbf_in_future_rejected_past_accepted() {
        let v = verifier(&secret_cfg());
        let now = now_secs();
        let future = sign_hs(
            Algorithm::HS256,
            SECRET,
            &json!({"exp": now + 7200, "nbf": now + 3600}),
        );
        let e = err(&v, &future);
        assert_eq!(e, AuthError::NotYetValid { nbf: now + 3600 });
        assert!(e.to_string().contains("not valid before"), "{e}");
        let past = sign_hs(
            Algorithm::HS256,
            SECRET,
            &json!({"exp": now + 60, "nbf": now - 60}),
        );
        assert!(v.verify(&past).is_ok());
    }

    #[test]
    fn tampered_payload_rejected() {
        let v = verifier(&secret_cfg());
        let token = sign_hs(Algorithm::HS256, SECRET, &claims());
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims();
        forged["uid"] = json!("admin");
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64url_encode(forged.to_string().as_bytes()),
            parts[2]
        );
        let e = err(&v, &tampered);
        assert!(matches!(e, AuthError::BadSignature { .. }), "{e:?}");
    }

    #[test]
    fn wrong_secret_rejected() {
        let v = verifier(&secret_cfg());
        let e = err(&v, &sign_hs(Algorithm::HS256, "another-secret", &claims()));
        assert_eq!(
            e.to_string(),
            "token signature does not match the configured secret; \
             mint the token with the matching key"
        );
    }

    #[test]
    fn algorithm_without_configured_key() {
        let rsa_only = verifier(&AuthConfig {
            public_keys: vec![fixture("rsa_public.pem")],
            ..AuthConfig::default()
        });
        let e = err(&rsa_only, &sign_hs(Algorithm::HS256, SECRET, &claims()));
        assert_eq!(
            e.to_string(),
            "token uses algorithm HS256 but no shared secret is configured (--jwt-secret)"
        );

        let secret_only = verifier(&secret_cfg());
        let e = err(
            &secret_only,
            &sign(Algorithm::RS256, &rsa_key(RSA_PRIVATE), &claims()),
        );
        assert_eq!(
            e.to_string(),
            "token uses algorithm RS256 but no public key is configured (--jwt-public-key)"
        );

        let ec_only = verifier(&AuthConfig {
            public_keys: vec![fixture("ec256_public.pem")],
            ..AuthConfig::default()
        });
        let e = err(
            &ec_only,
            &sign(Algorithm::RS256, &rsa_key(RSA_PRIVATE), &claims()),
        );
        assert!(
            e.to_string().contains("no RSA public key is configured"),
            "{e}"
        );
    }

    #[test]
    fn alg_none_and_unknown_rejected() {
        let v = verifier(&secret_cfg());
        let body = b64url_encode(claims().to_string().as_bytes());
        let none = format!("{}.{body}.", b64url_encode(br#"{"alg":"none"}"#));
        let e = err(&v, &none);
        assert!(
            matches!(&e, AuthError::UnsupportedAlgorithm { alg } if alg == "none"),
            "{e:?}"
        );
        assert!(e.to_string().contains("sign it with HS256"), "{e}");
        let es512 = with_header(&json!({"alg": "ES512"}), &claims(), SECRET);
        assert!(matches!(
            err(&v, &es512),
            AuthError::UnsupportedAlgorithm { .. }
        ));
    }

    #[test]
    fn typ_must_be_jwt() {
        let v = verifier(&secret_cfg());
        let jws = with_header(&json!({"alg": "HS256", "typ": "JWS"}), &claims(), SECRET);
        let e = err(&v, &jws);
        assert_eq!(e, AuthError::WrongType { typ: "JWS".into() });
        assert!(e.to_string().contains("must be \"JWT\""), "{e}");
        for header in [
            json!({"alg": "HS256"}),
            json!({"alg": "HS256", "typ": "JWT"}),
            json!({"alg": "HS256", "typ": "jwt"}),
        ] {
            assert!(
                v.verify(&with_header(&header, &claims(), SECRET)).is_ok(),
                "{header}"
            );
        }
        let crit = with_header(
            &json!({"alg": "HS256", "crit": ["b64"], "b64": false}),
            &claims(),
            SECRET,
        );
        assert!(matches!(
            err(&v, &crit),
            AuthError::UnsupportedCritical { .. }
        ));
    }

    #[test]
    fn garbage_input() {
        let v = verifier(&secret_cfg());
        assert_eq!(err(&v, ""), AuthError::MissingToken);
        assert_eq!(err(&v, "   "), AuthError::MissingToken);
        assert_eq!(err(&v, "").to_string(), "missing token: pass ?token=JWT");
        for bad in [
            "abc",
            "a.b",
            "a.b.c.d",
            "!!!.x.y",
            "e30.e30.",
            "bm90IGpzb24.e30.c2ln",
            "e30.bm90IGpzb24.c2ln",
            "W10.e30.c2ln",
            "e30.W10.c2ln",
            "e30.e30.c2ln",
            &"a".repeat(70_000),
        ] {
            let e = err(&v, bad);
            assert!(matches!(e, AuthError::Malformed { .. }), "{bad}: {e:?}");
            assert!(
                e.to_string()
                    .starts_with("token is not a JWT (expected three base64url parts)"),
                "{e}"
            );
        }
    }

    #[test]
    fn issuer_checked_only_if_configured() {
        let with_iss = |iss: Value| {
            let mut c = claims();
            c["iss"] = iss;
            sign_hs(Algorithm::HS256, SECRET, &c)
        };
        let v = verifier(&AuthConfig {
            issuer: Some("https://issuer.example".into()),
            ..secret_cfg()
        });
        assert!(v.verify(&with_iss(json!("https://issuer.example"))).is_ok());
        let e = err(&v, &with_iss(json!("evil")));
        assert!(matches!(&e, AuthError::WrongIssuer { found: Some(f), .. } if f == "\"evil\""));
        assert!(e.to_string().contains("mint the token with \"iss\""), "{e}");
        let e = err(&v, &sign_hs(Algorithm::HS256, SECRET, &claims()));
        assert!(
            matches!(e, AuthError::WrongIssuer { found: None, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("token has no iss claim"), "{e}");
        let e = err(&v, &with_iss(json!(5)));
        assert!(matches!(&e, AuthError::WrongIssuer { found: Some(f), .. } if f == "5"));

        let open = verifier(&secret_cfg());
        assert!(open.verify(&with_iss(json!("anyone"))).is_ok());
    }

    #[test]
    fn audience_string_or_array() {
        let with_aud = |aud: Value| {
            let mut c = claims();
            c["aud"] = aud;
            sign_hs(Algorithm::HS256, SECRET, &c)
        };
        let v = verifier(&AuthConfig {
            audience: Some("rollcall".into()),
            ..secret_cfg()
        });
        assert!(v.verify(&with_aud(json!("rollcall"))).is_ok());
        assert!(v.verify(&with_aud(json!(["other", "rollcall"]))).is_ok());
        let e = err(&v, &with_aud(json!("other")));
        assert!(matches!(e, AuthError::WrongAudience { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("does not include the configured audience")
        );
        assert!(matches!(
            err(&v, &with_aud(json!(["a", "b"]))),
            AuthError::WrongAudience { .. }
        ));
        assert!(matches!(
            err(&v, &sign_hs(Algorithm::HS256, SECRET, &claims())),
            AuthError::WrongAudience { found: None, .. }
        ));

        // Not configured: any aud is accepted.
        let open = verifier(&secret_cfg());
        assert!(open.verify(&with_aud(json!("someone-else"))).is_ok());
        assert!(open.verify(&with_aud(json!(["x", "y"]))).is_ok());
    }

    #[test]
    fn verify_as_typed() {
        #[derive(serde::Deserialize)]
        struct Minimal {
            uid: String,
            exp: u64,
        }
        let v = verifier(&secret_cfg());
        let token = sign_hs(Algorithm::HS256, SECRET, &claims());
        let m: Minimal = v.verify_as(&token).expect("typed");
        assert_eq!(m.uid, "jim");
        assert!(m.exp > now_secs());
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct NeedsRoom {
            room: String,
        }
        let e = v.verify_as::<NeedsRoom>(&token).unwrap_err();
        assert!(matches!(e, AuthError::InvalidClaims { .. }), "{e:?}");
    }

    #[test]
    fn config_errors_name_the_problem() {
        let e = JwtVerifier::new(&AuthConfig::default()).unwrap_err();
        assert!(e.to_string().contains("--jwt-secret"), "{e}");
        assert!(!e.is_token_error());

        let e = JwtVerifier::new(&AuthConfig {
            jwt_secret: Some(String::new()),
            ..AuthConfig::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");

        let missing = fixture("does_not_exist.pem");
        let e = JwtVerifier::new(&AuthConfig {
            public_keys: vec![missing.clone()],
            ..AuthConfig::default()
        })
        .unwrap_err();
        assert!(matches!(&e, AuthError::KeyFile { path, .. } if *path == missing));
        assert!(e.to_string().contains("does_not_exist.pem"), "{e}");

        let e = JwtVerifier::new(&AuthConfig {
            public_keys: vec![fixture("rsa_private.pem")],
            ..AuthConfig::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("rsa_private.pem"), "{e}");
        assert!(e.to_string().contains("private key"), "{e}");

        let e = JwtVerifier::new(&AuthConfig {
            public_keys: vec![fixture("README.md")],
            ..AuthConfig::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("README.md"), "{e}");
        assert!(e.to_string().contains("not PEM"), "{e}");
    }
}
