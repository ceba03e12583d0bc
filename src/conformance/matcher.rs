//! Matching received JSON against an expected pattern, with captures.
//!
//! A pattern is plain JSON where a few strings and single-key objects are
//! matchers instead of literal values. Everything else must be equal.
//!
//! # Format
//! ```text
//! "$any"              any value (the key must be present)
//! "$string" "$number" "$integer" "$bool" "$object" "$array" "$null"
//! "$nonempty"         a non-empty string
//! "$ulid"             26 chars of Crockford base32, canonical upper case
//! "$rfc3339"          an RFC 3339 timestamp ("2026-11-22T10:00:00Z")
//! "$rfc3339_future"   an RFC 3339 timestamp later than now
//! "$absent"           (object member only) the key must not be present
//! {"$optional": P}    (object member only) absent, or present and matching P
//! {"$literal": V}     exactly V, no matcher interpretation inside
//! {"$unordered": [P..]}  an array of the same length, in any order
//! {"$contains": [P..]}   an array with, for each P, some element matching it
//! {"$len": N}         an array, object or string of N elements/chars
//! {"$regex": "re"}    a string matching the regular expression
//! {"$oneOf": [P..]}   matches at least one of the patterns
//! {"$not": P}         does not match P
//! {"$partial": {..}}  this object may have keys the pattern does not list
//! {"$exact": P}       P and everything below it is matched exactly
//! {"$capture": "name", "match": P}  match P (default "$any"), store the value
//! {"$prefixed": "42/chat,", "json": P}  a string: this prefix, then JSON matching P
//!                     (Engine.IO / Socket.IO packets such as `42/chat,["EVT",{..}]`)
//! ```
//! Objects are matched exactly by default: a key the pattern does not list
//! fails the match, so the absence of `meta` is checked without ceremony.

use serde_json::{Map, Value};
use std::fmt;

/// Values captured by `{"$capture": ...}` during one successful match,
/// in the order they were captured.
pub type Captures = Vec<(String, Value)>;

/// Why a value did not match a pattern: where (a JSON path such as
/// `$.data.members[1].uid`) and what differed.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// JSON path of the value that failed, `$` being the whole value.
    pub path: String,
    /// Human-readable explanation.
    pub message: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {}: {}", self.path, self.message)
    }
}

/// How objects without an explicit `$partial`/`$exact` are compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MatchOptions {
    /// When true, objects may carry keys the pattern does not list, at
    /// every level.
    pub partial: bool,
}

/// Matches `actual` against `pattern` and returns the captures on success.
pub fn match_value(
    pattern: &Value,
    actual: &Value,
    opts: MatchOptions,
) -> Result<Captures, Mismatch> {
    let mut caps = Vec::new();
    matches(pattern, actual, "$", opts.partial, &mut caps)?;
    Ok(caps)
}

/// Matches a list of patterns against a list of values in any order: each
/// value is used once. Returns, on success, the captures of every pair.
pub fn match_unordered(
    patterns: &[Value],
    actuals: &[Value],
    opts: MatchOptions,
) -> Result<Captures, Mismatch> {
    let mut caps = Vec::new();
    unordered(patterns, actuals, "$", opts.partial, &mut caps)?;
    Ok(caps)
}

const KEYWORDS: &[&str] = &[
    "$any",
    "$string",
    "$number",
    "$integer",
    "$bool",
    "$object",
    "$array",
    "$null",
    "$nonempty",
    "$ulid",
    "$rfc3339",
    "$rfc3339_future",
    "$absent",
];

fn fail(path: &str, message: impl Into<String>) -> Result<(), Mismatch> {
    Err(Mismatch {
        path: path.to_string(),
        message: message.into(),
    })
}

/// A short rendering of a value for error messages.
pub fn brief(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}... ({} bytes)", &s[..cut], s.len())
    } else {
        s
    }
}

