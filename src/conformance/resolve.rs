//! Turning suite values into concrete values: `${var}` substitution,
//! templates, and value directives such as `{"$token": claims}`.
//!
//! # Format
//! ```text
//! "${name}"                      the variable's JSON value (type kept)
//! "room-${run}"                  interpolated into a string
//! "$${"                          a literal "${"
//! {"$token": {claims}, "secret": "s", "alg": "HS384", "typ": null, "tamper": true}
//!                                a signed JWT string; `exp` defaults to now + 1 h,
//!                                claims set to null are left out
//! {"$repeat": "x", "count": 990} "xxx...x"
//! {"$concat": ["a", "${b}", 1]}  "ab1" (non-strings as compact JSON)
//! {"$json": value}               the value serialized as a JSON string
//! {"$now": -60}                  Unix seconds now + offset
//! {"$template": "name", "arg": v}  the template body with `${arg}` bound
//! {"$literal": v}                v untouched
//! ```

use crate::conformance::matcher::is_directive_name;
use crate::conformance::suite::Template;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};

/// Case variables: captures, `set` values, repeat counters and built-ins.
pub type Vars = HashMap<String, Value>;

/// Whether a value is about to be sent (directives become data) or is an
/// expected pattern (matcher directives are kept for the matcher).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A frame, claims, a body or a name: everything becomes plain data.
    Send,
    /// An expected frame or body: matcher syntax survives resolution.
    Expect,
}

/// What resolution needs: the variables, templates and the JWT secret.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    /// Case variables.
    pub vars: &'a Vars,
    /// Templates of the suite file.
    pub templates: &'a BTreeMap<String, Template>,
    /// Secret for `$token` (HS*).
    pub jwt_secret: &'a str,
    /// Arguments of the template being expanded, looked up before `vars`.
    pub args: Option<&'a Map<String, Value>>,
}

impl<'a> Env<'a> {
    /// An environment without template arguments.
    pub fn new(
        vars: &'a Vars,
        templates: &'a BTreeMap<String, Template>,
        jwt_secret: &'a str,
    ) -> Self {
        Env {
            vars,
            templates,
            jwt_secret,
            args: None,
        }
    }

    /// Looks a name up; `true` in the result means it came from template
    /// arguments (which in `Expect` mode are patterns, not data).
    fn lookup(&self, name: &str) -> Option<(&'a Value, bool)> {
        if let Some(v) = self.args.and_then(|a| a.get(name)) {
            return Some((v, true));
        }
        self.vars.get(name).map(|v| (v, false))
    }
}

