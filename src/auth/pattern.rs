//! Channel and event name patterns: the keys of the `channels` claim and of
//! its `messages` / `storage` objects (spec §2.4).
//!
//! A key is one of
//! * an exact name (`"chat.lobby"`),
//! * a glob with `*` anywhere, where `*` matches any run of characters,
//!   including none and including `.` (`"presence.*"` matches `presence.a.b`),
//! * `#regex:<pattern>`, a regular expression (RE2-like syntax via
//!   `regex-lite`). Like Go's `regexp.MatchString` the match is unanchored:
//!   write `^...$` to match whole names.

use std::fmt;

const REGEX_PREFIX: &str = "#regex:";
/// Upper bound on a compiled token-supplied regex, so a hostile token cannot
/// make the server compile a huge automaton.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Upper bound on regex nesting depth.
const REGEX_NEST_LIMIT: u32 = 64;

/// A compiled channel or event name pattern.
#[derive(Clone, Debug)]
pub struct Pattern {
    source: String,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Exact,
    /// The pattern split at `*`; there are at least two segments.
    Glob(Vec<String>),
    Regex(regex_lite::Regex),
}

/// Why a claim key is not a valid pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError {
    message: String,
}

impl PatternError {
    fn new(message: impl Into<String>) -> Self {
        PatternError {
            message: message.into(),
        }
    }
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PatternError {}

impl Pattern {
    /// Parses a claim key. Fails for an empty key, a `#` key that is not
    /// `#regex:<pattern>`, and an invalid or oversized regular expression.
    pub fn parse(key: &str) -> Result<Self, PatternError> {
        if key.is_empty() {
            return Err(PatternError::new(
                "is an empty key; use a name, a * pattern or #regex:<pattern>",
            ));
        }
        if let Some(re) = key.strip_prefix(REGEX_PREFIX) {
            let regex = regex_lite::RegexBuilder::new(re)
                .size_limit(REGEX_SIZE_LIMIT)
                .nest_limit(REGEX_NEST_LIMIT)
                .build()
                .map_err(|e| {
                    let detail = e.to_string().replace('\n', " ");
                    PatternError::new(format!(
                        "is not a valid regular expression ({detail}); fix the pattern \
                         or use a * wildcard key"
                    ))
                })?;
            return Ok(Pattern {
                source: key.to_owned(),
                kind: Kind::Regex(regex),
            });
        }
        if key.starts_with('#') {
            return Err(PatternError::new(
                "starts with '#' but is not #regex:<pattern>; \
                 use #regex:<pattern>, a * pattern or a plain name",
            ));
        }
        let kind = if key.contains('*') {
            Kind::Glob(key.split('*').map(str::to_owned).collect())
        } else {
            Kind::Exact
        };
        Ok(Pattern {
            source: key.to_owned(),
            kind,
        })
    }

    /// True if `name` matches this pattern.
    pub fn matches(&self, name: &str) -> bool {
        match &self.kind {
            Kind::Exact => self.source == name,
            Kind::Glob(segments) => glob_match(segments, name),
            Kind::Regex(re) => re.is_match(name),
        }
    }

    /// True for a plain name (no `*`, not `#regex:`).
    pub fn is_exact(&self) -> bool {
        matches!(self.kind, Kind::Exact)
    }

    /// True for a `#regex:` pattern.
    pub fn is_regex(&self) -> bool {
        matches!(self.kind, Kind::Regex(_))
    }

    /// The key exactly as written in the claim.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Glob match where the pattern was split at every `*` (so `segments.len() >= 2`).
/// Greedy leftmost matching of the middle segments is correct for `*`-only
/// globs and runs in O(len(name) * len(pattern)) without backtracking.
fn glob_match(segments: &[String], name: &str) -> bool {
    let Some((first, rest_segments)) = segments.split_first() else {
        return name.is_empty();
    };
    let Some(mut rest) = name.strip_prefix(first.as_str()) else {
        return false;
    };
    let Some((last, middle)) = rest_segments.split_last() else {
        return rest.is_empty();
    };
    for seg in middle {
        if seg.is_empty() {
            continue;
        }
        match rest.find(seg.as_str()) {
            Some(i) => rest = &rest[i + seg.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(key: &str) -> Pattern {
        match Pattern::parse(key) {
            Ok(p) => p,
            Err(e) => panic!("{key}: {e}"),
        }
    }

    #[test]
    fn exact() {
        let pat = p("chat.lobby");
        assert!(pat.is_exact());
        assert!(pat.matches("chat.lobby"));
        assert!(!pat.matches("chat.lobby2"));
        assert!(!pat.matches("chat"));
    }

    #[test]
    fn glob_crosses_dots() {
        let pat = p("presence.*");
        assert!(!pat.is_exact());
        assert!(pat.matches("presence.a"));
        assert!(pat.matches("presence.a.b"));
        assert!(pat.matches("presence."));
        assert!(!pat.matches("presence"));
        assert!(!pat.matches("xpresence.a"));
    }

    #[test]
    fn glob_anywhere() {
        assert!(p("*.admin").matches("chat.x.admin"));
        assert!(!p("*.admin").matches("chat.x.admins"));
        assert!(p("a*b*c").matches("abc"));
        assert!(p("a*b*c").matches("a-b-b-c"));
        assert!(!p("a*b*c").matches("a-c-b"));
        assert!(p("*").matches(""));
        assert!(p("*").matches("anything.at.all"));
        assert!(p("**x").matches("x"));
        // Prefix and suffix may not overlap.
        assert!(!p("ab*ba").matches("aba"));
        assert!(p("ab*ba").matches("abba"));
        assert!(p("ü*ö").matches("üxyö"));
    }

    #[test]
    fn regex_keys() {
        let pat = p(r"#regex:^org\.[0-9]+$");
        assert!(pat.is_regex());
        assert!(pat.matches("org.42"));
        assert!(!pat.matches("org.x"));
        assert!(!pat.matches("org.42.x"));
        // Unanchored, like Go's regexp.MatchString.
        assert!(p("#regex:admin").matches("chat.admin.room"));
        assert_eq!(pat.as_str(), r"#regex:^org\.[0-9]+$");
    }

    #[test]
    fn invalid_patterns() {
        let err = Pattern::parse("#regex:(").unwrap_err();
        assert!(err.to_string().contains("not a valid regular expression"));
        assert!(err.to_string().contains("fix the pattern"));
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("#other").is_err());
        assert!(Pattern::parse("#regex:a{1000}{1000}").is_err());
    }
}