/// True for matcher and directive names: `$` followed by a letter
/// (`$any`, `$unordered`). `${var}` and `$5` are not names.
pub fn is_directive_name(s: &str) -> bool {
    s.strip_prefix('$')
        .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_alphabetic()))
}

/// Is this object a matcher directive (it has a `$`-prefixed key)?
fn directive(obj: &Map<String, Value>) -> Option<&str> {
    obj.keys()
        .find(|k| is_directive_name(k))
        .map(std::string::String::as_str)
}

fn matches(
    pattern: &Value,
    actual: &Value,
    path: &str,
    partial: bool,
    caps: &mut Captures,
) -> Result<(), Mismatch> {
    match pattern {
        Value::String(s) if is_directive_name(s) => keyword(s, actual, path),
        Value::Object(obj) => match directive(obj) {
            Some(d) => object_directive(d, obj, actual, path, partial, caps),
            None => object(obj, actual, path, partial, caps),
        },
        Value::Array(items) => {
            let Value::Array(acts) = actual else {
                return fail(path, format!("expected an array, got {}", brief(actual)));
            };
            if items.len() != acts.len() {
                return fail(
                    path,
                    format!(
                        "expected an array of {} elements, got {}: {}",
                        items.len(),
                        acts.len(),
                        brief(actual)
                    ),
                );
            }
            for (i, (p, a)) in items.iter().zip(acts).enumerate() {
                matches(p, a, &format!("{path}[{i}]"), partial, caps)?;
            }
            Ok(())
        }
        Value::Number(_) => {
            if numbers_equal(pattern, actual) {
                Ok(())
            } else {
                fail(path, format!("expected {pattern}, got {}", brief(actual)))
            }
        }
        _ => {
            if pattern == actual {
                Ok(())
            } else {
                fail(
                    path,
                    format!("expected {}, got {}", brief(pattern), brief(actual)),
                )
            }
        }
    }
}

fn numbers_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        _ => false,
    }
}

fn keyword(k: &str, actual: &Value, path: &str) -> Result<(), Mismatch> {
    let ok = match k {
        "$any" => true,
        "$string" => actual.is_string(),
        "$number" => actual.is_number(),
        "$integer" => actual.is_i64() || actual.is_u64(),
        "$bool" => actual.is_boolean(),
        "$object" => actual.is_object(),
        "$array" => actual.is_array(),
        "$null" => actual.is_null(),
        "$nonempty" => actual.as_str().is_some_and(|s| !s.is_empty()),
        "$ulid" => actual.as_str().is_some_and(is_ulid),
        "$rfc3339" => actual.as_str().and_then(parse_rfc3339).is_some(),
        "$rfc3339_future" => actual
            .as_str()
            .and_then(parse_rfc3339)
            .is_some_and(|t| t > now_unix()),
        "$absent" => {
            return fail(
                path,
                format!("expected the key to be absent, got {}", brief(actual)),
            );
        }
        _ => {
            return fail(
                path,
                format!(
                    "unknown matcher {k:?} (known: {}; write {{\"$literal\": ...}} for a literal string starting with $)",
                    KEYWORDS.join(" ")
                ),
            );
        }
    };
    if ok {
        Ok(())
    } else {
        fail(path, format!("expected {k}, got {}", brief(actual)))
    }
}

fn object(
    obj: &Map<String, Value>,
    actual: &Value,
    path: &str,
    partial: bool,
    caps: &mut Captures,
) -> Result<(), Mismatch> {
    object_level(obj, actual, path, partial, partial, caps)
}