/// A value as it appears inside a larger string.
pub fn stringify(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Expands `${name}` in a string. A string that is exactly one `${name}`
/// becomes the variable's value with its JSON type.
pub fn interpolate(s: &str, env: &Env<'_>, mode: Mode) -> Result<Value, String> {
    if !s.contains('$') {
        return Ok(Value::String(s.to_string()));
    }
    if let Some(name) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}'))
        && is_name(name)
    {
        let (v, is_arg) = env
            .lookup(name)
            .ok_or_else(|| format!("unknown variable ${{{name}}}"))?;
        return Ok(protect(v.clone(), mode, is_arg));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut substituted = false;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(t) = tail.strip_prefix("$${") {
            out.push_str("${");
            substituted = true;
            rest = t;
        } else if let Some(t) = tail.strip_prefix("${") {
            let end = t
                .find('}')
                .ok_or_else(|| format!("unterminated ${{ in {s:?}"))?;
            let name = &t[..end];
            if !is_name(name) {
                return Err(format!("bad variable name {name:?} in {s:?}"));
            }
            let (v, _) = env
                .lookup(name)
                .ok_or_else(|| format!("unknown variable ${{{name}}}"))?;
            out.push_str(&stringify(v));
            substituted = true;
            rest = &t[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(protect(Value::String(out), mode, !substituted))
}

/// Interpolates a string and requires a string result.
pub fn interpolate_str(s: &str, env: &Env<'_>) -> Result<String, String> {
    Ok(stringify(&interpolate(s, env, Mode::Send)?))
}

/// In `Expect` mode a string that came from a variable (or an escape) and
/// looks like a matcher name must not be read as one: wrap it in
/// `$literal`.
fn protect(v: Value, mode: Mode, is_pattern: bool) -> Value {
    match (&v, mode, is_pattern) {
        (Value::String(s), Mode::Expect, false) if is_directive_name(s) => {
            let mut m = Map::new();
            m.insert("$literal".into(), v);
            Value::Object(m)
        }
        _ => v,
    }
}

fn is_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Resolves a value: substitutes variables everywhere (object keys too),
/// expands templates and value directives.
pub fn resolve(v: &Value, env: &Env<'_>, mode: Mode) -> Result<Value, String> {
    match v {
        Value::String(s) => interpolate(s, env, mode),
        Value::Array(items) => items
            .iter()
            .map(|x| resolve(x, env, mode))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(obj) => {
            if let Some(d) = obj.keys().find(|k| is_directive_name(k)) {
                return directive(d, obj, env, mode);
            }
            let mut out = Map::new();
            for (k, x) in obj {
                let key = stringify(&interpolate(k, env, Mode::Send)?);
                out.insert(key, resolve(x, env, mode)?);
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

fn only_keys(obj: &Map<String, Value>, d: &str, allowed: &[&str]) -> Result<(), String> {
    match obj
        .keys()
        .find(|k| *k != d && !allowed.contains(&k.as_str()))
    {
        Some(k) => Err(format!("unexpected key {k:?} next to {d:?}")),
        None => Ok(()),
    }
}

fn as_count(v: &Value, what: &str) -> Result<u64, String> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        .ok_or_else(|| format!("{what} must be a non-negative integer, got {v}"))
}

const MATCHERS: &[&str] = &[
    "$unordered",
    "$contains",
    "$len",
    "$regex",
    "$oneOf",
    "$not",
    "$partial",
    "$exact",
    "$capture",
    "$optional",
    "$prefixed",
];

fn directive(
    d: &str,
    obj: &Map<String, Value>,
    env: &Env<'_>,
    mode: Mode,
) -> Result<Value, String> {
    let arg = obj.get(d).unwrap_or(&Value::Null);
    match d {
        "$literal" => {
            only_keys(obj, d, &[])?;
            Ok(match mode {
                Mode::Send => arg.clone(),
                Mode::Expect => Value::Object(obj.clone()),
            })
        }
        "$token" => {
            only_keys(obj, d, &["secret", "alg", "typ", "tamper"])?;
            let claims = resolve(arg, env, Mode::Send)?;
            let Value::Object(claims) = claims else {
                return Err(format!("$token takes a claims object, got {claims}"));
            };
            let opt_str = |k: &str| -> Result<Option<String>, String> {
                match obj.get(k) {
                    None => Ok(None),
                    Some(v) => match resolve(v, env, Mode::Send)? {
                        Value::String(s) => Ok(Some(s)),
                        Value::Null => Ok(None),
                        other => Err(format!("$token {k} must be a string, got {other}")),
                    },
                }
            };
            let secret = opt_str("secret")?.unwrap_or_else(|| env.jwt_secret.to_string());
            let alg = opt_str("alg")?.unwrap_or_else(|| "HS256".into());
            let typ = match obj.get("typ") {
                None => Some("JWT".to_string()),
                Some(_) => opt_str("typ")?,
            };
            let tamper = obj.get("tamper").and_then(Value::as_bool).unwrap_or(false);
            let token = mint_token(&claims, &secret, &alg, typ, tamper, None)?;
            Ok(Value::String(token))
        }
        "$repeat" => {
            only_keys(obj, d, &["count"])?;
            let unit = stringify(&resolve(arg, env, Mode::Send)?);
            let count = resolve(obj.get("count").unwrap_or(&Value::Null), env, Mode::Send)?;
            let count = as_count(&count, "$repeat count")?;
            let count = usize::try_from(count).map_err(|e| e.to_string())?;
            if unit.len().saturating_mul(count) > 64 << 20 {
                return Err("$repeat result over 64 MiB".into());
            }
            Ok(protect(Value::String(unit.repeat(count)), mode, false))
        }
        "$concat" => {
            only_keys(obj, d, &[])?;
            let Value::Array(parts) = arg else {
                return Err("$concat takes an array".into());
            };
            let mut s = String::new();
            for p in parts {
                s.push_str(&stringify(&resolve(p, env, Mode::Send)?));
            }
            Ok(protect(Value::String(s), mode, false))
        }
        "$json" => {
            only_keys(obj, d, &[])?;
            let inner = resolve(arg, env, Mode::Send)?;
            Ok(protect(Value::String(inner.to_string()), mode, false))
        }
        "$now" => {
            only_keys(obj, d, &[])?;
            let off = resolve(arg, env, Mode::Send)?;
            let off = off
                .as_i64()
                .or_else(|| off.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| format!("$now takes an integer offset in seconds, got {off}"))?;
            Ok(Value::from(crate::conformance::matcher::now_unix() + off))
        }
        "$template" => {
            let name = interpolate_str(arg.as_str().unwrap_or_default(), env)?;
            let t = env
                .templates
                .get(&name)
                .ok_or_else(|| format!("unknown template {name:?}"))?;
            let mut args = t.params.clone();
            for (k, v) in obj.iter().filter(|(k, _)| *k != d) {
                if !t.params.contains_key(k) {
                    return Err(format!(
                        "template {name:?} has no parameter {k:?} (parameters: {})",
                        t.params.keys().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
                args.insert(k.clone(), resolve(v, env, mode)?);
            }
            let inner = Env {
                args: Some(&args),
                ..*env
            };
            resolve(&t.value, &inner, mode)
        }
        m if MATCHERS.contains(&m) => match mode {
            Mode::Send => Err(format!("matcher {m:?} is only allowed in expected values")),
            Mode::Expect => {
                let mut out = Map::new();
                for (k, x) in obj {
                    let v = if k == "$capture" || k == "$regex" || k == "$prefixed" {
                        // names and regexes: substitute, never wrap
                        interpolate(x.as_str().unwrap_or_default(), env, Mode::Send)
                            .map(|s| if x.is_string() { s } else { x.clone() })?
                    } else {
                        resolve(x, env, mode)?
                    };
                    out.insert(k.clone(), v);
                }
                Ok(Value::Object(out))
            }
        },
        other => Err(format!("unknown directive {other:?}")),
    }
}

/// Signs `claims` as a JWT. `exp` is set to now + 3600 unless present;
/// claims whose value is `null` are removed. `tamper` swaps the payload for
/// a modified one after signing, so the signature no longer matches.
/// `default_scope` fills `scope` when absent.
pub fn mint_token(
    claims: &Map<String, Value>,
    secret: &str,
    alg: &str,
    typ: Option<String>,
    tamper: bool,
    default_scope: Option<&str>,
) -> Result<String, String> {
    let mut claims = claims.clone();
    if !claims.contains_key("exp") {
        claims.insert(
            "exp".into(),
            Value::from(crate::conformance::matcher::now_unix() + 3600),
        );
    }
    if let Some(scope) = default_scope
        && !claims.contains_key("scope")
    {
        claims.insert("scope".into(), Value::from(scope));
    }
    claims.retain(|_, v| !v.is_null());
    let alg = match alg {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        other => return Err(format!("unsupported token alg {other:?} (HS256/384/512)")),
    };
    let mut header = Header::new(alg);
    header.typ = typ;
    let key = EncodingKey::from_secret(secret.as_bytes());
    let token = jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())?;
    if !tamper {
        return Ok(token);
    }
    // Re-sign a payload with one claim changed, then splice the original
    // signature onto it.
    let mut forged = claims.clone();
    let uid = forged.get("uid").map(stringify).unwrap_or_default();
    forged.insert("uid".into(), Value::from(format!("{uid}-tampered")));
    let other = jsonwebtoken::encode(&header, &forged, &key).map_err(|e| e.to_string())?;
    let sig = token.rsplit('.').next().unwrap_or_default();
    let mut parts = other.split('.');
    let (h, p) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    Ok(format!("{h}.{p}.{sig}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, decode};
    use serde_json::json;

    fn env_with<'a>(vars: &'a Vars, templates: &'a BTreeMap<String, Template>) -> Env<'a> {
        Env::new(vars, templates, "sekret")
    }

    fn vars() -> Vars {
        let mut v = Vars::new();
        v.insert("run".into(), json!("ab12cd34"));
        v.insert("n".into(), json!(3));
        v.insert("obj".into(), json!({"a": 1}));
        v.insert("dollar".into(), json!("$any"));
        v
    }

    #[test]
    fn interpolation() {
        let v = vars();
        let t = BTreeMap::new();
        let env = env_with(&v, &t);
        let r = |x: Value| resolve(&x, &env, Mode::Send);
        assert_eq!(r(json!("room-${run}")), Ok(json!("room-ab12cd34")));
        assert_eq!(r(json!("${n}")), Ok(json!(3)));
        assert_eq!(r(json!("n=${n} ${obj}")), Ok(json!("n=3 {\"a\":1}")));
        assert_eq!(
            r(json!({"presence.${run}": "${obj}"})),
            Ok(json!({"presence.ab12cd34": {"a": 1}}))
        );
        assert_eq!(r(json!("a$${b}$c$")), Ok(json!("a${b}$c$")));
        assert_eq!(r(json!("^x\\.${run}$")), Ok(json!("^x\\.ab12cd34$")));
        assert!(r(json!("${nope}")).is_err_and(|e| e.contains("unknown variable")));
        assert!(r(json!("${run")).is_err());
        // data values starting with $ are not matchers in patterns
        let e = resolve(&json!("${dollar}"), &env, Mode::Expect);
        assert_eq!(e, Ok(json!({"$literal": "$any"})));
        // but literal matcher keywords in the pattern stay
        assert_eq!(
            resolve(&json!("$any"), &env, Mode::Expect),
            Ok(json!("$any"))
        );
        // `${x}` keys are variables, not directives
        assert_eq!(
            r(json!({"${run}": {"${run}": 1}})),
            Ok(json!({"ab12cd34": {"ab12cd34": 1}}))
        );
        // an escaped `$${` is plain text, and so is `$5`
        assert_eq!(
            resolve(&json!("$${any}"), &env, Mode::Expect),
            Ok(json!("${any}"))
        );
        assert_eq!(resolve(&json!("$5"), &env, Mode::Expect), Ok(json!("$5")));
    }

    #[test]
    fn directives() {
        let v = vars();
        let t = BTreeMap::new();
        let env = env_with(&v, &t);
        let r = |x: Value| resolve(&x, &env, Mode::Send);
        assert_eq!(r(json!({"$repeat": "ab", "count": 3})), Ok(json!("ababab")));
        assert_eq!(
            r(json!({"$repeat": "x", "count": "${n}"})),
            Ok(json!("xxx"))
        );
        assert_eq!(
            r(json!({"$concat": ["c.", "${run}", ".", 1]})),
            Ok(json!("c.ab12cd34.1"))
        );
        assert_eq!(r(json!({"$json": {}})), Ok(json!("{}")));
        assert_eq!(r(json!({"$literal": "${run}"})), Ok(json!("${run}")));
        let now = r(json!({"$now": -60}))
            .ok()
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        assert!((now - (crate::conformance::matcher::now_unix() - 60)).abs() <= 1);
        assert!(r(json!({"$unordered": []})).is_err());
        assert!(r(json!({"$bogus": 1})).is_err());
        assert!(r(json!({"$repeat": "x", "count": 1, "extra": 1})).is_err());
        let p = resolve(
            &json!({"$capture": "${run}.id", "match": "$string"}),
            &env,
            Mode::Expect,
        );
        assert_eq!(
            p,
            Ok(json!({"$capture": "ab12cd34.id", "match": "$string"}))
        );
    }

    #[test]
    fn templates() {
        let v = vars();
        let mut t = BTreeMap::new();
        t.insert(
            "connected".to_string(),
            Template {
                params: json!({"uid": null, "umd": null}).as_object().cloned().unwrap_or_default(),
                value: json!({"event": "hotsock.connected", "meta": {"uid": "${uid}", "umd": "${umd}"}, "r": "${run}"}),
                comment: None,
            },
        );
        let env = env_with(&v, &t);
        let got = resolve(
            &json!({"$template": "connected", "uid": "Jim", "umd": "$any"}),
            &env,
            Mode::Expect,
        );
        assert_eq!(
            got,
            Ok(
                json!({"event": "hotsock.connected", "meta": {"uid": "Jim", "umd": "$any"}, "r": "ab12cd34"})
            )
        );
        let got = resolve(&json!({"$template": "connected"}), &env, Mode::Send);
        assert_eq!(
            got,
            Ok(
                json!({"event": "hotsock.connected", "meta": {"uid": null, "umd": null}, "r": "ab12cd34"})
            )
        );
        assert!(resolve(&json!({"$template": "connected", "x": 1}), &env, Mode::Send).is_err());
        assert!(resolve(&json!({"$template": "nope"}), &env, Mode::Send).is_err());
    }

    fn decode_claims(token: &str, secret: &str) -> Result<Map<String, Value>, String> {
        let mut val = Validation::new(Algorithm::HS256);
        val.required_spec_claims.clear();
        val.validate_exp = false;
        decode::<Map<String, Value>>(token, &DecodingKey::from_secret(secret.as_bytes()), &val)
            .map(|d| d.claims)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn tokens() {
        let v = vars();
        let t = BTreeMap::new();
        let env = env_with(&v, &t);
        let tok = resolve(
            &json!({"$token": {"scope": "subscribe", "uid": "u-${run}", "nbf": null}}),
            &env,
            Mode::Send,
        );
        let tok = tok
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let claims = decode_claims(&tok, "sekret");
        let claims = claims.unwrap_or_default();
        assert_eq!(claims.get("uid"), Some(&json!("u-ab12cd34")));
        assert_eq!(claims.get("scope"), Some(&json!("subscribe")));
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        assert!(exp > crate::conformance::matcher::now_unix() + 3500);
        assert!(!claims.contains_key("nbf"));

        let wrong = resolve(
            &json!({"$token": {"uid": "x"}, "secret": "other"}),
            &env,
            Mode::Send,
        );
        let wrong = wrong
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        assert!(decode_claims(&wrong, "sekret").is_err());
        assert!(decode_claims(&wrong, "other").is_ok());

        let tampered = resolve(
            &json!({"$token": {"uid": "x"}, "tamper": true}),
            &env,
            Mode::Send,
        );
        let tampered = tampered
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        assert!(decode_claims(&tampered, "sekret").is_err());

        let no_exp = mint_token(
            &Map::new(),
            "s",
            "HS256",
            Some("JWT".into()),
            false,
            Some("connect"),
        );
        let no_exp = no_exp.unwrap_or_default();
        let c = decode_claims(&no_exp, "s").unwrap_or_default();
        assert_eq!(c.get("scope"), Some(&json!("connect")));
        let mut m = Map::new();
        m.insert("exp".into(), Value::Null);
        m.insert("scope".into(), Value::Null);
        let bare = mint_token(&m, "s", "HS256", None, false, Some("connect")).unwrap_or_default();
        assert_eq!(decode_claims(&bare, "s"), Ok(Map::new()));
    }
}
