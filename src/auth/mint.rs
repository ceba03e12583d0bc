//! Minting tokens: for the `rollcall token` command, tests and conformance runs.

use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use serde_json::{Map, Value, json};

use super::{AuthError, now_secs};

/// Signs `claims` (a JSON object) as an HS256 JWT with header
/// `{"alg":"HS256","typ":"JWT"}`.
///
/// Note that `serde_json::Value` objects are sorted by key in this crate, so
/// the payload's keys come out sorted.
pub fn mint_hs256(secret: &str, claims: &Value) -> Result<String, AuthError> {
    if secret.is_empty() {
        return Err(mint_error(
            "the JWT secret is empty; pass a non-empty --jwt-secret",
        ));
    }
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()),
        claims,
    )
}

/// Signs `claims` with a PEM private key: `alg` is `RS256`..`RS512`,
/// `PS256`..`PS512`, `ES256`/`ES384` (PKCS#8 EC key) or `EdDSA`.
pub fn mint_pem(alg: &str, private_key_pem: &[u8], claims: &Value) -> Result<String, AuthError> {
    let algorithm = Algorithm::from_str(alg).map_err(|_| {
        mint_error(format!(
            "unknown algorithm {alg:?}; use RS256/384/512, PS256/384/512, ES256/384 or EdDSA"
        ))
    })?;
    let key = match algorithm.family() {
        AlgorithmFamily::Hmac => {
            return Err(mint_error(format!(
                "{alg} uses a shared secret, not a PEM key; use mint_hs256 / --jwt-secret"
            )));
        }
        AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(private_key_pem),
        AlgorithmFamily::Ec => EncodingKey::from_ec_pem(private_key_pem),
        AlgorithmFamily::Ed => EncodingKey::from_ed_pem(private_key_pem),
    }
    .map_err(|e| {
        mint_error(format!(
            "the private key is not a usable PEM key for {alg} ({e}); pass the matching \
             private key (EC keys must be PKCS#8: BEGIN PRIVATE KEY)"
        ))
    })?;
    sign(algorithm, &key, claims)
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> Result<String, AuthError> {
    if !claims.is_object() {
        return Err(mint_error(
            "the claims must be a JSON object such as {\"exp\": ..., \"scope\": \"connect\"}",
        ));
    }
    jsonwebtoken::encode(&Header::new(alg), claims, key).map_err(|e| {
        mint_error(format!(
            "signing failed ({e}); check that the key matches the algorithm"
        ))
    })
}

fn mint_error(message: impl Into<String>) -> AuthError {
    AuthError::Mint {
        message: message.into(),
    }
}

/// What `rollcall token` should put in a development token.
#[derive(Clone, Debug, Default)]
pub struct TokenRequest {
    /// `uid` (also copied to `sub` and `username` for the other front ends).
    pub uid: Option<String>,
    /// `umd` user metadata.
    pub umd: Option<Value>,
    /// Channel names or patterns to grant `subscribe` on.
    pub channels: Vec<String>,
    /// Lifetime: `exp = now + ttl` (rounded up to whole seconds).
    pub ttl: Duration,
    /// Also grant `messages: {"*": {"publish": true, "echo": false}}` on each channel.
    pub allow_messages: bool,
    /// Extra top-level claims, merged last (they override the generated ones).
    pub extra_claims: Map<String, Value>,
}

/// Builds the claims for `rollcall token`: `exp = now + ttl`, `iat = now`,
/// `scope: "connect"`, `uid`/`sub`/`username` (if a uid is given), `umd`, and
/// for each channel pattern `{"subscribe": true}` plus, with
/// `allow_messages`, `"messages": {"*": {"publish": true, "echo": false}}`.
/// `extra_claims` are merged last and override anything generated.
pub fn dev_token_claims(req: &TokenRequest) -> Value {
    let now = now_secs();
    let ttl = req
        .ttl
        .as_secs()
        .saturating_add(u64::from(req.ttl.subsec_nanos() > 0));
    let mut claims = Map::new();
    claims.insert("exp".into(), json!(now.saturating_add(ttl)));
    claims.insert("iat".into(), json!(now));
    claims.insert("scope".into(), json!("connect"));
    if let Some(uid) = &req.uid {
        claims.insert("uid".into(), json!(uid));
        claims.insert("sub".into(), json!(uid));
        claims.insert("username".into(), json!(uid));
    }
    if let Some(umd) = &req.umd {
        claims.insert("umd".into(), umd.clone());
    }
    if !req.channels.is_empty() {
        let mut channels = Map::new();
        for channel in &req.channels {
            let mut directives = Map::new();
            directives.insert("subscribe".into(), json!(true));
            if req.allow_messages {
                directives.insert(
                    "messages".into(),
                    json!({"*": {"publish": true, "echo": false}}),
                );
            }
            channels.insert(channel.clone(), Value::Object(directives));
        }
        claims.insert("channels".into(), Value::Object(channels));
    }
    for (k, v) in &req.extra_claims {
        claims.insert(k.clone(), v.clone());
    }
    Value::Object(claims)
}

/// Parses a duration such as `90s`, `15m`, `1h`, `2d`, `1w`, `500ms` or a
/// combination like `1h30m` / `9m30s` (humantime's syntax); a plain
/// number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("duration {s:?} is too large"));
    }
    humantime::parse_duration(t).map_err(|e| {
        format!(
            "invalid duration {s:?} ({e}); use whole numbers with a unit ms, s, m, h, d or w \
             (e.g. 90s, 15m, 1h, 2d, 1h30m)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthConfig, HotsockClaims, JwtVerifier};

    const SECRET: &str = "mint-test-secret";
    const RSA_PRIVATE: &str = include_str!("testdata/rsa_private.pem");
    const EC256_PRIVATE: &str = include_str!("testdata/ec256_private.pem");

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration(" 10 m "), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("9m30s"), Ok(Duration::from_secs(570)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        for bad in ["", "h", "-1s", "10x", "1h30", "s10"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("e.g. 90s"), "{bad}: {e}");
        }
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn dev_claims_shape() {
        let mut extra = Map::new();
        extra.insert("keepAlive".into(), json!(true));
        extra.insert("scope".into(), json!("connect subscribe"));
        let req = TokenRequest {
            uid: Some("jim".into()),
            umd: Some(json!({"name": "Jim"})),
            channels: vec!["presence.*".into(), "room.1".into()],
            ttl: Duration::from_secs(3600),
            allow_messages: true,
            extra_claims: extra,
        };
        let c = dev_token_claims(&req);
        let (exp, iat) = (c["exp"].as_u64(), c["iat"].as_u64());
        assert_eq!(exp.zip(iat).map(|(e, i)| e - i), Some(3600));
        assert!(iat.is_some_and(|i| i.abs_diff(now_secs()) <= 1));
        assert_eq!(c["uid"], "jim");
        assert_eq!(c["sub"], "jim");
        assert_eq!(c["username"], "jim");
        assert_eq!(c["umd"], json!({"name": "Jim"}));
        assert_eq!(c["scope"], "connect subscribe", "extra claims override");
        assert_eq!(c["keepAlive"], true);
        assert_eq!(
            c["channels"]["presence.*"],
            json!({"subscribe": true, "messages": {"*": {"publish": true, "echo": false}}})
        );

        let plain = dev_token_claims(&TokenRequest {
            channels: vec!["room.1".into()],
            ttl: Duration::from_millis(1500),
            ..TokenRequest::default()
        });
        assert_eq!(plain["channels"]["room.1"], json!({"subscribe": true}));
        assert!(plain.get("uid").is_none() && plain.get("sub").is_none());
        assert_eq!(plain["scope"], "connect");
        let (exp, iat) = (plain["exp"].as_u64(), plain["iat"].as_u64());
        assert_eq!(exp.zip(iat).map(|(e, i)| e - i), Some(2), "1.5 s rounds up");
        assert!(
            dev_token_claims(&TokenRequest::default())
                .get("channels")
                .is_none()
        );
    }

    #[test]
    fn minted_dev_token_verifies_and_parses() {
        let verifier = JwtVerifier::new(&AuthConfig {
            jwt_secret: Some(SECRET.into()),
            ..AuthConfig::default()
        })
        .expect("verifier");
        let req = TokenRequest {
            uid: Some("pam".into()),
            channels: vec!["presence.*".into()],
            ttl: Duration::from_secs(60),
            allow_messages: true,
            ..TokenRequest::default()
        };
        let token = mint_hs256(SECRET, &dev_token_claims(&req)).expect("mint");
        let claims: HotsockClaims = verifier.verify_hotsock(&token).expect("verify");
        claims.ensure_can_connect().expect("connect");
        assert!(claims.channels.can_subscribe("presence.lobby"));
        let perm = claims.channels.message_permission("presence.lobby", "chat");
        assert!(perm.publish && !perm.broadcast && !perm.echo);
    }

    #[test]
    fn mint_errors() {
        let e = mint_hs256("", &json!({"exp": 1})).unwrap_err();
        assert!(e.to_string().contains("--jwt-secret"), "{e}");
        let e = mint_hs256(SECRET, &json!("not an object")).unwrap_err();
        assert!(e.to_string().contains("JSON object"), "{e}");
        let e = mint_pem("XX999", b"", &json!({})).unwrap_err();
        assert!(e.to_string().contains("unknown algorithm"), "{e}");
        let e = mint_pem("HS256", b"", &json!({})).unwrap_err();
        assert!(e.to_string().contains("mint_hs256"), "{e}");
        let e = mint_pem("ES256", RSA_PRIVATE.as_bytes(), &json!({})).unwrap_err();
        assert!(e.to_string().contains("matching private key"), "{e}");
    }

    #[test]
    fn mint_pem_rs256_and_es256_verify() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/auth/testdata");
        let verifier = JwtVerifier::new(&AuthConfig {
            public_keys: vec![dir.join("rsa_public.pem"), dir.join("ec256_public.pem")],
            ..AuthConfig::default()
        })
        .expect("verifier");
        let claims = json!({"exp": now_secs() + 60, "scope": "connect"});
        for (alg, pem) in [
            ("RS256", RSA_PRIVATE),
            ("PS384", RSA_PRIVATE),
            ("ES256", EC256_PRIVATE),
        ] {
            let token = mint_pem(alg, pem.as_bytes(), &claims).expect("mint");
            assert!(verifier.verify(&token).is_ok(), "{alg}");
        }
    }
}