/// Matches one object level. `level_partial` applies to this object's own
/// keys; `inherited` is what nested values get.
fn object_level(
    obj: &Map<String, Value>,
    actual: &Value,
    path: &str,
    level_partial: bool,
    inherited: bool,
    caps: &mut Captures,
) -> Result<(), Mismatch> {
    let Value::Object(act) = actual else {
        return fail(path, format!("expected an object, got {}", brief(actual)));
    };
    for (key, pat) in obj {
        let sub = format!("{path}.{key}");
        match (pat, act.get(key)) {
            (Value::String(s), None) if s == "$absent" => {}
            (Value::String(s), Some(v)) if s == "$absent" => {
                return fail(&sub, format!("expected no such key, got {}", brief(v)));
            }
            (Value::Object(o), got) if o.contains_key("$optional") => {
                if let Some(v) = got {
                    let inner = o.get("$optional").unwrap_or(&Value::Null);
                    matches(inner, v, &sub, inherited, caps)?;
                }
            }
            (_, None) => return fail(&sub, "missing key"),
            (_, Some(v)) => matches(pat, v, &sub, inherited, caps)?,
        }
    }
    if !level_partial {
        let extra: Vec<&str> = act
            .keys()
            .filter(|k| !obj.contains_key(*k))
            .map(std::string::String::as_str)
            .collect();
        if !extra.is_empty() {
            return fail(
                path,
                format!(
                    "unexpected key(s) {} (object: {})",
                    extra.join(", "),
                    brief(actual)
                ),
            );
        }
    }
    Ok(())
}

fn object_directive(
    d: &str,
    obj: &Map<String, Value>,
    actual: &Value,
    path: &str,
    partial: bool,
    caps: &mut Captures,
) -> Result<(), Mismatch> {
    let arg = obj.get(d).unwrap_or(&Value::Null);
    let allowed: &[&str] = match d {
        "$capture" => &["match"],
        "$prefixed" => &["json"],
        _ => &[],
    };
    if let Some(extra) = obj
        .keys()
        .find(|k| *k != d && !allowed.contains(&k.as_str()))
    {
        return fail(
            path,
            format!("bad pattern: unexpected key {extra:?} next to {d:?}"),
        );
    }
    match d {
        "$literal" => {
            if arg == actual || numbers_equal(arg, actual) {
                Ok(())
            } else {
                fail(
                    path,
                    format!("expected {}, got {}", brief(arg), brief(actual)),
                )
            }
        }
        "$unordered" => {
            let Value::Array(pats) = arg else {
                return fail(path, "bad pattern: $unordered takes an array");
            };
            let Value::Array(acts) = actual else {
                return fail(path, format!("expected an array, got {}", brief(actual)));
            };
            unordered(pats, acts, path, partial, caps)
        }
        "$contains" => {
            let Value::Array(pats) = arg else {
                return fail(path, "bad pattern: $contains takes an array");
            };
            let Value::Array(acts) = actual else {
                return fail(path, format!("expected an array, got {}", brief(actual)));
            };
            for (i, p) in pats.iter().enumerate() {
                let found = acts.iter().find_map(|a| {
                    let mut c = Vec::new();
                    matches(p, a, path, partial, &mut c).ok().map(|()| c)
                });
                match found {
                    Some(c) => caps.extend(c),
                    None => {
                        return fail(
                            path,
                            format!(
                                "no element matches $contains[{i}] {} in {}",
                                brief(p),
                                brief(actual)
                            ),
                        );
                    }
                }
            }
            Ok(())
        }
        "$len" => {
            let want = arg
                .as_u64()
                .or_else(|| arg.as_str().and_then(|s| s.parse().ok()));
            let Some(want) = want else {
                return fail(path, "bad pattern: $len takes a non-negative integer");
            };
            let got = match actual {
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                Value::String(s) => s.chars().count(),
                _ => {
                    return fail(
                        path,
                        format!("expected something with a length, got {}", brief(actual)),
                    );
                }
            };
            if got as u64 == want {
                Ok(())
            } else {
                fail(path, format!("expected length {want}, got {got}"))
            }
        }
        "$regex" => {
            let Some(re) = arg.as_str() else {
                return fail(path, "bad pattern: $regex takes a string");
            };
            let re = match regex_lite::Regex::new(re) {
                Ok(r) => r,
                Err(e) => return fail(path, format!("bad pattern: invalid $regex: {e}")),
            };
            match actual.as_str() {
                Some(s) if re.is_match(s) => Ok(()),
                _ => fail(
                    path,
                    format!("expected a string matching /{re}/, got {}", brief(actual)),
                ),
            }
        }
        "$oneOf" => {
            let Value::Array(pats) = arg else {
                return fail(path, "bad pattern: $oneOf takes an array");
            };
            let mut reasons = Vec::new();
            for p in pats {
                let mut c = Vec::new();
                match matches(p, actual, path, partial, &mut c) {
                    Ok(()) => {
                        caps.extend(c);
                        return Ok(());
                    }
                    Err(m) => reasons.push(m.message),
                }
            }
            fail(
                path,
                format!("matched none of $oneOf: {}", reasons.join("; ")),
            )
        }
        "$not" => {
            let mut c = Vec::new();
            match matches(arg, actual, path, partial, &mut c) {
                Ok(()) => fail(
                    path,
                    format!("expected not {}, got {}", brief(arg), brief(actual)),
                ),
                Err(_) => Ok(()),
            }
        }
        "$partial" => {
            let Value::Object(inner) = arg else {
                return fail(path, "bad pattern: $partial takes an object");
            };
            object_level(inner, actual, path, true, partial, caps)
        }
        "$exact" => matches(arg, actual, path, false, caps),
        "$capture" => {
            let Some(name) = arg.as_str() else {
                return fail(path, "bad pattern: $capture takes a variable name");
            };
            let any = Value::String("$any".into());
            let inner = obj.get("match").unwrap_or(&any);
            matches(inner, actual, path, partial, caps)?;
            caps.push((name.to_string(), actual.clone()));
            Ok(())
        }
        "$optional" => fail(
            path,
            "bad pattern: $optional is only allowed as an object member",
        ),
        "$prefixed" => {
            let Some(prefix) = arg.as_str() else {
                return fail(path, "bad pattern: $prefixed takes a string");
            };
            let rest = match actual.as_str().map(|s| s.strip_prefix(prefix)) {
                Some(Some(rest)) => rest,
                _ => {
                    return fail(
                        path,
                        format!(
                            "expected a string starting with {prefix:?}, got {}",
                            brief(actual)
                        ),
                    );
                }
            };
            let inner: Value = match serde_json::from_str(rest) {
                Ok(v) => v,
                Err(e) => {
                    return fail(
                        path,
                        format!(
                            "the text after {prefix:?} is not JSON ({e}): {}",
                            brief(actual)
                        ),
                    );
                }
            };
            let any = Value::String("$any".into());
            let pat = obj.get("json").unwrap_or(&any);
            matches(pat, &inner, &format!("{path}<{prefix}>"), partial, caps)
        }
        other => fail(path, format!("bad pattern: unknown directive {other:?}")),
    }
}

/// Finds a one-to-one assignment of patterns to actual values (augmenting
/// paths over the compatibility matrix), then replays the chosen pairs to
/// collect captures.
fn unordered(
    pats: &[Value],
    acts: &[Value],
    path: &str,
    partial: bool,
    caps: &mut Captures,
) -> Result<(), Mismatch> {
    if pats.len() != acts.len() {
        return fail(
            path,
            format!(
                "expected {} elements in any order, got {}: {}",
                pats.len(),
                acts.len(),
                brief(&Value::Array(acts.to_vec()))
            ),
        );
    }
    let n = pats.len();
    let mut ok = vec![vec![false; n]; n];
    for (i, p) in pats.iter().enumerate() {
        for (j, a) in acts.iter().enumerate() {
            let mut c = Vec::new();
            ok[i][j] = matches(p, a, path, partial, &mut c).is_ok();
        }
        if !ok[i].iter().any(|b| *b) {
            return fail(
                path,
                format!(
                    "no element matches pattern {} (elements: {})",
                    brief(p),
                    brief(&Value::Array(acts.to_vec()))
                ),
            );
        }
    }
    // owner[j] = pattern index assigned to actual j
    let mut owner: Vec<Option<usize>> = vec![None; n];
    fn augment(i: usize, ok: &[Vec<bool>], seen: &mut [bool], owner: &mut [Option<usize>]) -> bool {
        for j in 0..ok.len() {
            if ok[i][j] && !seen[j] {
                seen[j] = true;
                let free = match owner[j] {
                    None => true,
                    Some(k) => augment(k, ok, seen, owner),
                };
                if free {
                    owner[j] = Some(i);
                    return true;
                }
            }
        }
        false
    }
    for (i, pat) in pats.iter().enumerate() {
        let mut seen = vec![false; n];
        if !augment(i, &ok, &mut seen, &mut owner) {
            return fail(
                path,
                format!(
                    "no one-to-one assignment: pattern {} has no element left (elements: {})",
                    brief(pat),
                    brief(&Value::Array(acts.to_vec()))
                ),
            );
        }
    }
    for (j, o) in owner.iter().enumerate() {
        if let Some(i) = o {
            matches(&pats[*i], &acts[j], &format!("{path}[{j}]"), partial, caps)?;
        }
    }
    Ok(())
}

/// True for a canonical ULID: 26 Crockford base32 characters, upper case,
/// the first at most `7` (48-bit timestamp).
pub fn is_ulid(s: &str) -> bool {
    const ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    s.len() == 26
        && s.chars().all(|c| ALPHABET.contains(c))
        && s.as_bytes().first().is_some_and(|b| *b <= b'7')
}

/// Current Unix time in seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Parses an RFC 3339 timestamp (`2026-02-26T22:52:34Z`,
/// `2026-02-26T22:52:34.123+01:00`) into Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || !matches!(rb[0], b'+' | b'-') || rb[3] != b':' {
                return None;
            }
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if rb[0] == b'+' { o } else { -o }
        }
    };
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(p: Value, a: Value) -> Captures {
        match match_value(&p, &a, MatchOptions::default()) {
            Ok(c) => c,
            Err(m) => panic!("expected match, got {m}"),
        }
    }

    fn no(p: Value, a: Value) -> Mismatch {
        match match_value(&p, &a, MatchOptions::default()) {
            Ok(_) => panic!("expected mismatch for {p} vs {a}"),
            Err(m) => m,
        }
    }

    #[test]
    fn literals_and_exact_objects() {
        ok(
            json!({"a": 1, "b": [true, null, "x"]}),
            json!({"b": [true, null, "x"], "a": 1}),
        );
        ok(json!(1), json!(1.0));
        let m = no(json!({"a": 1}), json!({"a": 1, "meta": {}}));
        assert_eq!(m.path, "$");
        assert!(m.message.contains("meta"), "{m}");
        let m = no(json!({"a": {"b": [1, 2]}}), json!({"a": {"b": [1, 3]}}));
        assert_eq!(m.path, "$.a.b[1]");
        let m = no(json!({"a": 1, "b": 2}), json!({"a": 1}));
        assert_eq!(m.path, "$.b");
        assert_eq!(m.message, "missing key");
        no(json!([1, 2]), json!([1, 2, 3]));
        no(json!("x"), json!(null));
    }

    #[test]
    fn type_keywords() {
        ok(json!("$any"), json!(null));
        ok(json!("$string"), json!(""));
        no(json!("$string"), json!(1));
        ok(json!("$number"), json!(1.5));
        ok(json!("$integer"), json!(-3));
        no(json!("$integer"), json!(1.5));
        ok(json!("$bool"), json!(false));
        ok(json!("$object"), json!({}));
        ok(json!("$array"), json!([]));
        ok(json!("$null"), json!(null));
        ok(json!("$nonempty"), json!("a"));
        no(json!("$nonempty"), json!(""));
        let m = no(json!("$strin"), json!("x"));
        assert!(m.message.contains("unknown matcher"), "{m}");
        ok(json!({"$literal": "$any"}), json!("$any"));
        no(json!({"$literal": "$any"}), json!("other"));
        ok(json!({"$literal": {"$x": 1}}), json!({"$x": 1}));
    }

    #[test]
    fn ulid() {
        ok(json!("$ulid"), json!("01J66BCPSDHYZQ38BW5M357YX5"));
        no(json!("$ulid"), json!("01J66BCPSDHYZQ38BW5M357YX"));
        no(json!("$ulid"), json!("01J66BCPSDHYZQ38BW5M357YXU"));
        no(json!("$ulid"), json!("81J66BCPSDHYZQ38BW5M357YX5"));
        no(json!("$ulid"), json!("01j66bcpsdhyzq38bw5m357yx5"));
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-10-13T19:09:23Z"), Some(1_728_846_563));
        assert_eq!(
            parse_rfc3339("2024-10-13T21:09:23.5+02:00"),
            Some(1_728_846_563)
        );
        assert_eq!(parse_rfc3339("2024-10-13 19:09:23Z"), None);
        assert_eq!(parse_rfc3339("2024-13-13T19:09:23Z"), None);
        assert_eq!(parse_rfc3339("2024-10-13T19:09:23"), None);
        assert_eq!(parse_rfc3339("2024-10-13T19:09:23.Z"), None);
        ok(json!("$rfc3339"), json!("2026-02-26T22:52:34Z"));
        no(json!("$rfc3339"), json!("yesterday"));
        ok(json!("$rfc3339_future"), json!("2999-01-01T00:00:00Z"));
        no(json!("$rfc3339_future"), json!("2001-01-01T00:00:00Z"));
    }

    #[test]
    fn absent_and_optional() {
        ok(json!({"a": 1, "meta": "$absent"}), json!({"a": 1}));
        let m = no(json!({"meta": "$absent"}), json!({"meta": null}));
        assert_eq!(m.path, "$.meta");
        ok(json!({"c": {"$optional": "x"}}), json!({}));
        ok(json!({"c": {"$optional": "x"}}), json!({"c": "x"}));
        no(json!({"c": {"$optional": "x"}}), json!({"c": "y"}));
    }

    #[test]
    fn partial_modes() {
        let p = json!({"event": "e", "data": {"x": 1}});
        let a = json!({"event": "e", "data": {"x": 1, "y": 2}, "id": "z"});
        no(p.clone(), a.clone());
        assert!(match_value(&p, &a, MatchOptions { partial: true }).is_ok());
        // $partial relaxes one level only
        no(json!({"$partial": {"data": {"x": 1}}}), a.clone());
        ok(
            json!({"$partial": {"data": {"$partial": {"x": 1}}}}),
            a.clone(),
        );
        // $exact tightens under a partial step
        let e = match_value(
            &json!({"data": {"$exact": {"x": 1}}}),
            &a,
            MatchOptions { partial: true },
        );
        assert!(e.is_err());
    }

    #[test]
    fn unordered_members() {
        let members = json!([{"uid": "Jim", "umd": null}, {"uid": "Pam", "umd": {"a": 1}}]);
        ok(
            json!({"$unordered": [{"uid": "Pam", "umd": "$any"}, {"uid": "Jim", "umd": null}]}),
            members.clone(),
        );
        no(
            json!({"$unordered": [{"uid": "Pam", "umd": "$any"}]}),
            members.clone(),
        );
        no(
            json!({"$unordered": [{"uid": "Pam", "umd": "$any"}, {"uid": "Pam", "umd": "$any"}]}),
            members.clone(),
        );
        // needs re-assignment: first pattern could take either element
        ok(json!({"$unordered": ["$any", 1]}), json!([1, 2]));
        // ordered arrays really are ordered
        no(
            json!([{"uid": "Pam", "umd": {"a": 1}}, {"uid": "Jim", "umd": null}]),
            members,
        );
    }

    #[test]
    fn contains_len_regex_oneof_not() {
        ok(json!({"$contains": [2]}), json!([1, 2, 3]));
        no(json!({"$contains": [4]}), json!([1, 2, 3]));
        ok(json!({"$len": 3}), json!([1, 2, 3]));
        ok(json!({"$len": "2"}), json!("ab"));
        no(json!({"$len": 2}), json!([1]));
        ok(
            json!({"$regex": "^[A-Za-z0-9]{20}$"}),
            json!("1FfpK4PHV1B7ZryUSCsN"),
        );
        no(
            json!({"$regex": "^[A-Za-z0-9]{20}$"}),
            json!("1FfpK4PHV1B7ZryUSCs"),
        );
        no(json!({"$regex": "x"}), json!(1));
        ok(json!({"$oneOf": ["A", "B"]}), json!("B"));
        no(json!({"$oneOf": ["A", "B"]}), json!("C"));
        ok(json!({"$not": "abc"}), json!("abd"));
        no(json!({"$not": "$string"}), json!("abd"));
        let m = no(json!({"$regex": "x", "y": 1}), json!("x"));
        assert!(m.message.contains("bad pattern"), "{m}");
    }

    #[test]
    fn captures() {
        let caps = ok(
            json!({"data": {"connectionId": {"$capture": "jim.connectionId", "match": "$string"}, "n": {"$capture": "n"}}}),
            json!({"data": {"connectionId": "abc=", "n": 5}}),
        );
        assert_eq!(
            caps,
            vec![
                ("jim.connectionId".to_string(), json!("abc=")),
                ("n".to_string(), json!(5))
            ]
        );
        no(json!({"$capture": "x", "match": "$number"}), json!("s"));
        // captures inside an unordered list are kept only for the chosen pairing
        let caps = ok(
            json!({"$unordered": [{"uid": "Jim", "umd": {"$capture": "jimumd"}}, {"uid": "$string", "umd": null}]}),
            json!([{"uid": "Pam", "umd": null}, {"uid": "Jim", "umd": 7}]),
        );
        assert_eq!(caps, vec![("jimumd".to_string(), json!(7))]);
    }

    #[test]
    fn unordered_lists_of_frames() {
        let caps = match_unordered(
            &[
                json!({"event": "b"}),
                json!({"event": "a", "x": {"$capture": "x"}}),
            ],
            &[json!({"event": "a", "x": 1}), json!({"event": "b"})],
            MatchOptions::default(),
        );
        assert_eq!(caps, Ok(vec![("x".to_string(), json!(1))]));
        assert!(match_unordered(&[json!(1)], &[json!(2)], MatchOptions::default()).is_err());
    }

    #[test]
    fn prefixed_json_packets() {
        let caps = ok(
            json!({"$prefixed": "42/chat,", "json": ["MESSAGE_SENT", {"_id": {"$capture": "id"}, "n": 1}]}),
            json!(r#"42/chat,["MESSAGE_SENT",{"_id":"x","n":1}]"#),
        );
        assert_eq!(caps, vec![("id".to_string(), json!("x"))]);
        ok(json!({"$prefixed": "0"}), json!(r#"0{"sid":"a"}"#));
        let m = no(
            json!({"$prefixed": "42/chat,", "json": ["A"]}),
            json!("42/other,[\"A\"]"),
        );
        assert!(m.message.contains("starting with"), "{m}");
        let m = no(
            json!({"$prefixed": "42,", "json": "$any"}),
            json!("42,{oops"),
        );
        assert!(m.message.contains("not JSON"), "{m}");
        let m = no(
            json!({"$prefixed": "42,", "json": ["A"]}),
            json!("42,[\"B\"]"),
        );
        assert!(m.path.contains("<42,>"), "{m}");
    }
}
